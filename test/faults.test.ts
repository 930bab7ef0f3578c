/**
 * test/faults.test.ts — what happens when a part crashes, freezes, or misbehaves, with real
 * processes (server.ts and client.ts, started as a person would start them).
 *
 * What this file proves (figures printed):
 *   - MongoDB unreachable: the server exits quickly (< 10 s) and non-zero with one clear line
 *     naming the URI without its password; startServer({ mongodbUri }) rejects quickly too;
 *   - a client killed with SIGKILL is dropped by the registry within timeoutMs + 1 s;
 *   - a peer killed mid-chat: the other side prints "NAME left the chat" within 1 s;
 *   - the registry killed mid-chat: the chat goes on; the clients say the registry is gone when
 *     they next need it (/list, /logout); a frozen registry (SIGSTOP) is a timeout, not a hang;
 *   - the registry restarted on the same ports: every client learns within one heartbeat
 *     (session_unknown) and returns to Login — at once, or, if it is chatting, when the chat
 *     ends (the chat itself never needed the registry);
 *   - a crowd of silent connections, invalid UTF-8, and a huge line mid-chat from a peer are
 *     dropped with a message, and the client stays usable.
 *
 * client.test.ts covers the normal screens (and one registry-kill and one restart case), and
 * client-defences.test.ts single misbehaving peers and unanswered calls; this file covers the
 * remaining faults.
 */

import assert from 'node:assert/strict';
import type { Buffer } from 'node:buffer';
import net from 'node:net';
import process from 'node:process';
import { test } from 'node:test';
import { startServer } from '../server.ts';
import {
  LineClient, SpawnedProcesses, closedPort, registerAndLogin, sendDatagram, sleep, spawnScript,
  startChat, waitUntil,
} from './helpers.ts';

function since(start: number): number {
  return Math.round(performance.now() - start);
}

/** Asks the registry who is online, with an observer's token. */
async function onlineUsers(tcpPort: number, token: string): Promise<string[]> {
  const connection = await LineClient.connect(tcpPort);
  try {
    const answer = await connection.request({ type: 'list', token });
    assert.equal(answer.type, 'online', JSON.stringify(answer));
    return answer.users as string[];
  } finally {
    connection.close();
  }
}

/** Keeps an observer session alive with hellos, as a client would. Returns a stop function. */
function keepAlive(udpPort: number, username: string, token: string, everyMs: number): () => void {
  const timer = setInterval(
    () => void sendDatagram(udpPort, JSON.stringify({ type: 'hello', username, token })),
    everyMs,
  );
  return () => clearInterval(timer);
}

// ---------------------------------------------------------------------------------------------
// Storage unreachable at start-up
// ---------------------------------------------------------------------------------------------

test('faults: MONGODB_URI at a closed port → server exits quickly, non-zero, ' +
  'one clear line without the password', async () => {
  const port = await closedPort();
  const password = 'hunter2-not-for-logs';
  const uri = `mongodb://chat:${password}@127.0.0.1:${port}/p2p_chat`;
  const started = performance.now();
  const server = spawnScript(
    'server.ts',
    ['--host', '127.0.0.1', '--tcp-port', '0', '--udp-port', '0'],
    { MONGODB_URI: uri },
  );
  const exitCode = await Promise.race([server.exited, sleep(20_000).then(() => 'still running')]);
  const elapsed = since(started);
  server.kill('SIGKILL');
  const errorLines = server.stderr.split('\n').filter((line) => line.trim() !== '');
  console.log(`faults: unreachable MongoDB → exit ${exitCode} after ${elapsed} ms ` +
    `(process start-up included); stderr: ${JSON.stringify(errorLines)}`);
  assert.notEqual(exitCode, 'still running', 'the server gave up');
  assert.ok(elapsed < 10_000, `it gave up quickly (${elapsed} ms)`);
  assert.notEqual(exitCode, 0);
  assert.equal(errorLines.length, 1, 'exactly one line on stderr');
  assert.match(errorLines[0],
    new RegExp(`mongodb://chat:\\*\\*\\*@127\\.0\\.0\\.1:${port}/p2p_chat`), 'it names the URI');
  assert.match(errorLines[0], /MongoDB/);
  assert.ok(!(server.stdout + server.stderr).includes(password), 'the password is never printed');
});

test('faults: startServer({ mongodbUri }) at a closed port rejects quickly, ' +
  'naming the URI without the password', async () => {
  const port = await closedPort();
  const uri = `mongodb://chat:pa55word@127.0.0.1:${port}/p2p_chat`;
  const logLines: string[] = [];
  const started = performance.now();
  await assert.rejects(
    startServer({
      host: '127.0.0.1',
      tcpPort: 0,
      udpPort: 0,
      mongodbUri: uri,
      mongodbTimeoutMs: 1000,
      log: (line) => logLines.push(line),
    }),
    (error: Error) => {
      assert.match(error.message, /mongodb:\/\/chat:\*\*\*@127\.0\.0\.1/);
      assert.ok(!error.message.includes('pa55word'), 'no password in the error');
      console.log(`faults: startServer rejected after ${since(started)} ms: ${error.message}`);
      return true;
    },
  );
  assert.ok(since(started) < 10_000);
  assert.ok(!logLines.join('\n').includes('pa55word'));
});

// ---------------------------------------------------------------------------------------------
// Processes that die
// ---------------------------------------------------------------------------------------------

test('faults: a client killed with SIGKILL is dropped by the registry within timeoutMs + 1 s',
  async () => {
  const timeoutMs = 1500;
  const heartbeatMs = 300;
  const spawned = new SpawnedProcesses();
  let stopObserver = () => {};
  try {
    const { server, tcpPort, udpPort } = await spawned.server(
      ['--timeout-ms', String(timeoutMs), '--heartbeat-ms', String(heartbeatMs)],
    );
    const { client: alice } = await spawned.loggedInClient(tcpPort, udpPort, 'alice');
    const observer = await registerAndLogin(tcpPort, 'observer');
    stopObserver = keepAlive(udpPort, 'observer', observer, heartbeatMs);
    // Precondition: alice's heartbeats keep her online well past the timeout.
    await sleep(timeoutMs * 1.5);
    assert.deepEqual(await onlineUsers(tcpPort, observer), ['alice', 'observer']);

    alice.kill('SIGKILL'); // no logout, no bye: the registry must notice the silence
    const killedAt = performance.now();
    await alice.exited;
    let gone = false;
    while (!gone && since(killedAt) < timeoutMs + 5000) {
      gone = !(await onlineUsers(tcpPort, observer)).includes('alice');
      if (!gone) await sleep(25);
    }
    const droppedAfter = since(killedAt);
    const logged = await server.waitFor(/ timeout user=alice silent_for=([\d.]+)s/, 2000);
    console.log(`faults: SIGKILLed client left the online list ${droppedAfter} ms after the kill ` +
      `(timeoutMs ${timeoutMs}, heartbeat ${heartbeatMs}); ` +
      `the registry logged silent_for=${logged[1]}s`);
    assert.ok(gone, 'alice was dropped');
    assert.ok(droppedAfter <= timeoutMs + 1000,
      `dropped within timeoutMs + 1 s (${droppedAfter} ms)`);
    assert.deepEqual(await onlineUsers(tcpPort, observer), ['observer']);
  } finally {
    stopObserver();
    await spawned.stopAll();
  }
});

test('faults: a peer killed mid-chat → the other side prints "NAME left the chat" within 1 s ' +
  'and stays usable', async () => {
  const spawned = new SpawnedProcesses();
  try {
    const { tcpPort, udpPort } = await spawned.server();
    const [alice, bob] = await spawned.loggedInClients(tcpPort, udpPort, 'alice', 'bob');
    await startChat(alice, 'alice', bob, 'bob');
    bob.type('about to vanish');
    await alice.waitFor('bob: about to vanish');

    bob.kill('SIGKILL');
    const killedAt = performance.now();
    await alice.waitFor('bob left the chat', 5000);
    const noticedAfter = since(killedAt);
    console.log(`faults: peer SIGKILLed mid-chat → "bob left the chat" after ${noticedAfter} ms`);
    assert.ok(noticedAfter < 1000, `within 1 s (${noticedAfter} ms)`);
    await alice.waitFor('alice> ');
    // Still usable: the registry still answers her (bob is listed until his session times out).
    alice.type('/list');
    await alice.waitFor(/Online \(\d\): alice/);
  } finally {
    await spawned.stopAll();
  }
});

test('faults: the registry killed mid-chat → the chat goes on; /list says it is unreachable, ' +
  '/logout still logs out', async () => {
  const spawned = new SpawnedProcesses();
  try {
    const { server, tcpPort, udpPort } = await spawned.server();
    const [alice, bob] = await spawned.loggedInClients(tcpPort, udpPort, 'alice', 'bob');
    await startChat(alice, 'alice', bob, 'bob');
    server.kill('SIGKILL');
    await server.exited;

    for (let i = 0; i < 3; i++) {
      alice.type(`still here ${i}`);
      await bob.waitFor(`alice: still here ${i}`);
      bob.type(`me too ${i}`);
      await alice.waitFor(`bob: me too ${i}`);
    }
    alice.type('/back');
    await bob.waitFor('alice left the chat');
    await alice.waitFor('alice> ');
    await bob.waitFor('bob> ');

    let started = performance.now();
    alice.type('/list');
    await alice.waitFor(/cannot reach the registry at 127\.0\.0\.1:\d+ \(ECONNREFUSED\)/);
    const listMs = since(started);
    await alice.waitFor('alice> '); // one failed request does not end the session

    started = performance.now();
    bob.type('/logout');
    await bob.waitFor(
      /Logged out here, but could not tell the registry: cannot reach the registry/,
    );
    const logoutMs = since(started);
    await bob.waitFor('Login — username');
    console.log(`faults: registry killed; chat went on for 3 exchanges; ` +
      `/list told alice in ${listMs} ms, /logout told bob in ${logoutMs} ms`);
  } finally {
    await spawned.stopAll();
  }
});

test('faults: a frozen registry (SIGSTOP) is a timeout for the client, not a hang',
  { skip: process.platform === 'win32' }, async () => {
  const spawned = new SpawnedProcesses();
  const { server, tcpPort, udpPort } = await spawned.server(); // outside try: finally thaws it
  try {
    const { client: alice } = await spawned.loggedInClient(
      tcpPort, udpPort, 'alice', ['--registry-timeout-ms', '800'],
    );
    server.kill('SIGSTOP'); // the kernel still accepts connections; nobody answers them
    const started = performance.now();
    alice.type('/list');
    await alice.waitFor(/no answer from the registry at 127\.0\.0\.1:\d+ within 800 ms/, 5000);
    const noticedMs = since(started);
    await alice.waitFor('alice> '); // still logged in: only a lost session returns to Login
    console.log(
      `faults: frozen registry → /list gave up after ${noticedMs} ms (--registry-timeout-ms 800)`,
    );
    assert.ok(noticedMs >= 700, 'it waited for the timeout');
  } finally {
    server.kill('SIGCONT');
    await spawned.stopAll();
  }
});

test('faults: the registry restarted on the same ports → every client learns within one ' +
  'heartbeat and returns to Login', async () => {
  const heartbeatMs = 500;
  const spawned = new SpawnedProcesses();
  try {
    const first = await spawned.server(['--heartbeat-ms', String(heartbeatMs)]);
    const [alice, bob] = await spawned.loggedInClients(
      first.tcpPort, first.udpPort, 'alice', 'bob',
    );
    first.server.kill('SIGKILL');
    await first.server.exited;
    await sleep(heartbeatMs * 2); // hellos go unanswered meanwhile: nothing to learn from silence
    // the restarted registry
    await spawned.server(
      ['--tcp-port', String(first.tcpPort), '--udp-port', String(first.udpPort)],
    );
    const restartedAt = performance.now();
    const noticed = await Promise.all([alice, bob].map(async (client) => {
      await client.waitFor(
        'The registry no longer knows this session — did it restart? Please log in again.',
        heartbeatMs + 5000,
      );
      const ms = since(restartedAt);
      await client.waitFor('Login — username');
      return ms;
    }));
    console.log(`faults: registry restarted → clients back at Login after ` +
      `${noticed.join(' and ')} ms (heartbeat ${heartbeatMs} ms)`);
    for (const ms of noticed) {
      assert.ok(ms <= heartbeatMs + 1000, `within one heartbeat, plus slack (${ms} ms)`);
    }
  } finally {
    await spawned.stopAll();
  }
});

test('faults: the registry restarted mid-chat → the chat goes on, ' +
  'then both sides return to Login', async () => {
  const heartbeatMs = 200;
  const spawned = new SpawnedProcesses();
  try {
    const first = await spawned.server(['--heartbeat-ms', String(heartbeatMs)]);
    const [alice, bob] = await spawned.loggedInClients(
      first.tcpPort, first.udpPort, 'alice', 'bob',
    );
    await startChat(alice, 'alice', bob, 'bob');
    first.server.kill('SIGKILL');
    await first.server.exited;
    // the restarted registry
    await spawned.server(
      ['--tcp-port', String(first.tcpPort), '--udp-port', String(first.udpPort)],
    );
    for (const client of [alice, bob]) {
      await client.waitFor('This chat goes on; you will be back at Login when it ends.',
        heartbeatMs + 5000);
    }
    alice.type('did you notice?');
    await bob.waitFor('alice: did you notice?');
    bob.type('yes, and we are still talking');
    await alice.waitFor('bob: yes, and we are still talking');
    bob.type('/back');
    await bob.waitFor('please log in again');
    await bob.waitFor('Login — username');
    await alice.waitFor('bob left the chat');
    await alice.waitFor('Login — username');
  } finally {
    await spawned.stopAll();
  }
});

// ---------------------------------------------------------------------------------------------
// Misbehaving peers
// ---------------------------------------------------------------------------------------------

/** A fake peer registered as `name`, whose "client" answers a chat_request with `behaviour`. */
async function fakePeer(tcpPort: number, name: string, behaviour: (socket: net.Socket) => void) {
  const sockets: net.Socket[] = [];
  const listener = net.createServer((socket) => {
    sockets.push(socket);
    socket.on('error', () => {});
    let greeted = false;
    socket.on('data', (chunk: Buffer) => {
      if (!greeted && chunk.includes(10)) {
        greeted = true;
        behaviour(socket);
      }
    });
  });
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', () => resolve()));
  await registerAndLogin(tcpPort, name, 'secret', (listener.address() as net.AddressInfo).port);
  return {
    allClosed: () => sockets.length > 0 &&
      sockets.every((socket) => socket.destroyed || socket.readableEnded),
    close: () => {
      for (const socket of sockets) socket.destroy();
      listener.close();
    },
  };
}

// client-defences.test.ts already covers single intruders (silence, garbage, a huge line, a msg
// before any request), garbage mid-chat and unanswered calls; this adds what it does not.
test('faults: a crowd of silent connections and invalid UTF-8 at a client, ' +
  'then a huge line mid-chat: all dropped; it stays usable', async () => {
  // A long registry timeout: the fake peer sends no heartbeats and must stay listed.
  const spawned = new SpawnedProcesses();
  const intruders: LineClient[] = [];
  let flood: Awaited<ReturnType<typeof fakePeer>> | undefined;
  try {
    const { tcpPort, udpPort } = await spawned.server(['--timeout-ms', '60000']);
    const { client: alice, chatPort } = await spawned.loggedInClient(
      tcpPort, udpPort, 'alice', ['--greeting-timeout-ms', '400'],
    );

    // 20 connections that say nothing, all at once from one address: the client keeps 4 of them
    // (its per-address cap) for their greeting time and closes the rest at once.
    const crowdStarted = performance.now();
    intruders.push(
      ...await Promise.all(Array.from({ length: 20 }, () => LineClient.connect(chatPort))),
    );
    await waitUntil(() => intruders.filter((c) => c.closed).length >= 16, 1000,
      '16 to be closed at once');
    const capMs = since(crowdStarted);
    await waitUntil(() => intruders.every((connection) => connection.closed), 5000,
      'the silent crowd to be dropped');
    const crowdMs = since(crowdStarted);
    assert.ok(crowdMs >= 350, 'the ones kept were given their greeting time');
    // Then one that sends invalid UTF-8: dropped too. All of it is told in two or three lines.
    const utf8 = await LineClient.connect(chatPort);
    intruders.push(utf8);
    utf8.write(Uint8Array.from([0x7b, 0xff, 0xfe, 0x7d, 0x0a]));
    await utf8.waitClosed();
    await alice.waitFor(/dropped 20 chat connections from 127\.0\.0\.1 in the last 5 s/, 7000);
    const dropLines = alice.stdout.split('\n').filter((line) => /dropped/i.test(line)).length;
    assert.ok(dropLines <= 3, `${dropLines} lines about dropped connections`);

    // A peer we call accepts, then starts a line that never ends.
    flood = await fakePeer(tcpPort, 'flood', (socket) => {
      socket.write('{"type":"chat_accept"}\n');
      setTimeout(() => socket.write('{"type":"msg","text":"' + 'z'.repeat(100_000)), 200);
    });
    alice.type('flood');
    await alice.waitFor('flood accepted');
    const floodStarted = performance.now();
    await alice.waitFor('Dropped flood: it sent a line longer than 16384 bytes', 5000);
    await alice.waitFor('flood left the chat');
    const floodMs = since(floodStarted);
    await waitUntil(flood.allClosed, 3000, 'alice to hang up on the flooding peer');

    console.log(`faults: client closed 16 of 20 silent connections in ${capMs} ms, ` +
      `all in ${crowdMs} ms (greeting timeout 400 ms), told in ${dropLines} lines; ` +
      `a huge line mid-chat ${floodMs} ms after the accept (fake peer starts it after 200 ms)`);
    // Still usable.
    await alice.waitFor('alice> ');
    alice.type('/list');
    await alice.waitFor('Online (2): alice, flood');
  } finally {
    for (const intruder of intruders) intruder.close();
    flood?.close();
    await spawned.stopAll();
  }
});
