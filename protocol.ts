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
 * can type the protocol into `nc`; on UDP each object is one datagram. Unless a registry runs with
 * --plain, the TCP lines travel inside a secure channel (secure.ts: TCP → secure channel → lines
 * → JSON), and hellos are signed instead of carrying the session's token.
 *
 * The client's two sockets that speak it live here too: askRegistry (one request, one answer)
 * and PeerChannel (one chat connection). They turn bytes into checked messages and nothing more,
 * so client.ts is left with what the client does with them, and bench/ can use them alone.
 *
 * Layout of this file:
 *   - defaults and limits
 *   - message types (TypeScript types only; they vanish at run time)
 *   - the validating decoder: bytes → typed message, or a typed error, and never an exception
 *   - the line splitter that cuts a TCP byte stream into lines, with a length limit
 *   - tickets: how the registry vouches for a caller to the peer being called
 *   - showing a stranger's text: what a program does before a screen shows it
 *   - askRegistry and PeerChannel: conversations (1) and (3) on a socket, from a client's side,
 *     in clear or over a SecureLink
 *   - small command-line helpers that server.ts and client.ts share
 */

import { Buffer } from 'node:buffer';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { realpathSync } from 'node:fs';
import net from 'node:net';
import process from 'node:process';
import { pathToFileURL } from 'node:url';
import {
  SecureChannelError, SecureSocket, secureSocket, sessionMac, sessionMacValid,
} from './secure.ts';
import type { KeyPair } from './secure.ts';

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
/** The most names one `online` answer carries, so the answer always fits in one line (100 names
 * of 32 characters are about 3.5 KiB). `total` says how many matched; a prefix narrows. */
export const MAX_LISTED_USERS = 100;

/** The form in which a username is stored and compared: "Alice" and "alice" are one account. */
export function normaliseUsername(username: string): string {
  return username.toLowerCase();
}

/** True when two usernames name the same account. */
export function sameUsername(a: string, b: string): boolean {
  return normaliseUsername(a) === normaliseUsername(b);
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
/** `device` (optional): the proof of an earlier login on this device that `logged_in` gave. */
export type LoginRequest = {
  type: 'login'; username: string; password: string; chatPort: number; device?: string;
};
/** Asked before a new password, so a taken name is reported at once. */
export type CheckUsernameRequest = { type: 'check_username'; username: string };
export type SearchRequest = { type: 'search'; token: string; username: string };
/** `prefix` (optional) narrows the answer to names starting with it, ignoring case. */
export type ListRequest = { type: 'list'; token: string; prefix?: string };
export type LogoutRequest = { type: 'logout'; token: string };
export type Request = RegisterRequest | CheckUsernameRequest | LoginRequest | SearchRequest
  | ListRequest | LogoutRequest;

// ---- (1) Registry answers, registry → client over TCP, one per request, in request order ----

export type Registered = { type: 'registered'; username: string };
export type UsernameFree = { type: 'username_free'; username: string };
/** Where the registry keeps accounts: in its memory (gone when it restarts) or in MongoDB. */
export type Storage = 'memory' | 'mongodb';
export type LoggedIn = {
  type: 'logged_in';
  username: string;
  token: string;
  heartbeatMs: number;
  timeoutMs: number;
  storage: Storage;
  /** True when this login ended a live session of the same user (a login elsewhere, or a client
   * that crashed without logging out). Absent otherwise. */
  replaced?: boolean;
  /** A proof that this device logged in as this user: the client keeps it (per user and
   * registry) and sends it with its next logins, which are then judged by their own count. */
  device?: string;
  /** A secure registry's hello credentials: the session's public name and the key that signs
   * its hellos (see Hello). A plain registry leaves them out and takes hellos with the token. */
  session?: string;
  helloKey?: string;
};
/** `key` (secure registry only): the callee's identity key, as the callee's own login proved it;
 * the caller's handshake must find that key at host:port. */
export type Found = {
  type: 'found'; username: string; host: string; port: number; ticket: string; key?: string;
};
/** At most MAX_LISTED_USERS names, sorted ignoring case; `total` counts every match. */
export type Online = { type: 'online'; users: string[]; total: number };
export type LoggedOut = { type: 'logged_out' };

/** Why a request failed. `message` in ErrorReply is the same thing in words for a person. */
export type ErrorCode =
  | 'bad_request' // not JSON, not an object, unknown type, wrong fields, invalid UTF-8, too long
  | 'invalid_username'
  | 'invalid_password'
  | 'username_taken'
  | 'bad_credentials' // wrong password or no such user: deliberately the same answer
  | 'not_logged_in' // unknown or expired token
  | 'not_online'
  | 'storage_unavailable'
  | 'too_many_attempts'
  | 'too_many_connections';
export type ErrorReply = { type: 'error'; code: ErrorCode; message: string };

export type Reply = Registered | UsernameFree | LoggedIn | Found | Online | LoggedOut | ErrorReply;

// ---- (2) Presence, over UDP ----

/** Two forms. A secure registry's: `session` names the session, `counter` only grows, and `mac`
 * is signedHello()'s MAC under the helloKey that crossed the secure link, so a hello shows no
 * secret and a copied one is stale. A plain registry's (the nc lesson): the session `token`. */
export type Hello = {
  type: 'hello'; username: string; token?: string; session?: string; counter?: number;
  mac?: string;
};
/** Sent back for a hello whose session the registry does not know: it restarted, or swept us, or
 * (reason "replaced") the same user logged in again somewhere else, which ended this session.
 * Anyone can send a datagram from the registry's address, so a client of a secure registry takes
 * it as a hint and asks over the secure link before it believes it. */
export type SessionUnknown = { type: 'session_unknown'; reason?: 'replaced' };

// ---- (3) Peer to peer, client ↔ client over TCP ----

/** `acks: true` (in a request and in its acceptance) says: I acknowledge each msg that has an
 * `id`, and I understand `ack`. A peer that leaves it out (an older client) is never sent one. */
export type ChatRequest = { type: 'chat_request'; from: string; ticket: string; acks?: true };
export type ChatAccept = { type: 'chat_accept'; acks?: true };
export type DeclineReason = 'declined' | 'busy' | 'timeout' | 'bad_ticket';
export type ChatDecline = { type: 'chat_decline'; reason: DeclineReason };
/** `at` is when it was written, in milliseconds since the Unix epoch. `id` counts the sender's
 * messages in this chat from 1, for the acknowledgements. */
export type ChatMessage = { type: 'msg'; text: string; at: number; id?: number };
/** "I have received your messages up to `id`": TCP keeps them in order, so one ack covers all
 * earlier ones too. */
export type Ack = { type: 'ack'; id: number };
export type Bye = { type: 'bye' };
export type PeerMessage = ChatRequest | ChatAccept | ChatDecline | ChatMessage | Ack | Bye;

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
  | 'username' // a string that follows the username rule (USERNAME_PATTERN)
  | 'usernames' // an array of those
  | 'host' // an IP address, or a name made of letters, digits, "." and "-"
  | 'port' // an integer 1–65535
  | 'positive' // an integer ≥ 1
  | 'count' // an integer ≥ 0
  | 'time' // a finite number (milliseconds since the epoch)
  | 'true' // the value true
  | 'storage' // "memory" or "mongodb"
  | 'replaced' // the word "replaced"
  | 'error_code'
  | 'decline_reason'
  | 'key'; // a public key: 32 bytes in base64url

/** A field's kind, with "?" when the field may be left out. */
type FieldSpec = FieldKind | `${FieldKind}?`;

/** The fields of one message type, as [name, kind, optional] triples. */
type Schema = ReadonlyArray<readonly [string, FieldKind, boolean]>;

/** Which messages can arrive on one channel. A Map, not a plain object, so that a "type" of
 * "toString" or "__proto__" finds nothing rather than something inherited from Object.prototype. */
function schemas(table: Record<string, Record<string, FieldSpec>>): ReadonlyMap<string, Schema> {
  return new Map(Object.entries(table).map(([type, fields]) => [
    type,
    Object.entries(fields).map(([name, spec]) => {
      const optional = spec.endsWith('?');
      return [name, (optional ? spec.slice(0, -1) : spec) as FieldKind, optional] as const;
    }),
  ]));
}

const REQUEST_SCHEMAS = schemas({
  register: { username: 'string', password: 'string' },
  check_username: { username: 'string' },
  login: { username: 'string', password: 'string', chatPort: 'port', device: 'string?' },
  search: { token: 'string', username: 'string' },
  list: { token: 'string', prefix: 'string?' },
  logout: { token: 'string' },
});

// What the registry sends is checked as strictly as what a stranger sends: a client must not print
// a "username" holding escape codes, or build a file name from one, just because it came from the
// address it asked. So names must follow the username rule and a host must look like one.
const REPLY_SCHEMAS = schemas({
  registered: { username: 'username' },
  username_free: { username: 'username' },
  logged_in: {
    username: 'username', token: 'text', heartbeatMs: 'positive', timeoutMs: 'positive',
    storage: 'storage', replaced: 'true?', device: 'text?', session: 'text?', helloKey: 'key?',
  },
  found: { username: 'username', host: 'host', port: 'port', ticket: 'text', key: 'key?' },
  online: { users: 'usernames', total: 'count' },
  logged_out: {},
  error: { code: 'error_code', message: 'string' },
});

const DATAGRAM_SCHEMAS = schemas({
  hello: {
    username: 'string', token: 'string?', session: 'string?', counter: 'positive?', mac: 'string?',
  },
  session_unknown: { reason: 'replaced?' },
});

// `from` must follow the username rule before anything else looks at it: lower-casing alone
// would turn "\u212Aate" (with a KELVIN SIGN) into "kate".
const PEER_SCHEMAS = schemas({
  chat_request: { from: 'username', ticket: 'string', acks: 'true?' },
  chat_accept: { acks: 'true?' },
  chat_decline: { reason: 'decline_reason' },
  msg: { text: 'string', at: 'time', id: 'positive?' },
  ack: { id: 'positive' },
  bye: {},
});

const ERROR_CODES: ReadonlySet<string> = new Set<ErrorCode>([
  'bad_request', 'invalid_username', 'invalid_password', 'username_taken', 'bad_credentials',
  'not_logged_in', 'not_online', 'storage_unavailable', 'too_many_attempts',
  'too_many_connections',
]);
const DECLINE_REASONS: ReadonlySet<string> = new Set<DeclineReason>([
  'declined', 'busy', 'timeout', 'bad_ticket',
]);

/** A host name as DNS allows it: labels of letters, digits and "-", joined by dots. */
const HOST_NAME_PATTERN = /^(?=.{1,253}$)[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})*$/;

const isUsername = (value: unknown) => typeof value === 'string' && USERNAME_PATTERN.test(value);
const isWholeNumber = (value: unknown, min: number, max = Infinity) =>
  Number.isInteger(value) && (value as number) >= min && (value as number) <= max;

function fieldIsValid(kind: FieldKind, value: unknown): boolean {
  switch (kind) {
    case 'string': return typeof value === 'string';
    case 'text': return typeof value === 'string' && value.length > 0;
    case 'username': return isUsername(value);
    case 'usernames': return Array.isArray(value) && value.every(isUsername);
    case 'host':
      return typeof value === 'string' && (net.isIP(value) !== 0 || HOST_NAME_PATTERN.test(value));
    case 'port': return isWholeNumber(value, 1, 65535);
    case 'positive': return isWholeNumber(value, 1);
    case 'count': return isWholeNumber(value, 0);
    case 'time': return typeof value === 'number' && Number.isFinite(value);
    case 'true': return value === true;
    case 'storage': return value === 'memory' || value === 'mongodb';
    case 'replaced': return value === 'replaced';
    case 'error_code': return typeof value === 'string' && ERROR_CODES.has(value);
    case 'decline_reason': return typeof value === 'string' && DECLINE_REASONS.has(value);
    case 'key': return typeof value === 'string' && /^[A-Za-z0-9_-]{43}$/.test(value);
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
  for (const [name, kind, optional] of schema) {
    const value = Object.hasOwn(fields, name) ? fields[name] : undefined;
    if (value === undefined && optional) continue;
    if (!fieldIsValid(kind, value)) {
      const needs = optional ? 'may have a field' : 'needs a field';
      return { ok: false, error: `"${type}" ${needs} "${name}" holding ${describeKind(kind)}` };
    }
    message[name] = kind === 'usernames' ? [...(value as string[])] : value;
  }
  return { ok: true, message: message as T };
}

function describeKind(kind: FieldKind): string {
  switch (kind) {
    case 'string': return 'a string';
    case 'text': return 'a non-empty string';
    case 'username': return 'a username (1–32 of A–Z a–z 0–9 _ . -)';
    case 'usernames': return 'a list of usernames';
    case 'host': return 'an IP address or host name';
    case 'port': return 'a port number (1–65535)';
    case 'positive': return 'a whole number of at least 1';
    case 'count': return 'a whole number of at least 0';
    case 'time': return 'a time in milliseconds';
    case 'true': return 'true';
    case 'storage': return '"memory" or "mongodb"';
    case 'replaced': return '"replaced"';
    case 'error_code': return 'a known error code';
    case 'decline_reason': return 'one of declined, busy, timeout, bad_ticket';
    case 'key': return 'a public key (32 bytes in base64url)';
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

/** True when `reply` answers `request`, about the name asked about. The decoder checks an
 * answer's fields; this checks that it is an answer to the question, so a client never acts on
 * one that is not (the registry's word is checked like a stranger's). Used by askRegistry. */
export function answerFits(request: Request, reply: Reply): boolean {
  const sameName = (name: string) => 'username' in request && sameUsername(name, request.username);
  switch (reply.type) {
    case 'error': return true;
    case 'registered': return request.type === 'register' && sameName(reply.username);
    case 'username_free': return request.type === 'check_username' && sameName(reply.username);
    case 'logged_in': return request.type === 'login' && sameName(reply.username);
    case 'found': return request.type === 'search' && sameName(reply.username);
    case 'online':
      return request.type === 'list' && reply.users.length <= MAX_LISTED_USERS &&
        reply.total >= reply.users.length;
    case 'logged_out': return request.type === 'logout';
  }
}

/** One message as one line of text, ready to write to a TCP socket. */
export function encodeLine(message: Request | Reply | PeerMessage): string {
  return JSON.stringify(message) + '\n';
}

/** One message as one datagram. */
export function encodeDatagram(message: Hello | SessionUnknown): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(message));
}

/** A secure hello: the MAC over its name, session and counter under the session's helloKey
 * (base64url, from logged_in). Only the client and the registry know the key, so only they can
 * make one; the counter only grows, so a copied hello is stale by the time it is replayed. */
export function signedHello(helloKey: string, username: string, session: string,
  counter: number): Hello {
  const key = Buffer.from(helloKey, 'base64url');
  const mac = sessionMac(key, helloFields(username, session, counter));
  return { type: 'hello', username, session, counter, mac };
}

/** Is this hello's MAC right under `helloKey`? (Whether its counter is new is the caller's.) */
export function signedHelloValid(helloKey: Uint8Array, hello: Hello): boolean {
  const { username, session = '', counter = 0, mac } = hello;
  return sessionMacValid(helloKey, helloFields(username, session, counter), mac);
}

const helloFields = (username: string, session: string, counter: number) =>
  ['p2p-chat hello', normaliseUsername(username), session, counter];

// ============================================================================================
// The line splitter
// ============================================================================================
//
// TCP delivers a stream of bytes, not messages: one `data` event may hold half a line, or three
// lines and the start of a fourth. The splitter keeps the unfinished tail and hands back whole
// lines. It works on bytes, not strings, for two reasons: a multi-byte UTF-8 character may be cut
// between two chunks, and we want to refuse an over-long line before decoding any of it.
//
// A trailing "\r" is dropped so `nc -C` (CRLF line ends) works too; the length limit applies to
// the line without it. Empty lines are skipped, so a person pressing Enter in nc gets no error.
//
// Memory: the unfinished tail is copied into one buffer that grows by doubling, so a line costs
// about its own length however it arrives. (Keeping each chunk as it came looks simpler, but a
// peer that dribbles a line one byte per TCP segment would then make us hold thousands of tiny
// buffers, each costing a few hundred bytes of bookkeeping: ~400 bytes of memory per byte sent.)

export type SplitResult = {
  /** The complete lines found, without their line ends. */
  lines: Uint8Array[];
  /** True when a line grew past the limit; the caller should answer and hang up. */
  tooLong: boolean;
};

const NO_BYTES = new Uint8Array(0);
const LF = 10;
const CR = 13;

export class LineSplitter {
  /** The longest line accepted, in bytes, not counting its line end. */
  readonly maxLineBytes: number;
  /** Bytes received after the last "\n" (the start of a line still being written) are the first
   * `pendingBytes` bytes of this buffer; the rest is room to grow. */
  private pending: Uint8Array = NO_BYTES;
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
    // The longest a line may be while we still wait for its "\n": the limit, plus a "\r".
    const mostBytesHeld = this.maxLineBytes + 1;
    let start = 0;
    let newline = chunk.indexOf(LF);
    while (newline !== -1) {
      let line = chunk.subarray(start, newline);
      if (this.pendingBytes > 0) {
        if (this.pendingBytes + line.length > mostBytesHeld) return { lines, tooLong: true };
        this.hold(line);
        line = this.pending.slice(0, this.pendingBytes); // a copy: the buffer is about to go
        this.pending = NO_BYTES;
        this.pendingBytes = 0;
      }
      if (line.length > 0 && line[line.length - 1] === CR) line = line.subarray(0, line.length - 1);
      if (line.length > this.maxLineBytes) return { lines, tooLong: true };
      if (line.length > 0) lines.push(line);
      start = newline + 1;
      newline = chunk.indexOf(LF, start);
    }
    if (start < chunk.length) {
      const tail = chunk.subarray(start);
      if (this.pendingBytes + tail.length > mostBytesHeld) return { lines, tooLong: true };
      this.hold(tail);
      // Past the limit, only a "\r" that the "\n" will follow can still make a valid line.
      const last = this.pending[this.pendingBytes - 1];
      if (this.pendingBytes > this.maxLineBytes && last !== CR) return { lines, tooLong: true };
    }
    return { lines, tooLong: false };
  }

  /** Appends bytes to the unfinished line, growing its buffer by doubling when it is full. We
   * copy rather than keep `bytes`: the socket may reuse the memory behind it after this event. */
  private hold(bytes: Uint8Array): void {
    const needed = this.pendingBytes + bytes.length;
    if (needed > this.pending.length) {
      const grown = new Uint8Array(Math.min(Math.max(64, needed * 2), this.maxLineBytes + 1));
      grown.set(this.pending.subarray(0, this.pendingBytes));
      this.pending = grown;
    }
    this.pending.set(bytes, this.pendingBytes);
    this.pendingBytes = needed;
  }
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
// On a secure registry the ticket also names your identity key, and bob checks it against the key
// your handshake proved: a ticket copied off the wire is useless without your private key.
//
// Format (opaque to the caller): "v2.<caller>.<callee>.<expiresAtMs>.<hmac hex>", with the two
// names in base64url because a username may itself contain a dot. The key is in the HMAC only:
// bob learns it from the handshake.

function ticketSignature(
  key: string, caller: string, callee: string, expiresAt: number, callerKey: string,
): string {
  return createHmac('sha256', key)
    .update(['p2p-chat ticket', normaliseUsername(caller), normaliseUsername(callee), expiresAt,
      callerKey].join('\n'))
    .digest('hex');
}

function base64url(text: string): string {
  return Buffer.from(text, 'utf8').toString('base64url');
}

/** Made by the registry in answer to `search`. `calleeToken` is the peer's session token;
 * `callerKey` the caller's identity key (base64url), or '' on a plain registry. */
export function makeTicket(
  calleeToken: string,
  caller: string,
  callee: string,
  expiresAt: number,
  callerKey = '',
): string {
  const signature = ticketSignature(calleeToken, caller, callee, expiresAt, callerKey);
  return ['v2', base64url(caller), base64url(callee), String(expiresAt), signature].join('.');
}

export type TicketCheck = 'valid' | 'forged' | 'expired' | 'wrong_caller' | 'wrong_callee';

/** Run by the called client on an incoming chat_request, with its own session token and the key
 * the caller's handshake proved (base64url; '' on a plain link). A ticket for another key reads
 * as forged: the HMAC cannot tell a changed key from a changed anything else. */
export function checkTicket(
  ownToken: string,
  ticket: string,
  claimedCaller: string,
  ownName: string,
  now: number = Date.now(),
  callerKey = '',
): TicketCheck {
  // Buffer.from(…, 'hex' | 'base64url') skips characters it does not understand, so each part is
  // checked strictly first: otherwise "<signature>x" would pass as the signature.
  const parts = ticket.split('.');
  const wellFormed = parts.length === 5 && parts[0] === 'v2' && /^\d{1,15}$/.test(parts[3]) &&
    /^[0-9a-f]{64}$/.test(parts[4]);
  if (!wellFormed) return 'forged';
  const caller = Buffer.from(parts[1], 'base64url').toString('utf8');
  const callee = Buffer.from(parts[2], 'base64url').toString('utf8');
  if (base64url(caller) !== parts[1] || base64url(callee) !== parts[2]) return 'forged';
  const expiresAt = Number(parts[3]);
  const expected =
    Buffer.from(ticketSignature(ownToken, caller, callee, expiresAt, callerKey), 'hex');
  const given = Buffer.from(parts[4], 'hex');
  // timingSafeEqual: comparing byte by byte and stopping at the first difference would tell an
  // attacker, through timing, how many leading bytes of a guess were right.
  if (!timingSafeEqual(given, expected)) return 'forged';
  if (!sameUsername(caller, claimedCaller)) return 'wrong_caller';
  if (!sameUsername(callee, ownName)) return 'wrong_callee';
  if (now > expiresAt) return 'expired';
  return 'valid';
}

// ============================================================================================
// Showing a stranger's text
// ============================================================================================
//
// The decoder accepts a chat line as it is: a message may hold any text. What a program does
// before it shows such text, or writes it where a terminal will show it, is here.

/** Text from the network shown on our screen, or written to a history file, loses what could
 * rearrange the screen: control characters (escape codes move the cursor, retitle the window,
 * erase lines), bidi controls (which make text read backwards), and invisible separators and
 * zero-width characters. Each becomes a visible U+FFFD. The zero-width joiner stays: it is
 * what glues emoji like 👨‍👩‍👧 together. */
export function printable(text: string): string {
  return text.replace(UNPRINTABLE, '\uFFFD');
}
const UNPRINTABLE = new RegExp('[\\u0000-\\u001f\\u007f-\\u009f' + // C0 and C1 controls, DEL
  '\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069' + // bidi controls
  '\\u200b\\u2028\\u2029\\u2060-\\u2065\\ufeff\\ufff9-\\ufffb]', 'g'); // invisible, separators

/** A stranger's text in one of our sentences: printable, and at most 40 characters. */
export function quoteSafely(text: string): string {
  const chars = [...printable(text)];
  if (chars.length <= 40) return chars.join('');
  return `${chars.slice(0, 40).join('')}…`;
}

// ============================================================================================
// askRegistry: one request, one answer
// ============================================================================================
//
// The client's side of conversation (1). Each request opens a fresh TCP connection, sends one
// line, reads one line, and closes. That costs a few milliseconds more than keeping a connection
// open, but there is nothing to keep alive, nothing to reconnect, and a registry that went away
// is noticed exactly when we need it.

/** Both sides of every secure link hash this into their handshake: a client or registry of
 * another protocol version fails the handshake instead of misreading lines. */
export const PROLOGUE = 'p2p-chat secure 1';

/** How to open a secure link (secure.ts): our long-term key, and the key the other side must
 * prove, if we know it (a pinned registry, the callee from `found`). `onRemoteKey` learns the
 * key the other side proved, before any line is sent: the place to pin a registry on first use,
 * or to refuse the key by throwing. */
export type SecureLink = {
  staticKey: KeyPair;
  expectedRemoteKey?: Uint8Array;
  onRemoteKey?: (publicKey: Buffer) => void;
};

/** Runs the handshake on a connected socket (the initiator's side of SecureLink). */
function openSecure(socket: net.Socket, link: SecureLink, timeoutMs: number) {
  return secureSocket(socket, {
    initiator: true, staticKey: link.staticKey, expectedRemoteKey: link.expectedRemoteKey,
    prologue: PROLOGUE, timeoutMs,
  });
}

/** What a client says of an answer that is not one. Such an answer is never shown, not even
 * traced: it may hold anything. */
export const INVALID_ANSWER = 'the registry sent an invalid answer';

/** What the usual socket error codes mean, for a person who has not met them. */
const SOCKET_ERRORS: Record<string, string> = {
  ECONNREFUSED: 'nothing is listening on that port (is the registry running?)',
  ENOTFOUND: 'no computer has that name', EAI_AGAIN: 'the name could not be looked up',
  EHOSTUNREACH: 'that computer cannot be reached', ENETUNREACH: 'that network cannot be reached',
  ETIMEDOUT: 'the computer did not answer', ECONNRESET: 'the connection was cut',
};

/** Sends `request` to the registry at `host`:`port` and resolves with its answer, decoded and
 * checked to fit the question (answerFits), or rejects with a sentence that names the registry
 * by `name`. `onTrace` sees each line sent and each valid answer, for --trace. With `secure`,
 * the line crosses a secure link: a handshake per request, which costs more than keeping one
 * connection open, but a person asks a few times a minute (bench/README.md has the cost). A failed
 * handshake rejects with the SecureChannelError, whose code says why. */
export function askRegistry(
  request: Request,
  registry: { host: string; port: number; name: string },
  timeoutMs: number,
  onTrace?: (direction: 'in' | 'out', line: string) => void,
  secure?: SecureLink,
): Promise<Reply> {
  const { host, port, name } = registry;
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    let stream: net.Socket | SecureSocket = socket;
    const splitter = new LineSplitter();
    const finish = (outcome: Reply | string | Error) => {
      clearTimeout(timer);
      stream.destroy();
      socket.destroy();
      if (outcome instanceof Error) reject(outcome);
      else if (typeof outcome === 'string') reject(new Error(outcome));
      else resolve(outcome);
    };
    const timer = setTimeout(() => {
      finish(`no answer from the registry at ${name} within ${timeoutMs} ms`);
    }, timeoutMs);
    const talk = (connected: net.Socket | SecureSocket) => {
      stream = connected;
      connected.on('data', onData);
      const line = encodeLine(request);
      onTrace?.('out', line.trimEnd());
      connected.write(line);
    };
    let handshaking = false;
    socket.on('connect', () => {
      if (!secure) return talk(socket);
      handshaking = true;
      openSecure(socket, secure, timeoutMs).then((sealed) => {
        sealed.on('error', (error: Error) => finish(`the link to the registry at ${name} ` +
          `failed: ${error.message}`));
        sealed.on('close', () => finish('the registry closed the connection without answering'));
        try {
          secure.onRemoteKey?.(sealed.remoteStaticKey); // may refuse the key by throwing
        } catch (error) {
          return finish(error as Error);
        }
        talk(sealed);
      }, (error: SecureChannelError) => {
        finish(new SecureChannelError(error.code, `registry at ${name}: ${error.message}`));
      });
    });
    const onData = (chunk: Uint8Array) => {
      const { lines, tooLong } = splitter.push(chunk);
      if (tooLong) return finish(INVALID_ANSWER);
      if (lines.length === 0) return;
      const decoded = decodeReply(lines[0]);
      if (!decoded.ok || !answerFits(request, decoded.message)) return finish(INVALID_ANSWER);
      onTrace?.('in', JSON.stringify(decoded.message));
      finish(decoded.message);
    };
    // Once a handshake starts, secureSocket and then the secure stream report the failures.
    socket.on('error', (error: NodeJS.ErrnoException) => {
      if (handshaking) return;
      const words = SOCKET_ERRORS[error.code ?? ''];
      finish(`cannot reach the registry at ${name} (${error.code ?? error.message})` +
        (words ? `: ${words}` : ''));
    });
    socket.on('close', () => {
      if (!handshaking) finish('the registry closed the connection without answering');
    });
  });
}

// ============================================================================================
// PeerChannel: one connection between two clients
// ============================================================================================
//
// Between two clients the protocol is the same as with the registry: one JSON object per line.
// PeerChannel wraps one net.Socket and turns it into messages in both directions. It knows
// nothing about screens or users: client.ts gives it handlers, and the benchmark in bench/ uses
// it on its own, without loading the client.
//
// What it protects against: a peer is just another program on the network and may be broken or
// hostile. A line that is not a valid peer message, a line longer than MAX_LINE_BYTES, or
// silence past a deadline set with expectWithin() ends the connection, and the owner is told
// why through onClose. Nothing a peer sends can throw an exception into our program.

/** Why a PeerChannel ended. */
export type PeerChannelEnd =
  | { kind: 'ended' } // the other side closed the connection
  | { kind: 'error'; detail: string } // the socket failed, e.g. ECONNRESET
  | { kind: 'garbage'; detail: string } // a line that is not a valid peer message
  | { kind: 'too_long' } // a line longer than the limit
  | { kind: 'silent'; waitedMs: number }; // nothing arrived before the expectWithin() deadline

/** What a PeerChannel tells its owner. */
export type PeerChannelHandlers = {
  /** Each valid message, in order. */
  onMessage: (message: PeerMessage, channel: PeerChannel) => void;
  /** Once, when the connection ends for any reason other than our own close(). */
  onClose: (why: PeerChannelEnd, channel: PeerChannel) => void;
  /** Optional: every line sent ('out') or received ('in'), for --trace. */
  onTrace?: (direction: 'in' | 'out', line: string, channel: PeerChannel) => void;
  /** Optional: more than MAX_QUEUED_BYTES wait to be sent (true: the peer is not reading), and
   * later all of it went out (false). */
  onStalled?: (stalled: boolean, channel: PeerChannel) => void;
};

/** How much may wait to be sent to one peer before the owner hears that it is not reading. */
const MAX_QUEUED_BYTES = 1024 * 1024;

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
 * After close() or onClose nothing more is delivered and send() does nothing. On a secure link
 * the socket is a SecureSocket (the stream after the handshake): lines are the same.
 */
export class PeerChannel {
  /** What lines travel on: the TCP connection, or on a secure link the secure stream over it. */
  socket: net.Socket | SecureSocket;
  /** The key the other side's handshake proved (base64url); '' on a plain link, or until then. */
  remoteKey = '';
  /** "address:port" of the other end, for messages. */
  readonly remote: string;
  /** False once the channel has ended, by our close() or by anything else. */
  isOpen = true;
  private readonly handlers: PeerChannelHandlers;
  private readonly splitter: LineSplitter;
  private silenceTimer: ReturnType<typeof setTimeout> | undefined; // the expectWithin() deadline
  /** True from the send that queued more than MAX_QUEUED_BYTES until the queue drains. */
  stalled = false;

  /** `answerSecurely`: we were called, on a secure link. The handshake runs first and lines are
   * read once it has passed; a failed one ends the channel as an error, saying why. */
  constructor(
    socket: net.Socket | SecureSocket, handlers: PeerChannelHandlers, maxLineBytes = MAX_LINE_BYTES,
    answerSecurely?: { staticKey: KeyPair; timeoutMs: number },
  ) {
    this.socket = socket;
    this.handlers = handlers;
    this.splitter = new LineSplitter(maxLineBytes);
    const tcp = socket instanceof SecureSocket ? socket.socket : socket;
    this.remote = `${plainAddress(tcp.remoteAddress)}:${tcp.remotePort ?? '?'}`;
    // Chat lines are small and a person is waiting for each one: send at once instead of letting
    // Nagle's algorithm hold small packets back to batch them.
    tcp.setNoDelay(true);
    if (answerSecurely === undefined) {
      this.listen(socket);
      return;
    }
    const options = { initiator: false, prologue: PROLOGUE, ...answerSecurely };
    secureSocket(tcp, options).then((sealed) => {
      this.socket = sealed;
      if (this.isOpen) this.listen(sealed);
      else sealed.destroy();
    }, (error: Error) => this.end({ kind: 'error', detail: error.message }));
  }

  private listen(stream: net.Socket | SecureSocket): void {
    if (stream instanceof SecureSocket) {
      this.remoteKey = stream.remoteStaticKey.toString('base64url');
    }
    let errorDetail: string | undefined;
    stream.on('error', (error: NodeJS.ErrnoException) => {
      // A secure stream's error is a sentence ("… was tampered with"); a socket's, a code.
      errorDetail = error instanceof SecureChannelError ? error.message
        : error.code ?? error.message;
    });
    stream.on('close', () => {
      this.end(errorDetail ? { kind: 'error', detail: errorDetail } : { kind: 'ended' });
    });
    stream.on('data', (chunk: Uint8Array) => this.receive(chunk));
  }

  /** Connects to a peer; rejects if no connection is made within timeoutMs. With `secure`, the
   * handshake must also finish (and prove the expected key) within that time. */
  static connect(
    host: string, port: number, handlers: PeerChannelHandlers, timeoutMs = 5000,
    secure?: SecureLink,
  ) {
    return new Promise<PeerChannel>((resolve, reject) => {
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
        if (!secure) return resolve(new PeerChannel(socket, handlers));
        openSecure(socket, secure, timeoutMs).then((sealed) => {
          secure.onRemoteKey?.(sealed.remoteStaticKey);
          resolve(new PeerChannel(sealed, handlers));
        }).catch((error: Error) => {
          socket.destroy();
          reject(new Error(`secure link failed: ${error.message}`));
        });
      });
    });
  }

  /** Sends one message as one line. Does nothing once the channel has ended. */
  send(message: PeerMessage): void {
    if (!this.isOpen) return;
    const line = encodeLine(message);
    this.handlers.onTrace?.('out', line.trimEnd(), this);
    this.socket.write(line);
    // The socket queues whatever the peer does not read; what the owner keeps sending must stop
    // somewhere, and the owner decides where (client.ts refuses new lines until 'drain').
    if (this.stalled || this.socket.writableLength <= MAX_QUEUED_BYTES) return;
    this.stalled = true;
    this.handlers.onStalled?.(true, this);
    this.socket.once('drain', () => {
      this.stalled = false;
      if (this.isOpen) this.handlers.onStalled?.(false, this);
    });
  }

  /** Ends the channel (reported as 'silent') unless a message arrives within `ms`. A new call
   * replaces the previous deadline; every received message clears it. */
  expectWithin(ms: number): void {
    clearTimeout(this.silenceTimer);
    this.silenceTimer = setTimeout(() => this.end({ kind: 'silent', waitedMs: ms }, true), ms);
  }

  /** Closes politely: what was sent is still delivered, then the connection ends. onClose is not
   * called for this. A peer that never closes its side is cut off after two seconds. */
  close(): void {
    if (!this.isOpen) return;
    this.isOpen = false;
    clearTimeout(this.silenceTimer);
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  /** Cuts the connection at once: nothing more is sent, read or reported. */
  destroy(): void {
    this.close();
    this.socket.destroy();
  }

  private receive(chunk: Uint8Array): void {
    if (!this.isOpen) return;
    const { lines, tooLong } = this.splitter.push(chunk);
    for (const line of lines) {
      const decoded = decodePeerMessage(line);
      this.handlers.onTrace?.('in', Buffer.from(line).toString('utf8'), this);
      if (!decoded.ok) return this.end({ kind: 'garbage', detail: decoded.error }, true);
      clearTimeout(this.silenceTimer);
      this.handlers.onMessage(decoded.message, this);
      if (!this.isOpen) return; // the handler closed us: ignore the rest of the chunk
    }
    if (tooLong) this.end({ kind: 'too_long' }, true);
  }

  /** Reports the end once, whatever caused it; `hangUp` also cuts the connection. */
  private end(why: PeerChannelEnd, hangUp = false): void {
    if (this.isOpen) {
      this.isOpen = false;
      clearTimeout(this.silenceTimer);
      this.handlers.onClose(why, this);
    }
    if (hangUp) this.socket.destroy();
  }
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

/** A command-line flag that takes a whole number: its name, the setting it changes, the range
 * it accepts, and a few words for --help. Each program lists these flags in one table, which
 * both its parser and its --help read, so the two cannot disagree. */
export type NumberFlag<Setting extends string> =
  readonly [flag: string, setting: Setting, min: number, max: number, help: string];

/** The parseArgs options for a table of number flags: each takes a value. */
export function numberFlagOptions(flags: ReadonlyArray<NumberFlag<string>>) {
  return Object.fromEntries(flags.map(([flag]) => [flag, { type: 'string' as const }]));
}

/** The settings the command line gave (a flag not given is not in the result). A value that is
 * not a whole number in range is a UsageError that says so. */
export function readNumberFlags<Setting extends string>(
  flags: ReadonlyArray<NumberFlag<Setting>>,
  values: Record<string, unknown>,
): Partial<Record<Setting, number>> {
  const settings: Partial<Record<Setting, number>> = {};
  for (const [flag, setting, min, max] of flags) {
    const value = values[flag];
    if (typeof value !== 'string') continue;
    const parsed = Number(value);
    if (!Number.isInteger(parsed) || parsed < min || parsed > max) {
      throw new UsageError(`--${flag} needs a whole number from ${min} to ${max}, not "${value}"`);
    }
    settings[setting] = parsed;
  }
  return settings;
}

/** One line of --help: the flag, then what it does (on a line of its own when the flag is
 * long). */
export function usageLine(flag: string, help: string): string {
  return flag.length < 34 ? `  ${flag.padEnd(34)}${help}` : `  ${flag}\n  ${' '.repeat(34)}${help}`;
}

/** The --help lines of a table of number flags, each with its default. */
export function numberFlagsUsage<Setting extends string>(
  flags: ReadonlyArray<NumberFlag<Setting>>,
  defaults: Record<Setting, unknown>,
): string {
  return flags.map(([flag, setting, , , help]) =>
    usageLine(`--${flag} N`, `${help} (default ${defaults[setting]})`)).join('\n');
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
