/**
 * test/attack.test.ts — one host must not be able to take the registry from everyone (issue 11).
 *
 * Each test replays one attack from the issue over real sockets and prints the issue's figure.
 * Loopback addresses stand for hosts: the attacker connects from 127.0.0.2, everyone else from
 * 127.0.0.3 (any 127.x.y.z reaches a server on 127.0.0.1 under Linux).
 *
 *   1. 200 connections dribble an unfinished line, one byte per segment (issue: to 12 000
 *      bytes, RSS grows < 40 MB; here to 4000 bytes, against the same limit per byte)
 *   2. blank lines are not activity; with 50 slots and one address holding all it may, another
 *      address still registers, logs in and searches
 *   3. register floods (on connections closed right after writing, and from 300 connections in
 *      a loop) are dropped or wait their turn: a login from elsewhere waits for at most a
 *      few of the attacker's hashes (its p95 time is printed; the issue asks < 1 s); at most
 *      60 registrations a minute from one address
 *   4. 150 concurrent wrong guesses → ≤ 5 bad_credentials; 100 guesses over twenty names with the
 *      attacker's own login after every 19th → ≤ 25 bad_credentials
 *   5. an attacker failing all the time cannot keep the victim out from another address
 *   6. replaced tokens are remembered long enough, and no more than the cap
 *   7. the online list fits in a line whoever is online; a prefix narrows it
 *   8. a 16 384-byte line ending in \r\n is accepted
 */

import assert from 'node:assert/strict';
import os from 'node:os';
import process from 'node:process';
import { test } from 'node:test';
import v8 from 'node:v8';
import vm from 'node:vm';
import { MAX_LINE_BYTES } from '../protocol.ts';
import { openSession } from '../server.ts';
import type { RunningServer } from '../server.ts';
import {
  LineClient, memoryMiB, p95, sendDatagram, sleep, spawnEval, startTestServer, tally, waitUntil,
} from './helpers.ts';
import type { TestServer } from './helpers.ts';

const ATTACKER = '127.0.0.2';
const VICTIM = '127.0.0.3';

/** Registers through a fresh connection from `from`; returns the answer. */
async function register(server: RunningServer, username: string, password: string, from = VICTIM) {
  const client = await LineClient.connect(server.tcpPort, '127.0.0.1', from);
  try {
    return await client.request({ type: 'register', username, password }, 10_000);
  } finally {
    client.close();
  }
}

/** A login request, as the client sends one. */
function loginRequest(username: string, password: string) {
  return { type: 'login', username, password, chatPort: 7000 };
}

/** A login on a fresh connection from `from`, as the client makes one: answer and time taken. */
async function timedLogin(
  server: RunningServer,
  username: string,
  password: string,
  from = VICTIM,
) {
  const started = performance.now();
  const client = await LineClient.connect(server.tcpPort, '127.0.0.1', from);
  try {
    const answer = await client.request(loginRequest(username, password), 10_000);
    return { answer, ms: performance.now() - started };
  } finally {
    client.close();
  }
}

// ---------------------------------------------------------------------------------------------
// 1. Dribbled bytes cost what they weigh
// ---------------------------------------------------------------------------------------------

/** A full garbage collection, through V8's own flag (Node and Deno both expose node:v8). */
const collectGarbage: () => void = (() => {
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
})();

/** Memory this process holds on to, in bytes, after a full collection: the JS heap and the
 * buffers outside it. Unlike RSS, it does not count garbage not yet collected. */
function retainedBytes(): number {
  collectGarbage();
  const usage = process.memoryUsage();
  return usage.heapUsed + usage.arrayBuffers;
}

/** Opens CONNECTIONS connections and sends each an unfinished line one byte per write, with a
 * turn of the event loop between rounds so every byte leaves as its own segment (no Nagle). */
const DRIBBLE_CODE = `
import net from 'node:net';
import process from 'node:process';
const port = Number(process.env.PORT);
const count = Number(process.env.CONNECTIONS);
const bytes = Number(process.env.BYTES);
const sockets = await Promise.all(Array.from({ length: count }, () => new Promise((resolve) => {
  const socket = net.connect(port, '127.0.0.1', () => resolve(socket));
  socket.setNoDelay(true);
  socket.on('error', () => {});
})));
const byte = Buffer.from('x');
for (let round = 0; round < bytes; round++) {
  for (const socket of sockets) socket.write(byte);
  if (round % 4 === 3) await new Promise((resolve) => setImmediate(resolve));
}
await new Promise((resolve) => setTimeout(resolve, 200));
console.log('dribbled ' + sockets.filter((socket) => !socket.destroyed).length);
process.stdin.on('data', () => {}); // hold the connections until the test kills us
`;

// The issue's attack is 200 connections × 12 000 bytes, and 40 MB its limit: about 17 bytes of
// memory per byte dribbled (the splitter it was written against kept ~400). What it costs is
// per read, so a third of the bytes, still one per segment, tells the same in a third of the
// time: the limit below is the issue's, scaled to the bytes sent. It is checked on the memory
// retained after a full garbage collection, which is what an unfinished line keeps; RSS, which
// also holds the garbage of every read until the collector runs (10 to 30 MB here, whatever the
// splitter), is printed beside it.
const DRIBBLE_CONNECTIONS = 200;
const DRIBBLE_BYTES = 4000;
const ISSUE_BYTES_PER_BYTE = 40e6 / (200 * 12_000);

test('attack 1: 200 connections dribbling unfinished lines one byte at a time cost what they weigh',
  async () => {
  const connections = DRIBBLE_CONNECTIONS;
  const bytes = DRIBBLE_BYTES;
  // Enough slots for all 200 from one address, and no idle timeout during the attack: this
  // measures what an unfinished line costs, not the limits that would cut it short.
  const server = await startTestServer({ maxConnectionsPerAddress: 1000, idleMs: 600_000 });
  const dribbler = spawnEval(DRIBBLE_CODE, {
    PORT: String(server.tcpPort), CONNECTIONS: String(connections), BYTES: String(bytes),
  });
  try {
    // Count the reads the registry makes: the cost being measured is per read, so the attack
    // only means something if the bytes arrive in many small reads, not a few big ones.
    await waitUntil(() => server.registry.connections.size === connections, 30_000,
      'every connection to be accepted');
    let reads = 0;
    for (const { splitter } of server.registry.connections) {
      const push = splitter.push.bind(splitter);
      splitter.push = (chunk) => {
        reads += 1;
        return push(chunk);
      };
    }
    const before = { ...memoryMiB(), retained: retainedBytes() };
    const started = performance.now();
    await dribbler.waitFor(/dribbled (\d+)/, 180_000);
    const held = () => [...server.registry.connections]
      .reduce((sum, connection) => sum + connection.splitter.bufferedBytes, 0);
    await waitUntil(() => held() === connections * bytes, 10_000, 'every byte to arrive');
    const after = { ...memoryMiB(), retained: retainedBytes() };
    const grewBytes = after.retained - before.retained;
    const limit = ISSUE_BYTES_PER_BYTE * held();
    const mb = (value: number) => (value / 1e6).toFixed(1);
    console.log(`attack 1: ${connections} connections × ${bytes} bytes dribbled one per write in ` +
      `${Math.round(performance.now() - started)} ms, received in ${reads} reads ` +
      `(${(held() / reads).toFixed(2)} bytes each); registry holds ${held()} bytes of unfinished ` +
      `lines; retained memory grew ${mb(grewBytes)} MB (limit ${mb(limit)}: the issue's 40 MB ` +
      `for 2.4 MB, scaled), RSS ${before.rss} → ${after.rss} MiB`);
    assert.equal(server.registry.connections.size, connections);
    assert.ok(reads >= held() / 4, `only ${reads} reads: the bytes were not dribbled`);
    assert.ok(grewBytes < limit, `retained memory grew by ${mb(grewBytes)} MB`);
  } finally {
    dribbler.kill('SIGKILL');
    await dribbler.exited;
    await server.close();
  }
});

// ---------------------------------------------------------------------------------------------
// 2. Connection slots cannot be held by one address
// ---------------------------------------------------------------------------------------------

test('attack 2: blank lines, garbage and dribbles are not activity; only whole requests keep a ' +
  'slot', async () => {
  const idleMs = 400;
  const server = await startTestServer({ idleMs });
  try {
    // A request refused for its token is not activity either (issue 17): the active client
    // uses a live one.
    const token = openSession(server.registry, 'keeper', '127.0.0.1', 7000).token;
    const clients = await Promise.all(
      Array.from({ length: 4 }, () => LineClient.connect(server.tcpPort)));
    const [blank, crlf, garbage, active] = clients;
    const started = performance.now();
    const closedAfter = new Map<LineClient, number>();
    for (const client of clients) {
      client.socket.on('close',
        () => closedAfter.set(client, Math.round(performance.now() - started)));
    }
    while (performance.now() - started < idleMs * 4) {
      blank.write('\n');
      crlf.write('\r\n');
      garbage.write('x\n');
      active.write(JSON.stringify({ type: 'list', token }) + '\n');
      await sleep(100);
    }
    console.log(`attack 2: idleMs ${idleMs}; closed after: ` +
      `blank lines ${closedAfter.get(blank)} ms, ` +
      `CRLF ${closedAfter.get(crlf)} ms, garbage ${closedAfter.get(garbage)} ms; ` +
      `valid requests every 100 ms: ${active.closed ? 'closed' : 'still open'}`);
    for (const client of [blank, crlf, garbage]) {
      assert.ok(client.closed, 'closed although it kept sending');
      assert.ok(closedAfter.get(client)! >= idleMs - 20, 'not before idleMs');
      assert.ok(closedAfter.get(client)! < idleMs + 1000, 'soon after idleMs');
    }
    assert.equal(active.closed, false);
    active.close();
  } finally {
    await server.close();
  }
});

test('attack 2: with 50 slots and one address holding all it may, another address registers, ' +
  'logs in and searches', async () => {
  const server = await startTestServer({ maxConnections: 50 });
  const held: LineClient[] = [];
  try {
    // The attacker opens connections until it is refused, then keeps them busy with blank lines.
    let refusal = '';
    for (let i = 0; i < 60 && refusal === ''; i++) {
      const client = await LineClient.connect(server.tcpPort, '127.0.0.1', ATTACKER);
      const first = await client.readLine(100).catch(() => '');
      if (first === '') held.push(client);
      else {
        refusal = JSON.parse(first).message;
        client.close();
      }
    }
    const keepAlive = setInterval(() => held.forEach((client) => client.write('\n')), 200);
    try {
      const registered = await register(server, 'newcomer', 'pw');
      const login = await timedLogin(server, 'newcomer', 'pw');
      const client = await LineClient.connect(server.tcpPort, '127.0.0.1', VICTIM);
      const search = { type: 'search', token: login.answer.token, username: 'newcomer' };
      const found = await client.request(search);
      client.close();
      console.log(`attack 2: --max-connections 50: the attacker holds ${held.length} and was ` +
        `told "${refusal}"; from another address: ${registered.type}, ${login.answer.type}, ` +
        `${found.type}`);
      assert.equal(held.length, 25, 'one address holds at most half of the slots');
      assert.match(refusal, /your address already has 25 connections/);
      assert.equal(registered.type, 'registered');
      assert.equal(login.answer.type, 'logged_in');
      assert.equal(found.type, 'found');
    } finally {
      clearInterval(keepAlive);
    }
  } finally {
    held.forEach((client) => client.close());
    await server.close();
  }
});

// ---------------------------------------------------------------------------------------------
// 3. Password hashing cannot be monopolised
// ---------------------------------------------------------------------------------------------

/** From ATTACKER, in its own process as a real attacker would be: LOOPERS connections each
 * registering in a loop, and CLOSERS registrations each on a connection closed right after
 * writing. Prints a tally of the loopers' answers when told to stop (a line on stdin). */
const REGISTER_FLOOD_CODE = `
import net from 'node:net';
import process from 'node:process';
const port = Number(process.env.PORT);
const from = process.env.FROM;
const connect = () => new Promise((resolve) => {
  const socket = net.connect({ port, host: '127.0.0.1', localAddress: from },
    () => resolve(socket));
  socket.on('error', () => {});
});
let flooding = true;
const counts = {};
let written = 0;
const loopers = Array.from({ length: Number(process.env.LOOPERS) }, async (_, i) => {
  const socket = await connect();
  let buffered = '';
  let n = 0;
  const send = () => socket.write(
    JSON.stringify({ type: 'register', username: 'loop' + i + '-' + n++, password: 'x' }) + '\\n');
  socket.on('data', (text) => {
    const lines = (buffered + text).split('\\n');
    buffered = lines.pop();
    for (const line of lines) {
      const answer = JSON.parse(line);
      const key = answer.code ?? answer.type;
      counts[key] = (counts[key] ?? 0) + 1;
      if (flooding) send();
    }
  });
  socket.setEncoding('utf8');
  send();
  return socket;
});
for (let batch = 0; batch < Number(process.env.CLOSERS) / 50; batch++) {
  await Promise.all(Array.from({ length: 50 }, async () => {
    const socket = await connect();
    const request = { type: 'register', username: 'gone' + written++, password: 'x' };
    socket.end(JSON.stringify(request) + '\\n');
  }));
}
console.log('closers done ' + written);
process.stdin.once('data', async () => {
  flooding = false;
  (await Promise.all(loopers)).forEach((socket) => socket.destroy());
  console.log('tally ' + JSON.stringify(counts));
  process.exit(0);
});
`;

// What the hasher's line guarantees is fair turns: a login from elsewhere waits for at most the
// hashes already running and one more of the attacker's, however many the attacker sends. That
// is checked by counting, from the registry's log, the attacker's hashes that finish while each
// victim login waits: a count that a busy machine does not change, where the victim's time in
// milliseconds depends as much on what else the machine runs. That time, the issue's figure
// (p95 < 1 s), is printed beside a baseline: the same logins before the flood.

/** As many hashes as the registry runs at once (its MAX_HASHES_AT_ONCE: one core left free). */
const HASHES_AT_ONCE = Math.max(1, os.availableParallelism() - 1);

test('attack 3: register floods (closed connections, and 300 in a loop) leave logins from ' +
  'elsewhere their turn', async () => {
  // The registration limit is lifted here, so what is measured is the hasher's line itself:
  // dropped work and fair turns. (The limit is tested on its own below.) So is the bound on
  // logins to one account: the victim logs in 25 times within the minute.
  const server = await startTestServer({
    maxConnectionsPerAddress: 1000, maxRegistrationsPerAddress: 1e6, maxLoginsPerUser: 1e6,
  });
  /** A victim login as the client makes one, timed from connecting, with the attacker's hashes
   * that finished between the request and its answer. */
  const victimLogin = async () => {
    const started = performance.now();
    const client = await LineClient.connect(server.tcpPort, '127.0.0.1', VICTIM);
    const logged = server.logLines.length;
    const answer = await client.request(loginRequest('victim', 'right'), 10_000);
    const ms = performance.now() - started;
    client.close();
    assert.equal(answer.type, 'logged_in');
    const overtaken = server.logLines.slice(logged)
      .filter((line) => / register user=(loop|gone)/.test(line)).length;
    return { ms, overtaken };
  };
  assert.equal((await register(server, 'victim', 'right')).type, 'registered');
  const quiet: number[] = [];
  for (let i = 0; i < 5; i++) quiet.push((await victimLogin()).ms);
  const flood = spawnEval(REGISTER_FLOOD_CODE, {
    PORT: String(server.tcpPort), FROM: ATTACKER, LOOPERS: '300', CLOSERS: '1500',
  });
  try {
    const [, written] = await flood.waitFor(/closers done (\d+)/, 120_000);
    // The closers' last connections may still sit in the kernel's accept queue (it holds 511);
    // while it is full the kernel drops new SYNs, and a newcomer's connect is retried after 1 s,
    // 3 s… That is TCP, not the registry's line, so it is let drain before timing logins.
    await sleep(1000);
    // A real login from another address, twenty times, while the loop goes on.
    const logins: Array<{ ms: number; overtaken: number }> = [];
    for (let i = 0; i < 20; i++) logins.push(await victimLogin());
    flood.type('stop');
    const [, tally] = await flood.waitFor(/tally (.*)/, 30_000);
    const answers = JSON.parse(tally) as Record<string, number>;
    const hashedGone = server.logLines.filter((line) => / register user=gone/.test(line)).length;
    const times = logins.map((login) => login.ms);
    const overtaken = logins.map((login) => login.overtaken);
    // Running when the login arrived, one that had its turn first, and those the other slots
    // finish while the login's own hash runs: about 3 × HASHES_AT_ONCE − 1 (2 on two cores).
    // A line without fair turns would put the login behind all the attacker has admitted (up
    // to maxHashesPerAddress, 32). Checked at the p95, as the time is: of 20, the 19th.
    const mostOvertaken = 4 * HASHES_AT_ONCE;
    console.log(`attack 3: ${written} registrations on closed connections: ${hashedGone} hashed, ` +
      `${Number(written) - hashedGone} dropped; 300 looping connections got ` +
      `${JSON.stringify(answers)}; victim logins from another address: attacker hashes ` +
      `finished during each: p95 ${p95(overtaken)}, max ${Math.max(...overtaken)} ` +
      `(limit: p95 ≤ ${mostOvertaken}, ` +
      `${HASHES_AT_ONCE} hashing at once); time: p95 ${Math.round(p95(times))} ms, ` +
      `max ${Math.round(Math.max(...times))} ms (issue: p95 < 1000; ` +
      `before the flood: max ${Math.round(Math.max(...quiet))} ms)`);
    assert.equal(written, '1500');
    assert.ok(hashedGone < 150, `${hashedGone} of 1500 closed registrations were hashed`);
    assert.ok((answers.too_many_attempts ?? 0) > 0, 'the excess was answered at once');
    assert.ok(p95(overtaken) <= mostOvertaken,
      `p95: ${p95(overtaken)} of the attacker's hashes finished during one login`);
  } finally {
    flood.kill('SIGKILL');
    await flood.exited;
    await server.close();
  }
});

test('attack 3: at most 60 registrations a minute from one address (defaults); another address ' +
  'still registers', async () => {
  const server = await startTestServer();
  try {
    const clients = await Promise.all(Array.from({ length: 4 }, () =>
      LineClient.connect(server.tcpPort, '127.0.0.1', ATTACKER)));
    const answers = await Promise.all(clients.map(async (client, c) => {
      const mine = [];
      for (let i = 0; i < 20; i++) {
        const request = { type: 'register', username: `bulk${c}-${i}`, password: 'x' };
        mine.push(await client.request(request, 20_000));
      }
      return mine;
    }));
    clients.forEach((client) => client.close());
    const counts = tally(answers.flat());
    const refused = answers.flat().find((answer) => answer.code === 'too_many_attempts');
    const elsewhere = await register(server, 'someone', 'pw');
    console.log(`attack 3: 80 registrations from one address → ${JSON.stringify(counts)}; ` +
      `"${refused?.message}"; from another address: ${elsewhere.type}`);
    assert.deepEqual(counts, { registered: 60, too_many_attempts: 20 });
    const wait = Number(/try again in (\d+) s/.exec(String(refused?.message))?.[1]);
    assert.ok(wait >= 1 && wait <= 60, `a wait of ${wait} s`);
    assert.equal(elsewhere.type, 'registered');
  } finally {
    await server.close();
  }
});

// ---------------------------------------------------------------------------------------------
// 4. The throttle counts attempts, not completions
// ---------------------------------------------------------------------------------------------

test('attack 4: 150 concurrent wrong guesses for one user from one address → at most 5 ' +
  'bad_credentials', async () => {
  // Enough slots for all 150 at once: the throttle, not the connection cap, must stop them.
  const server = await startTestServer({ maxConnectionsPerAddress: 200 });
  try {
    assert.equal((await register(server, 'target', 'the-right-one')).type, 'registered');
    const clients = await Promise.all(Array.from({ length: 150 }, () =>
      LineClient.connect(server.tcpPort, '127.0.0.1', ATTACKER)));
    // The 150th guess is the right password: it must not get through either.
    const guesses = clients.map((client, i) => client.request(
      loginRequest('target', i === 149 ? 'the-right-one' : `guess${i}`), 30_000));
    const answers = await Promise.all(guesses);
    clients.forEach((client) => client.close());
    const counts = tally(answers);
    console.log(`attack 4: 150 concurrent guesses (the last one right) → ` +
      `${JSON.stringify(counts)} (limit: ≤ 5 bad_credentials)`);
    assert.ok((counts.bad_credentials ?? 0) <= 5);
    assert.equal(counts.logged_in, undefined, 'the right password sent in the burst was refused');
  } finally {
    await server.close();
  }
});

test('attack 4: 100 guesses over twenty names, own correct login after every 19th → at most 25 ' +
  'bad_credentials', async () => {
  const server = await startTestServer(); // the defaults, as an operator runs it
  try {
    assert.equal((await register(server, 'mallory', 'mine', ATTACKER)).type, 'registered');
    const client = await LineClient.connect(server.tcpPort, '127.0.0.1', ATTACKER);
    const guesses: Array<Record<string, unknown>> = [];
    const own: Array<Record<string, unknown>> = [];
    for (let i = 0; i < 100; i++) {
      guesses.push(await client.request(loginRequest(`name${i % 20}`, `guess${i}`), 10_000));
      if (i % 19 === 18) own.push(await client.request(loginRequest('mallory', 'mine'), 10_000));
    }
    client.close();
    const counts = tally(guesses);
    console.log('attack 4: 100 guesses over 20 names from one address → ' +
      `${JSON.stringify(counts)}; ` +
      `the attacker's own logins → ${JSON.stringify(tally(own))} (limit: ≤ 25 bad_credentials)`);
    assert.ok((counts.bad_credentials ?? 0) <= 25);
    assert.equal(own[0].type, 'logged_in',
      'an own login before the limit works, and clears nothing else');
  } finally {
    await server.close();
  }
});

// ---------------------------------------------------------------------------------------------
// 5. Nobody can lock a user out knowing only the name
// ---------------------------------------------------------------------------------------------

test('attack 5: an attacker failing every 0.2 s cannot keep the victim out from another address',
  async () => {
  // The issue's figure scaled down ten times, ratios kept: the attacker fails every 20 ms (issue:
  // 0.2 s) for 4 s (40 s) against a 3 s cooldown (the default 30 s); the victim logs in every
  // 0.5 s (5 s), 8 times. The limits per user, per address and per user at an address are the
  // defaults. The issue asks for at least 6 of 8.
  const server = await startTestServer({ loginCooldownMs: 3000 });
  let attacking = true;
  try {
    assert.equal((await register(server, 'victim', 'right')).type, 'registered');
    const attackerAnswers: Array<Record<string, unknown>> = [];
    const attacker = (async () => {
      const client = await LineClient.connect(server.tcpPort, '127.0.0.1', ATTACKER);
      const started = performance.now();
      while (attacking && performance.now() - started < 4000) {
        attackerAnswers.push(await client.request(loginRequest('victim', 'wrong'), 10_000));
        await sleep(20);
      }
      client.close();
    })();
    const victim: string[] = [];
    for (let i = 0; i < 8; i++) {
      await sleep(500);
      victim.push(String((await timedLogin(server, 'victim', 'right')).answer.type));
    }
    attacking = false;
    await attacker;
    const succeeded = victim.filter((type) => type === 'logged_in').length;
    console.log(`attack 5: attacker → ${JSON.stringify(tally(attackerAnswers))}; ` +
      'victim from another address ' +
      `succeeded ${succeeded} of 8 (required ≥ 6)`);
    assert.ok(succeeded >= 6);
    assert.ok((tally(attackerAnswers).too_many_attempts ?? 0) > 0, 'the attacker was throttled');
  } finally {
    attacking = false;
    await server.close();
  }
});

// ---------------------------------------------------------------------------------------------
// 6. The right password takes over: replaced tokens are remembered, boundedly
// ---------------------------------------------------------------------------------------------

test('attack 6: a replaced token is told "replaced" past timeoutMs; at most maxThrottleEntries ' +
  'are kept', async () => {
  // Replaced tokens are kept two timeouts. The cap is checked right after the logins, and the
  // time past timeoutMs on the token the last login replaced: a login (scrypt) can take a few
  // hundred ms on a busy machine, so the tokens replaced before it are older by that much.
  const timeoutMs = 1000;
  const server = await startTestServer({ timeoutMs, heartbeatMs: 100, maxThrottleEntries: 3 });
  try {
    assert.equal((await register(server, 'roamer', 'pw')).type, 'registered');
    const tokens: string[] = [];
    for (let i = 0; i < 5; i++) {
      tokens.push(String((await timedLogin(server, 'roamer', 'pw')).answer.token));
    }
    const kept = server.registry.replacedTokens.size;
    const hello = (token: string) => sendDatagram(server.udpPort,
      JSON.stringify({ type: 'hello', username: 'roamer', token }), 500);
    const oldest = await hello(tokens[0]);
    await sleep(timeoutMs + 100);
    const answer = await hello(tokens[3]);
    console.log(`attack 6: 5 logins → ${kept} replaced tokens kept (cap 3), the oldest → ` +
      `${oldest}; hello with a replaced token ${timeoutMs + 100} ms later → ${answer}`);
    assert.equal(kept, 3);
    assert.deepEqual(JSON.parse(oldest!), { type: 'session_unknown' }, 'the oldest was forgotten');
    assert.deepEqual(JSON.parse(answer!), { type: 'session_unknown', reason: 'replaced' });
    await waitUntil(() => server.registry.replacedTokens.size === 0, 2 * timeoutMs + 5000,
      'replaced tokens to be forgotten');
    for (const line of server.logLines) {
      tokens.forEach((token) => assert.ok(!line.includes(token), line));
    }
  } finally {
    await server.close();
  }
});

test('attack 6: with room for a single replaced token, logins that replace sessions still ' +
  'answer (each ended session leaves two names: its token and its hellos\' name)', async () => {
  const server = await startTestServer({ maxThrottleEntries: 1 });
  try {
    assert.equal((await register(server, 'hopper', 'pw')).type, 'registered');
    for (let i = 0; i < 3; i++) {
      assert.equal((await timedLogin(server, 'hopper', 'pw')).answer.type, 'logged_in');
    }
    console.log(`attack 6: cap 1 → ${server.registry.replacedTokens.size} names kept`);
    assert.ok(server.registry.replacedTokens.size <= 2);
  } finally {
    await server.close();
  }
});

// ---------------------------------------------------------------------------------------------
// 7. The online list always fits in a line
// ---------------------------------------------------------------------------------------------

/** Puts `names` online directly (logging in 1600 users through scrypt would take minutes). */
function putOnline(server: TestServer, names: string[]): string {
  return names.map((name) => openSession(server.registry, name, '127.0.0.1', 7000).token)[0];
}

test('attack 7: 1600 short names or 480 long ones → at most 100, sorted, with the total; a ' +
  'prefix narrows', async () => {
  const server = await startTestServer();
  try {
    const short = Array.from({ length: 1600 },
      (_, i) => `${i % 2 ? 'U' : 'u'}${String(i).padStart(4, '0')}`);
    const long = Array.from({ length: 480 },
      (_, i) => `Long_${String(i).padStart(3, '0')}`.padEnd(32, 'x'));
    const token = putOnline(server, [...short, ...long]);
    const client = await LineClient.connect(server.tcpPort);
    client.write(JSON.stringify({ type: 'list', token }) + '\n');
    const line = await client.readLine();
    const all = JSON.parse(line);
    const narrowed = await client.request({ type: 'list', token, prefix: 'LONG_4' }) as
      { users: string[]; total: number };
    const none = await client.request({ type: 'list', token, prefix: 'zz' });
    client.close();
    console.log(`attack 7: 2080 online → answer of ${line.length} bytes with ` +
      `${all.users.length} names, total ${all.total}, first ${all.users[0]}; ` +
      `prefix "LONG_4" → ${narrowed.users.length} of ${narrowed.total}`);
    assert.ok(line.length < MAX_LINE_BYTES);
    assert.equal(all.total, 2080);
    assert.equal(all.users.length, 100);
    const lower = all.users.map((name: string) => name.toLowerCase());
    assert.deepEqual(lower, [...lower].sort());
    assert.deepEqual(all.users.slice(0, 3), ['Long_000'.padEnd(32, 'x'),
      'Long_001'.padEnd(32, 'x'), 'Long_002'.padEnd(32, 'x')]);
    assert.equal(narrowed.total, 80);
    assert.equal(narrowed.users.length, 80);
    assert.ok(narrowed.users.every((name: string) => name.startsWith('Long_4')));
    assert.deepEqual(none, { type: 'online', users: [], total: 0 });
    assert.ok(server.logLines.some(
      (entry) => / list .* prefix="long_4" total=80 shown=80$/.test(entry)));
  } finally {
    await server.close();
  }
});

// ---------------------------------------------------------------------------------------------
// 8. The 16 KiB limit is on the line itself
// ---------------------------------------------------------------------------------------------

test('attack 8: a 16 384-byte line ending in \\r\\n is answered; one byte more is refused',
  async () => {
  const server = await startTestServer();
  try {
    const lineOf = (bytes: number) => {
      const head = '{"type":"list","token":"';
      return head + 'x'.repeat(bytes - head.length - 2) + '"}';
    };
    const client = await LineClient.connect(server.tcpPort);
    client.write(lineOf(MAX_LINE_BYTES) + '\r\n');
    const fits = JSON.parse(await client.readLine());
    client.write(lineOf(MAX_LINE_BYTES + 1) + '\r\n');
    const over = JSON.parse(await client.readLine());
    await client.waitClosed();
    console.log(`attack 8: ${MAX_LINE_BYTES} bytes + CRLF → ${fits.code}; ` +
      `${MAX_LINE_BYTES + 1} + CRLF → ${over.message}`);
    assert.equal(fits.code, 'not_logged_in');
    assert.equal(over.code, 'bad_request');
    assert.match(over.message, /longer than 16384 bytes/);
  } finally {
    await server.close();
  }
});
