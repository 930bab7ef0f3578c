/**
 * server.ts — the registry: who has an account, who is online, and how to reach them.
 *
 * The registry never carries a chat message. It answers five requests over TCP and listens for
 * heartbeats over UDP; once it has introduced two clients, they talk to each other directly.
 *
 *                      TCP :5000  (one JSON object per line, answers in request order)
 *   client ──────────▶ register · login · search · list · logout ──▶ ┌──────────────────────┐
 *                                                                   │ registry             │
 *                      UDP :5001  (one JSON object per datagram)    │  accounts: UserStore │──▶ MongoDB
 *   client ──────────▶ hello {username, token}  every heartbeatMs ─▶ │  sessions: Map       │    or memory
 *          ◀────────── session_unknown  (if the token is not live)  │  sweeper: every ≤1 s │
 *                                                                   └──────────────────────┘
 *
 * A session is born at login, kept alive by hellos, and dies at logout or when the sweeper finds
 * it silent for timeoutMs (the client crashed, lost its network, or was closed without logging
 * out). The online list is simply the set of live sessions.
 *
 * Layout:
 *   - settings and limits            what can be configured, with defaults
 *   - server state                   everything the registry remembers, declared together
 *   - accounts                       password hashing, the in-memory store and the MongoDB store
 *   - sessions and presence          login creates, hello refreshes, the sweeper removes
 *   - login throttling               slows down password guessing
 *   - request handlers               one function per message type
 *   - networking                     TCP connections (with limits) and UDP datagrams
 *   - start and stop                 startServer(), used by the CLI, the tests and the benchmarks
 *   - command line                   flags, errors for people, signals
 */

import { Buffer } from 'node:buffer';
import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { parseArgs } from 'node:util';
import type { Collection, MongoClient } from 'mongodb';
import {
  DEFAULT_HEARTBEAT_MS, DEFAULT_TCP_PORT, DEFAULT_TIMEOUT_MS, DEFAULT_UDP_PORT, LineSplitter,
  MAX_DATAGRAM_BYTES, TICKET_TTL_MS, USERNAME_PATTERN, USERNAME_RULE, decodeDatagram, decodeRequest,
  encodeDatagram, encodeLine, errorText, isMainModule, makeTicket, normaliseUsername, numberFlag, plainAddress,
} from './protocol.ts';
import type {
  ErrorCode, ErrorReply, ListRequest, LoginRequest, LogoutRequest, RegisterRequest, Reply,
  SearchRequest,
} from './protocol.ts';

// ============================================================================================
// Settings and limits
// ============================================================================================

export type ServerOptions = {
  /** Address to listen on. Default 0.0.0.0 (every IPv4 interface), so other machines can join. */
  host?: string;
  /** TCP port for requests; 0 picks any free port (tests do this). */
  tcpPort?: number;
  /** UDP port for heartbeats; 0 picks any free port. */
  udpPort?: number;
  /** How often clients are told to say hello. */
  heartbeatMs?: number;
  /** Silence after which a session is swept away. */
  timeoutMs?: number;
  /** Where accounts live. Default: MongoDB if `mongodbUri` is given, memory otherwise. */
  store?: UserStore;
  /** MongoDB connection string (the CLI takes it from MONGODB_URI). */
  mongodbUri?: string;
  /** How long start-up waits for MongoDB before giving up. */
  mongodbTimeoutMs?: number;
  /** Most TCP connections open at once; one more is told so and closed. */
  maxConnections?: number;
  /** A connection that sends nothing, or never finishes a line, for this long is closed. */
  idleMs?: number;
  /** Failed logins for one username before it is made to wait. */
  maxFailedLoginsPerUser?: number;
  /** Failed logins from one address before it is made to wait (higher: many people share NATs). */
  maxFailedLoginsPerAddress?: number;
  /** How long the wait lasts, and how long failures are remembered. */
  loginCooldownMs?: number;
  /** Entries kept in each login-throttle table; the oldest is forgotten when a new one needs
   * room. Default MAX_THROTTLE_ENTRIES (tests lower it to see the bound hold). */
  maxThrottleEntries?: number;
  /** Where event lines go. Default: stdout. */
  log?: (line: string) => void;
};

type Settings = Required<Omit<ServerOptions, 'store' | 'mongodbUri' | 'log'>> & {
  mongodbUri: string | undefined;
};

function resolveSettings(options: ServerOptions): Settings {
  return {
    host: options.host ?? '0.0.0.0',
    tcpPort: options.tcpPort ?? DEFAULT_TCP_PORT,
    udpPort: options.udpPort ?? DEFAULT_UDP_PORT,
    heartbeatMs: options.heartbeatMs ?? DEFAULT_HEARTBEAT_MS,
    timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    mongodbUri: options.mongodbUri,
    mongodbTimeoutMs: options.mongodbTimeoutMs ?? 3000,
    maxConnections: options.maxConnections ?? 1000,
    idleMs: options.idleMs ?? 60_000,
    maxFailedLoginsPerUser: options.maxFailedLoginsPerUser ?? 5,
    maxFailedLoginsPerAddress: options.maxFailedLoginsPerAddress ?? 20,
    loginCooldownMs: options.loginCooldownMs ?? 30_000,
    maxThrottleEntries: options.maxThrottleEntries ?? MAX_THROTTLE_ENTRIES,
  };
}

/** Requests read ahead of their answers on one connection before we stop reading from it. A
 * client that pipelines thousands of requests is slowed down instead of filling our memory.
 * (The queue can briefly hold more: every line of the one read that crossed the mark, at most
 * one socket read — 64 KiB — of them.) */
const MAX_QUEUED_REQUESTS = 64;
/** Entries in each login-throttle table; the oldest is forgotten when a new one needs room. */
const MAX_THROTTLE_ENTRIES = 10_000;

// ============================================================================================
// Server state
// ============================================================================================
//
// Everything the registry remembers is declared here. Accounts are the only thing that
// outlives the process (when MongoDB is used); sessions, connections and throttle counts are
// deliberately in memory: after a restart every client logs in again, which they notice within
// one heartbeat thanks to `session_unknown`.

/** One logged-in user. */
export type Session = {
  /** The name as it was registered ("Alice"), for display. */
  username: string;
  /** The secret that proves a request comes from this session. Never logged. */
  token: string;
  /** Where the user's client accepts chat connections: the address its login came from... */
  host: string;
  /** ...and the port it said it listens on. */
  chatPort: number;
  /** performance.now() when we last heard from it (login or hello). A monotonic clock, so a
   * change of the wall-clock time cannot make everyone expire at once. */
  lastHeardAt: number;
  /** This session's neighbours in the last-heard queue (see Registry.oldestSession): the
   * session heard just before it, and the one heard just after it. */
  heardBefore: Session | undefined;
  heardAfter: Session | undefined;
};

/** One open TCP connection from a client (or from a person typing into nc). */
type Connection = {
  /** The TCP connection itself. */
  socket: net.Socket;
  /** "address:port" of the other end, for the log. */
  remote: string;
  /** Cuts the incoming byte stream into lines. */
  splitter: LineSplitter;
  /** Lines received but not yet answered, oldest first. TOO_LONG marks where a line overflowed. */
  queue: Array<Uint8Array | typeof TOO_LONG>;
  /** True while an asynchronous answer (register or login: hashing, storage) is being worked
   * out. Later requests wait behind it, so answers leave in request order. */
  busy: boolean;
  /** performance.now() when the unfinished line in `splitter` began, or 0 if none is pending. */
  partialLineSince: number;
  /** Set when a line overflowed: nothing more is read; the answers queued before it are sent,
   * then an error, then the connection is closed. */
  hangingUp: boolean;
};
const TOO_LONG = Symbol('line too long');

/** Failed logins counted for one username or one address. */
type FailureCount = {
  /** Failures since `firstFailureAt`. */
  failures: number;
  /** performance.now() of the first failure counted; the count is forgotten a cooldown later. */
  firstFailureAt: number;
  /** performance.now() until which logins are refused, or 0. */
  blockedUntil: number;
};

export type Registry = {
  /** What startServer() was given, with the defaults filled in. */
  settings: Settings;
  /** Accounts: name, display name, password hash and salt. */
  store: UserStore;
  /** Live sessions by token. */
  sessionsByToken: Map<string, Session>;
  /** The same sessions in a queue, in the order they were last heard from: a doubly linked list
   * through Session.heardBefore / heardAfter, oldest first. A hello moves its session to the
   * newest end in a few pointer updates. So the sweeper looks only at the oldest end and stops at
   * the first session still alive: a pass costs one step plus one per expired session, however
   * many people are online.
   * Why not simply a Map in insertion order, deleting and re-inserting on each hello? V8 leaves a
   * hole for every deleted entry until it next rebuilds the table, and every new iterator walks
   * over the holes at the front; with a million sessions a pass cost ~0.6 ms instead of ~0.1 µs
   * (bench/, figure 2). */
  oldestSession: Session | undefined;
  newestSession: Session | undefined;
  /** The same sessions by normalised username, for search, list and "already online". */
  sessionsByName: Map<string, Session>;
  /** Open TCP connections, so we can enforce the limit and close them all at shutdown. */
  connections: Set<Connection>;
  /** Login failures by normalised username, and by client address. Two tables, so that a flood
   * of made-up usernames cannot push an address's own count out. */
  failuresByUser: Map<string, FailureCount>;
  failuresByAddress: Map<string, FailureCount>;
  /** Password hashes in progress, and the logins and registrations waiting for a turn (oldest
   * first; at most one per connection, since a connection waits for each answer). See
   * MAX_HASHES_AT_ONCE. */
  hashing: { running: number; waiting: Array<() => void> };
  /** A salt to hash against when the user does not exist, so "no such user" takes as long as
   * "wrong password" and timing does not reveal which names are registered. */
  decoySalt: Buffer;
  /** Writes one event line. */
  log: (line: string) => void;
};

export function createRegistry(
  settings: Settings,
  store: UserStore,
  log: (line: string) => void,
): Registry {
  return {
    settings,
    store,
    sessionsByToken: new Map(),
    oldestSession: undefined,
    newestSession: undefined,
    sessionsByName: new Map(),
    connections: new Set(),
    failuresByUser: new Map(),
    failuresByAddress: new Map(),
    hashing: { running: 0, waiting: [] },
    decoySalt: randomBytes(16),
    log,
  };
}

/** The default event log: stdout. Writing to stdout is a system call, and a busy registry logs a
 * line for nearly every request: it was the largest single cost of a search (bench/, figure 4).
 * So the lines of one turn of the event loop are gathered and written together, in one call,
 * just after that turn (setImmediate); a line is at most one turn late. Whatever is gathered is
 * written before the process exits. (process.stdout.write rather than console.log: the line is
 * formatted already, and console.log would format it again.) */
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

/** The event log: one line per event, "<ISO time> <event> key=value …". */
function logEvent(registry: Registry, event: string, details: string): void {
  registry.log(`${new Date().toISOString()} ${event} ${details}`);
}

// ============================================================================================
// Accounts
// ============================================================================================
//
// A password is never stored. We store scrypt(password, salt): a slow, memory-hard hash, with a
// random salt per user so two people with the same password get different hashes and a stolen
// table cannot be attacked with one precomputed dictionary. Node runs scrypt on its thread pool,
// so hashing (~50 ms) does not block the event loop and other clients keep being served.

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
  /** Adds the user unless the name is taken. Must be atomic: of two racing calls for one name,
   * exactly one gets 'added'. */
  addUser(user: StoredUser): Promise<'added' | 'taken'>;
  findUser(name: string): Promise<StoredUser | null>;
  close(): Promise<void>;
};

const SCRYPT_KEY_BYTES = 64;

/** How many passwords are hashed at once. scrypt runs on libuv's thread pool (four threads), so
 * a burst of logins could keep every core busy hashing and leave none for the event loop, which
 * answers everyone else: on two cores, search p99 rose past 5 ms during a login storm (bench/,
 * figure 5). One core is always left free; further hashes wait their turn. The price: on two
 * cores, about half as many logins per second at full load. */
const MAX_HASHES_AT_ONCE = Math.max(1, os.availableParallelism() - 1);

async function hashPassword(registry: Registry, password: string, salt: Buffer): Promise<Buffer> {
  const slots = registry.hashing;
  if (slots.running < MAX_HASHES_AT_ONCE) slots.running += 1;
  else await new Promise<void>((resolve) => slots.waiting.push(resolve)); // a finishing hash hands us its slot
  try {
    return await new Promise((resolve, reject) => {
      scrypt(password, salt, SCRYPT_KEY_BYTES, (error, key) => (error ? reject(error) : resolve(key)));
    });
  } finally {
    const next = slots.waiting.shift();
    if (next !== undefined) next(); // the slot passes straight to the next in line
    else slots.running -= 1;
  }
}

/** Hashes the attempt with the user's salt and compares in constant time. */
async function passwordMatches(registry: Registry, user: StoredUser, password: string): Promise<boolean> {
  const attempt = await hashPassword(registry, password, Buffer.from(user.salt, 'hex'));
  return timingSafeEqual(attempt, Buffer.from(user.passwordHash, 'hex'));
}

/** Accounts in a Map: gone when the process ends. Fine for a demo, a class, or the tests. */
export function createMemoryUserStore(): UserStore {
  const users = new Map<string, StoredUser>();
  return {
    description: 'accounts are kept in memory; set MONGODB_URI to keep them in MongoDB',
    async addUser(user) {
      // No await between the check and the set: nothing else can run in between, so this is
      // atomic in JavaScript's single-threaded world.
      if (users.has(user.name)) return 'taken';
      users.set(user.name, { ...user });
      return 'added';
    },
    async findUser(name) {
      const user = users.get(name);
      return user ? { ...user } : null;
    },
    async close() {},
  };
}

/** Accounts in MongoDB's `users` collection (database: the one named in the URI). A unique index
 * on `name` is what makes registration race-free: the database itself refuses the second insert. */
export async function openMongoUserStore(uri: string, timeoutMs: number): Promise<UserStore> {
  const { MongoClient: Client, MongoServerError } = await import('mongodb');
  const client: MongoClient = new Client(uri, {
    serverSelectionTimeoutMS: timeoutMs,
    connectTimeoutMS: timeoutMs,
  });
  let users: Collection<StoredUser>;
  try {
    await client.connect();
    users = client.db().collection<StoredUser>('users');
    await users.createIndex({ name: 1 }, { unique: true });
  } catch (error) {
    await client.close().catch(() => {});
    throw new Error(`cannot use MongoDB at ${redactUri(uri)}: ${errorText(error)}`);
  }
  const DUPLICATE_KEY = 11000;
  return {
    description: `accounts are kept in MongoDB at ${redactUri(uri)}`,
    async addUser(user) {
      try {
        await users.insertOne({ ...user });
        return 'added';
      } catch (error) {
        if (error instanceof MongoServerError && error.code === DUPLICATE_KEY) return 'taken';
        throw error;
      }
    },
    async findUser(name) {
      return users.findOne({ name }, { projection: { _id: 0 } });
    },
    async close() {
      await client.close();
    },
  };
}

/** "mongodb://bob:secret@host/db" → "mongodb://bob:***@host/db": URIs go in logs, passwords don't. */
export function redactUri(uri: string): string {
  return uri.replace(/\/\/([^:@/]*):([^@/]*)@/, '//$1:***@');
}

// ============================================================================================
// Sessions and presence
// ============================================================================================

/** Starts a session. The caller has checked the password and that the user is not online. */
export function openSession(registry: Registry, username: string, host: string, chatPort: number): Session {
  const session: Session = {
    username,
    // 128 random bits: unguessable, and 22 characters instead of 43 — a million sessions hold
    // a million tokens, and this pays for the two queue pointers below.
    token: randomBytes(16).toString('base64url'),
    host,
    chatPort,
    lastHeardAt: performance.now(),
    heardBefore: undefined,
    heardAfter: undefined,
  };
  registry.sessionsByToken.set(session.token, session);
  registry.sessionsByName.set(normaliseUsername(username), session);
  appendToQueue(registry, session);
  return session;
}

export function closeSession(registry: Registry, session: Session): void {
  // Only a live session is in the queue: closing one twice must not unlink it twice.
  if (!registry.sessionsByToken.delete(session.token)) return;
  registry.sessionsByName.delete(normaliseUsername(session.username));
  removeFromQueue(registry, session);
}

/** A hello arrived: move the session to the newest end of the last-heard queue. */
export function refreshSession(registry: Registry, session: Session, now: number): void {
  session.lastHeardAt = now;
  if (registry.newestSession === session) return;
  removeFromQueue(registry, session);
  appendToQueue(registry, session);
}

/** Puts a session at the newest end of the last-heard queue. */
function appendToQueue(registry: Registry, session: Session): void {
  session.heardBefore = registry.newestSession;
  session.heardAfter = undefined;
  if (registry.newestSession === undefined) registry.oldestSession = session;
  else registry.newestSession.heardAfter = session;
  registry.newestSession = session;
}

/** Takes a session out of the last-heard queue and joins its two neighbours. */
function removeFromQueue(registry: Registry, session: Session): void {
  if (session.heardBefore === undefined) registry.oldestSession = session.heardAfter;
  else session.heardBefore.heardAfter = session.heardAfter;
  if (session.heardAfter === undefined) registry.newestSession = session.heardBefore;
  else session.heardAfter.heardBefore = session.heardBefore;
  session.heardBefore = undefined;
  session.heardAfter = undefined;
}

/** Removes every session silent for timeoutMs. Oldest first, stopping at the first live one.
 * Returns how many were removed. */
export function sweepExpiredSessions(registry: Registry, now: number): number {
  let removed = 0;
  for (let session = registry.oldestSession; session !== undefined; session = registry.oldestSession) {
    const silentFor = now - session.lastHeardAt;
    if (silentFor < registry.settings.timeoutMs) break; // everyone after this was heard later
    closeSession(registry, session); // which makes the next session the oldest
    removed += 1;
    logEvent(registry, 'timeout', `user=${session.username} silent_for=${(silentFor / 1000).toFixed(1)}s`);
  }
  return removed;
}

// ============================================================================================
// Login throttling
// ============================================================================================
//
// Without a limit, anyone could try passwords as fast as scrypt allows. After a few failures for
// one username (or many from one address) further logins are refused, without even hashing,
// until a cooldown passes. A successful login resets both counts.

function failureEntry(table: Map<string, FailureCount>, key: string, now: number, cooldownMs: number): FailureCount | undefined {
  const entry = table.get(key);
  if (entry && now - entry.firstFailureAt > cooldownMs && now >= entry.blockedUntil) {
    table.delete(key); // old failures are forgiven
    return undefined;
  }
  return entry;
}

/** Milliseconds this login must still wait, or 0. */
function throttleWaitMs(registry: Registry, name: string, address: string, now: number): number {
  const { loginCooldownMs } = registry.settings;
  const byUser = failureEntry(registry.failuresByUser, name, now, loginCooldownMs);
  const byAddress = failureEntry(registry.failuresByAddress, address, now, loginCooldownMs);
  return Math.max(0, (byUser?.blockedUntil ?? 0) - now, (byAddress?.blockedUntil ?? 0) - now);
}

function countFailure(table: Map<string, FailureCount>, key: string, limit: number, now: number, cooldownMs: number, maxEntries: number): void {
  let entry = failureEntry(table, key, now, cooldownMs);
  if (entry === undefined) {
    if (table.size >= maxEntries) table.delete(table.keys().next().value as string);
    entry = { failures: 0, firstFailureAt: now, blockedUntil: 0 };
    table.set(key, entry);
  }
  entry.failures += 1;
  if (entry.failures >= limit) entry.blockedUntil = now + cooldownMs;
}

function recordLoginFailure(registry: Registry, name: string, address: string, now: number): void {
  const s = registry.settings;
  countFailure(registry.failuresByUser, name, s.maxFailedLoginsPerUser, now, s.loginCooldownMs, s.maxThrottleEntries);
  countFailure(registry.failuresByAddress, address, s.maxFailedLoginsPerAddress, now, s.loginCooldownMs, s.maxThrottleEntries);
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

function storageFailed(registry: Registry, what: string, error: unknown): ErrorReply {
  logEvent(registry, 'storage_error', `during=${what} error=${JSON.stringify(errorText(error))}`);
  return errorReply('storage_unavailable', 'the account storage is not available right now; try again later');
}

async function handleRegister(registry: Registry, request: RegisterRequest, remote: string): Promise<Reply> {
  const { username, password } = request;
  if (!USERNAME_PATTERN.test(username)) return errorReply('invalid_username', USERNAME_RULE);
  if (password.length === 0) return errorReply('invalid_password', 'the password must not be empty');
  const salt = randomBytes(16);
  let outcome: 'added' | 'taken';
  try {
    const hash = await hashPassword(registry, password, salt);
    outcome = await registry.store.addUser({
      name: normaliseUsername(username),
      displayName: username,
      passwordHash: hash.toString('hex'),
      salt: salt.toString('hex'),
    });
  } catch (error) {
    return storageFailed(registry, 'register', error);
  }
  if (outcome === 'taken') {
    logEvent(registry, 'register_refused', `user=${username} from=${remote} reason=taken`);
    return errorReply('username_taken', `the username ${username} is already taken`);
  }
  logEvent(registry, 'register', `user=${username} from=${remote}`);
  return { type: 'registered', username };
}

async function handleLogin(registry: Registry, request: LoginRequest, connection: Connection): Promise<Reply> {
  const { username, password, chatPort } = request;
  const { remote } = connection;
  if (!USERNAME_PATTERN.test(username)) return errorReply('invalid_username', USERNAME_RULE);
  if (password.length === 0) return errorReply('invalid_password', 'the password must not be empty');
  const name = normaliseUsername(username);
  const address = plainAddress(connection.socket.remoteAddress);

  const waitMs = throttleWaitMs(registry, name, address, performance.now());
  if (waitMs > 0) {
    logEvent(registry, 'login_throttled', `user=${username} from=${remote}`);
    const seconds = Math.ceil(waitMs / 1000);
    return errorReply('too_many_attempts', `too many failed logins; try again in ${seconds} s`);
  }

  // Hash even when the user does not exist, so both failures take the same time.
  const decoy: StoredUser = { name, displayName: username, passwordHash: '00'.repeat(SCRYPT_KEY_BYTES), salt: registry.decoySalt.toString('hex') };
  let user: StoredUser | null;
  let matches: boolean;
  try {
    user = await registry.store.findUser(name);
    matches = await passwordMatches(registry, user ?? decoy, password);
  } catch (error) {
    // The store failed, or handed back a damaged record (a hash of the wrong length makes
    // timingSafeEqual throw): either way the accounts cannot be trusted right now.
    return storageFailed(registry, 'login', error);
  }
  if (user === null || !matches) {
    recordLoginFailure(registry, name, address, performance.now());
    logEvent(registry, 'login_failed', `user=${username} from=${remote}`);
    return errorReply('bad_credentials', 'wrong username or password');
  }
  registry.failuresByUser.delete(name);
  registry.failuresByAddress.delete(address);

  if (registry.sessionsByName.has(name)) {
    logEvent(registry, 'login_refused', `user=${user.displayName} from=${remote} reason=already_online`);
    return errorReply('already_online', `${user.displayName} is already logged in elsewhere`);
  }
  if (connection.socket.destroyed) {
    return errorReply('bad_request', 'connection closed'); // nobody left to give the token to
  }
  const session = openSession(registry, user.displayName, address, chatPort);
  logEvent(registry, 'login', `user=${session.username} from=${remote} chat=${session.host}:${chatPort}`);
  return {
    type: 'logged_in',
    username: session.username,
    token: session.token,
    heartbeatMs: registry.settings.heartbeatMs,
    timeoutMs: registry.settings.timeoutMs,
  };
}

const NOT_LOGGED_IN = 'log in first: this session is unknown or has expired';

function handleSearch(registry: Registry, request: SearchRequest, remote: string): Reply {
  const caller = registry.sessionsByToken.get(request.token);
  if (caller === undefined) return errorReply('not_logged_in', NOT_LOGGED_IN);
  if (!USERNAME_PATTERN.test(request.username)) return errorReply('invalid_username', USERNAME_RULE);
  const callee = registry.sessionsByName.get(normaliseUsername(request.username));
  if (callee === undefined) {
    logEvent(registry, 'search_miss', `user=${caller.username} for=${request.username} from=${remote}`);
    return errorReply('not_online', `${request.username} is not online`);
  }
  logEvent(registry, 'search_hit', `user=${caller.username} for=${callee.username} from=${remote}`);
  const expiresAt = Date.now() + TICKET_TTL_MS; // wall-clock: the peer checks it with its own clock
  return {
    type: 'found',
    username: callee.username,
    host: callee.host,
    port: callee.chatPort,
    ticket: makeTicket(callee.token, caller.username, callee.username, expiresAt),
  };
}

function handleList(registry: Registry, request: ListRequest, remote: string): Reply {
  const caller = registry.sessionsByToken.get(request.token);
  if (caller === undefined) return errorReply('not_logged_in', NOT_LOGGED_IN);
  const users = Array.from(registry.sessionsByName.values(), (session) => session.username);
  users.sort((a, b) => normaliseUsername(a).localeCompare(normaliseUsername(b)));
  logEvent(registry, 'list', `user=${caller.username} from=${remote} online=${users.length}`);
  return { type: 'online', users };
}

function handleLogout(registry: Registry, request: LogoutRequest, remote: string): Reply {
  const session = registry.sessionsByToken.get(request.token);
  if (session === undefined) return errorReply('not_logged_in', NOT_LOGGED_IN);
  closeSession(registry, session);
  logEvent(registry, 'logout', `user=${session.username} from=${remote}`);
  return { type: 'logged_out' };
}

/** A UDP datagram arrived. Only a hello with a live token and matching name changes anything. */
function handleDatagram(registry: Registry, udp: dgram.Socket, bytes: Uint8Array, sender: dgram.RemoteInfo): void {
  if (bytes.length > MAX_DATAGRAM_BYTES) return; // too big to be a hello: not worth parsing
  const decoded = decodeDatagram(bytes);
  if (!decoded.ok || decoded.message.type !== 'hello') return; // anything else is ignored
  const hello = decoded.message;
  const session = registry.sessionsByToken.get(hello.token);
  if (session !== undefined && normaliseUsername(session.username) === normaliseUsername(hello.username)) {
    refreshSession(registry, session, performance.now());
    return;
  }
  // Tell the sender, so a client whose session we lost (we restarted, or swept it) finds out
  // within one heartbeat instead of believing it is online. The answer is smaller than the
  // hello, so a forged sender address cannot use us to amplify traffic.
  udp.send(encodeDatagram({ type: 'session_unknown' }), sender.port, sender.address, () => {});
}

/** Decodes one request line and routes it to its handler. */
function answerLine(registry: Registry, connection: Connection, line: Uint8Array): Reply | Promise<Reply> {
  const decoded = decodeRequest(line);
  if (!decoded.ok) return errorReply('bad_request', decoded.error);
  const request = decoded.message;
  switch (request.type) {
    case 'register': return handleRegister(registry, request, connection.remote);
    case 'login': return handleLogin(registry, request, connection);
    case 'search': return handleSearch(registry, request, connection.remote);
    case 'list': return handleList(registry, request, connection.remote);
    case 'logout': return handleLogout(registry, request, connection.remote);
  }
}

// ============================================================================================
// Networking
// ============================================================================================

function acceptConnection(registry: Registry, socket: net.Socket): void {
  socket.on('error', () => {}); // resets and the like: 'close' follows, which is all we need
  const { maxConnections, idleMs } = registry.settings;
  if (registry.connections.size >= maxConnections) {
    // One line saying why, then hang up. Existing connections are not affected.
    // Keep reading (and discarding) until the client closes: closing a socket with unread input
    // sends a reset, which could destroy our explanation before the client reads it.
    socket.end(encodeLine(errorReply('too_many_connections', `the registry has ${maxConnections} connections open; try again later`)));
    socket.resume();
    socket.setTimeout(2000, () => socket.destroy());
    return;
  }
  const connection: Connection = {
    socket,
    remote: `${plainAddress(socket.remoteAddress)}:${socket.remotePort}`,
    splitter: new LineSplitter(),
    queue: [],
    busy: false,
    partialLineSince: 0,
    hangingUp: false,
  };
  registry.connections.add(connection);
  socket.setNoDelay(true); // answers are small; send them now rather than batching (Nagle)
  socket.setTimeout(idleMs); // 'timeout' fires after idleMs with no traffic at all
  socket.on('timeout', () => socket.destroy());
  socket.on('close', () => registry.connections.delete(connection));
  socket.on('drain', () => serveQueue(registry, connection));
  socket.on('data', (chunk: Buffer) => receive(registry, connection, chunk));
}

function receive(registry: Registry, connection: Connection, chunk: Uint8Array): void {
  const { lines, tooLong } = connection.splitter.push(chunk);
  for (const line of lines) connection.queue.push(line);
  if (tooLong) {
    connection.queue.push(TOO_LONG);
    connection.hangingUp = true;
    connection.socket.pause(); // nothing after an overflow is read
  }
  // A client that keeps a line open by sending a byte now and then never trips the idle timer;
  // this catches it: a line must be finished within idleMs of its first byte.
  const now = performance.now();
  if (connection.splitter.bufferedBytes === 0) connection.partialLineSince = 0;
  else if (connection.partialLineSince === 0) connection.partialLineSince = now;
  else if (now - connection.partialLineSince > registry.settings.idleMs) {
    connection.socket.destroy();
    return;
  }
  if (connection.queue.length > MAX_QUEUED_REQUESTS) connection.socket.pause();
  serveQueue(registry, connection);
}

/** Answers queued lines in order. Synchronous answers are written at once; for an asynchronous
 * one we stop, and its completion calls us again. We also stop while the socket's send buffer is
 * full ('drain' calls us again), so a client that never reads its answers cannot grow our memory. */
function serveQueue(registry: Registry, connection: Connection): void {
  const { socket, queue } = connection;
  // A client that pipelines (sends several requests before reading) gets its answers in one
  // write: cork() holds our writes back and uncork() sends them together, so one system call
  // carries the batch instead of one per answer — the main cost of pipelined search (bench/,
  // figure 4). With one request waiting there is nothing to gather, and we skip it.
  const gathering = queue.length > 1;
  if (gathering) socket.cork();
  try {
    answerQueued(registry, connection);
  } finally {
    if (gathering) socket.uncork();
  }
}

function answerQueued(registry: Registry, connection: Connection): void {
  const { socket, queue } = connection;
  while (!connection.busy && queue.length > 0 && !socket.destroyed && !socket.writableNeedDrain) {
    const line = queue.shift()!;
    if (line === TOO_LONG) {
      queue.length = 0;
      socket.end(encodeLine(errorReply('bad_request', `line longer than ${connection.splitter.maxLineBytes} bytes; closing the connection`)));
      return;
    }
    const answer = answerLine(registry, connection, line);
    if (answer instanceof Promise) {
      connection.busy = true;
      answer.then(
        (reply) => {
          connection.busy = false;
          if (!socket.destroyed) socket.write(encodeLine(reply));
          serveQueue(registry, connection);
        },
        (error) => {
          // Handlers turn every expected failure into an answer, so this is a bug. Log it and
          // drop this one connection; the server and everyone else carry on.
          logEvent(registry, 'internal_error', `from=${connection.remote} error=${JSON.stringify(errorText(error))}`);
          socket.destroy();
        },
      );
      return;
    }
    socket.write(encodeLine(answer));
  }
  if (queue.length <= MAX_QUEUED_REQUESTS / 4 && socket.isPaused() && !connection.hangingUp && !socket.destroyed) {
    socket.resume();
  }
}

// ============================================================================================
// Start and stop
// ============================================================================================

export type RunningServer = {
  /** The ports actually bound (useful when 0 was asked for). */
  tcpPort: number;
  udpPort: number;
  host: string;
  /** The live state, for tests and benchmarks that look inside. */
  registry: Registry;
  /** Stops listening, closes every connection and the account store. */
  close(): Promise<void>;
};

/** Raised when a port is taken, naming the flag that changes it. */
export class PortInUseError extends Error {}

export async function startServer(options: ServerOptions = {}): Promise<RunningServer> {
  const settings = resolveSettings(options);
  const log = options.log ?? stdoutLog();
  const ownsStore = options.store === undefined;
  const store = options.store ??
    (settings.mongodbUri ? await openMongoUserStore(settings.mongodbUri, settings.mongodbTimeoutMs) : createMemoryUserStore());
  const registry = createRegistry(settings, store, log);

  const tcp = net.createServer((socket) => acceptConnection(registry, socket));
  const udp = dgram.createSocket(settings.host.includes(':') ? 'udp6' : 'udp4');
  udp.on('message', (bytes, sender) => handleDatagram(registry, udp, bytes, sender));
  try {
    await listening(tcp, 'TCP', settings.tcpPort, (done) => tcp.listen(settings.tcpPort, settings.host, done));
    await listening(udp, 'UDP', settings.udpPort, (done) => udp.bind(settings.udpPort, settings.host, done));
  } catch (error) {
    tcp.close();
    udp.close();
    if (ownsStore) await store.close();
    throw error;
  }
  udp.on('error', (error) => logEvent(registry, 'udp_error', errorText(error)));

  // The sweeper runs often enough that a session is removed within a second of its deadline
  // (sooner when tests use short timeouts).
  const sweepEveryMs = Math.max(10, Math.min(1000, Math.floor(settings.timeoutMs / 4)));
  const sweeper = setInterval(() => sweepExpiredSessions(registry, performance.now()), sweepEveryMs);

  const tcpPort = (tcp.address() as net.AddressInfo).port;
  const udpPort = udp.address().port;
  logEvent(registry, 'start', `tcp=${settings.host}:${tcpPort} udp=${settings.host}:${udpPort} heartbeat_ms=${settings.heartbeatMs} timeout_ms=${settings.timeoutMs}`);
  logEvent(registry, 'storage', store.description);

  let closing: Promise<void> | undefined;
  return {
    tcpPort,
    udpPort,
    host: settings.host,
    registry,
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
 * becomes a PortInUseError naming the flag that picks another. */
function listening(socket: net.Server | dgram.Socket, protocol: 'TCP' | 'UDP', port: number, start: (done: () => void) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.once('error', (error: NodeJS.ErrnoException) => {
      reject(error.code === 'EADDRINUSE'
        ? new PortInUseError(`${protocol} port ${port} is already in use; choose another with --${protocol.toLowerCase()}-port`)
        : error);
    });
    start(resolve);
  });
}

// ============================================================================================
// Command line
// ============================================================================================

const USAGE = `Usage: server.ts [options]

The p2p-chat registry: accounts, who is online, and introductions between peers.

Options:
  --host ADDRESS         address to listen on (default 0.0.0.0)
  --tcp-port N           TCP port for requests (default ${DEFAULT_TCP_PORT})
  --udp-port N           UDP port for heartbeats (default ${DEFAULT_UDP_PORT})
  --heartbeat-ms N       how often clients say hello (default ${DEFAULT_HEARTBEAT_MS})
  --timeout-ms N         silence after which a user is dropped (default ${DEFAULT_TIMEOUT_MS})
  --max-connections N    TCP connections open at once (default 1000)
  --idle-ms N            close a connection silent for this long (default 60000)
  -h, --help             show this help

Environment:
  MONGODB_URI            keep accounts in MongoDB (e.g. mongodb://localhost:27017/p2p_chat);
                         without it, accounts are kept in memory`;


async function main(): Promise<void> {
  let options: ServerOptions;
  try {
    const { values } = parseArgs({
      options: {
        host: { type: 'string' },
        'tcp-port': { type: 'string' },
        'udp-port': { type: 'string' },
        'heartbeat-ms': { type: 'string' },
        'timeout-ms': { type: 'string' },
        'max-connections': { type: 'string' },
        'idle-ms': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
    if (values.help) {
      console.log(USAGE);
      return;
    }
    options = {
      host: values.host,
      tcpPort: numberFlag('tcp-port', values['tcp-port'], DEFAULT_TCP_PORT, 0, 65535),
      udpPort: numberFlag('udp-port', values['udp-port'], DEFAULT_UDP_PORT, 0, 65535),
      heartbeatMs: numberFlag('heartbeat-ms', values['heartbeat-ms'], DEFAULT_HEARTBEAT_MS, 1, 3_600_000),
      timeoutMs: numberFlag('timeout-ms', values['timeout-ms'], DEFAULT_TIMEOUT_MS, 1, 86_400_000),
      maxConnections: numberFlag('max-connections', values['max-connections'], 1000, 1, 1_000_000),
      idleMs: numberFlag('idle-ms', values['idle-ms'], 60_000, 1, 86_400_000),
      mongodbUri: process.env.MONGODB_URI || undefined,
    };
  } catch (error) {
    console.error(`error: ${errorText(error)}\n(see --help)`);
    process.exit(2);
  }

  // Ctrl-C or a service manager's stop: close listeners and storage cleanly, then exit 0. The
  // handlers go in before start-up, so a signal that arrives while we start is handled too.
  let server: RunningServer | undefined;
  const shutDown = (signal: string) => {
    if (server === undefined) process.exit(0);
    logEvent(server.registry, 'stop', `signal=${signal}`);
    server.close().then(() => process.exit(0));
  };
  process.on('SIGINT', () => shutDown('SIGINT'));
  process.on('SIGTERM', () => shutDown('SIGTERM'));

  try {
    server = await startServer(options);
  } catch (error) {
    console.error(`error: ${errorText(error)}`);
    process.exit(1);
  }
}

if (isMainModule(import.meta)) await main();
