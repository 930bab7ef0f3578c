/**
 * test/client-ux.test.ts — what a user of the client sees and is spared (issue 16: items 5, 6,
 * 8–12, 14, 15, 17, 18; issue 17 item 6; the client's half of the device proof).
 *
 * First the screens on their own, through transition() (no sockets, no clock); then real
 * client.ts processes through pipes, against a registry in this process or a fake one that
 * speaks the line protocol.
 */

import assert from 'node:assert/strict';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { test } from 'node:test';
import { decodePeerMessage, makeTicket } from '../protocol.ts';
import type { PeerMessage, Reply, Request } from '../protocol.ts';
import { initialState, transition } from '../client.ts';
import type { ClientEvent, ClientSettings, ClientState, Effect } from '../client.ts';
import {
  STARTUP_MS, SpawnedProcesses, closedPort, freshDataDir,
  loginThroughScreens, registerAndLogin, registerThroughScreens, sleep, spawnScript, startChat,
  startTestServer,
} from './helpers.ts';
import type { ScriptProcess } from './helpers.ts';

const NOW = 1_800_000_000_000;
const SETTINGS: ClientSettings = {
  server: '127.0.0.1', tcpPort: 5000, udpPort: 5001, chatPort: 0, historyDir: undefined,
  dataDir: '/nonexistent', trace: false, registryTimeoutMs: 5000, answerTimeoutMs: 45_000,
  decideTimeoutMs: 30_000, greetingTimeoutMs: 5000, maxPendingPeers: 16,
  maxPendingPeersPerAddress: 4, dropReportMs: 5000, bell: true, plain: true, keyFile: undefined,
};
const REGISTRY_UDP = '127.0.0.1:5001';

/** Feeds events in order (each at `now`, or NOW); returns the last state and all effects. */
function run(state: ClientState, ...events: Array<ClientEvent | [ClientEvent, number]>) {
  const effects: Effect[] = [];
  for (const item of events) {
    const [event, now] = Array.isArray(item) ? item : [item, NOW];
    const step = transition(state, event, now);
    state = step.state;
    effects.push(...step.effects);
  }
  const said = effects.flatMap((e) => (e.do === 'say' ? [e.text] : []));
  const sent = effects.flatMap((e) => (e.do === 'send' ? [e.message] : []));
  const asked = effects.flatMap((e) => (e.do === 'ask' ? [e] : []));
  return { state, effects, said, sent, asked };
}

const typed = (line: string): ClientEvent => ({ type: 'typed', line });
const answer = (request: Request, reply: Reply, tag = 0): ClientEvent =>
  ({ type: 'answer', request, reply, tag });

function loggedIn(name: string): ClientState {
  const login = { type: 'login' as const, username: name, password: 'pw', chatPort: 7000 };
  const { state } = run(initialState(SETTINGS, REGISTRY_UDP, 7000), typed(name), typed('pw'),
    answer(login, { type: 'logged_in', username: name, token: `tok-${name}`, heartbeatMs: 1000,
      timeoutMs: 10_000, storage: 'memory' }));
  return state;
}

/** `me`, in a chat with dave (who called on conn 1, announcing acks or not). */
function inChat(me: string, acks: boolean): ClientState {
  const ticket = makeTicket(`tok-${me}`, 'dave', me, NOW + 60_000);
  const { state } = run(loggedIn(me),
    { type: 'peer_arrived', conn: 1, address: '127.0.0.1', remote: '127.0.0.1:40001' },
    { type: 'peer_said', conn: 1, remote: 'x',
      message: { type: 'chat_request', from: 'dave', ticket, ...(acks ? { acks: true } : {}) } },
    typed('y'));
  assert.equal(state.screen.name, 'chat');
  return state;
}
const fromDave = (message: PeerMessage): ClientEvent =>
  ({ type: 'peer_said', conn: 1, remote: 'x', message });

// ---- The screens, through transition() ----

test('/logout in a chat says bye to the peer, then logs out (issue 16 item 5)', () => {
  const { state, sent, asked, said } = run(inChat('ann', true), typed('/logout'));
  assert.deepEqual(sent, [{ type: 'bye' }]);
  assert.ok(said.includes('You left the chat with dave.'), said.join('\n'));
  assert.deepEqual(asked.map((a) => a.request), [{ type: 'logout', token: 'tok-ann' }]);
  assert.equal(state.screen.name, 'asking');
  assert.equal(state.session, null);
});

test('/list in a chat after the session was lost says why (issue 16 item 9)', () => {
  const lost = run(inChat('ann', true),
    { type: 'datagram', sender: REGISTRY_UDP, message: { type: 'session_unknown' } });
  assert.equal(lost.state.screen.name, 'chat');
  const { said, asked, effects } = run(lost.state, typed('/list'));
  assert.deepEqual(asked, []);
  assert.ok(said.some((line) => /registry no longer knows this session/.test(line)), said[0]);
  assert.ok(effects.some((e) => e.do === 'prompt' && e.text.includes('ann → dave')));
});

test('a registry that timed out a suspended client is told from one that forgot it (item 8)',
  () => {
    const unknown: ClientEvent =
      { type: 'datagram', sender: REGISTRY_UDP, message: { type: 'session_unknown' } };
    const beat: ClientEvent = { type: 'heartbeat_due' };
    // Hellos every second: the registry forgot us on its own (it restarted).
    const steady = run(loggedIn('ann'), [beat, NOW + 1000], [beat, NOW + 2000], [unknown, NOW]);
    assert.ok(steady.said.includes(
      'The registry no longer knows this session — did it restart? Please log in again.'));
    // 25 s without a hello (the process was stopped), longer than the registry's 10 s.
    const slept = run(loggedIn('ann'), [beat, NOW + 1000], [beat, NOW + 26_000], [unknown, NOW]);
    assert.ok(slept.said.some((line) => /^The registry timed this session out: this client was /
      .test(line) && /silent for 25 s.*registry's 10 s/.test(line)), slept.said.join('\n'));
    for (const line of [...steady.said, ...slept.said]) assert.match(line, /^[A-Z]/);
  });

test('the callee leaving is "left", not "declined"; crossing calls say so (item 10)', () => {
  // bob, deciding about dave's request, quits: dave's client hears bye, not a decline.
  const ticket = makeTicket('tok-bob', 'dave', 'bob', NOW + 60_000);
  const quit = run(loggedIn('bob'),
    { type: 'peer_arrived', conn: 1, address: '127.0.0.1', remote: 'x' },
    { type: 'peer_said', conn: 1, remote: 'x', message: { type: 'chat_request', from: 'dave',
      ticket } }, { type: 'signal', name: 'SIGHUP' });
  assert.deepEqual(quit.sent, [{ type: 'bye' }]);
  // The caller's side of it.
  const calling = run(loggedIn('ann'), typed('bob'));
  const found = answer(calling.asked[0].request,
    { type: 'found', username: 'bob', host: '127.0.0.1', port: 1, ticket: 't' }, 1);
  const left = run(calling.state, found, { type: 'call_connected', call: 1, conn: 3 },
    { type: 'peer_said', conn: 3, remote: 'x', message: { type: 'bye' } });
  assert.ok(left.said.includes('bob left without answering.'), left.said.join('\n'));
  // Glare, both sides: neither hears "accepted".
  const theirs = (conn: number, from: string, to: string): ClientEvent[] => [
    { type: 'peer_arrived', conn, address: '127.0.0.1', remote: 'x' },
    { type: 'peer_said', conn, remote: 'x', message: { type: 'chat_request', from,
      ticket: makeTicket(`tok-${to}`, from, to, NOW + 60_000), acks: true } },
  ];
  const winner = run(calling.state, found, { type: 'call_connected', call: 1, conn: 3 },
    ...theirs(5, 'bob', 'ann'), { type: 'peer_said', conn: 3, remote: 'x',
      message: { type: 'chat_accept', acks: true } });
  const loser = run(run(loggedIn('bob'), typed('ann')).state, ...theirs(5, 'ann', 'bob'));
  for (const side of [winner, loser]) {
    assert.equal(side.state.screen.name, 'chat');
    assert.ok(side.said.some((line) => /^You and (ann|bob) called each other\./.test(line)),
      side.said.join('\n'));
    assert.ok(!side.said.some((line) => /accepted/.test(line)));
  }
});

test('/search alone, /REGISTER on Register, nobody online, full stops (item 11)', () => {
  const search = run(loggedIn('ann'), typed('/search'));
  assert.deepEqual(search.said, ['Whom? /search NAME, or just type the name.']);
  const register = run(initialState(SETTINGS, REGISTRY_UDP, 7000), typed('/register'),
    typed('/REGISTER'), typed('/LOGIN'));
  assert.ok(!register.said.some((line) => /unknown/i.test(line)), register.said.join('\n'));
  assert.equal(register.state.screen.name, 'login_username');
  const list = run(loggedIn('ann'), typed('/list zz'));
  const nobody = run(list.state,
    answer(list.asked[0].request, { type: 'online', users: [], total: 0 }));
  assert.deepEqual(nobody.said, ['Nobody online has a name starting with "zz".']);
  const call = run(loggedIn('ann'), typed('bob'));
  const offline = run(call.state, answer(call.asked[0].request,
    { type: 'error', code: 'not_online', message: 'bob is not online' }, 1));
  assert.ok(offline.said.includes('bob is not online.'), offline.said.join('\n'));
});

test('Register: a taken name is told before the password, which is asked twice (item 12)', () => {
  const start = run(initialState(SETTINGS, REGISTRY_UDP, 7000), typed('/register'), typed('bob'));
  const check = start.asked[0].request;
  assert.deepEqual(check, { type: 'check_username', username: 'bob' });
  assert.ok(!start.effects.some((e) => e.do === 'prompt' && e.secret));
  const taken = run(start.state, answer(check, { type: 'error', code: 'username_taken',
    message: 'the username bob is already taken' }));
  assert.deepEqual(taken.said, ['Registration failed: the username bob is already taken.']);
  assert.equal(taken.state.screen.name, 'register_username');
  // Free: the password, then again; a typo asks for both again; then the registration.
  const free = run(start.state, answer(check, { type: 'username_free', username: 'bob' }),
    typed('s3cret'), typed('s3crte'));
  assert.ok(free.said.includes('The two passwords differ; choose one again.'));
  assert.equal(free.state.screen.name, 'register_password');
  const done = run(free.state, typed('s3cret'), typed('s3cret'));
  assert.deepEqual(done.asked.map((a) => a.request),
    [{ type: 'register', username: 'bob', password: 's3cret' }]);
  // A registry older than check_username calls it a bad request: the form goes on.
  const old = run(start.state, answer(check, { type: 'error', code: 'bad_request',
    message: 'unknown message type "check_username"' }));
  assert.equal(old.state.screen.name, 'register_password');
});

test('after login, one line names the first few online and the total (item 17)', () => {
  const login = { type: 'login' as const, username: 'ann', password: 'pw', chatPort: 7000 };
  const { state, asked } = run(initialState(SETTINGS, REGISTRY_UDP, 7000), typed('ann'),
    typed('pw'), answer(login, { type: 'logged_in', username: 'ann', token: 'tok-ann',
      heartbeatMs: 1000, timeoutMs: 10_000, storage: 'memory' }));
  const list = asked.find((a) => a.request.type === 'list')!;
  assert.deepEqual(list.request, { type: 'list', token: 'tok-ann' });
  const users = ['ann', 'bob', 'cat', 'dan', 'eve', 'fay', 'gus'];
  const { said, state: after } = run(state,
    answer(list.request, { type: 'online', users, total: 7 }, list.tag));
  assert.deepEqual(said, ['Online now (7): ann, bob, cat, dan, eve, …']);
  assert.equal(after.screen.name, 'search');
});

test('acks: late lines are marked, then delivered or lost; older peers get none (item 18)',
  () => {
    const chat = inChat('ann', true);
    const sent = run(chat, typed('one'), typed('two'));
    assert.deepEqual(sent.sent.map((m) => m.type === 'msg' && m.id), [1, 2]);
    assert.ok(sent.effects.some((e) => e.do === 'timer' && e.name === 'ack' && e.ms === 3000));
    // Nothing acknowledged when the timer fires: both lines are late.
    const late = run(sent.state, { type: 'timer', name: 'ack', conn: 1 });
    assert.deepEqual(late.said,
      ['Not delivered yet: your last 2 lines to dave (dave has not acknowledged them).']);
    const delivered = run(late.state, fromDave({ type: 'ack', id: 2 }));
    assert.deepEqual(delivered.said, ['Delivered after all: 2 lines to dave.']);
    // Acknowledged in time: nothing to say. Sent and never acknowledged when dave leaves: lost.
    const quiet = run(sent.state, fromDave({ type: 'ack', id: 2 }),
      { type: 'timer', name: 'ack', conn: 1 });
    assert.deepEqual(quiet.said, []);
    const lost = run(sent.state, fromDave({ type: 'ack', id: 1 }), fromDave({ type: 'bye' }));
    assert.ok(lost.said.includes('Lost: dave never acknowledged 1 line of yours.'),
      lost.said.join('\n'));
    // dave's own lines are acknowledged, because he announced acks.
    const heard = run(chat, fromDave({ type: 'msg', text: 'hi', at: 1, id: 7 }));
    assert.deepEqual(heard.sent, [{ type: 'ack', id: 7 }]);
    // An older client (no acks announced): no ack is ever sent to it, no line is marked.
    const old = inChat('ann', false);
    const oldHeard = run(old, fromDave({ type: 'msg', text: 'hi', at: 1 }), typed('one'),
      { type: 'timer', name: 'ack', conn: 1 }, fromDave({ type: 'bye' }));
    assert.deepEqual(oldHeard.sent.map((m) => m.type), ['msg']);
    assert.ok(!oldHeard.said.some((line) => /deliver|Lost/.test(line)), oldHeard.said.join('\n'));
  });

test('a peer that does not read: lines are refused, not queued, until it catches up', () => {
  const chat = inChat('ann', true);
  const stalled = run(chat, { type: 'peer_stalled', conn: 1, stalled: true }, typed('more'));
  assert.deepEqual(stalled.sent, []);
  assert.deepEqual(stalled.said, [
    'dave is not reading: lines you type are refused until dave catches up.',
    'Not sent (dave is not reading): more',
  ]);
  const again = run(stalled.state, { type: 'peer_stalled', conn: 1, stalled: false },
    typed('more'));
  assert.deepEqual(again.sent.map((m) => m.type), ['msg']);
});

test('the banner says whether the registry answers, in words (item 15)', () => {
  const start = run(initialState(SETTINGS, REGISTRY_UDP, 7000), { type: 'started' });
  const probe = start.asked[0];
  const up = run(start.state, answer(probe.request,
    { type: 'error', code: 'not_logged_in', message: 'log in first' }, probe.tag));
  assert.deepEqual(up.said, ['p2p-chat — registry 127.0.0.1:5000: reachable']);
  assert.equal(up.state.session, null);
  const down = run(start.state, { type: 'answer_failed', request: probe.request, tag: probe.tag,
    why: 'cannot reach the registry at 127.0.0.1:5000 (ECONNREFUSED): nothing is listening' });
  assert.match(down.said[0], /^p2p-chat — registry 127\.0\.0\.1:5000: not reachable yet — /);
  assert.ok(down.effects.some((e) => e.do === 'prompt' && /Login/.test(e.text)));
});

// ---- Real processes through pipes ----

test('empty --server, --history, --data-dir, --key-file, or --server HOST:PORT: one line and ' +
  'exit 2; a leading "--" is fine',
  async () => {
    const empty = [['--server', ''], ['--server='], ['--history', ''], ['--data-dir='],
      ['--key-file', '']];
    for (const args of empty) {
      const client = spawnScript('client.ts', args);
      assert.equal(await client.exited, 2, args.join(' '));
      assert.match(client.stderr, /^error: --[a-z-]+ needs a value, not ""\n(\(see --help\)\n)?$/);
    }
    for (const server of ['127.0.0.1:5100', '[::1]:5100']) { // host:port, as many tools take
      const client = spawnScript('client.ts', ['--server', server]);
      assert.equal(await client.exited, 2, server);
      assert.match(client.stderr,
        /^error: --server takes a host, without a port: --server [:.\d]+ --tcp-port 5100 /);
    }
    const help = spawnScript('client.ts', ['--', '--help']);
    assert.equal(await help.exited, 0);
    assert.match(help.stdout, /--data-dir DIR/);
  });

test('an unreachable registry is said on the banner; the client waits for it', async () => {
  const [tcpPort, udpPort] = [await closedPort(), await closedPort()];
  const spawned = new SpawnedProcesses();
  let registry: Awaited<ReturnType<typeof startTestServer>> | undefined;
  try {
    const client = await spawned.client(tcpPort, udpPort);
    assert.match(client.stdout, new RegExp(`registry 127\\.0\\.0\\.1:${tcpPort}: not reachable ` +
      'yet — .*ECONNREFUSED\\): nothing is listening on that port'));
    registry = await startTestServer({ tcpPort, udpPort });
    await registerThroughScreens(client, 'ann');
    await loginThroughScreens(client, 'ann');
    // A name that does not resolve, in words too.
    const nowhere = await spawned.client(tcpPort, udpPort, ['--server', 'no-such-host.invalid']);
    assert.match(nowhere.stdout, new RegExp('not reachable yet — cannot reach the registry at ' +
      'no-such-host\\.invalid:\\d+ \\((ENOTFOUND\\): no computer has that name|EAI_AGAIN\\): ' +
      'the name could not be looked up)'));
  } finally {
    await spawned.stopAll();
    await registry?.close();
  }
});

test('through pipes: the password twice, then "Online now" after login', async () => {
  const spawned = new SpawnedProcesses();
  try {
    const { tcpPort, udpPort } = await spawned.server();
    await registerAndLogin(tcpPort, 'bob');
    const client = await spawned.client(tcpPort, udpPort);
    assert.match(client.stdout, /: reachable\n/);
    client.type('/register');
    client.type('ann');
    await client.waitFor('new password: ');
    client.type('one');
    await client.waitFor('new password again: ');
    client.type('eno');
    await client.waitFor('The two passwords differ; choose one again.');
    client.type('one');
    client.type('one');
    await client.waitFor('Registered ann');
    await loginThroughScreens(client, 'ann', 'one');
    await client.waitFor('Online now (2): ann, bob');
  } finally {
    await spawned.stopAll();
  }
});

test('a frozen peer: "not delivered yet", then "delivered" when it thaws (item 18)', async () => {
  const spawned = new SpawnedProcesses();
  try {
    const { tcpPort, udpPort } = await spawned.server(['--timeout-ms', '60000']);
    const [ann, bob] = await spawned.loggedInClients(tcpPort, udpPort, 'ann', 'bob');
    await startChat(ann, 'ann', bob, 'bob');
    ann.type('before');
    await bob.waitFor('ann: before');
    bob.kill('SIGSTOP');
    try {
      ann.type('while frozen');
      await ann.waitFor('Not delivered yet: your last line to bob', 8000);
    } finally {
      bob.kill('SIGCONT');
    }
    await ann.waitFor('Delivered after all: 1 line to bob.', 8000);
    await bob.waitFor('ann: while frozen');
  } finally {
    await spawned.stopAll();
  }
});

test('a suspended client hears that it was timed out, not that the registry restarted',
  async () => {
    const spawned = new SpawnedProcesses();
    try {
      const { tcpPort, udpPort } = await spawned.server(['--heartbeat-ms', '200',
        '--timeout-ms', '1000']);
      const [ann] = await spawned.loggedInClients(tcpPort, udpPort, 'ann');
      ann.kill('SIGSTOP');
      await sleep(2500);
      ann.kill('SIGCONT');
      await ann.waitFor(/The registry timed this session out: this client was silent for [\d.]+ s/,
        5000);
    } finally {
      await spawned.stopAll();
    }
  });

/** VmRSS of a process, in MiB (Linux). */
function rssMiB(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match ? Math.round(Number(match[1]) / 1024) : NaN;
}

test('a peer that never reads: about 1 MB is queued, then lines are refused (issue 17 item 6)',
  async () => {
    const registry = await startTestServer({ timeoutMs: 60_000 });
    const spawned = new SpawnedProcesses();
    // "bob" is this test: it takes the call, answers like an older client, then stops reading.
    let peer: net.Socket | undefined;
    let received = 0;
    const bobClient = net.createServer((socket) => {
      peer = socket;
      socket.once('data', (chunk) => {
        received += chunk.length;
        socket.write('{"type":"chat_accept"}\n');
        socket.pause();
        socket.on('data', (more) => (received += more.length));
      });
    });
    await new Promise<void>((resolve) => bobClient.listen(0, '127.0.0.1', resolve));
    try {
      const bobPort = (bobClient.address() as net.AddressInfo).port;
      await registerAndLogin(registry.tcpPort, 'bob', 'secret', bobPort);
      const [ann] = await spawned.loggedInClients(registry.tcpPort, registry.udpPort, 'ann');
      ann.type('bob');
      await ann.waitFor('bob accepted');
      const rssBefore = rssMiB(ann.child.pid!);
      const line = 'x'.repeat(999);
      const lines = 24_000; // 24 MB: more than the kernel's buffers on both ends hold
      for (let i = 0; i < lines; i += 1000) {
        ann.child.stdin!.write(`${line}\n`.repeat(1000));
        await sleep(5);
      }
      await ann.waitFor('bob is not reading: lines you type are refused until bob catches up.',
        30_000);
      await ann.waitFor('Not sent (bob is not reading): xxx', 30_000);
      await sleep(500);
      const rssStalled = rssMiB(ann.child.pid!);
      const refused = ann.stdout.split('Not sent (bob is not reading)').length - 1;
      console.log(`piped ${lines} lines of 1 KB to a peer that does not read: ${refused} ` +
        `refused; ann's RSS ${rssBefore} → ${rssStalled} MiB; peer received ${received} bytes`);
      assert.ok(refused > 0 && refused < lines);
      peer!.resume();
      await ann.waitFor('bob is reading again.', 30_000);
      ann.type('after');
      await ann.waitFor(/ann: after/, 10_000);
    } finally {
      await spawned.stopAll();
      bobClient.close();
      peer?.destroy();
      await registry.close();
    }
  });

// ---- The device proof (the client's half; see docs/security.md) ----

/** A registry that answers login with `device` and records each login request. */
async function fakeRegistry(device: string) {
  const logins: Array<Record<string, unknown>> = [];
  const server = net.createServer((socket) => {
    socket.setEncoding('utf8');
    socket.on('error', () => {});
    socket.once('data', (text: string) => {
      const request = JSON.parse(text.split('\n')[0]);
      if (request.type === 'login') logins.push(request);
      const reply = request.type === 'login' ? {
        type: 'logged_in', username: request.username, token: 'tok', heartbeatMs: 60_000,
        timeoutMs: 120_000, storage: 'memory', device,
      } : request.type === 'logout' ? { type: 'logged_out' }
        : request.token ? { type: 'online', users: [request.username ?? 'ann'], total: 1 }
        : { type: 'error', code: 'not_logged_in', message: 'log in first' };
      socket.end(JSON.stringify(reply) + '\n');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, logins, port: (server.address() as net.AddressInfo).port };
}

async function logInAndQuit(client: ScriptProcess, username: string): Promise<void> {
  await client.waitFor('username', STARTUP_MS);
  await loginThroughScreens(client, username);
  client.type('/quit');
  assert.equal(await client.exited, 0);
}

test('the device proof is kept per registry and user (0600), and sent with the next login',
  async () => {
    const registry = await fakeRegistry('id-1.mac-1');
    const udpPort = String(await closedPort());
    const ports = ['--tcp-port', String(registry.port), '--udp-port', udpPort];
    try {
      const dataDir = freshDataDir();
      await logInAndQuit(spawnScript('client.ts', [...ports, '--data-dir', dataDir]), 'Ann');
      const file = path.join(dataDir, 'devices', `127.0.0.1_${registry.port}`, 'ann.proof');
      assert.equal(readFileSync(file, 'utf8'), 'id-1.mac-1\n');
      assert.equal(statSync(file).mode & 0o777, 0o600);
      assert.equal(statSync(path.dirname(file)).mode & 0o777, 0o700);
      // P2P_CHAT_HOME is the default for --data-dir; the proof goes with the login.
      await logInAndQuit(spawnScript('client.ts', ports, { P2P_CHAT_HOME: dataDir }), 'ann');
      assert.deepEqual(registry.logins.map((login) => login.device), [undefined, 'id-1.mac-1']);
      // A data folder that cannot be written: one line, and the login still works.
      const blocked = path.join(freshDataDir(), 'file');
      writeFileSync(blocked, '');
      const client = spawnScript('client.ts', [...ports, '--data-dir', blocked]);
      await client.waitFor('username', STARTUP_MS);
      await loginThroughScreens(client, 'ann');
      assert.equal(client.stdout.match(/Could not (read|keep) the device proof: /g)?.length, 1);
      client.type('/quit');
      assert.equal(await client.exited, 0);
    } finally {
      registry.server.close();
    }
  });

test('--trace never shows the device proof', async () => {
  const registry = await fakeRegistry('secret-id.secret-mac');
  const dataDir = freshDataDir();
  const ports = ['--tcp-port', String(registry.port), '--udp-port', String(await closedPort())];
  try {
    for (let round = 0; round < 2; round++) {
      const client = spawnScript('client.ts', [...ports, '--trace', '--data-dir', dataDir]);
      await logInAndQuit(client, 'ann');
      assert.ok(!client.stdout.includes('secret-'), client.stdout);
      assert.match(client.stdout, /"device":"\*\*\*"/);
    }
  } finally {
    registry.server.close();
  }
});

// ---- The peer protocol's new fields, as the decoder takes them ----

test('the ack shapes: an id is a whole number from 1; acks may only be true', () => {
  assert.deepEqual(decodePeerMessage('{"type":"ack","id":3}'),
    { ok: true, message: { type: 'ack', id: 3 } });
  for (const bad of ['{"type":"ack","id":0}', '{"type":"ack"}', '{"type":"ack","id":1.5}',
    '{"type":"msg","text":"x","at":1,"id":"1"}', '{"type":"chat_accept","acks":false}']) {
    assert.equal(decodePeerMessage(bad).ok, false, bad);
  }
  assert.deepEqual(decodePeerMessage('{"type":"msg","text":"x","at":1,"id":2}'),
    { ok: true, message: { type: 'msg', text: 'x', at: 1, id: 2 } });
});
