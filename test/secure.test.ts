/**
 * test/secure.test.ts — the secure channel (secure.ts) on its own, in this process.
 *
 *   - the Noise core against published vectors (test/noise-vectors.json, from cacophony)
 *   - SecureSocket over loopback:
 *       initiator ◀── TCP ──▶ [relay: may alter frames] ◀── TCP ──▶ responder
 *   - key files, fingerprints, safety numbers, session MACs
 */

import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  CipherState, fingerprint, generateKeyPair, Handshake, keyPairFromPrivate, loadKeyFile,
  loadOrCreateKeyFile, safetyNumber, saveKeyFile, SecureChannelError, secureSocket, sessionMac,
  sessionMacValid,
} from '../secure.ts';
import type { KeyPair, SecureOptions, SecureSocket } from '../secure.ts';

// ============================================================================================
// Published vectors
// ============================================================================================

type Vector = {
  protocol_name: string;
  init_prologue: string;
  init_static?: string;
  init_ephemeral: string;
  resp_prologue: string;
  resp_static?: string;
  resp_ephemeral: string;
  handshake_hash: string;
  messages: { payload: string; ciphertext: string }[];
};

const vectorFile = new URL('./noise-vectors.json', import.meta.url);
const { vectors } = JSON.parse(readFileSync(vectorFile, 'utf8')) as { vectors: Vector[] };
const hex = (text: string) => Buffer.from(text, 'hex');

for (const name of ['Noise_XX_25519_ChaChaPoly_SHA256', 'Noise_NN_25519_ChaChaPoly_SHA256']) {
  test(`${name}: handshake, hash and transport match the published vector byte for byte`, () => {
    const vector = vectors.find((v) => v.protocol_name === name);
    assert.ok(vector, `${name} is in test/noise-vectors.json`);
    const pattern = name.split('_')[1] as 'XX' | 'NN';
    const side = (initiator: boolean, prologue: string, s: string | undefined, e: string) =>
      new Handshake({
        initiator, pattern, prologue: hex(prologue),
        staticKey: s === undefined ? undefined : keyPairFromPrivate(hex(s)),
        ephemeralKey: keyPairFromPrivate(hex(e)),
      });
    const initiator = side(true, vector.init_prologue, vector.init_static, vector.init_ephemeral);
    const responder = side(false, vector.resp_prologue, vector.resp_static, vector.resp_ephemeral);
    const handshakeLength = pattern === 'XX' ? 3 : 2;
    vector.messages.forEach(({ payload, ciphertext }, index) => {
      const [writer, reader] = index % 2 === 0 ? [initiator, responder] : [responder, initiator];
      let sent: Buffer;
      let received: Buffer;
      if (index < handshakeLength) {
        sent = writer.writeMessage(hex(payload));
        received = reader.readMessage(sent);
      } else {
        sent = writer.send!.encryptWithAd(Buffer.alloc(0), hex(payload));
        received = reader.receive!.decryptWithAd(Buffer.alloc(0), sent);
      }
      assert.equal(sent.toString('hex'), ciphertext, `message ${index}`);
      assert.equal(received.toString('hex'), payload, `payload ${index}`);
      if (index === handshakeLength - 1) {
        assert.ok(initiator.done && responder.done);
        assert.equal(initiator.hash.toString('hex'), vector.handshake_hash);
        assert.equal(responder.hash.toString('hex'), vector.handshake_hash);
      }
    });
    if (pattern === 'XX') {
      assert.deepEqual(initiator.remoteStaticKey, keyPairFromPrivate(hex(vector.resp_static!))
        .publicKey);
      assert.deepEqual(responder.remoteStaticKey, keyPairFromPrivate(hex(vector.init_static!))
        .publicKey);
    }
  });
}

test('a changed byte in a handshake message fails the handshake', () => {
  const initiator = new Handshake({ initiator: true, staticKey: generateKeyPair() });
  const responder = new Handshake({ initiator: false, staticKey: generateKeyPair() });
  responder.readMessage(initiator.writeMessage());
  const second = responder.writeMessage();
  const altered = Buffer.from(second);
  altered[40] ^= 1; // inside the encrypted static key
  assert.throws(() => initiator.readMessage(altered));
});

test('a transport key opens each message once, in order; a failure does not move the counter',
  () => {
    const key = generateKeyPair().privateKey; // any 32 bytes make a key
    const sender = new CipherState(key);
    const receiver = new CipherState(key);
    const first = sender.encryptWithAd(Buffer.alloc(0), Buffer.from('first'));
    const second = sender.encryptWithAd(Buffer.alloc(0), Buffer.from('second'));
    assert.throws(() => receiver.decryptWithAd(Buffer.alloc(0), second), 'out of order');
    assert.equal(receiver.counter, 0);
    const forged = Buffer.from(first);
    forged[0] ^= 1;
    assert.throws(() => receiver.decryptWithAd(Buffer.alloc(0), forged), 'changed byte');
    assert.equal(receiver.decryptWithAd(Buffer.alloc(0), first).toString(), 'first');
    assert.throws(() => receiver.decryptWithAd(Buffer.alloc(0), first), 'replayed');
    assert.equal(receiver.decryptWithAd(Buffer.alloc(0), second).toString(), 'second');
  });

// ============================================================================================
// SecureSocket over loopback
// ============================================================================================

const PROLOGUE = 'p2p-chat secure test';

type Listening = { port: number; close: () => void };

async function listen(onSocket: (socket: net.Socket) => void): Promise<Listening> {
  const server = net.createServer(onSocket);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as net.AddressInfo).port, close: () => server.close() };
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => resolve(socket)).once('error', reject);
  });
}

/** A responder that settles `accepted` with its SecureSocket or its handshake error. */
async function secureServer(options: Omit<SecureOptions, 'initiator'>) {
  let settle: (outcome: SecureSocket | SecureChannelError) => void = () => {};
  const accepted = new Promise<SecureSocket | SecureChannelError>((resolve) => (settle = resolve));
  const server = await listen((socket) => {
    secureSocket(socket, { ...options, initiator: false }).then(settle, settle);
  });
  return { ...server, accepted };
}

/** Everything a SecureSocket delivered, and how it ended. */
function collect(stream: SecureSocket) {
  const seen = { text: '', error: undefined as Error | undefined, closed: false };
  stream.on('data', (chunk: Buffer) => (seen.text += chunk.toString('utf8')));
  stream.on('error', (error) => (seen.error = error));
  stream.on('close', () => (seen.closed = true));
  return seen;
}

async function until(condition: () => boolean, what: string, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

test('over loopback: each side learns the other\'s key, lines cross both ways', async () => {
  const serverKey = generateKeyPair();
  const clientKey = generateKeyPair();
  const server = await secureServer({ staticKey: serverKey, prologue: PROLOGUE });
  try {
    const client = await secureSocket(await connect(server.port), {
      initiator: true, staticKey: clientKey, prologue: PROLOGUE,
      expectedRemoteKey: serverKey.publicKey,
    });
    client.write('hello\n'); // sent at once: may arrive with the last handshake message
    const accepted = await server.accepted;
    assert.ok(!(accepted instanceof Error), String(accepted));
    const atServer = collect(accepted);
    const atClient = collect(client);
    assert.deepEqual(accepted.remoteStaticKey, clientKey.publicKey);
    assert.deepEqual(client.remoteStaticKey, serverKey.publicKey);
    assert.deepEqual(client.handshakeHash, accepted.handshakeHash);
    const long = 'x'.repeat(200_000) + '\n'; // four frames' worth, as one line
    client.write(long);
    accepted.write('welcome\n');
    await until(() => atServer.text.length === 6 + long.length, 'the long line');
    assert.equal(atServer.text, 'hello\n' + long);
    await until(() => atClient.text === 'welcome\n', 'the answer');
    client.end();
    await until(() => atServer.closed && atClient.closed, 'both ends closed');
    assert.equal(atServer.error, undefined);
    assert.equal(atClient.error, undefined);
  } finally {
    server.close();
  }
});

/** A relay between initiator and responder that hands each initiator→responder frame (after
 * the two handshake frames) to `alter`, which returns the frames to forward instead. */
async function relay(target: number, alter: (index: number, frame: Buffer) => Buffer[]) {
  return await listen((inbound) => {
    const outbound = net.connect({ host: '127.0.0.1', port: target });
    outbound.on('data', (chunk) => inbound.write(chunk)).on('error', () => inbound.destroy());
    outbound.on('close', () => inbound.destroy());
    inbound.on('error', () => outbound.destroy()).on('close', () => outbound.destroy());
    inbound.on('end', () => outbound.end());
    let pending = Buffer.alloc(0);
    let index = 0;
    inbound.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 2 && pending.length >= 2 + pending.readUInt16BE(0)) {
        const whole = pending.subarray(0, 2 + pending.readUInt16BE(0));
        pending = pending.subarray(whole.length);
        const forward = index < 2 ? [whole] : alter(index - 2, Buffer.from(whole));
        index++;
        for (const frame of forward) outbound.write(frame);
      }
    });
  });
}

/** Sends three lines through a relay that applies `alter`; returns what the responder saw. */
async function throughRelay(alter: (index: number, frame: Buffer) => Buffer[]) {
  const serverKey = generateKeyPair();
  const server = await secureServer({ staticKey: serverKey });
  const middle = await relay(server.port, alter);
  try {
    const client = await secureSocket(await connect(middle.port), {
      initiator: true, staticKey: generateKeyPair(), expectedRemoteKey: serverKey.publicKey,
    });
    client.on('error', () => {});
    const accepted = await server.accepted;
    assert.ok(!(accepted instanceof Error), String(accepted));
    const seen = collect(accepted);
    for (const line of ['one\n', 'two\n', 'three\n']) client.write(line);
    client.end();
    await until(() => seen.closed || seen.text === 'one\ntwo\nthree\n', 'the outcome');
    client.destroy();
    return seen;
  } finally {
    middle.close();
    server.close();
  }
}

test('the relay alone changes nothing (the failures below are the alterations\')', async () => {
  const seen = await throughRelay((_index, frame) => [frame]);
  assert.equal(seen.text, 'one\ntwo\nthree\n');
  assert.equal(seen.error, undefined);
});

test('one changed byte in a transport frame ends the connection with a clear message', async () => {
  const seen = await throughRelay((index, frame) => {
    if (index === 1) frame[5] ^= 0x20;
    return [frame];
  });
  assert.equal(seen.text, 'one\n', 'what came before the altered frame is delivered');
  assert.ok(seen.error instanceof SecureChannelError);
  assert.equal(seen.error.code, 'auth');
  assert.equal(seen.error.message, 'message authentication failed: the connection was ' +
    'tampered with');
  assert.ok(seen.closed);
});

test('a replayed frame is rejected', async () => {
  const seen = await throughRelay((index, frame) => (index === 0 ? [frame, frame] : [frame]));
  assert.equal(seen.text, 'one\n');
  assert.equal((seen.error as SecureChannelError | undefined)?.code, 'auth');
});

test('reordered frames are rejected', async () => {
  let heldBack: Buffer = Buffer.alloc(0);
  const seen = await throughRelay((index, frame) => {
    if (index === 0) {
      heldBack = frame; // "one" is kept, and sent after "two"
      return [];
    }
    return index === 1 ? [frame, heldBack] : [frame];
  });
  assert.equal(seen.text, '');
  assert.equal((seen.error as SecureChannelError | undefined)?.code, 'auth');
});

test('a frame too short to hold a tag is a bad frame', async () => {
  const seen = await throughRelay((index, frame) =>
    index === 1 ? [Buffer.from([0, 3, 1, 2, 3])] : [frame]);
  assert.equal(seen.text, 'one\n');
  assert.equal((seen.error as SecureChannelError | undefined)?.code, 'bad_frame');
});

test('a connection that ends inside a frame is reported as such', async () => {
  const seen = await throughRelay((index, frame) => [index === 2 ? frame.subarray(0, 5) : frame]);
  assert.equal(seen.text, 'one\ntwo\n');
  assert.equal((seen.error as SecureChannelError | undefined)?.code, 'bad_frame');
  assert.equal(seen.error?.message, 'the connection ended inside a frame');
});

test('lines sent just before a close still reach an owner that reads late', async () => {
  const serverKey = generateKeyPair();
  const server = await secureServer({ staticKey: serverKey });
  try {
    const client = await secureSocket(await connect(server.port), {
      initiator: true, staticKey: generateKeyPair(), expectedRemoteKey: serverKey.publicKey,
    });
    const accepted = await server.accepted;
    assert.ok(!(accepted instanceof Error), String(accepted));
    accepted.on('error', () => {});
    accepted.end('last words\n');
    await until(() => client.socket.destroyed, 'the TCP connection to close');
    const seen = collect(client); // only now does anyone read
    await until(() => seen.closed, 'the stream to close');
    assert.equal(seen.text, 'last words\n');
    assert.equal(seen.error, undefined);
  } finally {
    server.close();
  }
});

test('the initiator refuses an unexpected key before it reveals its own', async () => {
  const server = await secureServer({ staticKey: generateKeyPair() });
  const other = generateKeyPair();
  try {
    const refused = secureSocket(await connect(server.port), {
      initiator: true, staticKey: generateKeyPair(), expectedRemoteKey: other.publicKey,
    });
    await assert.rejects(refused, (error: SecureChannelError) => {
      assert.equal(error.code, 'wrong_key');
      assert.match(error.message, /not the one expected: expected SHA256:\S+, got SHA256:/);
      assert.ok(error.message.includes(fingerprint(other.publicKey)));
      return true;
    });
    const atServer = await server.accepted;
    assert.ok(atServer instanceof SecureChannelError, 'the server never got a third message');
    assert.equal(atServer.code, 'closed');
  } finally {
    server.close();
  }
});

test('the responder refuses a caller whose key is not the expected one', async () => {
  const serverKey = generateKeyPair();
  const server = await secureServer({
    staticKey: serverKey, expectedRemoteKey: generateKeyPair().publicKey,
  });
  try {
    const client = await secureSocket(await connect(server.port), {
      initiator: true, staticKey: generateKeyPair(),
    });
    client.on('error', () => {});
    const atServer = await server.accepted;
    assert.ok(atServer instanceof SecureChannelError);
    assert.equal(atServer.code, 'wrong_key');
    client.destroy();
  } finally {
    server.close();
  }
});

test('different prologues (protocol versions) fail the handshake', async () => {
  const server = await secureServer({ staticKey: generateKeyPair(), prologue: 'version 2' });
  try {
    const refused = secureSocket(await connect(server.port), {
      initiator: true, staticKey: generateKeyPair(), prologue: 'version 1',
    });
    await assert.rejects(refused, (error: SecureChannelError) => error.code === 'auth' &&
      /different protocol version/.test(error.message));
  } finally {
    server.close();
  }
});

test('a plain JSON client gets a clear refusal line; a silent server times out', async () => {
  const refusal = '{"type":"error","code":"bad_request","message":"this registry is encrypted"}';
  const server = await secureServer({ staticKey: generateKeyPair(), plainRefusal: refusal });
  const silent = await listen(() => {});
  try {
    const plain = await connect(server.port);
    let answer = '';
    plain.on('data', (chunk) => (answer += chunk.toString()));
    plain.write('{"type":"list","token":"' + 'a'.repeat(300) + '"}\n');
    const atServer = await server.accepted;
    assert.ok(atServer instanceof SecureChannelError);
    assert.equal(atServer.code, 'plain');
    await until(() => answer === refusal + '\n', 'the refusal line');

    const started = Date.now();
    await assert.rejects(secureSocket(await connect(silent.port), {
      initiator: true, staticKey: generateKeyPair(), timeoutMs: 200,
    }), (error: SecureChannelError) => error.code === 'timeout' && /200 ms/.test(error.message));
    assert.ok(Date.now() - started < 2000);
  } finally {
    server.close();
    silent.close();
  }
});

// ============================================================================================
// Long-term keys and what is derived from them
// ============================================================================================

test('key files: made 0600, loaded back, refused when others can read them or junk', () => {
  const folder = mkdtempSync(join(tmpdir(), 'secure-test-'));
  try {
    const path = join(folder, 'keys', 'alice.key');
    const made = loadOrCreateKeyFile(path);
    assert.equal(made.created, true);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.equal(statSync(join(folder, 'keys')).mode & 0o777, 0o700);
    const again = loadOrCreateKeyFile(path);
    assert.equal(again.created, false);
    assert.deepEqual(again.pair, made.pair);
    assert.deepEqual(loadKeyFile(path), made.pair);
    assert.throws(() => saveKeyFile(path, generateKeyPair()), /EEXIST/);

    chmodSync(path, 0o644);
    assert.throws(() => loadKeyFile(path), /can be read by others \(mode 644\).*chmod 600/);
    chmodSync(path, 0o600);
    writeFileSync(path, 'not a key');
    assert.throws(() => loadKeyFile(path), /does not hold an X25519 private key/);
    assert.throws(() => loadKeyFile(join(folder, 'missing.key')), /cannot read.*ENOENT/);

    const raw: KeyPair = generateKeyPair();
    writeFileSync(join(folder, 'raw.key'), raw.privateKey, { mode: 0o600 });
    assert.deepEqual(loadKeyFile(join(folder, 'raw.key')), raw, 'a raw 32-byte key loads too');
  } finally {
    rmSync(folder, { recursive: true, force: true });
  }
});

test('fingerprints are short, stable and differ between keys', () => {
  const key = generateKeyPair().publicKey;
  assert.match(fingerprint(key), /^SHA256:[A-Za-z0-9+/]{43}$/);
  assert.equal(fingerprint(key), fingerprint(Buffer.from(key)));
  assert.notEqual(fingerprint(key), fingerprint(generateKeyPair().publicKey));
});

test('the safety number is the same on both sides and changes with either key', () => {
  const alice = { name: 'alice', publicKey: generateKeyPair().publicKey };
  const bob = { name: 'bob', publicKey: generateKeyPair().publicKey };
  const number = safetyNumber(alice, bob);
  assert.match(number, /^(\d{5} ){11}\d{5}$/);
  assert.equal(safetyNumber(bob, alice), number);
  assert.notEqual(safetyNumber(alice, { ...bob, publicKey: generateKeyPair().publicKey }), number);
  assert.notEqual(safetyNumber(alice, { ...bob, name: 'carol' }), number);
});

test('session MACs: valid only for the same secret and fields', () => {
  const secret = generateKeyPair().privateKey;
  const mac = sessionMac(secret, ['hello', 'alice', 7]);
  assert.equal(sessionMacValid(secret, ['hello', 'alice', 7], mac), true);
  assert.equal(sessionMacValid(secret, ['hello', 'alice', 8], mac), false);
  assert.equal(sessionMacValid(secret, ['hello', 'alic', 'e7'], mac), false);
  assert.equal(sessionMacValid(generateKeyPair().privateKey, ['hello', 'alice', 7], mac), false);
  assert.equal(sessionMacValid(secret, ['hello', 'alice', 7], 'garbage'), false);
  const lastChanged = mac.slice(0, -1) + (mac.endsWith('A') ? 'B' : 'A');
  assert.equal(sessionMacValid(secret, ['hello', 'alice', 7], lastChanged), false);
  assert.equal(sessionMacValid(secret, ['hello', 'alice', 7], 42), false);
  // 43 base64url characters carry 258 bits for 256: the last one's lowest bit is spare, so this
  // spells the very same bytes. Only the MAC as made passes.
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  const sameBytes = mac.slice(0, -1) + alphabet[alphabet.indexOf(mac.at(-1)!) ^ 1];
  assert.deepEqual(Buffer.from(sameBytes, 'base64url'), Buffer.from(mac, 'base64url'));
  assert.equal(sessionMacValid(secret, ['hello', 'alice', 7], sameBytes), false);
});
