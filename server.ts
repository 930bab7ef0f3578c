/**
 * server.ts — the registry: who has an account, who is online, and how to reach them.
 *
 * The registry never carries a chat message. It answers five requests over TCP and listens for
 * heartbeats over UDP; once it has introduced two clients, they talk to each other directly.
 *
 *                 TCP :5000  (one JSON object per line, answers in request order)
 *   client ─────▶ register · login · search · list · logout ──▶ ┌────────────────────────┐
 *                                                              │ registry               │
 *                 UDP :5001  (one JSON object per datagram)    │  accounts: UserStore   │─▶ MongoDB
 *   client ─────▶ hello {username, session, counter, mac}  ──▶ │  sessions: Maps        │ (or RAM)
 *          ◀───── session_unknown  (if the session is unknown) │  sweeper: every ≤ 1 s  │
 *                                                              └────────────────────────┘
 *
 * A session is born at login, kept alive by hellos, and dies at logout, when the sweeper finds
 * it silent for timeoutMs (the client crashed, lost its network, or was closed without logging
 * out), or when the same user logs in again somewhere else. The online list is simply the set of
 * live sessions.
 *
 * Unless started with --plain, the registry has a long-term key and every TCP connection opens
 * with a handshake (secure.ts) that proves it; the lines then travel sealed. Hellos travel in
 * clear but signed, with a key the client got over that secure link.
 *
 * Where a request goes, in the order of this file:
 *
 *   acceptConnection ─▶ receive ─▶ answerInOrder ─▶ answerRequest ─▶ handleSearch (or another
 *   handler) ─▶ the answer is written back, in request order
 *
 * Layout:
 *   - state                       the settings the lesson needs, and everything the registry holds
 *   - startServer                 the wiring: listeners, the sweeper, shutdown
 *   - TCP                         accept, receive, answer in order
 *   - UDP                         hello
 *   - request handlers            one function per message type
 *   - sessions and the sweeper    login creates, hello refreshes, the sweeper removes
 *   - accounts                    password hashing, the in-memory store and the MongoDB store
 *   - limits                      what keeps one host from taking the registry from everyone
 *   - command line                flags, errors for people, signals
 *
 * Besides startServer, the exports are there for the tests and the benchmarks (bench/), which
 * pass their own account stores and reach inside a running registry.
 */

import { Buffer } from 'node:buffer';
import { createHmac, randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { parseArgs } from 'node:util';
import type { Collection, MongoClient } from 'mongodb';
import {
  DEFAULT_HEARTBEAT_MS, DEFAULT_TCP_PORT, DEFAULT_TIMEOUT_MS, DEFAULT_UDP_PORT, LineSplitter,
  MAX_DATAGRAM_BYTES, MAX_LISTED_USERS, TICKET_TTL_MS, USERNAME_PATTERN, USERNAME_RULE,
  PROLOGUE, decodeDatagram, decodeRequest, encodeDatagram, encodeLine, errorText, isMainModule,
  makeTicket, normaliseUsername, numberFlagOptions, numberFlagsUsage, plainAddress,
  readNumberFlags, sameUsername, signedHelloValid, usageLine,
} from './protocol.ts';
import type {
  CheckUsernameRequest, ErrorCode, ErrorReply, ListRequest, LoginRequest, LogoutRequest,
  Hello, NumberFlag, RegisterRequest, Reply, SearchRequest, SessionUnknown, Storage,
} from './protocol.ts';
import {
  defaultDataDir, fingerprint, generateKeyPair, keyPairFromPrivate, loadOrCreateKeyFile,
  secureSocket,
} from './secure.ts';
import type { KeyPair, SecureChannelError, SecureSocket } from './secure.ts';

// ============================================================================================
// State
// ============================================================================================
//
// Everything the registry remembers is declared here (what the limits count is in "Limits").
// Accounts are the only thing that outlives the process (when MongoDB is used); sessions,
// connections and throttle counts are deliberately in memory: after a restart every client logs
// in again, which they notice within one heartbeat thanks to `session_unknown`.

/** The settings of the lesson, written once: startServer() fills in options from here, and
 * --help prints these very values. (The limits have their own, in LIMITS.) */
const DEFAULTS = {
  /** Every IPv4 interface, so other machines can join. */
  host: '0.0.0.0',
  tcpPort: DEFAULT_TCP_PORT,
  udpPort: DEFAULT_UDP_PORT,
  /** How often a client says hello, and how long a silent one stays online. */
  heartbeatMs: DEFAULT_HEARTBEAT_MS,
  timeoutMs: DEFAULT_TIMEOUT_MS,
  /** How long to wait for MongoDB before giving up. */
  mongodbTimeoutMs: 3000,
};

/** What startServer() accepts; every field is optional and defaults to DEFAULTS or LIMITS. */
export type ServerOptions = Partial<typeof DEFAULTS & Limits> & {
  /** Where accounts live. Default: MongoDB if `mongodbUri` is given, memory otherwise. */
  store?: UserStore;
  /** MongoDB connection string (the CLI takes it from MONGODB_URI). */
  mongodbUri?: string;
  /** Where event lines go. Default: stdout. */
  log?: (line: string) => void;
  /** The registry's long-term key: given, every connection is a secure link (secure.ts) and
   * hellos are signed; 'database' takes the one kept in MongoDB. Absent: plain lines, today's
   * protocol in clear, for nc and for the tests that speak raw JSON. */
  identity?: KeyPair | 'database';
};

type Settings = typeof DEFAULTS & Limits & { mongodbUri: string | undefined };

function resolveSettings(options: ServerOptions): Settings {
  return { ...given(DEFAULTS, options), ...resolveLimits(options), mongodbUri: options.mongodbUri };
}

/** `defaults`, with each of its fields that `options` gives (not undefined) taken from there. */
function given<T extends object>(defaults: T, options: object): T {
  const chosen = Object.entries(options)
    .filter(([key, value]) => key in defaults && value !== undefined);
  return { ...defaults, ...Object.fromEntries(chosen) };
}

/** One logged-in user's live session. (The client keeps its own side of it: RegistrySession.) */
export type LiveSession = {
  /** The name as it was registered ("Alice"), for display. */
  username: string;
  /** The secret that proves a request comes from this session. Never logged. */
  token: string;
  /** Where the user's client accepts chat connections: the address its login came from... */
  host: string;
  /** ...and the port it said it listens on. */
  chatPort: number;
  /** Secure registry only: the session's public name, which its hellos carry instead of the
   * token; the key that signs them; the highest hello counter seen (a replay is not higher);
   * the identity key (base64url) the login's handshake proved, which `found` hands to callers. */
  id: string;
  helloKey: Buffer;
  helloCounter: number;
  key: string | undefined;
  /** sessionClock() when we last heard from it (login or hello): performance.now(), a
   * monotonic clock, so a change of the wall-clock time cannot make everyone expire at once,
   * less the time the registry itself was stalled (see "Limits"). */
  lastHeardAt: number;
  /** This session's neighbours in the last-heard queue (see Registry.oldestSession): the
   * session heard just before it, and the one heard just after it. */
  heardBefore: LiveSession | undefined;
  heardAfter: LiveSession | undefined;
};

/** One open TCP connection from a client (or from nc), and what the limits keep about it. */
type Connection = ConnectionLimits & {
  /** The TCP connection itself; on a secure registry, once the handshake has passed, the secure
   * stream over it (the same reads and writes, sealed). */
  socket: net.Socket | SecureSocket;
  /** The key the client's handshake proved (secure registry), base64url. */
  remoteKey: string | undefined;
  /** The other end's address ("10.0.0.7"): the key of every per-address limit. */
  address: string;
  /** "address:port" of the other end, for the log. */
  remote: string;
  /** Cuts the incoming byte stream into lines. */
  splitter: LineSplitter;
  /** Lines received but not yet answered, oldest first. TOO_LONG marks where a line overflowed. */
  queue: Array<Uint8Array | typeof TOO_LONG>;
  /** True while an asynchronous answer (register or login: hashing, storage) is being worked
   * out. Later requests wait behind it, so answers leave in request order. */
  busy: boolean;
  /** Set when a line overflowed: nothing more is read; the answers queued before it are sent,
   * then an error, then the connection is closed. */
  hangingUp: boolean;
};
const TOO_LONG = Symbol('line too long');

/** What the registry holds, and what the limits count (LimitState, in "Limits"). */
type Registry = LimitState & {
  /** What startServer() was given, with the defaults filled in. */
  settings: Settings;
  /** Accounts: name, display name, password hash and salt. */
  store: UserStore;
  /** Live sessions by token. */
  sessionsByToken: Map<string, LiveSession>;
  /** The same sessions by normalised username, for search, list and taking over at login. */
  sessionsByName: Map<string, LiveSession>;
  /** The same sessions in a queue, in the order they were last heard from: a doubly linked list
   * through heardBefore / heardAfter, oldest first, so the sweeper looks only at the oldest end
   * (see "Sessions and the sweeper" for why not a Map). */
  oldestSession: LiveSession | undefined;
  newestSession: LiveSession | undefined;
  /** Sessions ended by a login elsewhere, by token and by session name (what a signed hello
   * carries) → sessionClock() when that happened. Kept for two timeouts (and at most
   * maxThrottleEntries entries), so the old client's next hello is told `session_unknown` with
   * reason "replaced" and can say why. Oldest first. */
  replacedTokens: Map<string, number>;
  /** Open TCP connections, so shutdown can close them all. */
  connections: Set<Connection>;
  /** What a login for a user who does not exist is checked against (a random salt, a hash of
   * zeros), so "no such user" takes as long as "wrong password": timing reveals no names. */
  decoy: Pick<StoredUser, 'salt' | 'passwordHash'>;
  /** Writes one event line. */
  log: (line: string) => void;
  /** The long-term key of a secure registry; undefined for a plain one. */
  identity: KeyPair | undefined;
};

function createRegistry(settings: Settings, store: UserStore, log: (line: string) => void,
  identity: KeyPair | undefined): Registry {
  const decoy = { salt: randomBytes(16).toString('hex'),
    passwordHash: '00'.repeat(SCRYPT_KEY_BYTES) };
  return { settings, store, sessionsByToken: new Map(), sessionsByName: new Map(),
    oldestSession: undefined, newestSession: undefined, replacedTokens: new Map(),
    connections: new Set(), decoy, log, identity, ...createLimitState(settings, store) };
}

/** The event log: one line per event, "<ISO time> <event> key=value …". Passwords and tokens
 * never go in it; anything a client chose freely is quoted with JSON.stringify, so it cannot
 * forge a line of its own. */
function logEvent(registry: Registry, event: string, details: string): void {
  registry.log(`${new Date().toISOString()} ${event} ${details}`);
}

// ============================================================================================
// startServer: the wiring
// ============================================================================================

export type RunningServer = {
  /** The ports actually bound (useful when 0 was asked for). */
  tcpPort: number;
  udpPort: number;
  host: string;
  /** The live state, for the tests and benchmarks that look inside. */
  registry: Registry;
  /** Stops listening, closes every connection and the account store. */
  close(): Promise<void>;
};

/** Starts the registry. Used by the command line below, and by the tests and benchmarks. */
export async function startServer(options: ServerOptions = {}): Promise<RunningServer> {
  const settings = resolveSettings(options);
  const log = options.log ?? stdoutLog();
  const ownsStore = options.store === undefined;
  const store = options.store ?? (settings.mongodbUri
    ? await openMongoUserStore(settings.mongodbUri, settings.mongodbTimeoutMs)
    : createMemoryUserStore());
  const identity = options.identity === 'database' ? await sharedKey(store) : options.identity;
  const registry = createRegistry(settings, store, log, identity);

  const tcp = net.createServer((socket) => acceptConnection(registry, socket));
  const udp = dgram.createSocket(settings.host.includes(':') ? 'udp6' : 'udp4');
  udp.on('message', (bytes, sender) => handleHello(registry, udp, bytes, sender));
  try {
    const { host, tcpPort, udpPort } = settings;
    await listening(tcp, 'TCP', tcpPort, (done) => tcp.listen(tcpPort, host, done));
    await listening(udp, 'UDP', udpPort, (done) => udp.bind(udpPort, host, done));
  } catch (error) {
    tcp.close();
    udp.close();
    if (ownsStore) await store.close();
    throw error;
  }
  udp.on('error', (error) => logEvent(registry, 'udp_error', errorText(error)));

  const sweep = () => sweepExpiredSessions(registry, sessionClock(registry));
  const sweeper = setInterval(sweep, sweepEveryMs(settings));

  const tcpPort = (tcp.address() as net.AddressInfo).port;
  const udpPort = udp.address().port;
  logEvent(registry, 'start', `tcp=${settings.host}:${tcpPort} udp=${settings.host}:${udpPort} ` +
    `heartbeat_ms=${settings.heartbeatMs} timeout_ms=${settings.timeoutMs}`);
  logEvent(registry, 'storage', store.description);
  if (identity) logEvent(registry, 'secure', `key=${fingerprint(identity.publicKey)}`);
  else logEvent(registry, 'plain', 'WARNING: no encryption: passwords, tokens and tickets cross ' +
    'the network in clear (--plain); for the nc lesson only');

  // Graceful shutdown: stop accepting, drop every connection (their clients see the registry
  // go and say so), close the UDP socket and the account store. Calling close() twice is safe.
  let closing: Promise<void> | undefined;
  return {
    tcpPort, udpPort, host: settings.host, registry,
    close() {
      closing ??= (async () => {
        clearInterval(sweeper);
        const tcpClosed = new Promise<void>((resolve) => tcp.close(() => resolve()));
        for (const connection of registry.connections) connection.socket.destroy();
        await tcpClosed;
        await new Promise<void>((resolve) => udp.close(() => resolve()));
        if (ownsStore) await store.close().catch(() => {});
      })();
      return closing;
    },
  };
}

/** Starts listening (TCP) or binding (UDP) and resolves once it worked. A port already taken
 * becomes an error naming the flag that picks another. */
function listening(socket: net.Server | dgram.Socket, protocol: 'TCP' | 'UDP', port: number,
  start: (done: () => void) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.once('error', (error: NodeJS.ErrnoException) => {
      const flag = `--${protocol.toLowerCase()}-port`;
      const taken = `${protocol} port ${port} is already in use; choose another with ${flag}`;
      reject(error.code === 'EADDRINUSE' ? new Error(taken) : error);
    });
    start(resolve);
  });
}

/** The default event log: stdout. In a real program you would console.log each line. But
 * writing to stdout is a system call, and a busy registry logs a line for nearly every request,
 * so the lines of one turn of the event loop are written together, in one call, just after that
 * turn (setImmediate), and whatever is left before the process exits. (process.stdout.write:
 * the line is formatted already, and console.log would format it again.) */
function stdoutLog(): (line: string) => void {
  let gathered: string[] = [];
  const writeGathered = () => {
    if (gathered.length === 0) return;
    process.stdout.write(gathered.join(''));
    gathered = [];
  };
  process.on('exit', writeGathered);
  return (line) => {
    if (gathered.length === 0) setImmediate(writeGathered);
    gathered.push(line + '\n');
  };
}

// ============================================================================================
// TCP: accept, receive, answer in order
// ============================================================================================

/** A client connected: from now on its bytes are cut into lines and each line is answered. */
function acceptConnection(registry: Registry, socket: net.Socket): void {
  socket.on('error', () => {}); // resets and the like: 'close' follows, which is all we need
  const address = plainAddress(socket.remoteAddress);
  if (!admitConnection(registry, socket, address)) return; // over a limit: told why (see Limits)
  const connection: Connection = { socket, address, remote: `${address}:${socket.remotePort}`,
    remoteKey: undefined, splitter: new LineSplitter(), queue: [], busy: false, hangingUp: false,
    ...connectionLimits() };
  registry.connections.add(connection);
  countConnection(registry, connection); // for its address; closed if idle (see Limits)
  socket.setNoDelay(true); // answers are small; send them now rather than batching (Nagle)
  socket.on('close', () => forgetConnection(registry, connection));
  if (registry.identity === undefined) return readLines(registry, connection);
  // A secure registry runs the handshake first (secure.ts), and reads lines from the secure
  // stream once it has passed. A failed handshake closes the socket: 'close' above tidies up.
  secureSocket(socket, { initiator: false, staticKey: registry.identity, prologue: PROLOGUE,
    // Three small messages: a client that has not sent its part in 5 s is gone or stalling.
    timeoutMs: Math.min(registry.settings.idleMs, 5000), plainRefusal: PLAIN_REFUSAL,
  }).then((sealed) => {
    sealed.on('error', (error: Error) => logEvent(registry, 'link_failed',
      `from=${connection.remote} error=${JSON.stringify(error.message)}`));
    connection.socket = sealed;
    connection.remoteKey = sealed.remoteStaticKey.toString('base64url');
    readLines(registry, connection);
  }, (error: SecureChannelError) => {
    logEvent(registry, 'handshake_failed', `from=${connection.remote} reason=${error.code}`);
  });
}

/** What a secure registry writes, in clear, to one who speaks JSON to it (nc), then hangs up. */
const PLAIN_REFUSAL = encodeLine(errorReply('bad_request', 'this registry speaks only through a ' +
  'secure link: use client.ts without --plain, or start the registry with --plain to speak JSON ' +
  'with nc')).trimEnd();

const PLAIN_REGISTRY = 'this registry was started with --plain: it speaks JSON in clear';

function readLines(registry: Registry, connection: Connection): void {
  const { socket } = connection;
  const read = (chunk: Buffer) => receive(registry, connection, chunk);
  // A plain registry answers a secure client's handshake (its first byte is 0, which no JSON
  // line starts with) in words at once, rather than leave it waiting for a handshake.
  socket.once('data', (first: Buffer) => {
    if (registry.identity === undefined && first[0] === 0) {
      return void socket.end(encodeLine(errorReply('bad_request', PLAIN_REGISTRY)));
    }
    read(first);
    socket.on('data', read);
  });
  connection.socket.on('drain', () => answerInOrder(registry, connection));
}

/** Bytes arrived: cut them into lines, queue the lines, answer what can be answered. */
function receive(registry: Registry, connection: Connection, chunk: Uint8Array): void {
  const { lines, tooLong } = connection.splitter.push(chunk);
  for (const line of lines) connection.queue.push(line);
  if (tooLong) {
    connection.queue.push(TOO_LONG);
    connection.hangingUp = true;
    connection.socket.pause(); // nothing after an overflow is read
  }
  // A plain server would keep reading; one that pipelines thousands of requests would then fill
  // our memory. So past MAX_QUEUED_REQUESTS we stop reading until the answers catch up.
  if (connection.queue.length > MAX_QUEUED_REQUESTS) connection.socket.pause();
  answerInOrder(registry, connection);
}

/** Answers queued lines. The invariant: a connection's requests are answered one at a time,
 * oldest first, each answer written before the next request is looked at.
 *
 * The plain version is a loop: take a line, answer it, write the answer. Around it:
 *   - an asynchronous answer (register, login) stops the loop; `busy` holds later requests
 *     back, and its completion writes the answer and calls us again;
 *   - backpressure: we also stop while the socket's send buffer is full ('drain' calls us
 *     again), so a client that never reads cannot grow our memory; reading resumes once the
 *     queue is down to a quarter of MAX_QUEUED_REQUESTS;
 *   - batching: a client that pipelines gets its answers in one write: cork() holds our writes
 *     back and uncork() sends them together, one system call instead of one per answer. */
function answerInOrder(registry: Registry, connection: Connection): void {
  const { socket, queue } = connection;
  const gathering = queue.length > 1;
  if (gathering) socket.cork();
  while (!connection.busy && queue.length > 0 && !socket.destroyed && !socket.writableNeedDrain) {
    const line = queue.shift()!;
    if (line === TOO_LONG) {
      queue.length = 0;
      const limit = connection.splitter.maxLineBytes;
      socket.end(encodeLine(errorReply('bad_request',
        `line longer than ${limit} bytes; closing the connection`)));
      break;
    }
    const answer = answerRequest(registry, connection, line);
    if (answer instanceof Promise) {
      connection.busy = true;
      answer.then((reply) => {
        connection.busy = false;
        noteActivity(connection, reply);
        if (!socket.destroyed) socket.write(encodeLine(reply));
        answerInOrder(registry, connection);
      }, (error) => {
        // Handlers turn every expected failure into an answer, so this is a bug. Log it and
        // drop this one connection; the server and everyone else carry on.
        logEvent(registry, 'internal_error',
          `from=${connection.remote} error=${JSON.stringify(errorText(error))}`);
        socket.destroy();
      });
      break;
    }
    noteActivity(connection, answer);
    socket.write(encodeLine(answer));
  }
  if (gathering) socket.uncork();
  const drained = queue.length <= MAX_QUEUED_REQUESTS / 4;
  if (drained && socket.isPaused() && !connection.hangingUp && !socket.destroyed) socket.resume();
}

/** Decodes one request line and routes it to its handler. */
function answerRequest(registry: Registry, connection: Connection,
  line: Uint8Array): Reply | Promise<Reply> {
  const decoded = decodeRequest(line);
  if (!decoded.ok) return errorReply('bad_request', decoded.error);
  const request = decoded.message;
  switch (request.type) {
    case 'register': return handleRegister(registry, request, connection);
    case 'check_username': return handleCheckUsername(registry, request, connection);
    case 'login': return handleLogin(registry, request, connection);
    case 'search': return handleSearch(registry, request, connection);
    case 'list': return handleList(registry, request, connection);
    case 'logout': return handleLogout(registry, request, connection);
  }
}

// ============================================================================================
// UDP: hello
// ============================================================================================

/** A datagram arrived. Only a hello of a live session (its token, or on a secure registry its
 * signature) with a matching name changes anything. */
function handleHello(registry: Registry, udp: dgram.Socket, bytes: Uint8Array,
  sender: dgram.RemoteInfo): void {
  if (bytes.length > MAX_DATAGRAM_BYTES) return; // too big to be a hello: not worth parsing
  const decoded = decodeDatagram(bytes);
  if (!decoded.ok || decoded.message.type !== 'hello') return; // anything else is ignored
  const hello = decoded.message;
  const session = registry.identity === undefined
    ? findSession(registry, hello.token ?? '')
    : findSignedSession(registry, hello);
  if (session === 'forged') return; // a forged or replayed hello: not worth an answer
  if (typeof session === 'object' && sameUsername(session.username, hello.username)) {
    refreshSession(registry, session, sessionClock(registry));
    return;
  }
  // Tell the sender, so a client whose session we lost (we restarted, swept it, or a login
  // elsewhere replaced it) finds out within one heartbeat instead of believing it is online.
  // The answer is smaller than a hello, so a forged sender address cannot use us to amplify.
  const answer: SessionUnknown = session === 'replaced'
    ? { type: 'session_unknown', reason: 'replaced' }
    : { type: 'session_unknown' };
  udp.send(encodeDatagram(answer), sender.port, sender.address, () => {});
}

/** A secure registry's hello names its session instead of carrying the token, and is signed.
 * 'forged' when the signature is wrong or the counter is not new (a copy of an older hello). */
function findSignedSession(registry: Registry,
  hello: Hello): LiveSession | 'replaced' | 'forged' | undefined {
  const { username, session: id, counter } = hello;
  if (id === undefined || counter === undefined) return 'forged'; // a plain hello: a token
  const session = registry.sessionsByName.get(normaliseUsername(username));
  if (session === undefined || session.id !== id) {
    return registry.replacedTokens.has(id) ? 'replaced' : undefined;
  }
  if (counter <= session.helloCounter || !signedHelloValid(session.helloKey, hello)) {
    return 'forged';
  }
  session.helloCounter = counter;
  return session;
}

// ============================================================================================
// Request handlers: one per message type
// ============================================================================================
//
// Each takes the decoded request and returns the answer. Those that touch storage or hash a
// password are async; the others answer at once.

function errorReply(code: ErrorCode, message: string): ErrorReply {
  return { type: 'error', code, message };
}

/** The answer for a token that is not live, saying why when we know. */
function notLoggedIn(why: 'replaced' | undefined): ErrorReply {
  return errorReply('not_logged_in', why === 'replaced'
    ? 'this session ended because you logged in somewhere else; log in again'
    : 'log in first: this session is unknown or has expired');
}

/** The answer to a request whose connection closed while it waited: nobody reads it. */
const CONNECTION_GONE = errorReply('bad_request', 'the connection closed');

// register and login hash a password. A plain server would call hashPassword(); here each asks
// askToHash() (in "Limits") once, and gets a refusal to send back, or a ticket to hash with and
// settle once with what happened: the limits count what is known to have happened.

async function handleRegister(registry: Registry, request: RegisterRequest,
  connection: Connection): Promise<Reply> {
  const { username, password } = request;
  const invalid = invalidCredentials(username, password);
  if (invalid !== undefined) return invalid;
  const ticket = await askToHash(registry, connection, 'register', username);
  if (ticket.refused) return ticket.refused;
  let outcome: HashOutcome = 'void'; // a registration never hashed (its client left) is void
  let added: 'added' | 'taken' | 'similar';
  try {
    const salt = randomBytes(16);
    const hash = await ticket.hash(password, salt);
    if (hash === undefined) return CONNECTION_GONE;
    added = await registry.store.addUser({ name: normaliseUsername(username),
      displayName: username, passwordHash: hash.toString('hex'), salt: salt.toString('hex') });
    outcome = added === 'added' ? 'succeeded' : 'failed';
  } catch (error) {
    return storageFailed(registry, 'register', error);
  } finally {
    ticket.settle(outcome);
  }
  if (added !== 'added') {
    logEvent(registry, 'register_refused',
      `user=${username} from=${connection.remote} reason=${added}`);
    return nameInUse(username, added);
  }
  logEvent(registry, 'register', `user=${username} from=${connection.remote}`);
  return { type: 'registered', username };
}

/** Is this name free to register? Asked before the client prompts for a new password. The
 * registry answers "taken" to anyone who tries to register a name anyway, so this reveals
 * nothing new; it is counted like a registration, so it is no faster a way to list accounts. */
async function handleCheckUsername(registry: Registry, request: CheckUsernameRequest,
  connection: Connection): Promise<Reply> {
  const { username } = request;
  if (!USERNAME_PATTERN.test(username)) return errorReply('invalid_username', USERNAME_RULE);
  const charge: Charge = [registry.registrationsByAddress, connection.address];
  const now = performance.now();
  const refused = throttleRefusal([charge], now);
  if (refused !== undefined) return refused;
  countAttempt(registry, ...charge, now);
  try {
    const found = await registry.store.nameInUse(normaliseUsername(username));
    if (found !== 'free') return nameInUse(username, found);
  } catch (error) {
    return storageFailed(registry, 'check_username', error);
  }
  return { type: 'username_free', username };
}

/** The answer for a name that is taken, or that looks like one taken (see nameSkeleton). Which
 * name it resembles is not said: that would hand out the account names one by one. */
function nameInUse(username: string, why: 'taken' | 'similar'): ErrorReply {
  return errorReply('username_taken', why === 'taken'
    ? `the username ${username} is already taken`
    : `the username ${username} is too similar to an existing name`);
}

async function handleLogin(registry: Registry, request: LoginRequest,
  connection: Connection): Promise<Reply> {
  const { username, password, chatPort } = request;
  const invalid = invalidCredentials(username, password);
  if (invalid !== undefined) return invalid;
  const name = normaliseUsername(username);
  // A proof that this device logged in as this user before: such a login is judged by its own
  // count and has its own lane to the hasher (see "Device proofs", in "Limits").
  const device = provenDevice(registry, name, request.device, connection.remoteKey);
  const ticket = await askToHash(registry, connection, 'login', username, device);
  if (ticket.refused) return ticket.refused;
  let outcome: HashOutcome = 'void'; // the client left, or the storage failed
  try {
    // A user who does not exist is checked against the decoy: both failures take as long.
    const user = await registry.store.findUser(name);
    const stored = user ?? registry.decoy;
    const attempt = await ticket.hash(password, Buffer.from(stored.salt, 'hex'));
    if (attempt === undefined) return CONNECTION_GONE;
    // In constant time: how long the comparison takes must not tell how much of it matched.
    const matches = timingSafeEqual(attempt, Buffer.from(stored.passwordHash, 'hex'));
    if (user === null || !matches) {
      outcome = 'failed';
      logEvent(registry, 'login_failed', `user=${username} from=${connection.remote}`);
      return errorReply('bad_credentials', 'wrong username or password');
    }
    outcome = 'succeeded';
    if (connection.socket.destroyed) return CONNECTION_GONE; // nobody to give the token to
    // The right password takes over: a session still open elsewhere (a crashed client, or a
    // replayed hello keeping a dead one alive) ends now, like IRC's GHOST.
    const replaced = registry.sessionsByName.get(name);
    if (replaced !== undefined) endReplacedSession(registry, replaced);
    const session = openSession(registry, user.displayName, connection.address, chatPort,
      connection.remoteKey);
    logEvent(registry, 'login', `user=${session.username} from=${connection.remote} ` +
      `chat=${session.host}:${chatPort}${replaced ? ' replaced=true' : ''}`);
    const { heartbeatMs, timeoutMs } = registry.settings;
    return { type: 'logged_in', username: session.username, token: session.token, heartbeatMs,
      timeoutMs, storage: registry.store.storage, ...(replaced ? { replaced: true } : {}),
      device: deviceProof(registry, name, connection.remoteKey, device),
      ...(registry.identity ? { session: session.id, helloKey: session.helloKey.toString(
        'base64url') } : {}) };
  } catch (error) {
    // The store failed, or handed back a damaged record (a hash of the wrong length makes
    // timingSafeEqual throw): either way the accounts cannot be trusted right now.
    return storageFailed(registry, 'login', error);
  } finally {
    ticket.settle(outcome);
  }
}

function handleSearch(registry: Registry, request: SearchRequest, connection: Connection): Reply {
  const caller = findSession(registry, request.token);
  if (typeof caller !== 'object') return notLoggedIn(caller);
  if (!USERNAME_PATTERN.test(request.username)) {
    return errorReply('invalid_username', USERNAME_RULE);
  }
  const callee = registry.sessionsByName.get(normaliseUsername(request.username));
  const who = `user=${caller.username} for=${request.username} from=${connection.remote}`;
  if (callee === undefined) {
    logEvent(registry, 'search_miss', who);
    return errorReply('not_online', `${request.username} is not online`);
  }
  logEvent(registry, 'search_hit', who);
  const expiresAt = Date.now() + TICKET_TTL_MS; // wall-clock: the peer checks it with its own clock
  // On a secure registry the ticket binds the caller's key and `found` names the callee's: the
  // two handshakes between them must prove exactly these keys (see Tickets in protocol.ts).
  const ticket = makeTicket(callee.token, caller.username, callee.username, expiresAt,
    caller.key ?? '');
  return { type: 'found', username: callee.username, host: callee.host, port: callee.chatPort,
    ticket, ...(callee.key ? { key: callee.key } : {}) };
}

/** At most MAX_LISTED_USERS names, so the answer always fits in one line, sorted ignoring case
 * (by their lower-case form, character by character: the same order in every runtime and
 * locale); a prefix narrows the list, and `total` says how many matched in all. */
function handleList(registry: Registry, request: ListRequest, connection: Connection): Reply {
  const caller = findSession(registry, request.token);
  if (typeof caller !== 'object') return notLoggedIn(caller);
  const prefix = normaliseUsername(request.prefix ?? '');
  const { first, total } = firstMatches(registry.sessionsByName.keys(), prefix, MAX_LISTED_USERS);
  const users = first.map((name) => registry.sessionsByName.get(name)!.username);
  const narrowed = request.prefix === undefined
    ? ''
    : ` prefix=${JSON.stringify(prefix.slice(0, 40))}`;
  logEvent(registry, 'list', `user=${caller.username} from=${connection.remote}${narrowed} ` +
    `total=${total} shown=${users.length}`);
  return { type: 'online', users, total };
}

function handleLogout(registry: Registry, request: LogoutRequest, connection: Connection): Reply {
  const session = findSession(registry, request.token);
  if (typeof session !== 'object') return notLoggedIn(session);
  closeSession(registry, session);
  logEvent(registry, 'logout', `user=${session.username} from=${connection.remote}`);
  return { type: 'logged_out' };
}

/** An answer for a username or password we will not even try, or undefined if both are fine. */
function invalidCredentials(username: string, password: string): ErrorReply | undefined {
  if (!USERNAME_PATTERN.test(username)) return errorReply('invalid_username', USERNAME_RULE);
  if (password.length === 0) {
    return errorReply('invalid_password', 'the password must not be empty');
  }
  // A lone surrogate ("\ud800") has no UTF-8 form: hashing would turn it into U+FFFD, making
  // "\ud800", "\udfff" and "\ufffd" one password. Such text is refused instead.
  if (!(password as unknown as { isWellFormed(): boolean }).isWellFormed()) {
    return errorReply('invalid_password', 'the password must be well-formed Unicode text');
  }
  return undefined;
}

function storageFailed(registry: Registry, what: string, error: unknown): ErrorReply {
  logEvent(registry, 'storage_error', `during=${what} error=${JSON.stringify(errorText(error))}`);
  return errorReply('storage_unavailable',
    'the account storage is not available right now; try again later');
}

/** The first `count` of `names` (lower-case) that start with `prefix`, in order, and how many
 * start with it in all. The simple way is filter, sort, slice; but that sorts every online name
 * for every `list`. Instead one pass keeps the best `count` seen so far in a sorted array: a
 * name that sorts after all of them (most names, once the array is full) costs one comparison. */
function firstMatches(names: Iterable<string>, prefix: string, count: number):
  { first: string[]; total: number } {
  const first: string[] = [];
  let total = 0;
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    total += 1;
    if (first.length === count && name >= first[count - 1]) continue;
    let low = 0; // binary search for where the name goes
    let high = first.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (first[middle] < name) low = middle + 1;
      else high = middle;
    }
    first.splice(low, 0, name);
    if (first.length > count) first.pop();
  }
  return { first, total };
}

// ============================================================================================
// Sessions and the sweeper
// ============================================================================================

/** The live session a token belongs to; "replaced" if a login elsewhere ended it lately;
 * undefined if we do not know it (never issued, logged out, swept, or the registry restarted). */
function findSession(registry: Registry, token: string): LiveSession | 'replaced' | undefined {
  const session = registry.sessionsByToken.get(token);
  if (session !== undefined) return session;
  return registry.replacedTokens.has(token) ? 'replaced' : undefined;
}

/** Starts a session. The caller has checked the password. */
export function openSession(registry: Registry, username: string, host: string,
  chatPort: number, key?: string): LiveSession {
  const session: LiveSession = {
    // 128 random bits: unguessable, yet short (22 characters): the registry holds one per user.
    username, token: randomBytes(16).toString('base64url'), host, chatPort,
    id: randomBytes(16).toString('base64url'), helloKey: randomBytes(32), helloCounter: 0, key,
    lastHeardAt: sessionClock(registry), heardBefore: undefined, heardAfter: undefined,
  };
  registry.sessionsByToken.set(session.token, session);
  registry.sessionsByName.set(normaliseUsername(username), session);
  appendToQueue(registry, session);
  return session;
}

function closeSession(registry: Registry, session: LiveSession): void {
  // Only a live session is in the queue: closing one twice must not unlink it twice.
  if (!registry.sessionsByToken.delete(session.token)) return;
  registry.sessionsByName.delete(normaliseUsername(session.username));
  removeFromQueue(registry, session);
}

/** A login elsewhere ends `session`. Its token and its name are remembered for a while, so the
 * old client is told why (at most maxThrottleEntries, or the two of one session: the oldest are
 * forgotten first). */
function endReplacedSession(registry: Registry, session: LiveSession): void {
  closeSession(registry, session);
  const remembered = registry.replacedTokens;
  while (remembered.size > 0 && remembered.size + 2 > registry.settings.maxThrottleEntries) {
    remembered.delete(remembered.keys().next().value as string);
  }
  remembered.set(session.token, sessionClock(registry));
  remembered.set(session.id, sessionClock(registry)); // what its signed hellos name
}

/** A hello arrived: move the session to the newest end of the last-heard queue. */
export function refreshSession(registry: Registry, session: LiveSession, now: number): void {
  session.lastHeardAt = now;
  if (registry.newestSession === session) return;
  removeFromQueue(registry, session);
  appendToQueue(registry, session);
}

/** Removes every session silent for timeoutMs. Oldest first, stopping at the first live one.
 * Returns how many were removed. */
export function sweepExpiredSessions(registry: Registry, now: number): number {
  const { timeoutMs } = registry.settings;
  let removed = 0;
  while (now >= registry.stall.graceUntil) { // after a stall, clients get time to be heard
    const session = registry.oldestSession;
    if (session === undefined) break;
    const silentFor = now - session.lastHeardAt;
    if (silentFor < timeoutMs) break; // everyone after this was heard later
    closeSession(registry, session); // which makes the next session the oldest
    removed += 1;
    const seconds = (silentFor / 1000).toFixed(1);
    logEvent(registry, 'timeout', `user=${session.username} silent_for=${seconds}s`);
  }
  // Replaced tokens are kept two timeouts: by then the old client has sent a hello (it sends one
  // every heartbeatMs) or has been gone long enough to know by itself.
  for (const [token, replacedAt] of registry.replacedTokens) {
    if (now - replacedAt < 2 * timeoutMs) break; // oldest first: the rest are younger
    registry.replacedTokens.delete(token);
  }
  return removed;
}

// The last-heard queue. In a real program you might let the sweeper look at every session on
// every pass: fine for a class, but with a million people online that is a million checks a
// second to find the few who left. So the sessions are kept in the order they were last heard
// from, and a hello moves its session to the newest end in a few pointer updates. The sweeper
// looks only at the oldest end and stops at the first session still alive: a pass costs one
// step plus one per expired session, however many people are online.
// Why not a Map in insertion order, re-inserting on each hello? V8 leaves a hole for every
// deleted entry until it next rebuilds the table, and each new iterator walks the holes first.

/** Puts a session at the newest end of the last-heard queue. */
function appendToQueue(registry: Registry, session: LiveSession): void {
  session.heardBefore = registry.newestSession;
  session.heardAfter = undefined;
  if (registry.newestSession === undefined) registry.oldestSession = session;
  else registry.newestSession.heardAfter = session;
  registry.newestSession = session;
}

/** Takes a session out of the last-heard queue and joins its two neighbours. */
function removeFromQueue(registry: Registry, session: LiveSession): void {
  if (session.heardBefore === undefined) registry.oldestSession = session.heardAfter;
  else session.heardBefore.heardAfter = session.heardAfter;
  if (session.heardAfter === undefined) registry.newestSession = session.heardBefore;
  else session.heardAfter.heardBefore = session.heardBefore;
  session.heardBefore = undefined;
  session.heardAfter = undefined;
}

// ============================================================================================
// Accounts
// ============================================================================================
//
// A password is never stored. We store scrypt(password, salt): a slow, memory-hard hash, with a
// random salt per user so two people with the same password get different hashes and a stolen
// table cannot be attacked with one precomputed dictionary. Node runs scrypt on its thread pool,
// so hashing (slow on purpose: tens of milliseconds) does not block the event loop and other
// clients keep being served.

/** One account as stored. */
export type StoredUser = {
  /** Normalised (lower-case) name: the unique key. */
  name: string;
  /** The name as registered. */
  displayName: string;
  /** scrypt(password, salt), hex. */
  passwordHash: string;
  /** 16 random bytes, hex. */
  salt: string;
};

/** Where accounts are kept. Every method may reject; callers turn that into storage_unavailable. */
export type UserStore = {
  /** One line for the start-up log saying where accounts live. */
  readonly description: string;
  /** What `logged_in` tells clients: "mongodb" if accounts outlive a restart, "memory" if not. */
  readonly storage: Storage;
  /** Adds the user unless the name is taken, or 'similar': another name has its skeleton
   * (nameSkeleton, in "Limits"). Must be atomic: of two racing calls for one name, or for two
   * look-alike names, exactly one gets 'added'. */
  addUser(user: StoredUser): Promise<'added' | 'taken' | 'similar'>;
  findUser(name: string): Promise<StoredUser | null>;
  /** Whether registering `name` would be 'taken', 'similar', or 'free' (for check_username). */
  nameInUse(name: string): Promise<'taken' | 'similar' | 'free'>;
  /** The key of the device proofs, for a store that several registries share, so that each
   * accepts the others' proofs. Without it the registry makes its own at start. */
  readonly deviceSecret?: Uint8Array;
  /** A secure registry's long-term key kept with the accounts, so every registry sharing them
   * is the same registry to clients (MongoDB; the memory store has none). */
  registryKey?(): Promise<KeyPair>;
  close(): Promise<void>;
};

function sharedKey(store: UserStore): Promise<KeyPair> {
  if (store.registryKey === undefined) throw new Error('this account store keeps no key');
  return store.registryKey();
}

const SCRYPT_KEY_BYTES = 64;

/** scrypt(password, salt). The handlers call it through their ticket (askToHash, in "Limits"),
 * which first waits for a turn in the hasher's line. */
function hashPassword(password: string, salt: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password, salt, SCRYPT_KEY_BYTES, (error, key) => {
      if (error) reject(error);
      else resolve(key);
    });
  });
}

/** Accounts in a Map: gone when the process ends. Fine for a demo, a class, or the tests. */
export function createMemoryUserStore(): UserStore {
  const users = new Map<string, StoredUser>();
  const skeletons = new Set<string>();
  const inUse = (name: string) => users.has(name) ? 'taken'
    : skeletons.has(nameSkeleton(name)) ? 'similar' : 'free';
  return {
    description: 'accounts are kept in memory; set MONGODB_URI to keep them in MongoDB',
    storage: 'memory',
    async addUser(user) {
      // No await between the check and the set: nothing else can run in between, so this is
      // atomic in JavaScript's single-threaded world.
      const found = inUse(user.name);
      if (found !== 'free') return found;
      users.set(user.name, { ...user });
      skeletons.add(nameSkeleton(user.name));
      return 'added';
    },
    async findUser(name) {
      const user = users.get(name);
      return user ? { ...user } : null;
    },
    async nameInUse(name) {
      return inUse(name);
    },
    async close() {},
  };
}

/** Accounts in MongoDB's `users` collection (database: the one named in the URI). A unique index
 * on `name` is what makes registration race-free: the database itself refuses the second
 * insert; one on `skeleton` does the same for look-alike names (sparse: accounts made before
 * it have none). The device proofs' key is kept in the `registry` collection. */
export async function openMongoUserStore(uri: string, timeoutMs: number): Promise<UserStore> {
  const { MongoClient: Client, MongoServerError } = await import('mongodb');
  const timeouts = { serverSelectionTimeoutMS: timeoutMs, connectTimeoutMS: timeoutMs };
  const client: MongoClient = new Client(uri, timeouts);
  let users: Collection<StoredUser & { skeleton?: string }>;
  let deviceSecret: Uint8Array;
  try {
    await client.connect();
    users = client.db().collection('users');
    await users.createIndex({ name: 1 }, { unique: true });
    await users.createIndex({ skeleton: 1 }, { unique: true, sparse: true });
    // The first registry to start writes a key; every one that shares the database reads it.
    const secrets = client.db().collection<{ _id: string; secret: string }>('registry');
    const mine = { $setOnInsert: { secret: randomBytes(32).toString('hex') } };
    await secrets.updateOne({ _id: 'device-secret' }, mine, { upsert: true }).catch(() => {});
    const stored = await secrets.findOne({ _id: 'device-secret' });
    if (stored === null) throw new Error('cannot keep the device key in the registry collection');
    deviceSecret = Buffer.from(stored.secret, 'hex');
  } catch (error) {
    await client.close().catch(() => {});
    throw new Error(`cannot use MongoDB at ${redactUri(uri)}: ${errorText(error)}`);
  }
  const DUPLICATE_KEY = 11000;
  return {
    description: `accounts are kept in MongoDB at ${redactUri(uri)}`,
    storage: 'mongodb',
    deviceSecret,
    async addUser(user) {
      try {
        await users.insertOne({ ...user, skeleton: nameSkeleton(user.name) });
        return 'added';
      } catch (error) {
        if (!(error instanceof MongoServerError && error.code === DUPLICATE_KEY)) throw error;
        return await users.findOne({ name: user.name }) ? 'taken' : 'similar';
      }
    },
    async findUser(name) {
      return users.findOne({ name }, { projection: { _id: 0, skeleton: 0 } });
    },
    async nameInUse(name) {
      if (await users.findOne({ name })) return 'taken';
      return await users.findOne({ skeleton: nameSkeleton(name) }) ? 'similar' : 'free';
    },
    async registryKey() {
      // The first registry to start stores a new key; every later one reads that one. Two that
      // start at once both try to insert; the database keeps one, and both read it back.
      const keys = client.db().collection<{ _id: string; privateKey: string }>('registry');
      const privateKey = generateKeyPair().privateKey.toString('base64');
      await keys.insertOne({ _id: 'identity', privateKey }).catch((error) => {
        if (!(error instanceof MongoServerError && error.code === DUPLICATE_KEY)) throw error;
      });
      const stored = await keys.findOne({ _id: 'identity' });
      if (stored === null) throw new Error('MongoDB lost the registry key it just stored');
      return keyPairFromPrivate(Buffer.from(stored.privateKey, 'base64'));
    },
    async close() {
      await client.close();
    },
  };
}

/** "mongodb://bob:secret@host/db" → "mongodb://bob:***@host/db": URIs go in logs, passwords
 * don't. */
function redactUri(uri: string): string {
  return uri.replace(/\/\/([^:@/]*):([^@/]*)@/, '//$1:***@');
}

// ============================================================================================
// Limits
// ============================================================================================
//
// Everything above is the registry working for people who use it as meant. This part keeps one
// host from taking it from everyone else: caps on connections (in all, and per address, and who
// makes room when they are full), idle connections closed, at most MAX_QUEUED_REQUESTS read
// ahead of their answers, a fair line for the password hasher, counts of failed logins and
// registrations, proofs that let a known device past them, a clock that does not count the
// registry's own stalls, and look-alike names. Each says what it defends against; the numbers
// are in LIMITS, their flags below it, and docs/security.md lists them.

/** The limits' defaults, written once like DEFAULTS: startServer() and --help read them here. */
const LIMITS = {
  maxConnections: 1000,
  /** Enough for a classroom behind one NAT, where every client opens a connection per request.
   * Unless given, also at most half of maxConnections (see resolveLimits). */
  maxConnectionsPerAddress: 64,
  idleMs: 60_000,
  /** Accounts one address may create per registrationWindowMs. */
  maxRegistrationsPerAddress: 60,
  registrationWindowMs: 60_000,
  /** Failed logins before a wait of loginCooldownMs, counted three ways (see "Failed logins and
   * registrations"): one user at one address, one address, one user. A device with a proof
   * (see "Device proofs") is allowed as many as one user at one address. */
  maxFailedLoginsPerUserAtAddress: 5,
  maxFailedLoginsPerAddress: 20,
  maxFailedLoginsPerUser: 100,
  loginCooldownMs: 30_000,
  /** Logins to one account per loginWindowMs, with a device proof and (apart) without: people
   * do not log in dozens of times a minute. */
  maxLoginsPerUser: 20,
  loginWindowMs: 60_000,
  /** Password checks one address may have waiting or running at once: a classroom of 30
   * logging in at the same moment fits. */
  maxHashesPerAddress: 32,
  /** Entries kept in each throttle table; the oldest is forgotten when a new one needs room. */
  maxThrottleEntries: 10_000,
};
type Limits = typeof LIMITS;

/** The limits' flags, in two groups for --help (see NumberFlag in protocol.ts). */
const CONNECTION_LIMIT_FLAGS: ReadonlyArray<NumberFlag<keyof Limits>> = [
  ['max-connections', 'maxConnections', 1, 1_000_000, 'TCP connections open at once'],
  ['max-connections-per-address', 'maxConnectionsPerAddress', 1, 1_000_000,
    'from one address; unset: ≤ half'],
  ['idle-ms', 'idleMs', 1, 86_400_000, 'hang up when idle this long'],
];
const PASSWORD_LIMIT_FLAGS: ReadonlyArray<NumberFlag<keyof Limits>> = [
  ['max-registrations-per-address', 'maxRegistrationsPerAddress', 1, 1_000_000,
    'accounts per address per minute'],
  ['max-failed-logins-per-user-at-address', 'maxFailedLoginsPerUserAtAddress', 1, 1_000_000,
    'failures: a user at an address'],
  ['max-failed-logins-per-address', 'maxFailedLoginsPerAddress', 1, 1_000_000,
    'failures: an address, any user'],
  ['max-failed-logins-per-user', 'maxFailedLoginsPerUser', 1, 1_000_000,
    'failures: a user, any address'],
  ['login-cooldown-ms', 'loginCooldownMs', 1, 86_400_000, 'window and wait for failures'],
  ['max-logins-per-user', 'maxLoginsPerUser', 1, 1_000_000, 'logins to an account per minute'],
  ['max-hashes-per-address', 'maxHashesPerAddress', 1, 1_000_000,
    'waiting or running, per address'],
];

function resolveLimits(options: ServerOptions): Limits {
  const limits = given(LIMITS, options);
  // Unless told otherwise, one address may hold at most half of the connection slots: with
  // --max-connections 50, hosts elsewhere still find 25 free whatever one host does.
  if (options.maxConnectionsPerAddress === undefined) {
    const half = Math.max(1, Math.floor(limits.maxConnections / 2));
    limits.maxConnectionsPerAddress = Math.min(LIMITS.maxConnectionsPerAddress, half);
  }
  return limits;
}

/** What the limits keep on the Registry. */
type LimitState = {
  /** The open connections of each address. */
  connectionsByAddress: Map<string, Set<Connection>>;
  /** Password hashes running, and the connections waiting for a turn (the hasher's line). */
  hashing: Hashing;
  /** Attempts counted against the throttles (see "Failed logins and registrations"). */
  failedLoginsByUserAtAddress: AttemptCounts;
  failedLoginsByAddress: AttemptCounts;
  failedLoginsByUser: AttemptCounts;
  failedLoginsByDevice: AttemptCounts;
  loginsByUser: AttemptCounts;
  registrationsByAddress: AttemptCounts;
  /** The key of the device proofs (see "Device proofs"). */
  deviceSecret: Uint8Array;
  /** What the session clock knows about the registry's own stalls (see sessionClock). */
  stall: { lastReadingAt: number; stalledMs: number; graceUntil: number };
};

function createLimitState(limits: Limits, store: UserStore): LimitState {
  const counts = (limit: number, keeps: HashOutcome[], refusal: string,
    windowMs = limits.loginCooldownMs): AttemptCounts =>
    ({ entries: new Map(), limit, windowMs, keeps, refusal });
  const failures = (limit: number, whose: string) =>
    counts(limit, ['failed'], `too many failed logins ${whose}`);
  return {
    connectionsByAddress: new Map(),
    hashing: { running: 0, lanes: [new Map(), new Map()], byAddress: new Map() },
    failedLoginsByUserAtAddress: failures(limits.maxFailedLoginsPerUserAtAddress,
      'for this user from your address'),
    failedLoginsByAddress: failures(limits.maxFailedLoginsPerAddress, 'from your address'),
    failedLoginsByUser: failures(limits.maxFailedLoginsPerUser, 'for this user'),
    failedLoginsByDevice: failures(limits.maxFailedLoginsPerUserAtAddress, 'from this device'),
    loginsByUser: counts(limits.maxLoginsPerUser, ['succeeded'],
      'too many logins to this account lately', limits.loginWindowMs),
    registrationsByAddress: counts(limits.maxRegistrationsPerAddress, ['succeeded', 'failed'],
      'too many registrations from your address', limits.registrationWindowMs),
    deviceSecret: store.deviceSecret ?? randomBytes(32),
    stall: { lastReadingAt: performance.now(), stalledMs: 0, graceUntil: 0 },
  };
}

/** What the limits keep on each Connection. */
type ConnectionLimits = {
  /** performance.now() when it connected or last had a request answered that it was allowed
   * to make (see noteActivity): a connection that has none for idleMs is closed. */
  lastRequestAt: number;
  /** The timer that checks for that (see watchIdle). */
  idleTimer: ReturnType<typeof setTimeout> | undefined;
  /** Its place in the line for the password hasher, while it waits there (see HashTurn). */
  hashTurn: HashTurn | undefined;
};

function connectionLimits(): ConnectionLimits {
  return { lastRequestAt: performance.now(), idleTimer: undefined, hashTurn: undefined };
}

/** Requests read ahead of their answers on one connection before we stop reading from it. (The
 * queue can briefly hold more: the lines of the one read, at most 64 KiB, that crossed it.) */
const MAX_QUEUED_REQUESTS = 64;

// ---- Connections ----

/** True if a new connection from `address` may come in. A plain server accepts everyone; this
 * one refuses a connection over its address's cap, or over the total when no one can make room
 * (see makeRoom), with one line saying why, and hangs up. */
function admitConnection(registry: Registry, socket: net.Socket, address: string): boolean {
  const { maxConnections, maxConnectionsPerAddress: perAddress } = registry.settings;
  let refusal: string;
  if ((registry.connectionsByAddress.get(address)?.size ?? 0) >= perAddress) {
    refusal = `your address already has ${perAddress} connections open to the registry; ` +
      'close one or try again later';
  } else if (registry.connections.size >= maxConnections && !makeRoom(registry, address)) {
    refusal = `the registry has ${maxConnections} connections open; try again later`;
  } else {
    return true;
  }
  // Keep reading (and discarding) until the client closes: closing a socket with unread input
  // sends a reset, which could destroy our explanation before the client reads it.
  socket.end(encodeLine(errorReply('too_many_connections', refusal)));
  socket.resume();
  socket.setTimeout(2000, () => socket.destroy());
  return false;
}

/** The table is full and `address` knocks. A plain server would refuse it; but then whoever
 * holds the slots (many addresses, each under its cap, each sending a request now and then)
 * keeps everyone else out. So an address holding fewer connections than the one holding most
 * takes the place of that one's idlest connection (never one whose request is being worked
 * on). Holding slots then only evicts the holder's own. Returns true if a slot was freed. */
function makeRoom(registry: Registry, address: string): boolean {
  let fullest: Set<Connection> | undefined;
  for (const held of registry.connectionsByAddress.values()) {
    if (held.size > (fullest?.size ?? 0)) fullest = held;
  }
  const mine = registry.connectionsByAddress.get(address)?.size ?? 0;
  if (fullest === undefined || mine + 1 >= fullest.size) return false;
  let idlest: Connection | undefined;
  for (const connection of fullest) {
    if (connection.busy) continue;
    if (connection.lastRequestAt < (idlest?.lastRequestAt ?? Infinity)) idlest = connection;
  }
  if (idlest === undefined) return false;
  const idleMs = Math.round(performance.now() - idlest.lastRequestAt);
  logEvent(registry, 'evict', `from=${idlest.remote} idle_ms=${idleMs} held=${fullest.size} ` +
    `for=${address}`);
  forgetConnection(registry, idlest);
  const { socket } = idlest;
  socket.removeAllListeners('data'); // what it sends now is not answered
  socket.end(encodeLine(errorReply('too_many_connections',
    'the registry is full: this idle connection was closed to make room for another address')));
  setTimeout(() => socket.destroy(), 2000);
  return true;
}

/** A connection came in: count it for its address and watch it for idleness. */
function countConnection(registry: Registry, connection: Connection): void {
  const { connectionsByAddress } = registry;
  const held = connectionsByAddress.get(connection.address);
  if (held === undefined) connectionsByAddress.set(connection.address, new Set([connection]));
  else held.add(connection);
  watchIdle(registry, connection);
}

/** A connection closed, or was evicted: uncount it, stop its idle timer, and take it out of the
 * hasher's line. (Once only: an evicted connection closes later.) */
function forgetConnection(registry: Registry, connection: Connection): void {
  if (!registry.connections.delete(connection)) return;
  const held = registry.connectionsByAddress.get(connection.address)!;
  held.delete(connection);
  if (held.size === 0) registry.connectionsByAddress.delete(connection.address);
  clearTimeout(connection.idleTimer);
  dropHashTurn(connection);
}

/** Adds `change` to a per-address count; a count that reaches 0 leaves the Map, so addresses
 * that have gone cost nothing. */
function addToCount(counts: Map<string, number>, key: string, change: number): void {
  const count = (counts.get(key) ?? 0) + change;
  if (count > 0) counts.set(key, count);
  else counts.delete(key);
}

/** An answer was sent: was the request activity, which keeps the connection open? A plain
 * server would say yes to every request. But then a made-up token, refused at no cost to its
 * sender, would hold a slot forever. So a request refused for who is asking (a token that is
 * not live, a throttle) or unreadable is not activity. */
function noteActivity(connection: Connection, reply: Reply): void {
  const refused = reply.type === 'error' && (reply.code === 'not_logged_in' ||
    reply.code === 'too_many_attempts' || reply.code === 'bad_request');
  if (!refused) connection.lastRequestAt = performance.now();
}

/** Closes the connection once it has had no request answered as activity for idleMs (see
 * noteActivity): neither silence, blank lines, garbage, made-up tokens nor a line dribbled a
 * byte at a time keeps a slot. A connection whose request we are still working on (hashing,
 * storage) is ours to wait for, not idle. One timer per connection, re-armed at most once per
 * idleMs: nothing is done per byte or per request. */
function watchIdle(registry: Registry, connection: Connection): void {
  const { idleMs } = registry.settings;
  const check = () => {
    const quietMs = performance.now() - connection.lastRequestAt;
    if (!connection.busy && quietMs >= idleMs) {
      connection.socket.destroy();
      return;
    }
    const nextCheckMs = connection.busy ? idleMs : idleMs - quietMs;
    connection.idleTimer = setTimeout(check, Math.max(1, Math.ceil(nextCheckMs)));
  };
  connection.idleTimer = setTimeout(check, idleMs);
}

// ---- The registry's own stalls ----
//
// The plain sweeper measures silence with performance.now(). But when the registry itself
// cannot run (SIGSTOP, a VM migrated, a laptop lid, a long garbage collection), the clock goes
// on: on waking, everyone looks silent, and the hellos sent meanwhile were dropped by a full
// socket buffer or are still waiting behind the sweeper. So sessions use sessionClock(), which
// leaves out the time the registry could not run: the sweeper reads it at least every
// sweepEveryMs, so a gap between two readings much longer than that is a stall. After one, the
// sweeper also waits two heartbeats, so clients that are alive are heard before it looks.

/** How often the sweeper runs: often enough that a session goes within a second of its
 * deadline (sooner with short ones). */
function sweepEveryMs(settings: Settings): number {
  return Math.max(10, Math.min(1000, Math.floor(settings.timeoutMs / 4)));
}

/** performance.now(), less the time the registry spent stalled. */
function sessionClock(registry: Registry): number {
  const { stall, settings } = registry;
  const now = performance.now();
  const lateMs = now - stall.lastReadingAt - sweepEveryMs(settings);
  stall.lastReadingAt = now;
  if (lateMs > Math.max(sweepEveryMs(settings), 1000)) {
    stall.stalledMs += lateMs;
    stall.graceUntil = now - stall.stalledMs + 2 * settings.heartbeatMs;
    logEvent(registry, 'stall', `stalled_for=${(lateMs / 1000).toFixed(1)}s ` +
      `grace_ms=${2 * settings.heartbeatMs}`);
  }
  return now - stall.stalledMs;
}

// ---- The password hasher's line ----
//
// scrypt runs on libuv's thread pool (four threads), so a burst of logins could keep every core
// busy hashing and leave none for the event loop, which answers everyone else. So at most
// MAX_HASHES_AT_ONCE hash at once, one core is always left free, and the rest wait in line.
//
// The line is fair between addresses: each address has its own queue and the addresses take
// turns, one hash each. One host sending thousands of requests delays someone elsewhere by at
// most one of its hashes, not by all of them. An address may have at most maxHashesPerAddress
// requests admitted (waiting or hashing); more are answered at once with too_many_attempts. A
// request whose connection closes while it waits leaves the line unhashed: a flood of requests
// on connections closed right after writing costs us next to nothing.
//
// Logins with a device proof have a lane of their own, served first: right passwords from many
// addresses (an attacker logging in to their own accounts) would otherwise make everyone wait.
// What keeps that lane short is that a proof comes only from a login, and the logins to one
// account are bounded (maxLoginsPerUser); nobody else's request can enter it.

const MAX_HASHES_AT_ONCE = Math.max(1, os.availableParallelism() - 1);

/** A connection's place in the hasher's line; `start(true)` gives it the turn, `start(false)`
 * drops it. */
type HashTurn = { connection: Connection; lane: Lane; start: (go: boolean) => void };

/** Turns waiting, by address; the first address in the Map goes next. At most one turn per
 * connection, since a connection waits for each answer. */
type Lane = Map<string, HashTurn[]>;

type Hashing = {
  /** Hashes running now (at most MAX_HASHES_AT_ONCE). */
  running: number;
  /** The device proofs' lane, then everyone's: a lane is served only when those before it are
   * empty. */
  lanes: [Lane, Lane];
  /** Requests admitted without a proof (waiting or hashing) per address: what
   * maxHashesPerAddress limits. */
  byAddress: Map<string, number>;
};

/** hashPassword() once the hasher has a turn for this connection, or undefined if the connection
 * closed while it waited: nobody is left to read the answer, so the work is dropped. */
async function hashInTurn(registry: Registry, connection: Connection, lane: Lane,
  password: string, salt: Buffer): Promise<Buffer | undefined> {
  if (!(await waitForHashTurn(registry, connection, lane))) return undefined;
  try {
    return await hashPassword(password, salt);
  } finally {
    passHashTurn(registry);
  }
}

/** Resolves true when this connection may hash, false if it closed while it waited. */
function waitForHashTurn(registry: Registry, connection: Connection, lane: Lane):
  Promise<boolean> {
  const hashing = registry.hashing;
  if (hashing.running < MAX_HASHES_AT_ONCE) {
    hashing.running += 1;
    return Promise.resolve(true);
  }
  return new Promise((start) => {
    const turn: HashTurn = { connection, lane, start };
    connection.hashTurn = turn;
    const turns = lane.get(connection.address);
    if (turns === undefined) lane.set(connection.address, [turn]);
    else turns.push(turn);
  });
}

/** A hash finished: its slot passes straight to the first address in the first lane with
 * anyone in it; that address then goes to the back of its lane if it has more waiting. */
function passHashTurn(registry: Registry): void {
  for (const lane of registry.hashing.lanes) {
    for (;;) {
      const next = lane.entries().next();
      if (next.done) break;
      const [address, turns] = next.value;
      const turn = turns.shift()!;
      lane.delete(address);
      if (turns.length > 0) lane.set(address, turns);
      turn.connection.hashTurn = undefined;
      if (turn.connection.socket.destroyed) {
        turn.start(false); // closed but not yet counted out: drop it and look again
        continue;
      }
      turn.start(true);
      return;
    }
  }
  registry.hashing.running -= 1;
}

/** The connection closed: if it was waiting for the hasher, it leaves the line unhashed. */
function dropHashTurn(connection: Connection): void {
  const turn = connection.hashTurn;
  if (turn === undefined) return;
  connection.hashTurn = undefined;
  const turns = turn.lane.get(connection.address) ?? [];
  turns.splice(turns.indexOf(turn), 1);
  if (turns.length === 0) turn.lane.delete(connection.address);
  turn.start(false);
}

// ---- Failed logins and registrations ----
//
// Without limits, anyone could try passwords as fast as scrypt allows, or fill our memory with
// accounts. Each limit is a table of counts; a key whose count reaches its limit waits out a
// cooldown, refused without hashing. An attempt counts once its outcome is known (a wrong
// password counts as a failure, a right one does not). While it is being checked it holds room
// under its keys: a request that finds no room waits for the checks ahead of it, so a burst of
// guesses sent at once cannot all slip in before the first fails, and a burst of right
// passwords all get in, in turn.
//
// Failed logins are counted three ways, so that guessing is slowed wherever it comes from while
// nobody can lock a user out knowing only the name:
//   - per user at one address (5 per 30 s): a person mistyping, or one host guessing one name.
//     It does not stop the same user from another address;
//   - per address (20 per 30 s): one host guessing many names;
//   - per user over all addresses (100 per 30 s): guessing spread over many hosts.
// A success clears the user's count at that address, and nothing else: an attacker's correct
// login to their own account does not clear their failures against other people.
//
// A login with a device proof (see "Device proofs") is judged by the proof's own failures
// instead, and does not wait for an address's share of the hasher: a student who has logged in
// before is not refused because a classmate behind the same address is guessing, nor the owner
// of an account because a botnet is. Right passwords count against the account's logins per
// minute: those with a proof, and those without, each on their own (so guesses, which hold room
// among those without while they are checked, never keep a proof waiting).

/** One key's recent attempts. */
type AttemptCount = {
  /** Attempts counted since `since` (of the outcomes the table keeps). */
  attempts: number;
  /** Attempts admitted under this key and not yet settled: they hold room (see waitForRoom). */
  pending: number;
  /** performance.now() of the first attempt counted; the count is forgotten a window later. */
  since: number;
  /** performance.now() until which attempts are refused, or 0. */
  blockedUntil: number;
  /** Requests waiting for room under this key: each looks again when an attempt settles. */
  waiting: Array<() => void>;
};

/** A table of counts with its limit: at most `limit` attempts per `windowMs` for one key. */
type AttemptCounts = { entries: Map<string, AttemptCount>; limit: number; windowMs: number;
  /** The outcomes that count: failures, successes, or both. */
  keeps: HashOutcome[];
  /** What a refusal says, before the wait. */
  refusal: string };

/** A count an admitted request holds room in while it is checked, and settles in: a table and a
 * key in it. */
type Charge = [counts: AttemptCounts, key: string];

/** How a handler settles its ticket, once: 'failed' (a wrong password; a name taken),
 * 'succeeded' (logged in; registered) or 'void' (the client left, or the storage failed). */
type HashOutcome = 'failed' | 'succeeded' | 'void';

/** askToHash()'s answer: a refusal to send back, or the ticket to hash with and then settle. */
type HashTicket = { refused: ErrorReply } | { refused: undefined;
  hash(password: string, salt: Buffer): Promise<Buffer | undefined>;
  settle(outcome: HashOutcome): void };

/** The one guard in front of the hasher. If a count for this request is at its limit, or its
 * address has its share of the hasher already, the answer is a too_many_attempts refusal that
 * says which (with the wait). Otherwise the request waits for room under its keys and gets a
 * ticket: hash() waits for a turn in the hasher's line; settle() must be called once, when the
 * handler is done (extra calls are ignored). */
async function askToHash(registry: Registry, connection: Connection,
  purpose: 'login' | 'register', username: string, device?: string): Promise<HashTicket> {
  const { address } = connection;
  const name = normaliseUsername(username);
  const userAtAddress = `${name} ${address}`;
  const charges: Charge[] = purpose === 'register'
    ? [[registry.registrationsByAddress, address]]
    : device !== undefined
    ? [[registry.failedLoginsByDevice, device], [registry.loginsByUser, name]]
    : [[registry.failedLoginsByUserAtAddress, userAtAddress],
      [registry.failedLoginsByAddress, address], [registry.failedLoginsByUser, name],
      [registry.loginsByUser, `${name} new-device`]];
  const share = device === undefined; // a device has its own lane, and no address share
  const refuse = (refused: ErrorReply) => {
    logEvent(registry, `${purpose}_throttled`, `user=${username} from=${connection.remote}`);
    return { refused };
  };
  const refused = throttleRefusal(charges, performance.now()) ??
    (share ? shareRefusal(registry, address) : undefined);
  if (refused !== undefined) return refuse(refused);
  if (share) addToCount(registry.hashing.byAddress, address, +1);
  const room = await waitForRoom(registry, connection, charges);
  if (!Array.isArray(room)) {
    if (share) addToCount(registry.hashing.byAddress, address, -1);
    return room === CONNECTION_GONE ? { refused: room } : refuse(room);
  }
  let settled = false;
  return {
    refused: undefined,
    hash: (password, salt) => hashInTurn(registry, connection,
      registry.hashing.lanes[share ? 1 : 0], password, salt),
    settle(outcome) {
      if (settled) return;
      settled = true;
      if (share) addToCount(registry.hashing.byAddress, address, -1);
      for (const entry of room) entry.pending -= 1;
      const now = performance.now();
      for (const [counts, key] of charges) {
        if (counts.keeps.includes(outcome)) countAttempt(registry, counts, key, now);
      }
      if (purpose === 'login' && outcome === 'succeeded') {
        registry.failedLoginsByUserAtAddress.entries.delete(userAtAddress);
      }
      room.forEach(wakeWaiting);
    },
  };
}

/** Resolves once every key of this request has room (failures and checks under way below its
 * limit), with the counts it then holds room in; or with a refusal, if a key became blocked
 * meanwhile or the connection closed. */
function waitForRoom(registry: Registry, connection: Connection, charges: Charge[]):
  Promise<ErrorReply | AttemptCount[]> {
  return new Promise((resolve) => {
    const look = () => {
      const now = performance.now();
      const refused = connection.socket.destroyed ? CONNECTION_GONE : throttleRefusal(charges, now);
      if (refused !== undefined) return resolve(refused);
      const held = charges.map(([counts, key]) => countFor(registry, counts, key, now));
      const full = held.find((entry, i) => entry.attempts + entry.pending >= charges[i][0].limit);
      if (full !== undefined) return full.waiting.push(look);
      for (const entry of held) entry.pending += 1;
      resolve(held);
    };
    look();
  });
}

/** Lets the requests waiting under a key look again (those that still find no room wait on). */
function wakeWaiting(entry: AttemptCount): void {
  const waiting = entry.waiting;
  entry.waiting = [];
  for (const look of waiting) look();
}

/** The too_many_attempts answer for a request that one of its counts does not let through (the
 * longest wait, and why), or undefined. */
function throttleRefusal(charges: Charge[], now: number): ErrorReply | undefined {
  let waitMs = 0;
  let why = '';
  for (const [counts, key] of charges) {
    const blockedMs = (currentCount(counts, key, now)?.blockedUntil ?? 0) - now;
    if (blockedMs > waitMs) [waitMs, why] = [blockedMs, counts.refusal];
  }
  if (waitMs <= 0) return undefined;
  return errorReply('too_many_attempts', `${why}; try again in ${Math.ceil(waitMs / 1000)} s`);
}

/** The too_many_attempts answer for an address that has its share of the hasher, or undefined. */
function shareRefusal(registry: Registry, address: string): ErrorReply | undefined {
  const share = registry.settings.maxHashesPerAddress;
  if ((registry.hashing.byAddress.get(address) ?? 0) < share) return undefined;
  return errorReply('too_many_attempts',
    `the registry is already checking ${share} passwords from your address; try again in 1 s`);
}

/** The key's count, forgetting its attempts if they are older than the window and not blocking
 * anything (the entry stays while requests hold or wait for room under it). */
function currentCount(counts: AttemptCounts, key: string, now: number): AttemptCount | undefined {
  const entry = counts.entries.get(key);
  if (entry && now - entry.since > counts.windowMs && now >= entry.blockedUntil) {
    if (entry.pending === 0 && entry.waiting.length === 0) {
      counts.entries.delete(key); // old attempts are forgiven
      return undefined;
    }
    Object.assign(entry, { attempts: 0, since: now, blockedUntil: 0 });
  }
  return entry;
}

/** The key's count, made if it has none. */
function countFor(registry: Registry, counts: AttemptCounts, key: string,
  now: number): AttemptCount {
  let entry = currentCount(counts, key, now);
  if (entry === undefined) {
    // The table is bounded: when full, the oldest key is forgotten to make room (those waiting
    // under it look again, soon).
    if (counts.entries.size >= registry.settings.maxThrottleEntries) {
      const [oldestKey, oldest] = counts.entries.entries().next().value!;
      counts.entries.delete(oldestKey);
      queueMicrotask(() => wakeWaiting(oldest));
    }
    entry = { attempts: 0, pending: 0, since: now, blockedUntil: 0, waiting: [] };
    counts.entries.set(key, entry);
  }
  return entry;
}

function countAttempt(registry: Registry, counts: AttemptCounts, key: string, now: number): void {
  const entry = countFor(registry, counts, key, now);
  entry.attempts += 1;
  if (entry.attempts >= counts.limit) entry.blockedUntil = now + counts.windowMs;
}

// ---- Device proofs ----
//
// Counting failures per address and per user slows guessing, but it also lets a guesser make
// the right password wait: anyone behind the same address as you, or a botnet guessing your
// name. So a login that succeeds gets a proof that this device logged in as this user (the
// approach OWASP calls device cookies): `<id>.<mac>`, where the mac is an HMAC of the user and
// the id under a key only the registry knows. The client keeps it and sends it with its next
// logins, which are then judged by the proof's own failures. Checking one costs an HMAC and
// keeps nothing; a proof for another user, malformed or forged counts as none, silently. A
// stolen proof lets its thief past the address and user counts for that one account, still
// needing the password, at most maxFailedLoginsPerUserAtAddress failures per cooldown.
//
// On a registry with a key, the login's handshake proved the user's identity key, and the
// proof is bound to it too: one mechanism for both, and a proof copied without the key file
// that goes with it counts as none.

/** The id of `proof` if it proves a login as `name` here (with the identity key `key`, on a
 * registry with a key), else undefined. */
function provenDevice(registry: Registry, name: string, proof: string | undefined,
  key = ''): string | undefined {
  const [id, mac, extra] = (proof ?? '').split('.');
  if (id === undefined || mac === undefined || extra !== undefined) return undefined;
  const expected = Buffer.from(deviceMac(registry, name, id, key), 'base64url');
  const given = Buffer.from(mac, 'base64url');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
  return id;
}

/** The proof for `name` on the device `id` (a new device when undefined). */
function deviceProof(registry: Registry, name: string, key = '', id?: string): string {
  const device = id ?? randomBytes(16).toString('base64url');
  return `${device}.${deviceMac(registry, name, device, key)}`;
}

function deviceMac(registry: Registry, name: string, id: string, key: string): string {
  return createHmac('sha256', registry.deviceSecret).update(`${name}\n${id}\n${key}`)
    .digest('base64url');
}

// ---- Look-alike names ----
//
// A plain registry would only refuse a name already taken. But `aIice` (a capital i) next to
// `alice` is taken for her by whoever it calls. So a new name is compared by its skeleton, where
// letters that look alike are one letter: a name whose skeleton an account has is refused. It
// also refuses some honest names (`al1` when `ali` exists); a name is cheap to change.

/** The name with case folded, leading and trailing `.`, `_`, `-` dropped, `rn` as `m`, and
 * I/l/1 and O/0 as one letter each. */
export function nameSkeleton(name: string): string {
  return name.toLowerCase().replace(/^[._-]+|[._-]+$/g, '').replace(/rn/g, 'm')
    .replace(/[il1]/g, 'l').replace(/0/g, 'o');
}

// ============================================================================================
// Command line
// ============================================================================================

/** The whole-number flags of the lesson (see NumberFlag in protocol.ts; the limits' are in
 * "Limits"). --help is printed from these tables and the defaults, so the text and the program
 * cannot disagree. */
const NUMBER_FLAGS: ReadonlyArray<NumberFlag<Exclude<keyof typeof DEFAULTS, 'host'>>> = [
  ['tcp-port', 'tcpPort', 0, 65535, 'TCP port for requests'],
  ['udp-port', 'udpPort', 0, 65535, 'UDP port for heartbeats'],
  ['heartbeat-ms', 'heartbeatMs', 1, 3_600_000, 'how often clients say hello'],
  ['timeout-ms', 'timeoutMs', 1, 86_400_000, 'drop a user silent this long'],
];
const LIMIT_FLAGS = [...CONNECTION_LIMIT_FLAGS, ...PASSWORD_LIMIT_FLAGS];

const USAGE = `Usage: server.ts [options] [limits]

The p2p-chat registry: accounts, who is online, and introductions between peers.

Options:
${usageLine('--host ADDRESS', `address to listen on (default ${DEFAULTS.host})`)}
${numberFlagsUsage(NUMBER_FLAGS, DEFAULTS)}
${usageLine('--key-file PATH', 'its key (default DIR/registry.key)')}
${usageLine('--plain', 'no encryption: JSON in clear, for nc')}
${usageLine('-h, --help', 'show this help')}

Limits on connections (each keeps one host from taking them all):
${numberFlagsUsage(CONNECTION_LIMIT_FLAGS, LIMITS)}

Limits on password checks (register and login):
${numberFlagsUsage(PASSWORD_LIMIT_FLAGS, LIMITS)}

Environment:
  MONGODB_URI   keep accounts in MongoDB, for example at
                mongodb://localhost:27017/p2p_chat (unset: kept in memory);
                the registry's key is then kept there too (unless --key-file)
  P2P_CHAT_HOME DIR, where the key file is kept (default ~/.p2p-chat)`;

async function main(): Promise<void> {
  let options: ServerOptions;
  let keyFile: string | undefined;
  try {
    const { values } = parseArgs({
      options: {
        host: { type: 'string' },
        'key-file': { type: 'string' },
        plain: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
        ...numberFlagOptions(NUMBER_FLAGS),
        ...numberFlagOptions(LIMIT_FLAGS),
      },
    });
    if (values.help) {
      console.log(USAGE);
      return;
    }
    const host = values.host as string | undefined;
    const mongodbUri = process.env.MONGODB_URI || undefined;
    keyFile = values['key-file'] as string | undefined;
    if (keyFile === '') throw new Error('--key-file needs a path');
    if (values.plain && keyFile) throw new Error('--plain has no key: leave out --key-file');
    // The key lives in a file, or with the accounts in MongoDB; a plain registry has none.
    if (!values.plain && !mongodbUri) {
      keyFile ??= path.join(defaultDataDir(), 'registry.key');
    }
    // Settings not given are left to startServer(), which fills in the defaults.
    options = {
      host, mongodbUri, identity: values.plain || keyFile ? undefined : 'database',
      ...readNumberFlags(NUMBER_FLAGS, values), ...readNumberFlags(LIMIT_FLAGS, values),
    };
    // A timeout no longer than the heartbeat would drop every user between two hellos.
    const { heartbeatMs, timeoutMs } = given(DEFAULTS, options);
    if (timeoutMs <= heartbeatMs) {
      throw new Error(`--timeout-ms (${timeoutMs}) must be longer than --heartbeat-ms ` +
        `(${heartbeatMs}), or every user is dropped between two hellos`);
    }
  } catch (error) {
    console.error(`error: ${errorText(error)}\n(see --help)`);
    process.exit(2);
  }

  // Ctrl-C or a service manager's stop: close listeners and storage cleanly, then exit: 130
  // after Ctrl-C (SIGINT), as shells report a program interrupted (128 + 2); 0 after SIGTERM, a
  // stop that was asked for. Once: `deno task` and the terminal may each deliver the same
  // Ctrl-C. The handlers go in before start-up, so a signal that arrives while we start is
  // handled too.
  let server: RunningServer | undefined;
  let stopping = false;
  const shutDown = (signal: 'SIGINT' | 'SIGTERM') => {
    const code = signal === 'SIGINT' ? 130 : 0;
    if (server === undefined) process.exit(code);
    if (stopping) return;
    stopping = true;
    logEvent(server.registry, 'stop', `signal=${signal}`);
    server.close().then(() => process.exit(code));
  };
  process.on('SIGINT', () => shutDown('SIGINT'));
  process.on('SIGTERM', () => shutDown('SIGTERM'));

  try {
    // The key is read (or made, on first start) before listening: a bad key file stops us here.
    const key = keyFile === undefined ? undefined : loadOrCreateKeyFile(keyFile);
    server = await startServer({ ...options, identity: key?.pair ?? options.identity });
    if (key?.created) logEvent(server.registry, 'key_created', `file=${keyFile}`);
  } catch (error) {
    console.error(`error: ${errorText(error)}`);
    process.exit(1);
  }
}

if (isMainModule(import.meta)) await main();
