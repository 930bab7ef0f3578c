/**
 * test/attack3.test.ts — registry round 3 (issue 17): a classroom behind one address, a sleeping
 * registry, and a botnet lock no one out. Plus the registry's command line (issue 16, 7 and 13).
 *
 * Each test replays one item of the issue over real sockets, scaled down in time with the
 * ratios kept, and prints its figure. Loopback addresses stand for hosts (any 127.x.y.z reaches
 * a server on 127.0.0.1 under Linux): the class behind one NAT is 127.0.0.4, a victim elsewhere
 * 127.0.0.3, the owner of an account 127.0.0.5, botnets 127.0.1.x and 127.0.2.x, connection
 * holders 127.0.3.x.
 *
 *   1. 30 right passwords at once from one address all log in; refusals say what is true
 *   2. an attacker on the class's address does not lock out classmates who logged in before
 *   3. a botnet guessing one name does not lock out its owner, who logged in before
 *   4. a registry stopped for 3 timeouts (SIGSTOP) keeps its live users, sweeps the silent
 *   5. made-up tokens do not keep a slot; a full table makes room for a newcomer
 *   7. right passwords from 40 addresses: a proof holder waits for no more than the running
 *      hashes; one account's logins per minute are bounded
 *   8. look-alike names are refused, by both stores, and check_username says so
 */

import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import os from 'node:os';
import process from 'node:process';
import { test } from 'node:test';
import { createMemoryUserStore, openMongoUserStore } from '../server.ts';
import type { RunningServer, UserStore } from '../server.ts';
import {
  LineClient, SpawnedProcesses, p95, sleep, spawnEval, spawnScript, startTestServer, tally,
  waitUntil,
} from './helpers.ts';

const VICTIM = '127.0.0.3';
const CLASS = '127.0.0.4';
const OWNER = '127.0.0.5';
/** `count` addresses 127.0.<subnet>.1, .2, … */
const addresses = (subnet: number, count: number) =>
  Array.from({ length: count }, (_, i) => `127.0.${subnet}.${i + 1}`);

type Answer = Record<string, unknown>;

/** One request on a fresh connection from `from`; the answer. */
async function requestFrom(server: RunningServer, from: string, message: unknown):
  Promise<Answer> {
  const client = await LineClient.connect(server.tcpPort, '127.0.0.1', from);
  try {
    return await client.request(message, 20_000);
  } finally {
    client.close();
  }
}

function register(server: RunningServer, username: string, from: string, password = 'pw') {
  return requestFrom(server, from, { type: 'register', username, password });
}

/** A login as the client makes one, with the device proof if it has one. */
function login(server: RunningServer, username: string, from: string,
  options: { password?: string; device?: unknown } = {}) {
  const { password = 'pw', device } = options;
  return requestFrom(server, from, { type: 'login', username, password, chatPort: 7000,
    ...(device === undefined ? {} : { device }) });
}

/** Logs in and returns the device proof the registry gave. */
async function proofFor(server: RunningServer, username: string, from: string): Promise<string> {
  const answer = await login(server, username, from);
  assert.equal(answer.type, 'logged_in', JSON.stringify(answer));
  assert.match(String(answer.device), /^[\w-]{22}\.[\w-]{43}$/);
  return String(answer.device);
}

/** Sends wrong passwords from `from`, one at a time on one connection, every 20 ms, for the
 * names `nameAt(i)` gives, until `until()`; resolves with the answers. */
async function guess(server: RunningServer, from: string, nameAt: (i: number) => string,
  until: () => boolean): Promise<Answer[]> {
  const client = await LineClient.connect(server.tcpPort, '127.0.0.1', from);
  const answers: Answer[] = [];
  try {
    for (let i = 0; !until(); i++) {
      answers.push(await client.request(
        { type: 'login', username: nameAt(i), password: `guess${i}`, chatPort: 7000 }, 20_000));
      await sleep(20);
    }
  } finally {
    client.close();
  }
  return answers;
}

// ---------------------------------------------------------------------------------------------
// 1. Right passwords are never refused for failures that have not happened
// ---------------------------------------------------------------------------------------------

test('attack3 1: 30 right passwords at once from one address all log in; a refusal says what ' +
  'is true', async () => {
  const server = await startTestServer(); // the defaults: 20 failures per address, 32 at once
  try {
    const students = Array.from({ length: 30 }, (_, i) => `student${i}`);
    for (const name of students) {
      assert.equal((await register(server, name, CLASS)).type, 'registered');
    }
    const clients = await Promise.all(students.map(() =>
      LineClient.connect(server.tcpPort, '127.0.0.1', CLASS)));
    const answers = await Promise.all(clients.map((client, i) => client.request(
      { type: 'login', username: students[i], password: 'pw', chatPort: 7000 }, 30_000)));
    // The same at once with wrong passwords to made-up names: 20 are checked (the address's
    // limit), and the other 5, held until those failed, are told so.
    const wrong = await Promise.all(clients.slice(0, 25).map((client, i) => client.request(
      { type: 'login', username: `nobody${i}`, password: 'x', chatPort: 7000 }, 30_000)));
    clients.forEach((client) => client.close());
    const refusals = new Set(wrong.filter((answer) => answer.code === 'too_many_attempts')
      .map((answer) => String(answer.message).replace(/\d+ s$/, 'N s')));
    console.log(`attack3 1: 30 simultaneous right passwords from one address → ` +
      `${JSON.stringify(tally(answers))} (issue: 17 logged in, 13 told "too many failed ` +
      `logins"); then 25 simultaneous wrong ones → ${JSON.stringify(tally(wrong))}, told ` +
      `${JSON.stringify([...refusals])}`);
    assert.deepEqual(tally(answers), { logged_in: 30 });
    assert.deepEqual(tally(wrong), { bad_credentials: 20, too_many_attempts: 5 });
    assert.deepEqual([...refusals], ['too many failed logins from your address; try again in N s']);
  } finally {
    await server.close();
  }
});

// ---------------------------------------------------------------------------------------------
// 2. An attacker behind the class's address does not lock the class out
// ---------------------------------------------------------------------------------------------

test('attack3 2: an attacker on the class\'s address guessing one name, then four, then made-up ' +
  'names: classmates who logged in before are never refused', async () => {
  // The issue's 60 s attack against a 30 s cooldown, scaled ten times down: 6 s against 3 s.
  const server = await startTestServer({ loginCooldownMs: 3000 });
  let attacking = true;
  try {
    const students = ['s1', 's2', 's3', 's4'];
    for (const name of [...students, 'newbie']) await register(server, name, CLASS);
    const proofs = new Map<string, string>();
    for (const name of students) proofs.set(name, await proofFor(server, name, CLASS));
    const started = performance.now();
    const phase = () => Math.floor((performance.now() - started) / 2000); // 0, 1, 2
    const attacker = guess(server, CLASS,
      (i) => [students[0], students[i % 4], `madeup${i}`][Math.min(phase(), 2)],
      () => !attacking);
    const classmates: Answer[] = [];
    const sameDevice: boolean[] = [];
    for (let i = 0; performance.now() - started < 6000; i++) {
      await sleep(200);
      const name = i % 2 === 0 ? students[0] : students[i % 4]; // s1, the most guessed, often
      const answer = await login(server, name, CLASS, { device: proofs.get(name) });
      classmates.push(answer);
      sameDevice.push(String(answer.device).split('.')[0] === proofs.get(name)!.split('.')[0]);
    }
    const firstTime = await login(server, 'newbie', CLASS);
    attacking = false;
    const guesses = await attacker;
    const refused = classmates.filter((answer) => answer.type !== 'logged_in').length;
    console.log(`attack3 2: attacker on the class's address for 6 s (cooldown 3 s) → ` +
      `${JSON.stringify(tally(guesses))}; classmates with a proof: refused ${refused} of ` +
      `${classmates.length} (issue: 58 of 60); a first-time login from there → ` +
      `${firstTime.type === 'logged_in' ? 'logged_in' : `"${firstTime.message}"`}`);
    assert.equal(refused, 0);
    assert.ok(sameDevice.every(Boolean), 'a proof presented comes back with the same id');
    assert.ok((tally(guesses).too_many_attempts ?? 0) > 0, 'the attacker was throttled');
  } finally {
    attacking = false;
    await server.close();
  }
});

// ---------------------------------------------------------------------------------------------
// 3. A botnet guessing one name does not lock its owner out
// ---------------------------------------------------------------------------------------------

test('attack3 3: 40 addresses guessing one account: the owner with a proof is never refused; ' +
  'the per-user ceiling holds', async () => {
  // The issue: 200 addresses for 60 s against a 30 s cooldown. Here 40 for 4 s against 2 s, and
  // the user's ceiling scaled with the addresses (issue: 100 against 200 × 5; here 20 against
  // 40 × 5), so that the botnet reaches it within a cooldown, as it did in the issue.
  const cooldownMs = 2000;
  const ceiling = 20;
  const server =
    await startTestServer({ loginCooldownMs: cooldownMs, maxFailedLoginsPerUser: ceiling });
  let attacking = true;
  try {
    await register(server, 'owner', OWNER);
    const proof = await proofFor(server, 'owner', OWNER);
    // A forged proof (another mac) counts as none: the login gets a new device's proof.
    const forgedId = proof.split('.')[0];
    const forged = await login(server, 'owner', OWNER, { device: `${forgedId}.${'A'.repeat(43)}` });
    const botnet = addresses(1, 40).map((from) =>
      guess(server, from, () => 'owner', () => !attacking));
    const started = performance.now();
    const every250ms = async (device?: string) => {
      const answers: Answer[] = [];
      while (performance.now() - started < 4000) {
        await sleep(250);
        answers.push(await login(server, 'owner', OWNER, { device }));
      }
      return answers;
    };
    const [withProof, withoutProof] = await Promise.all([every250ms(proof), every250ms()]);
    attacking = false;
    const guesses = (await Promise.all(botnet)).flat();
    const checked = tally(guesses).bad_credentials ?? 0;
    const windows = Math.ceil((performance.now() - started) / cooldownMs) + 1;
    console.log(`attack3 3: 40 addresses guessing "owner" for 4 s (cooldown 2 s, ceiling ` +
      `${ceiling}) → ` +
      `${JSON.stringify(tally(guesses))}; the owner with a proof → ` +
      `${JSON.stringify(tally(withProof))} (issue: refused 54 of 60), without one → ` +
      `${JSON.stringify(tally(withoutProof))}; a forged proof counts as none (a new id: ` +
      `${String(forged.device).split('.')[0] !== forgedId})`);
    assert.deepEqual(tally(withProof), { logged_in: withProof.length });
    assert.ok(checked <= ceiling * windows, `${checked} passwords checked in ${windows} windows`);
    assert.equal(forged.type, 'logged_in');
    assert.notEqual(String(forged.device).split('.')[0], forgedId, 'a new device');
  } finally {
    attacking = false;
    await server.close();
  }
});

// ---------------------------------------------------------------------------------------------
// 4. A registry that stalls does not punish its clients
// ---------------------------------------------------------------------------------------------

test('attack3 4: a registry stopped (SIGSTOP) for 3 timeouts keeps the users whose clients are ' +
  'alive, and still sweeps the silent', { skip: process.platform === 'win32' && 'no SIGSTOP' },
  async () => {
  // The issue: 9 s against a 10 s timeout; 508 of 1001 swept. Here 3 s against 1 s, 20 users
  // alive and 5 silent. The hellos sent while it is stopped are lost, as most were in the
  // issue's run (the socket's buffer overflowed): the clients resume when the registry does.
  const heartbeatMs = 200;
  const timeoutMs = 1000;
  const spawned = new SpawnedProcesses();
  const hellos = dgram.createSocket('udp4');
  let sending: ReturnType<typeof setInterval> | undefined;
  const { server, tcpPort, udpPort } = await spawned.server(
    ['--heartbeat-ms', String(heartbeatMs), '--timeout-ms', String(timeoutMs)]);
  try {
    const test = { tcpPort } as RunningServer;
    const users = Array.from({ length: 25 }, (_, i) => (i < 20 ? `alive${i}` : `silent${i}`));
    const tokens = new Map<string, string>();
    let speaking: string[] = []; // each from its login on, as a client would
    const sayHello = () => {
      for (const name of speaking) {
        const hello = JSON.stringify({ type: 'hello', username: name, token: tokens.get(name) });
        hellos.send(hello, udpPort, '127.0.0.1');
      }
    };
    sending = setInterval(sayHello, heartbeatMs);
    for (const name of users) {
      await register(test, name, VICTIM);
      tokens.set(name, String((await login(test, name, VICTIM)).token));
      speaking = [...tokens.keys()];
    }
    await sleep(2 * timeoutMs); // everyone online on hellos alone
    speaking = [];
    server.kill('SIGSTOP');
    await sleep(3 * timeoutMs);
    server.kill('SIGCONT');
    speaking = users.filter((name) => name.startsWith('alive'));
    sayHello();
    const online = async () => {
      const answer = await requestFrom(test, VICTIM,
        { type: 'list', token: tokens.get('alive0'), prefix: '' });
      return (answer.users ?? []) as string[];
    };
    await sleep(timeoutMs + 2 * heartbeatMs + 500); // the silent ones' time, and the grace
    const after = await online().catch(() => []);
    const stall = /stall stalled_for=([\d.]+)s/.exec(server.stdout)?.[1];
    const swept = [...server.stdout.matchAll(/ timeout user=(\w+)/g)].map((match) => match[1]);
    const sweptAlive = swept.filter((name) => name.startsWith('alive'));
    const sweptSilent = swept.filter((name) => name.startsWith('silent'));
    console.log(`attack3 4: registry stopped ${3 * timeoutMs} ms (timeout ${timeoutMs}, ` +
      `heartbeat ${heartbeatMs}): logged stall_for=${stall}s; of 20 alive users ` +
      `${20 - sweptAlive.length} still online (issue: 493 of 1001), of 5 silent ` +
      `${sweptSilent.length} swept`);
    assert.ok(stall !== undefined && Number(stall) >= 2, 'the stall was noticed');
    assert.deepEqual(sweptAlive, []);
    assert.equal(after.filter((name) => name.startsWith('alive')).length, 20);
    assert.deepEqual(sweptSilent.sort(), users.slice(20).sort());
  } finally {
    clearInterval(sending);
    hellos.close();
    server.kill('SIGCONT');
    await spawned.stopAll();
  }
});

// ---------------------------------------------------------------------------------------------
// 5. Held connections from many addresses do not keep newcomers out
// ---------------------------------------------------------------------------------------------

/** Connections that `hold` a slot each from the addresses given, sending a list with `token`
 * every `everyMs`, and reconnecting when closed, until stop(). */
function holdSlots(server: RunningServer, from: string[], perAddress: number, token: string,
  everyMs: number) {
  let holding = true;
  let closedAfter: number[] = [];
  const hold = async (address: string) => {
    while (holding) {
      const client = await LineClient.connect(server.tcpPort, '127.0.0.1', address)
        .catch(() => undefined);
      const opened = performance.now();
      client?.socket.on('close', () => closedAfter.push(performance.now() - opened));
      while (holding && client !== undefined && !client.closed) {
        client.write(JSON.stringify({ type: 'list', token }) + '\n');
        await sleep(everyMs);
      }
      client?.close();
      await sleep(50); // and back at once
    }
  };
  const all = from.flatMap((address) => Array.from({ length: perAddress }, () => hold(address)));
  return {
    closedAfter: () => closedAfter,
    reset: () => (closedAfter = []),
    async stop() {
      holding = false;
      await Promise.all(all);
    },
  };
}

test('attack3 5: 100 held slots from 10 addresses (the whole table): made-up tokens are not ' +
  'activity, and a newcomer takes the idlest slot of the fullest address', async () => {
  // The issue: 1000 connections from 100 addresses, a request each every 25 s against a 60 s
  // idle limit. Here 100 from 10, every 500 ms against 1500 ms.
  const idleMs = 1500;
  const server = await startTestServer({ maxConnections: 100, idleMs });
  const holders = addresses(3, 10);
  try {
    await register(server, 'clean', VICTIM);
    await register(server, 'holder', holders[0]);
    const live = String((await login(server, 'holder', holders[0])).token);
    const logins = async () => {
      const answers: Answer[] = [];
      for (let i = 0; i < 8; i++) {
        answers.push(await login(server, 'clean', VICTIM));
        await sleep(100);
      }
      return answers;
    };

    const madeUp = holdSlots(server, holders, 10, 'made-up', 500);
    await waitUntil(() => server.registry.connections.size === 100, 10_000, 'a full table');
    await sleep(idleMs + 500);
    const closedMadeUp = madeUp.closedAfter().map(Math.round);
    await madeUp.stop();

    const held = holdSlots(server, holders, 10, live, 500);
    await waitUntil(() => server.registry.connections.size === 100, 10_000, 'a full table');
    const evictionsBefore = server.logLines.filter((line) => / evict /.test(line)).length;
    const answers = await logins();
    const evictions = server.logLines.filter((line) => / evict /.test(line));
    await held.stop();
    console.log(`attack3 5: 100 slots held from 10 addresses with a made-up token every 500 ms: ` +
      `${closedMadeUp.length} closed for idleness (idle ${idleMs} ms), after ` +
      `${Math.min(...closedMadeUp)}–${Math.max(...closedMadeUp)} ms; held with a live token: ` +
      `8 clean logins from another address → ${JSON.stringify(tally(answers))} ` +
      `(issue: 35 of 35 refused), ${evictions.length - evictionsBefore} evictions logged, e.g. ` +
      `"${evictions.at(-1)?.replace(/^\S+ /, '')}"`);
    assert.ok(closedMadeUp.length >= 100, 'every made-up-token holder was closed');
    assert.ok(Math.min(...closedMadeUp) >= idleMs - 50, 'not before idleMs');
    assert.deepEqual(tally(answers), { logged_in: 8 });
    assert.ok(evictions.length - evictionsBefore >= 1, 'logins made room for themselves');
    assert.match(evictions.at(-1)!,
      / evict from=127\.0\.3\.\d+:\d+ idle_ms=\d+ held=10 for=127\.0\.0\.3$/);
    assert.ok(server.logLines.every((line) => !line.includes(live)), 'no token in the log');
  } finally {
    await server.close();
  }
});

// ---------------------------------------------------------------------------------------------
// 7. Right passwords do not fill the hasher's line for those who logged in before
// ---------------------------------------------------------------------------------------------

/** From the addresses in FROM, one connection each logging in to the accounts in ACCOUNTS
 * (password "pw") in a loop, 20 ms after a refusal. Prints a tally when told to stop. */
const LOGIN_FLOOD_CODE = `
import net from 'node:net';
import process from 'node:process';
const port = Number(process.env.PORT);
const accounts = process.env.ACCOUNTS.split(',');
let flooding = true;
const counts = {};
const sockets = process.env.FROM.split(',').map((from, i) => {
  const socket = net.connect({ port, host: '127.0.0.1', localAddress: from });
  const username = accounts[i % accounts.length];
  const send = () => flooding && socket.write(
    JSON.stringify({ type: 'login', username, password: 'pw', chatPort: 7000 }) + '\\n');
  let buffered = '';
  socket.setEncoding('utf8');
  socket.on('error', () => {});
  socket.on('connect', send);
  socket.on('data', (text) => {
    const lines = (buffered + text).split('\\n');
    buffered = lines.pop();
    for (const line of lines) {
      const answer = JSON.parse(line);
      const key = answer.code ?? answer.type;
      counts[key] = (counts[key] ?? 0) + 1;
      if (answer.type === 'logged_in') send();
      else setTimeout(send, 20);
    }
  });
  return socket;
});
console.log('flooding');
process.stdin.once('data', () => {
  flooding = false;
  sockets.forEach((socket) => socket.destroy());
  console.log('tally ' + JSON.stringify(counts));
  process.exit(0);
});
`;

/** As many hashes as the registry runs at once (its MAX_HASHES_AT_ONCE: one core left free). */
const HASHES_AT_ONCE = Math.max(1, os.availableParallelism() - 1);

/** Runs LOGIN_FLOOD_CODE against four accounts from 40 addresses while `during` runs. */
async function loginFlood<T>(server: RunningServer, during: () => Promise<T>):
  Promise<{ result: T; answers: Record<string, number> }> {
  const accounts = ['atk0', 'atk1', 'atk2', 'atk3'];
  for (const [i, name] of accounts.entries()) await register(server, name, `127.0.2.${i + 1}`);
  const flood = spawnEval(LOGIN_FLOOD_CODE, { PORT: String(server.tcpPort),
    FROM: addresses(2, 40).join(','), ACCOUNTS: accounts.join(',') });
  try {
    await flood.waitFor('flooding', 20_000);
    await sleep(1000);
    const result = await during();
    flood.type('stop');
    const [, answers] = await flood.waitFor(/tally (.*)/, 20_000);
    return { result, answers: JSON.parse(answers) };
  } finally {
    flood.kill('SIGKILL');
    await flood.exited;
  }
}

/** Logins of `username` from VICTIM, one after another, with the attacker's hashes (logins of
 * atkN, right or wrong) that finished while each waited, and its time. */
async function timedLogins(server: TestServerLike, count: number, username: string,
  device?: string) {
  const logins: Array<{ type: unknown; overtaken: number; ms: number }> = [];
  for (let i = 0; i < count; i++) {
    const logged = server.logLines.length;
    const started = performance.now();
    const answer = await login(server, username, VICTIM, { device });
    const overtaken = server.logLines.slice(logged)
      .filter((line) => / login(_failed)? user=atk/.test(line)).length;
    logins.push({ type: answer.type, overtaken, ms: performance.now() - started });
  }
  return logins;
}
type TestServerLike = RunningServer & { logLines: string[] };

test('attack3 7: right passwords to four accounts from 40 addresses: a proof holder waits only ' +
  'for the running hashes; an account\'s logins a minute are bounded', async () => {
  // Bounded: logins to one account a minute (default 20; here 5, so that a flood of 3 s, which
  // hashes about 20 passwords a second, reaches it), so the flood stops costing hashes.
  const perMinute = 5;
  const bounded = await startTestServer({ maxLoginsPerUser: perMinute });
  try {
    const { answers } = await loginFlood(bounded, () => sleep(2000));
    const perAccount = ['atk0', 'atk1', 'atk2', 'atk3'].map((name) =>
      bounded.logLines.filter((line) => line.includes(` login user=${name} `)).length);
    console.log(`attack3 7: 40 addresses logging in to 4 accounts for 3 s → ` +
      `${JSON.stringify(answers)}; logins per account ${JSON.stringify(perAccount)} ` +
      `(limit ${perMinute} a minute)`);
    assert.ok(perAccount.every((count) => count <= perMinute), JSON.stringify(perAccount));
    assert.ok((answers.too_many_attempts ?? 0) > 0);
  } finally {
    await bounded.close();
  }

  // With that bound lifted, the flood fills the line: the proof's lane is what is left.
  const server = await startTestServer({ maxLoginsPerUser: 1e6 });
  try {
    await register(server, 'honest', VICTIM);
    const proof = await proofFor(server, 'honest', VICTIM);
    const { result } = await loginFlood(server, async () => ({
      withProof: await timedLogins(server, 10, 'honest', proof),
      withoutProof: await timedLogins(server, 3, 'honest'),
    }));
    const summary = (logins: typeof result.withProof) => {
      const overtaken = logins.map((entry) => entry.overtaken);
      const ms = logins.map((entry) => entry.ms);
      return `${JSON.stringify(tally(logins as Answer[]))}, attacker hashes finished while ` +
        `each waited p95 ${p95(overtaken)} (max ${Math.max(...overtaken)}), time p95 ` +
        `${Math.round(p95(ms))} ms`;
    };
    console.log(`attack3 7: the same, unbounded: an honest login with a proof → ` +
      `${summary(result.withProof)} (issue: p50 10.2 s, required p95 < 1 s); without one → ` +
      `${summary(result.withoutProof)}`);
    assert.deepEqual(tally(result.withProof as Answer[]), { logged_in: 10 });
    assert.ok(p95(result.withProof.map((entry) => entry.overtaken)) <= 2 * HASHES_AT_ONCE);
  } finally {
    await server.close();
  }
});

// ---------------------------------------------------------------------------------------------
// 8. Look-alike names
// ---------------------------------------------------------------------------------------------

test('attack3 8: look-alike names are refused as "too similar to an existing name"; ' +
  'check_username says so too', async () => {
  const server = await startTestServer();
  try {
    for (const name of ['alice', 'mallory', 'bob', 'teacher']) {
      assert.equal((await register(server, name, VICTIM)).type, 'registered');
    }
    const lookAlikes = ['aIice', 'a1ice', 'rnallory', 'b0b', 'alice.', 'teacher.', '_B0B-'];
    const answers = [];
    for (const name of lookAlikes) answers.push(await register(server, name, VICTIM));
    const checked =
      await requestFrom(server, VICTIM, { type: 'check_username', username: 'aIice' });
    const exact = await register(server, 'Alice', VICTIM);
    const other = await register(server, 'carol', VICTIM);
    console.log(`attack3 8: ${lookAlikes.join(' ')} next to alice mallory bob teacher → ` +
      `${JSON.stringify(tally(answers))} (issue: all accepted), "${answers[0].message}"; ` +
      `check_username aIice → "${checked.message}"; Alice → "${exact.message}"; ` +
      `carol → ${other.type}`);
    for (const [i, answer] of answers.entries()) {
      assert.equal(answer.code, 'username_taken', lookAlikes[i]);
      assert.equal(answer.message,
        `the username ${lookAlikes[i]} is too similar to an existing name`);
    }
    assert.equal(checked.message, 'the username aIice is too similar to an existing name');
    assert.equal(exact.message, 'the username Alice is already taken');
    assert.equal(other.type, 'registered');
    assert.ok(server.logLines.some((line) => / register_refused user=aIice .* reason=similar$/
      .test(line)));
  } finally {
    await server.close();
  }
});

/** The stores' side of item 8: look-alikes are 'similar', atomically, and nameInUse agrees. */
function lookAlikeContract(label: string, open: () => Promise<UserStore>, skip: string | false) {
  test(`attack3 8: the ${label} store refuses look-alikes atomically`, { skip }, async () => {
    const store = await open();
    const prefix = `t${Date.now().toString(36)}x`; // unique per run, for a reused database
    const user = (name: string) => ({ name, displayName: name, passwordHash: 'ab', salt: 'cd' });
    try {
      assert.equal(await store.addUser(user(`${prefix}dave`)), 'added');
      assert.equal(await store.addUser(user(`${prefix}dave`)), 'taken');
      assert.equal(await store.addUser(user(`${prefix}dave.`)), 'similar');
      assert.equal(await store.nameInUse(`${prefix}dave`), 'taken');
      assert.equal(await store.nameInUse(`-${prefix}dave`), 'similar');
      assert.equal(await store.nameInUse(`${prefix}erin`), 'free');
      const racers = ['ml', 'mI', 'm1', 'rnl', 'rn1'].map((name) =>
        store.addUser(user(`${prefix}${name}`.toLowerCase())));
      const outcomes = await Promise.all(racers);
      assert.equal(outcomes.filter((outcome) => outcome === 'added').length, 1,
        JSON.stringify(outcomes));
    } finally {
      await store.close();
    }
  });
}
lookAlikeContract('in-memory', async () => createMemoryUserStore(), false);
lookAlikeContract('MongoDB', () => openMongoUserStore(process.env.MONGODB_URI!, 3000),
  process.env.MONGODB_URI ? false : 'set MONGODB_URI to run the MongoDB store tests');

// ---------------------------------------------------------------------------------------------
// Issue 16, items 7 and 13: the registry's command line
// ---------------------------------------------------------------------------------------------

test('attack3 cli: --timeout-ms at or below --heartbeat-ms is refused at start (exit 2)',
  async () => {
  const equal = spawnScript('server.ts', ['--heartbeat-ms', '1000', '--timeout-ms', '1000']);
  const below = spawnScript('server.ts', ['--timeout-ms', '1500']); // the heartbeat is 2000
  assert.equal(await equal.exited, 2);
  assert.equal(await below.exited, 2);
  console.log(`attack3 cli: --heartbeat-ms 1000 --timeout-ms 1000 → exit 2, ` +
    `"${equal.stderr.split('\n')[0]}"`);
  assert.match(equal.stderr,
    /^error: --timeout-ms \(1000\) must be longer than --heartbeat-ms \(1000\)/);
  assert.match(below.stderr, /--timeout-ms \(1500\) must be longer than --heartbeat-ms \(2000\)/);
});

test('attack3 cli: Ctrl-C (SIGINT), even delivered twice, logs stop once and exits 130',
  { skip: process.platform === 'win32' && 'no SIGINT to send' }, async () => {
  const spawned = new SpawnedProcesses();
  try {
    const { server } = await spawned.server();
    server.kill('SIGINT'); // as `deno task` forwards it while the terminal sends it too
    server.kill('SIGINT');
    const code = await server.exited;
    const stops = server.stdout.match(/ stop signal=SIGINT/g)?.length;
    console.log(`attack3 cli: two SIGINTs → ${stops} stop line, exit ${code}`);
    assert.equal(stops, 1);
    assert.equal(code, 130);
  } finally {
    await spawned.stopAll();
  }
});
