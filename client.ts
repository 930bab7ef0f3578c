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
 * The program is one event loop, like smallchat's: everything that can happen (a typed line, a
 * registry answer, a peer's message, a timer, a signal) becomes a ClientEvent. dispatch() hands
 * it to transition(), a pure function (state + event → next state + effects), and then runs the
 * effects: print, ask the registry, send to a peer, start a timer. Effects that finish later
 * report back as new events; nothing waits. The screens are the states:
 *
 *   Login:    login_username → login_password → logging_in ──(ok)──▶ search
 *   Register: register_username → register_password → registering ──(ok)──▶ login_username
 *   Search:   search ⇄ asking (/list, /logout)
 *             search → calling (we asked someone) ──(accepted)──▶ chat
 *             search → deciding (someone asked us) ──(yes)──▶ chat
 *   Chat:     chat ──(/back, bye, connection lost)──▶ search
 *
 * Layout of this file:
 *   - settings                  flags, timeouts and limits
 *   - state and events          ClientState, ClientEvent, Effect: everything, declared together
 *   - dispatcher and table      transition(), one handler per screen
 *   - effects                   the terminal, the registry and peers (the sockets themselves are
 *                               handled by askRegistry and PeerChannel in protocol.ts), history
 *   - command line              flags, start-up checks, wiring
 */

import { Buffer } from 'node:buffer';
import dns from 'node:dns';
import { appendFileSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import dgram from 'node:dgram';
import net from 'node:net';
import path from 'node:path';
import process from 'node:process';
import readline from 'node:readline';
import { Writable } from 'node:stream';
import { parseArgs, stripVTControlCharacters, styleText } from 'node:util';
import {
  DEFAULT_TCP_PORT, DEFAULT_UDP_PORT, INVALID_ANSWER, MAX_LINE_BYTES, PeerChannel,
  USERNAME_PATTERN, USERNAME_RULE, UsageError, answerFits, askRegistry, checkTicket,
  decodeDatagram, encodeDatagram, encodeLine, errorText, isMainModule, normaliseUsername,
  numberFlagOptions, numberFlagsUsage, plainAddress, readNumberFlags, sameUsername, usageLine,
} from './protocol.ts';
import type {
  DeclineReason, Hello, NumberFlag, PeerChannelEnd, PeerChannelHandlers, PeerMessage, Reply,
  Request, SessionUnknown, Storage,
} from './protocol.ts';

// === Settings ====================================================================================

/** Exported for test/client-transitions.test.ts, which builds states with its own settings. */
export type ClientSettings = {
  server: string; // the registry's host name or address
  tcpPort: number; // the registry's port for requests
  udpPort: number; // the registry's port for heartbeats
  chatPort: number; // where peers reach us; 0: any free port (the registry learns it at login)
  historyDir: string | undefined; // when set, conversations go to historyDir/<you>/<peer>.log
  trace: boolean; // print protocol messages (hellos only when something changes)
  /** Timeouts: the registry's answer (also connecting to a peer); a called peer's answer (longer
   * than decideTimeoutMs, so a slow yes still arrives); our yes or no; a caller's chat_request. */
  registryTimeoutMs: number;
  answerTimeoutMs: number;
  decideTimeoutMs: number;
  greetingTimeoutMs: number;
  /** Incoming connections that have not yet sent their chat_request, in all and from one
   * address. Each costs a socket and a line buffer; a real caller sends its request at once, so
   * a few are plenty, and the rest are closed without reading a byte. */
  maxPendingPeers: number;
  maxPendingPeersPerAddress: number;
  dropReportMs: number; // dropped connections are told in one summary per this many ms
};

const DEFAULT_CLIENT_SETTINGS: ClientSettings = {
  server: '127.0.0.1', tcpPort: DEFAULT_TCP_PORT, udpPort: DEFAULT_UDP_PORT, chatPort: 0,
  historyDir: undefined, trace: false,
  registryTimeoutMs: 5000, answerTimeoutMs: 45_000, decideTimeoutMs: 30_000,
  greetingTimeoutMs: 5000, maxPendingPeers: 16, maxPendingPeersPerAddress: 4, dropReportMs: 5000,
};

/** The registry's heartbeatMs is obeyed only within these bounds: 1 ms would make us send
 * a thousand hellos a second, and more than 2^31 ms overflows Node's timers. */
const HEARTBEAT_MS_RANGE = [100, 60_000] as const;
/** How many used tickets we remember (each until it expires) to refuse a replay. Only tickets
 * the registry really signed for us get here, so this is a safety bound, not a working limit. */
const MAX_SEEN_TICKETS = 1000;
/** The most characters of a stranger's text repeated in a warning. */
const MAX_QUOTED_CHARS = 40;

// === State and events ============================================================================
//
// Everything the client remembers is in ClientState; everything that can happen to it is a
// ClientEvent; everything it does about it is an Effect. Peer connections are named by a number
// (`conn`), so states and events stay plain data and the transitions can be tested without
// sockets; the effects layer keeps the table from numbers to real connections.

/** Which screen we are on, and what that screen needs. */
type Screen =
  // ---- Login and Register ----
  | { name: 'login_username' }
  | { name: 'login_password'; username: string }
  | { name: 'logging_in' } // waiting for the registry's answer
  | { name: 'register_username' }
  | { name: 'register_password'; username: string }
  | { name: 'registering' } // waiting for the registry's answer
  // ---- Search (home) ----
  | { name: 'search' }
  | { name: 'asking'; about: 'list' | 'logout' } // waiting for the registry's answer
  /** We asked for `peer`: first the registry, then (with its `ticket`) the peer's client `at`
   * host:port, on `conn` once connected. `call` tells this call's late answers from those of a
   * call we already cancelled. `crossing` is `peer`'s own request to us, held while our call
   * (which wins the glare) goes through. */
  | {
    name: 'calling'; peer: string; call: number; ticket: string; at: string; conn: number | null;
    crossing: number | null;
  }
  /** `peer` asked us on `conn`; our user says yes or no before the 'decide' timer says no. */
  | { name: 'deciding'; peer: string; conn: number }
  // ---- Chat ----
  | { name: 'chat'; peer: string; conn: number }
  // ---- Leaving: waiting for the logout answer, then exit ----
  | { name: 'quitting' };

/** Our session at the registry, from `logged_in` until we log out or lose it. */
type RegistrySession = {
  username: string; // as the registry spells it
  token: string; // proves requests are ours; also the key that checks tickets sent to us
  /** Set when the registry forgot this session while we were chatting: the chat goes on (it
   * never passed through the registry) and we return to Login when it ends. Says why. */
  lostBecause: string | null;
  /** --trace shows the first hello, then only changes: the last send error, or null. */
  helloShown: boolean;
  helloError: string | null;
};

/** Exported for test/client-transitions.test.ts. */
export type ClientState = {
  readonly settings: ClientSettings; // from the command line
  readonly registryUdp: string; // "address:port": the only sender whose datagrams count
  readonly chatPort: number; // where our chat listener takes calls; told at login
  screen: Screen;
  session: RegistrySession | null;
  /** Lines typed but not yet taken by a screen, oldest first; null is the end of input. A
   * waiting screen leaves them here, so a script that types ahead loses nothing. */
  typedAhead: ReadonlyArray<string | null>;
  pendingPeers: ReadonlyMap<number, string>; // not yet sent their chat_request: conn → address
  seenTickets: ReadonlyMap<string, number>; // used tickets → expiry; a replay gets bad_ticket
  /** Drops counted since the last report ("dropped %d … from 10.0.0.7" → count), or null when
   * nothing was dropped lately (the next drop is then reported at once). */
  drops: ReadonlyMap<string, number> | null;
  lastStorage: Storage | null; // how the registry keeps accounts, from the last login
  /** The registry forgot our session and keeps accounts in memory: it probably restarted and
   * lost our account, which explains a following bad_credentials. */
  accountMayBeGone: boolean;
};

/** Everything that can happen to the client. Exported for test/client-transitions.test.ts. */
export type ClientEvent =
  | { type: 'started' }
  | { type: 'typed'; line: string }
  | { type: 'input_ended' } // Ctrl-D, end of a pipe, or the terminal went away
  | { type: 'signal'; name: string } // SIGINT, SIGTERM, SIGHUP
  | { type: 'answer'; request: Request; reply: Reply; tag: number }
  | { type: 'answer_failed'; request: Request; why: string; tag: number }
  | { type: 'datagram'; sender: string; message: Hello | SessionUnknown | null }
  | { type: 'heartbeat_due' }
  | { type: 'hello_sent'; error: string | null }
  | { type: 'peer_arrived'; conn: number; address: string; remote: string }
  | { type: 'call_connected'; call: number; conn: number }
  | { type: 'call_failed'; call: number; why: string }
  | { type: 'peer_said'; conn: number; remote: string; message: PeerMessage }
  | { type: 'peer_gone'; conn: number; remote: string; why: PeerChannelEnd }
  | { type: 'timer'; name: TimerName; conn: number };

type EventOf<T extends ClientEvent['type']> = Extract<ClientEvent, { type: T }>;
type TimerName = 'decide' | 'drop_report';
type Colour = 'red' | 'green' | 'yellow' | 'cyan' | 'dim' | 'bold';

/** Everything the client can do about an event. Exported for test/client-transitions.test.ts. */
export type Effect =
  | { do: 'say'; text: string; colour?: Colour; replacesTypedLine?: boolean }
  | { do: 'prompt'; text: string; secret: boolean } // '' hides the prompt while we wait
  | { do: 'ask'; request: Request; tag: number }
  | { do: 'connect'; call: number; host: string; port: number }
  | { do: 'send'; conn: number; message: PeerMessage }
  | { do: 'close'; conn: number; atOnce?: boolean } // atOnce: destroy, do not flush or read
  | { do: 'expect'; conn: number; ms: number } // close conn unless it speaks within ms
  | { do: 'heartbeat'; everyMs: number | null } // start (or, with null, stop) heartbeat_due
  | { do: 'hello'; username: string; token: string }
  | { do: 'timer'; name: TimerName; conn: number; ms: number | null } // null cancels
  | { do: 'save'; you: string; peer: string; line: string }
  | { do: 'exit' };

/** A fresh client at the Login screen. Exported for test/client-transitions.test.ts. */
export function initialState(settings: ClientSettings, registryUdp: string, chatPort: number) {
  return {
    settings, registryUdp, chatPort, screen: { name: 'login_username' }, session: null,
    typedAhead: [], pendingPeers: new Map(), seenTickets: new Map(), drops: null,
    lastStorage: null, accountMayBeGone: false,
  } as ClientState;
}

// === The dispatcher and the transition table =====================================================
//
// transition() is the whole behaviour of the client. It never touches a socket or the screen:
// it returns the effects for dispatch() (in the effects section) to run. Events that mean the
// same on every screen (signals, datagrams, new connections, /quit, /help) are handled first;
// the rest go to the handler of the current screen. A handler returns the next state, or NOT_NOW
// for a typed line it cannot take yet (a waiting screen), which then waits in typedAhead.

const NOT_NOW = Symbol('not now');
type Out = Effect[];
/** A screen also hears of 'request': a caller whose ticket passed (see onIntroduction). */
type ScreenEvent = ClientEvent | { type: 'request'; conn: number; from: string };
type Next = ClientState | typeof NOT_NOW;
type ScreenHandler = (state: ClientState, event: ScreenEvent, out: Out, now: number) => Next;

const SCREENS: Record<Screen['name'], ScreenHandler> = {
  login_username: onForm, login_password: onForm, logging_in: onForm,
  register_username: onForm, register_password: onForm, registering: onForm,
  search: onSearchScreen, asking: onSearchScreen,
  calling: onCallingScreen,
  deciding: onDecidingScreen,
  chat: onChatScreen,
  quitting: onQuittingScreen,
};

/** Exported for test/client-transitions.test.ts. */
export function transition(state: ClientState, event: ClientEvent, now: number) {
  const out: Out = [];
  let next = applyEvent(state, event, out, now);
  // A new screen may take lines that were typed ahead, oldest first.
  while (next.typedAhead.length > 0) {
    const [line, ...rest] = next.typedAhead;
    const taken = offerLine({ ...next, typedAhead: rest }, line, out, now);
    if (taken === NOT_NOW) break;
    next = taken;
  }
  return { state: next, effects: out };
}

function applyEvent(state: ClientState, event: ClientEvent, out: Out, now: number): ClientState {
  switch (event.type) {
    case 'typed': case 'input_ended': {
      // A line is offered at once when nothing waits ahead of it; /cancel and /quit jump the
      // queue (that is what they are for). End of input waits behind typed-ahead lines, so
      // those still reach the chat.
      const line = event.type === 'typed' ? event.line : null;
      const urgent = line !== null && /^\/(cancel|quit)$/i.test(line.trim());
      if (state.typedAhead.length === 0 || urgent) {
        const taken = offerLine(state, line, out, now);
        if (taken !== NOT_NOW) return taken;
      }
      return { ...state, typedAhead: [...state.typedAhead, line] };
    }
    case 'started':
      say(out, `p2p-chat — registry ${state.settings.server}:${state.settings.tcpPort}`, 'bold');
      return reprompt(state, out);
    case 'signal': return quit(state, out);
    case 'datagram': return onDatagram(state, event, out);
    case 'heartbeat_due': return onHeartbeatDue(state, out);
    case 'hello_sent': return onHelloSent(state, event.error, out);
    case 'peer_arrived': return onPeerArrived(state, event, out);
    case 'timer':
      if (event.name === 'drop_report') return reportDrops(state, out);
      break;
    case 'answer': case 'answer_failed': {
      const reply = event.type === 'answer' ? event.reply : null;
      // The decoder checked every field; here we check it answers what we asked.
      if (reply !== null && !answerFits(event.request, reply)) {
        const failed = { ...event, type: 'answer_failed' as const, why: INVALID_ANSWER };
        return applyEvent(state, failed, out, now);
      }
      if (state.session === null) break; // logged out since: only the screen may care
      // Only a lost session sends the user back to Login; other failures leave the screen be.
      if (reply?.type === 'error' && reply.code === 'not_logged_in') {
        return loseSession(state, SESSION_FORGOTTEN, out);
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
 * every screen, so they are answered here; a password, though, may be anything. */
function offerLine(state: ClientState, line: string | null, out: Out, now: number): Next {
  if (line === null) return quit(state, out);
  const secret = state.screen.name.endsWith('password');
  const command = secret ? null : commandOf(line.trim().split(/\s+/)[0]);
  const help = command === '/help' ? textOf(state)[1] : '';
  if (command === '/quit') return quit(state, out);
  if (help !== '') {
    say(out, help);
    return reprompt(state, out);
  }
  return SCREENS[state.screen.name](state, { type: 'typed', line }, out, now);
}

// ---- Login and Register ----

/** The Login and Register screens are one form: a username, checked against the rule before
 * anything else; a password (Enter alone goes back); a wait for the registry's answer. */
function onForm(state: ClientState, event: ScreenEvent, out: Out): Next {
  const screen = state.screen;
  const login = screen.name.startsWith('log'); // login_username, login_password, logging_in
  const form: Screen = { name: login ? 'login_username' : 'register_username' };
  if (isAnswerTo(login ? 'login' : 'register', event)) {
    if (screen.name !== 'logging_in' && screen.name !== 'registering') return state;
    const reply = event.type === 'answer' ? event.reply : null;
    if (reply?.type === 'logged_in') return loggedIn(state, reply, out);
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
  if (screen.name === 'logging_in' || screen.name === 'registering') return NOT_NOW;
  if (screen.name === 'login_password' || screen.name === 'register_password') {
    if (event.line === '') return show(state, form, out);
    const { username } = screen;
    const password = event.line;
    ask(out, login ? { type: 'login', username, password, chatPort: state.chatPort }
      : { type: 'register', username, password });
    return show(state, { name: login ? 'logging_in' : 'registering' }, out);
  }
  const line = event.line.trim();
  const command = commandOf(line);
  if (line === '') return reprompt(state, out);
  if (command === (login ? '/register' : '/login')) {
    return show(state, { name: login ? 'register_username' : 'login_username' }, out);
  }
  if (command !== null) return unknownCommand(state, line, out);
  if (!USERNAME_PATTERN.test(line)) return notAUsername(state, line, out);
  return show(state, { name: login ? 'login_password' : 'register_password', username: line }, out);
}

function loggedIn(state: ClientState, reply: Reply & { type: 'logged_in' }, out: Out) {
  const [least, most] = HEARTBEAT_MS_RANGE;
  out.push({ do: 'heartbeat', everyMs: Math.min(most, Math.max(least, reply.heartbeatMs)) });
  say(out, `Logged in as ${reply.username}. Peers reach you on port ${state.chatPort}. ` +
    'Type /help for commands.', 'green');
  if (reply.replaced) say(out, 'This login ended your earlier session (elsewhere).', 'yellow');
  const session: RegistrySession = {
    username: reply.username, token: reply.token, lostBecause: null, helloShown: false,
    helloError: null,
  };
  const next = { ...state, session, lastStorage: reply.storage, accountMayBeGone: false };
  return show(next, { name: 'search' }, out);
}

// ---- Search ----

function onSearchScreen(state: ClientState, event: ScreenEvent, out: Out, now: number): Next {
  if (isAnswerTo('logout', event)) {
    if (state.screen.name !== 'asking') return state;
    say(out, event.type === 'answer' ? 'Logged out.'
      : `Logged out here, but could not tell the registry: ${event.why}.`, 'yellow');
    return show(state, { name: 'login_username' }, out);
  }
  if (event.type === 'request' && state.session !== null) {
    say(out, `${event.from} wants to chat with you.`, 'bold');
    out.push({ do: 'timer', name: 'decide', conn: event.conn, ms: state.settings.decideTimeoutMs });
    return show(state, { name: 'deciding', peer: event.from, conn: event.conn }, out);
  }
  if (event.type !== 'typed') return orElse(state, event, out);
  if (state.screen.name === 'asking') return NOT_NOW;
  const line = event.line.trim();
  const [word, ...rest] = line.split(/\s+/);
  const command = commandOf(word);
  const argument = rest.join(' ');
  if (line === '') return reprompt(state, out);
  if (command === '/list') {
    askList(state, argument, out);
    return show(state, { name: 'asking', about: 'list' }, out);
  }
  if (command === '/logout') {
    // Tell the registry at once, instead of letting it notice our silence.
    out.push({ do: 'heartbeat', everyMs: null });
    ask(out, { type: 'logout', token: state.session!.token });
    return show({ ...state, session: null }, { name: 'asking', about: 'logout' }, out);
  }
  if (command === '/search' && argument !== '') return callPeer(state, argument, out, now);
  if (command !== null) return unknownCommand(state, line, out);
  return callPeer(state, line, out, now);
}

const askList = (state: ClientState, prefix: string, out: Out) =>
  ask(out, { type: 'list', token: state.session?.token ?? '', ...(prefix ? { prefix } : {}) });

/** An answer to /list (asked on Search or in a chat), printed wherever it arrives. */
function onListAnswer(state: ClientState, event: AnswerEvent, out: Out): ClientState {
  if (event.type === 'answer_failed') {
    say(out, `Could not list who is online: ${event.why}.`, 'yellow');
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

function callPeer(state: ClientState, wanted: string, out: Out, now: number): ClientState {
  const session = state.session!;
  if (!USERNAME_PATTERN.test(wanted)) return notAUsername(state, wanted, out);
  if (sameUsername(wanted, session.username)) {
    say(out, 'That is you.', 'yellow');
    return reprompt(state, out);
  }
  say(out, `Looking up ${wanted}…`, 'dim');
  ask(out, { type: 'search', token: session.token, username: wanted }, now);
  return show(state, {
    name: 'calling', peer: wanted, call: now, ticket: '', at: '', conn: null, crossing: null,
  }, out);
}

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
      say(out, `Waiting for ${reply.username}… (/cancel to give up)`, 'yellow');
      out.push({ do: 'connect', call: screen.call, host: reply.host, port: reply.port });
      const at = `${reply.host}:${reply.port}`;
      return { ...state, screen: { ...screen, peer: reply.username, ticket: reply.ticket, at } };
    }
    case 'call_connected': {
      if (event.call !== screen.call) return orElse(state, event, out);
      const from = state.session!.username;
      send(out, event.conn, { type: 'chat_request', from, ticket: screen.ticket });
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
        say(out, `${peer} accepted. You are chatting with ${peer}; /back leaves.`, 'green');
        return chatScreen(state, peer, event.conn, out, now);
      }
      close(out, event.conn);
      if (event.type === 'peer_said') {
        const { message } = event;
        return failed(message.type === 'chat_decline' ? declineInWords(peer, message.reason)
          : `${peer}'s client answered with "${message.type}"; hung up.`);
      }
      const { why } = event;
      if (why.kind === 'ended') return failed(`${peer} hung up without answering.`);
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
        return { ...state, screen: { ...screen, crossing: event.conn } };
      }
      if (screen.conn !== null) hangUp(out, screen.conn, BYE);
      return acceptRequest(state, event.from, event.conn, out, now);
    }
    case 'typed':
      if (commandOf(event.line.trim()) !== '/cancel') return NOT_NOW;
      if (screen.conn !== null) hangUp(out, screen.conn, BYE);
      if (screen.crossing !== null) hangUp(out, screen.crossing, DECLINED);
      say(out, `Cancelled the request to ${peer}.`, 'yellow');
      return show(state, { name: 'search' }, out);
  }
  return orElse(state, event, out);
}

/** Our call did not go through. If the peer's own call to us is waiting, take it instead. */
function callFailed(state: ClientState, why: string, out: Out, now: number): ClientState {
  const screen = state.screen;
  say(out, why, 'yellow');
  if (screen.name === 'calling' && screen.crossing !== null) {
    return acceptRequest(state, screen.peer, screen.crossing, out, now);
  }
  return show(state, { name: 'search' }, out);
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
        return acceptRequest(state, peer, conn, out, now);
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

function acceptRequest(state: ClientState, peer: string, conn: number, out: Out, now: number) {
  send(out, conn, { type: 'chat_accept' });
  say(out, `You are chatting with ${peer}; /back leaves.`, 'green');
  return chatScreen(state, peer, conn, out, now);
}

// ---- Chat ----

function chatScreen(state: ClientState, peer: string, conn: number, out: Out, now: number) {
  save(out, state, peer, `--- conversation with ${peer}, began ${localTime(now)} (local time)`);
  return show(state, { name: 'chat', peer, conn }, out);
}

function onChatScreen(state: ClientState, event: ScreenEvent, out: Out, now: number): Next {
  const screen = state.screen;
  if (screen.name !== 'chat') return state;
  const { peer, conn } = screen;
  switch (event.type) {
    case 'typed': {
      const line = event.line.trim();
      const [word, ...rest] = line.split(/\s+/);
      const command = line.startsWith('//') ? null : commandOf(word);
      if (line === '') return reprompt(state, out);
      if (command === '/back') {
        hangUp(out, conn, BYE);
        return endChat(state, `You left the chat with ${peer}.`, out);
      }
      if (command === '/list') {
        askList(state, rest.join(' '), out);
        return state;
      }
      if (command !== null) return unknownCommand(state, line, out);
      const text = line.startsWith('//') ? line.slice(1) : line;
      const message: PeerMessage = { type: 'msg', text, at: now };
      // The peer's client drops a connection whose line passes MAX_LINE_BYTES (see
      // PeerChannel), so a long paste would end the chat. Refuse it here, and keep the chat.
      const lineBytes = Buffer.byteLength(encodeLine(message)) - 1; // the limit omits "\n"
      if (lineBytes > MAX_LINE_BYTES) {
        say(out, `Not sent: that message is too long (${lineBytes} bytes as a peer message; ` +
          `the limit is ${MAX_LINE_BYTES}).`, 'yellow');
        return reprompt(state, out);
      }
      send(out, conn, message);
      chatLine(state, peer, state.session!.username, text, now, out);
      return state;
    }
    case 'peer_said':
      if (event.conn !== conn) return orElse(state, event, out);
      if (event.message.type === 'msg') {
        // Shown with our own clock: `at` is only the peer's claim, and clocks disagree.
        chatLine(state, peer, peer, event.message.text, now, out);
        return state;
      }
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

/** A chat line, ours or the peer's: shown (ours in place of the line just typed) and saved. */
function chatLine(state: ClientState, peer: string, author: string, text: string, at: number,
  out: Out): void {
  const own = author !== peer;
  const line = `${author}: ${printable(text)}`;
  out.push({ do: 'say', text: `[${clock(at)}] ${line}`, colour: own ? 'cyan' : 'green',
    replacesTypedLine: own });
  save(out, state, peer, `${localTime(at)} ${line}`);
}

function endChat(state: ClientState, words: string, out: Out): ClientState {
  say(out, words, 'yellow');
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
  prompt(out, '');
  if (state.session === null) {
    say(out, 'Bye.');
    out.push({ do: 'exit' });
  } else {
    out.push({ do: 'heartbeat', everyMs: null });
    ask(out, { type: 'logout', token: state.session.token });
  }
  return { ...state, screen: { name: 'quitting' }, session: null, typedAhead: [] };
}

function onQuittingScreen(state: ClientState, event: ScreenEvent, out: Out): ClientState {
  if (isAnswerTo('logout', event)) {
    // A failed logout is fine too: the registry forgets us after its timeout anyway.
    say(out, 'Bye.');
    out.push({ do: 'exit' });
  } else if (event.type === 'call_connected' || event.type === 'request') {
    close(out, event.conn);
  }
  return state;
}

/** Ends whatever conversation the screen holds, telling the peer, and drops strangers. */
function hangUpEverything(state: ClientState, out: Out): void {
  const screen = state.screen;
  if (screen.name === 'deciding') hangUp(out, screen.conn, DECLINED);
  if (screen.name === 'chat') hangUp(out, screen.conn, BYE);
  if (screen.name === 'calling') {
    if (screen.conn !== null) hangUp(out, screen.conn, BYE);
    if (screen.crossing !== null) hangUp(out, screen.crossing, DECLINED);
  }
  for (const conn of state.pendingPeers.keys()) close(out, conn, true);
}

// ---- What every screen shares ----

/** What we say when the registry has forgotten our session (session_unknown, not_logged_in). */
const SESSION_FORGOTTEN =
  'the registry no longer knows this session — did it restart? Please log in again.';
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
  return printable(event.reply.type === 'error' ? event.reply.message : INVALID_ANSWER);
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
  // Only the registry may tell us our session is gone; a datagram from anywhere else (another
  // port of the same machine included) is ignored. (UDP source addresses can still be forged
  // on a network that allows it; this stops everyone who cannot.)
  if (event.sender !== state.registryUdp) {
    if (!state.settings.trace) return state;
    return noteDrop(state, `ignored %d datagrams from ${event.sender} (not the registry)`,
      `ignored a datagram from ${event.sender}: only the registry at ${state.registryUdp} ` +
      'may speak on this socket', out);
  }
  if (event.message?.type !== 'session_unknown') return state;
  trace(state, out, `← udp ${JSON.stringify(event.message)}`);
  const why = event.message.reason === 'replaced' ? REPLACED : SESSION_FORGOTTEN;
  return loseSession(state, why, out);
}

function onHeartbeatDue(state: ClientState, out: Out): ClientState {
  const session = state.session;
  if (session === null || session.lostBecause !== null) return state;
  out.push({ do: 'hello', username: session.username, token: session.token });
  if (session.helloShown) return state;
  trace(state, out, `→ udp hello from ${session.username} (further hellos are shown only ` +
    'when something changes)');
  return { ...state, session: { ...session, helloShown: true } };
}

function onHelloSent(state: ClientState, error: string | null, out: Out): ClientState {
  const session = state.session;
  if (session === null || error === session.helloError) return state;
  trace(state, out, error === null ? '→ udp hellos get through again'
    : `→ udp hello failed (${error})`);
  return { ...state, session: { ...session, helloError: error } };
}

// ---- Strangers at the chat port ----
//
// Someone connects to our chat port. Until they send a chat_request we do not know who they
// are: they wait in pendingPeers (a few at a time) for greetingTimeoutMs at most. Their ticket
// is checked before our user hears of them: only the registry, which knows our session token,
// can make one that passes, and each ticket works once.

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
  let verdict: string =
    checkTicket(session.token, request.ticket, request.from, session.username, now);
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
    { type: 'request', conn: event.conn, from: request.from }, out, now);
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
const REGISTER_HELP = `Register: choose a username (${USERNAME_RULE}), then a password.
  /login      back to the Login screen
  /quit       exit`;
const SEARCH_HELP = `Commands:
  NAME or /search NAME   ask NAME to chat
  /list [PREFIX]         who is online (names starting with PREFIX)
  /logout                log out and return to the login screen
  /quit                  log out and exit
  /help                  this list
While waiting for an answer: /cancel gives up. Commands ignore case.`;
const CHAT_HELP = `In a chat: type a line to send it; //text sends "/text".
  /list [PREFIX]   who is online
  /back            leave the chat
  /quit            leave, log out and exit`;

/** A screen's prompt and its /help. A screen that waits for an answer has neither: /help typed
 * there waits, like any line, for the next screen. */
function textOf(state: ClientState): [prompt: string, help: string] {
  const screen = state.screen;
  const you = state.session?.username ?? '?';
  switch (screen.name) {
    case 'login_username': return ['Login — username (or /register, /help, /quit): ', LOGIN_HELP];
    case 'login_password': return ['password: ', ''];
    case 'register_username':
      return ['Register — new username (or /login to go back): ', REGISTER_HELP];
    case 'register_password': return ['new password: ', ''];
    case 'search': return [`${you}> `, SEARCH_HELP];
    case 'deciding': {
      const { peer } = screen;
      return [`Accept ${peer}? (y/n) `, `${peer} wants to chat: y accepts, n declines.`];
    }
    case 'chat': return [`${you} → ${screen.peer}> `, CHAT_HELP];
    default: return ['', ''];
  }
}

/** Switches to `screen` and shows its prompt (none while it waits for an answer). */
function show(state: ClientState, screen: Screen, out: Out): ClientState {
  return reprompt({ ...state, screen }, out);
}

function reprompt(state: ClientState, out: Out): ClientState {
  prompt(out, textOf(state)[0], state.screen.name.endsWith('password'));
  return state;
}

/** "/list" for "/LIST" and "/List"; null for a line that is not a command. */
function commandOf(word: string): string | null {
  return word.startsWith('/') ? word.toLowerCase() : null;
}

function unknownCommand(state: ClientState, line: string, out: Out): ClientState {
  const shown = quoteSafely(line);
  say(out, state.screen.name === 'chat'
    ? `Unknown command ${shown}; to send a line that starts with "/", type /${shown}`
    : `Unknown command ${shown}; type /help.`, 'yellow');
  return reprompt(state, out);
}

function notAUsername(state: ClientState, line: string, out: Out): ClientState {
  say(out, `Not a username: "${quoteSafely(line)}" (${USERNAME_RULE}).`, 'yellow');
  return reprompt(state, out);
}

// One line for each effect the handlers ask for.
const say = (out: Out, text: string, colour?: Colour) => out.push({ do: 'say', text, colour });
const prompt = (out: Out, text: string, secret = false) => out.push({ do: 'prompt', text, secret });
const ask = (out: Out, request: Request, tag = 0) => out.push({ do: 'ask', request, tag });
const send = (out: Out, conn: number, message: PeerMessage) =>
  out.push({ do: 'send', conn, message });
const close = (out: Out, conn: number, atOnce = false) => out.push({ do: 'close', conn, atOnce });
const cancelDecideTimer = (out: Out, conn: number) =>
  out.push({ do: 'timer', name: 'decide', conn, ms: null });

function trace(state: ClientState, out: Out, text: string): void {
  if (state.settings.trace) say(out, printable(text), 'dim');
}

/** Sends a last message (bye, or a decline), then closes. */
function hangUp(out: Out, conn: number, last: PeerMessage): void {
  send(out, conn, last);
  close(out, conn);
}

function save(out: Out, state: ClientState, peer: string, line: string): void {
  out.push({ do: 'save', you: state.session!.username, peer, line });
}

/** Text from the network shown on our screen, or written to a history file, loses what could
 * rearrange the screen: control characters (escape codes move the cursor, retitle the window,
 * erase lines), bidi controls (which make text read backwards), and invisible separators and
 * zero-width characters. Each becomes a visible U+FFFD. The zero-width joiner stays: it is
 * what glues emoji like 👨‍👩‍👧 together. */
function printable(text: string): string {
  return text.replace(UNPRINTABLE, '\uFFFD');
}
const UNPRINTABLE = new RegExp('[\\u0000-\\u001f\\u007f-\\u009f' + // C0 and C1 controls, DEL
  '\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069' + // bidi controls
  '\\u200b\\u2028\\u2029\\u2060-\\u2065\\ufeff\\ufff9-\\ufffb]', 'g'); // invisible, separators

/** A stranger's text in one of our sentences: printable and short. */
function quoteSafely(text: string): string {
  const chars = [...printable(text)];
  if (chars.length <= MAX_QUOTED_CHARS) return chars.join('');
  return `${chars.slice(0, MAX_QUOTED_CHARS).join('')}…`;
}

function clock(at: number): string {
  return new Date(at).toTimeString().slice(0, 8); // "14:03:07"
}

/** "2026-11-25 10:31:02" in local time, like the clock on the screen. */
function localTime(at: number): string {
  const date = new Date(at);
  const day = [date.getFullYear(), date.getMonth() + 1, date.getDate()];
  return `${day.map((n) => String(n).padStart(2, '0')).join('-')} ${clock(at)}`;
}

function formatSeconds(ms: number): string {
  return ms >= 1000 ? `${Math.round(ms / 100) / 10} s` : `${ms} ms`;
}

// === Effects: the dispatcher =====================================================================
//
// The one place where client.state changes. Events that arrive while effects of an earlier
// event are running (a PeerChannel reporting inside a send, say) wait in `inbox`, so each
// transition sees the state the previous one left.

type Client = {
  state: ClientState; // assigned only by dispatch()
  inbox: ClientEvent[]; // events waiting for the current dispatch to finish
  terminal: Terminal;
  chatListener: net.Server; // accepts peers' connections on the chat port
  heartbeatSocket: dgram.Socket; // sends hellos to the registry, hears session_unknown back
  /** The registry's address, resolved once at start-up (hellos go there, and only it may answer
   * them), its TCP port, and its name as the user gave it, for messages. */
  registry: { host: string; port: number; name: string };
  channels: Map<number, PeerChannel>; // the real connections behind the `conn` numbers
  nextConn: number;
  timers: Map<string, ReturnType<typeof setTimeout>>; // running timers, by "name:conn"
  heartbeat: ReturnType<typeof setInterval> | undefined;
};

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
    case 'say':
      return sayOnScreen(client.terminal, effect.text, effect.colour, effect.replacesTypedLine);
    case 'prompt': return showPrompt(client.terminal, effect.text, effect.secret);
    case 'ask': {
      const { request, tag } = effect;
      askRegistry(request, client.registry, settings.registryTimeoutMs, (direction, line) =>
        traceOnScreen(client, `${arrow(direction)} registry ${redactSecrets(line)}`)).then(
        (reply) => dispatch(client, { type: 'answer', request, reply, tag }),
        (error) => {
          dispatch(client, { type: 'answer_failed', request, why: errorText(error), tag });
        });
      return;
    }
    case 'connect': {
      const conn = client.nextConn++;
      const { call, host, port } = effect;
      PeerChannel.connect(host, port, peerHandlers(client, conn), settings.registryTimeoutMs).then(
        (channel) => {
          client.channels.set(conn, channel);
          dispatch(client, { type: 'call_connected', call, conn });
        },
        (error) => dispatch(client, { type: 'call_failed', call, why: errorText(error) }));
      return;
    }
    case 'send': return client.channels.get(effect.conn)?.send(effect.message);
    case 'close': {
      const channel = client.channels.get(effect.conn);
      client.channels.delete(effect.conn);
      channel?.close();
      if (effect.atOnce) channel?.socket.destroy();
      return;
    }
    case 'expect': return client.channels.get(effect.conn)?.expectWithin(effect.ms);
    case 'heartbeat':
      clearInterval(client.heartbeat);
      client.heartbeat = effect.everyMs === null ? undefined
        : setInterval(() => dispatch(client, { type: 'heartbeat_due' }), effect.everyMs);
      return;
    case 'hello': {
      const { username, token } = effect;
      const hello = encodeDatagram({ type: 'hello', username, token });
      // A lost datagram does not matter (the next one follows); a failure is only traced.
      client.heartbeatSocket.send(hello, settings.udpPort, client.registry.host, (error) => {
        const code = error ? (error as NodeJS.ErrnoException).code ?? error.message : null;
        dispatch(client, { type: 'hello_sent', error: code });
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
    case 'exit':
      client.chatListener.close();
      client.heartbeatSocket.close();
      try {
        client.terminal.readline.close(); // may throw EIO if the terminal is already gone
      } catch {
        // Nothing left to restore.
      }
      process.exit(0);
  }
}

/** --trace: a protocol line, dimmed. */
function traceOnScreen(client: Client, text: string): void {
  if (client.state.settings.trace) sayOnScreen(client.terminal, printable(text), 'dim');
}
const arrow = (direction: 'in' | 'out') => (direction === 'out' ? '→' : '←');

// === Effects: the terminal =======================================================================
//
// Two kinds of terminal are handled differently:
//   - a TTY (a person at a keyboard): readline edits the line. When a message arrives while the
//     person is half-way through typing, we erase the prompt and the draft (however many rows
//     they take: wide CJK characters, emoji, a draft that wraps), print the message, and let
//     readline draw the prompt and the draft again below it. Passwords are not echoed and never
//     enter the Up-arrow history. Colour unless NO_COLOR is set.
//   - a pipe (a script, or `client.ts < file`): plain lines in, plain lines out, every prompt on
//     its own line, and never an escape code.

type Terminal = {
  readline: readline.Interface; // reads lines; on a TTY also edits them (arrows, history)
  isTty: boolean; // stdin and stdout are both a terminal, and readline has not closed
  colour: boolean; // stdout is a terminal and NO_COLOR is not set
  prompt: string; // the prompt shown ('' while we wait for something)
  secret: boolean; // a password is being typed: readline's echo is swallowed
  /** TTY: while readline's echo is held back (see holdEcho), the row the cursor was on. */
  heldAtRow: number | null;
  /** TTY: the rows the line just typed takes, while it is still the last thing on the screen
   * (0 once anything was printed below it); a chat line is redrawn in its place. */
  typedRows: number;
};

/** The parts of readline's Interface we use beyond its type (Node's and Deno's both have them):
 * the draft (`line`, `cursor`: documented but typed read-only), the Up-arrow history, the rows it
 * drew below the prompt's first row last time, its redraw, and its sign that a paste goes on. */
type EditableLine = {
  line: string; cursor: number; history?: string[]; prevRows?: number; _refreshLine?: () => void;
  isCompletionEnabled?: boolean;
};

function createTerminal(): Terminal {
  const isTty = Boolean(process.stdin.isTTY && process.stdout.isTTY);
  // readline echoes what is typed to its output. To hide a password we give it an output that
  // passes writes through to stdout unless `secret` is set. (It also needs the screen width.)
  const echo = new Writable({
    write(chunk, _encoding, done) {
      if (!terminal.secret && terminal.heldAtRow === null) process.stdout.write(chunk);
      done();
    },
  });
  Object.defineProperty(echo, 'columns', { get: () => process.stdout.columns });
  if (isTty) {
    // When the terminal window closes, readline's attempt to leave raw mode throws EIO. We
    // still have a logout to send, so that must not end the program.
    const setRawMode = process.stdin.setRawMode.bind(process.stdin);
    process.stdin.setRawMode = (mode: boolean) => {
      try {
        return setRawMode(mode);
      } catch {
        return process.stdin;
      }
    };
  }
  const terminal: Terminal = {
    // From a pipe nothing is echoed; we print prompts ourselves.
    readline: readline.createInterface({
      input: process.stdin, output: isTty ? echo : undefined, terminal: isTty, historySize: 100,
    }),
    isTty, colour: Boolean(process.stdout.isTTY) && !process.env.NO_COLOR,
    prompt: '', secret: false, heldAtRow: null, typedRows: 0,
  };
  if (isTty) {
    measureAsDrawn(terminal.readline);
    holdEcho(terminal);
  }
  return terminal;
}

/** readline just handed us `line`. At a TTY, take a password back out of the history, and
 * remember how many rows the typed line takes. */
function onLineTyped(terminal: Terminal, line: string): void {
  if (!terminal.isTty) return;
  const editable = terminal.readline as unknown as EditableLine;
  if (terminal.secret) {
    if (editable.history?.[0] === line) editable.history.shift();
    terminal.typedRows = 0;
    process.stdout.write('\n'); // the hidden Enter did not move the cursor
    return;
  }
  // The rows of prompt and line as the terminal drew them, plus the one readline moved down to
  // (a line that exactly fills its last row gets an extra, empty one).
  terminal.typedRows = displayPosition(terminal.prompt + line).rows + 1;
}

/** Prints one line without disturbing what the user is typing. */
function sayOnScreen(terminal: Terminal, text: string, colour?: Colour, replacesTypedLine = false) {
  const painted = colour !== undefined && terminal.colour ? styleText(colour, text) : text;
  const out = process.stdout;
  if (!terminal.isTty) {
    out.write(painted + '\n');
    return;
  }
  if (replacesTypedLine && terminal.typedRows > 0) {
    // readline left what we typed on the screen; the formatted line takes its place.
    readline.moveCursor(out, 0, -terminal.typedRows);
    readline.cursorTo(out, 0);
    readline.clearScreenDown(out);
  }
  terminal.typedRows = 0;
  if (terminal.secret) {
    readline.cursorTo(out, 0);
    readline.clearLine(out, 0);
    out.write(`${painted}\n${terminal.prompt}`); // the typed password stays hidden
    return;
  }
  // Go up to the prompt's first row, erase prompt and draft, print our line there, and let
  // readline draw prompt and draft again below it. readline's own count of the rows
  // (`prevRows`) is only as fresh as its last redraw, so we measure the cursor's row and tell it.
  readline.moveCursor(out, 0, -terminal.readline.getCursorPos().rows);
  readline.cursorTo(out, 0);
  readline.clearScreenDown(out);
  out.write(painted + '\n');
  const editable = terminal.readline as unknown as EditableLine;
  editable.prevRows = 0;
  terminal.readline.prompt(true);
  editable.prevRows = terminal.readline.getCursorPos().rows; // its next redraw goes up as far
}

/** Shows a prompt ('' shows none). From a pipe it is a line of its own: scripts wait for it. */
function showPrompt(terminal: Terminal, text: string, secret: boolean): void {
  terminal.prompt = text;
  if (!terminal.isTty) {
    if (text !== '') process.stdout.write(text + '\n');
    return;
  }
  terminal.secret = false; // let readline draw the prompt itself
  terminal.readline.setPrompt(text);
  // `true` keeps the cursor where it is in a half-typed line; without it readline moves the
  // cursor to the start, and the next keys typed would land in front of the text.
  terminal.readline.prompt(true);
  terminal.secret = secret;
}

// ---- Where the draft's rows are ----
//
// sayOnScreen goes up as many rows as the draft takes, and readline does the same when it
// redraws after an edit. Both must count rows as the terminal drew them, or a redraw leaves a
// stale row of draft or erases a message above it.

/** readline measures the draft to know which rows to redraw, but it counts a ZWJ emoji sequence
 * (👨‍👩‍👧) as its parts, 6 columns, where terminals (tmux among them) draw one emoji, 2 columns.
 * Redrawing after a Backspace, it then went up into rows that were not the draft's and erased
 * the messages there. So our readline measures by graphemes, as the terminal draws them. The
 * measure is a method with no public name (a symbol, in Node's and Deno's readline alike); a
 * runtime without it keeps readline's own measure. */
function measureAsDrawn(lineEditor: readline.Interface): void {
  for (let at = Object.getPrototypeOf(lineEditor); at !== null; at = Object.getPrototypeOf(at)) {
    const symbols = Object.getOwnPropertySymbols(at);
    const measure = symbols.find((symbol) => symbol.description === '_getDisplayPos');
    if (measure === undefined) continue;
    Object.defineProperty(lineEditor, measure, {
      value: (text: string) => displayPosition(text),
    });
    return;
  }
}

/** Where text leaves the cursor: rows below the first, and the column. Like readline's own,
 * but by graphemes, and a wide character that would not fit at a row's end moves to the next. */
function displayPosition(text: string, columns = process.stdout.columns || Infinity) {
  let [offset, rows] = [0, 0];
  for (const { segment } of GRAPHEMES.segment(stripVTControlCharacters(text))) {
    if (segment === '\n') {
      rows += Math.ceil(offset / columns) || 1;
      offset = 0;
      continue;
    }
    const width = segment === '\t' ? 8 - (offset % 8) : ZERO_WIDTH.test(segment) ? 0
      : WIDE.test(segment) ? 2 : 1;
    if (width === 2 && (offset + 1) % columns === 0) offset++;
    offset += width;
  }
  const cols = offset % columns;
  return { cols, rows: rows + (offset - cols) / columns };
}
const GRAPHEMES = new Intl.Segmenter(undefined, { granularity: 'grapheme' });
const ZERO_WIDTH = /^[\p{Cc}\p{Cf}\p{Mn}\p{Me}]+$/u;
/** What terminals draw two columns wide: emoji shown as emoji by default (not ©, ❤ or ✔, which
 * are text unless asked otherwise), flags, and the CJK blocks. */
const WIDE = new RegExp('\\p{Emoji_Presentation}|\\p{Regional_Indicator}|[\\u1100-\\u115f' +
  '\\u2e80-\\ua4cf\\uac00-\\ud7a3\\uf900-\\ufaff\\ufe30-\\ufe4f\\uff00-\\uff60\\uffe0-\\uffe6' +
  '\\u{20000}-\\u{3fffd}]', 'u');

/** A terminal joins the parts of an emoji like 👨‍👩‍👧 reliably only when they arrive in one
 * write. readline echoes keys one by one, and a paste (many keys at once) without measuring:
 * parts then stay apart, wider than we measure, or wrap at the end of a row, and the draft's
 * rows are no longer where readline thinks; its next redraw leaves a stale row. So while a paste
 * lasts, and for a key that joins the character before it, the echo is held back, and readline
 * then redraws the whole draft from the row it started on. */
function holdEcho(terminal: Terminal): void {
  const editor = terminal.readline as unknown as EditableLine;
  const redraw = editor._refreshLine?.bind(editor);
  if (redraw === undefined) return; // a readline that cannot redraw on request: echo as it is
  const release = () => {
    if (terminal.heldAtRow === null) return;
    editor.prevRows = terminal.heldAtRow;
    terminal.heldAtRow = null;
    redraw();
  };
  let pastedInside: { line: string; cursor: number } | null = null; // see the second listener
  // prependListener: this runs before readline handles the key, the other one after.
  process.stdin.prependListener('keypress', (text?: string, key?: { name?: string }) => {
    pastedInside = null;
    if (key?.name === 'return' || key?.name === 'enter') return release();
    const pasting = editor.isCompletionEnabled === false; // readline's sign: more keys follow
    const { line, cursor } = editor;
    if (pasting && cursor < line.length) pastedInside = { line, cursor };
    if (terminal.secret) return;
    if (terminal.heldAtRow === null && (pasting || joinsPrevious(editor, text ?? ''))) {
      terminal.heldAtRow = terminal.readline.getCursorPos().rows;
    }
  });
  process.stdin.on('keypress', (text?: string) => {
    // Node's readline adds a pasted key at the end of the line, wherever the cursor is (and moves
    // the cursor as if it had not): the key goes where the cursor was.
    if (pastedInside !== null && text && editor.line === pastedInside.line + text) {
      const { line, cursor } = pastedInside;
      editor.line = line.slice(0, cursor) + text + line.slice(cursor);
    }
    if (editor.isCompletionEnabled !== false) release();
  });
}

/** True when `text`, typed at the cursor, becomes part of the character before it. */
function joinsPrevious({ line, cursor }: EditableLine, text: string): boolean {
  if (cursor === 0 || text === '') return false;
  const before = line.slice(Math.max(0, cursor - 32), cursor);
  const last = [...GRAPHEMES.segment(before + text)].at(-1)?.segment ?? '';
  return last.length > text.length;
}

// === Effects: the registry =======================================================================
//
// askRegistry (protocol.ts) opens a connection per request and hands back the decoded answer.

/** --trace shows the protocol, but secrets have no business on a screen someone may be
 * sharing: the password is hidden, and the session token shortened to its first characters. */
function redactSecrets(line: string): string {
  return line
    .replace(/"password":"(?:[^"\\]|\\.)*"/, '"password":"***"')
    .replace(/"token":"([^"]{6})[^"]*"/, '"token":"$1…"');
}

// === Effects: peers ==============================================================================
//
// Each peer connection is a PeerChannel (protocol.ts): it turns the socket into checked messages
// and tells us why it ended. Here its news becomes events about a numbered `conn`.

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

/** Turns a channel's news into events about `conn`. */
function peerHandlers(client: Client, conn: number): PeerChannelHandlers {
  return {
    onMessage: (message, channel) => {
      dispatch(client, { type: 'peer_said', conn, remote: channel.remote, message });
    },
    onClose: (why, channel) => {
      client.channels.delete(conn);
      dispatch(client, { type: 'peer_gone', conn, remote: channel.remote, why });
    },
    onTrace: (direction, line, channel) => {
      const screen = client.state.screen;
      const who = 'conn' in screen && screen.conn === conn ? screen.peer : channel.remote;
      traceOnScreen(client, `${arrow(direction)} peer ${who} ${line}`);
    },
  };
}

function onIncomingConnection(client: Client, socket: net.Socket): void {
  const conn = client.nextConn++;
  const channel = new PeerChannel(socket, peerHandlers(client, conn));
  client.channels.set(conn, channel);
  const address = plainAddress(socket.remoteAddress);
  dispatch(client, { type: 'peer_arrived', conn, address, remote: channel.remote });
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
    sayOnScreen(client.terminal, `Could not write the history: ${errorText(error)}`, 'yellow');
  }
}

/** DIR/<you>/<peer>.log, built only from names that follow the username rule, lower-cased, and
 * checked to stay inside DIR; null otherwise. The rule allows "." and "..", which as folder
 * names would point elsewhere: those get a "_" in front. */
function historyFile(dir: string, you: string, peer: string): string | null {
  if (!USERNAME_PATTERN.test(you) || !USERNAME_PATTERN.test(peer)) return null;
  const safe = (name: string) => normaliseUsername(name).replace(/^\.+$/, '_$&');
  const root = path.resolve(dir);
  const file = path.resolve(root, safe(you), `${safe(peer)}.log`);
  return file.startsWith(root + path.sep) ? file : null;
}

/** Makes `dir` and its missing parents, one folder at a time. (mkdirSync's own `recursive`
 * option spins forever on a filesystem that refuses folders in an odd way, as /proc does.) */
function makeFolders(dir: string): void {
  const missing: string[] = [];
  for (let at = path.resolve(dir); !existsSync(at); at = path.dirname(at)) missing.unshift(at);
  for (const folder of missing) mkdirSync(folder);
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

// === Command line ================================================================================

type NumberSetting = {
  [K in keyof ClientSettings]: ClientSettings[K] extends number ? K : never;
}[keyof ClientSettings];
const DAY_MS = 86_400_000;
/** The whole-number flags (see NumberFlag in protocol.ts). --help is printed from this table and
 * the defaults, so the text and the program cannot disagree. */
const NUMBER_FLAGS: ReadonlyArray<NumberFlag<NumberSetting>> = [
  ['tcp-port', 'tcpPort', 1, 65535, "the registry's TCP port"],
  ['udp-port', 'udpPort', 1, 65535, "the registry's UDP port, for heartbeats"],
  ['chat-port', 'chatPort', 0, 65535, 'where peers reach you; 0 picks any free port'],
  ['registry-timeout-ms', 'registryTimeoutMs', 1, DAY_MS, "ms to wait for the registry's answer"],
  ['answer-timeout-ms', 'answerTimeoutMs', 1, DAY_MS, "ms to wait for a called peer's answer"],
  ['decide-timeout-ms', 'decideTimeoutMs', 1, DAY_MS, 'ms to accept or decline a request'],
  ['greeting-timeout-ms', 'greetingTimeoutMs', 1, DAY_MS,
    'ms a new connection has to send its request'],
];

const USAGE = `Usage: client.ts [options]

The p2p-chat terminal client: log in at a registry, find someone, chat with them directly.

Options:
${usageLine('--server HOST', `the registry's address (default ${DEFAULT_CLIENT_SETTINGS.server})`)}
${numberFlagsUsage(NUMBER_FLAGS, DEFAULT_CLIENT_SETTINGS)}
${usageLine('--history DIR', 'append each conversation to DIR/<you>/<peer>.log')}
${usageLine('--trace', 'print the protocol messages sent and received')}
${usageLine('-h, --help', 'show this help')}

Environment:
  NO_COLOR   set to turn colour off`;

/** Turns the command line into settings; null means --help was printed. */
function parseCommandLine(args: string[]): ClientSettings | null {
  const text = { type: 'string' } as const;
  const { values } = parseArgs({
    args,
    options: {
      server: text, history: text, trace: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' }, ...numberFlagOptions(NUMBER_FLAGS),
    },
  });
  if (values.help) {
    console.log(USAGE);
    return null;
  }
  return {
    ...DEFAULT_CLIENT_SETTINGS, ...readNumberFlags(NUMBER_FLAGS, values),
    server: (values.server as string | undefined) ?? DEFAULT_CLIENT_SETTINGS.server,
    historyDir: values.history as string | undefined, trace: values.trace === true,
  };
}

function listen(server: net.Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) => {
      reject(error.code === 'EADDRINUSE'
        ? new UsageError(`chat port ${port} is already in use; choose another with --chat-port`)
        : error);
    });
    server.listen(port, () => resolve((server.address() as net.AddressInfo).port));
  });
}

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
  // The registry's address, once: hellos go to it, and only it may answer them.
  const family = net.isIP(settings.server) === 6 ? 6 : 4;
  const { server, tcpPort, udpPort } = settings;
  const host = await dns.promises.lookup(server, { family }).then((found) => found.address,
    () => server);
  const registryUdp = `${plainAddress(host)}:${udpPort}`;

  const terminal = createTerminal();
  const client: Client = {
    state: initialState(settings, registryUdp, chatPort), inbox: [], terminal, chatListener,
    heartbeatSocket: dgram.createSocket(family === 6 ? 'udp6' : 'udp4'),
    registry: { host, port: tcpPort, name: `${server}:${tcpPort}` },
    channels: new Map(), nextConn: 1, timers: new Map(), heartbeat: undefined,
  };
  chatListener.on('connection', (socket) => onIncomingConnection(client, socket));
  client.heartbeatSocket.on('message', (bytes, sender) => {
    const decoded = decodeDatagram(bytes);
    const from = `${plainAddress(sender.address)}:${sender.port}`;
    const message = decoded.ok ? decoded.message : null;
    dispatch(client, { type: 'datagram', sender: from, message });
  });
  client.heartbeatSocket.on('error', () => {}); // e.g. the registry host is unreachable
  terminal.readline.on('line', (line) => {
    onLineTyped(terminal, line);
    dispatch(client, { type: 'typed', line });
    if (client.state.typedAhead.length > 0) terminal.typedRows = 0; // not shown yet: stays put
  });
  terminal.readline.on('close', () => {
    // Ctrl-D, or the window closed: from now on print plainly (Deno's readline throws if asked
    // to draw a prompt after it closed, and that would cost us the logout).
    terminal.isTty = false;
    dispatch(client, { type: 'input_ended' });
  });
  // Ctrl-C at a TTY reaches readline; the rest arrive as signals. SIGHUP is the terminal
  // window closing: leave just as politely. When the terminal is gone, writing to it fails
  // (EIO, EPIPE): nobody is left to read it, but the goodbyes must still go out.
  terminal.readline.on('SIGINT', () => dispatch(client, { type: 'signal', name: 'SIGINT' }));
  for (const name of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(name, () => dispatch(client, { type: 'signal', name }));
  }
  process.stdout.on('error', () => {});
  process.stdin.on('error', () => dispatch(client, { type: 'input_ended' }));

  dispatch(client, { type: 'started' });
}

if (isMainModule(import.meta)) await main();
