/**
 * test/secure-demo.test.ts — the secure path end to end (issue 18): real client processes on
 * their default (secure) settings, each with its own data folder, and a registry with a key.
 *
 *   - a loopback capture of a whole demo holds no password, token, hello key, ticket, lookup
 *     answer or chat line; /verify shows both users the same safety number
 *   - a copied ticket, a forged one and a plain-text caller get nowhere
 *   - one changed byte on the peer link ends the chat with a clear message
 *   - a peer's new key is a warning before the y/n question; a registry's new key is refused
 *   - an identity key is saved only when the login it was made for succeeds
 */

import assert from 'node:assert/strict';
import { Buffer } from 'node:buffer';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { PeerChannel, makeTicket } from '../protocol.ts';
import type { PeerMessage } from '../protocol.ts';
import { generateKeyPair } from '../secure.ts';
import { captureUnavailable, secretsSeen, startCapture } from './capture.ts';
import {
  SECURE_PATH, SpawnedProcesses, loginThroughScreens, registerThroughScreens, startChat,
  startTestServer, waitUntil,
} from './helpers.ts';
import type { ScriptProcess, TestServer } from './helpers.ts';

const folders: string[] = [];
after(() => folders.forEach((folder) => rmSync(folder, { recursive: true, force: true })));

function dataDir(): string {
  const folder = mkdtempSync(path.join(tmpdir(), 'p2p-chat-secure-'));
  folders.push(folder);
  return folder;
}

/** A client on the secure path with its own data folder, logged in at its Search prompt. */
async function secureClient(spawned: SpawnedProcesses, server: TestServer, username: string,
  folder = dataDir(), register = true, args: string[] = []): Promise<ScriptProcess> {
  const client = await spawned.client(server.tcpPort, server.udpPort,
    [SECURE_PATH, '--data-dir', folder, '--server', '127.0.0.1', ...args]);
  if (register) await registerThroughScreens(client, username, `pw of ${username} 7Xq`);
  await loginThroughScreens(client, username, `pw of ${username} 7Xq`);
  return client;
}

test('secure demo: a capture of register, login, list, call, chat, verify and logout shows no ' +
  'secret; both users see the same safety number', {
  skip: captureUnavailable(),
}, async () => {
  const capture = await startCapture();
  const server = await startTestServer({ identity: generateKeyPair(), heartbeatMs: 200 });
  const spawned = new SpawnedProcesses();
  try {
    const alice = await secureClient(spawned, server, 'alice');
    const bob = await secureClient(spawned, server, 'bob');
    alice.type('/list');
    await alice.waitFor(/Online \(2\)/);
    await startChat(alice, 'alice', bob, 'bob');
    alice.type('the meeting moves to the old boathouse');
    await bob.waitFor('the meeting moves to the old boathouse');
    bob.type('understood, bringing the maps');
    await alice.waitFor('understood, bringing the maps');
    alice.type('/verify');
    const aliceSees = (await alice.waitFor(/Safety number with bob: ([\d ]+)/))[1];
    bob.type('/verify alice');
    const bobSees = (await bob.waitFor(/Safety number with alice: ([\d ]+)/))[1];
    assert.equal(aliceSees.replace(/ /g, '').length, 60);
    assert.equal(aliceSees, bobSees, 'the same 60 digits on both screens');
    const sessions = ['alice', 'bob'].map((name) => server.registry.sessionsByName.get(name)!);
    const [, bobSession] = sessions;
    const ticketStart = `v2.${Buffer.from('alice').toString('base64url')}.`;
    await new Promise((resolve) => setTimeout(resolve, 500)); // a few signed hellos go by
    alice.type('/quit');
    bob.type('/quit');
    await Promise.all([alice.exited, bob.exited]);

    const captured = await capture.stop();
    const secrets = [
      'pw of alice 7Xq', 'pw of bob 7Xq', 'the meeting moves', 'bringing the maps',
      ...sessions.flatMap((session) => [session.token, session.helloKey.toString('base64url')]),
      ticketStart, `"port":${bobSession.chatPort},"ticket"`, // the ticket, the lookup answer
    ];
    const seen = secretsSeen(captured, secrets);
    const hellos = captured.toString('latin1').split('"type":"hello"').length - 1;
    console.log(`secure demo: captured ${captured.length} bytes on lo, ${hellos} signed hellos ` +
      `among them; secrets seen: ${JSON.stringify(seen)}`);
    assert.ok(hellos > 0, 'the capture saw the demo (its hellos, which are meant to be public)');
    assert.deepEqual(seen, []);
  } finally {
    await capture.stop().catch(() => {});
    await spawned.stopAll();
    await server.close();
  }
});

/** Connects to a client's chat port as a stranger would, over a secure link with `key`. */
async function knock(port: number, key = generateKeyPair()) {
  const messages: PeerMessage[] = [];
  const channel = await PeerChannel.connect('127.0.0.1', port, {
    onMessage: (message) => messages.push(message), onClose: () => {},
  }, 3000, { staticKey: key });
  return { channel, messages };
}

test('secure demo: a copied ticket, a forged one and a caller in clear get nowhere; the real ' +
  'caller still gets through', async () => {
  const server = await startTestServer({ identity: generateKeyPair(), heartbeatMs: 200 });
  const spawned = new SpawnedProcesses();
  try {
    const alice = await secureClient(spawned, server, 'alice');
    const bob = await secureClient(spawned, server, 'bob');
    const bobSession = server.registry.sessionsByName.get('bob')!;
    const aliceKey = server.registry.sessionsByName.get('alice')!.key!;
    const port = bobSession.chatPort;

    // The real ticket, as a thief who copied it would hold it (bound to alice's key).
    const copied = makeTicket(bobSession.token, 'alice', 'bob', Date.now() + 30_000, aliceKey);
    const thief = await knock(port);
    thief.channel.send({ type: 'chat_request', from: 'alice', ticket: copied });
    await bob.waitFor(/refused a chat request claiming to come from "alice".*forged/);
    // One made up without the token (from a hello, say) and signed with a guess.
    const forger = await knock(port);
    const forged = makeTicket('guessed-token', 'teacher', 'bob', Date.now() + 3e11, '');
    forger.channel.send({ type: 'chat_request', from: 'teacher', ticket: forged });
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.deepEqual([...thief.messages, ...forger.messages].map((m) => m.type),
      ['chat_decline', 'chat_decline'].slice(0, thief.messages.length + forger.messages.length));
    // A caller in clear (nc) never reaches the ticket check: the handshake fails first.
    const plain = net.connect(port, '127.0.0.1');
    await new Promise((resolve) => plain.once('connect', resolve));
    plain.write(JSON.stringify({ type: 'chat_request', from: 'carol', ticket: copied }) + '\n');
    await new Promise((resolve) => setTimeout(resolve, 500));
    plain.destroy();
    assert.ok(!bob.stdout.includes('wants to chat'), 'bob was never asked about any of them');
    console.log('secure demo: copied ticket, forged ticket and a plain caller refused; ' +
      'bob was asked 0 times');

    await startChat(alice, 'alice', bob, 'bob');
  } finally {
    await spawned.stopAll();
    await server.close();
  }
});

test('secure demo: one changed byte on the peer link ends the chat with a clear message',
  async () => {
    const server = await startTestServer({ identity: generateKeyPair(), heartbeatMs: 200 });
    const spawned = new SpawnedProcesses();
    let tamper = false;
    const relay = net.createServer((fromAlice) => {
      const toBob = net.connect(bobPort, '127.0.0.1');
      fromAlice.on('data', (chunk: Buffer) => {
        if (tamper) {
          tamper = false;
          chunk[chunk.length - 1] ^= 0x01; // inside the last frame's tag
        }
        toBob.write(chunk);
      });
      toBob.on('data', (chunk: Buffer) => fromAlice.write(chunk));
      fromAlice.on('error', () => toBob.destroy()).on('close', () => toBob.destroy());
      toBob.on('error', () => fromAlice.destroy()).on('close', () => fromAlice.destroy());
    });
    let bobPort = 0;
    try {
      const alice = await secureClient(spawned, server, 'alice');
      const bob = await secureClient(spawned, server, 'bob');
      await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
      const bobSession = server.registry.sessionsByName.get('bob')!;
      bobPort = bobSession.chatPort;
      bobSession.chatPort = (relay.address() as net.AddressInfo).port; // alice is sent via us
      await startChat(alice, 'alice', bob, 'bob');
      tamper = true;
      alice.type('this line is changed on the way');
      const said = await bob.waitFor(/Dropped alice: .*tampered with/);
      console.log(`secure demo: bob's client said: ${said[0]}`);
      assert.ok(!bob.stdout.includes('this line is changed'), 'the changed line was not shown');
      await alice.waitFor('bob left the chat');
    } finally {
      relay.close();
      await spawned.stopAll();
      await server.close();
    }
  });

test('secure demo: a peer\'s new key is a warning before the y/n question; a registry with a ' +
  'new key is refused with an explanation', async () => {
  let server = await startTestServer({ identity: generateKeyPair(), heartbeatMs: 200 });
  const spawned = new SpawnedProcesses();
  try {
    const bobFolder = dataDir();
    const alice = await secureClient(spawned, server, 'alice');
    const bob = await secureClient(spawned, server, 'bob', bobFolder);
    await startChat(alice, 'alice', bob, 'bob');
    alice.type('/quit');
    await alice.exited;
    await bob.waitFor('alice left the chat');

    // alice again, from a new computer (a new data folder: a new identity key).
    const newAlice = await secureClient(spawned, server, 'alice', dataDir(), false);
    newAlice.type('bob');
    const warning = await bob.waitFor(/Warning: alice's key has changed[^\n]*/);
    await bob.waitFor(/alice wants to chat/);
    console.log(`secure demo: ${warning[0].slice(0, 120)}…`);
    bob.type('n');
    bob.type('/quit');
    await bob.exited;

    // The registry comes back on the same ports with another key: bob's client refuses it.
    const { tcpPort, udpPort } = server;
    await server.close();
    server = await startTestServer({ identity: generateKeyPair(), tcpPort, udpPort });
    const again = await spawned.client(tcpPort, udpPort, [SECURE_PATH, '--data-dir', bobFolder]);
    await waitUntil(() => /registry [^\n]*: refused — [^\n]*proved a different key/
      .test(again.stdout), 5000, 'the banner to say the registry was refused');
    again.type('bob');
    await again.waitFor('password');
    again.type('pw of bob 7Xq');
    const refused =
      await again.waitFor(/Login failed: the registry at [^\n]* proved a different key/);
    console.log(`secure demo: ${refused[0]}`);
    assert.ok(!server.logLines.some((line) => / login /.test(line)), 'no password was sent');
  } finally {
    await spawned.stopAll();
    await server.close();
  }
});

test('secure demo: after a restart (same key, same ports) a client hears of it within a ' +
  'heartbeat or two, and only because the registry confirmed it over the secure link',
  async () => {
    const identity = generateKeyPair();
    let server = await startTestServer({ identity, heartbeatMs: 200 });
    const spawned = new SpawnedProcesses();
    try {
      const alice = await secureClient(spawned, server, 'alice', dataDir(), true, ['--trace']);
      // The login's own "who is online" question must be answered by the first registry: asked
      // of the restarted one, its refusal (not the hello path) would send alice back to Login.
      await alice.waitFor(/Online now \(1\)/);
      const { tcpPort, udpPort } = server;
      await server.close();
      server = await startTestServer({ identity, heartbeatMs: 200, tcpPort, udpPort });
      const heard = await alice.waitFor(/← udp \{"type":"session_unknown"\}[^]*?→ registry (.*)/,
        10_000);
      assert.match(heard[1], /"type":"list".*"prefix":"alice"/, 'it asked before believing');
      await alice.waitFor(/no longer knows this session/, 10_000);
      await alice.waitFor(/Login — username/);
      console.log(`secure demo: after the restart the client asked ${heard[1]}, then left`);
    } finally {
      await spawned.stopAll();
      await server.close();
    }
  });

test('secure demo: a login under a mistyped name leaves no key file; the first good login ' +
  'saves one, owner-only, and later logins use it', async () => {
  const server = await startTestServer({ identity: generateKeyPair() });
  const spawned = new SpawnedProcesses();
  const folder = dataDir();
  try {
    const client = await secureClient(spawned, server, 'erin', folder, true);
    client.type('/logout');
    await client.waitFor(/Login — username/);
    client.type('eirn');
    await client.waitFor('password');
    client.type('pw of erin 7Xq');
    await client.waitFor('Login failed: wrong username or password.');
    assert.equal(existsSync(path.join(folder, 'keys', 'eirn.key')), false, 'a key for a typo');
    const saved = path.join(folder, 'keys', 'erin.key');
    assert.equal(statSync(saved).mode & 0o777, 0o600);
    assert.match(client.stdout, /Made an identity key for erin: [^\n]*\nLogged in as erin/);
    await loginThroughScreens(client, 'erin', 'pw of erin 7Xq');
    assert.equal(client.stdout.match(/Made an identity key/g)?.length, 1, 'made once');
    console.log('secure demo: keys after a typo and two logins: ' +
      `${JSON.stringify(readdirSync(path.join(folder, 'keys')))}`);
  } finally {
    await spawned.stopAll();
    await server.close();
  }
});

test('secure demo: a client on the secure path tells a --plain registry apart from a missing one',
  async () => {
    const spawned = new SpawnedProcesses();
    try {
      const { tcpPort, udpPort } = await spawned.server(); // --plain, as spawned for tests
      const client = await spawned.client(tcpPort, udpPort, [SECURE_PATH, '--data-dir',
        dataDir()]);
      const banner = /registry [^\n]*: refused — [^\n]*speaks in clear[^\n]*/;
      await waitUntil(() => banner.test(client.stdout), 5000, 'the banner to say why');
      console.log(`secure demo: ${banner.exec(client.stdout)![0]}`);
    } finally {
      await spawned.stopAll();
    }
  });
