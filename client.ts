/**
 * client.ts — the terminal client: log in, find someone, and chat with them directly.
 *
 * The registry (server.ts) only introduces people. Once it has told us where a peer listens and
 * handed us a ticket for them, we open a TCP connection straight to the peer's client, and every
 * chat message travels on that connection. The registry never sees a word of the conversation.
 *
 *   you ──▶ ┌─────────────────────────────┐  TCP: register login search list logout ┌──────────┐
 *  (keys)   │ client.ts                   │ ───────────────────────────────────────▶│ registry │
 *           │   events ──▶ dispatch ──▶   │  UDP: hello every heartbeatMs           │          │
 *   you ◀── │   transition ──▶ effects    │ ───────────────────────────────────────▶│          │
 * (screen)  │                             │ ◀──────────── session_unknown (if lost) └──────────┘
 *           │   chat listener :chat-port  │
 *           └─────────────────────────────┘
 *                   ▲            │  TCP, one JSON object per line:
 *   peer calls us ──┘            └─ we call a peer: chat_request → chat_accept | chat_decline,
 *                                   then msg … msg, and bye when one of us leaves
 *
 * Both TCP links run under a secure channel (secure.ts) unless --plain: a handshake that proves
 * the registry's key (pinned on first use) or the peer's (named by the registry), then sealed
 * lines. The keys this client knows live in files: see "Effects: keys".
 *
 * The program is one event loop, like smallchat's: everything that can happen (a typed line, a
 * registry answer, a peer's message, a timer, a signal) becomes a ClientEvent. dispatch() hands
 * it to transition(), a pure function (state + event → next state + effects), and then runs the
 * effects: print, ask the registry, send to a peer, start a timer. Effects that finish later
 * report back as new events; nothing waits. The screens are the states, and this is the whole
 * table (test/client-transitions.test.ts checks every row against transition()):
 *
 *   screen             event                   next screen
 *   login_username     typed NAME              login_password
 *   login_username     typed /register         register_username
 *   login_password     typed PASSWORD          logging_in
 *   login_password     typed nothing           login_username     Enter alone goes back
 *   logging_in         answer logged_in        search
 *   logging_in         answer error            login_username     or no answer at all
 *   register_username  typed NAME              checking_name      is the name free?
 *   register_username  typed /login            login_username
 *   checking_name      answer username_free    register_password
 *   checking_name      answer error            register_username  the name is taken
 *   register_password  typed PASSWORD          register_confirm
 *   register_confirm   typed PASSWORD          registering        the same password again
 *   register_confirm   typed OTHER             register_password  they differ: choose again
 *   registering        answer registered       login_username
 *   registering        answer error            register_username  e.g. the name is taken
 *   search             typed /list             asking(list)
 *   search             typed /logout           asking(logout)
 *   search             typed NAME              calling
 *   search             request                 deciding           a caller whose ticket passed
 *   search             session_unknown         login_username     the registry forgot us
 *   search             typed /quit             quitting           log out, then exit
 *   asking(list)       answer online           search
 *   asking(list)       answer not_logged_in    login_username     the registry forgot us
 *   asking(logout)     answer logged_out       login_username
 *   calling            answer error            search             not found, or offline
 *   calling            call_failed             search             the peer is unreachable
 *   calling            peer chat_accept        chat
 *   calling            peer chat_decline       search
 *   calling            typed /cancel           search
 *   calling            typed /list             calling            answered at once
 *   calling            request(they win)       chat               glare: their name sorts first
 *   calling            request(we win)         calling            glare: we hold their request
 *   deciding           typed y                 chat
 *   deciding           typed n                 search
 *   deciding           timer decide            search             declined for us
 *   deciding           peer bye                search             the caller gave up
 *   chat               typed /back             search
 *   chat               pasted lines            chat               text, even "/back"
 *   chat               typed /logout           asking(logout)     leave the chat, then log out
 *   chat               peer bye                search             or the connection ended
 *   chat               session_unknown         chat(lost)         the chat goes on
 *   chat(lost)         peer bye                login_username
 *   login_username     signal                  exit               Ctrl-C, SIGTERM, SIGHUP
 *   chat               signal                  quitting           bye to the peer, log out, exit
 *   quitting           answer logged_out       exit
 *
 * With a registry that has a key, a session_unknown first asks the registry over the secure link,
 * and only its answer not_logged_in moves the screen as the session_unknown rows say.
 *
 * Layout: settings; state and events; startClient and the effect runner (askRegistry and
 * PeerChannel in protocol.ts turn bytes into checked messages, terminal.ts draws the screen); the
 * dispatcher, one handler per screen; history files; keys; device proofs; the command line.
 * Exported: what test/client-transitions.test.ts, client-ux and client-input need.
 */

import { Buffer } from 'node:buffer';
import dns from 'node:dns';
import {
  appendFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync,
} from 'node:fs';
import dgram from 'node:dgram';
import net from 'node:net';
import path from 'node:path';
import process from 'node:process';
import { parseArgs } from 'node:util';
import {
  DEFAULT_TCP_PORT, DEFAULT_UDP_PORT, INVALID_ANSWER, MAX_LINE_BYTES, PeerChannel,
  USERNAME_PATTERN, USERNAME_RULE, UsageError, askRegistry, checkTicket, decodeDatagram,
  encodeDatagram, encodeLine, errorText, isMainModule, normaliseUsername, numberFlagOptions,
  plainAddress, printable, quoteSafely, readNumberFlags, sameUsername, signedHello,
} from './protocol.ts';
import type {
  DeclineReason, Hello, LoginRequest, NumberFlag, PeerChannelEnd, PeerChannelHandlers,
  PeerMessage, Reply, Request, SecureLink, SessionUnknown, Storage,
} from './protocol.ts';
import {
  SecureChannelError, defaultDataDir, fingerprint, generateKeyPair, loadKeyFile, readKnownKeys,
  rememberKey, safetyNumber, saveKeyFile,
} from './secure.ts';
import type { KeyPair, KnownKey } from './secure.ts';
import { createTerminal, redactSecrets } from './terminal.ts';
import type { Colour, Terminal } from './terminal.ts';

// === Settings ====================================================================================

export type ClientSettings = {
  server: string; // the registry's host name or address
  tcpPort: number; // the registry's port for requests
  udpPort: number; // the registry's port for heartbeats
  chatPort: number; // where peers reach us; 0: any free port (the registry learns it at login)
  historyDir: string | undefined; // when set, conversations go to historyDir/<you>/<peer>.log
  dataDir: string; // keys, known keys and device proofs: --data-dir, $P2P_CHAT_HOME, ~/.p2p-chat
  trace: boolean; // print protocol messages (hellos only when something changes)
  bell: boolean; // ring the terminal's bell for a chat request, and a message after a quiet spell
  registryTimeoutMs: number; // the registry's answer; also connecting to a peer
  answerTimeoutMs: number; // a called peer's answer (> decideTimeoutMs: a slow yes still arrives)
  decideTimeoutMs: number; // our user's yes or no
  greetingTimeoutMs: number; // a caller's chat_request
  /** Incoming connections that have not yet sent their chat_request, in all and from one
   * address. Each costs a socket and a line buffer; a real caller sends its request at once, so
   * a few are plenty, and the rest are closed without reading a byte. */
  maxPendingPeers: number;
  maxPendingPeersPerAddress: number;
  dropReportMs: number; // dropped connections are told in one summary per this many ms
  plain: boolean; // --plain: no secure links (for a registry started with --plain)
  keyFile: string | undefined; // --key-file: one identity key for whoever logs in
};

const DEFAULT_CLIENT_SETTINGS: ClientSettings = {
  server: '127.0.0.1', tcpPort: DEFAULT_TCP_PORT, udpPort: DEFAULT_UDP_PORT, chatPort: 0,
  historyDir: undefined, dataDir: '', trace: false, bell: true,
  registryTimeoutMs: 5000, answerTimeoutMs: 45_000, decideTimeoutMs: 30_000,
  greetingTimeoutMs: 5000, maxPendingPeers: 16, maxPendingPeersPerAddress: 4, dropReportMs: 5000,
  plain: false, keyFile: undefined,
};

/** The registry's heartbeatMs is obeyed only within these bounds: 1 ms would make us send
 * a thousand hellos a second, and more than 2^31 ms overflows Node's timers. */
const HEARTBEAT_MS_RANGE = [100, 60_000] as const;
/** How many used tickets we remember (each until it expires) to refuse a replay. Only tickets
 * the registry really signed for us get here, so this is a safety bound, not a working limit. */
const MAX_SEEN_TICKETS = 1000;
/** A message rings the bell when the user has neither typed nor been rung for this long. */
const BELL_AFTER_QUIET_MS = 30_000;
/** A paste of more lines than this is sent only after the user says yes. */
const MAX_PASTED_LINES_UNASKED = 3;
/** A line the peer has not acknowledged this long after we sent it is marked "not delivered
 * yet". Acknowledgements take a round trip, milliseconds on any working network. */
const ACK_WAIT_MS = 3000;
/** The tags of requests that are no screen's own: the check at start, the list after login
 * (a script's next line waits for these two), and the check of a session_unknown on a secure
 * registry (see onDatagram). /list asks with tag 0; calls count from 1. */
const PROBE_TAG = -1;
export const LOGIN_LIST_TAG = -2;
const CHECK = -3;
const CHECK_REPLACED = -4;
/** How many names the line after login shows. */
const NAMES_AT_LOGIN = 5;

// === State and events ============================================================================
//
// Everything the client remembers is in ClientState; everything that can happen to it is a
// ClientEvent; everything it does about it is an Effect. Peer connections are named by a number
// (`conn`), so states and events stay plain data and the transitions can be tested without
// sockets; the effects layer keeps the table from numbers to real connections.

/** Which screen we are on, and what that screen needs. */
type Screen =
  | { name: 'login_username' } // Login and Register
  | { name: 'login_password'; username: string }
  | { name: 'logging_in' } // waiting for the registry's answer
  | { name: 'register_username' }
  | { name: 'checking_name'; username: string } // waiting: is the name free?
  | { name: 'register_password'; username: string }
  | { name: 'register_confirm'; username: string; password: string } // the password again
  | { name: 'registering' } // waiting for the registry's answer
  | { name: 'search' } // home
  | { name: 'asking'; about: 'list' | 'logout' } // waiting for the registry's answer
  /** We asked for `peer`: first the registry, then (with its `ticket`) the peer's client `at`
   * host:port, on `conn` once connected. `call` tells this call's late answers from those of a
   * call we already cancelled. `crossing` is `peer`'s own request to us, held while our call
   * (which wins the glare) goes through; `crossed` stays true once it came. Acks: see Delivery. */
  | {
    name: 'calling'; peer: string; call: number; ticket: string; at: string; conn: number | null;
    crossing: number | null; crossed: boolean; crossingAcks: boolean;
  }
  /** `peer` asked us on `conn`; our user says yes or no before the 'decide' timer says no. */
  | { name: 'deciding'; peer: string; conn: number; acks: boolean }
  /** `pasted`: a paste of many lines, waiting for our user's yes before it is sent. */
  | {
    name: 'chat'; peer: string; conn: number; delivery: Delivery; pasted?: ReadonlyArray<string>;
  }
  | { name: 'quitting' }; // leaving: waiting for the logout's answer, then exit

/** Our lines in one chat, by id (1, 2, …): which the peer acknowledged, which the user was told
 * are late. Acks are cumulative (TCP keeps order), so numbers are enough: no line is kept. */
type Delivery = {
  acks: boolean; // the peer announced acknowledgements; an older client does not
  lastId: number; // our latest line
  acked: number; // the peer has our lines up to this one; an 'ack' timer runs while < lastId
  toldLate: number; // the user was told lines up to this one are not delivered yet
  stalled: boolean; // the peer is not reading: new lines are refused until it catches up
};

/** Our session at the registry, from `logged_in` until we log out or lose it. */
type RegistrySession = {
  username: string; // as the registry spells it
  token: string; // proves requests are ours; also the key that checks tickets sent to us
  /** A secure registry's hello credentials (logged_in's session and helloKey): hellos carry a
   * signature with these instead of the token. Absent on a plain registry. */
  session?: string;
  helloKey?: string;
  /** A session_unknown arrived and we are asking the registry, over the secure link, whether it
   * is true (anyone can send a datagram from the registry's address). */
  checking?: boolean;
  /** Set when the registry forgot this session while we were chatting: the chat goes on (it
   * never passed through the registry) and we return to Login when it ends. Says why. */
  lostBecause: string | null;
  timeoutMs: number; // the registry forgets a session silent this long
  lastHelloAt: number; // when we last said hello (or logged in)
  helloGapMs: number; // the time between the last two hellos: longer than timeoutMs if we slept
};

export type ClientState = {
  readonly settings: ClientSettings; // from the command line
  readonly registryUdp: string; // "address:port": the only sender whose datagrams count
  readonly chatPort: number; // where our chat listener takes calls; told at login
  screen: Screen;
  session: RegistrySession | null;
  /** Lines from a pipe not yet taken by a screen, oldest first; null is the end of input. A
   * waiting screen leaves them here, so a script that types ahead loses nothing. */
  typedAhead: ReadonlyArray<string | null>;
  lastAttention: number; // when the user last typed, or the bell last rang
  listsOnTheWay: number; // lists asked (/list, at start, at login) whose answers are not yet here
  pendingPeers: ReadonlyMap<number, string>; // not yet sent their chat_request: conn → address
  seenTickets: ReadonlyMap<string, number>; // used tickets → expiry; a replay gets bad_ticket
  /** Drops counted since the last report ("dropped %d … from 10.0.0.7" → count), or null when
   * nothing was dropped lately (the next drop is then reported at once). */
  drops: ReadonlyMap<string, number> | null;
  lastStorage: Storage | null; // how the registry keeps accounts, from the last login
  /** The registry forgot our session and keeps accounts in memory: it probably restarted and
   * lost our account, which explains a following bad_credentials. */
  accountMayBeGone: boolean;
  lastCall: number; // the number of our latest call (see Screen 'calling'); counts up from 0
};

/** Everything that can happen to the client. */
export type ClientEvent =
  | { type: 'started' }
  | { type: 'typed'; line: string; piped?: boolean } // piped: from a script, not a person
  | { type: 'pasted'; lines: string[] } // a paste of several lines at a terminal: text, not keys
  | { type: 'input_ended' } // Ctrl-D, end of a pipe, or the terminal went away
  | { type: 'signal'; name: string } // SIGINT, SIGTERM, SIGHUP
  | { type: 'answer'; request: Request; reply: Reply; tag: number } // a reply that fits request
  /** `refused`: the registry is there, but its link was refused (a changed key, or --plain). */
  | { type: 'answer_failed'; request: Request; why: string; tag: number; refused?: boolean }
  | { type: 'datagram'; sender: string; message: Hello | SessionUnknown | null }
  | { type: 'heartbeat_due' }
  | { type: 'peer_arrived'; conn: number; address: string; remote: string }
  | { type: 'call_connected'; call: number; conn: number }
  | { type: 'call_failed'; call: number; why: string }
  /** `key`: what the peer's handshake proved (base64url); absent on a plain link. */
  | { type: 'peer_said'; conn: number; remote: string; message: PeerMessage; key?: string }
  | { type: 'peer_gone'; conn: number; remote: string; why: PeerChannelEnd }
  | { type: 'peer_stalled'; conn: number; stalled: boolean } // see PeerChannel.onStalled
  | { type: 'timer'; name: TimerName; conn: number };

type EventOf<T extends ClientEvent['type']> = Extract<ClientEvent, { type: T }>;
type TimerName = 'decide' | 'drop_report' | 'input_end' | 'ack';

/** Everything the client can do about an event. */
export type Effect =
  | { do: 'say'; text: string; colour?: Colour; replacesTypedLine?: boolean }
  /** '' hides the prompt while we wait. newScreen: a half-typed line is not carried over. */
  | { do: 'prompt'; text: string; secret: boolean; newScreen?: boolean }
  | { do: 'bell' }
  | { do: 'ask'; request: Request; tag: number }
  | { do: 'connect'; call: number; host: string; port: number; key?: string } // key: must prove
  | { do: 'send'; conn: number; message: PeerMessage }
  | { do: 'close'; conn: number; atOnce?: boolean } // atOnce: destroy, do not flush or read
  | { do: 'expect'; conn: number; ms: number } // close conn unless it speaks within ms
  | { do: 'heartbeat'; everyMs: number | null } // start (or, with null, stop) heartbeat_due
  | { do: 'hello'; username: string; token: string; session?: string; helloKey?: string }
  | { do: 'peer_key'; peer: string; key: string } // compare with the one remembered; warn
  | { do: 'verify'; peer: string } // show the safety number with peer
  | { do: 'timer'; name: TimerName; conn: number; ms: number | null } // null cancels
  | { do: 'save'; you: string; peer: string; line: string }
  | { do: 'keep_proof'; username: string; proof: string } // see "Device proofs"
  | { do: 'exit' };

/** A fresh client at the Login screen. */
export function initialState(settings: ClientSettings, registryUdp: string, chatPort: number) {
  return {
    settings, registryUdp, chatPort, screen: { name: 'login_username' }, session: null,
    typedAhead: [], lastAttention: 0, listsOnTheWay: 0, pendingPeers: new Map(),
    seenTickets: new Map(), drops: null,
    lastStorage: null, accountMayBeGone: false, lastCall: 0,
  } as ClientState;
}

// === startClient and the effects =================================================================
//
// The one place where client.state changes, and the only code that touches a socket. A plain
// client could run effects as transition() returns them; but a PeerChannel may report inside a
// send, so events that arrive while effects of an earlier event are running wait in `inbox`,
// and each transition sees the state the previous one left.

type Client = {
  state: ClientState; // assigned only by dispatch()
  inbox: ClientEvent[]; // events waiting for the current dispatch to finish
  terminal: Terminal; // the screen and the keyboard (terminal.ts)
  chatListener: net.Server; // accepts peers' connections on the chat port
  heartbeatSocket: dgram.Socket; // sends hellos to the registry, hears session_unknown back
  registry: { host: string; port: number; name: string }; // resolved once; name: as typed
  channels: Map<number, PeerChannel>; // every open peer connection by `conn`; see adopt()
  nextConn: number; // the number the next peer connection gets
  timers: Map<string, ReturnType<typeof setTimeout>>; // running timers, by "name:conn"
  heartbeat: ReturnType<typeof setInterval> | undefined; // sends heartbeat_due while logged in
  lastHello: string | null | undefined; // --trace: the last hello's error, null, or none yet
  /** The key our secure links prove: the user's identity key from their login on (see
   * "Effects: keys"), a throwaway one before. */
  identity: KeyPair;
  newIdentityFile: string | null; // where `identity` goes if the login it was made for succeeds
  helloCounter: number; // the last signed hello's counter: only ever grows
};

/** Opens the chat listener and the heartbeat socket, finds the registry, wires every source of
 * events into dispatch(), and shows the Login screen. Rejects (with a UsageError for a chat
 * port in use) when the client cannot start. */
async function startClient(settings: ClientSettings): Promise<Client> {
  // Listen for peers before logging in: the registry must be told the port at login.
  const chatListener = net.createServer();
  const chatPort = await new Promise<number>((resolve, reject) => {
    chatListener.once('error', (error: NodeJS.ErrnoException) => reject(error.code !== 'EADDRINUSE'
      ? error : new UsageError(`chat port ${settings.chatPort} is already in use; choose ` +
        'another with --chat-port')));
    chatListener.listen(settings.chatPort,
      () => resolve((chatListener.address() as net.AddressInfo).port));
  });
  // The registry's address, once: hellos go to it, and only it may answer them.
  const family = net.isIP(settings.server) === 6 ? 6 : 4;
  const { server, tcpPort, udpPort } = settings;
  const host = await dns.promises.lookup(server, { family }).then((found) => found.address,
    () => server);
  const client: Client = {
    state: initialState(settings, `${plainAddress(host)}:${udpPort}`, chatPort), inbox: [],
    terminal: createTerminal({
      onLine: (line, piped) => dispatch(client, { type: 'typed', line, piped }),
      onPaste: (lines) => dispatch(client, { type: 'pasted', lines }),
      onEnd: () => dispatch(client, { type: 'input_ended' }),
      onInterrupt: () => dispatch(client, { type: 'signal', name: 'SIGINT' }),
    }),
    chatListener, heartbeatSocket: dgram.createSocket(family === 6 ? 'udp6' : 'udp4'),
    registry: { host, port: tcpPort, name: `${server}:${tcpPort}` },
    channels: new Map(), nextConn: 1, timers: new Map(), heartbeat: undefined,
    lastHello: undefined, identity: generateKeyPair(), newIdentityFile: null, helloCounter: 0,
  };
  chatListener.on('connection', (socket) => {
    const conn = client.nextConn++;
    // On a secure link the caller must finish the handshake within the time it has to send its
    // request; its chat_request then arrives with the key it proved (see onIntroduction).
    const answerSecurely = settings.plain ? undefined
      : { staticKey: client.identity, timeoutMs: settings.greetingTimeoutMs };
    const channel = new PeerChannel(socket, peerHandlers(client, conn), MAX_LINE_BYTES,
      answerSecurely);
    const { remote } = adopt(client, conn, channel);
    const address = plainAddress(socket.remoteAddress);
    dispatch(client, { type: 'peer_arrived', conn, address, remote });
  });
  client.heartbeatSocket.on('message', (bytes, sender) => {
    const decoded = decodeDatagram(bytes);
    const from = `${plainAddress(sender.address)}:${sender.port}`;
    const message = decoded.ok ? decoded.message : null;
    if (from === client.state.registryUdp && message?.type === 'session_unknown') {
      traceOnScreen(client, `← udp ${JSON.stringify(message)}`);
    }
    dispatch(client, { type: 'datagram', sender: from, message });
  });
  client.heartbeatSocket.on('error', () => {}); // e.g. the registry host is unreachable
  // Ctrl-C at a TTY reaches the terminal's handler; the rest arrive as signals. SIGHUP is the
  // terminal window closing: leave just as politely.
  for (const name of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(name, () => dispatch(client, { type: 'signal', name }));
  }
  dispatch(client, { type: 'started' });
  return client;
}

function dispatch(client: Client, event: ClientEvent): void {
  client.inbox.push(event);
  if (client.inbox.length > 1) return; // the loop below, further up the stack, will get to it
  while (client.inbox.length > 0) {
    const { state, effects } = transition(client.state, client.inbox[0], Date.now());
    client.state = state;
    for (const effect of effects) run(client, effect);
    client.inbox.shift();
  }
}

function run(client: Client, effect: Effect): void {
  const { settings } = client.state;
  switch (effect.do) {
    case 'say': return client.terminal.say(effect.text, effect.colour, effect.replacesTypedLine);
    case 'prompt': return client.terminal.prompt(effect.text, effect.secret, effect.newScreen);
    case 'bell': return client.terminal.bell();
    case 'ask': {
      // askRegistry checks that the answer fits the question; one that does not is a failure.
      const { tag } = effect;
      const request = effect.request.type === 'login' ? withProof(client, effect.request)
        : effect.request;
      const refused = (error: unknown) => error instanceof SecureChannelError &&
        (error.code === 'wrong_key' || error.code === 'plain');
      const failed = (error: unknown) => dispatch(client, { type: 'answer_failed', request,
        why: registryFailure(client, error), tag, ...(refused(error) ? { refused: true } : {}) });
      let link: SecureLink | undefined;
      try {
        link = registryLink(client, request);
      } catch (error) {
        return void failed(error); // e.g. an identity key file we may not read
      }
      askRegistry(request, client.registry, settings.registryTimeoutMs, (direction, line) =>
        traceOnScreen(client, `${arrow(direction)} registry ${redactSecrets(line)}`), link).then(
        (reply) => {
          if (reply.type === 'logged_in') keepNewIdentity(client, reply.username);
          dispatch(client, { type: 'answer', request, reply, tag });
        }, failed);
      return;
    }
    case 'connect': {
      const { call, host, port, key } = effect;
      const conn = client.nextConn++;
      // The callee must prove the key the registry gave for them: anyone else at host:port (a
      // thief with a copied ticket, or whoever took the port) fails the handshake.
      const link = key === undefined ? undefined
        : { staticKey: client.identity, expectedRemoteKey: Buffer.from(key, 'base64url') };
      PeerChannel.connect(host, port, peerHandlers(client, conn), settings.registryTimeoutMs,
        link).then(
        (channel) => {
          adopt(client, conn, channel);
          dispatch(client, { type: 'call_connected', call, conn });
        },
        (error) => dispatch(client, { type: 'call_failed', call, why: errorText(error) }));
      return;
    }
    case 'send': return client.channels.get(effect.conn)?.send(effect.message);
    case 'close': {
      const channel = client.channels.get(effect.conn);
      client.channels.delete(effect.conn);
      return effect.atOnce ? channel?.destroy() : channel?.close();
    }
    case 'expect': return client.channels.get(effect.conn)?.expectWithin(effect.ms);
    case 'heartbeat':
      clearInterval(client.heartbeat);
      client.lastHello = undefined; // a new session (or none): its first hello is traced again
      client.heartbeat = effect.everyMs === null ? undefined
        : setInterval(() => dispatch(client, { type: 'heartbeat_due' }), effect.everyMs);
      return;
    case 'hello': {
      const { username, token, session, helloKey } = effect;
      const hello = encodeDatagram(session && helloKey
        ? signedHello(helloKey, username, session, ++client.helloCounter)
        : { type: 'hello', username, token });
      // A lost datagram does not matter (the next one follows); a failure is only traced.
      client.heartbeatSocket.send(hello, settings.udpPort, client.registry.host, (error) => {
        const code = error ? (error as NodeJS.ErrnoException).code ?? error.message : null;
        if (client.heartbeat === undefined) return; // logged out since
        for (const line of helloNews(username, client.lastHello, code)) traceOnScreen(client, line);
        client.lastHello = code;
      });
      return;
    }
    case 'timer': {
      const { name, conn } = effect;
      const key = `${name}:${conn}`;
      clearTimeout(client.timers.get(key));
      client.timers.delete(key);
      if (effect.ms === null) return;
      client.timers.set(key, setTimeout(() => {
        client.timers.delete(key);
        dispatch(client, { type: 'timer', name, conn });
      }, effect.ms));
      return;
    }
    case 'save': return saveToHistory(client, effect.you, effect.peer, effect.line);
    case 'keep_proof': return keepProof(client, effect.username, effect.proof);
    case 'peer_key': return notePeerKey(client, effect.peer, effect.key);
    case 'verify': return showSafetyNumber(client, effect.peer);
    case 'exit':
      client.chatListener.close();
      client.heartbeatSocket.close();
      client.terminal.close();
      process.exit(0);
  }
}

/** The one place a peer connection joins client.channels, under the number its handlers (made
 * with peerHandlers(client, conn)) report it by. It leaves when it ends or we close it. */
function adopt(client: Client, conn: number, channel: PeerChannel): PeerChannel {
  client.channels.set(conn, channel);
  return channel;
}

/** Turns a channel's news into events about `conn`. */
function peerHandlers(client: Client, conn: number): PeerChannelHandlers {
  return {
    onMessage: (message, { remote, remoteKey }) => dispatch(client,
      { type: 'peer_said', conn, remote, message, ...(remoteKey ? { key: remoteKey } : {}) }),
    onClose: (why, channel) => {
      client.channels.delete(conn);
      dispatch(client, { type: 'peer_gone', conn, remote: channel.remote, why });
    },
    onTrace: (direction, line, channel) => {
      const screen = client.state.screen;
      const who = 'conn' in screen && screen.conn === conn ? screen.peer : channel.remote;
      traceOnScreen(client, `${arrow(direction)} peer ${who} ${line}`);
    },
    onStalled: (stalled) => dispatch(client, { type: 'peer_stalled', conn, stalled }),
  };
}

/** --trace: a protocol line, dimmed. */
function traceOnScreen(client: Client, text: string): void {
  if (client.state.settings.trace) client.terminal.say(printable(text), 'dim');
}
const arrow = (direction: 'in' | 'out') => (direction === 'out' ? '→' : '←');

/** What --trace says of a hello just sent, given how the last one went (`last`: undefined for
 * the session's first): the first, then only changes, so a heartbeat does not fill the screen. */
export function helloNews(username: string, last: string | null | undefined,
  error: string | null): string[] {
  const news = last !== undefined ? [] : [`→ udp hello from ${username} (further hellos are ` +
    'shown only when something changes)'];
  if (error === (last ?? null)) return news;
  return [...news, error === null ? '→ udp hellos get through again'
    : `→ udp hello failed (${error})`];
}

// === The dispatcher and the screens =============================================================
//
// transition() is the whole behaviour of the client. It never touches a socket or the screen:
// it returns the effects for dispatch() (in the effects section) to run. Events that mean the
// same on every screen (signals, datagrams, new connections, /quit, /help) are handled first;
// the rest go to the handler of the current screen. A handler returns the next state, or NOT_NOW
// for a typed line it cannot take yet (a waiting screen): a line from a pipe then waits in
// typedAhead, and one typed by a person is not kept (see notNow).

const NOT_NOW = Symbol('not now');
type Out = Effect[];
/** A screen also hears of 'request': a caller whose ticket passed (see onIntroduction). */
type ScreenEvent =
  | ClientEvent
  | { type: 'request'; conn: number; from: string; acks: boolean; key?: string };
type Next = ClientState | typeof NOT_NOW;
type ScreenHandler = (state: ClientState, event: ScreenEvent, out: Out, now: number) => Next;

const SCREENS: Record<Screen['name'], ScreenHandler> = {
  login_username: onLoginForm, login_password: onLoginForm, logging_in: onLoginForm,
  register_username: onRegisterForm, checking_name: onRegisterForm,
  register_password: onRegisterForm, register_confirm: onRegisterForm, registering: onRegisterForm,
  search: onSearchScreen, asking: onSearchScreen,
  calling: onCallingScreen, deciding: onDecidingScreen, chat: onChatScreen,
  quitting: onQuittingScreen,
};

export function transition(state: ClientState, event: ClientEvent, now: number) {
  const out: Out = [];
  let next = applyEvent(state, event, out, now);
  // A new screen may take lines that were typed ahead, oldest first.
  while (next.typedAhead.length > 0) {
    const [line, ...rest] = next.typedAhead;
    const taken = offerLine({ ...next, typedAhead: rest }, line, out, now, true);
    if (taken === NOT_NOW) break;
    next = taken;
  }
  return { state: next, effects: out };
}

function applyEvent(state: ClientState, event: ClientEvent, out: Out, now: number): ClientState {
  if (event.type === 'typed' || event.type === 'pasted') state = { ...state, lastAttention: now };
  switch (event.type) {
    case 'typed': case 'input_ended': {
      // A line is offered at once when nothing waits ahead of it: a script's lines run in order,
      // each after the answer the one before it waits for. End of input waits behind them, and
      // behind an answer on its way, for registryTimeoutMs at most.
      const line = event.type === 'typed' ? event.line : null;
      if (state.typedAhead.length === 0) {
        const taken = offerLine(state, line, out, now, event.type === 'input_ended' ||
          event.piped === true);
        if (taken !== NOT_NOW) return taken;
        if (event.type === 'typed' && !event.piped) return notNow(state, event.line, out);
      }
      if (line === null) {
        out.push({ do: 'timer', name: 'input_end', conn: 0, ms: state.settings.registryTimeoutMs });
      }
      return { ...state, typedAhead: [...state.typedAhead, line] };
    }
    case 'pasted':
      if (state.screen.name === 'chat') return pasteInChat(state, event.lines, out, now);
      return sayAgain(state, out, `Not run: ${event.lines.length} pasted lines (pasted lines are ` +
        'only sent in a chat, as text).', 'yellow');
    case 'started': // is the registry there? The banner says, once the answer is in
      ask(out, { type: 'list', token: '' }, PROBE_TAG);
      return { ...state, listsOnTheWay: state.listsOnTheWay + 1 };
    case 'signal': return quit(state, out);
    case 'datagram': return onDatagram(state, event, out);
    case 'heartbeat_due': { // no hellos once the registry has forgotten us
      const session = state.session;
      if (session === null || session.lostBecause !== null) return state;
      const { username, token, session: name, helloKey } = session;
      out.push({ do: 'hello', username, token, session: name, helloKey });
      const helloGapMs = now - session.lastHelloAt;
      return { ...state, session: { ...session, lastHelloAt: now, helloGapMs } };
    }
    case 'peer_arrived': return onPeerArrived(state, event, out);
    case 'timer':
      if (event.name === 'drop_report') return reportDrops(state, out);
      if (event.name === 'input_end' && state.typedAhead.includes(null)) {
        say(out, 'End of input: stopped waiting.', 'yellow');
        return quit(state, out);
      }
      break;
    case 'answer': case 'answer_failed': {
      // /list's own questions (tag 0), the check at start and the login's list count; the
      // session checks do not (no line waits for them).
      const tags = [0, PROBE_TAG, LOGIN_LIST_TAG];
      const ownList = event.request.type === 'list' && tags.includes(event.tag);
      const listsOnTheWay = state.listsOnTheWay - (ownList ? 1 : 0);
      state = { ...state, listsOnTheWay };
      const reply = event.type === 'answer' ? event.reply : null;
      if (event.tag === PROBE_TAG) return onProbe(state, event, out);
      if (event.tag === CHECK || event.tag === CHECK_REPLACED) return checked(state, event, out);
      if (state.session === null) break; // logged out since: only the screen may care
      // Only a lost session sends the user back to Login; other failures leave the screen be.
      if (reply?.type === 'error' && reply.code === 'not_logged_in') {
        return loseSession(state, forgotten(state.session), out);
      }
      if (event.request.type === 'list') return onListAnswer(state, event, out);
      break;
    }
    case 'peer_said': case 'peer_gone':
      if (state.pendingPeers.has(event.conn)) return onIntroduction(state, event, out, now);
      break;
  }
  const next = SCREENS[state.screen.name](state, event, out, now);
  return next === NOT_NOW ? state : next;
}

/** A typed line (null: the end of input). /quit, /help and the end of input mean the same on
 * every screen, so they are answered here; a password, though, may be anything. A script's
 * lines wait while an answer is on its way: the registry's, or a called peer's. */
function offerLine(state: ClientState, line: string | null, out: Out, now: number,
  fromScript: boolean): Next {
  const command = line === null || isSecret(state.screen) ? null : commandIn(line);
  // A call's "Waiting for…" screen takes its own commands at once. A script's other lines wait
  // for the call's outcome (they are meant for the chat); its end, or /quit, only for the
  // registry's answer, then leaves: no point ringing a peer for a chat that ends at once.
  const screen = state.screen;
  const leaving = line === null || command === '/quit';
  const waiting = ['logging_in', 'checking_name', 'registering', 'asking'].includes(screen.name)
    || (screen.name === 'calling' && !['/help', '/list', '/cancel'].includes(command ?? '') &&
      !(leaving && screen.ticket !== ''));
  if (fromScript && (waiting || state.listsOnTheWay > 0)) return NOT_NOW;
  if (line === null) return quit(state, out);
  const help = command === '/help' ? textOf(state)[1] : '';
  if (command === '/quit') return quit(state, out);
  if (help !== '') return sayAgain(state, out, help);
  return SCREENS[state.screen.name](state, { type: 'typed', line }, out, now);
}

// ---- Login and Register ----

function onLoginForm(state: ClientState, event: ScreenEvent, out: Out, now: number): Next {
  return onForm(true, state, event, out, now);
}
function onRegisterForm(state: ClientState, event: ScreenEvent, out: Out, now: number): Next {
  return onForm(false, state, event, out, now);
}

/** Login and Register are one form. It waits for a username (checked against the rule before
 * anything else), then a password (Enter alone goes back), then the registry's answer: logged
 * in (to Search), registered (to Login), or a refusal (back to the username). Register asks the
 * registry first whether the name is free, and the password twice, so a typo costs nothing. */
function onForm(login: boolean, state: ClientState, event: ScreenEvent, out: Out,
  now: number): Next {
  const screen = state.screen;
  const form: Screen = { name: login ? 'login_username' : 'register_username' };
  const waiting = login ? 'logging_in' : 'registering';
  if (isAnswerTo('check_username', event)) {
    if (screen.name !== 'checking_name') return state;
    const reply = event.type === 'answer' ? event.reply : null;
    // A registry older than check_username calls it a bad request: then Register finds out.
    if (reply?.type === 'username_free' || (reply?.type === 'error' && reply.code ===
      'bad_request')) return show(state, { ...screen, name: 'register_password' }, out);
    say(out, `Registration failed: ${failure(event)}`, 'yellow');
    return show(state, form, out);
  }
  if (isAnswerTo(login ? 'login' : 'register', event)) {
    if (screen.name !== waiting) return state;
    const reply = event.type === 'answer' ? event.reply : null;
    if (reply?.type === 'logged_in') return loggedIn(state, reply, out, now);
    if (reply?.type === 'registered') {
      say(out, `Registered ${reply.username}. Now log in.`, 'green');
      return show(state, { name: 'login_username' }, out);
    }
    say(out, `${login ? 'Login' : 'Registration'} failed: ${failure(event)}`, 'yellow');
    if (reply?.type === 'error' && reply.code === 'bad_credentials' && state.accountMayBeGone) {
      say(out, 'The registry keeps accounts in memory, so your account may be gone after its ' +
        'restart; /register to create it again.', 'yellow');
    }
    return show(state, form, out);
  }
  if (event.type !== 'typed') return orElse(state, event, out);
  if (screen.name === waiting || screen.name === 'checking_name') return NOT_NOW;
  if (screen.name === 'register_password' && event.line !== '') {
    return show(state, { ...screen, name: 'register_confirm', password: event.line }, out);
  }
  if (screen.name === 'register_confirm' && event.line !== screen.password) {
    say(out, 'The two passwords differ; choose one again.', 'yellow');
    return show(state, { name: 'register_password', username: screen.username }, out);
  }
  if ('username' in screen) { // a password typed: the last step
    if (event.line === '') return show(state, form, out);
    const [username, password] = [screen.username, event.line];
    ask(out, login ? { type: 'login', username, password, chatPort: state.chatPort }
      : { type: 'register', username, password });
    return show(state, { name: waiting }, out);
  }
  const line = event.line.trim();
  const command = commandOf(line);
  if (line === '') return reprompt(state, out);
  if (command === '/register' || command === '/login') { // either form, from either
    return show(state, { name: command === '/login' ? 'login_username' : 'register_username' },
      out);
  }
  if (command !== null) return unknownCommand(state, line, out);
  if (!USERNAME_PATTERN.test(line)) return notAUsername(state, line, out);
  if (login) return show(state, { name: 'login_password', username: line }, out);
  ask(out, { type: 'check_username', username: line });
  return show(state, { name: 'checking_name', username: line }, out);
}

function loggedIn(state: ClientState, reply: Reply & { type: 'logged_in' }, out: Out,
  now: number) {
  const [least, most] = HEARTBEAT_MS_RANGE;
  out.push({ do: 'heartbeat', everyMs: Math.min(most, Math.max(least, reply.heartbeatMs)) });
  const { username, token, timeoutMs, device } = reply;
  if (device !== undefined) out.push({ do: 'keep_proof', username, proof: device });
  say(out, `Logged in as ${username}. Peers reach you on port ${state.chatPort}. ` +
    'Type /help for commands.', 'green');
  if (reply.replaced) say(out, 'This login ended your earlier session (elsewhere).', 'yellow');
  ask(out, { type: 'list', token }, LOGIN_LIST_TAG); // whom to call: the next line says
  const session = { username, token, session: reply.session, helloKey: reply.helloKey,
    lostBecause: null, timeoutMs, lastHelloAt: now, helloGapMs: 0 };
  const next = { ...state, session, lastStorage: reply.storage, accountMayBeGone: false,
    listsOnTheWay: state.listsOnTheWay + 1 };
  return show(next, { name: 'search' }, out);
}

/** The check at start: any answer at all (even "not logged in") means the registry is there. */
function onProbe(state: ClientState, event: AnswerEvent, out: Out): ClientState {
  const registry = `p2p-chat — registry ${state.settings.server}:${state.settings.tcpPort}`;
  if (event.type === 'answer') return sayAgain(state, out, `${registry}: reachable`, 'bold');
  return sayAgain(state, out, event.refused ? `${registry}: refused — ${event.why}.`
    : `${registry}: not reachable yet — ${event.why}. Log in once it is up.`, 'bold');
}

// ---- Search ----

/** Search waits for a command or a name to call, or for someone to call us; 'asking' waits
 * for the registry's answer to /list or /logout, and keeps lines typed meanwhile for Search. */
function onSearchScreen(state: ClientState, event: ScreenEvent, out: Out): Next {
  if (isAnswerTo('logout', event)) {
    if (state.screen.name !== 'asking') return state;
    say(out, event.type === 'answer' ? 'Logged out.'
      : `Logged out here, but could not tell the registry: ${event.why}.`, 'yellow');
    return show(state, { name: 'login_username' }, out);
  }
  if (event.type === 'request' && state.session !== null) {
    ring(state, out);
    if (event.key !== undefined) out.push({ do: 'peer_key', peer: event.from, key: event.key });
    say(out, `${event.from} wants to chat with you.`, 'bold');
    out.push({ do: 'timer', name: 'decide', conn: event.conn, ms: state.settings.decideTimeoutMs });
    const { from: peer, conn, acks } = event;
    return show(state, { name: 'deciding', peer, conn, acks }, out);
  }
  if (event.type !== 'typed') return orElse(state, event, out);
  if (state.screen.name === 'asking') return NOT_NOW;
  const line = event.line.trim();
  const [word, ...rest] = line.split(/\s+/);
  const command = commandOf(word);
  const argument = rest.join(' ');
  if (line === '') return reprompt(state, out);
  if (command === '/list') {
    return show(askList(state, argument, out), { name: 'asking', about: 'list' }, out);
  }
  if (command === '/logout') return logOut(state, out);
  if (command === '/search') {
    return argument === '' ? sayAgain(state, out, 'Whom? /search NAME, or just type the name.',
      'yellow') : callPeer(state, argument, out);
  }
  if (command === '/verify' && argument !== '') return verify(state, argument, out);
  if (command !== null) return unknownCommand(state, line, out);
  return callPeer(state, line, out);
}

function logOut(state: ClientState, out: Out): ClientState {
  // Tell the registry at once, instead of letting it notice our silence.
  out.push({ do: 'heartbeat', everyMs: null });
  ask(out, { type: 'logout', token: state.session!.token });
  return show({ ...state, session: null }, { name: 'asking', about: 'logout' }, out);
}

/** Asks who is online; a script's next lines wait for the answer (see listsOnTheWay). */
function askList(state: ClientState, prefix: string, out: Out): ClientState {
  ask(out, { type: 'list', token: state.session?.token ?? '', ...(prefix ? { prefix } : {}) });
  return { ...state, listsOnTheWay: state.listsOnTheWay + 1 };
}

/** An answer to /list (asked on Search or in a chat), printed wherever it arrives; after login,
 * the first few names only. */
function onListAnswer(state: ClientState, event: AnswerEvent, out: Out): ClientState {
  if (event.tag === LOGIN_LIST_TAG) {
    if (event.type !== 'answer' || event.reply.type !== 'online') return state;
    const { users, total } = event.reply;
    const more = total > NAMES_AT_LOGIN ? ', …' : '';
    say(out, `Online now (${total}): ${users.slice(0, NAMES_AT_LOGIN).join(', ')}${more}`);
    return state;
  }
  if (event.type === 'answer_failed') {
    say(out, `Could not list who is online: ${event.why}.`, 'yellow');
  } else if (event.reply.type === 'online' && event.reply.total === 0) {
    const prefix = event.request.type === 'list' ? event.request.prefix : undefined;
    say(out, prefix ? `Nobody online has a name starting with "${quoteSafely(prefix)}".`
      : 'Nobody is online.');
  } else if (event.reply.type === 'online') {
    const { users, total } = event.reply;
    say(out, `Online (${total}): ${users.join(', ')}`);
    if (total > users.length) {
      say(out, `… and ${total - users.length} more; narrow with /list PREFIX`, 'dim');
    }
  } else if (event.reply.type === 'error') {
    say(out, printable(event.reply.message), 'yellow');
  }
  return state.screen.name === 'asking' ? show(state, { name: 'search' }, out) : state;
}

// ---- Calling someone ----

function callPeer(state: ClientState, wanted: string, out: Out): ClientState {
  const session = state.session!;
  if (!USERNAME_PATTERN.test(wanted)) return notAUsername(state, wanted, out);
  if (sameUsername(wanted, session.username)) return sayAgain(state, out, 'That is you.', 'yellow');
  say(out, `Looking up ${wanted}…`, 'dim');
  const call = state.lastCall + 1;
  ask(out, { type: 'search', token: session.token, username: wanted }, call);
  return show({ ...state, lastCall: call }, {
    name: 'calling', peer: wanted, call, ticket: '', at: '', conn: null, crossing: null,
    crossed: false, crossingAcks: false,
  }, out);
}

/** Waits for the registry to find the peer, then for the connection to their client, then for
 * their chat_accept or chat_decline; /cancel gives up. A request from the same peer meanwhile
 * is glare: both want the chat, and one call goes through. */
function onCallingScreen(state: ClientState, event: ScreenEvent, out: Out, now: number): Next {
  const screen = state.screen;
  if (screen.name !== 'calling') return state;
  const { peer } = screen;
  const failed = (why: string) => callFailed(state, why, out, now);
  switch (event.type) {
    case 'answer': case 'answer_failed': {
      if (event.request.type !== 'search' || event.tag !== screen.call) return state;
      const reply = event.type === 'answer' ? event.reply : null;
      if (reply?.type !== 'found') return failed(failure(event));
      if (!state.settings.plain && reply.key === undefined) {
        return failed(`The registry gave no key for ${reply.username}; not calling.`);
      }
      if (reply.key) out.push({ do: 'peer_key', peer: reply.username, key: reply.key });
      say(out, `Waiting for ${reply.username}… (/cancel to give up)`, 'yellow');
      out.push({ do: 'connect', call: screen.call, host: reply.host, port: reply.port,
        key: reply.key });
      const at = `${reply.host}:${reply.port}`;
      return { ...state, screen: { ...screen, peer: reply.username, ticket: reply.ticket, at } };
    }
    case 'call_connected': {
      if (event.call !== screen.call) return orElse(state, event, out);
      const from = state.session!.username;
      send(out, event.conn, { type: 'chat_request', from, ticket: screen.ticket, acks: true });
      out.push({ do: 'expect', conn: event.conn, ms: state.settings.answerTimeoutMs });
      return { ...state, screen: { ...screen, conn: event.conn } };
    }
    case 'call_failed':
      if (event.call !== screen.call) return state;
      return failed(`${peer} is unreachable at ${screen.at} (${event.why}).`);
    case 'peer_said': case 'peer_gone': {
      if (event.conn === screen.crossing) {
        close(out, event.conn); // they gave up calling us; ours goes on
        return { ...state, screen: { ...screen, crossing: null } };
      }
      if (event.conn !== screen.conn) return orElse(state, event, out);
      if (event.type === 'peer_said' && event.message.type === 'chat_accept') {
        if (screen.crossing !== null) close(out, screen.crossing);
        say(out, `${screen.crossed ? `You and ${peer} called each other.` : `${peer} accepted.`}` +
          ` You are chatting with ${peer}; /back leaves.`, 'green');
        return chatScreen(state, peer, event.conn, event.message.acks === true, out, now);
      }
      close(out, event.conn);
      if (event.type === 'peer_said') {
        const { message } = event;
        return failed(message.type === 'chat_decline' ? declineInWords(peer, message.reason)
          : message.type === 'bye' ? `${peer} left without answering.`
          : `${peer}'s client answered with "${message.type}"; hung up.`);
      }
      const { why } = event;
      if (why.kind === 'ended') return failed(`${peer} left without answering.`);
      if (why.kind !== 'silent') return failed(`Dropped ${peer}: ${describeEnd(why)}.`);
      return failed(`No answer from ${peer}'s client within ${formatSeconds(why.waitedMs)}: ` +
        'the request timed out.');
    }
    case 'request': {
      if (!sameUsername(event.from, peer)) return busy(state, event, out);
      // Glare: we call them while they call us. Both want the chat, so neither asks its user:
      // the call from the name that sorts first goes through, and the other side accepts it.
      if (normaliseUsername(state.session!.username) < normaliseUsername(peer)) {
        if (screen.crossing !== null) close(out, screen.crossing);
        const crossing = { crossing: event.conn, crossed: true, crossingAcks: event.acks };
        return { ...state, screen: { ...screen, ...crossing } };
      }
      if (screen.conn !== null) hangUp(out, screen.conn, BYE);
      return acceptRequest(state, event.from, event.conn, event.acks, out, now,
        `You and ${event.from} called each other.`);
    }
    case 'typed': {
      const [word, ...rest] = event.line.trim().split(/\s+/);
      if (commandOf(word) === '/list') return askList(state, rest.join(' '), out);
      if (commandOf(word) !== '/cancel') return NOT_NOW;
      if (screen.conn !== null) hangUp(out, screen.conn, BYE);
      if (screen.crossing !== null) hangUp(out, screen.crossing, DECLINED);
      say(out, `Cancelled the request to ${peer}.`, 'yellow');
      return show(state, { name: 'search' }, out);
    }
  }
  return orElse(state, event, out);
}

/** Our call did not go through. If the peer's own call to us is waiting, take it instead. */
function callFailed(state: ClientState, why: string, out: Out, now: number): ClientState {
  const screen = state.screen;
  say(out, why, 'yellow');
  if (screen.name === 'calling' && screen.crossing !== null) {
    return acceptRequest(state, screen.peer, screen.crossing, screen.crossingAcks, out, now);
  }
  // A script's lines behind the call were meant for the chat: Search must not take them as names.
  // Only its end, or a /quit, means the same on every screen.
  const typedAhead = state.typedAhead.filter((line) =>
    line === null || commandIn(line) === '/quit');
  const queued = state.typedAhead.length - typedAhead.length;
  if (queued > 0) say(out, `Not sent: ${queued} line(s) meant for the chat.`, 'yellow');
  return show({ ...state, typedAhead }, { name: 'search' }, out);
}

function declineInWords(peer: string, reason: DeclineReason): string {
  switch (reason) {
    case 'declined': return `${peer} declined your request.`;
    case 'busy': return `${peer} is busy (in another chat or deciding about one); try again later.`;
    case 'timeout': return `${peer} did not answer in time: the request timed out.`;
    case 'bad_ticket':
      return `${peer}'s client refused the request: bad ticket (did the registry restart?).`;
  }
}

// ---- Someone calls us ----

/** Waits for our user's y or n about a caller (whose ticket already passed), or for the decide
 * timer, which says no for us; the caller may give up first. */
function onDecidingScreen(state: ClientState, event: ScreenEvent, out: Out, now: number): Next {
  const screen = state.screen;
  if (screen.name !== 'deciding') return state;
  const { peer, conn } = screen;
  switch (event.type) {
    case 'typed': {
      const answer = event.line.trim().toLowerCase();
      // Typing the asker's name counts as yes: the user was about to call them anyway.
      if (answer === 'y' || answer === 'yes' || answer === normaliseUsername(peer)) {
        cancelDecideTimer(out, conn);
        return acceptRequest(state, peer, conn, screen.acks, out, now);
      }
      if (answer === 'n' || answer === 'no') {
        cancelDecideTimer(out, conn);
        hangUp(out, conn, DECLINED);
        say(out, `Declined ${peer}.`, 'yellow');
        return show(state, { name: 'search' }, out);
      }
      prompt(out, `Please answer y or n. Accept ${peer}? (y/n) `);
      return state;
    }
    case 'timer':
      if (event.name !== 'decide' || event.conn !== conn) return state;
      hangUp(out, conn, { type: 'chat_decline', reason: 'timeout' });
      say(out, `No answer within ${formatSeconds(state.settings.decideTimeoutMs)}: ` +
        `declined ${peer}'s request automatically.`, 'yellow');
      return show(state, { name: 'search' }, out);
    case 'peer_said': case 'peer_gone':
      if (event.conn !== conn) return orElse(state, event, out);
      cancelDecideTimer(out, conn);
      close(out, conn);
      say(out, event.type === 'peer_gone' ? `${peer} gave up (${describeEnd(event.why)}).`
        : event.message.type === 'bye' ? `${peer} gave up asking.`
        : `Dropped ${peer}: "${event.message.type}" makes no sense before an answer.`, 'yellow');
      return show(state, { name: 'search' }, out);
  }
  return orElse(state, event, out);
}

/** Accepts `peer`'s request on `conn`; `acks`: theirs announced acknowledgements. */
function acceptRequest(state: ClientState, peer: string, conn: number, acks: boolean, out: Out,
  now: number, before = '') {
  send(out, conn, { type: 'chat_accept', acks: true });
  say(out, `${before ? `${before} ` : ''}You are chatting with ${peer}; /back leaves.`, 'green');
  return chatScreen(state, peer, conn, acks, out, now);
}

// ---- Chat ----

function chatScreen(state: ClientState, peer: string, conn: number, acks: boolean, out: Out,
  now: number) {
  save(out, state, peer, `--- conversation with ${peer}, began ${localTime(now)} (local time)`);
  const delivery = { acks, lastId: 0, acked: 0, toldLate: 0, stalled: false };
  return show(state, { name: 'chat', peer, conn, delivery }, out);
}

/** Waits for lines to send (and /back, /list), and for the peer's messages, until one of us
 * leaves or the connection ends. */
function onChatScreen(state: ClientState, event: ScreenEvent, out: Out, now: number): Next {
  const screen = state.screen;
  if (screen.name !== 'chat') return state;
  const { peer, conn, delivery } = screen;
  const withDelivery = (changed: Partial<Delivery>): ClientState =>
    ({ ...state, screen: { ...screen, delivery: { ...delivery, ...changed } } });
  switch (event.type) {
    case 'typed': {
      const line = event.line.trim();
      if (screen.pasted) { // our user answers the question about a long paste
        const next = { ...state, screen: { name: 'chat' as const, peer, conn, delivery } };
        if (/^y(es)?$/i.test(line)) return sendPasted(next, screen.pasted, out, now);
        return sayAgain(next, out, 'The pasted lines were not sent.');
      }
      const [word, ...rest] = line.split(/\s+/);
      const command = line.startsWith('//') ? null : commandOf(word);
      if (line === '') return reprompt(state, out);
      if (command === '/back' || command === '/logout') {
        hangUp(out, conn, BYE);
        const left = endChat(state, `You left the chat with ${peer}.`, out, true);
        return command === '/logout' && left.session !== null ? logOut(left, out) : left;
      }
      if (command === '/list' && state.session?.lostBecause) {
        return sayAgain(state, out, 'No /list: the registry no longer knows this session. ' +
          'Log in again after this chat.', 'yellow');
      }
      if (command === '/list') return askList(state, rest.join(' '), out);
      if (command === '/verify') return verify(state, rest.join(' ') || peer, out);
      if (command !== null) return unknownCommand(state, line, out);
      const text = line.startsWith('//') ? line.slice(1) : line;
      // A plain client would queue every line. A peer that does not read would then make us
      // hold all of them: past MAX_QUEUED_BYTES (PeerChannel says so) lines are refused instead.
      if (delivery.stalled) {
        return sayAgain(state, out, `Not sent (${peer} is not reading): ${quoteSafely(text)}`,
          'yellow');
      }
      const id = delivery.lastId + 1;
      const message: PeerMessage = { type: 'msg', text, at: now, id };
      // A plain client would just send the line. But the peer's client drops a connection whose
      // line passes MAX_LINE_BYTES (see PeerChannel), so a long paste would end the chat:
      // refuse it here, and keep the chat.
      const lineBytes = Buffer.byteLength(encodeLine(message)) - 1; // the limit omits "\n"
      if (lineBytes > MAX_LINE_BYTES) {
        return sayAgain(state, out, `Not sent: that message is too long (${lineBytes} bytes as ` +
          `a peer message; the limit is ${MAX_LINE_BYTES}).`, 'yellow');
      }
      send(out, conn, message);
      chatLine(state, peer, state.session!.username, text, now, out);
      if (delivery.acks && delivery.lastId === delivery.acked) { // the first unacknowledged
        out.push({ do: 'timer', name: 'ack', conn, ms: ACK_WAIT_MS });
      }
      return withDelivery({ lastId: id });
    }
    case 'timer':
      if (event.name !== 'ack' || event.conn !== conn) return state;
      return ackTimeout(state, screen, out);
    case 'peer_stalled':
      if (event.conn !== conn) return state;
      say(out, event.stalled ? `${peer} is not reading: lines you type are refused until ` +
        `${peer} catches up.` : `${peer} is reading again.`, 'yellow');
      return withDelivery({ stalled: event.stalled });
    case 'peer_said':
      if (event.conn !== conn) return orElse(state, event, out);
      if (event.message.type === 'msg') {
        if (now - state.lastAttention >= BELL_AFTER_QUIET_MS) { // one bell per quiet spell
          ring(state, out);
          state = { ...state, lastAttention: now };
        }
        // Shown with our own clock: `at` is only the peer's claim, and clocks disagree.
        chatLine(state, peer, peer, event.message.text, now, out);
        // An ack to a peer that is not reading would only pile up; the next one covers it.
        const { id } = event.message;
        if (delivery.acks && id !== undefined && !delivery.stalled) {
          send(out, conn, { type: 'ack', id });
        }
        return state;
      }
      if (event.message.type === 'ack') return onAck(state, screen, event.message.id, out);
      close(out, conn);
      if (event.message.type !== 'bye') {
        say(out, `Dropped ${peer}: "${event.message.type}" makes no sense in a chat.`, 'yellow');
      }
      return endChat(state, `${peer} left the chat.`, out);
    case 'peer_gone':
      if (event.conn !== conn) return state;
      if (event.why.kind !== 'ended') {
        say(out, `Dropped ${peer}: ${describeEnd(event.why)}.`, 'yellow');
      }
      return endChat(state, `${peer} left the chat.`, out);
    case 'request':
      // The same peer calling again is the loser's half of a glare we already resolved.
      if (!sameUsername(event.from, peer)) return busy(state, event, out);
      close(out, event.conn);
      return state;
  }
  return orElse(state, event, out);
}

/** A paste in a chat is text, every line, even one that starts with "/" (as if typed with the
 * "//" escape). A long one is sent only after our user's yes: a paste of a whole file into a
 * chat is more often a slip than a message. */
function pasteInChat(state: ClientState, lines: string[], out: Out, now: number): ClientState {
  const screen = state.screen;
  if (screen.name !== 'chat') return state;
  if (lines.length <= MAX_PASTED_LINES_UNASKED) return sendPasted(state, lines, out, now);
  prompt(out, `Send ${lines.length} pasted lines to ${screen.peer}? (y/n) `);
  return { ...state, screen: { ...screen, pasted: lines } };
}

function sendPasted(state: ClientState, lines: ReadonlyArray<string>, out: Out, now: number) {
  for (const line of lines) {
    const text = line.trimStart().startsWith('/') ? `/${line.trimStart()}` : line;
    const next = onChatScreen(state, { type: 'typed', line: text }, out, now);
    if (next !== NOT_NOW) state = next;
  }
  return state;
}

/** The 'ack' timer, ACK_WAIT_MS after the oldest unacknowledged line: all of them are late (a
 * working peer acknowledges within milliseconds). Acks are cumulative, so the unacknowledged
 * lines are always our last few. */
function ackTimeout(state: ClientState, screen: ChatScreen, out: Out): ClientState {
  const { peer, conn, delivery: { acks, lastId, acked, toldLate } } = screen;
  if (!acks || lastId === acked) return state;
  const late = lastId - acked;
  if (lastId > toldLate) {
    say(out, `Not delivered yet: your last ${late === 1 ? 'line' : lines(late)} to ${peer} ` +
      `(${peer} has not acknowledged ${late === 1 ? 'it' : 'them'}).`, 'yellow');
  }
  out.push({ do: 'timer', name: 'ack', conn, ms: ACK_WAIT_MS });
  return { ...state, screen: { ...screen, delivery: { ...screen.delivery, toldLate: lastId } } };
}

/** The peer has our lines up to `id`. Those the user was told are late are delivered now. */
function onAck(state: ClientState, screen: ChatScreen, id: number, out: Out): ClientState {
  const { delivery, peer } = screen;
  if (id <= delivery.acked || id > delivery.lastId) return state; // old news, or nonsense
  const nowDelivered = Math.min(id, delivery.toldLate) - delivery.acked;
  if (nowDelivered > 0) say(out, `Delivered after all: ${lines(nowDelivered)} to ${peer}.`);
  return { ...state, screen: { ...screen, delivery: { ...delivery, acked: id } } };
}

const lines = (count: number) => (count === 1 ? '1 line' : `${count} lines`);
type ChatScreen = Screen & { name: 'chat' };

/** A chat line, ours or the peer's: shown (ours in place of the line just typed) and saved. */
function chatLine(state: ClientState, peer: string, author: string, text: string, at: number,
  out: Out): void {
  const own = author !== peer;
  const line = `${author}: ${printable(text)}`;
  out.push({ do: 'say', text: `[${clock(at)}] ${line}`, colour: own ? 'cyan' : 'green',
    replacesTypedLine: own });
  save(out, state, peer, `${localTime(at)} ${line}`);
}

function endChat(state: ClientState, words: string, out: Out, weLeft = false): ClientState {
  say(out, words, 'yellow');
  if (state.screen.name === 'chat') notAcknowledged(state.screen, weLeft, out);
  const lostBecause = state.session?.lostBecause;
  if (!lostBecause) return show(state, { name: 'search' }, out);
  say(out, lostBecause === REPLACED ? REPLACED
    : 'The registry no longer knows this session; please log in again.', 'yellow');
  return show({ ...state, session: null }, { name: 'login_username' }, out);
}

// ---- Leaving ----

/** /quit, end of input, Ctrl-C, SIGTERM, SIGHUP: leave every conversation, log out, exit 0. */
function quit(state: ClientState, out: Out): ClientState {
  if (state.screen.name === 'quitting') return state;
  hangUpEverything(state, out);
  prompt(out, '', false, true);
  if (state.session === null) {
    say(out, 'Bye.');
    out.push({ do: 'exit' });
  } else {
    out.push({ do: 'heartbeat', everyMs: null });
    ask(out, { type: 'logout', token: state.session.token });
  }
  return { ...state, screen: { name: 'quitting' }, session: null, typedAhead: [] };
}

/** Waits for the logout's answer (or its failure) and then exits; new connections meanwhile are
 * closed unanswered. */
function onQuittingScreen(state: ClientState, event: ScreenEvent, out: Out): ClientState {
  if (event.type === 'call_connected' || event.type === 'request') close(out, event.conn);
  if (!isAnswerTo('logout', event)) return state;
  say(out, 'Bye.'); // a failed logout is fine too: the registry forgets us after its timeout
  out.push({ do: 'exit' });
  return state;
}

/** A chat ends: what the peer never acknowledged is lost. A peer acknowledges a line before it
 * says bye, so when they leave that is all our unacknowledged lines. When we leave, acks may
 * still be on their way: only lines already told late count. */
function notAcknowledged({ peer, delivery }: ChatScreen, weLeft: boolean, out: Out): void {
  const { acks, acked, lastId, toldLate } = delivery;
  const lost = acks ? (weLeft ? toldLate : lastId) - acked : 0;
  if (lost > 0) say(out, `Lost: ${peer} never acknowledged ${lines(lost)} of yours.`, 'yellow');
}

/** Ends whatever conversation the screen holds, telling the peer ("bye": we left, we did not
 * decline), and drops strangers. */
function hangUpEverything(state: ClientState, out: Out): void {
  const screen = state.screen;
  if (screen.name === 'deciding') hangUp(out, screen.conn, BYE);
  if (screen.name === 'chat') hangUp(out, screen.conn, BYE);
  if (screen.name === 'chat') notAcknowledged(screen, true, out);
  if (screen.name === 'calling' && screen.conn !== null) hangUp(out, screen.conn, BYE);
  if (screen.name === 'calling' && screen.crossing !== null) hangUp(out, screen.crossing, BYE);
  for (const conn of state.pendingPeers.keys()) close(out, conn, true);
}

// ---- What every screen shares ----

/** What we say when the registry has forgotten our session (session_unknown, not_logged_in). */
const SESSION_FORGOTTEN =
  'The registry no longer knows this session — did it restart? Please log in again.';

/** Why the registry forgot us, when we can tell: if this client could not say hello for longer
 * than the registry waits (the machine slept, or the process was suspended), it timed us out. */
function forgotten(session: RegistrySession): string {
  if (session.helloGapMs <= session.timeoutMs) return SESSION_FORGOTTEN;
  return `The registry timed this session out: this client was silent for ` +
    `${formatSeconds(session.helloGapMs)} (suspended, or the computer slept), longer than the ` +
    `registry's ${formatSeconds(session.timeoutMs)}. Please log in again.`;
}
const REPLACED = 'You logged in somewhere else, so the registry ended this session here.';
const DECLINED: PeerMessage = { type: 'chat_decline', reason: 'declined' };
const BYE: PeerMessage = { type: 'bye' };

type AnswerEvent = ScreenEvent & { type: 'answer' | 'answer_failed' };

/** An answer (or failure) to a request of type `asked`. */
function isAnswerTo<T extends Request['type']>(asked: T, event: ScreenEvent):
  event is AnswerEvent & { request: { type: T } } {
  return (event.type === 'answer' || event.type === 'answer_failed') &&
    event.request.type === asked;
}

/** Why a request failed, in words: what went wrong, or the registry's own error message. */
function failure(event: AnswerEvent): string {
  if (event.type === 'answer_failed') return `${event.why}.`;
  const text = printable(event.reply.type === 'error' ? event.reply.message : INVALID_ANSWER);
  return /[.!?]$/.test(text) ? text : `${text}.`;
}

/** Events a screen has no use for. A connection it does not know is closed, so a late arrival
 * (a peer that connects after we cancelled) cannot linger; a caller it cannot show hears busy. */
function orElse(state: ClientState, event: ScreenEvent, out: Out): ClientState {
  if (event.type === 'call_connected' || event.type === 'peer_said') close(out, event.conn);
  if (event.type === 'request') return busy(state, event, out);
  return state;
}

/** A valid request that we cannot show now: the caller hears "busy"; our user hears who. */
function busy(state: ClientState, event: { conn: number; from: string }, out: Out): ClientState {
  hangUp(out, event.conn, { type: 'chat_decline', reason: 'busy' });
  if (state.session === null) return state;
  // Told like dropped peers: one line, then a count, so a thousand callers make a few lines.
  return noteDrop(state, '%d more callers tried to reach you while you were busy',
    `${event.from} tried to reach you while you were busy.`, out, 'dim');
}

/** The registry forgot us (session_unknown, or not_logged_in). In a chat we stay: the
 * conversation is between the two clients and does not need the registry. */
function loseSession(state: ClientState, why: string, out: Out): ClientState {
  const session = state.session;
  if (session === null || session.lostBecause !== null) return state;
  out.push({ do: 'heartbeat', everyMs: null });
  const accountMayBeGone = why === SESSION_FORGOTTEN && state.lastStorage === 'memory';
  if (state.screen.name === 'chat') {
    say(out, `${why} This chat goes on; you will be back at Login when it ends.`, 'yellow');
    return { ...state, accountMayBeGone, session: { ...session, lostBecause: why } };
  }
  hangUpEverything(state, out);
  say(out, why, 'yellow');
  const next = { ...state, accountMayBeGone, session: null, pendingPeers: new Map() };
  return show(next, { name: 'login_username' }, out);
}

function onDatagram(state: ClientState, event: EventOf<'datagram'>, out: Out) {
  // A plain client would believe any session_unknown. Here only the registry may tell us our
  // session is gone; a datagram from anywhere else (another port of the same machine included)
  // is ignored. (UDP source addresses can still be forged on a network that allows it; this
  // stops everyone who cannot.)
  if (event.sender !== state.registryUdp) {
    if (!state.settings.trace) return state;
    return noteDrop(state, `ignored %d datagrams from ${event.sender} (not the registry)`,
      `ignored a datagram from ${event.sender}: only the registry at ${state.registryUdp} ` +
      'may speak on this socket', out);
  }
  if (event.message?.type !== 'session_unknown' || state.session === null) return state;
  const replaced = event.message.reason === 'replaced';
  const session = state.session;
  if (state.settings.plain || session.lostBecause !== null) {
    return loseSession(state, replaced ? REPLACED : forgotten(session), out);
  }
  // On a secure registry a datagram proves nothing (anyone may forge the sender): ask the
  // registry over the secure link whether our session is gone, and believe only that answer.
  if (session.checking) return state;
  ask(out, { type: 'list', token: session.token, prefix: session.username },
    replaced ? CHECK_REPLACED : CHECK);
  return { ...state, session: { ...session, checking: true } };
}

/** Asked after a session_unknown: a not_logged_in ends the session, anything else was noise. */
function checked(state: ClientState, event: AnswerEvent, out: Out): ClientState {
  const session = state.session;
  if (session === null) return state;
  if (event.type === 'answer' && event.reply.type === 'error' &&
    event.reply.code === 'not_logged_in') {
    return loseSession(state, event.tag === CHECK_REPLACED ? REPLACED : forgotten(session), out);
  }
  return { ...state, session: { ...session, checking: false } };
}

// ---- Strangers at the chat port ----
//
// Someone connects to our chat port. A plain client would wait for their chat_request and show
// it; but until they send it we do not know who they are, so they wait in pendingPeers (a few
// at a time) for greetingTimeoutMs at most. Their ticket is checked before our user hears of
// them: only the registry, which knows our session token, can make one that passes, and each
// ticket works once.

function onPeerArrived(state: ClientState, event: EventOf<'peer_arrived'>, out: Out) {
  const { maxPendingPeers, maxPendingPeersPerAddress, greetingTimeoutMs } = state.settings;
  const fromThere = [...state.pendingPeers.values()].filter((a) => a === event.address).length;
  if (state.pendingPeers.size >= maxPendingPeers || fromThere >= maxPendingPeersPerAddress) {
    close(out, event.conn, true);
    return noteDrop(state, `dropped %d chat connections from ${event.address}`,
      `Dropped a connection from ${event.remote}: too many connections waiting to introduce ` +
      `themselves (at most ${maxPendingPeers}, ${maxPendingPeersPerAddress} per address).`, out);
  }
  out.push({ do: 'expect', conn: event.conn, ms: greetingTimeoutMs });
  return { ...state, pendingPeers: new Map(state.pendingPeers).set(event.conn, event.address) };
}

/** The first thing a pending connection did: sent its request (or something else), or left. */
function onIntroduction(state: ClientState, event: EventOf<'peer_said' | 'peer_gone'>, out: Out,
  now: number): ClientState {
  const pendingPeers = new Map(state.pendingPeers);
  pendingPeers.delete(event.conn);
  const next = { ...state, pendingPeers };
  const drop = (detail: string, colour?: Colour) => noteDrop(next,
    `dropped %d chat connections from ${state.pendingPeers.get(event.conn)}`, detail, out, colour);
  if (event.type === 'peer_gone') {
    if (event.why.kind === 'ended') return next;
    return drop(`Dropped a connection from ${event.remote}: ${describeEnd(event.why)}.`);
  }
  const request = event.message;
  if (request.type !== 'chat_request') {
    close(out, event.conn);
    return drop(`Dropped a connection from ${event.remote}: it sent "${request.type}" before ` +
      'any chat request.');
  }
  const session = state.session;
  if (session === null) return busy(next, { conn: event.conn, from: request.from }, out);
  // On a secure link the ticket must also name the key the caller's handshake proved.
  let verdict: string = checkTicket(session.token, request.ticket, request.from,
    session.username, now, event.key ?? '');
  if (verdict === 'valid' && state.seenTickets.has(request.ticket)) verdict = 'used before';
  if (verdict !== 'valid') {
    hangUp(out, event.conn, { type: 'chat_decline', reason: 'bad_ticket' });
    return drop(`Warning: refused a chat request claiming to come from "${request.from}" at ` +
      `${event.remote}: its ticket is not valid (${verdict.replace('_', ' ')}). Someone may be ` +
      'impersonating them.', 'red');
  }
  const seenTickets = rememberTicket(state.seenTickets, request.ticket, now);
  if (seenTickets === null) return busy(next, { conn: event.conn, from: request.from }, out);
  const taken = SCREENS[state.screen.name]({ ...next, seenTickets },
    { type: 'request', conn: event.conn, from: request.from, acks: request.acks === true,
      key: event.key }, out, now);
  return taken === NOT_NOW ? { ...next, seenTickets } : taken;
}

/** Adds a used ticket and forgets expired ones. A live ticket is never forgotten (its replay
 * would then pass): when MAX_SEEN_TICKETS live ones are held, null, and the call is refused. */
function rememberTicket(seen: ReadonlyMap<string, number>, ticket: string, now: number) {
  // A valid ticket is "v1.<caller>.<callee>.<expiresAtMs>.<signature>" (see protocol.ts).
  const expiresAt = Number(ticket.split('.')[3]);
  const kept = [...seen].filter(([, expiry]) => expiry >= now);
  return kept.length >= MAX_SEEN_TICKETS ? null : new Map([...kept, [ticket, expiresAt]]);
}

/** A dropped connection, an ignored datagram, a caller told busy. The first after a quiet spell
 * is told at once, in full; later ones are only counted under `what` ("dropped %d … from
 * 10.0.0.7") and told in a summary every dropReportMs, so a flood cannot flood the screen. */
function noteDrop(state: ClientState, what: string, detail: string, out: Out,
  colour: Colour = 'yellow'): ClientState {
  if (state.drops === null) {
    say(out, printable(detail), colour);
    out.push({ do: 'timer', name: 'drop_report', conn: 0, ms: state.settings.dropReportMs });
    return { ...state, drops: new Map<string, number>() };
  }
  // Many addresses (loopback alone has millions) are lumped together beyond the first few.
  const key = state.drops.has(what) || state.drops.size < 3 ? what
    : 'dropped %d more from other addresses';
  return { ...state, drops: new Map(state.drops).set(key, (state.drops.get(key) ?? 0) + 1) };
}

function reportDrops(state: ClientState, out: Out): ClientState {
  if (state.drops === null || state.drops.size === 0) return { ...state, drops: null };
  const seconds = formatSeconds(state.settings.dropReportMs);
  for (const [what, count] of state.drops) {
    say(out, `${what.replace('%d', String(count))} in the last ${seconds}`, 'yellow');
  }
  out.push({ do: 'timer', name: 'drop_report', conn: 0, ms: state.settings.dropReportMs });
  return { ...state, drops: new Map() };
}

// ---- Small helpers for the handlers ----

const LOGIN_HELP = `Login: type your username, then your password (Enter alone goes back).
  /register   create an account
  /quit       exit`;
const REGISTER_HELP = `Register: choose a username (${USERNAME_RULE}), then a password
(twice).
  /login      back to the Login screen
  /quit       exit`;
const SEARCH_HELP = `Commands:
  NAME or /search NAME   ask NAME to chat
  /list [PREFIX]         who is online (names starting with PREFIX)
  /verify NAME           the safety number to compare with NAME
  /logout                log out and return to the login screen
  /quit                  log out and exit
  /help                  this list
While waiting for an answer: /cancel gives up. Commands ignore case.`;
const CHAT_HELP = `In a chat: type a line to send it; //text sends "/text".
  /list [PREFIX]   who is online
  /verify          the safety number to compare with your peer
  /back            leave the chat
  /logout          leave, and log out
  /quit            leave, log out and exit
A line not acknowledged within ${ACK_WAIT_MS / 1000} s is marked "not delivered yet".`;

/** A screen's prompt and its /help. A screen that waits for the registry has neither. */
function textOf(state: ClientState): [prompt: string, help: string] {
  const screen = state.screen;
  const you = state.session?.username ?? '?';
  switch (screen.name) {
    case 'login_username': return ['Login — username (or /register, /help, /quit): ', LOGIN_HELP];
    case 'login_password': return ['password: ', ''];
    case 'register_username':
      return ['Register — new username (or /login to go back): ', REGISTER_HELP];
    case 'register_password': return ['new password: ', ''];
    case 'register_confirm': return ['new password again: ', ''];
    case 'search': return [`${you}> `, SEARCH_HELP];
    case 'deciding':
      return [`Accept ${screen.peer}? (y/n) `,
        `${screen.peer} wants to chat: y accepts, n declines.`];
    case 'chat': return [`${you} → ${screen.peer}> `, CHAT_HELP];
    case 'calling': return ['', `Waiting for ${screen.peer}: /cancel gives up, ` +
      '/list [PREFIX] shows who is online, /quit exits.'];
    default: return ['', ''];
  }
}

/** Switches to `screen` and shows its prompt (none while it waits for an answer). A line half
 * typed for another screen is not carried over: the user may not have seen the change. */
function show(state: ClientState, screen: Screen, out: Out): ClientState {
  return reprompt({ ...state, screen }, out, typedFor(state.screen) !== typedFor(screen));
}

function reprompt(state: ClientState, out: Out, newScreen = false): ClientState {
  prompt(out, textOf(state)[0], isSecret(state.screen), newScreen);
  return state;
}

/** Whom a line typed on `screen` is for: waiting for /list's answer, it is still Search. */
const typedFor = (screen: Screen) => screen.name === 'asking' ? 'search'
  : 'peer' in screen ? `${screen.name} ${screen.peer}` : screen.name;

/** A line a person typed while the screen waits for an answer. It was meant for this screen,
 * so it is not kept for the next one (lines from a pipe are: see typedAhead). */
function notNow(state: ClientState, line: string, out: Out): ClientState {
  const screen = state.screen;
  say(out, `Not sent: "${quoteSafely(line.trim())}"; still waiting for ` + (screen.name ===
    'calling' ? `${screen.peer} (/cancel gives up).` : "the registry's answer."), 'yellow');
  return state;
}

/** Says `text`, then shows the screen's prompt again. */
function sayAgain(state: ClientState, out: Out, text: string, colour?: Colour): ClientState {
  say(out, text, colour);
  return reprompt(state, out);
}

/** The screens where a password is typed: not echoed, not kept, never a command. */
function isSecret(screen: Screen): boolean {
  return screen.name === 'login_password' || screen.name === 'register_password' ||
    screen.name === 'register_confirm';
}

/** "/list" for "/LIST" and "/List"; null for a line that is not a command. */
function commandOf(word: string): string | null {
  return word.startsWith('/') ? word.toLowerCase() : null;
}
const commandIn = (line: string) => commandOf(line.trim().split(/\s+/)[0]);

function unknownCommand(state: ClientState, line: string, out: Out): ClientState {
  const shown = quoteSafely(line);
  return sayAgain(state, out, state.screen.name === 'chat'
    ? `Unknown command ${shown}; to send a line that starts with "/", type /${shown}`
    : `Unknown command ${shown}; type /help.`, 'yellow');
}

function notAUsername(state: ClientState, line: string, out: Out): ClientState {
  const shown = quoteSafely(line);
  return sayAgain(state, out, `Not a username: "${shown}" (${USERNAME_RULE}).`, 'yellow');
}

/** /verify NAME: the effect layer reads the keys and shows the safety number. */
function verify(state: ClientState, peer: string, out: Out): ClientState {
  if (!USERNAME_PATTERN.test(peer)) return notAUsername(state, peer, out);
  out.push({ do: 'verify', peer });
  return reprompt(state, out);
}

// One line for each effect the handlers ask for.
const say = (out: Out, text: string, colour?: Colour) => out.push({ do: 'say', text, colour });
const prompt = (out: Out, text: string, secret = false, newScreen = false) =>
  out.push({ do: 'prompt', text, secret, newScreen });
const ring = (state: ClientState, out: Out) => state.settings.bell && out.push({ do: 'bell' });
const ask = (out: Out, request: Request, tag = 0) => out.push({ do: 'ask', request, tag });
const send = (out: Out, conn: number, message: PeerMessage) =>
  out.push({ do: 'send', conn, message });
const close = (out: Out, conn: number, atOnce = false) => out.push({ do: 'close', conn, atOnce });
const cancelDecideTimer = (out: Out, conn: number) =>
  out.push({ do: 'timer', name: 'decide', conn, ms: null });

/** Sends a last message (bye, or a decline), then closes. */
function hangUp(out: Out, conn: number, last: PeerMessage): void {
  send(out, conn, last);
  close(out, conn);
}

const save = (out: Out, state: ClientState, peer: string, line: string) =>
  out.push({ do: 'save', you: state.session!.username, peer, line });

const clock = (at: number) => new Date(at).toTimeString().slice(0, 8); // "14:03:07"

/** "2026-11-25 10:31:02" in local time, like the clock on the screen. */
function localTime(at: number): string {
  const date = new Date(at);
  const day = [date.getFullYear(), date.getMonth() + 1, date.getDate()];
  return `${day.map((n) => String(n).padStart(2, '0')).join('-')} ${clock(at)}`;
}

const formatSeconds = (ms: number) => (ms >= 1000 ? `${Math.round(ms / 100) / 10} s` : `${ms} ms`);

/** A PeerChannelEnd in words, for the person at the keyboard. */
function describeEnd(why: PeerChannelEnd): string {
  switch (why.kind) {
    case 'ended': return 'the connection was closed';
    case 'error': return `the connection failed (${why.detail})`;
    case 'garbage':
      return `it sent something that is not a p2p-chat message (${quoteSafely(why.detail)})`;
    case 'too_long': return `it sent a line longer than ${MAX_LINE_BYTES} bytes`;
    case 'silent': return `it said nothing for ${formatSeconds(why.waitedMs)}`;
  }
}

// === Effects: history files ======================================================================

/** Appends one line to historyDir/<you>/<peer>.log. The folder was checked at start-up, so a
 * failure here is something new (a full disk); it is reported and the chat goes on. */
function saveToHistory(client: Client, you: string, peer: string, line: string): void {
  const dir = client.state.settings.historyDir;
  if (dir === undefined) return;
  const file = historyFile(dir, you, peer);
  try {
    if (file === null) throw new Error(`no safe file name for ${quoteSafely(peer)}`);
    makeFolders(path.dirname(file));
    appendFileSync(file, line + '\n');
  } catch (error) {
    client.terminal.say(`Could not write the history: ${errorText(error)}`, 'yellow');
  }
}

/** DIR/<you>/<peer>.log, built only from names that follow the username rule, lower-cased, and
 * checked to stay inside DIR; null otherwise. The rule allows "." and "..", which as folder
 * names would point elsewhere: those get a "_" in front. */
function historyFile(dir: string, you: string, peer: string): string | null {
  if (!USERNAME_PATTERN.test(you) || !USERNAME_PATTERN.test(peer)) return null;
  const root = path.resolve(dir);
  const file = path.resolve(root, fileName(you), `${fileName(peer)}.log`);
  return file.startsWith(root + path.sep) ? file : null;
}
const fileName = (username: string) => normaliseUsername(username).replace(/^\.+$/, '_$&');

/** Makes `dir` and its missing parents, one folder at a time. (mkdirSync's own `recursive`
 * option spins forever on a filesystem that refuses folders in an odd way, as /proc does.) */
function makeFolders(dir: string, mode = 0o777): void {
  const missing: string[] = [];
  for (let at = path.resolve(dir); !existsSync(at); at = path.dirname(at)) missing.unshift(at);
  for (const folder of missing) mkdirSync(folder, { mode });
}

/** --history DIR must be a folder we can write to; found out now, not on the first message.
 * Writing a probe file is the only true test: root ignores permission bits. */
function checkHistoryDir(dir: string): void {
  const probe = path.join(dir, `.p2p-chat-probe-${process.pid}`);
  try {
    makeFolders(dir);
    writeFileSync(probe, '');
    rmSync(probe);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const reason = code === 'EEXIST' || code === 'ENOTDIR' ? 'it is a file, not a folder'
      : code === 'EACCES' || code === 'EPERM' || code === 'EROFS' ? `cannot write there (${code})`
      : errorText(error);
    throw new UsageError(`--history ${dir}: ${reason}`);
  }
}
// === Effects: keys ===============================================================================
//
// Unless --plain, every link is a handshake (secure.ts) in which each side proves a long-term
// key. What the client knows of keys lives in files under the data folder (settings.dataDir):
//   keys/<you>.key         your identity key, saved at your first login; only you may read it
//   known_registries       each registry's key, pinned at first contact, as ssh's known_hosts
//   known_peers/<you>      the key of each peer you have talked to
// A key seen for the first time is taken on trust and shown; a changed one is the news worth a
// warning. A real program would also let two users mark a key verified; here /verify shows the
// safety number and the users compare it themselves.

/** How one request reaches the registry, or undefined with --plain. A login proves the user's
 * identity key (the registry gives it to whoever calls them); other requests, the key we hold. */
function registryLink(client: Client, request: Request): SecureLink | undefined {
  if (client.state.settings.plain) return undefined;
  if (request.type === 'login') client.identity = identityKey(client, request.username);
  const file = knownRegistriesFile(client);
  const { name } = client.registry;
  const pinned = readKnownKeys(file).get(name);
  return {
    staticKey: client.identity, expectedRemoteKey: pinned?.publicKey,
    onRemoteKey: (key) => {
      if (pinned) return;
      // A request that ran alongside this one (the check at start, say) may have pinned it.
      const pinnedMeanwhile = readKnownKeys(file).get(name)?.publicKey;
      if (pinnedMeanwhile?.equals(key)) return;
      if (pinnedMeanwhile) {
        throw new SecureChannelError('wrong_key', `expected ${fingerprint(pinnedMeanwhile)}, ` +
          `got ${fingerprint(key)}`);
      }
      try {
        rememberKey(file, name, key);
        client.terminal.say(`New registry ${name}, key ${fingerprint(key)} (it printed its key ` +
          `at start: compare), remembered in ${file}.`, 'dim');
      } catch (error) {
        client.terminal.say(`Could not remember the registry's key: ${errorText(error)}`, 'yellow');
      }
    },
  };
}

/** The user's identity key: --key-file, or DIR/keys/<user>.key. A new one is made for a first
 * login and saved only if it succeeds (keepNewIdentity), so a mistyped name leaves no file. */
function identityKey(client: Client, username: string): KeyPair {
  const { dataDir, keyFile } = client.state.settings;
  const file = keyFile ?? path.join(dataDir, 'keys', `${fileName(username)}.key`);
  client.newIdentityFile = existsSync(file) ? null : file;
  return client.newIdentityFile === null ? loadKeyFile(file) : generateKeyPair();
}

function keepNewIdentity(client: Client, username: string): void {
  const file = client.newIdentityFile;
  if (file === null) return;
  client.newIdentityFile = null;
  const key = fingerprint(client.identity.publicKey);
  try {
    saveKeyFile(file, client.identity);
    client.terminal.say(`Made an identity key for ${username}: ${key} (in ${file}).`, 'dim');
  } catch (error) {
    client.terminal.say(`Could not save your identity key ${key} (${errorText(error)}): the ` +
      'next login makes another, and peers will be warned that your key changed.', 'yellow');
  }
}

/** Why a request failed, in words; a secure link's failure says what it means and what to do. */
function registryFailure(client: Client, error: unknown): string {
  const { name } = client.registry;
  if (!(error instanceof SecureChannelError)) return errorText(error);
  if (error.code === 'wrong_key') {
    const file = knownRegistriesFile(client);
    return `the registry at ${name} proved a different key from the one remembered for it ` +
      `(${error.message}). Someone may be pretending to be it, so nothing was sent. If its key ` +
      `was replaced on purpose, delete the line for ${name} from ${file}`;
  }
  if (error.code === 'plain') {
    return `the registry at ${name} speaks in clear (it was started with --plain); start the ` +
      'client with --plain to use it anyway, knowing that nothing will be encrypted';
  }
  return errorText(error);
}

const knownRegistriesFile = (client: Client) =>
  path.join(client.state.settings.dataDir, 'known_registries');
const knownPeersFile = (client: Client, you: string) =>
  path.join(client.state.settings.dataDir, 'known_peers', fileName(you));

/** A peer proved `key` (base64url): remember it if it is new, and warn if it changed. */
function notePeerKey(client: Client, peer: string, key: string): void {
  const you = client.state.session?.username;
  if (you === undefined) return;
  const publicKey = Buffer.from(key, 'base64url');
  const say = (text: string, colour: Colour) => client.terminal.say(printable(text), colour);
  try {
    const file = knownPeersFile(client, you);
    const known = readKnownKeys(file).get(fileName(peer));
    if (known?.publicKey.equals(publicKey)) return;
    rememberKey(file, fileName(peer), publicKey);
    if (known === undefined) {
      return say(`First contact with ${peer}: their key is ${fingerprint(publicKey)}. To be ` +
        `sure it is them, compare safety numbers: /verify ${peer}`, 'dim');
    }
    say(`Warning: ${peer}'s key has changed. It was ${fingerprint(known.publicKey)} (first ` +
      `seen ${known.since}); now it is ${fingerprint(publicKey)}. That happens when ${peer} ` +
      'uses another computer or lost their key file, and when someone pretends to be them. ' +
      `Before you trust this chat, compare safety numbers: /verify ${peer}`, 'red');
  } catch (error) {
    say(`Could not check ${peer}'s key: ${errorText(error)}`, 'yellow');
  }
}

/** /verify NAME: the 60 digits both users see for this pair of keys (Signal's safety number). */
function showSafetyNumber(client: Client, peer: string): void {
  const you = client.state.session?.username;
  let known: KnownKey | undefined;
  try {
    if (you && !client.state.settings.plain) {
      known = readKnownKeys(knownPeersFile(client, you)).get(fileName(peer));
    }
  } catch (error) {
    return client.terminal.say(`Could not read the keys: ${errorText(error)}`, 'yellow');
  }
  if (you === undefined || known === undefined) {
    return client.terminal.say(client.state.settings.plain ? 'No keys with --plain.'
      : `No key known for ${peer} yet: it is remembered when you first talk.`, 'yellow');
  }
  const digits = safetyNumber({ name: fileName(you), publicKey: client.identity.publicKey },
    { name: fileName(peer), publicKey: known.publicKey });
  client.terminal.say(`Safety number with ${peer}: ${digits}\nCompare it with theirs, aloud or ` +
    'in person: the same 60 digits mean nobody is in between.', 'bold');
}

// === Effects: device proofs ======================================================================
//
// The registry slows down password guessing per address and per user; a login that shows a proof
// of an earlier login from this device (logged_in.device) is judged on its own, so guessers
// cannot lock its owner out. The proof is kept, like an ssh key, where only this user can read
// it: <dataDir>/devices/<host>_<port>/<username>.proof. It is never the password.

function proofFile(client: Client, username: string): string {
  const { dataDir, server, tcpPort } = client.state.settings;
  const registry = `${server}_${tcpPort}`.replace(/[^A-Za-z0-9_.-]/g, '_');
  return path.join(dataDir, 'devices', registry, `${fileName(username)}.proof`);
}

/** The login request, with the proof for its user when we have one. Without one, the login
 * goes ahead as a first login from here: a problem with the file is told, never fatal. */
function withProof(client: Client, login: LoginRequest): LoginRequest {
  try {
    const device = readFileSync(proofFile(client, login.username), 'utf8').trim();
    return /^[\w.-]{1,200}$/.test(device) ? { ...login, device } : login;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const none = code === 'ENOENT' || code === 'ENOTDIR'; // none yet (keepProof says why)
    if (!none) client.terminal.say(`Could not read the device proof: ${errorText(error)}`);
    return login;
  }
}

/** Replaces the proof at once (a new file renamed over the old), so a crash leaves one whole. */
function keepProof(client: Client, username: string, proof: string): void {
  const file = proofFile(client, username);
  try {
    makeFolders(path.dirname(file), 0o700);
    writeFileSync(`${file}.new`, proof + '\n', { mode: 0o600 });
    renameSync(`${file}.new`, file);
  } catch (error) {
    client.terminal.say(`Could not keep the device proof: ${errorText(error)}`, 'yellow');
  }
}

// === Command line ================================================================================

type NumberSetting = {
  [K in keyof ClientSettings]: ClientSettings[K] extends number ? K : never;
}[keyof ClientSettings];
const DAY_MS = 86_400_000;
/** The whole-number flags (see NumberFlag in protocol.ts): the ports, then the limits. --help is
 * printed from these tables and the defaults, so the text and the program cannot disagree. */
const PORT_FLAGS: ReadonlyArray<NumberFlag<NumberSetting>> = [
  ['tcp-port', 'tcpPort', 1, 65535, "the registry's TCP port"],
  ['udp-port', 'udpPort', 1, 65535, "the registry's UDP port, for hellos"],
  ['chat-port', 'chatPort', 0, 65535, 'where peers reach you; 0: any free port'],
];
const LIMIT_FLAGS: ReadonlyArray<NumberFlag<NumberSetting>> = [
  ['registry-timeout-ms', 'registryTimeoutMs', 1, DAY_MS, "wait for the registry's answer"],
  ['answer-timeout-ms', 'answerTimeoutMs', 1, DAY_MS, "wait for a called peer's answer"],
  ['decide-timeout-ms', 'decideTimeoutMs', 1, DAY_MS, 'time to accept or decline a request'],
  ['greeting-timeout-ms', 'greetingTimeoutMs', 1, DAY_MS, 'time a caller has to send its request'],
];
const NUMBER_FLAGS = [...PORT_FLAGS, ...LIMIT_FLAGS];

/** One line of --help, 80 columns at most. */
const helpLine = (flag: string, help: string) => `  ${flag.padEnd(25)}${help}`;
const flagLines = (flags: ReadonlyArray<NumberFlag<NumberSetting>>) => flags.map(
  ([flag, setting, , , help]) =>
    helpLine(`--${flag} N`, `${help} (default ${DEFAULT_CLIENT_SETTINGS[setting]})`)).join('\n');

const USAGE = `Usage: client.ts [options]

The p2p-chat terminal client: log in at a registry, find someone, and chat
with them directly.

Options:
${helpLine('--server HOST', `the registry's address (default ${DEFAULT_CLIENT_SETTINGS.server})`)}
${flagLines(PORT_FLAGS)}
${helpLine('--history DIR', 'append each chat to DIR/<you>/<peer>.log')}
${helpLine('--data-dir DIR', 'keys, known keys, login proofs (default ~/.p2p-chat)')}
${helpLine('--key-file PATH', 'your identity key (default DIR/keys/<you>.key)')}
${helpLine('--plain', 'no encryption, for a registry started with --plain')}
${helpLine('--trace', 'print the protocol messages sent and received')}
${helpLine('--no-bell', 'no bell for chat requests, or messages after quiet')}
${helpLine('-h, --help', 'show this help')}

Limits (in milliseconds, from 1 to ${DAY_MS}):
${flagLines(LIMIT_FLAGS)}

Environment:
${helpLine('NO_COLOR', 'set to turn colour off')}
${helpLine('P2P_CHAT_HOME', 'the default for --data-dir')}

Through npm or deno task, flags follow the script: npm run client -- --help`;

/** Turns the command line into settings; null means --help was printed. */
function parseCommandLine(args: string[]): ClientSettings | null {
  const text = { type: 'string' } as const;
  const { values } = parseArgs({
    args: args[0] === '--' ? args.slice(1) : args, // `deno task client -- --help` passes a "--"
    options: {
      server: text, history: text, 'data-dir': text, trace: { type: 'boolean' },
      'no-bell': { type: 'boolean' }, plain: { type: 'boolean' }, 'key-file': text,
      help: { type: 'boolean', short: 'h' }, ...numberFlagOptions(NUMBER_FLAGS),
    },
  });
  if (values.help) {
    console.log(USAGE);
    return null;
  }
  for (const flag of ['server', 'history', 'data-dir', 'key-file'] as const) {
    if (values[flag] === '') throw new UsageError(`--${flag} needs a value, not ""`);
  }
  const hostAndPort = /^(\[[^\]]*\]|[^:]*):(\d+)$/.exec(String(values.server ?? ''));
  if (hostAndPort) {
    const host = hostAndPort[1].replace(/^\[(.*)\]$/, '$1');
    throw new UsageError(`--server takes a host, without a port: --server ${host} --tcp-port ` +
      `${hostAndPort[2]} (and --udp-port, if the registry's is not ${DEFAULT_UDP_PORT})`);
  }
  return {
    ...DEFAULT_CLIENT_SETTINGS, ...readNumberFlags(NUMBER_FLAGS, values),
    server: (values.server as string | undefined) ?? DEFAULT_CLIENT_SETTINGS.server,
    historyDir: values.history as string | undefined, trace: values.trace === true,
    bell: values['no-bell'] !== true, plain: values.plain === true,
    keyFile: values['key-file'] as string | undefined,
    dataDir: (values['data-dir'] as string | undefined) ?? defaultDataDir(),
  };
}

/** Parse, then start. A mistake on the command line exits with 2, a failure to start with 1. */
async function main(): Promise<void> {
  let settings: ClientSettings | null;
  try {
    settings = parseCommandLine(process.argv.slice(2));
    if (settings?.historyDir !== undefined) checkHistoryDir(settings.historyDir);
  } catch (error) {
    const history = error instanceof UsageError && /^--history/.test(error.message);
    console.error(`error: ${errorText(error)}${history ? '' : '\n(see --help)'}`);
    process.exit(2);
  }
  if (settings === null) return; // --help
  await startClient(settings).catch((error) => {
    console.error(`error: ${errorText(error)}`);
    process.exit(1);
  });
}

if (isMainModule(import.meta)) await main();
