/**
 * test/secure-registry.test.ts — a registry with a key (issue 18): every line crosses a secure
 * link, hellos are signed instead of carrying the token, and tickets bind the caller's key.
 * Requests go through protocol.ts's askRegistry with a SecureLink, as the client sends them.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  askRegistry, checkTicket, decodeDatagram, encodeDatagram, signedHello,
} from '../protocol.ts';
import type { LoggedIn, Reply, Request } from '../protocol.ts';
import { generateKeyPair, SecureChannelError } from '../secure.ts';
import type { KeyPair } from '../secure.ts';
import { LineClient, sendDatagram, sleep, startTestServer, waitUntil } from './helpers.ts';
import type { TestServer } from './helpers.ts';

const REGISTRY_KEY = generateKeyPair();

async function secureRegistry(): Promise<TestServer> {
  return startTestServer({ identity: REGISTRY_KEY });
}

function ask(server: TestServer, request: Request, staticKey: KeyPair,
  expectedRemoteKey: Uint8Array | undefined = REGISTRY_KEY.publicKey): Promise<Reply> {
  const registry = { host: '127.0.0.1', port: server.tcpPort, name: 'test' };
  return askRegistry(request, registry, 3000, undefined, { staticKey, expectedRemoteKey });
}

/** Registers and logs `username` in over secure links, proving `key` at login. */
async function login(server: TestServer, username: string, key: KeyPair,
  chatPort = 7000): Promise<LoggedIn> {
  const password = 'correct horse';
  assert.equal((await ask(server, { type: 'register', username, password }, key)).type,
    'registered');
  const answer = await ask(server, { type: 'login', username, password, chatPort }, key);
  assert.equal(answer.type, 'logged_in', JSON.stringify(answer.type));
  return answer as LoggedIn;
}

test('secure registry: register, login and list over the secure link; logged_in has the hello ' +
  'credentials; the log names the key by its fingerprint only', async () => {
  const server = await secureRegistry();
  try {
    const alice = generateKeyPair();
    const loggedIn = await login(server, 'alice', alice);
    assert.ok(loggedIn.session && loggedIn.helloKey, 'session and helloKey given');
    const online = await ask(server, { type: 'list', token: loggedIn.token }, alice);
    assert.deepEqual(online, { type: 'online', users: ['alice'], total: 1 });
    const log = server.logLines.join('\n');
    assert.match(log, / secure key=SHA256:/);
    assert.ok(!log.includes(loggedIn.token) && !log.includes(loggedIn.helloKey!));
    assert.ok(!log.includes(REGISTRY_KEY.privateKey.toString('base64')));
  } finally {
    await server.close();
  }
});

test('secure registry: a client speaking JSON in clear (nc) is told to use a secure link or ' +
  '--plain, and cut off', async () => {
  const server = await secureRegistry();
  try {
    const nc = await LineClient.connect(server.tcpPort);
    const answer = await nc.request({ type: 'list', token: 'x' });
    assert.equal(answer.type, 'error');
    assert.match(String(answer.message), /secure link.*--plain/);
    await waitUntil(() => nc.socket.destroyed || nc.socket.readableEnded, 3000, 'the hang-up');
    nc.close();
  } finally {
    await server.close();
  }
});

test('secure registry: a client that pinned another key refuses the registry before sending ' +
  'its request', async () => {
  const server = await secureRegistry();
  try {
    const wrongPin = generateKeyPair().publicKey;
    await assert.rejects(
      ask(server, { type: 'register', username: 'mallory', password: 'pw' }, generateKeyPair(),
        wrongPin),
      (error: unknown) => error instanceof SecureChannelError && error.code === 'wrong_key' &&
        /registry at test/.test(error.message),
    );
    assert.ok(!server.logLines.some((line) => / register /.test(line)), 'nothing registered');
  } finally {
    await server.close();
  }
});

test('secure registry: hellos are signed; a replayed, forged or token hello changes nothing and ' +
  'gets no answer', async () => {
  const server = await secureRegistry();
  try {
    const key = generateKeyPair();
    const { session, helloKey, token } = await login(server, 'alice', key);
    const live = server.registry.sessionsByName.get('alice')!;
    const heard = () => live.lastHeardAt;

    const first = encodeDatagram(signedHello(helloKey!, 'alice', session!, 1));
    assert.ok(!Buffer.from(first).toString().includes(token), 'a hello carries no token');
    const before = heard();
    await sleep(5);
    assert.equal(await sendDatagram(server.udpPort, first, 200), null);
    await waitUntil(() => heard() > before, 2000, 'the signed hello to count');

    const replayedAt = heard();
    await sleep(5);
    assert.equal(await sendDatagram(server.udpPort, first, 200), null, 'replay: no answer');
    const forged = { ...decodeDatagram(first), ...signedHello(helloKey!, 'alice', session!, 2),
      mac: signedHello(generateKeyPair().privateKey.toString('base64url'), 'alice', session!, 2)
        .mac };
    assert.equal(await sendDatagram(server.udpPort, JSON.stringify(forged), 200), null);
    const tokenHello = JSON.stringify({ type: 'hello', username: 'alice', token });
    assert.equal(await sendDatagram(server.udpPort, tokenHello, 200), null);
    assert.equal(heard(), replayedAt, 'none of the three refreshed the session');
    console.log('signed hellos: replay, forgery and a token hello ignored (no answer, no refresh)');

    const next = encodeDatagram(signedHello(helloKey!, 'alice', session!, 2));
    await sendDatagram(server.udpPort, next);
    await waitUntil(() => heard() > replayedAt, 2000, 'the next signed hello to count');

    const unknown = signedHello(helloKey!, 'alice', 'no-such-session', 3);
    const answer = await sendDatagram(server.udpPort, encodeDatagram(unknown), 1000);
    assert.deepEqual(JSON.parse(answer ?? 'null'), { type: 'session_unknown' });
  } finally {
    await server.close();
  }
});

test('secure registry: found names the callee\'s proven key and the ticket binds the caller\'s: ' +
  'a copied ticket is useless with any other key', async () => {
  const server = await secureRegistry();
  try {
    const aliceKey = generateKeyPair();
    const bobKey = generateKeyPair();
    const alice = await login(server, 'alice', aliceKey, 7001);
    const bob = await login(server, 'bob', bobKey, 7002);
    const found = await ask(server, { type: 'search', token: alice.token, username: 'bob' },
      aliceKey);
    assert.equal(found.type, 'found');
    if (found.type !== 'found') return;
    assert.equal(found.key, bobKey.publicKey.toString('base64url'));
    const check = (key: KeyPair) => checkTicket(bob.token, found.ticket, 'alice', 'bob',
      Date.now(), key.publicKey.toString('base64url'));
    assert.equal(check(aliceKey), 'valid');
    assert.equal(check(generateKeyPair()), 'forged', 'a thief with its own key');
    assert.equal(checkTicket(bob.token, found.ticket, 'alice', 'bob'), 'forged', 'no key');
  } finally {
    await server.close();
  }
});

test('secure registry: a device proof is bound to the identity key that earned it: copied ' +
  'without the key it counts as none', async () => {
  const server = await secureRegistry();
  try {
    const key = generateKeyPair();
    const first = await login(server, 'alice', key);
    const proof = first.device!;
    const [id] = proof.split('.');
    const again = (with_: KeyPair) => ask(server, { type: 'login', username: 'alice',
      password: 'correct horse', chatPort: 7000, device: proof }, with_) as Promise<LoggedIn>;
    assert.equal((await again(key)).device!.split('.')[0], id, 'the same device, recognised');
    const thief = await again(generateKeyPair());
    assert.notEqual(thief.device!.split('.')[0], id, 'another key: a new device, not this one');
    console.log('device proof: recognised with its key, counted as none with another');
  } finally {
    await server.close();
  }
});
