/**
 * test/client.test.ts — the terminal client end to end: a real registry process and real client
 * processes, driven through their standard input exactly as a person (or a script) would.
 *
 *   test ──stdin──▶ client.ts (alice) ◀── TCP, peer to peer ──▶ client.ts (bob) ◀──stdin── test
 *        ◀─stdout──        │                                          │        ──stdout──▶
 *                          └──────────── TCP + UDP ──▶ server.ts ◀────┘
 *
 * Each test starts its own registry on ephemeral ports, so tests never share state.
 * The client's own defences against misbehaving peers are in client-defences.test.ts.
 */

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { MAX_LINE_BYTES } from '../protocol.ts';
import {
  LineClient, SpawnedProcesses, loginThroughScreens, registerAndLogin, registerThroughScreens,
  spawnScript, startChat, waitUntil,
} from './helpers.ts';

/** Asks the registry who is online, with the token of an observer session. */
async function onlineUsers(tcpPort: number, token: string): Promise<string[]> {
  const connection = await LineClient.connect(tcpPort);
  try {
    const answer = await connection.request({ type: 'list', token });
    assert.equal(answer.type, 'online');
    return answer.users as string[];
  } finally {
    connection.close();
  }
}

test('register and log in through the screens, with the failures in between', async () => {
  const spawned = new SpawnedProcesses();
  try {
    const { server, tcpPort, udpPort } = await spawned.server();
    const client = await spawned.client(tcpPort, udpPort);
    await registerThroughScreens(client, 'Alice', 'pw1');

    // Register again: the name is taken (ignoring case), said before any password is asked;
    // then invalid; /login goes back.
    client.type('/register');
    await client.waitFor('new username');
    const before = client.stdout.length;
    client.type('alice');
    await client.waitFor('Registration failed: the username alice is already taken.');
    assert.ok(!client.stdout.slice(before).includes('password'), 'asked for a taken name');
    await client.waitFor('new username'); // asked again
    client.type('no spaces allowed'); // refused before any password is asked
    await client.waitFor(/Not a username: "no spaces allowed" \(a username is 1 to 32 characters/);
    await client.waitFor('new username');
    client.type('/login');
    await client.waitFor('Login — username');

    // Wrong password: the reason, then the username prompt again.
    client.type('Alice');
    await client.waitFor('password');
    client.type('wrong');
    await client.waitFor('Login failed: wrong username or password');
    await client.waitFor('username');

    // The right one: the Search prompt shows who we are.
    await loginThroughScreens(client, 'Alice', 'pw1');
    await server.waitFor(/ login user=Alice /);
    client.type('/list');
    await client.waitFor('Online (1): Alice');
    client.type('/help');
    await client.waitFor('/search NAME');
    client.type('Alice');
    await client.waitFor('That is you.');

    client.type('/quit');
    assert.equal(await client.exited, 0);
    await server.waitFor(/ logout user=Alice /);
    // From a pipe: no colour or cursor escape codes, ever.
    assert.ok(!client.stdout.includes('\x1b'), 'stdout contains an escape code');
  } finally {
    await spawned.stopAll();
  }
});

test('search, accept, messages both ways, /back, history, then a decline', async () => {
  const spawned = new SpawnedProcesses();
  const historyDir = mkdtempSync(path.join(tmpdir(), 'p2p-chat-history-'));
  try {
    const { tcpPort, udpPort } = await spawned.server();
    const [alice, bob] = await spawned.loggedInClients(tcpPort, udpPort,
      { username: 'alice', args: ['--history', historyDir] },
      { username: 'bob', args: ['--trace'] });

    alice.type('/search bob');
    await alice.waitFor('Waiting for bob');
    await bob.waitFor('alice wants to chat');
    await bob.waitFor('Accept alice? (y/n)');
    bob.type('yes');
    await alice.waitFor('bob accepted');
    await bob.waitFor('You are chatting with alice');

    alice.type('hello bob');
    await bob.waitFor(/\[\d\d:\d\d:\d\d\] alice: hello bob/);
    bob.type('hi alice, ünïcödé too');
    await alice.waitFor(/\[\d\d:\d\d:\d\d\] bob: hi alice, ünïcödé too/);
    // --trace shows the peer protocol itself, with direction.
    assert.match(bob.stdout, /← peer alice \{"type":"msg","text":"hello bob","at":\d+,"id":1\}/);
    assert.match(bob.stdout, /→ peer alice \{"type":"ack","id":1\}/);
    assert.match(bob.stdout, /→ peer alice \{"type":"chat_accept","acks":true\}/);

    bob.type('/back');
    await bob.waitFor('You left the chat with alice');
    await alice.waitFor('bob left the chat');
    await alice.waitFor('alice> ');
    await bob.waitFor('bob> ');

    const history = readFileSync(path.join(historyDir, 'alice', 'bob.log'), 'utf8');
    const time = '\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d'; // local time, like the screen
    assert.match(history, new RegExp(
      `^--- conversation with bob, began ${time} \\(local time\\)\n` +
        `${time} alice: hello bob\n${time} bob: hi alice, ünïcödé too\n$`,
    ));

    // The other way round, and this time the answer is no.
    bob.type('alice');
    await alice.waitFor('bob wants to chat');
    await alice.waitFor('(y/n)');
    alice.type('n');
    await bob.waitFor('alice declined your request');
    await alice.waitFor('Declined bob');
    // Both are back on Search and the registry still answers them.
    bob.type('/list');
    await bob.waitFor('Online (2): alice, bob');
  } finally {
    await spawned.stopAll();
    rmSync(historyDir, { recursive: true, force: true });
  }
});

test('busy: a third caller is declined without interrupting anyone; /quit says bye', async () => {
  const spawned = new SpawnedProcesses();
  try {
    const { server, tcpPort, udpPort } = await spawned.server();
    const [alice, bob, carol] = await spawned.loggedInClients(
      tcpPort, udpPort, 'alice', 'bob', 'carol',
    );
    await startChat(alice, 'alice', bob, 'bob');

    carol.type('bob');
    await carol.waitFor('bob is busy');
    carol.type('alice');
    await carol.waitFor('alice is busy');
    // They are not asked, only told quietly who tried.
    await bob.waitFor('carol tried to reach you while you were busy');
    await alice.waitFor('carol tried to reach you while you were busy');
    assert.ok(!/carol wants to chat/.test(bob.stdout + alice.stdout), 'a busy user was asked');

    // The chat is unaffected.
    alice.type('still here?');
    await bob.waitFor('alice: still here?');

    alice.type('/quit');
    await bob.waitFor('alice left the chat');
    assert.equal(await alice.exited, 0);
    await server.waitFor(/ logout user=alice /);
  } finally {
    await spawned.stopAll();
  }
});

test('a forged or borrowed ticket is refused with bad_ticket, a real one is not', async () => {
  const spawned = new SpawnedProcesses();
  const connections: LineClient[] = [];
  try {
    const { tcpPort, udpPort } = await spawned.server(['--timeout-ms', '60000']);
    const { client: bob, chatPort } = await spawned.loggedInClient(tcpPort, udpPort, 'bob');
    // mallory is a real user with a real session, talking raw protocol.
    const malloryToken = await registerAndLogin(tcpPort, 'mallory');
    const registry = await LineClient.connect(tcpPort);
    connections.push(registry);
    const found = await registry.request({ type: 'search', token: malloryToken, username: 'bob' });
    assert.equal(found.type, 'found');
    const realTicket = found.ticket as string;

    async function knock(from: string, ticket: string): Promise<Record<string, unknown>> {
      const peer = await LineClient.connect(chatPort);
      connections.push(peer);
      return peer.request({ type: 'chat_request', from, ticket }, 5000);
    }

    // 1. Made up from nothing.
    assert.deepEqual(
      await knock('mallory', 'v1.bWFsbG9yeQ.Ym9i.99999999999999.00ff'),
      { type: 'chat_decline', reason: 'bad_ticket' },
    );
    await bob.waitFor(
      /Warning: refused a chat request claiming to come from "mallory".*\(forged\)/,
    );
    // 2. mallory's real ticket, used to pretend to be alice.
    assert.deepEqual(
      await knock('alice', realTicket),
      { type: 'chat_decline', reason: 'bad_ticket' },
    );
    // 3. mallory's real ticket with its expiry pushed back: the signature no longer matches.
    const parts = realTicket.split('.');
    parts[3] = String(Number(parts[3]) + 3_600_000);
    assert.deepEqual(
      await knock('mallory', parts.join('.')),
      { type: 'chat_decline', reason: 'bad_ticket' },
    );
    // The first refusal was told in full; the next two are counted in one summary line.
    await bob.waitFor(/dropped 2 chat connections from 127\.0\.0\.1 in the last 5 s/, 7000);
    assert.ok(!bob.stdout.includes('wants to chat'), 'a bad ticket reached the user');

    // 4. The real ticket, honestly used: bob is asked. (So the refusals above were not blanket.)
    const honest = await LineClient.connect(chatPort);
    connections.push(honest);
    honest.write(
      JSON.stringify({ type: 'chat_request', from: 'mallory', ticket: realTicket }) + '\n',
    );
    await bob.waitFor('mallory wants to chat');
    honest.write('{"type":"bye"}\n');
    await bob.waitFor('mallory gave up asking');
    // The same ticket again: tickets are single-use.
    assert.deepEqual(
      await knock('mallory', realTicket),
      { type: 'chat_decline', reason: 'bad_ticket' },
    );

    // bob is still perfectly usable.
    bob.type('/list');
    await bob.waitFor(/Online \(2\): bob, mallory/);
  } finally {
    for (const connection of connections) connection.close();
    await spawned.stopAll();
  }
});

// "The chat keeps working after the registry process is killed" (the proof that messages go
// peer to peer) is in faults.test.ts, with the other faults.

test('/logout and end of input make the registry drop the user at once', async () => {
  // A timeout of a minute: if the users vanish from the list within seconds, only their logout
  // can explain it, not the sweeper.
  const spawned = new SpawnedProcesses();
  try {
    const { server, tcpPort, udpPort } = await spawned.server(['--timeout-ms', '60000']);
    const [alice, bob] = await spawned.loggedInClients(tcpPort, udpPort, 'alice', 'bob');
    const observer = await registerAndLogin(tcpPort, 'observer');
    assert.deepEqual(await onlineUsers(tcpPort, observer), ['alice', 'bob', 'observer']);

    alice.type('/logout');
    await alice.waitFor('Logged out.');
    await alice.waitFor('Login — username');
    await server.waitFor(/ logout user=alice /, 2000);
    assert.deepEqual(await onlineUsers(tcpPort, observer), ['bob', 'observer']);
    // Logged out is not gone: alice can log in again.
    await loginThroughScreens(alice, 'alice');

    const startedAt = Date.now();
    bob.endInput(); // Ctrl-D
    assert.equal(await bob.exited, 0);
    await server.waitFor(/ logout user=bob /, 2000);
    assert.ok(Date.now() - startedAt < 5000);
    assert.deepEqual(await onlineUsers(tcpPort, observer), ['alice', 'observer']);
  } finally {
    await spawned.stopAll();
  }
});

test('session_unknown (the registry restarted) sends the client back to Login', async () => {
  const spawned = new SpawnedProcesses();
  try {
    const first = await spawned.server(['--heartbeat-ms', '100']);
    const { client: alice } = await spawned.loggedInClient(first.tcpPort, first.udpPort, 'alice');
    first.server.kill('SIGTERM');
    await first.server.exited;
    // The same ports, a fresh memory: every session (and account) is forgotten.
    await spawned.server(
      ['--tcp-port', String(first.tcpPort), '--udp-port', String(first.udpPort)],
    );
    await alice.waitFor('The registry no longer knows this session — did it restart?', 10_000);
    await alice.waitFor('Login — username');
    // And the client is usable against the new registry.
    await registerThroughScreens(alice, 'alice');
    await loginThroughScreens(alice, 'alice');
  } finally {
    await spawned.stopAll();
  }
});

test('a chat line too long for the peer protocol is refused here, and the chat goes on',
  async () => {
  // Sent as it was, the line would pass the peer's MAX_LINE_BYTES and bob would hang up on alice.
  const spawned = new SpawnedProcesses();
  try {
    const { tcpPort, udpPort } = await spawned.server();
    const [alice, bob] = await spawned.loggedInClients(tcpPort, udpPort, 'alice', 'bob');
    await startChat(alice, 'alice', bob, 'bob');
    alice.type('x'.repeat(MAX_LINE_BYTES));
    await alice.waitFor(`Not sent: that message is too long`);
    alice.type('still here?');
    await bob.waitFor('alice: still here?');
    assert.ok(!bob.stdout.includes('left the chat'), `bob dropped alice:\n${bob.stdout}`);
  } finally {
    await spawned.stopAll();
  }
});

test('/quit while deciding on a request leaves (the caller hears "left"), logs out and exits',
  async () => {
  const spawned = new SpawnedProcesses();
  try {
    const { server, tcpPort, udpPort } = await spawned.server(['--timeout-ms', '60000']);
    const [alice, bob] = await spawned.loggedInClients(tcpPort, udpPort, 'alice', 'bob');
    alice.type('bob');
    await bob.waitFor('Accept alice? (y/n)');
    bob.type('/quit');
    // it used to ask "y or n?" again
    await waitUntil(() => bob.exitCode !== null, 5000, 'bob to exit');
    assert.equal(bob.exitCode, 0);
    await alice.waitFor('bob left without answering.');
    await server.waitFor(/ logout user=bob /, 2000);
  } finally {
    await spawned.stopAll();
  }
});

test('--help fits 80 columns, in groups: options, then limits', async () => {
  const help = spawnScript('client.ts', ['--help']);
  assert.equal(await help.exited, 0);
  const lines = help.stdout.trimEnd().split('\n');
  for (const line of lines) assert.ok(line.length <= 80, `${line.length} columns: ${line}`);
  const options = lines.indexOf('Options:');
  const limits = lines.findIndex((line) => line.startsWith('Limits'));
  assert.ok(options > 0 && limits > options, help.stdout);
  for (const flag of ['--server', '--tcp-port', '--udp-port', '--chat-port', '--history']) {
    const at = lines.findIndex((line) => line.trimStart().startsWith(flag));
    assert.ok(at > options && at < limits, `${flag} is not among the options`);
  }
  for (const flag of ['--registry-timeout-ms', '--answer-timeout-ms', '--decide-timeout-ms',
    '--greeting-timeout-ms']) {
    assert.ok(lines.findIndex((line) => line.trimStart().startsWith(flag)) > limits, flag);
  }
});
