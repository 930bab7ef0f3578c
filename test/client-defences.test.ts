/**
 * test/client-defences.test.ts — a client must survive peers that misbehave.
 *
 * A peer is just another program on the network. Here the test itself plays the bad peer, over
 * raw TCP, against real client processes:
 *
 *   raw socket ── garbage / a huge line / silence ──▶ bob's chat port     (bob must drop it)
 *   alice ── chat_request ──▶ a fake "ghost" peer that never answers      (alice must time out)
 *
 * Timeouts are shortened with the client's test flags (--greeting-timeout-ms and friends), so
 * nothing here waits for the real 5 s, 30 s or 45 s.
 */

import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { MAX_LINE_BYTES } from '../protocol.ts';
import {
  LineClient, SpawnedProcesses, closedPort, registerAndLogin, startChat, waitUntil,
} from './helpers.ts';

/** A TCP server that plays a peer: records each line it receives and, if `answer` is given,
 * writes it back after the first line. */
async function fakePeer(
  answer?: string,
): Promise<{ port: number; lines: string[]; close: () => void }> {
  const lines: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.setEncoding('utf8');
    socket.on('error', () => {});
    let partial = '';
    socket.on('data', (text: string) => {
      const pieces = (partial + text).split('\n');
      partial = pieces.pop() ?? '';
      for (const line of pieces) {
        lines.push(line);
        if (answer !== undefined && lines.length === 1) socket.write(answer);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    lines,
    close: () => {
      for (const socket of sockets) socket.destroy();
      server.close();
    },
  };
}

test('incoming connections that send silence, garbage or a huge line are dropped; ' +
  'the client stays usable', async () => {
  const spawned = new SpawnedProcesses();
  const connections: LineClient[] = [];
  try {
    const { tcpPort, udpPort } = await spawned.server();
    const { client: bob, chatPort } = await spawned.loggedInClient(
      tcpPort,
      udpPort,
      'bob',
      ['--greeting-timeout-ms', '300'],
    );
    const connect = async () => {
      const connection = await LineClient.connect(chatPort);
      connections.push(connection);
      return connection;
    };

    // Silence: dropped after the greeting timeout, not before.
    const silentSince = Date.now();
    const silent = await connect();
    await silent.waitClosed(5000);
    const waited = Date.now() - silentSince;
    assert.ok(waited >= 250, `dropped after only ${waited} ms`);
    await bob.waitFor(/Dropped a connection from [^ ]+: it said nothing for 300 ms/);

    // Not JSON.
    const garbage = await connect();
    garbage.write('GET / HTTP/1.1\r\n\r\n');
    await garbage.waitClosed();

    // A line longer than the limit, never finished: dropped as soon as it passes the limit.
    const huge = await connect();
    huge.write('{"type":"chat_request","from":"' + 'x'.repeat(MAX_LINE_BYTES + 100));
    await huge.waitClosed();

    // Valid JSON, but a chat message before any request.
    const rude = await connect();
    rude.write('{"type":"msg","text":"hi","at":1}\n');
    await rude.waitClosed();
    // The first drop after a quiet spell is told in full; the next ones are counted and told in
    // one summary line (so that a crowd of attackers cannot flood the screen).
    await bob.waitFor(/dropped 3 chat connections from 127\.0\.0\.1 in the last 5 s/, 7000);

    assert.ok(!bob.stdout.includes('wants to chat'));
    bob.type('/list');
    await bob.waitFor('Online (1): bob');
  } finally {
    for (const connection of connections) connection.close();
    await spawned.stopAll();
  }
});

test('garbage in the middle of a chat drops the peer with a message', async () => {
  const spawned = new SpawnedProcesses();
  let mallory: LineClient | undefined;
  try {
    const { tcpPort, udpPort } = await spawned.server(['--timeout-ms', '60000']);
    const { client: bob, chatPort } = await spawned.loggedInClient(tcpPort, udpPort, 'bob');
    const token = await registerAndLogin(tcpPort, 'mallory');
    const registry = await LineClient.connect(tcpPort);
    const found = await registry.request({ type: 'search', token, username: 'bob' });
    registry.close();

    mallory = await LineClient.connect(chatPort);
    mallory.write(
      JSON.stringify({ type: 'chat_request', from: 'mallory', ticket: found.ticket }) + '\n',
    );
    await bob.waitFor('mallory wants to chat');
    bob.type('y');
    assert.equal(await mallory.readLine(5000), '{"type":"chat_accept","acks":true}');
    mallory.write('{"type":"msg","text":"a fair message","at":1}\n');
    await bob.waitFor('mallory: a fair message');
    mallory.write('{"type":"msg","text":42}\n'); // the wrong type for "text"
    await bob.waitFor(new RegExp(
      'Dropped mallory: it sent something that is not a p2p-chat message ' +
        '\\("msg" needs a field "text"',
    ));
    await bob.waitFor('mallory left the chat');
    await mallory.waitClosed();
    bob.type('/list');
    await bob.waitFor('Online (2): bob, mallory');
  } finally {
    mallory?.close();
    await spawned.stopAll();
  }
});

test('calls the network never answers time out; /cancel gives up; ' +
  'unreachable and garbage answers are reported', async () => {
  const spawned = new SpawnedProcesses();
  const ghost = await fakePeer(); // reads, never answers
  const babbler = await fakePeer('this is not json\n');
  try {
    const { tcpPort, udpPort } = await spawned.server(['--timeout-ms', '60000']);
    const { client: alice } = await spawned.loggedInClient(
      tcpPort,
      udpPort,
      'alice',
      ['--answer-timeout-ms', '1500'],
    );
    // Users whose "clients" are the fakes above (or nothing at all, on a port nobody listens on).
    const nobodysPort = await closedPort();
    await Promise.all([
      registerAndLogin(tcpPort, 'ghost', 'secret', ghost.port),
      registerAndLogin(tcpPort, 'babbler', 'secret', babbler.port),
      registerAndLogin(tcpPort, 'nobody', 'secret', nobodysPort),
    ]);

    // No answer at all: the request times out after --answer-timeout-ms.
    alice.type('ghost');
    await waitUntil(() => ghost.lines.length === 1, 5000, 'the chat_request to reach ghost');
    const request = JSON.parse(ghost.lines[0]);
    assert.equal(request.type, 'chat_request');
    assert.equal(request.from, 'alice');
    await alice.waitFor("No answer from ghost's client within 1.5 s: the request timed out.");
    await alice.waitFor('alice> ');

    // /cancel while waiting: alice gives up and tells the peer.
    alice.type('ghost');
    await waitUntil(() => ghost.lines.length === 2, 5000, 'the second chat_request to reach ghost');
    alice.type('/cancel');
    await alice.waitFor('Cancelled the request to ghost.');
    await waitUntil(() => ghost.lines.length === 3, 5000, 'the bye after /cancel');
    assert.equal(ghost.lines[2], '{"type":"bye"}');

    // The peer's client is not there.
    alice.type('nobody');
    await alice.waitFor(/nobody is unreachable at 127\.0\.0\.1:\d+ \(ECONNREFUSED\)/);

    // The peer answers nonsense.
    alice.type('babbler');
    await alice.waitFor(/Dropped babbler: it sent something that is not a p2p-chat message/);

    // After all that, alice still works.
    alice.type('/list');
    await alice.waitFor('Online (4): alice, babbler, ghost, nobody');
  } finally {
    ghost.close();
    babbler.close();
    await spawned.stopAll();
  }
});

test('an incoming request nobody answers is declined with "timeout"', async () => {
  const spawned = new SpawnedProcesses();
  try {
    const { tcpPort, udpPort } = await spawned.server();
    const [alice, bob] = await spawned.loggedInClients(tcpPort, udpPort,
      'alice', { username: 'bob', args: ['--decide-timeout-ms', '400'] });
    alice.type('bob');
    await bob.waitFor('alice wants to chat');
    await bob.waitFor("No answer within 400 ms: declined alice's request automatically.");
    await alice.waitFor('bob did not answer in time: the request timed out.');
    // Both sides are free again: a new request goes through.
    await startChat(alice, 'alice', bob, 'bob');
    alice.type('second time lucky');
    await bob.waitFor('alice: second time lucky');
  } finally {
    await spawned.stopAll();
  }
});

test('end of input while waiting for an answer leaves at once: bye to the peer, logout, exit 0',
  async () => {
  // Before, the end of input waited in the queue for the call's outcome: up to
  // --answer-timeout-ms (45 s by default) with a peer that never answers.
  const spawned = new SpawnedProcesses();
  const ghost = await fakePeer(); // reads, never answers
  try {
    const { server, tcpPort, udpPort } = await spawned.server(['--timeout-ms', '60000']);
    const { client: alice } = await spawned.loggedInClient(
      tcpPort,
      udpPort,
      'alice',
      ['--answer-timeout-ms', '30000'],
    );
    await registerAndLogin(tcpPort, 'ghost', 'secret', ghost.port);
    alice.type('ghost');
    await waitUntil(() => ghost.lines.length === 1, 5000, 'the chat_request to reach ghost');
    const startedAt = Date.now();
    alice.endInput(); // Ctrl-D
    await waitUntil(() => alice.exitCode !== null, 5000, 'alice to exit');
    assert.equal(alice.exitCode, 0);
    const took = Date.now() - startedAt;
    console.log(`client: exited ${took} ms after end of input while calling`);
    await waitUntil(() => ghost.lines.length === 2, 5000, 'the bye');
    assert.equal(ghost.lines[1], '{"type":"bye"}');
    await server.waitFor(/ logout user=alice /, 2000);
  } finally {
    ghost.close();
    await spawned.stopAll();
  }
});
