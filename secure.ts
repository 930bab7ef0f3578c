/**
 * secure.ts — the secure channel under the line protocol:
 *   TCP → secure channel → lines → JSON.
 *
 * Both links (client ↔ registry, client ↔ client) run one Noise handshake and then carry every
 * line sealed: a capture shows sizes and timing but no password, token, ticket or chat text, and
 * a changed, replayed, reordered or injected byte ends the connection. The pattern is
 * Noise_XX_25519_ChaChaPoly_SHA256 (noiseprotocol.org), on node:crypto alone, checked byte for
 * byte against published vectors in test/secure.test.ts. Exports are what client.ts, server.ts,
 * the tests and bench/secure.ts use.
 *
 * Layout:
 *   - primitives         X25519 with raw 32-byte keys, ChaCha20-Poly1305, SHA-256, HKDF
 *   - CipherState        one key and its message counter
 *   - SymmetricState     the running hash h and chaining key ck every handshake step feeds
 *   - Handshake          the XX pattern (and NN, for a second vector), token by token
 *   - SecureSocket       the handshake over a net.Socket, then framed transport messages
 *   - long-term keys     key files, fingerprints, safety numbers, the session MAC for hellos
 *
 * The handshake (e = a fresh ephemeral key, s = a long-term static key; ee, es, se = a
 * Diffie-Hellman between the initiator's and the responder's named keys, mixed into the key that
 * encrypts everything after it):
 *
 *   -> e                 in clear: nothing is shared yet
 *   <- e, ee, s, es      ee: a secret only these two fresh keys know, so the responder's static
 *                        key travels encrypted; es: only the holder of that static key can
 *                        derive the next key, so the responder has proved who it is
 *   -> s, se             the initiator's static key, encrypted; se proves it holds it
 *
 * Then each side knows the other's static key: the caller compares it with the one it expected
 * (the pinned registry key, or the callee's key from `found`), the callee with the key bound
 * into the ticket. Fresh ephemerals make every session's keys new (forward secrecy).
 */

import {
  createCipheriv, createDecipheriv, createHash, createHmac, createPrivateKey, createPublicKey,
  diffieHellman, generateKeyPairSync, timingSafeEqual,
} from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import {
  chmodSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync,
} from 'node:fs';
import type net from 'node:net';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import process from 'node:process';
import { Duplex } from 'node:stream';

// ============================================================================================
// Primitives
// ============================================================================================
//
// node:crypto speaks KeyObjects, Noise raw 32-byte keys. An X25519 key's DER encoding is a fixed
// prefix and then the raw key, so converting is slicing and prepending. (Never JWK: on Node 20,
// exporting a fresh X25519 key as JWK can hang.)

const PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');
const KEY_BYTES = 32;
const TAG_BYTES = 16;
const EMPTY = Buffer.alloc(0);

/** An X25519 key pair, both halves raw 32 bytes. */
export type KeyPair = { publicKey: Buffer; privateKey: Buffer };

export function generateKeyPair(): KeyPair {
  const { publicKey, privateKey } = generateKeyPairSync('x25519', {
    publicKeyEncoding: { type: 'spki', format: 'der' },
    privateKeyEncoding: { type: 'pkcs8', format: 'der' },
  });
  return {
    publicKey: publicKey.subarray(-KEY_BYTES), privateKey: privateKey.subarray(-KEY_BYTES),
  };
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

// Importing a DER key costs Node 20 about 0.1 ms (public) to 0.5 ms (private), more than the DH
// itself, so each key is imported once: our static key once per KeyPair, each remote key once
// per handshake (it serves two DHs), and a fresh ephemeral is never exported and re-imported.

/** A key ready for Diffie-Hellman: the raw public half, and the private half as node wants it. */
type DhKey = { publicKey: Buffer; secret: KeyObject };
const dhKeys = new WeakMap<KeyPair, DhKey>();
const remoteKeys = new WeakMap<Buffer, KeyObject>();

function dhKey(pair: KeyPair): DhKey {
  let key = dhKeys.get(pair);
  if (!key) {
    key = { publicKey: pair.publicKey, secret: privateKeyObject(pair.privateKey) };
    dhKeys.set(pair, key);
  }
  return key;
}

/** A new ephemeral key. Only the public half is encoded; @types/node lacks that overload. */
function freshDhKey(): DhKey {
  const pair = generateKeyPairSync('x25519', {
    publicKeyEncoding: { type: 'spki', format: 'der' },
  }) as unknown as { publicKey: Buffer; privateKey: KeyObject };
  return { publicKey: pair.publicKey.subarray(-KEY_BYTES), secret: pair.privateKey };
}

function dh(own: DhKey, remote: Buffer): Buffer {
  let publicKey = remoteKeys.get(remote);
  if (!publicKey) {
    const der = Buffer.concat([SPKI_PREFIX, remote]);
    publicKey = createPublicKey({ key: der, format: 'der', type: 'spki' });
    remoteKeys.set(remote, publicKey);
  }
  return diffieHellman({ privateKey: own.secret, publicKey });
}

/** AEAD with Noise's nonce: 4 zero bytes, then the message counter as 64-bit little-endian.
 * Opening throws when the tag does not match: a changed byte, wrong key or wrong counter. */
function aead(sealing: boolean, key: Buffer, counter: number, ad: Buffer, input: Uint8Array) {
  const nonce = Buffer.alloc(12);
  nonce.writeUInt32LE(counter >>> 0, 4);
  nonce.writeUInt32LE(Math.floor(counter / 2 ** 32), 8);
  const options = { authTagLength: TAG_BYTES };
  if (sealing) {
    const cipher = createCipheriv('chacha20-poly1305', key, nonce, options);
    cipher.setAAD(ad, { plaintextLength: input.length });
    return Buffer.concat([cipher.update(input), cipher.final(), cipher.getAuthTag()]);
  }
  if (input.length < TAG_BYTES) throw new Error('message shorter than its tag');
  const body = input.subarray(0, input.length - TAG_BYTES);
  const decipher = createDecipheriv('chacha20-poly1305', key, nonce, options);
  decipher.setAAD(ad, { plaintextLength: body.length });
  decipher.setAuthTag(input.subarray(input.length - TAG_BYTES));
  return Buffer.concat([decipher.update(body), decipher.final()]);
}

const sha256 = (...parts: Uint8Array[]) =>
  createHash('sha256').update(Buffer.concat(parts)).digest();
const sha512 = (...parts: Uint8Array[]) =>
  createHash('sha512').update(Buffer.concat(parts)).digest();
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

/** One direction's key and counter. Without a key (before the first DH) Noise sends in clear.
 * The counter is a JavaScript number, exact up to 2^53 messages (centuries of chat); past that
 * we refuse rather than reuse a nonce. There is no rekey: a chat session never gets near. */
export class CipherState {
  /** The 32-byte ChaCha20-Poly1305 key, or null while none has been agreed. */
  key: Buffer | null;
  /** Messages sealed or opened with this key so far: the next nonce. */
  counter = 0;
  constructor(key: Buffer | null = null) {
    this.key = key;
  }
  encryptWithAd(ad: Buffer, plaintext: Uint8Array): Buffer {
    if (this.key === null) return Buffer.from(plaintext);
    if (this.counter >= Number.MAX_SAFE_INTEGER) throw new Error('message counter exhausted');
    return aead(true, this.key, this.counter++, ad, plaintext);
  }
  /** The counter moves only on success, so a forged message cannot desynchronise us. */
  decryptWithAd(ad: Buffer, ciphertext: Uint8Array): Buffer {
    if (this.key === null) return Buffer.from(ciphertext);
    const plaintext = aead(false, this.key, this.counter, ad, ciphertext);
    this.counter++;
    return plaintext;
  }
}

/** The handshake's memory. Every field sent is hashed into h and every sealed field uses h as
 * associated data, so both sides agree only if they saw the same transcript. */
class SymmetricState {
  /** The handshake hash: the protocol name, the prologue and every field so far. */
  h: Buffer;
  /** The chaining key: each DH output is mixed into it, and the next key drawn from it. */
  ck: Buffer;
  /** Seals handshake fields once a DH has happened. */
  cipher = new CipherState();
  constructor(protocolName: string) {
    const name = Buffer.from(protocolName); // 32 bytes or fewer: used as is, zero-padded
    this.h = name.length <= 32 ? Buffer.concat([name, Buffer.alloc(32 - name.length)])
      : sha256(name);
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
  /** Split: the two transport keys, initiator → responder and responder → initiator. */
  split(): [CipherState, CipherState] {
    const [first, second] = hkdf(this.ck, EMPTY);
    return [new CipherState(first), new CipherState(second)];
  }
}

// ============================================================================================
// Handshake
// ============================================================================================

type Token = 'e' | 's' | 'ee' | 'es' | 'se';
const PATTERNS = {
  XX: [['e'], ['e', 'ee', 's', 'es'], ['s', 'se']] as Token[][],
  NN: [['e'], ['e', 'ee']] as Token[][], // no static keys: here for a second published vector
};

export type HandshakeOptions = {
  initiator: boolean;
  pattern?: keyof typeof PATTERNS;
  /** Bytes both sides must agree on, e.g. a protocol version: a mismatch fails the handshake. */
  prologue?: Uint8Array;
  /** Our long-term key (XX needs one). */
  staticKey?: KeyPair;
  /** A fixed ephemeral key, for test vectors only; otherwise a fresh one per handshake. */
  ephemeralKey?: KeyPair;
};

/** One side of a handshake (Noise's HandshakeState): writeMessage and readMessage in turn until
 * `done`, then seal with `send` and open with `receive`. Handshake payloads are optional. */
export class Handshake {
  readonly initiator: boolean;
  readonly #messages: Token[][];
  readonly #state: SymmetricState;
  /** Our static and ephemeral keys, and the other side's (remote) ones once received. */
  readonly #s: DhKey | undefined;
  #e: DhKey | undefined;
  #re: Buffer | undefined;
  remoteStaticKey: Buffer | undefined;
  /** Index of the next message in the pattern: even ones are the initiator's. */
  #turn = 0;
  /** The transport cipher states, set by the last message. */
  send: CipherState | undefined;
  receive: CipherState | undefined;
  constructor(options: HandshakeOptions) {
    const pattern = options.pattern ?? 'XX';
    if (pattern === 'XX' && !options.staticKey) throw new Error('XX needs a static key');
    this.initiator = options.initiator;
    this.#messages = PATTERNS[pattern];
    this.#state = new SymmetricState(`Noise_${pattern}_25519_ChaChaPoly_SHA256`);
    this.#state.mixHash(options.prologue ?? EMPTY);
    this.#s = options.staticKey && dhKey(options.staticKey);
    this.#e = options.ephemeralKey && dhKey(options.ephemeralKey);
  }
  get done(): boolean {
    return this.send !== undefined;
  }
  /** h at the end: the same on both sides, and unique to this session. */
  get hash(): Buffer {
    return this.#state.h;
  }

  writeMessage(payload: Uint8Array = EMPTY): Buffer {
    const parts: Buffer[] = [];
    for (const token of this.#next(true)) {
      if (token === 'e') {
        this.#e ??= freshDhKey();
        parts.push(this.#e.publicKey);
        this.#state.mixHash(this.#e.publicKey);
      } else if (token === 's') parts.push(this.#state.encryptAndHash(this.#s!.publicKey));
      else this.#mixDh(token);
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
    for (const token of this.#next(false)) {
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

  #next(writing: boolean): Token[] {
    const ourTurn = (this.#turn % 2 === 0) === this.initiator;
    if (this.done || ourTurn !== writing) throw new Error('handshake message out of turn');
    return this.#messages[this.#turn];
  }

  /** A DH token's first letter names the initiator's key, its second the responder's. */
  #mixDh(token: Token): void {
    const [ours, theirs] = this.initiator ? [token[0], token[1]] : [token[1], token[0]];
    const own = ours === 'e' ? this.#e : this.#s;
    const remote = theirs === 'e' ? this.#re : this.remoteStaticKey;
    if (!own || !remote) throw new Error(`handshake token ${token} before its keys`);
    this.#state.mixKey(dh(own, remote));
  }

  #advance(): void {
    if (++this.#turn < this.#messages.length) return;
    const [initiatorToResponder, responderToInitiator] = this.#state.split();
    this.send = this.initiator ? initiatorToResponder : responderToInitiator;
    this.receive = this.initiator ? responderToInitiator : initiatorToResponder;
  }
}

// ============================================================================================
// SecureSocket: the handshake over TCP, then sealed frames
// ============================================================================================
//
// On the wire every message, handshake or transport, is a frame: a 2-byte big-endian length and
// that many bytes. Noise caps a message at 65535 bytes, so a frame holds at most 65519 bytes of
// plaintext (16 go to the tag); a longer write becomes several frames, and the reader gets one
// byte stream back, so lines may span frames. Each direction counts its frames and the count is
// the nonce: a frame replayed, dropped, reordered or injected is opened with the wrong nonce and
// fails like a changed byte. After a failure nothing more is read; the connection ends.

const MAX_FRAME_BYTES = 65535;
const MAX_PLAINTEXT_BYTES = MAX_FRAME_BYTES - TAG_BYTES;
/** XX's messages are 32, 96 and 64 bytes with empty payloads: anything much bigger is not ours. */
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

/** Bytes received but not yet cut into frames. One concatenation per chunk: cheap at 64 KB. */
class FrameReader {
  pending = EMPTY;
  push(chunk: Uint8Array): void {
    this.pending = Buffer.concat([this.pending, chunk]);
  }
  /** The next whole frame's body, or null until all of it is here. */
  next(minBytes: number, maxBytes: number): Buffer | null {
    if (this.pending.length < 2) return null;
    const length = this.pending.readUInt16BE(0);
    if (length > maxBytes && this.pending[0] === 0x7b) { // '{': a JSON line, not a frame
      throw new SecureChannelError('plain', 'the other side speaks the plain (unencrypted) ' +
        'protocol: it sent a JSON line where a secure handshake was expected');
    }
    if (length < minBytes || length > maxBytes) {
      throw new SecureChannelError('bad_frame',
        `bad frame: ${length} bytes where ${minBytes} to ${maxBytes} are allowed`);
    }
    if (this.pending.length < 2 + length) return null;
    const body = this.pending.subarray(2, 2 + length);
    this.pending = this.pending.subarray(2 + length);
    return body;
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
  /** Both sides must use the same, e.g. 'p2p-chat 1': a mismatch fails the handshake. */
  prologue?: string;
  /** Fail unless the other side proves this key. An initiator checks before sending its own
   * static key, so a server with the wrong key never learns who called. */
  expectedRemoteKey?: Uint8Array;
  /** Give up if the handshake has not finished by then (default 5000 ms). */
  timeoutMs?: number;
  /** A line written in clear before hanging up on a peer that sent JSON (an nc user). */
  plainRefusal?: string;
};

/** Runs the handshake on `socket`; resolves with the secure stream, or destroys the socket and
 * rejects with a SecureChannelError. */
export function secureSocket(socket: net.Socket, options: SecureOptions): Promise<SecureSocket> {
  const { initiator, staticKey, expectedRemoteKey, timeoutMs = 5000 } = options;
  const handshake = new Handshake({
    initiator, staticKey, prologue: Buffer.from(options.prologue ?? ''),
  });
  const frames = new FrameReader();
  // The messages are small and strictly alternate: Nagle's algorithm would hold one back until
  // the other side's delayed ACK, tens of milliseconds.
  socket.setNoDelay(true);
  return new Promise((resolve, reject) => {
    const stop = () => {
      clearTimeout(timer);
      socket.off('data', onData).off('end', onClosed).off('close', onClosed).off('error', onError);
    };
    const fail = (error: SecureChannelError) => {
      stop();
      socket.on('error', () => {}); // its later errors are nobody's concern now
      if (error.code === 'plain' && options.plainRefusal) {
        socket.end(options.plainRefusal + '\n');
        setTimeout(() => socket.destroy(), 2000).unref(); // for a client that never closes
      } else socket.destroy();
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
        while (!handshake.done && (message = frames.next(KEY_BYTES, MAX_HANDSHAKE_BYTES))) {
          readHandshakeMessage(handshake, message, expectedRemoteKey);
          if (!handshake.done) socket.write(frame(handshake.writeMessage()));
        }
      } catch (error) {
        return fail(error as SecureChannelError);
      }
      if (!handshake.done) return;
      stop();
      resolve(new SecureSocket(socket, handshake, frames));
    };
    socket.on('data', onData).on('end', onClosed).on('close', onClosed).on('error', onError);
    if (initiator) socket.write(frame(handshake.writeMessage()));
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
 * a net.Socket (write, end, destroy, cork, pause; 'data', 'end', 'close', 'error') runs on it
 * unchanged. A frame that fails destroys it with a SecureChannelError ('error', then 'close').
 */
export class SecureSocket extends Duplex {
  /** The TCP connection underneath, for addresses and timers; never write to it directly. */
  readonly socket: net.Socket;
  /** The static key the other side proved it holds. */
  readonly remoteStaticKey: Buffer;
  /** The handshake hash: names this session, the same 32 bytes on both sides. */
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
    let endedCleanly = false;
    socket.on('end', () => {
      endedCleanly = this.#frames.pending.length === 0;
      if (endedCleanly) this.push(null);
      else this.destroy(new SecureChannelError('bad_frame', 'the connection ended inside a frame'));
    });
    socket.on('error', (error) => this.destroy(error));
    // After a clean end the stream closes itself once its owner has read everything; destroying
    // it here could drop lines not yet read.
    socket.on('close', () => {
      if (!endedCleanly) this.destroy();
    });
    // Frames that came with the last handshake message wait until the owner, resumed by the
    // promise, has attached its listeners.
    setImmediate(() => this.#deliver());
  }

  #deliver(): void {
    while (!this.destroyed) {
      let sealed: Buffer | null;
      let plaintext: Buffer;
      try {
        sealed = this.#frames.next(TAG_BYTES, MAX_FRAME_BYTES);
        if (sealed === null) return;
      } catch (error) {
        return void this.destroy(error as Error);
      }
      try {
        plaintext = this.#receive.decryptWithAd(EMPTY, sealed);
      } catch {
        return void this.destroy(new SecureChannelError('auth', TAMPERED));
      }
      if (plaintext.length > 0 && !this.push(plaintext)) this.socket.pause(); // _read resumes
    }
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

  /** Writes gathered by cork() are sealed together and leave in one system call. */
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

/** Writes a new key file (PKCS#8 PEM, as `openssl pkey` reads) that only its owner can read,
 * in a 0700 folder if it makes one. Never overwrites: a new key changes who you are to everyone
 * who remembered the old one. */
export function saveKeyFile(path: string, pair: KeyPair): void {
  const base64 = Buffer.concat([PKCS8_PREFIX, pair.privateKey]).toString('base64');
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const pem = `-----BEGIN PRIVATE KEY-----\n${base64}\n-----END PRIVATE KEY-----\n`;
  writeFileSync(path, pem, { mode: 0o600, flag: 'wx' });
  chmodSync(path, 0o600); // exact, whatever the umask
}

/** Reads a key file (PEM as above, or the raw 32 bytes), refusing, like ssh, one that others
 * can read. Each error says what to do. */
export function loadKeyFile(path: string): KeyPair {
  let mode: number;
  let contents: Buffer;
  try {
    mode = statSync(path).mode & 0o777;
    contents = readFileSync(path);
  } catch (error) {
    throw new Error(`cannot read key file ${path} (${(error as NodeJS.ErrnoException).code})`);
  }
  if (process.platform !== 'win32' && (mode & 0o077) !== 0) {
    throw new Error(`key file ${path} can be read by others (mode ${mode.toString(8)}); ` +
      `make it private with: chmod 600 ${path}`);
  }
  if (contents.length === KEY_BYTES) return keyPairFromPrivate(contents);
  const der = Buffer.from(contents.toString().replace(/-----[A-Z ]+-----|\s/g, ''), 'base64');
  const prefix = der.subarray(0, PKCS8_PREFIX.length);
  if (der.length !== PKCS8_PREFIX.length + KEY_BYTES || !prefix.equals(PKCS8_PREFIX)) {
    throw new Error(`key file ${path} does not hold an X25519 private key`);
  }
  return keyPairFromPrivate(der.subarray(PKCS8_PREFIX.length));
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

/** Where the programs keep keys unless told otherwise: $P2P_CHAT_HOME, else ~/.p2p-chat. */
export function defaultDataDir(): string {
  return process.env.P2P_CHAT_HOME || join(homedir(), '.p2p-chat');
}

// Keys remembered on first contact, as ssh's known_hosts: one file for registries (by address),
// one per user for peers (by name). Trust on first use: the first key seen for a name is taken
// on faith and shown; a different key later is the event worth telling the user about.
//   <name> <public key, base64url> <first seen, ISO 8601>

/** A remembered key and when it was first seen. */
export type KnownKey = { publicKey: Buffer; since: string };

/** The keys in `path` by name; none when the file does not exist yet. Lines that do not parse
 * are skipped, not fatal: the worst a damaged line does is make a key new again. */
export function readKnownKeys(path: string): Map<string, KnownKey> {
  const known = new Map<string, KnownKey>();
  let text = '';
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return known;
    throw new Error(`cannot read ${path} (${(error as NodeJS.ErrnoException).code})`);
  }
  for (const line of text.split('\n')) {
    const [name, key, since] = line.trim().split(/\s+/);
    const publicKey = Buffer.from(key ?? '', 'base64url');
    if (name && !name.startsWith('#') && publicKey.length === KEY_BYTES) {
      known.set(name, { publicKey, since: since ?? '?' });
    }
  }
  return known;
}

/** Records `publicKey` for `name` (replacing an older key for it, once the user has agreed),
 * rewriting the file whole through a temporary file so a crash never leaves half of it. */
export function rememberKey(path: string, name: string, publicKey: Uint8Array): KnownKey {
  const known = readKnownKeys(path);
  const entry = { publicKey: Buffer.from(publicKey), since: new Date().toISOString() };
  known.set(name, entry);
  const lines = [...known].map(([each, { publicKey: key, since }]) =>
    `${each} ${key.toString('base64url')} ${since}\n`);
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeFileSync(`${path}.tmp`, lines.join(''), { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
  return entry;
}

/** A public key's short name, in ssh's style: "SHA256:" and the base64 of its SHA-256. */
export function fingerprint(publicKey: Uint8Array): string {
  return 'SHA256:' + sha256(publicKey).toString('base64').replace(/=+$/, '');
}

type Identity = { name: string; publicKey: Uint8Array };

/** Signal's safety number: 30 digits per person from 5200 rounds of SHA-512 over their key and
 * name (slow on purpose: forging a key with the same digits costs 5200 times more), the halves
 * sorted so both sides show the same 60 digits, in groups of 5. Pass normalised names. */
export function safetyNumber(a: Identity, b: Identity): string {
  const half = ({ name, publicKey }: Identity) => {
    let digest = sha512(Buffer.alloc(2), publicKey, Buffer.from(name)); // 2 bytes: version 0
    for (let round = 0; round < 5200; round++) digest = sha512(digest, publicKey);
    let digits = '';
    for (let at = 0; at < 30; at += 5) {
      digits += String(digest.readUIntBE(at, 5) % 100000).padStart(5, '0');
    }
    return digits;
  };
  return [half(a), half(b)].sort().join('').match(/\d{5}/g)!.join(' ');
}


/** HMAC-SHA256 (base64url) of `fields` under a session secret, each field length-prefixed so
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

/** Compares in constant time, so timing reveals nothing of the right MAC. As text: base64
 * spells some byte strings two ways (the last character's spare bits), and only one is right. */
export function sessionMacValid(
  secret: Uint8Array, fields: ReadonlyArray<string | number>, mac: unknown,
): boolean {
  const expected = Buffer.from(sessionMac(secret, fields));
  const given = Buffer.from(typeof mac === 'string' ? mac : '');
  return given.length === expected.length && timingSafeEqual(given, expected);
}
