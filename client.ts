/**
 * client.ts — the terminal client: log in, find someone, and chat with them directly.
 *
 * The registry (server.ts) only introduces people. Once it has told us where a peer listens and
 * handed us a ticket for them, we open a TCP connection straight to the peer's client, and every
 * chat message travels on that connection. The registry never sees a word of the conversation.
 *
 *   you ──▶ ┌──────────────────────────────┐  TCP: register login search list logout  ┌──────────┐
 *  (keys)   │ client.ts                    │ ─────────────────────────────────────────▶│ registry │
 *           │   state machine: login,      │  UDP: hello every heartbeatMs            │          │
 *   you ◀── │   register, search, chat     │ ─────────────────────────────────────────▶│          │
 * (screen)  │                              │ ◀──────────── session_unknown (if lost) ─ └──────────┘
 *           │   chat listener :chat-port   │
 *           └──────────────────────────────┘
 *                   ▲            │  TCP, one JSON object per line:
 *   peer calls us ──┘            └─ we call a peer: chat_request → chat_accept | chat_decline,
 *                                   then msg … msg, and bye when one of us leaves
 *
 * The program is a state machine. The four screens of the original program are its states,
 * plus a few "waiting" states while an answer is on its way:
 *
 *   Login:    login_username → login_password → logging_in ──(ok)──▶ search
 *   Register: register_username → register_password → registering ──(ok)──▶ login_username
 *   Search:   search → calling (we asked someone) ──(accepted)──▶ chat
 *             search → deciding (someone asked us) ──(yes)──▶ chat
 *   Chat:     chat ──(/back, bye, connection lost)──▶ search
 *
 * Layout of this file:
 *   - settings                 flags and timeouts
 *   - the peer channel         PeerChannel: one peer connection, as messages (exported; used by bench/)
 *   - client state             everything the client keeps, declared together
 *   - the terminal             prompts, printing, colour, hidden passwords
 *   - input                    typed lines are queued, then handled by the current state
 *   - talking to the registry  one short TCP connection per request; UDP heartbeats
 *   - login and register       the first two screens
 *   - search                   the home screen, and calling a peer
 *   - incoming requests        someone calls us: check the ticket, ask our user
 *   - chat                     sending, receiving, leaving
 *   - session end and exit     logout, lost sessions, quitting cleanly
 *   - command line             flags, start-up
 */

import { Buffer } from 'node:buffer';
import { appendFileSync, mkdirSync } from 'node:fs';
import dgram from 'node:dgram';
import net from 'node:net';
import path from 'node:path';
import process from 'node:process';
import readline from 'node:readline';
import { Writable } from 'node:stream';
import { parseArgs, styleText } from 'node:util';
import {
  DEFAULT_TCP_PORT, DEFAULT_UDP_PORT, LineSplitter, MAX_LINE_BYTES, USERNAME_PATTERN, checkTicket,
  decodeDatagram, decodePeerMessage, decodeReply, encodeDatagram, encodeLine, normaliseUsername,
  errorText, isMainModule, numberFlag, plainAddress, USERNAME_RULE, UsageError,
} from './protocol.ts';
import type { ChatRequest, DeclineReason, PeerMessage, Reply, Request } from './protocol.ts';

// ============================================================================================
// Settings
// ============================================================================================

export type ClientSettings = {
  /** Host name or address of the registry. */
  server: string;
  /** The registry's TCP port (requests) and UDP port (heartbeats). */
  tcpPort: number;
  udpPort: number;
  /** Where we accept chat connections from peers; 0 lets the system pick a free port, so many
   * clients can run on one machine. The registry learns the real port at login. */
  chatPort: number;
  /** When set, every conversation is appended to historyDir/<you>/<peer>.log. */
  historyDir: string | undefined;
  /** Print every protocol message sent and received. */
  trace: boolean;
  /** How long to wait for the registry to accept a connection and answer one request; also how
   * long connecting to a peer's client may take. */
  registryTimeoutMs: number;
  /** How long a peer we called may take to answer our chat_request. Longer than decideTimeoutMs,
   * so a person who needs nearly all of their 30 s still gets their answer through. */
  answerTimeoutMs: number;
  /** How long our user has to say yes or no to an incoming request before it is declined. */
  decideTimeoutMs: number;
  /** How long an incoming connection may stay silent before sending its chat_request. */
  greetingTimeoutMs: number;
};

export const DEFAULT_CLIENT_SETTINGS: ClientSettings = {
  server: '127.0.0.1',
  tcpPort: DEFAULT_TCP_PORT,
  udpPort: DEFAULT_UDP_PORT,
  chatPort: 0,
  historyDir: undefined,
  trace: false,
  registryTimeoutMs: 5000,
  answerTimeoutMs: 45_000,
  decideTimeoutMs: 30_000,
  greetingTimeoutMs: 5000,
};

// ============================================================================================
// The peer channel
// ============================================================================================
//
// Between two clients the protocol is the same as with the registry: one JSON object per line.
// PeerChannel wraps one net.Socket and turns it into messages in both directions. It knows
// nothing about screens or users, so the benchmark in bench/ uses it on its own.
//
// What it protects against: a peer is just another program on the network and may be broken or
// hostile. A line that is not a valid peer message, a line longer than MAX_LINE_BYTES, or
// silence past a deadline set with expectWithin() ends the connection, and the owner is told
// why through onClose. Nothing a peer sends can throw an exception into our program.

/** Why a PeerChannel ended (reported through onClose). */
export type PeerChannelEnd =
  | { kind: 'ended' } // the other side closed the connection
  | { kind: 'error'; detail: string } // the socket failed, e.g. ECONNRESET
  | { kind: 'garbage'; detail: string } // a line that is not a valid peer message
  | { kind: 'too_long' } // a line longer than the limit
  | { kind: 'silent'; waitedMs: number }; // nothing arrived before the expectWithin() deadline

export type PeerChannelHandlers = {
  /** Called for each valid message, in order. */
  onMessage: (message: PeerMessage, channel: PeerChannel) => void;
  /** Called once when the connection ends for any reason other than our own close(). */
  onClose: (why: PeerChannelEnd, channel: PeerChannel) => void;
  /** Optional: sees every line sent ('out') or received ('in'), for --trace. */
  onTrace?: (direction: 'in' | 'out', line: string, channel: PeerChannel) => void;
};

/**
 * One TCP connection to another client, speaking the peer protocol.
 *
 *   const channel = await PeerChannel.connect('127.0.0.1', 40123, {
 *     onMessage: (message) => console.log('got', message),
 *     onClose: (why) => console.log('ended:', why.kind),
 *   });
 *   channel.send({ type: 'msg', text: 'hello', at: Date.now() });
 *   channel.close();
 *
 * An accepted socket (from net.createServer) is wrapped with `new PeerChannel(socket, handlers)`.
 * Received bytes go through a LineSplitter (limit MAX_LINE_BYTES) and decodePeerMessage; the
 * first bad or over-long line closes the connection and reports why. After close() or onClose
 * nothing more is delivered and send() does nothing.
 */
export class PeerChannel {
  /** The connection itself. */
  readonly socket: net.Socket;
  /** "address:port" of the other end, for messages. */
  readonly remote: string;
  /** False once the channel has ended, by our close() or by anything else. */
  isOpen = true;
  private readonly handlers: PeerChannelHandlers;
  private readonly splitter: LineSplitter;
  /** Pending expectWithin() deadline, if any. */
  private silenceTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(socket: net.Socket, handlers: PeerChannelHandlers, maxLineBytes: number = MAX_LINE_BYTES) {
    this.socket = socket;
    this.handlers = handlers;
    this.splitter = new LineSplitter(maxLineBytes);
    this.remote = `${plainAddress(socket.remoteAddress)}:${socket.remotePort ?? '?'}`;
    // Chat lines are small and a person is waiting for each one: send at once instead of letting
    // Nagle's algorithm hold small packets back to batch them.
    socket.setNoDelay(true);
    let errorDetail: string | undefined;
    socket.on('error', (error: NodeJS.ErrnoException) => (errorDetail = error.code ?? error.message));
    socket.on('close', () => this.end(errorDetail ? { kind: 'error', detail: errorDetail } : { kind: 'ended' }));
    socket.on('data', (chunk: Uint8Array) => this.receive(chunk));
  }

  /** Connects to a peer; rejects if no connection is made within timeoutMs. */
  static connect(host: string, port: number, handlers: PeerChannelHandlers, timeoutMs = 5000): Promise<PeerChannel> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host, port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`no connection within ${timeoutMs} ms`));
      }, timeoutMs);
      const failed = (error: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(new Error(error.code ?? error.message));
      };
      socket.once('error', failed);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.off('error', failed);
        resolve(new PeerChannel(socket, handlers));
      });
    });
  }

  /** Sends one message as one line. Does nothing once the channel has ended. */
  send(message: PeerMessage): void {
    if (!this.isOpen) return;
    const line = encodeLine(message);
    this.handlers.onTrace?.('out', line.trimEnd(), this);
    this.socket.write(line);
  }

  /** Ends the channel (reported as 'silent') unless a message arrives within `ms`. A new call
   * replaces the previous deadline; every received message clears it. */
  expectWithin(ms: number): void {
    this.clearDeadline();
    this.silenceTimer = setTimeout(() => {
      this.end({ kind: 'silent', waitedMs: ms });
      this.socket.destroy();
    }, ms);
  }

  /** Closes politely: what was sent is still delivered, then the connection ends. onClose is not
   * called for this. A peer that never closes its side is cut off after two seconds. */
  close(): void {
    if (!this.isOpen) return;
    this.isOpen = false;
    this.clearDeadline();
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  private clearDeadline(): void {
    if (this.silenceTimer !== undefined) clearTimeout(this.silenceTimer);
    this.silenceTimer = undefined;
  }

  private receive(chunk: Uint8Array): void {
    if (!this.isOpen) return;
    const { lines, tooLong } = this.splitter.push(chunk);
    for (const line of lines) {
      const decoded = decodePeerMessage(line);
      this.handlers.onTrace?.('in', Buffer.from(line).toString('utf8'), this);
      if (!decoded.ok) {
        this.end({ kind: 'garbage', detail: decoded.error });
        this.socket.destroy();
        return;
      }
      this.clearDeadline();
      this.handlers.onMessage(decoded.message, this);
      if (!this.isOpen) return; // the handler closed us: ignore the rest of the chunk
    }
    if (tooLong) {
      this.end({ kind: 'too_long' });
      this.socket.destroy();
    }
  }

  /** Reports the end once, whatever caused it. */
  private end(why: PeerChannelEnd): void {
    if (!this.isOpen) return;
    this.isOpen = false;
    this.clearDeadline();
    this.handlers.onClose(why, this);
  }
}

/** A PeerChannelEnd in words, for the person at the keyboard. */
function describeEnd(why: PeerChannelEnd): string {
  switch (why.kind) {
    case 'ended': return 'the connection was closed';
    case 'error': return `the connection failed (${why.detail})`;
    case 'garbage': return `it sent something that is not a p2p-chat message (${why.detail})`;
    case 'too_long': return `it sent a line longer than ${MAX_LINE_BYTES} bytes`;
    case 'silent': return `it said nothing for ${formatSeconds(why.waitedMs)}`;
  }
}

// ============================================================================================
// Client state
// ============================================================================================
//
// Everything the client remembers is declared here. `state` says which screen we are on and
// holds what that screen needs; a state that involves a peer carries the peer's channel, so a
// channel can only be in use while we are in a state that knows about it.

export type ClientState =
  // ---- Login screen ----
  | { name: 'login_username' }
  | { name: 'login_password'; username: string }
  | { name: 'logging_in'; username: string } // waiting for the registry's answer
  // ---- Register screen ----
  | { name: 'register_username' }
  | { name: 'register_password'; username: string }
  | { name: 'registering'; username: string } // waiting for the registry's answer
  // ---- Search screen (home) ----
  | { name: 'search' }
  /** Waiting for the registry's answer to /list or /logout. */
  | { name: 'asking_registry'; about: 'list' | 'logout' }
  /** We asked for `peer`: first the registry (channel null), then the peer itself. */
  | { name: 'calling'; peer: string; channel: PeerChannel | null }
  /** `peer` asked us; our user says yes or no before `timer` declines for them. */
  | { name: 'deciding'; peer: string; channel: PeerChannel; timer: ReturnType<typeof setTimeout> }
  // ---- Chat screen ----
  | { name: 'chat'; peer: string; channel: PeerChannel }
  // ---- Leaving ----
  | { name: 'quitting' };

/** What the registry gave us at login. Exists only while we are logged in. */
type Session = {
  /** Our name as registered (the registry tells us its spelling). */
  username: string;
  /** The secret proving requests are ours; also the key that checks tickets sent to us. */
  token: string;
  /** Sends a hello to the registry every heartbeatMs. */
  heartbeatTimer: ReturnType<typeof setInterval>;
  /** Set when the registry forgot this session while we were chatting. The chat goes on (it
   * never passed through the registry); when it ends, we go back to Login. */
  lostDuringChat: boolean;
};

/** A line the user typed, or END_OF_INPUT when the input closed (Ctrl-D, end of a pipe). */
type InputLine = string | typeof END_OF_INPUT;
const END_OF_INPUT = Symbol('end of input');

type Client = {
  /** From the command line; never changed afterwards. */
  settings: ClientSettings;
  /** Which screen we are on, and what it needs. */
  state: ClientState;
  /** Set while logged in. */
  session: Session | null;
  /** The keyboard and screen. */
  terminal: Terminal;
  /** Lines typed but not yet handled. A waiting state leaves them here, so a script that types
   * ahead of the prompts loses nothing. */
  pendingInput: InputLine[];
  /** True while handlePendingInput() is running (it must not run inside itself). */
  handlingInput: boolean;
  /** Accepts peers' connections on settings.chatPort. */
  chatListener: net.Server;
  /** The port chatListener actually got (the one we tell the registry). */
  chatPort: number;
  /** Incoming connections that have not yet sent their chat_request. */
  unintroducedPeers: Set<PeerChannel>;
  /** Sends hellos to the registry and hears session_unknown back. */
  heartbeatSocket: dgram.Socket;
};

// ============================================================================================
// The terminal
// ============================================================================================
//
// Two kinds of terminal are handled differently:
//   - a TTY (a person at a keyboard): readline edits the line, and when a message arrives while
//     the person is half-way through typing, we clear the line, print the message, and redraw
//     the prompt and the half-typed text below it. Passwords are not echoed. Colour is used
//     unless NO_COLOR is set.
//   - a pipe (a script, or `client.ts < file`): plain lines in, plain lines out, every prompt on
//     its own line, and never an escape code.

type Terminal = {
  /** Reads typed lines (and, on a TTY, does the line editing: arrows, backspace, history). */
  readline: readline.Interface;
  /** True when both stdin and stdout are a terminal, false for pipes and files. */
  isTty: boolean;
  /** Whether to colour output: stdout is a terminal and NO_COLOR is not set. */
  colour: boolean;
  /** The prompt currently shown (TTY: redrawn after each printed message). */
  prompt: string;
  /** TTY only: while true, what readline echoes is swallowed (the password prompt). */
  muted: boolean;
  /** TTY only: the line just typed is still the last thing on the screen (nothing was printed
   * since Enter), so a chat line may be redrawn in place of it. */
  typedLineOnScreen: boolean;
};

function createTerminal(): Terminal {
  const isTty = Boolean(process.stdin.isTTY && process.stdout.isTTY);
  // readline echoes what is typed to its output. To hide a password we give it an output that
  // passes writes through to stdout unless `muted` is set. (It also needs the screen width.)
  const echo = new Writable({
    write(chunk, _encoding, done) {
      if (!terminal.muted) process.stdout.write(chunk);
      done();
    },
  });
  Object.defineProperty(echo, 'columns', { get: () => process.stdout.columns });
  const terminal: Terminal = {
    readline: readline.createInterface({
      input: process.stdin,
      output: isTty ? echo : undefined, // from a pipe nothing is echoed; we print prompts ourselves
      terminal: isTty,
    }),
    isTty,
    colour: Boolean(process.stdout.isTTY) && !process.env.NO_COLOR,
    prompt: '',
    muted: false,
    typedLineOnScreen: false,
  };
  return terminal;
}

type Colour = 'red' | 'green' | 'yellow' | 'cyan' | 'dim' | 'bold';

/** Colours text when the terminal allows it. */
function paint(client: Client, colour: Colour, text: string): string {
  return client.terminal.colour ? styleText(colour, text) : text;
}

/** Text from the network shown on our screen loses its control characters: a hostile peer
 * could otherwise send escape codes that move the cursor, retitle the window or erase lines. */
function printable(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, '\uFFFD');
}

/** Prints one line without disturbing what the user is typing. */
function say(client: Client, text: string): void {
  const { terminal } = client;
  if (!terminal.isTty) {
    process.stdout.write(text + '\n');
    return;
  }
  // Go to the start of the input line, erase it, print the message there, then draw the prompt
  // and the half-typed text again underneath.
  readline.cursorTo(process.stdout, 0);
  readline.clearLine(process.stdout, 0);
  process.stdout.write(text + '\n');
  terminal.typedLineOnScreen = false;
  if (terminal.muted) process.stdout.write(terminal.prompt); // typed password stays hidden
  else if (terminal.prompt !== '') terminal.readline.prompt(true);
}

/** A notice from the program itself (not a chat message). */
function note(client: Client, text: string): void {
  say(client, paint(client, 'yellow', text));
}

/** Shows a prompt. From a pipe it is a line of its own: scripts wait for it. */
function showPrompt(client: Client, prompt: string, hideInput = false): void {
  const { terminal } = client;
  terminal.prompt = prompt;
  if (!terminal.isTty) {
    process.stdout.write(prompt + '\n');
    return;
  }
  terminal.muted = false;
  terminal.readline.setPrompt(prompt);
  // `true` keeps the cursor where it is in a half-typed line; without it readline moves the
  // cursor to the start, and the next keys typed would land in front of the text.
  terminal.readline.prompt(true);
  terminal.muted = hideInput;
}

/** No prompt while we wait for something; typed lines are kept for later. */
function hidePrompt(client: Client): void {
  client.terminal.prompt = '';
  client.terminal.muted = false;
}

function trace(client: Client, direction: 'in' | 'out', channel: string, line: string): void {
  if (!client.settings.trace) return;
  const arrow = direction === 'out' ? '→' : '←';
  say(client, paint(client, 'dim', `${arrow} ${channel} ${printable(line)}`));
}

function clock(at: number): string {
  return new Date(at).toTimeString().slice(0, 8); // "14:03:07"
}

function formatSeconds(ms: number): string {
  return ms >= 1000 ? `${Math.round(ms / 100) / 10} s` : `${ms} ms`;
}

// ============================================================================================
// Input
// ============================================================================================
//
// readline gives us one line at a time. We do not act on it inside the event: we put it at the
// end of `pendingInput`, then let the current state take lines while it is ready for them.
// Waiting states (logging_in, registering, asking_registry, calling) take none, so a line typed
// while the registry is thinking is handled by the next screen instead of being lost or misread.
// The one exception: while calling, /cancel and /quit act at once — that is what they are for —
// and so does an end of input that no typed-ahead line is waiting in front of.

function onTypedLine(client: Client, line: InputLine): void {
  if (client.terminal.isTty && typeof line === 'string') client.terminal.typedLineOnScreen = true;
  const command = typeof line === 'string' ? line.trim() : line;
  // End of input with nothing typed ahead of it (Ctrl-D while calling) means "leave now", like
  // /quit; behind typed-ahead lines it waits its turn, so those lines still reach the chat.
  const leaveNow = command === '/quit' || (command === END_OF_INPUT && client.pendingInput.length === 0);
  if (client.state.name === 'calling' && (command === '/cancel' || leaveNow)) {
    if (command === '/cancel') cancelCall(client);
    else void quit(client);
    return;
  }
  client.pendingInput.push(line);
  handlePendingInput(client);
}

function isWaiting(state: ClientState): boolean {
  return state.name === 'logging_in' || state.name === 'registering' || state.name === 'asking_registry' ||
    state.name === 'calling' || state.name === 'quitting';
}

/** Hands queued lines, oldest first, to whoever the current state is. Called after each typed
 * line and after each change of state. */
function handlePendingInput(client: Client): void {
  if (client.handlingInput) return; // an outer call is already looping; it will see new lines
  client.handlingInput = true;
  try {
    while (client.pendingInput.length > 0 && !isWaiting(client.state)) {
      const line = client.pendingInput.shift()!;
      if (line === END_OF_INPUT) {
        void quit(client);
        return;
      }
      handleLine(client, line);
    }
  } finally {
    client.handlingInput = false;
  }
}

/** Routes one typed line to the function for the current state. Spaces around a line are
 * dropped, except in a password, where they may be part of it. */
function handleLine(client: Client, rawLine: string): void {
  const state = client.state;
  const line = rawLine.trim();
  switch (state.name) {
    case 'login_username': return onLoginUsername(client, line);
    case 'login_password': return void onLoginPassword(client, state.username, rawLine);
    case 'register_username': return onRegisterUsername(client, line);
    case 'register_password': return void onRegisterPassword(client, state.username, rawLine);
    case 'search': return onSearchLine(client, line);
    case 'deciding': return onDecision(client, line);
    case 'chat': return onChatLine(client, line);
    case 'logging_in': case 'registering': case 'asking_registry': case 'calling': case 'quitting':
      return; // waiting states take no input (see isWaiting)
  }
}

/** Changes state and runs whatever input was waiting for the new state. */
function enter(client: Client, state: ClientState): void {
  client.state = state;
  // Let the current event finish first, so a state's prompt is printed before its input runs.
  queueMicrotask(() => handlePendingInput(client));
}

// ============================================================================================
// Talking to the registry
// ============================================================================================
//
// Each request opens a fresh TCP connection, sends one line, reads one line, and closes. That
// costs a few milliseconds more than keeping a connection open, but there is nothing to keep
// alive, nothing to reconnect, and a registry that went away is noticed exactly when we need it.

/** The registry could not be reached, or did not answer in time. */
class RegistryUnreachable extends Error {}

function askRegistry(client: Client, request: Request): Promise<Reply> {
  const { server, tcpPort, registryTimeoutMs } = client.settings;
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: server, port: tcpPort });
    const splitter = new LineSplitter();
    let settled = false;
    const finish = (outcome: Reply | Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (outcome instanceof Error) reject(outcome);
      else resolve(outcome);
    };
    const timer = setTimeout(() => {
      finish(new RegistryUnreachable(`no answer from the registry at ${server}:${tcpPort} within ${formatSeconds(registryTimeoutMs)}`));
    }, registryTimeoutMs);
    socket.on('connect', () => {
      const line = encodeLine(request);
      trace(client, 'out', 'registry', redactSecrets(line.trimEnd()));
      socket.write(line);
    });
    socket.on('data', (chunk: Uint8Array) => {
      const { lines, tooLong } = splitter.push(chunk);
      if (tooLong) return finish(new RegistryUnreachable('the registry sent a line that is far too long'));
      if (lines.length === 0) return;
      const text = Buffer.from(lines[0]).toString('utf8');
      trace(client, 'in', 'registry', redactSecrets(text));
      const decoded = decodeReply(lines[0]);
      finish(decoded.ok ? decoded.message : new RegistryUnreachable(`the registry's answer makes no sense (${decoded.error})`));
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      finish(new RegistryUnreachable(`cannot reach the registry at ${server}:${tcpPort} (${error.code ?? error.message})`));
    });
    socket.on('close', () => finish(new RegistryUnreachable('the registry closed the connection without answering')));
  });
}

/** --trace shows the protocol, but secrets have no business on a screen someone may be
 * sharing: the password is hidden, and the session token shortened to its first characters. */
function redactSecrets(line: string): string {
  return line
    .replace(/"password":"(?:[^"\\]|\\.)*"/, '"password":"***"')
    .replace(/"token":"([^"]{6})[^"]*"/, '"token":"$1…"');
}

/** Starts saying hello to the registry every heartbeatMs, so it keeps us in the online list. */
function startHeartbeat(client: Client, username: string, token: string, heartbeatMs: number): ReturnType<typeof setInterval> {
  const hello = encodeDatagram({ type: 'hello', username, token });
  const shown = redactSecrets(JSON.stringify({ type: 'hello', username, token }));
  return setInterval(() => {
    trace(client, 'out', 'udp', shown);
    // A lost datagram does not matter (the next one follows), so errors are ignored.
    client.heartbeatSocket.send(hello, client.settings.udpPort, client.settings.server, () => {});
  }, heartbeatMs);
}

/** What we say when the registry has forgotten our session (session_unknown, not_logged_in). */
const SESSION_FORGOTTEN = 'the registry no longer knows this session — did it restart? Please log in again.';

/** A datagram arrived on the heartbeat socket. Only session_unknown means anything. */
function onDatagram(client: Client, bytes: Uint8Array, sender: dgram.RemoteInfo): void {
  // Only a datagram from the registry's heartbeat port may tell us our session is gone, so a
  // stray or forged packet from any other port cannot log us out. (A cheap filter, not proof:
  // the sender's address is not checked, and UDP source ports can be forged.)
  if (sender.port !== client.settings.udpPort) return;
  const decoded = decodeDatagram(bytes);
  if (!decoded.ok) return;
  trace(client, 'in', 'udp', JSON.stringify(decoded.message));
  if (decoded.message.type === 'session_unknown' && client.session !== null && !client.session.lostDuringChat) {
    loseSession(client, SESSION_FORGOTTEN);
  }
}

// ============================================================================================
// Login and register
// ============================================================================================

function showLoginScreen(client: Client): void {
  enter(client, { name: 'login_username' });
  showPrompt(client, 'Login — username (or /register, /quit): ');
}

function onLoginUsername(client: Client, line: string): void {
  if (line === '') return showPrompt(client, client.terminal.prompt);
  if (line === '/register') return showRegisterScreen(client);
  if (line === '/quit') return void quit(client);
  if (!USERNAME_PATTERN.test(line)) {
    note(client, `Not a username: ${USERNAME_RULE}.`);
    return showLoginScreen(client);
  }
  enter(client, { name: 'login_password', username: line });
  showPrompt(client, 'password: ', true);
}

async function onLoginPassword(client: Client, username: string, password: string): Promise<void> {
  if (client.terminal.isTty) process.stdout.write('\n'); // the hidden Enter did not move the cursor
  hidePrompt(client);
  const waiting: ClientState = { name: 'logging_in', username };
  enter(client, waiting);
  let reply: Reply;
  try {
    reply = await askRegistry(client, { type: 'login', username, password, chatPort: client.chatPort });
  } catch (error) {
    if (client.state !== waiting) return;
    note(client, errorText(error));
    return showLoginScreen(client);
  }
  if (client.state !== waiting) return; // we quit meanwhile
  if (reply.type !== 'logged_in') {
    note(client, reply.type === 'error' ? `Login failed: ${printable(reply.message)}` : 'Login failed: unexpected answer');
    return showLoginScreen(client);
  }
  client.session = {
    username: reply.username,
    token: reply.token,
    heartbeatTimer: startHeartbeat(client, reply.username, reply.token, reply.heartbeatMs),
    lostDuringChat: false,
  };
  say(client, paint(client, 'green', `Logged in as ${reply.username}. Peers reach you on port ${client.chatPort}. Type /help for commands.`));
  showSearchScreen(client);
}

function showRegisterScreen(client: Client): void {
  enter(client, { name: 'register_username' });
  showPrompt(client, 'Register — new username (or /login to go back): ');
}

function onRegisterUsername(client: Client, line: string): void {
  if (line === '') return showPrompt(client, client.terminal.prompt);
  if (line === '/login') return showLoginScreen(client);
  if (line === '/quit') return void quit(client);
  enter(client, { name: 'register_password', username: line });
  showPrompt(client, 'new password: ', true);
}

async function onRegisterPassword(client: Client, username: string, password: string): Promise<void> {
  if (client.terminal.isTty) process.stdout.write('\n');
  hidePrompt(client);
  const waiting: ClientState = { name: 'registering', username };
  enter(client, waiting);
  let reply: Reply;
  try {
    reply = await askRegistry(client, { type: 'register', username, password });
  } catch (error) {
    if (client.state !== waiting) return;
    note(client, errorText(error));
    return showRegisterScreen(client);
  }
  if (client.state !== waiting) return;
  if (reply.type !== 'registered') {
    note(client, reply.type === 'error' ? `Registration failed: ${printable(reply.message)}` : 'Registration failed: unexpected answer');
    return showRegisterScreen(client);
  }
  say(client, paint(client, 'green', `Registered ${reply.username}. Now log in.`));
  showLoginScreen(client);
}

// ============================================================================================
// Search
// ============================================================================================

const SEARCH_HELP = `Commands:
  NAME or /search NAME   ask NAME to chat
  /list                  who is online
  /logout                log out and return to the login screen
  /quit                  log out and exit
  /help                  this list
While waiting for an answer: /cancel gives up. In a chat: /back leaves it, /quit exits.`;

function showSearchScreen(client: Client): void {
  enter(client, { name: 'search' });
  showPrompt(client, `${client.session?.username ?? '?'}> `);
}

function onSearchLine(client: Client, line: string): void {
  const [command, ...rest] = line.split(/\s+/);
  const argument = rest.join(' ');
  if (line === '') return showPrompt(client, client.terminal.prompt);
  if (command === '/help') {
    say(client, SEARCH_HELP);
    return showPrompt(client, client.terminal.prompt);
  }
  if (command === '/list') return void listOnline(client);
  if (command === '/logout') return void logout(client);
  if (command === '/quit') return void quit(client);
  if (command === '/search' && argument !== '') return void callPeer(client, argument);
  if (!line.startsWith('/') && rest.length === 0) return void callPeer(client, line);
  note(client, 'Unknown command; type /help.');
  showPrompt(client, client.terminal.prompt);
}

async function listOnline(client: Client): Promise<void> {
  const session = client.session!;
  hidePrompt(client);
  const waiting: ClientState = { name: 'asking_registry', about: 'list' };
  enter(client, waiting);
  let reply: Reply;
  try {
    reply = await askRegistry(client, { type: 'list', token: session.token });
  } catch (error) {
    if (client.state === waiting) registryLost(client, errorText(error));
    return;
  }
  if (client.state !== waiting) return;
  if (reply.type === 'online') say(client, `Online (${reply.users.length}): ${reply.users.map(printable).join(', ')}`);
  else if (reply.type === 'error' && reply.code === 'not_logged_in') return loseSession(client, SESSION_FORGOTTEN);
  else note(client, reply.type === 'error' ? printable(reply.message) : 'unexpected answer from the registry');
  showSearchScreen(client);
}

/** Asks the registry where `wanted` is, connects to them and sends our chat request. Each await
 * is followed by a check that we are still in this call: the user may have typed /cancel. */
async function callPeer(client: Client, wanted: string): Promise<void> {
  const session = client.session!;
  if (normaliseUsername(wanted) === normaliseUsername(session.username)) {
    note(client, 'That is you.');
    return showPrompt(client, client.terminal.prompt);
  }
  if (!USERNAME_PATTERN.test(wanted)) {
    note(client, `"${printable(wanted)}" is not a username; type /help.`);
    return showPrompt(client, client.terminal.prompt);
  }
  hidePrompt(client);
  const call: ClientState = { name: 'calling', peer: wanted, channel: null };
  enter(client, call);
  note(client, `Waiting for ${wanted}… (/cancel to give up)`);

  // 1. Where is the peer? The registry answers with an address and a ticket.
  let reply: Reply;
  try {
    reply = await askRegistry(client, { type: 'search', token: session.token, username: wanted });
  } catch (error) {
    if (client.state === call) registryLost(client, errorText(error));
    return;
  }
  if (client.state !== call) return;
  if (reply.type === 'error' && reply.code === 'not_logged_in') {
    return loseSession(client, SESSION_FORGOTTEN);
  }
  if (reply.type !== 'found') {
    note(client, reply.type === 'error' ? printable(reply.message) : 'unexpected answer from the registry');
    return showSearchScreen(client);
  }
  const peer = reply.username;

  // 2. Connect to the peer's client directly.
  let channel: PeerChannel;
  try {
    channel = await PeerChannel.connect(reply.host, reply.port, conversationHandlers(client, peer), client.settings.registryTimeoutMs);
  } catch (error) {
    if (client.state !== call) return;
    note(client, `${peer} is unreachable at ${reply.host}:${reply.port} (${errorText(error)}).`);
    return showSearchScreen(client);
  }
  if (client.state !== call) {
    channel.close(); // cancelled while connecting
    return;
  }
  enter(client, { name: 'calling', peer, channel });

  // 3. Knock, and wait (bounded) for the answer; it arrives in onConversationMessage.
  channel.send({ type: 'chat_request', from: session.username, ticket: reply.ticket });
  channel.expectWithin(client.settings.answerTimeoutMs);
}

/** The peer we called answered. */
function onCallAnswered(client: Client, peer: string, channel: PeerChannel, message: PeerMessage): void {
  if (message.type === 'chat_accept') {
    say(client, paint(client, 'green', `${peer} accepted. You are chatting with ${peer}; /back leaves.`));
    return startChat(client, peer, channel);
  }
  channel.close();
  if (message.type === 'chat_decline') note(client, declineInWords(peer, message.reason));
  else note(client, `${peer}'s client answered with "${message.type}" instead of an answer; hung up.`);
  showSearchScreen(client);
}

function declineInWords(peer: string, reason: DeclineReason): string {
  switch (reason) {
    case 'declined': return `${peer} declined your request.`;
    case 'busy': return `${peer} is busy (in another chat or deciding about one); try again later.`;
    case 'timeout': return `${peer} did not answer in time: the request timed out.`;
    case 'bad_ticket': return `${peer}'s client refused the request: bad ticket (did the registry restart?).`;
  }
}

function cancelCall(client: Client): void {
  const state = client.state;
  if (state.name !== 'calling') return;
  if (state.channel !== null) {
    state.channel.send({ type: 'bye' }); // tells the peer to stop asking its user
    state.channel.close();
  }
  note(client, `Cancelled the request to ${state.peer}.`);
  showSearchScreen(client);
}

// ============================================================================================
// Incoming requests
// ============================================================================================
//
// Someone connects to our chat port. Until they send a chat_request we do not know who they
// are, so they get greetingTimeoutMs to do so. Then, before bothering our user, we check their
// ticket: only the registry (which knows our session token) can make one that passes.

function onIncomingConnection(client: Client, socket: net.Socket): void {
  // The first message must be a chat_request. After it, the channel's messages go to the same
  // functions as any conversation (which drop the channel unless we are deciding or chatting with it).
  /** The name in the caller's chat_request, or null before it arrived. Not yet proof of who
   * they are: onChatRequest checks the ticket before anything depends on it. */
  let caller: string | null = null;
  const channel = new PeerChannel(socket, {
    onMessage: (message) => {
      if (caller !== null) return onConversationMessage(client, channel, message);
      client.unintroducedPeers.delete(channel);
      if (message.type !== 'chat_request') {
        note(client, `Dropped a connection from ${channel.remote}: it sent "${message.type}" before any chat request.`);
        return channel.close();
      }
      caller = message.from;
      onChatRequest(client, channel, message);
    },
    onClose: (why) => {
      if (caller !== null) return onConversationEnded(client, channel, why);
      client.unintroducedPeers.delete(channel);
      if (why.kind !== 'ended') note(client, `Dropped a connection from ${channel.remote}: ${describeEnd(why)}.`);
    },
    onTrace: (direction, line) => trace(client, direction, `peer ${caller ?? channel.remote}`, line),
  });
  client.unintroducedPeers.add(channel);
  channel.expectWithin(client.settings.greetingTimeoutMs);
}

function onChatRequest(client: Client, channel: PeerChannel, request: ChatRequest): void {
  const session = client.session;
  const decline = (reason: DeclineReason) => {
    channel.send({ type: 'chat_decline', reason });
    channel.close();
  };
  // Busy: not logged in, or already calling, deciding or chatting. The user is not bothered.
  if (session === null || client.state.name !== 'search') return decline('busy');
  const verdict = checkTicket(session.token, request.ticket, request.from, session.username);
  if (verdict !== 'valid') {
    decline('bad_ticket');
    note(client, paint(client, 'red',
      `Warning: refused a chat request claiming to come from "${printable(request.from)}" at ${channel.remote}: ` +
      `its ticket is not valid (${verdict.replace('_', ' ')}). Someone may be impersonating them.`));
    return showPrompt(client, client.terminal.prompt);
  }
  const peer = request.from;
  const timer = setTimeout(() => {
    if (client.state.name !== 'deciding' || client.state.channel !== channel) return;
    decline('timeout');
    note(client, `No answer within ${formatSeconds(client.settings.decideTimeoutMs)}: declined ${peer}'s request automatically.`);
    showSearchScreen(client);
  }, client.settings.decideTimeoutMs);
  enter(client, { name: 'deciding', peer, channel, timer });
  say(client, paint(client, 'bold', `${peer} wants to chat with you.`));
  showPrompt(client, `Accept ${peer}? (y/n) `);
}

function onDecision(client: Client, line: string): void {
  const state = client.state;
  if (state.name !== 'deciding') return;
  if (line === '/quit') return void quit(client); // hangUpAll declines for us
  const answer = line.toLowerCase();
  if (answer !== 'y' && answer !== 'yes' && answer !== 'n' && answer !== 'no') {
    return showPrompt(client, `Please answer y or n. Accept ${state.peer}? (y/n) `);
  }
  clearTimeout(state.timer);
  if (answer === 'y' || answer === 'yes') {
    state.channel.send({ type: 'chat_accept' });
    say(client, paint(client, 'green', `You are chatting with ${state.peer}; /back leaves.`));
    return startChat(client, state.peer, state.channel);
  }
  state.channel.send({ type: 'chat_decline', reason: 'declined' });
  state.channel.close();
  note(client, `Declined ${state.peer}.`);
  showSearchScreen(client);
}

// ============================================================================================
// Chat
// ============================================================================================

/** The handlers of a channel to a peer we called. (A channel a peer opened to us gets its own
 * handlers in onIncomingConnection, which pass to the same functions once the request arrived.) */
function conversationHandlers(client: Client, peer: string): PeerChannelHandlers {
  return {
    onMessage: (message, channel) => onConversationMessage(client, channel, message),
    onClose: (why, channel) => onConversationEnded(client, channel, why),
    onTrace: (direction, line) => trace(client, direction, `peer ${peer}`, line),
  };
}

/** The channel of the current state, if it has one. A message on any other channel belongs to a
 * conversation that is already over, and is ignored. */
function currentChannel(state: ClientState): PeerChannel | null {
  return state.name === 'calling' || state.name === 'deciding' || state.name === 'chat' ? state.channel : null;
}

function onConversationMessage(client: Client, channel: PeerChannel, message: PeerMessage): void {
  const state = client.state;
  if (currentChannel(state) !== channel) return channel.close();
  switch (state.name) {
    case 'calling':
      return onCallAnswered(client, state.peer, channel, message);
    case 'deciding':
      // The caller may only give up (bye) while our user decides.
      clearTimeout(state.timer);
      channel.close();
      note(client, message.type === 'bye'
        ? `${state.peer} gave up asking.`
        : `Dropped ${state.peer}: "${message.type}" makes no sense before an answer.`);
      return showSearchScreen(client);
    case 'chat':
      return onChatMessage(client, state.peer, channel, message);
  }
}

function onConversationEnded(client: Client, channel: PeerChannel, why: PeerChannelEnd): void {
  const state = client.state;
  if (currentChannel(state) !== channel) return;
  switch (state.name) {
    case 'calling':
      note(client, why.kind === 'silent'
        ? `No answer from ${state.peer}'s client within ${formatSeconds(why.waitedMs)}: the request timed out.`
        : why.kind === 'ended' ? `${state.peer} hung up without answering.` : `Dropped ${state.peer}: ${describeEnd(why)}.`);
      return showSearchScreen(client);
    case 'deciding':
      clearTimeout(state.timer);
      note(client, `${state.peer} gave up asking (${describeEnd(why)}).`);
      return showSearchScreen(client);
    case 'chat':
      if (why.kind !== 'ended') note(client, `Dropped ${state.peer}: ${describeEnd(why)}.`);
      return endChat(client, `${state.peer} left the chat.`);
  }
}

function startChat(client: Client, peer: string, channel: PeerChannel): void {
  enter(client, { name: 'chat', peer, channel });
  showPrompt(client, `${client.session!.username} → ${peer}> `);
}

function onChatLine(client: Client, line: string): void {
  const state = client.state;
  if (state.name !== 'chat') return;
  if (line === '/back') {
    state.channel.send({ type: 'bye' });
    state.channel.close();
    return endChat(client, `You left the chat with ${state.peer}.`);
  }
  if (line === '/quit') return void quit(client);
  if (line === '/help') {
    say(client, 'In a chat: type a line to send it; /back leaves the chat; /quit exits.');
    return showPrompt(client, client.terminal.prompt);
  }
  if (line === '') return showPrompt(client, client.terminal.prompt);
  if (line.startsWith('/')) {
    note(client, 'Unknown command (in a chat: /back, /quit, /help).');
    return showPrompt(client, client.terminal.prompt);
  }
  const at = Date.now();
  const message: PeerMessage = { type: 'msg', text: line, at };
  // The peer's client drops a connection whose line passes MAX_LINE_BYTES (see PeerChannel), so
  // a long paste would end the chat. Refuse it here instead, and keep the chat.
  const lineBytes = Buffer.byteLength(encodeLine(message)) - 1; // the limit does not count "\n"
  if (lineBytes > MAX_LINE_BYTES) {
    note(client, `Not sent: that message is too long (${lineBytes} bytes as a peer message; the limit is ${MAX_LINE_BYTES}).`);
    return showPrompt(client, client.terminal.prompt);
  }
  state.channel.send(message);
  const own = client.session!.username;
  if (client.terminal.typedLineOnScreen) {
    // readline left what we typed on the screen; replace it with the formatted line. (A line
    // typed ahead while we waited has other output below it by now, and stays.)
    const columns = process.stdout.columns || 80;
    const rows = Math.ceil((client.terminal.prompt.length + line.length) / columns) || 1;
    readline.moveCursor(process.stdout, 0, -rows);
    readline.clearScreenDown(process.stdout);
  }
  say(client, `${paint(client, 'dim', `[${clock(at)}]`)} ${paint(client, 'cyan', own)}: ${line}`);
  saveToHistory(client, state.peer, own, line, at);
}

function onChatMessage(client: Client, peer: string, channel: PeerChannel, message: PeerMessage): void {
  if (message.type === 'msg') {
    // Shown with our own clock: `at` is only the peer's claim, and clocks disagree.
    const at = Date.now();
    say(client, `${paint(client, 'dim', `[${clock(at)}]`)} ${paint(client, 'green', peer)}: ${printable(message.text)}`);
    saveToHistory(client, peer, peer, message.text, at);
    return;
  }
  channel.close();
  if (message.type === 'bye') return endChat(client, `${peer} left the chat.`);
  note(client, `Dropped ${peer}: "${message.type}" makes no sense in a chat.`);
  endChat(client, `${peer} left the chat.`);
}

function endChat(client: Client, words: string): void {
  note(client, words);
  if (client.session?.lostDuringChat) {
    dropSession(client);
    note(client, 'The registry no longer knows this session; please log in again.');
    return showLoginScreen(client);
  }
  showSearchScreen(client);
}

/** With --history, appends one line to historyDir/<you>/<peer>.log. A failure to write is
 * reported but does not end the chat. */
function saveToHistory(client: Client, peer: string, author: string, text: string, at: number): void {
  const dir = client.settings.historyDir;
  if (dir === undefined || client.session === null) return;
  try {
    const folder = path.join(dir, safeFileName(client.session.username));
    mkdirSync(folder, { recursive: true });
    appendFileSync(path.join(folder, `${safeFileName(peer)}.log`), `${new Date(at).toISOString()} ${author}: ${printable(text)}\n`);
  } catch (error) {
    note(client, `Could not write the history: ${errorText(error)}`);
  }
}

/** Usernames may be "." or ".." (letters, digits, "_", "." and "-"), which as a folder name would
 * point outside the history directory. Normalised, and prefixed when made only of dots. */
function safeFileName(name: string): string {
  const normal = normaliseUsername(name);
  return /^\.+$/.test(normal) ? `_${normal}` : normal;
}

// ============================================================================================
// Session end and exit
// ============================================================================================

/** Ends whatever conversation the current state holds, telling the peer. */
function hangUpAll(client: Client): void {
  const state = client.state;
  const channel = currentChannel(state);
  if (state.name === 'deciding') {
    clearTimeout(state.timer);
    state.channel.send({ type: 'chat_decline', reason: 'declined' }); // they asked; we say no
  } else if (channel !== null) {
    channel.send({ type: 'bye' }); // chatting, or waiting for their answer: we are leaving
  }
  channel?.close();
  for (const channel of client.unintroducedPeers) channel.close();
  client.unintroducedPeers.clear();
}

/** Forgets the session locally and returns its token (for a logout request), or null. */
function dropSession(client: Client): string | null {
  const session = client.session;
  if (session === null) return null;
  clearInterval(session.heartbeatTimer);
  client.session = null;
  return session.token;
}

/** /logout: tell the registry at once (instead of letting it notice our silence), then Login. */
async function logout(client: Client): Promise<void> {
  const token = dropSession(client);
  hidePrompt(client);
  const waiting: ClientState = { name: 'asking_registry', about: 'logout' };
  enter(client, waiting);
  if (token !== null) {
    try {
      await askRegistry(client, { type: 'logout', token });
      note(client, 'Logged out.');
    } catch (error) {
      note(client, `Logged out here, but could not tell the registry: ${errorText(error)}`);
    }
  }
  if (client.state === waiting) showLoginScreen(client);
}

/** The registry forgot us (session_unknown, or not_logged_in): back to Login. In a chat we stay:
 * the conversation is between the two clients and does not need the registry. */
function loseSession(client: Client, why: string): void {
  if (client.state.name === 'chat' && client.session !== null) {
    clearInterval(client.session.heartbeatTimer); // hellos for a dead session are pointless
    client.session.lostDuringChat = true;
    return note(client, `${why} This chat goes on; you will be back at Login when it ends.`);
  }
  hangUpAll(client);
  dropSession(client);
  note(client, why);
  showLoginScreen(client);
}

/** The registry could not be reached for a request we needed: say so, back to Login. */
function registryLost(client: Client, why: string): void {
  loseSession(client, `${why}. The registry seems to be gone; log in again once it is back.`);
}

/** /quit, end of input, Ctrl-C, SIGTERM: leave every conversation, log out, exit 0. */
async function quit(client: Client): Promise<void> {
  if (client.state.name === 'quitting') return;
  hangUpAll(client);
  hidePrompt(client);
  client.state = { name: 'quitting' };
  const token = dropSession(client);
  if (token !== null) {
    try {
      await askRegistry(client, { type: 'logout', token });
    } catch {
      // The registry is gone; it will forget us after timeoutMs anyway.
    }
  }
  say(client, 'Bye.');
  client.chatListener.close();
  client.heartbeatSocket.close();
  client.terminal.readline.close();
  process.exit(0);
}

// ============================================================================================
// Command line
// ============================================================================================

const USAGE = `Usage: client.ts [options]

The p2p-chat terminal client: log in at a registry, find someone, chat with them directly.

Options:
  --server HOST          the registry's address (default 127.0.0.1)
  --tcp-port N           the registry's TCP port (default ${DEFAULT_TCP_PORT})
  --udp-port N           the registry's UDP port for heartbeats (default ${DEFAULT_UDP_PORT})
  --chat-port N          port where peers reach you (default 0: any free port)
  --history DIR          append each conversation to DIR/<you>/<peer>.log
  --trace                print every protocol message sent and received
  -h, --help             show this help

Timeouts (mostly for tests; milliseconds):
  --registry-timeout-ms N   wait for the registry's answer (default ${DEFAULT_CLIENT_SETTINGS.registryTimeoutMs})
  --answer-timeout-ms N     wait for a called peer's accept/decline (default ${DEFAULT_CLIENT_SETTINGS.answerTimeoutMs})
  --decide-timeout-ms N     time to accept an incoming request (default ${DEFAULT_CLIENT_SETTINGS.decideTimeoutMs})
  --greeting-timeout-ms N   time a new peer connection has to send its request (default ${DEFAULT_CLIENT_SETTINGS.greetingTimeoutMs})

Environment:
  NO_COLOR               set to turn colour off`;


/** Turns the command line into settings; null means --help was printed. */
function parseCommandLine(args: string[]): ClientSettings | null {
  const { values } = parseArgs({
    args,
    options: {
      server: { type: 'string' },
      'tcp-port': { type: 'string' },
      'udp-port': { type: 'string' },
      'chat-port': { type: 'string' },
      history: { type: 'string' },
      trace: { type: 'boolean' },
      'registry-timeout-ms': { type: 'string' },
      'answer-timeout-ms': { type: 'string' },
      'decide-timeout-ms': { type: 'string' },
      'greeting-timeout-ms': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return null;
  }
  const defaults = DEFAULT_CLIENT_SETTINGS;
  const day = 86_400_000;
  return {
    server: values.server ?? defaults.server,
    tcpPort: numberFlag('tcp-port', values['tcp-port'], defaults.tcpPort, 1, 65535),
    udpPort: numberFlag('udp-port', values['udp-port'], defaults.udpPort, 1, 65535),
    chatPort: numberFlag('chat-port', values['chat-port'], defaults.chatPort, 0, 65535),
    historyDir: values.history,
    trace: values.trace ?? false,
    registryTimeoutMs: numberFlag('registry-timeout-ms', values['registry-timeout-ms'], defaults.registryTimeoutMs, 1, day),
    answerTimeoutMs: numberFlag('answer-timeout-ms', values['answer-timeout-ms'], defaults.answerTimeoutMs, 1, day),
    decideTimeoutMs: numberFlag('decide-timeout-ms', values['decide-timeout-ms'], defaults.decideTimeoutMs, 1, day),
    greetingTimeoutMs: numberFlag('greeting-timeout-ms', values['greeting-timeout-ms'], defaults.greetingTimeoutMs, 1, day),
  };
}

function listen(server: net.Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) => {
      reject(error.code === 'EADDRINUSE' ? new UsageError(`chat port ${port} is already in use; choose another with --chat-port`) : error);
    });
    server.listen(port, () => resolve((server.address() as net.AddressInfo).port));
  });
}

async function main(): Promise<void> {
  let settings: ClientSettings | null;
  try {
    settings = parseCommandLine(process.argv.slice(2));
  } catch (error) {
    console.error(`error: ${errorText(error)}\n(see --help)`);
    process.exit(2);
  }
  if (settings === null) return;

  // Listen for peers before logging in: the registry must be told the port at login.
  const chatListener = net.createServer();
  let chatPort: number;
  try {
    chatPort = await listen(chatListener, settings.chatPort);
  } catch (error) {
    console.error(`error: ${errorText(error)}`);
    process.exit(1);
  }
  const heartbeatSocket = dgram.createSocket(settings.server.includes(':') ? 'udp6' : 'udp4');

  const client: Client = {
    settings,
    state: { name: 'login_username' },
    session: null,
    terminal: createTerminal(),
    pendingInput: [],
    handlingInput: false,
    chatListener,
    chatPort,
    unintroducedPeers: new Set(),
    heartbeatSocket,
  };

  chatListener.on('connection', (socket) => onIncomingConnection(client, socket));
  heartbeatSocket.on('message', (bytes, sender) => onDatagram(client, bytes, sender));
  heartbeatSocket.on('error', () => {}); // e.g. the registry host is unreachable: heartbeats just fail
  client.terminal.readline.on('line', (line) => onTypedLine(client, line));
  client.terminal.readline.on('close', () => onTypedLine(client, END_OF_INPUT));
  client.terminal.readline.on('SIGINT', () => void quit(client)); // Ctrl-C at a TTY
  process.on('SIGINT', () => void quit(client));
  process.on('SIGTERM', () => void quit(client));

  say(client, paint(client, 'bold', `p2p-chat — registry ${settings.server}:${settings.tcpPort}`));
  showLoginScreen(client);
}

if (isMainModule(import.meta)) await main();
