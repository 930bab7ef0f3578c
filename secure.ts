/**
 * secure.ts — the secure channel under the line protocol: TCP → secure channel → lines → JSON.
 *
 * Both links (client ↔ registry, client ↔ client) run one Noise handshake and then carry every
 * line sealed, so a capture shows sizes and timing but no password, token, ticket or chat text,
 * and a changed, replayed, reordered or injected byte ends the connection. The pattern is
 * Noise_XX_25519_ChaChaPoly_SHA256 from the Noise Protocol Framework (noiseprotocol.org), built
 * on node:crypto alone and checked byte for byte against published vectors (test/secure.test.ts).
 * Exports are what client.ts, server.ts, the tests and bench/secure.ts use.
 *
 * Layout:
 *   - primitives         X25519 with raw 32-byte keys, ChaCha20-Poly1305, SHA-256, HKDF
 *   - CipherState        one key and its message counter
 *   - SymmetricState     the running hash h and chaining key ck that every handshake step feeds
 *   - Handshake          the XX pattern (and NN, for a second vector), token by token
 *   - SecureSocket       the handshake over a net.Socket, then framed transport messages
 *   - long-term keys     key files, fingerprints, safety numbers, the session MAC for hellos
 *
 * The handshake, one line per message (e = ephemeral key, s = static key, ee/es/se = a
 * Diffie-Hellman between the named keys, mixed into the key that encrypts what follows):
 *
 *   -> e                 initiator's fresh key, in clear: nothing is shared yet
 *   <- e, ee, s, es      responder's fresh key; ee gives a secret only these two ephemerals
 *                        know, so the responder's static key travels encrypted; es proves the
 *                        responder holds that static key (only it can compute the next key)
 *   -> s, se             initiator's static key, encrypted; se proves it holds it
 *
 * Afterwards each side knows the other's static key: the caller compares it with what it
 * expected (pinned registry key, or the callee's key from `found`); the callee compares the
 * caller's with the key bound into the ticket. The handshake hash names this one session.
 */

import {
  createCipheriv, createDecipheriv, createHash, createHmac, createPrivateKey, createPublicKey,
  diffieHellman, generateKeyPairSync, timingSafeEqual,
} from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import type net from 'node:net';
import { dirname } from 'node:path';
import process from 'node:process';
import { Duplex } from 'node:stream';

// ============================================================================================
// Primitives
// ============================================================================================
//
// node:crypto speaks KeyObjects; Noise speaks raw 32-byte keys. The DER encodings of an X25519
// key are a fixed prefix followed by the raw key, so converting is slicing and prepending (JWK is
// avoided on purpose: on Node 20 exporting a fresh X25519 key as JWK can hang).

const PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');
const KEY_BYTES = 32;
const TAG_BYTES = 16;

/** A long-term or ephemeral X25519 key pair, both halves raw 32 bytes. */
export type KeyPair = { publicKey: Buffer; privateKey: Buffer };

export function generateKeyPair(): KeyPair {
  const { publicKey, privateKey } = generateKeyPairSync('x25519', {
    publicKeyEncoding: { type: 'spki', format: 'der' },
    privateKeyEncoding: { type: 'pkcs8', format: 'der' },
  });
  return { publicKey: publicKey.subarray(-KEY_BYTES), privateKey: privateKey.subarray(-KEY_BYTES) };
}

function privateKeyObject(raw: Uint8Array): KeyObject {
  if (raw.length !== KEY_BYTES) throw new Error(`a private key is ${KEY_BYTES} bytes`);
  const der = Buffer.concat([PKCS8_PREFIX, raw]);
  return createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
}

/** The key pair whose private half is `raw` (a stored key, or a test vector's fixed key). */
export function keyPairFromPrivate(raw: Uint8Array): KeyPair {
  const spki = createPublicKey(privateKeyObject(raw)).export({ format: 'der', type: 'spki' });
  return { publicKey: Buffer.from(spki.subarray(-KEY_BYTES)), privateKey: Buffer.from(raw) };
}

function dh(own: KeyPair, remotePublic: Uint8Array): Buffer {
  const publicKey = createPublicKey({
    key: Buffer.concat([SPKI_PREFIX, remotePublic]), format: 'der', type: 'spki',
  });
  return diffieHellman({ privateKey: privateKeyObject(own.privateKey), publicKey });
}

/** ChaCha20-Poly1305's 12-byte nonce, as Noise lays it out: 4 zero bytes, then the message
 * counter as 64-bit little-endian. */
function nonce(counter: number): Buffer {
  const bytes = Buffer.alloc(12);
  bytes.writeUInt32LE(counter >>> 0, 4);
  bytes.writeUInt32LE(Math.floor(counter / 2 ** 32), 8);
  return bytes;
}

function seal(key: Buffer, counter: number, ad: Buffer, plaintext: Uint8Array): Buffer {
  const cipher = createCipheriv('chacha20-poly1305', key, nonce(counter), { authTagLength: 16 });
  cipher.setAAD(ad, { plaintextLength: plaintext.length });
  return Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
}

/** Throws when the tag does not match: a changed byte, a wrong key or a wrong counter. */
function open(key: Buffer, counter: number, ad: Buffer, sealed: Uint8Array): Buffer {
  if (sealed.length < TAG_BYTES) throw new Error('message shorter than its tag');
  const body = sealed.subarray(0, sealed.length - TAG_BYTES);
  const decipher = createDecipheriv('chacha20-poly1305', key, nonce(counter),
    { authTagLength: 16 });
  decipher.setAAD(ad, { plaintextLength: body.length });
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
  return Buffer.concat([decipher.update(body), decipher.final()]);
}

const sha256 = (...parts: Uint8Array[]) => createHash('sha256').update(Buffer.concat(parts)).digest();
const hmac = (key: Uint8Array, ...parts: Uint8Array[]) =>
  createHmac('sha256', key).update(Buffer.concat(parts)).digest();

/** Noise's HKDF: two 32-byte outputs from chaining key `ck` and input key material `ikm`. */
function hkdf(ck: Buffer, ikm: Uint8Array): [Buffer, Buffer] {
  const temp = hmac(ck, ikm);
  const first = hmac(temp, Buffer.of(1));
  return [first, hmac(temp, first, Buffer.of(2))];
}

// ============================================================================================
// CipherState and SymmetricState
// ============================================================================================

/** One direction's key and counter. Before the first mixKey there is no key, and Noise sends
 * handshake fields in clear. The counter is a JavaScript number: exact up to 2^53 messages, far
 * past anything a chat sends, and we refuse rather than reuse a nonce beyond it. */
export class CipherState {
  /** The 32-byte ChaCha20-Poly1305 key, or null while none has been agreed. */
  key: Buffer | null;
  /** Messages sealed (or opened) with this key so far: the next nonce. */
  counter = 0;
  constructor(key: Buffer | null = null) {
    this.key = key;
  }
  encryptWithAd(ad: Buffer, plaintext: Uint8Array): Buffer {
    if (this.key === null) return Buffer.from(plaintext);
    if (this.counter >= Number.MAX_SAFE_INTEGER) throw new Error('message counter exhausted');
    return seal(this.key, this.counter++, ad, plaintext);
  }
  /** The counter moves only on success, so a forged message cannot desynchronise us. */
  decryptWithAd(ad: Buffer, ciphertext: Uint8Array): Buffer {
    if (this.key === null) return Buffer.from(ciphertext);
    const plaintext = open(this.key, this.counter, ad, ciphertext);
    this.counter++;
    return plaintext;
  }
}

const EMPTY = Buffer.alloc(0);

/** The handshake's memory: h hashes every byte sent or received (so both sides must have seen the
 * same transcript to agree), ck chains every DH result into the next key. */
class SymmetricState {
  /** Handshake hash: SHA-256 over the protocol name, the prologue and every message field. */
  h: Buffer;
  /** Chaining key: HKDF's salt, fed every DH output. */
  ck: Buffer;
  /** Encrypts handshake fields once a DH has happened. */
  cipher = new CipherState();
  constructor(protocolName: string) {
    const name = Buffer.from(protocolName);
    this.h = name.length <= 32 ? Buffer.concat([name, Buffer.alloc(32 - name.length)]) : sha256(name);
    this.ck = this.h;
  }
  mixHash(data: Uint8Array): void {
    this.h = sha256(this.h, data);
  }
  mixKey(ikm: Uint8Array): void {
    const [ck, key] = hkdf(this.ck, ikm);
    this.ck = ck;
    this.cipher = new CipherState(key);
  }
  encryptAndHash(plaintext: Uint8Array): Buffer {
    const ciphertext = this.cipher.encryptWithAd(this.h, plaintext);
    this.mixHash(ciphertext);
    return ciphertext;
  }
  decryptAndHash(ciphertext: Uint8Array): Buffer {
    const plaintext = this.cipher.decryptWithAd(this.h, ciphertext);
    this.mixHash(ciphertext);
    return plaintext;
  }
  /** Two transport keys: initiator → responder, responder → initiator. */
  split(): [CipherState, CipherState] {
    const [first, second] = hkdf(this.ck, EMPTY);
    return [new CipherState(first), new CipherState(second)];
  }
}

// ============================================================================================
// Handshake
// ============================================================================================

type Token = 'e' | 's' | 'ee' | 'es' | 'se';
const PATTERNS: Record<'XX' | 'NN', Token[][]> = {
  XX: [['e'], ['e', 'ee', 's', 'es'], ['s', 'se']],
  NN: [['e'], ['e', 'ee']], // no static keys: only for the published vectors
};

export type HandshakeOptions = {
  initiator: boolean;
  pattern?: 'XX' | 'NN';
  /** Bytes both sides must agree on, e.g. a protocol version: a mismatch fails the handshake. */
  prologue?: Uint8Array;
  /** Our long-term key (XX only). */
  staticKey?: KeyPair;
  /** A fixed ephemeral key: only test vectors set this; otherwise a fresh one per handshake. */
  ephemeralKey?: KeyPair;
};

/** One side of a handshake: call writeMessage and readMessage in turn until `done`, then use
 * `send` and `receive`. */
export class Handshake {
  readonly initiator: boolean;
  readonly #pattern: Token[][];
  readonly #state: SymmetricState;
  readonly #s: KeyPair | undefined;
  #e: KeyPair | undefined;
  /** The other side's ephemeral and static public keys, once received. */
  #re: Buffer | undefined;
  remoteStaticKey: Buffer | undefined;
  /** Which message of the pattern comes next. */
  #turn = 0;
  /** Transport cipher states, set when the last message has been written or read. */
  send: CipherState | undefined;
  receive: CipherState | undefined;
  constructor(options: HandshakeOptions) {
    const pattern = options.pattern ?? 'XX';
    this.initiator = options.initiator;
    this.#pattern = PATTERNS[pattern];
    this.#state = new SymmetricState(`Noise_${pattern}_25519_ChaChaPoly_SHA256`);
    this.#state.mixHash(options.prologue ?? EMPTY);
    this.#s = options.staticKey;
    this.#e = options.ephemeralKey;
    if (pattern === 'XX' && this.#s === undefined) throw new Error('XX needs a static key');
  }
  get done(): boolean {
    return this.send !== undefined;
  }
  /** h after the last message: the same on both sides, and unique to this session. */
  get hash(): Buffer {
    return this.#state.h;
  }
  get myTurn(): boolean {
    return (this.#turn % 2 === 0) === this.initiator;
  }

  writeMessage(payload: Uint8Array = EMPTY): Buffer {
    const parts: Buffer[] = [];
    for (const token of this.#tokens(true)) {
      if (token === 'e') {
        this.#e ??= generateKeyPair();
        parts.push(this.#e.publicKey);
        this.#state.mixHash(this.#e.publicKey);
      } else if (token === 's') {
        parts.push(this.#state.encryptAndHash(this.#s!.publicKey));
      } else this.#mixDh(token);
    }
    parts.push(this.#state.encryptAndHash(payload));
    this.#advance();
    return Buffer.concat(parts);
  }

  /** Returns the payload; throws if the message is short or fails authentication. */
  readMessage(message: Uint8Array): Buffer {
    let at = 0;
    const take = (length: number) => {
      if (at + length > message.length) throw new Error('handshake message too short');
      return message.subarray(at, (at += length));
    };
    for (const token of this.#tokens(false)) {
      if (token === 'e') {
        this.#re = Buffer.from(take(KEY_BYTES));
        this.#state.mixHash(this.#re);
      } else if (token === 's') {
        const sealed = take(KEY_BYTES + (this.#state.cipher.key ? TAG_BYTES : 0));
        this.remoteStaticKey = this.#state.decryptAndHash(sealed);
      } else this.#mixDh(token);
    }
    const payload = this.#state.decryptAndHash(message.subarray(at));
    this.#advance();
    return payload;
  }

  #tokens(writing: boolean): Token[] {
    if (this.done) throw new Error('the handshake is over');
    if (this.myTurn !== writing) throw new Error(`not our turn to ${writing ? 'write' : 'read'}`);
    return this.#pattern[this.#turn];
  }

  /** ee, es, se: the first letter names the initiator's key, the second the responder's. */
  #mixDh(token: 'ee' | 'es' | 'se'): void {
    const [initiatorKey, responderKey] = [token[0], token[1]];
    const ownLetter = this.initiator ? initiatorKey : responderKey;
    const remoteLetter = this.initiator ? responderKey : initiatorKey;
    const own = ownLetter === 'e' ? this.#e : this.#s;
    const remote = remoteLetter === 'e' ? this.#re : this.remoteStaticKey;
    if (!own || !remote) throw new Error(`handshake token ${token} before its keys`);
    this.#state.mixKey(dh(own, remote));
  }

  #advance(): void {
    this.#turn++;
    if (this.#turn < this.#pattern.length) return;
    const [initiatorToResponder, responderToInitiator] = this.#state.split();
    this.send = this.initiator ? initiatorToResponder : responderToInitiator;
    this.receive = this.initiator ? responderToInitiator : initiatorToResponder;
  }
}

// ============================================================================================
// SecureSocket: the handshake over TCP, then sealed frames
// ============================================================================================
//
// On the wire every message, handshake or transport, is a frame: a 2-byte big-endian length,
// then that many bytes. Noise caps a message at 65535 bytes, so a frame holds at most 65519
// bytes of plaintext (16 go to the tag); a longer write is cut into several frames, and the
// reader joins them again into the same byte stream, so lines may span frames.
//
// Each direction counts its frames: the counter is the nonce, so a frame replayed, dropped,
// reordered or injected is opened with the wrong nonce and fails authentication like a changed
// byte does. After any such failure nothing more is read: the connection ends with an error.

const MAX_FRAME_BYTES = 65535;
const MAX_PLAINTEXT_BYTES = MAX_FRAME_BYTES - TAG_BYTES;
/** XX's messages are 32, 96 and 64 bytes with our empty payloads: anything bigger is not ours. */
const MAX_HANDSHAKE_BYTES = 1024;
const TAMPERED = 'message authentication failed: the connection was tampered with';

export type SecureErrorCode = 'timeout' | 'closed' | 'plain' | 'auth' | 'wrong_key' | 'bad_frame';

/** Why a secure connection failed; `code` lets callers explain (e.g. a changed pinned key). */
export class SecureChannelError extends Error {
  readonly code: SecureErrorCode;
  constructor(code: SecureErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

/** Bytes received but not yet cut into frames. Concatenation per chunk is fine at 64 KB frames. */
class FrameReader {
  #pending = EMPTY;
  push(chunk: Uint8Array): void {
    this.#pending = this.#pending.length ? Buffer.concat([this.#pending, chunk]) : Buffer.from(chunk);
  }
  get partial(): boolean {
    return this.#pending.length > 0;
  }
  /** The next whole frame's body, or null until all of it is here. */
  next(maxBytes: number, minBytes: number): Buffer | null {
    if (this.#pending.length < 2) return null;
    const length = this.#pending.readUInt16BE(0);
    if (length > maxBytes && this.#pending[0] === 0x7b) { // '{': a JSON line, not a frame
      throw new SecureChannelError('plain', 'the other side speaks the plain (unencrypted) ' +
        'protocol: it sent a JSON line where a secure handshake was expected');
    }
    if (length > maxBytes || length < minBytes) {
      throw new SecureChannelError('bad_frame', `bad frame: ${length} bytes where ` +
        `${minBytes} to ${maxBytes} are allowed`);
    }
    if (this.#pending.length < 2 + length) return null;
    const frame = this.#pending.subarray(2, 2 + length);
    this.#pending = this.#pending.subarray(2 + length);
    return frame;
  }
}

function frame(body: Uint8Array): Buffer {
  const header = Buffer.alloc(2);
  header.writeUInt16BE(body.length);
  return Buffer.concat([header, body]);
}

export type SecureOptions = {
  /** The side that opened the TCP connection is the initiator. */
  initiator: boolean;
  /** Our long-term key: the registry's key, or the user's identity key. */
  staticKey: KeyPair;
  /** A string both sides must share, e.g. 'p2p-chat secure 1': a mismatch fails the handshake. */
  prologue?: string;
  /** If set, the handshake fails unless the other side proves this static key. The initiator
   * checks before sending its own static key, so a wrong server never learns who called. */
  expectedRemoteKey?: Uint8Array;
  /** Give up if the handshake has not finished by then (default 5000 ms). */
  timeoutMs?: number;
  /** A line written in clear before hanging up on a peer that sent plain JSON (for nc users). */
  plainRefusal?: string;
};

/** Runs the handshake on `socket` and resolves with the secure stream, or rejects with a
 * SecureChannelError after destroying the socket. */
export function secureSocket(socket: net.Socket, options: SecureOptions): Promise<SecureSocket> {
  const handshake = new Handshake({
    initiator: options.initiator, staticKey: options.staticKey,
    prologue: Buffer.from(options.prologue ?? ''),
  });
  const frames = new FrameReader();
  const timeoutMs = options.timeoutMs ?? 5000;
  // Handshake messages are small and strictly alternate; Nagle would hold each one back waiting
  // for an ACK the other side delays, adding tens of milliseconds.
  socket.setNoDelay(true);
  return new Promise((resolve, reject) => {
    const stop = () => {
      clearTimeout(timer);
      socket.off('data', onData).off('end', onClosed).off('close', onClosed).off('error', onError);
    };
    const fail = (error: SecureChannelError) => {
      stop();
      if (error.code === 'plain' && options.plainRefusal) socket.end(options.plainRefusal + '\n');
      else socket.destroy();
      socket.on('error', () => {}); // the connection is ours no more; its later errors are not
      reject(error);
    };
    const timer = setTimeout(() => fail(new SecureChannelError('timeout',
      `no secure handshake within ${timeoutMs} ms`)), timeoutMs);
    const onClosed = () => fail(new SecureChannelError('closed',
      'the other side closed the connection during the secure handshake'));
    const onError = (error: NodeJS.ErrnoException) => fail(new SecureChannelError('closed',
      `the connection failed during the secure handshake (${error.code ?? error.message})`));
    const onData = (chunk: Uint8Array) => {
      frames.push(chunk);
      try {
        let message: Buffer | null;
        while (!handshake.done && (message = frames.next(MAX_HANDSHAKE_BYTES, KEY_BYTES))) {
          readHandshakeMessage(handshake, message, options.expectedRemoteKey);
          if (!handshake.done) socket.write(frame(handshake.writeMessage()));
        }
      } catch (error) {
        return fail(error as SecureChannelError);
      }
      if (handshake.done) {
        stop();
        resolve(new SecureSocket(socket, handshake, frames));
      }
    };
    socket.on('data', onData).on('end', onClosed).on('close', onClosed).on('error', onError);
    if (options.initiator) socket.write(frame(handshake.writeMessage()));
  });
}

function readHandshakeMessage(handshake: Handshake, message: Buffer, expected?: Uint8Array) {
  try {
    handshake.readMessage(message);
  } catch {
    throw new SecureChannelError('auth', 'secure handshake failed: message authentication ' +
      'failed (a different protocol version, or the connection was tampered with)');
  }
  const remote = handshake.remoteStaticKey;
  if (expected && remote && !remote.equals(expected)) {
    throw new SecureChannelError('wrong_key', `the other side's key is not the one expected: ` +
      `expected ${fingerprint(expected)}, got ${fingerprint(remote)}`);
  }
}

/**
 * A connection after the handshake: a Duplex stream of plaintext bytes, so line code written for
 * a net.Socket (write, end, destroy, 'data', 'end', 'close', 'error', pause, cork) runs on it
 * unchanged. A failed frame destroys it with a SecureChannelError ('error', then 'close').
 */
export class SecureSocket extends Duplex {
  /** The TCP connection underneath, for its addresses and timers; never write to it directly. */
  readonly socket: net.Socket;
  /** The static key the other side proved it holds. */
  readonly remoteStaticKey: Buffer;
  /** Names this session; both sides hold the same 32 bytes. */
  readonly handshakeHash: Buffer;
  readonly #send: CipherState;
  readonly #receive: CipherState;
  readonly #frames: FrameReader;
  constructor(socket: net.Socket, handshake: Handshake, frames: FrameReader) {
    super({ allowHalfOpen: false }); // like a net.Socket: the other side's end ends ours
    this.socket = socket;
    this.remoteStaticKey = handshake.remoteStaticKey!;
    this.handshakeHash = handshake.hash;
    this.#send = handshake.send!;
    this.#receive = handshake.receive!;
    this.#frames = frames;
    socket.on('data', (chunk: Uint8Array) => {
      this.#frames.push(chunk);
      this.#deliver();
    });
    socket.on('end', () => {
      if (this.#frames.partial) this.#fail('bad_frame', 'the connection ended inside a frame');
      else this.push(null);
    });
    socket.on('error', (error) => this.destroy(error));
    socket.on('close', () => this.destroy());
    // Frames that came with the last handshake message wait until the owner has had the chance
    // to attach its listeners (after the promise resolves).
    setImmediate(() => this.#deliver());
  }

  #deliver(): void {
    while (!this.destroyed) {
      let sealed: Buffer | null;
      try {
        sealed = this.#frames.next(MAX_FRAME_BYTES, TAG_BYTES);
      } catch (error) {
        return void this.destroy(error as Error);
      }
      if (sealed === null) return;
      let plaintext: Buffer;
      try {
        plaintext = this.#receive.decryptWithAd(EMPTY, sealed);
      } catch {
        return this.#fail('auth', TAMPERED);
      }
      if (plaintext.length > 0 && !this.push(plaintext)) this.socket.pause();
    }
  }

  #fail(code: SecureErrorCode, message: string): void {
    this.destroy(new SecureChannelError(code, message));
  }

  override _read(): void {
    this.socket.resume();
  }

  override _write(chunk: Buffer, _encoding: string, done: (error?: Error | null) => void): void {
    const frames: Buffer[] = [];
    for (let at = 0; at < chunk.length; at += MAX_PLAINTEXT_BYTES) {
      const piece = chunk.subarray(at, at + MAX_PLAINTEXT_BYTES);
      frames.push(frame(this.#send.encryptWithAd(EMPTY, piece)));
    }
    if (this.socket.write(Buffer.concat(frames))) done();
    else this.socket.once('drain', () => done());
  }

  /** Writes gathered by cork() go out sealed together, in one system call. */
  override _writev(chunks: { chunk: Buffer }[], done: (error?: Error | null) => void): void {
    this._write(Buffer.concat(chunks.map((entry) => entry.chunk)), 'buffer', done);
  }

  override _final(done: () => void): void {
    this.socket.end();
    done();
  }

  override _destroy(error: Error | null, done: (error?: Error | null) => void): void {
    this.socket.destroy();
    done(error);
  }
}

// ============================================================================================
// Long-term keys, fingerprints, safety numbers, session MACs
// ============================================================================================

const PEM_LABEL = 'PRIVATE KEY';

/** The private key as PKCS#8 PEM, the format `openssl pkey` reads (the public half is derived). */
export function privateKeyPem(pair: KeyPair): string {
  const base64 = Buffer.concat([PKCS8_PREFIX, pair.privateKey]).toString('base64');
  return `-----BEGIN ${PEM_LABEL}-----\n${base64}\n-----END ${PEM_LABEL}-----\n`;
}

/** Reads PEM as written above, or a raw 32-byte key; throws on anything else. */
export function keyPairFromPem(text: string | Buffer): KeyPair {
  if (Buffer.isBuffer(text) && text.length === KEY_BYTES) return keyPairFromPrivate(text);
  const body = text.toString().replace(/-----(BEGIN|END) PRIVATE KEY-----|\s/g, '');
  const der = Buffer.from(body, 'base64');
  const isX25519 = der.length === PKCS8_PREFIX.length + KEY_BYTES &&
    der.subarray(0, PKCS8_PREFIX.length).equals(PKCS8_PREFIX);
  if (!isX25519) throw new Error('not an X25519 private key in PKCS#8 PEM');
  return keyPairFromPrivate(der.subarray(PKCS8_PREFIX.length));
}

/** Writes a new key file readable by its owner only (0600), in a 0700 folder if it makes one.
 * Refuses to overwrite: replacing a key changes who you are to everyone who pinned it. */
export function saveKeyFile(path: string, pair: KeyPair): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeFileSync(path, privateKeyPem(pair), { mode: 0o600, flag: 'wx' });
  chmodSync(path, 0o600); // the umask may have removed bits, never added: make it exact anyway
}

/** Reads a key file, refusing (like ssh) one that others can read. Errors say what to do. */
export function loadKeyFile(path: string): KeyPair {
  let mode: number;
  let contents: Buffer;
  try {
    mode = statSync(path).mode & 0o777;
    contents = readFileSync(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? String(error);
    throw new Error(`cannot read key file ${path} (${code})`);
  }
  if (process.platform !== 'win32' && (mode & 0o077) !== 0) {
    throw new Error(`key file ${path} can be read by others (mode ${mode.toString(8)}); ` +
      `make it private with: chmod 600 ${path}`);
  }
  try {
    return keyPairFromPem(contents);
  } catch {
    throw new Error(`key file ${path} does not hold an X25519 private key`);
  }
}

/** Loads the key at `path`, or creates it there on first use. */
export function loadOrCreateKeyFile(path: string): { pair: KeyPair; created: boolean } {
  try {
    statSync(path);
  } catch {
    const pair = generateKeyPair();
    saveKeyFile(path, pair);
    return { pair, created: true };
  }
  return { pair: loadKeyFile(path), created: false };
}

/** A public key's short name, in ssh's style: "SHA256:" and the base64 of its SHA-256. */
export function fingerprint(publicKey: Uint8Array): string {
  return 'SHA256:' + sha256(publicKey).toString('base64').replace(/=+$/, '');
}

/**
 * Signal's safety number: 30 digits per person from 5200 rounds of SHA-512 over their key and
 * name (slow on purpose: finding another key with the same digits costs 5200× more), the two
 * halves in sorted order so both sides print the same 60 digits. Pass normalised names.
 */
export function safetyNumber(
  a: { name: string; publicKey: Uint8Array },
  b: { name: string; publicKey: Uint8Array },
): string {
  const half = ({ name, publicKey }: { name: string; publicKey: Uint8Array }) => {
    let digest = createHash('sha512').update(Buffer.concat([Buffer.alloc(2), publicKey,
      Buffer.from(name)])).digest();
    for (let round = 0; round < 5200; round++) {
      digest = createHash('sha512').update(digest).update(publicKey).digest();
    }
    let digits = '';
    for (let at = 0; at < 30; at += 5) {
      digits += String(digest.readUIntBE(at, 5) % 100000).padStart(5, '0');
    }
    return digits;
  };
  const joined = [half(a), half(b)].sort().join('');
  return joined.match(/\d{5}/g)!.join(' ');
}

/** HMAC-SHA256 (base64url) over `fields` under a session secret, each field length-prefixed so
 * ['ab', 'c'] and ['a', 'bc'] differ. Put a label first: ['hello', name, counter]. */
export function sessionMac(secret: Uint8Array, fields: ReadonlyArray<string | number>): string {
  const encoded = fields.map((field) => {
    const bytes = Buffer.from(String(field));
    const length = Buffer.alloc(4);
    length.writeUInt32BE(bytes.length);
    return Buffer.concat([length, bytes]);
  });
  return hmac(secret, ...encoded).toString('base64url');
}

/** Compares in constant time, so timing reveals nothing of the right MAC. */
export function sessionMacValid(
  secret: Uint8Array, fields: ReadonlyArray<string | number>, mac: string,
): boolean {
  const expected = Buffer.from(sessionMac(secret, fields), 'base64url');
  const given = Buffer.from(typeof mac === 'string' ? mac : '', 'base64url');
  return given.length === expected.length && timingSafeEqual(given, expected);
}
