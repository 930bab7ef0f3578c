/**
 * test/helpers.ts — small tools the test files share.
 *
 *   startTestServer()   a registry in this process on ephemeral ports, with its log captured
 *   LineClient          a real TCP connection that speaks raw lines and reads raw lines back
 *   sendDatagram()      one UDP datagram, optionally waiting for an answer
 *   spawnScript()       a real child process of server.ts or client.ts, under the runtime the
 *                       tests run in (tsx on Node, or Deno), with helpers to read its output
 *   freshDataDir()      an empty temporary folder for a client's device proofs: every client
 *                       the tests start gets one, so none writes into the real ~/.p2p-chat
 *   SpawnedProcesses    the registries and logged-in clients one test starts, stopped together
 *                       in one call from `finally`
 *
 * Nothing here fakes the network: everything goes through loopback sockets.
 */

import { Buffer } from 'node:buffer';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import { startServer } from '../server.ts';
import type { RunningServer, ServerOptions } from '../server.ts';

/** The repository root, found from this file's own URL (no __dirname in ESM). */
export const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** True when the suite runs under Deno rather than Node. */
export const UNDER_DENO = typeof (globalThis as { Deno?: unknown }).Deno !== 'undefined';

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `condition` until it holds or `timeoutMs` passes; then fails with `what`. */
export async function waitUntil(
  condition: () => boolean,
  timeoutMs: number,
  what: string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await sleep(10);
  }
}

/** p95 of a list of milliseconds (nearest rank: of 20 values, the 19th smallest). */
export function p95(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.ceil(0.95 * sorted.length) - 1];
}

/** Tallies answers by their code (or type, for answers that are not errors). */
export function tally(answers: Array<Record<string, unknown>>): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const answer of answers) {
    const key = String(answer.code ?? answer.type);
    counts[key] = (counts[key] ?? 0) + 1;
  }
  return counts;
}

export type TestServer = RunningServer & { logLines: string[] };

/** A registry on 127.0.0.1 with ephemeral ports; its event log is kept in `logLines`. */
export async function startTestServer(options: ServerOptions = {}): Promise<TestServer> {
  const logLines: string[] = [];
  const server = await startServer({
    host: '127.0.0.1',
    tcpPort: 0,
    udpPort: 0,
    log: (line) => logLines.push(line),
    ...options,
  });
  return Object.assign(server, { logLines });
}

/** A TCP client that writes raw text and reads whole lines, as `nc` would. */
export class LineClient {
  readonly socket: net.Socket;
  /** Lines received and not yet taken by readLine(). */
  private received: string[] = [];
  private partial = '';
  private waiters: Array<() => void> = [];
  closed = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => {
      const pieces = (this.partial + text).split('\n');
      this.partial = pieces.pop() ?? '';
      this.received.push(...pieces);
      this.wake();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }

  /** `localAddress` picks the source address (127.0.0.2, 127.0.0.3, … on Linux loopback), so
   * a test can be several hosts at once. */
  static connect(port: number, host = '127.0.0.1', localAddress?: string): Promise<LineClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(
        { port, host, localAddress },
        () => resolve(new LineClient(socket)),
      );
      socket.once('error', reject);
    });
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }

  /** Writes text exactly as given (add "\n" yourself, or use request()). */
  write(text: string | Uint8Array): void {
    this.socket.write(text);
  }

  /** Resolves with the next line, or rejects after timeoutMs or if the connection closes first. */
  async readLine(timeoutMs = 2000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (this.received.length === 0) {
      if (this.closed) throw new Error('connection closed before a line arrived');
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no line within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.received.shift()!;
  }

  /** Sends one object as a line and parses the one-line answer. */
  async request(message: unknown, timeoutMs = 2000): Promise<Record<string, unknown>> {
    this.write(JSON.stringify(message) + '\n');
    return JSON.parse(await this.readLine(timeoutMs));
  }

  /** Resolves once the server has closed the connection (or after timeoutMs, rejecting). */
  async waitClosed(timeoutMs = 2000): Promise<void> {
    await waitUntil(() => this.closed, timeoutMs, 'the connection to close');
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Sends one datagram; if `replyWithinMs` is given, resolves with the answer or null if none. */
export function sendDatagram(
  port: number,
  payload: string | Uint8Array,
  replyWithinMs?: number,
): Promise<string | null> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket('udp4');
    let timer: ReturnType<typeof setTimeout> | undefined;
    const finish = (answer: string | null) => {
      if (timer) clearTimeout(timer);
      socket.close();
      resolve(answer);
    };
    socket.on('message', (bytes) => finish(Buffer.from(bytes).toString('utf8')));
    socket.send(
      typeof payload === 'string' ? Buffer.from(payload) : payload,
      port,
      '127.0.0.1',
      (error) => {
        if (error) {
          socket.close();
          reject(error);
        } else if (replyWithinMs === undefined) {
          finish(null);
        } else {
          timer = setTimeout(() => finish(null), replyWithinMs);
        }
      },
    );
  });
}

/** Registers `username` over the raw protocol, through a fresh connection. */
export async function registerAccount(
  port: number,
  username: string,
  password = 'secret',
): Promise<void> {
  const client = await LineClient.connect(port);
  try {
    const registered = await client.request({ type: 'register', username, password });
    if (registered.type !== 'registered') {
      throw new Error(`register failed: ${JSON.stringify(registered)}`);
    }
  } finally {
    client.close();
  }
}

/** Registers and logs in through a fresh connection; returns the logged_in answer's token. */
export async function registerAndLogin(
  port: number,
  username: string,
  password = 'secret',
  chatPort = 7000,
): Promise<string> {
  await registerAccount(port, username, password);
  const client = await LineClient.connect(port);
  try {
    const loggedIn = await client.request({ type: 'login', username, password, chatPort });
    if (loggedIn.type !== 'logged_in') throw new Error(`login failed: ${JSON.stringify(loggedIn)}`);
    return loggedIn.token as string;
  } finally {
    client.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------

/** A running server.ts or client.ts, with everything it printed collected. */
export class ScriptProcess {
  readonly child: ChildProcess;
  /** All of stdout so far. */
  stdout = '';
  /** All of stderr so far. */
  stderr = '';
  exitCode: number | null = null;
  exited: Promise<number | null>;
  /** How much of stdout earlier waitFor() calls have consumed. */
  private consumed = 0;

  constructor(child: ChildProcess) {
    this.child = child;
    child.stdout!.setEncoding('utf8');
    child.stderr!.setEncoding('utf8');
    child.stdout!.on('data', (text: string) => (this.stdout += text));
    child.stderr!.on('data', (text: string) => (this.stderr += text));
    child.stdin!.on('error', () => {});
    this.exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        this.exitCode = code ?? (signal ? 128 : null);
        resolve(this.exitCode);
      });
    });
  }

  /** Types one line into the program's standard input. */
  type(line: string): void {
    this.child.stdin!.write(line + '\n');
  }

  /** Closes standard input (what Ctrl-D does at a terminal). */
  endInput(): void {
    this.child.stdin!.end();
  }

  /** Waits until stdout, after what earlier waits consumed, matches; consumes up to the match.
   * Returns the match. Fails with the recent output in the message, to make failures readable. */
  async waitFor(pattern: RegExp | string, timeoutMs = 5000): Promise<RegExpExecArray> {
    const regex = typeof pattern === 'string' ? new RegExp(escapeRegExp(pattern)) : pattern;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const match = regex.exec(this.stdout.slice(this.consumed));
      if (match) {
        this.consumed += match.index + match[0].length;
        return match;
      }
      if (Date.now() > deadline || this.exitCode !== null) {
        throw new Error(
          `expected ${regex} within ${timeoutMs} ms; ` +
            `${this.exitCode !== null ? `process exited ${this.exitCode}; ` : ''}` +
            `unread stdout:\n${this.stdout.slice(this.consumed).slice(-2000)}\n` +
            `stderr:\n${this.stderr.slice(-2000)}`,
        );
      }
      await sleep(10);
    }
  }

  /** Sends a signal. Through process.kill rather than child.kill: Deno's child_process reports
   * any child it signalled itself as killed by that signal, hiding the exit code it really had. */
  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    if (this.exitCode === null && this.child.pid !== undefined) {
      try {
        process.kill(this.child.pid, signal);
      } catch {
        // already gone
      }
    }
  }
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** The folders freshDataDir() made, removed when the test process exits. */
const dataDirs: string[] = [];
process.on('exit', () => {
  for (const dir of dataDirs) rmSync(dir, { recursive: true, force: true });
});

/** A new empty folder for one client's data (its device proofs): `P2P_CHAT_HOME` or
 * `--data-dir`. spawnScript gives every client.ts one unless the test passes its own. */
export function freshDataDir(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'p2p-chat-home-'));
  dataDirs.push(dir);
  return dir;
}

/** Starts `script` (relative to the repository root) under the runtime running the tests:
 * `deno run -A` under Deno, `node --import tsx` under Node. */
export function spawnScript(
  script: string,
  args: string[] = [],
  env: Record<string, string> = {},
): ScriptProcess {
  const runtimeArgs = UNDER_DENO ? ['run', '-A', script] : ['--import', 'tsx', script];
  if (script === 'client.ts') args = clientArgs(args);
  // Keys, known keys and device proofs go to a temporary folder, never the tester's home.
  const home = script.endsWith('.ts') ? { P2P_CHAT_HOME: freshDataDir() } : {};
  const child = spawn(process.execPath, [...runtimeArgs, ...args], {
    cwd: ROOT,
    env: { ...process.env, NO_COLOR: '1', ...home, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  return new ScriptProcess(child);
}

/** A client in a test speaks plain JSON (--plain), as most test registries do, unless its
 * arguments hold SECURE_PATH: then it takes the secure path, as users run it. */
export function clientArgs(args: string[]): string[] {
  if (args.includes(SECURE_PATH)) return args.filter((arg) => arg !== SECURE_PATH);
  return args.includes('--help') ? args : ['--plain', ...args];
}
export const SECURE_PATH = '(the secure path)';

/** A server.ts process that has started, with the ports it printed. */
export type SpawnedServer = { server: ScriptProcess; tcpPort: number; udpPort: number };

/** Starts server.ts on 127.0.0.1 and ephemeral ports (later `args` override them); does not
 * wait. It speaks plain JSON (--plain), as most tests do, unless `args` give it a --key-file. */
function spawnServerScript(args: string[], env: Record<string, string>): ScriptProcess {
  const plain = args.includes('--key-file') ? [] : ['--plain'];
  return spawnScript(
    'server.ts',
    ['--host', '127.0.0.1', '--tcp-port', '0', '--udp-port', '0', ...plain, ...args],
    env,
  );
}

/** Waits for a just-spawned server.ts to print its "start" line; reads the ports from it. */
async function serverStarted(server: ScriptProcess): Promise<SpawnedServer> {
  const match = await server.waitFor(/start tcp=[^ ]*:(\d+) udp=[^ ]*:(\d+)/, 15_000);
  return { server, tcpPort: Number(match[1]), udpPort: Number(match[2]) };
}

/** Starts server.ts on ephemeral ports and waits for its "start" line; returns the process and
 * the ports it printed. (Tests that also start clients use SpawnedProcesses.server instead.) */
export async function spawnServer(
  args: string[] = [],
  env: Record<string, string> = {},
): Promise<SpawnedServer> {
  return serverStarted(spawnServerScript(args, env));
}

// ---------------------------------------------------------------------------------------------
// Added for the hardening suite (abuse and fault tests)
// ---------------------------------------------------------------------------------------------

/** Runs a snippet of ES-module JavaScript in a separate process under the tests' runtime
 * (`node --input-type=module -e` or `deno eval`), so load can come from outside the process
 * under test. Pass inputs through `env`. */
export function spawnEval(code: string, env: Record<string, string> = {}): ScriptProcess {
  const runtimeArgs = UNDER_DENO ? ['eval', code] : ['--input-type=module', '-e', code];
  const child = spawn(process.execPath, runtimeArgs, {
    cwd: ROOT,
    env: { ...process.env, NO_COLOR: '1', ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  return new ScriptProcess(child);
}

/** A local TCP port with nothing listening on it (bound once to learn a free number, then
 * closed), for "the other side is unreachable" tests. */
export function closedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

/** This process's memory, in MiB, for printing. */
export function memoryMiB(): { rss: number; heapUsed: number } {
  const usage = process.memoryUsage();
  return { rss: Math.round(usage.rss / 2 ** 20), heapUsed: Math.round(usage.heapUsed / 2 ** 20) };
}

// ---------------------------------------------------------------------------------------------
// Terminal clients (client.ts), driven through their standard input
// ---------------------------------------------------------------------------------------------

/** How long a freshly spawned process may take to print its first prompt. Generous: starting
 * tsx or Deno on a busy machine can take several seconds. */
export const STARTUP_MS = 20_000;

/** From the Login screen: registers `username` through the Register screen and comes back to
 * Login (the username prompt has been consumed). */
export async function registerThroughScreens(
  client: ScriptProcess,
  username: string,
  password = 'secret',
): Promise<void> {
  client.type('/register');
  await client.waitFor(/Register — new username/);
  client.type(username);
  await client.waitFor('new password: ');
  client.type(password);
  await client.waitFor('new password again: ');
  client.type(password);
  await client.waitFor(`Registered ${username}`);
  await client.waitFor('username');
}

/** From the Login screen (username prompt consumed): logs in; resolves with the chat port the
 * client says peers reach it on, once the Search prompt shows. */
export async function loginThroughScreens(
  client: ScriptProcess,
  username: string,
  password = 'secret',
): Promise<number> {
  client.type(username);
  await client.waitFor('password');
  client.type(password);
  const match = await client.waitFor(
    new RegExp(`Logged in as ${escapeRegExp(username)}\\. Peers reach you on port (\\d+)`),
  );
  await client.waitFor(`${username}> `);
  return Number(match[1]);
}

/** `caller` asks `calleeName` to chat and `callee` accepts; both end up on the Chat screen. */
export async function startChat(
  caller: ScriptProcess,
  callerName: string,
  callee: ScriptProcess,
  calleeName: string,
): Promise<void> {
  caller.type(calleeName);
  await callee.waitFor(`${callerName} wants to chat`);
  await callee.waitFor(/\(y\/n\)/);
  callee.type('y');
  await caller.waitFor(`${calleeName} accepted`);
  await callee.waitFor(`You are chatting with ${callerName}`);
}

/** A logged-in client.ts process, with the chat port it says peers reach it on. */
export type LoggedInClient = { client: ScriptProcess; chatPort: number };

/** A user for SpawnedProcesses.loggedInClients: a bare username, or one with extra client flags. */
export type ClientUser = string | { username: string; args: string[] };

/**
 * Every process one test starts (registries and clients), so that a single call from `finally`
 * stops them all:
 *
 *   const spawned = new SpawnedProcesses();
 *   try {
 *     const { server, tcpPort, udpPort } = await spawned.server();
 *     const [alice, bob] = await spawned.loggedInClients(tcpPort, udpPort, 'alice', 'bob');
 *     ...
 *   } finally {
 *     await spawned.stopAll();
 *   }
 *
 * A process is remembered the moment it is spawned, before anything waits on it. So one that
 * never reaches its prompt, or is left behind when a sibling in loggedInClients() fails first,
 * is still stopped, instead of running on and keeping the test runner alive.
 */
export class SpawnedProcesses {
  /** Each process spawned through this object, running or not. */
  private readonly processes: ScriptProcess[] = [];

  private remember(child: ScriptProcess): ScriptProcess {
    this.processes.push(child);
    return child;
  }

  /** Like spawnServer(): server.ts on ephemeral ports (override them in `args`), once started. */
  async server(args: string[] = [], env: Record<string, string> = {}): Promise<SpawnedServer> {
    return serverStarted(this.remember(spawnServerScript(args, env)));
  }

  /** client.ts pointed at a registry, once it shows the Login screen's username prompt. */
  async client(tcpPort: number, udpPort: number, args: string[] = []): Promise<ScriptProcess> {
    const client = this.remember(
      spawnScript(
        'client.ts',
        ['--tcp-port', String(tcpPort), '--udp-port', String(udpPort), ...args],
      ),
    );
    await client.waitFor('username', STARTUP_MS);
    return client;
  }

  /** A new client, registered and logged in as `username`, sitting at its Search prompt. */
  async loggedInClient(
    tcpPort: number,
    udpPort: number,
    username: string,
    args: string[] = [],
  ): Promise<LoggedInClient> {
    const client = await this.client(tcpPort, udpPort, args);
    await registerThroughScreens(client, username);
    const chatPort = await loginThroughScreens(client, username);
    return { client, chatPort };
  }

  /** Several logged-in clients, started side by side; resolves with them in the order given. */
  async loggedInClients(
    tcpPort: number,
    udpPort: number,
    ...users: ClientUser[]
  ): Promise<ScriptProcess[]> {
    const started = await Promise.all(users.map((user) => typeof user === 'string'
      ? this.loggedInClient(tcpPort, udpPort, user)
      : this.loggedInClient(tcpPort, udpPort, user.username, user.args)));
    return started.map(({ client }) => client);
  }

  /** Kills (SIGKILL) every remembered process still running and waits for each to exit. */
  async stopAll(): Promise<void> {
    await Promise.all(this.processes.map(async (child) => {
      if (child.exitCode !== null) return;
      child.kill('SIGKILL');
      await child.exited;
    }));
  }
}
