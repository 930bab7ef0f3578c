/**
 * protocol.ts — every message the programs exchange, in one place.
 *
 * Three conversations happen in p2p-chat, and this file is the contract for all of them:
 *
 *        (1) TCP requests / answers           (2) UDP "hello" every heartbeatMs
 *   client ───────────────────────────▶ registry ◀──────────────────────── client
 *     │    register login search list logout          "session_unknown" ──▶
 *     │
 *     │  (3) TCP, client to client, once the registry has introduced them
 *     └───────────── chat_request → chat_accept | chat_decline, then msg … bye ──▶ peer
 *
 * Every message is one JSON object. On TCP each object is one line ending in "\n", so a person
 * can type the protocol into `nc`; on UDP each object is one datagram.
 *
 * Layout of this file:
 *   - defaults and limits
 *   - message types (TypeScript types only; they vanish at run time)
 *   - the validating decoder: bytes → typed message, or a typed error, and never an exception
 *   - the line splitter that cuts a TCP byte stream into lines, with a length limit
 *   - tickets: how the registry vouches for a caller to the peer being called
 *   - two small command-line helpers that server.ts and client.ts share
 */

import { Buffer } from 'node:buffer';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { realpathSync } from 'node:fs';
import process from 'node:process';
import { pathToFileURL } from 'node:url';

// ============================================================================================
// Defaults and limits
// ============================================================================================

/** TCP port of the registry (the original program's choice). */
export const DEFAULT_TCP_PORT = 5000;
/** UDP port where the registry listens for heartbeats. */
export const DEFAULT_UDP_PORT = 5001;
/** How often a logged-in client says hello. */
export const DEFAULT_HEARTBEAT_MS = 2000;
/** How long the registry waits without a hello before it forgets a session. */
export const DEFAULT_TIMEOUT_MS = 10_000;
/** A line longer than this (in bytes, without the "\n") is refused. 16 KiB is far more than any
 * real message needs, and small enough that a hostile peer cannot make us buffer much. */
export const MAX_LINE_BYTES = 16 * 1024;
/** A datagram longer than this is not even parsed. A hello is about 100 bytes. */
export const MAX_DATAGRAM_BYTES = 1024;
/** How long a ticket from `search` lets the caller knock on the peer's door. */
export const TICKET_TTL_MS = 60_000;
/** Usernames: 1–32 of A–Z a–z 0–9 _ . - (compared ignoring case). */
export const USERNAME_PATTERN = /^[A-Za-z0-9_.-]{1,32}$/;
/** The same rule in words, for people who broke it. */
export const USERNAME_RULE = 'a username is 1 to 32 characters: letters, digits, "_", "." or "-"';

/** The form in which a username is stored and compared: "Alice" and "alice" are one account. */
export function normaliseUsername(username: string): string {
  return username.toLowerCase();
}

/** An address as people write it. A server listening on IPv6 sees IPv4 clients as IPv4-mapped
 * addresses ("::ffff:10.0.0.7"); we write those as plain IPv4 ("10.0.0.7"). */
export function plainAddress(address: string | undefined): string {
  if (address === undefined) return 'unknown';
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

// ============================================================================================
// Message types
// ============================================================================================

// ---- (1) Registry requests, client → registry over TCP ----

export type RegisterRequest = { type: 'register'; username: string; password: string };
export type LoginRequest = { type: 'login'; username: string; password: string; chatPort: number };
export type SearchRequest = { type: 'search'; token: string; username: string };
export type ListRequest = { type: 'list'; token: string };
export type LogoutRequest = { type: 'logout'; token: string };
export type Request = RegisterRequest | LoginRequest | SearchRequest | ListRequest | LogoutRequest;

// ---- (1) Registry answers, registry → client over TCP, one per request, in request order ----

export type Registered = { type: 'registered'; username: string };
export type LoggedIn = {
  type: 'logged_in';
  username: string;
  token: string;
  heartbeatMs: number;
  timeoutMs: number;
};
export type Found = { type: 'found'; username: string; host: string; port: number; ticket: string };
export type Online = { type: 'online'; users: string[] };
export type LoggedOut = { type: 'logged_out' };

/** Why a request failed. `message` in ErrorReply is the same thing in words for a person. */
export type ErrorCode =
  | 'bad_request' // not JSON, not an object, unknown type, wrong fields, invalid UTF-8, too long
  | 'invalid_username'
  | 'invalid_password'
  | 'username_taken'
  | 'bad_credentials' // wrong password or no such user: deliberately the same answer
  | 'already_online'
  | 'not_logged_in' // unknown or expired token
  | 'not_online'
  | 'storage_unavailable'
  | 'too_many_attempts'
  | 'too_many_connections';
export type ErrorReply = { type: 'error'; code: ErrorCode; message: string };

export type Reply = Registered | LoggedIn | Found | Online | LoggedOut | ErrorReply;

// ---- (2) Presence, over UDP ----

export type Hello = { type: 'hello'; username: string; token: string };
/** Sent back for a hello whose token the registry does not know (it restarted, or swept us). */
export type SessionUnknown = { type: 'session_unknown' };

// ---- (3) Peer to peer, client ↔ client over TCP ----

export type ChatRequest = { type: 'chat_request'; from: string; ticket: string };
export type ChatAccept = { type: 'chat_accept' };
export type DeclineReason = 'declined' | 'busy' | 'timeout' | 'bad_ticket';
export type ChatDecline = { type: 'chat_decline'; reason: DeclineReason };
/** `at` is when it was written, in milliseconds since the Unix epoch. */
export type ChatMessage = { type: 'msg'; text: string; at: number };
export type Bye = { type: 'bye' };
export type PeerMessage = ChatRequest | ChatAccept | ChatDecline | ChatMessage | Bye;

// ============================================================================================
// The validating decoder
// ============================================================================================
//
// Input from the network is hostile until proven otherwise. The decoder accepts bytes and
// returns either { ok: true, message } with a message whose every field has the right type, or
// { ok: false, error } with a sentence saying what was wrong. It never throws.
//
// The shapes are written down once, as data (the SCHEMAS below). The decoder reads a field only
// if the parsed object owns it, and builds a fresh object holding only the fields the schema
// names. So a key like "__proto__" or "constructor" is never copied anywhere and can never reach
// an object's prototype; unknown extra fields are ignored, which lets the protocol grow.

/** What a field must hold. */
type FieldKind =
  | 'string' // any string
  | 'text' // a non-empty string
  | 'port' // an integer 1–65535
  | 'positive' // an integer ≥ 1
  | 'time' // a finite number (milliseconds since the epoch)
  | 'names' // an array of strings
  | 'error_code'
  | 'decline_reason';

/** The fields of one message type, as [name, kind] pairs. */
type Schema = ReadonlyArray<readonly [string, FieldKind]>;

/** Which messages can arrive on one channel. A Map, not a plain object, so that a "type" of
 * "toString" or "__proto__" finds nothing rather than something inherited from Object.prototype. */
function schemas(table: Record<string, Record<string, FieldKind>>): ReadonlyMap<string, Schema> {
  return new Map(Object.entries(table).map(([type, fields]) => [type, Object.entries(fields)]));
}

const REQUEST_SCHEMAS = schemas({
  register: { username: 'string', password: 'string' },
  login: { username: 'string', password: 'string', chatPort: 'port' },
  search: { token: 'string', username: 'string' },
  list: { token: 'string' },
  logout: { token: 'string' },
});

const REPLY_SCHEMAS = schemas({
  registered: { username: 'string' },
  logged_in: { username: 'string', token: 'text', heartbeatMs: 'positive', timeoutMs: 'positive' },
  found: { username: 'string', host: 'text', port: 'port', ticket: 'text' },
  online: { users: 'names' },
  logged_out: {},
  error: { code: 'error_code', message: 'string' },
});

const DATAGRAM_SCHEMAS = schemas({
  hello: { username: 'string', token: 'string' },
  session_unknown: {},
});

const PEER_SCHEMAS = schemas({
  chat_request: { from: 'string', ticket: 'string' },
  chat_accept: {},
  chat_decline: { reason: 'decline_reason' },
  msg: { text: 'string', at: 'time' },
  bye: {},
});

const ERROR_CODES: ReadonlySet<string> = new Set<ErrorCode>([
  'bad_request', 'invalid_username', 'invalid_password', 'username_taken', 'bad_credentials',
  'already_online', 'not_logged_in', 'not_online', 'storage_unavailable', 'too_many_attempts',
  'too_many_connections',
]);
const DECLINE_REASONS: ReadonlySet<string> = new Set<DeclineReason>([
  'declined', 'busy', 'timeout', 'bad_ticket',
]);

function fieldIsValid(kind: FieldKind, value: unknown): boolean {
  switch (kind) {
    case 'string': return typeof value === 'string';
    case 'text': return typeof value === 'string' && value.length > 0;
    case 'port': return Number.isInteger(value) && (value as number) >= 1 && (value as number) <= 65535;
    case 'positive': return Number.isInteger(value) && (value as number) >= 1;
    case 'time': return typeof value === 'number' && Number.isFinite(value);
    case 'names': return Array.isArray(value) && value.every((name) => typeof name === 'string');
    case 'error_code': return typeof value === 'string' && ERROR_CODES.has(value);
    case 'decline_reason': return typeof value === 'string' && DECLINE_REASONS.has(value);
  }
}

export type Decoded<T> = { ok: true; message: T } | { ok: false; error: string };

// `fatal: true` makes invalid UTF-8 an error instead of silently becoming U+FFFD.
const utf8 = new TextDecoder('utf-8', { fatal: true });

function decodeWith<T>(table: ReadonlyMap<string, Schema>, input: Uint8Array | string): Decoded<T> {
  let text: string;
  if (typeof input === 'string') {
    text = input;
  } else {
    try {
      text = utf8.decode(input);
    } catch {
      return { ok: false, error: 'the message is not valid UTF-8' };
    }
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return { ok: false, error: 'the message is not valid JSON' };
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    return { ok: false, error: 'the message must be a JSON object' };
  }
  const fields = parsed as Record<string, unknown>;
  const type = Object.hasOwn(fields, 'type') ? fields.type : undefined;
  if (typeof type !== 'string') {
    return { ok: false, error: 'the message needs a "type" field holding a string' };
  }
  const schema = table.get(type);
  if (schema === undefined) {
    return { ok: false, error: `unknown message type ${JSON.stringify(type.slice(0, 40))}` };
  }
  const message: Record<string, unknown> = { type };
  for (const [name, kind] of schema) {
    const value = Object.hasOwn(fields, name) ? fields[name] : undefined;
    if (!fieldIsValid(kind, value)) {
      return { ok: false, error: `"${type}" needs a field "${name}" holding ${describeKind(kind)}` };
    }
    message[name] = kind === 'names' ? [...(value as string[])] : value;
  }
  return { ok: true, message: message as T };
}

function describeKind(kind: FieldKind): string {
  switch (kind) {
    case 'string': return 'a string';
    case 'text': return 'a non-empty string';
    case 'port': return 'a port number (1–65535)';
    case 'positive': return 'a whole number of at least 1';
    case 'time': return 'a time in milliseconds';
    case 'names': return 'a list of strings';
    case 'error_code': return 'a known error code';
    case 'decline_reason': return 'one of declined, busy, timeout, bad_ticket';
  }
}

/** A request line as the registry receives it. */
export function decodeRequest(input: Uint8Array | string): Decoded<Request> {
  return decodeWith<Request>(REQUEST_SCHEMAS, input);
}
/** An answer line as the client receives it from the registry. */
export function decodeReply(input: Uint8Array | string): Decoded<Reply> {
  return decodeWith<Reply>(REPLY_SCHEMAS, input);
}
/** A UDP datagram (either direction: hello to the registry, session_unknown back). */
export function decodeDatagram(input: Uint8Array | string): Decoded<Hello | SessionUnknown> {
  return decodeWith<Hello | SessionUnknown>(DATAGRAM_SCHEMAS, input);
}
/** A line from the other client in a chat. */
export function decodePeerMessage(input: Uint8Array | string): Decoded<PeerMessage> {
  return decodeWith<PeerMessage>(PEER_SCHEMAS, input);
}

/** One message as one line of text, ready to write to a TCP socket. */
export function encodeLine(message: Request | Reply | PeerMessage): string {
  return JSON.stringify(message) + '\n';
}

/** One message as one datagram. */
export function encodeDatagram(message: Hello | SessionUnknown): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(message));
}

// ============================================================================================
// The line splitter
// ============================================================================================
//
// TCP delivers a stream of bytes, not messages: one `data` event may hold half a line, or three
// lines and the start of a fourth. The splitter keeps the unfinished tail and hands back whole
// lines. It works on bytes, not strings, for two reasons: a multi-byte UTF-8 character may be cut
// between two chunks, and we want to refuse an over-long line before decoding any of it.
//
// A trailing "\r" is dropped so `nc -C` (CRLF line ends) works too. Empty lines are skipped, so a
// person pressing Enter in nc gets no error.

export type SplitResult = {
  /** The complete lines found, without their line ends. */
  lines: Uint8Array[];
  /** True when a line grew past the limit; the caller should answer and hang up. */
  tooLong: boolean;
};

export class LineSplitter {
  /** The longest line accepted, in bytes. */
  readonly maxLineBytes: number;
  /** Bytes received after the last "\n": the start of a line still being written. */
  private pendingChunks: Uint8Array[] = [];
  /** Total length of `pendingChunks`, so the limit check costs nothing. */
  private pendingBytes = 0;

  constructor(maxLineBytes: number = MAX_LINE_BYTES) {
    this.maxLineBytes = maxLineBytes;
  }

  /** How many bytes of an unfinished line are waiting for their "\n". */
  get bufferedBytes(): number {
    return this.pendingBytes;
  }

  /** Feed the next chunk from the socket; get back the lines it completed. */
  push(chunk: Uint8Array): SplitResult {
    const lines: Uint8Array[] = [];
    let start = 0;
    let newline = chunk.indexOf(10); // 10 is "\n"
    while (newline !== -1) {
      let line = chunk.subarray(start, newline);
      if (this.pendingBytes > 0) {
        line = joinChunks([...this.pendingChunks, line], this.pendingBytes + line.length);
        this.pendingChunks = [];
        this.pendingBytes = 0;
      }
      if (line.length > this.maxLineBytes) return { lines, tooLong: true };
      if (line.length > 0 && line[line.length - 1] === 13) line = line.subarray(0, line.length - 1);
      if (line.length > 0) lines.push(line);
      start = newline + 1;
      newline = chunk.indexOf(10, start);
    }
    if (start < chunk.length) {
      const tail = chunk.subarray(start);
      this.pendingBytes += tail.length;
      if (this.pendingBytes > this.maxLineBytes) return { lines, tooLong: true };
      // Copy: the socket may reuse the memory behind `chunk` after this event.
      this.pendingChunks.push(tail.slice());
    }
    return { lines, tooLong: false };
  }
}

function joinChunks(chunks: Uint8Array[], totalBytes: number): Uint8Array {
  const joined = new Uint8Array(totalBytes);
  let offset = 0;
  for (const chunk of chunks) {
    joined.set(chunk, offset);
    offset += chunk.length;
  }
  return joined;
}

// ============================================================================================
// Tickets
// ============================================================================================
//
// The registry knows who you are (you logged in); the peer you call does not. When you search
// for bob, the registry hands you a ticket: "alice may call bob until time T", signed with an
// HMAC whose key is bob's session token — a secret only bob's client and the registry share.
// You pass the ticket to bob with your chat request; bob's client recomputes the HMAC with its
// own token and so knows the registry vouched for you, without asking the registry anything.
//
// Format (opaque to the caller): "v1.<caller>.<callee>.<expiresAtMs>.<hmac hex>", with the two
// names in base64url because a username may itself contain a dot.

function ticketSignature(key: string, caller: string, callee: string, expiresAt: number): string {
  return createHmac('sha256', key)
    .update(`p2p-chat ticket\n${normaliseUsername(caller)}\n${normaliseUsername(callee)}\n${expiresAt}`)
    .digest('hex');
}

function base64url(text: string): string {
  return Buffer.from(text, 'utf8').toString('base64url');
}

/** Made by the registry in answer to `search`. `calleeToken` is the peer's session token. */
export function makeTicket(calleeToken: string, caller: string, callee: string, expiresAt: number): string {
  const signature = ticketSignature(calleeToken, caller, callee, expiresAt);
  return ['v1', base64url(caller), base64url(callee), String(expiresAt), signature].join('.');
}

export type TicketCheck = 'valid' | 'forged' | 'expired' | 'wrong_caller' | 'wrong_callee';

/** Run by the called client on an incoming chat_request, with its own session token. */
export function checkTicket(
  ownToken: string,
  ticket: string,
  claimedCaller: string,
  ownName: string,
  now: number = Date.now(),
): TicketCheck {
  // Buffer.from(…, 'hex' | 'base64url') skips characters it does not understand, so each part is
  // checked strictly first: otherwise "<signature>x" would pass as the signature.
  const parts = ticket.split('.');
  if (parts.length !== 5 || parts[0] !== 'v1' || !/^\d{1,15}$/.test(parts[3]) || !/^[0-9a-f]{64}$/.test(parts[4])) {
    return 'forged';
  }
  const caller = Buffer.from(parts[1], 'base64url').toString('utf8');
  const callee = Buffer.from(parts[2], 'base64url').toString('utf8');
  if (base64url(caller) !== parts[1] || base64url(callee) !== parts[2]) return 'forged';
  const expiresAt = Number(parts[3]);
  const expected = Buffer.from(ticketSignature(ownToken, caller, callee, expiresAt), 'hex');
  const given = Buffer.from(parts[4], 'hex');
  // timingSafeEqual: comparing byte by byte and stopping at the first difference would tell an
  // attacker, through timing, how many leading bytes of a guess were right.
  if (!timingSafeEqual(given, expected)) return 'forged';
  if (normaliseUsername(caller) !== normaliseUsername(claimedCaller)) return 'wrong_caller';
  if (normaliseUsername(callee) !== normaliseUsername(ownName)) return 'wrong_callee';
  if (now > expiresAt) return 'expired';
  return 'valid';
}

// ============================================================================================
// Shared by the two programs' command lines
// ============================================================================================

/** The message of anything thrown, for a sentence shown to a person or written to the log. */
export function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** A mistake on the command line: printed with a pointer to --help, exit code 2. */
export class UsageError extends Error {}

/** Parses a whole-number flag, or explains what is wrong with it. */
export function numberFlag(flag: string, value: string | undefined, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < min || parsed > max) {
    throw new UsageError(`--${flag} needs a whole number from ${min} to ${max}, not "${value}"`);
  }
  return parsed;
}

/** True when the module whose `import.meta` is passed was started directly (`tsx server.ts`,
 * `deno run server.ts`) rather than imported by a test or a benchmark. Deno says so itself with
 * import.meta.main; on Node we compare the module's URL with the script Node was asked to run. */
export function isMainModule(meta: ImportMeta): boolean {
  const denoMain = (meta as { main?: boolean }).main;
  if (denoMain !== undefined) return denoMain;
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    return pathToFileURL(realpathSync(entry)).href === meta.url;
  } catch {
    return false;
  }
}
