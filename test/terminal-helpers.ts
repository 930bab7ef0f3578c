/**
 * test/terminal-helpers.ts — tools for the pseudo-terminal tests (terminal.test.ts) and the
 * screen tests over pipes (client-screens.test.ts).
 *
 *   Tmux       a private tmux server (its own socket, no user config) whose sessions are real
 *              80×24 pseudo-terminals; a client runs in one, keys go in with send-keys and the
 *              screen comes back with capture-pane
 *   RawPeer    a peer written by hand over the real protocol: logs in at the registry with a chat
 *              port it listens on, says hello, accepts calls, and records what it is sent
 *   stripAnsi  removes colour and cursor codes from captured output
 *
 * Nothing is faked: the client under test is the real client.ts in a real terminal, and the
 * peer speaks to it over loopback TCP.
 */

import { execFile, spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';
import process from 'node:process';
import { Buffer } from 'node:buffer';
import { LineClient, ROOT, UNDER_DENO, clientArgs, freshDataDir, sleep } from './helpers.ts';

/** Why tmux tests cannot run here, or undefined when they can. */
export function tmuxMissing(): string | undefined {
  try {
    const probe = spawnSync('tmux', ['-V'], { encoding: 'utf8' });
    return probe.status === 0 ? undefined : 'tmux not installed';
  } catch {
    return 'tmux not installed';
  }
}

export function stripAnsi(text: string): string {
  return text.replace(
    // deno-lint-ignore no-control-regex
    /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*(\x07|\x1b\\)|\x1b[()][0-9A-B]|\x1b[=>78]/g,
    '',
  );
}

/** Quotes one word for sh. */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/** The command line that runs client.ts under the runtime the tests run in. */
export function clientCommand(args: string[]): string[] {
  return UNDER_DENO
    ? [process.execPath, 'run', '-A', 'client.ts', ...clientArgs(args)]
    : [process.execPath, '--import', 'tsx', 'client.ts', ...clientArgs(args)];
}

/**
 * A private tmux server: `tmux -L p2pchat-test-<pid>-<n> -f /dev/null`, so the tests never see
 * or touch anyone's own tmux. Every session is 80 columns by 24 rows and keeps its pane after
 * the program in it exits (remain-on-exit), so a crash can still be read.
 */
export class Tmux {
  private static count = 0;
  readonly socketName = `p2pchat-test-${process.pid}-${Tmux.count++}`;
  private started = false;

  /** Runs one tmux command; resolves with its stdout. */
  run(args: string[]): Promise<string> {
    return new Promise((resolve, reject) => {
      execFile('tmux', ['-u', '-L', this.socketName, '-f', '/dev/null', ...args], {
        encoding: 'utf8',
        env: { ...process.env, LANG: 'C.UTF-8', LC_ALL: 'C.UTF-8' },
      }, (error, stdout, stderr) => {
        if (error) reject(new Error(`tmux ${args.join(' ')}: ${stderr || error.message}`));
        else resolve(stdout);
      });
    });
  }

  /** Starts `command` (words, quoted here) in a new session called `name`, in the repository
   * root, with `env` added. */
  async start(name: string, command: string[], env: Record<string, string> = {}): Promise<void> {
    const vars = Object.entries({
      LANG: 'C.UTF-8',
      LC_ALL: 'C.UTF-8',
      TERM: 'xterm-256color',
      ...env,
    }).map(([key, value]) => `${key}=${shellQuote(value)}`);
    const line = `exec env ${vars.join(' ')} ${command.map(shellQuote).join(' ')}`;
    if (!this.started) {
      // A first idle session keeps the server up and lets the options be set before any client.
      // It also watches this process: when the test run ends without stop() (under Deno, a
      // --filter that skips a file's last test skips its `after` hook too), it ends the server
      // and every client in it.
      const watch = `while kill -0 ${process.pid} 2>/dev/null; do sleep 1; done; ` +
        `tmux -L ${this.socketName} kill-server`;
      await this.run(['new-session', '-d', '-s', 'idle', '-x', '80', '-y', '24', watch]);
      await this.run(['set-option', '-g', 'remain-on-exit', 'on']);
      await this.run(['set-option', '-g', 'default-size', '80x24']);
      await this.run(['set-option', '-g', 'history-limit', '5000']);
      this.started = true;
    }
    await this.run(['new-session', '-d', '-s', name, '-x', '80', '-y', '24', '-c', ROOT, line]);
  }

  /** Starts client.ts with `args` in session `name`. */
  startClient(name: string, args: string[], env: Record<string, string> = {}): Promise<void> {
    return this.start(name, clientCommand(args), { P2P_CHAT_HOME: freshDataDir(), ...env });
  }

  /** Types text exactly as given (no Enter). */
  async type(name: string, text: string): Promise<void> {
    await this.run(['send-keys', '-t', name, '-l', text]);
  }

  /** Presses named keys: 'Enter', 'Up', 'C-u', 'BSpace'… */
  async press(name: string, ...keys: string[]): Promise<void> {
    await this.run(['send-keys', '-t', name, ...keys]);
  }

  /** Types a line and presses Enter. */
  async typeLine(name: string, text: string): Promise<void> {
    if (text !== '') await this.type(name, text);
    await this.press(name, 'Enter');
  }

  /** The visible screen (24 rows), wrapped rows joined into their logical lines (-J), trailing
   * blank rows dropped. */
  async screen(name: string): Promise<string> {
    return stripAnsi(await this.run(['capture-pane', '-p', '-J', '-t', name])).replace(/\n+$/, '');
  }

  /** The visible screen as the 24 rows a person sees, wrapping kept. */
  async rows(name: string): Promise<string[]> {
    return stripAnsi(await this.run(['capture-pane', '-p', '-t', name])).split('\n');
  }

  /** Everything the session has shown, scrollback included, wrapped rows joined. */
  async history(name: string): Promise<string> {
    return stripAnsi(await this.run(['capture-pane', '-p', '-J', '-S', '-', '-t', name]));
  }

  /** Polls the visible screen (or the whole history) until `check` holds; fails after
   * `timeoutMs` with the screen in the message. Returns the screen that passed. */
  async waitForScreen(
    name: string,
    check: (screen: string) => boolean,
    what: string,
    timeoutMs = 10_000,
    whole = false,
  ): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    for (;;) {
      try {
        last = whole ? await this.history(name) : await this.screen(name);
      } catch (error) {
        last = `(capture failed: ${(error as Error).message})`;
      }
      if (check(last)) return last;
      if (Date.now() > deadline) {
        throw new Error(
          `timed out after ${timeoutMs} ms waiting for ${what}; screen of ${name}:\n${last}`,
        );
      }
      await sleep(50);
    }
  }

  /** Waits until the whole history holds at least `count` matches of `pattern`. */
  waitForText(name: string, pattern: RegExp, count = 1, timeoutMs = 10_000): Promise<string> {
    const global = new RegExp(
      pattern.source,
      pattern.flags.includes('g') ? pattern.flags : pattern.flags + 'g',
    );
    return this.waitForScreen(name, (text) => (text.match(global)?.length ?? 0) >= count,
      `${count} × ${pattern}`, timeoutMs, true);
  }

  /** Closes a session's window, as closing a terminal window would: the program gets SIGHUP. */
  async killWindow(name: string): Promise<void> {
    await this.run(['kill-window', '-t', name]);
  }

  /** Stops the private server and everything running in it. */
  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    await this.run(['kill-server']).catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------------
// A peer written by hand
// ---------------------------------------------------------------------------------------------

type Json = Record<string, unknown>;

/** One TCP connection speaking JSON lines, recording what it receives. */
export class JsonLines {
  readonly received: Json[] = [];
  closed = false;
  private partial = '';

  readonly socket: net.Socket;

  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => {
      const pieces = (this.partial + text).split('\n');
      this.partial = pieces.pop() ?? '';
      for (const piece of pieces) {
        try {
          this.received.push(JSON.parse(piece));
        } catch {
          this.received.push({ type: '(not json)', text: piece });
        }
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => (this.closed = true));
  }

  send(message: Json): void {
    if (!this.socket.destroyed) this.socket.write(JSON.stringify(message) + '\n');
  }

  /** Waits for a received message that `match` accepts; returns it. */
  async waitFor(
    match: (message: Json) => boolean,
    what: string,
    timeoutMs = 10_000,
  ): Promise<Json> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.received.find(match);
      if (found) return found;
      if (Date.now() > deadline) {
        throw new Error(
          `timed out after ${timeoutMs} ms waiting for ${what}; ` +
            `received: ${JSON.stringify(this.received)}`,
        );
      }
      await sleep(20);
    }
  }

  /** The texts of every msg received. */
  texts(): string[] {
    return this.received
      .filter((message) => message.type === 'msg')
      .map((message) => String(message.text));
  }
}

/**
 * A logged-in user without a client.ts: registers (if asked) and logs in over the registry's TCP
 * protocol with a chat port of its own, says hello over UDP, and accepts every chat_request.
 * The latest conversation is `chat`.
 */
export class RawPeer {
  /** Every peer made, so a test's `after` can close those a failed test left open. */
  static readonly all = new Set<RawPeer>();
  static closeAll(): void {
    for (const peer of RawPeer.all) peer.close();
  }

  chat: JsonLines | null = null;
  readonly connections: JsonLines[] = [];
  private heartbeat: ReturnType<typeof setInterval> | undefined;
  private readonly udp = dgram.createSocket('udp4');

  readonly username: string;
  readonly token: string;
  readonly listener: net.Server;
  readonly tcpPort: number;

  private constructor(username: string, token: string, listener: net.Server, tcpPort: number) {
    this.username = username;
    this.token = token;
    this.listener = listener;
    this.tcpPort = tcpPort;
  }

  static async login(
    tcpPort: number,
    udpPort: number,
    username: string,
    {
      password = 'peer-secret',
      register = true,
      accept = true,
    }: { password?: string; register?: boolean; accept?: boolean } = {},
  ): Promise<RawPeer> {
    const listener = net.createServer();
    await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
    listener.unref();
    const chatPort = (listener.address() as net.AddressInfo).port;
    const registry = await LineClient.connect(tcpPort);
    let loggedIn: Json;
    try {
      if (register) {
        const registered = await registry.request({ type: 'register', username, password });
        if (registered.type !== 'registered') {
          throw new Error(`register failed: ${JSON.stringify(registered)}`);
        }
      }
      loggedIn = await registry.request({ type: 'login', username, password, chatPort });
      if (loggedIn.type !== 'logged_in') {
        throw new Error(`login failed: ${JSON.stringify(loggedIn)}`);
      }
    } finally {
      registry.close();
    }
    const peer = new RawPeer(String(loggedIn.username), String(loggedIn.token), listener, tcpPort);
    RawPeer.all.add(peer);
    const hello = Buffer.from(
      JSON.stringify({ type: 'hello', username: peer.username, token: peer.token }),
    );
    peer.udp.on('error', () => {});
    peer.heartbeat = setInterval(
      () => peer.udp.send(hello, udpPort, '127.0.0.1', () => {}),
      Number(loggedIn.heartbeatMs) || 1000,
    );
    listener.on('connection', (socket) => {
      const connection = new JsonLines(socket);
      peer.connections.push(connection);
      if (!accept) return;
      void connection
        .waitFor((message) => message.type === 'chat_request', 'a chat_request', 60_000)
        .then(() => {
          connection.send({ type: 'chat_accept' });
          peer.chat = connection;
        }, () => {});
    });
    return peer;
  }

  /** Waits until someone has called and been accepted; returns that conversation. */
  async waitForChat(timeoutMs = 10_000): Promise<JsonLines> {
    const deadline = Date.now() + timeoutMs;
    while (this.chat === null) {
      if (Date.now() > deadline) {
        throw new Error(`${this.username}: nobody called within ${timeoutMs} ms`);
      }
      await sleep(20);
    }
    return this.chat;
  }

  /** Sends one chat line in the current conversation. */
  say(text: string): void {
    this.chat!.send({ type: 'msg', text, at: Date.now() });
  }

  /** Asks the registry who is online. */
  async online(): Promise<string[]> {
    const registry = await LineClient.connect(this.tcpPort);
    try {
      const answer = await registry.request({ type: 'list', token: this.token });
      return (answer.users as string[]) ?? [];
    } finally {
      registry.close();
    }
  }

  /** Asks the registry for `username`; resolves with the `found` answer (or the error). */
  async search(username: string): Promise<Json> {
    const registry = await LineClient.connect(this.tcpPort);
    try {
      return await registry.request({ type: 'search', token: this.token, username });
    } finally {
      registry.close();
    }
  }

  /** Calls `username` (search, connect, chat_request); resolves with the connection. */
  async call(username: string): Promise<JsonLines> {
    const found = await this.search(username);
    if (found.type !== 'found') throw new Error(`search failed: ${JSON.stringify(found)}`);
    const socket = net.connect(Number(found.port), String(found.host));
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const connection = new JsonLines(socket);
    this.connections.push(connection);
    connection.send({ type: 'chat_request', from: this.username, ticket: found.ticket });
    this.chat = connection;
    return connection;
  }

  close(): void {
    RawPeer.all.delete(this);
    clearInterval(this.heartbeat);
    for (const connection of this.connections) connection.socket.destroy();
    this.listener.close();
    try {
      this.udp.close();
    } catch {
      // already closed
    }
  }
}
