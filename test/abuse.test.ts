/**
 * test/abuse.test.ts — a live registry survives people who misuse it.
 *
 * What this file proves, over real sockets against a registry running in this process:
 *   - thousands of malformed lines each get bad_request, in order, and the connection stays usable;
 *   - thousands of malformed, unknown and oversized datagrams are dropped (a datagram over
 *     1024 bytes is not even parsed: a forged hello of 1025 bytes gets no session_unknown);
 *   - a line over 16 KiB is answered bad_request and the connection closed;
 *   - a client that pipelines requests without reading its answers is paused: the server's
 *     queue and output buffer for it stay small;
 *   - idle connections are closed after idleMs; a slow dribbler that never finishes a line too;
 *   - over maxConnections a new connection gets one too_many_connections line and is closed,
 *     while the connections already open keep working;
 *   - password guessing: too_many_attempts with the wait in the message, per user and per
 *     address; a success resets the count; the throttle tables stay at their cap;
 *   - a UDP flood from another process does not starve TCP requests;
 *   - after all that, a normal client still registers, logs in and searches (latency printed),
 *     and memory (printed before and after) stays bounded;
 *   - a UserStore whose methods reject (or return a damaged record) → register/login answer
 *     storage_unavailable while search, list and presence keep working and the server runs on.
 *
 * Tests run one after another; the first few share one "main" server so that the final check
 * shows a server that has been through the abuse.
 */

import assert from 'node:assert/strict';
import { Buffer } from 'node:buffer';
import dgram from 'node:dgram';
import type net from 'node:net';
import { after, before, test } from 'node:test';
import { decodeRequest } from '../protocol.ts';
import { createMemoryUserStore, openSession } from '../server.ts';
import type { UserStore } from '../server.ts';
import {
  LineClient, memoryMiB, registerAndLogin, sendDatagram, sleep, spawnEval, startTestServer,
  waitUntil,
} from './helpers.ts';
import type { TestServer } from './helpers.ts';

/** What the tests look at inside one of the server's connections (the type is not exported). */
type ServerConnection = { socket: net.Socket; queue: unknown[] };

function serverConnections(server: TestServer): ServerConnection[] {
  return [...server.registry.connections] as unknown as ServerConnection[];
}

function milliseconds(start: number): number {
  return Math.round(performance.now() - start);
}

function summary(values: number[]): string {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  return `n=${sorted.length} min=${sorted[0]} median=${at(0.5)} p95=${at(0.95)} ` +
    `max=${sorted[sorted.length - 1]} ms`;
}

/** A login on `client`, as the client program sends one. */
function loginOn(client: LineClient, username: string, password: string, chatPort = 7000) {
  return client.request({ type: 'login', username, password, chatPort });
}

/** The code a list with a made-up token gets: the cheapest request with a real answer. */
async function listCode(client: LineClient): Promise<unknown> {
  return (await client.request({ type: 'list', token: 'x' })).code;
}

// ---------------------------------------------------------------------------------------------
// The main server: abused by the first tests, then used normally by the last.
// ---------------------------------------------------------------------------------------------

let main: TestServer;
let memoryBefore: { rss: number; heapUsed: number };

before(async () => {
  memoryBefore = memoryMiB();
  main = await startTestServer({
    idleMs: 5000,
    maxFailedLoginsPerUserAtAddress: 3,
    // This server's guessing is per user; per address is tested apart.
    maxFailedLoginsPerAddress: 1000,
    loginCooldownMs: 1500,
  });
});

after(async () => {
  await main?.close();
});

/** Malformed request lines of many kinds; every one is checked to really be malformed. */
function malformedLines(count: number, seed: number): Uint8Array[] {
  const fixed = [
    'hello', '{', '}', '{"type":', '[]', '"list"', '42', 'null', 'true', '{"type":"nope"}',
    '{"type":42}',
    '{"type":"login","username":"a","password":"b","chatPort":"7000"}',
    '{"type":"login","username":"a","password":"b","chatPort":70000}',
    '{"type":"register","username":1,"password":"x"}', '{"type":"search","token":"t"}',
    '{"__proto__":{"type":"list","token":"t"}}', '{"type":"__proto__"}', '{"type":"constructor"}',
    '['.repeat(5000), '{"a":'.repeat(3000), '{"type":"list","token":' + '9'.repeat(400) + '}',
  ].map((text) => Buffer.from(text));
  const invalidUtf8 = [
    Buffer.from([0xff, 0xfe]),
    Buffer.from('{"type":"list","token":"\xc3"}', 'latin1'),
    Buffer.from([0xc0, 0x80]),
  ];
  let state = seed;
  const random = () => ((state = (state * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const lines: Uint8Array[] = [];
  while (lines.length < count) {
    let line: Uint8Array;
    const kind = random();
    if (kind < 0.5) line = fixed[Math.floor(random() * fixed.length)];
    else if (kind < 0.6) line = invalidUtf8[Math.floor(random() * invalidUtf8.length)];
    else {
      const length = 1 + Math.floor(random() * 300);
      line = Uint8Array.from({ length }, () => Math.floor(random() * 256));
    }
    // No "\n" inside (it would split the line), no line that is only "\r" (skipped as empty).
    line = line.map((byte) => (byte === 10 || byte === 13 ? 32 : byte));
    if (!decodeRequest(line).ok) lines.push(line);
  }
  return lines;
}

test('abuse: thousands of malformed lines each get bad_request, in order, and the connections ' +
  'stay usable', async () => {
  const connections = 4;
  const perConnection = 1000;
  const started = performance.now();
  await Promise.all(Array.from({ length: connections }, async (_, index) => {
    const client = await LineClient.connect(main.tcpPort);
    try {
      const lines = malformedLines(perConnection, 1000 + index);
      client.write(Buffer.concat([...lines.flatMap((line) => [line, Buffer.from('\n')])]));
      for (let i = 0; i < perConnection; i++) {
        const answer = JSON.parse(await client.readLine(5000));
        assert.equal(answer.code, 'bad_request', `line ${i} of connection ${index}`);
        assert.equal(typeof answer.message, 'string');
      }
      // Still usable: a proper request gets its proper answer.
      assert.deepEqual(await client.request({ type: 'list', token: 'nope' }), {
        type: 'error',
        code: 'not_logged_in',
        message: 'log in first: this session is unknown or has expired',
      });
      assert.equal(client.closed, false);
    } finally {
      client.close();
    }
  }));
  console.log(`abuse: ${connections * perConnection} malformed lines on ${connections} ` +
    `connections, all answered bad_request, in ${milliseconds(started)} ms`);
});

test('abuse: thousands of malformed, unknown and oversized datagrams are dropped; >1024 bytes ' +
  'is not parsed', async () => {
  const forgedHello = '{"type":"hello","username":"ghost","token":"forged"}';
  const payloads: Buffer[] = [
    Buffer.alloc(1025, 0x7b), Buffer.alloc(60_000, 0x61), Buffer.from('{"type":'),
    Buffer.from('{"type":"boom"}'), Buffer.from('{"type":"session_unknown"}'),
    Buffer.from([0xff, 0xfe, 0xfd]), Buffer.from('[1,2,3]'), Buffer.from(''),
    Buffer.from('{"__proto__":{"type":"hello"},"username":"x","token":"y"}'),
    // A hello, but oversized.
    Buffer.from(forgedHello.slice(0, -1) + `,"pad":"${'x'.repeat(1100)}"}`),
  ];
  const socket = dgram.createSocket('udp4');
  let replies = 0;
  socket.on('message', () => replies++);
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()));
  const total = 5000;
  const started = performance.now();
  try {
    for (let sent = 0; sent < total; sent += 50) {
      await Promise.all(Array.from({ length: 50 }, (_, i) => new Promise<void>((resolve) => {
        socket.send(payloads[(sent + i) % payloads.length], main.udpPort, '127.0.0.1',
          () => resolve());
      })));
    }
    await sleep(300);
  } finally {
    socket.close();
  }
  const oversized = Math.round(total / payloads.length) * 3;
  console.log(`abuse: ${total} junk datagrams (incl. ${oversized} oversized) sent in ` +
    `${milliseconds(started)} ms; ` +
    `${replies} answered (none should be: no junk datagram is a hello of ≤ 1024 bytes)`);
  assert.equal(replies, 0, 'junk, unknown and oversized datagrams get no answer');

  // The boundary: a forged hello of exactly 1024 bytes is parsed and answered session_unknown;
  // the same hello one byte longer is dropped before parsing.
  const padTo = (size: number) => {
    const text = forgedHello.slice(0, -1) + ',"pad":"' + '"}';
    return Buffer.from(forgedHello.slice(0, -1) + `,"pad":"${'x'.repeat(size - text.length)}"}`);
  };
  assert.equal(padTo(1024).length, 1024);
  assert.equal(await sendDatagram(main.udpPort, padTo(1024), 1000), '{"type":"session_unknown"}');
  assert.equal(await sendDatagram(main.udpPort, padTo(1025), 400), null,
    'a 1025-byte hello is not parsed');
});

test('abuse: a line over 16 KiB is answered bad_request and the connection closed; 16 KiB ' +
  'exactly is not', async () => {
  const list = '{"type":"list","token":"x"}\n';
  // Exactly at the limit: just a bad line, the connection stays.
  const atLimit = await LineClient.connect(main.tcpPort);
  atLimit.write('x'.repeat(16 * 1024) + '\n' + list);
  assert.equal(JSON.parse(await atLimit.readLine()).code, 'bad_request');
  assert.equal(JSON.parse(await atLimit.readLine()).code, 'not_logged_in');
  assert.equal(atLimit.closed, false);
  atLimit.close();

  // Over the limit, with a request before it (answered) and one after it (never read).
  const over = await LineClient.connect(main.tcpPort);
  over.write(list + 'x'.repeat(20_000) + '\n' + list);
  assert.equal(JSON.parse(await over.readLine()).code, 'not_logged_in',
    'the request before is answered first');
  const refusal = JSON.parse(await over.readLine());
  assert.equal(refusal.code, 'bad_request');
  assert.match(refusal.message, /16384 bytes/);
  await over.waitClosed();
  await assert.rejects(over.readLine(100), 'nothing after the over-long line is answered');

  // Over the limit without ever sending a newline: refused as soon as the limit is passed.
  const endless = await LineClient.connect(main.tcpPort);
  endless.write('y'.repeat(17 * 1024));
  assert.equal(JSON.parse(await endless.readLine()).code, 'bad_request');
  await endless.waitClosed();
});

test('abuse: a client that pipelines requests but never reads is paused; server-side buffers ' +
  'stay small', async () => {
  const client = await LineClient.connect(main.tcpPort);
  client.socket.pause(); // never read the answers
  const request = Buffer.from('{"type":"list","token":"x"}\n'.repeat(10_000));
  const rounds = 40; // 40 × 280 KB = 11 MB of requests, whose answers would be ~44 MB
  let written = 0;
  for (let i = 0; i < rounds; i++) {
    client.socket.write(request);
    written += request.length;
  }
  const findServerSide = () =>
    serverConnections(main).find((c) => c.socket.remotePort === client.socket.localPort);
  await waitUntil(() => findServerSide() !== undefined, 2000, 'the server to see the connection');
  // Wait until the server stops reading (bytesRead no longer grows).
  let lastRead = -1;
  for (let i = 0; i < 50; i++) {
    const read = findServerSide()!.socket.bytesRead;
    if (read === lastRead) break;
    lastRead = read;
    await sleep(200);
  }
  const side = findServerSide()!;
  const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(1);
  console.log(`abuse: non-reading client wrote ${mib(written)} MiB; ` +
    `server read ${mib(side.socket.bytesRead)} MiB, queue ${side.queue.length} requests, ` +
    `${side.socket.writableLength} bytes of answers buffered, ` +
    `reading paused: ${side.socket.isPaused()}`);
  assert.ok(side.socket.isPaused(), 'the server stopped reading from it');
  assert.ok(side.socket.bytesRead < written, 'the server did not swallow everything');
  assert.ok(side.queue.length <= 64 + 65536 / 28, `queue stays bounded (${side.queue.length})`);
  // One stream buffer's worth (16 KiB under Node, 64 KiB under Deno), not the ~44 MiB of answers.
  assert.ok(side.socket.writableLength < 256 * 1024,
    `answers waiting in memory stay bounded (${side.socket.writableLength} bytes)`);
  client.close();
  await waitUntil(() => findServerSide() === undefined, 2000,
    'the server to forget the connection');
});

test('abuse: a password-guessing loop is throttled per user, with the wait in the message; ' +
  'success resets', async () => {
  await registerAndLogin(main.tcpPort, 'victim', 'right-password').then(async (token) => {
    const client = await LineClient.connect(main.tcpPort);
    await client.request({ type: 'logout', token });
    client.close();
  });
  const guesser = await LineClient.connect(main.tcpPort);
  const guesses = 200;
  const codes: Record<string, number> = {};
  let lastThrottle = '';
  const started = performance.now();
  for (let i = 0; i < guesses; i++) {
    const answer = await loginOn(guesser, i % 2 ? 'victim' : 'VICTIM', `guess-${i}`);
    codes[answer.code as string] = (codes[answer.code as string] ?? 0) + 1;
    if (answer.code === 'too_many_attempts') lastThrottle = answer.message as string;
  }
  const loopMs = milliseconds(started);
  console.log(`abuse: ${guesses} guesses in ${loopMs} ms → ${JSON.stringify(codes)}; ` +
    `last message: "${lastThrottle}"`);
  assert.deepEqual(codes, { bad_credentials: 3, too_many_attempts: guesses - 3 },
    'only maxFailedLoginsPerUserAtAddress guesses are checked');
  const wait = /try again in (\d+) s/.exec(lastThrottle);
  assert.ok(wait, 'the message says how long to wait');
  assert.ok(Number(wait[1]) >= 1 && Number(wait[1]) <= 2,
    `wait of ${wait[1]} s fits a 1.5 s cooldown`);
  const failures = main.logLines.filter((line) => / login_failed user=victim /i.test(line));
  assert.equal(failures.length, 3, 'three failures hashed and logged');

  // Even the right password is refused during the cooldown...
  const during = await loginOn(guesser, 'victim', 'right-password');
  assert.equal(during.code, 'too_many_attempts');
  // ...and accepted after it.
  await sleep(Number(wait[1]) * 1000 + 100);
  const afterCooldown = await loginOn(guesser, 'victim', 'right-password');
  assert.equal(afterCooldown.type, 'logged_in');
  await guesser.request({ type: 'logout', token: afterCooldown.token });

  // A success resets the count: 2 failures, success, 2 failures is never blocked at a limit of 3.
  for (const round of [1, 2]) {
    for (let i = 0; i < 2; i++) {
      const answer = await loginOn(guesser, 'victim', 'wrong');
      assert.equal(answer.code, 'bad_credentials', `round ${round}, failure ${i + 1}`);
    }
    const ok = await loginOn(guesser, 'victim', 'right-password');
    assert.equal(ok.type, 'logged_in', `round ${round}: success after 2 failures`);
    await guesser.request({ type: 'logout', token: ok.token });
  }
  guesser.close();
});

test('abuse: failed logins from one address are throttled across usernames', async () => {
  const server = await startTestServer({
    maxFailedLoginsPerUser: 100, maxFailedLoginsPerAddress: 4, loginCooldownMs: 3000,
  });
  try {
    const client = await LineClient.connect(server.tcpPort);
    for (let i = 0; i < 4; i++) {
      assert.equal((await loginOn(client, `nobody${i}`, 'x')).code, 'bad_credentials');
    }
    const blocked = await loginOn(client, 'someone-else', 'x');
    assert.equal(blocked.code, 'too_many_attempts');
    assert.match(blocked.message as string, /try again in [1-3] s/);
    console.log(`abuse: per-address throttle after 4 failures: "${blocked.message}"`);
    client.close();
  } finally {
    await server.close();
  }
});

test('abuse: the throttle tables stay at their cap however many usernames are guessed',
  async () => {
  const cap = 16;
  const server =
    await startTestServer({ maxThrottleEntries: cap, maxFailedLoginsPerAddress: 10_000 });
  const { failedLoginsByUser: byUser, failedLoginsByAddress: byAddress } = server.registry;
  try {
    const names = 60;
    let largest = 0;
    await Promise.all(Array.from({ length: 4 }, async (_, worker) => {
      const client = await LineClient.connect(server.tcpPort);
      for (let i = worker; i < names; i += 4) {
        assert.equal((await loginOn(client, `made-up-${i}`, 'x')).code, 'bad_credentials');
        largest = Math.max(largest, byUser.entries.size);
      }
      client.close();
    }));
    console.log(`abuse: ${names} distinct usernames failed; throttle table by user holds ` +
      `${byUser.entries.size} (largest seen ${largest}, cap ${cap}); by address holds ` +
      `${byAddress.entries.size}`);
    assert.equal(byUser.entries.size, cap);
    assert.ok(largest <= cap);
    assert.equal(byAddress.entries.size, 1);
    // The newest names are the ones remembered; the oldest were forgotten to make room.
    assert.ok(byUser.entries.has(`made-up-${names - 1}`));
    assert.ok(!byUser.entries.has('made-up-0'));
  } finally {
    await server.close();
  }
});

test('abuse: many idle connections are closed after idleMs; an active one stays', async () => {
  const idleMs = 400;
  const server = await startTestServer({ idleMs, maxConnectionsPerAddress: 200 });
  try {
    const count = 100;
    const started = performance.now();
    const idle = await Promise.all(
      Array.from({ length: count }, () => LineClient.connect(server.tcpPort)));
    const active = await LineClient.connect(server.tcpPort);
    const closedAfter: number[] = [];
    for (const client of idle) {
      client.socket.on('close', () => closedAfter.push(milliseconds(started)));
    }
    await sleep(idleMs / 2);
    assert.equal(idle.filter((client) => client.closed).length, 0, 'none closed before idleMs');
    // The active client talks every 150 ms for a while, well past idleMs, with a live token: a
    // request refused for its token is not activity (issue 17).
    const token = openSession(server.registry, 'keeper', '127.0.0.1', 7000).token;
    while (performance.now() - started < idleMs * 3) {
      assert.equal((await active.request({ type: 'list', token })).type, 'online');
      await sleep(150);
    }
    await waitUntil(() => idle.every((client) => client.closed), idleMs + 5000,
      'every idle connection to close');
    console.log(`abuse: ${count} idle connections closed by an idleMs of ${idleMs}: ` +
      `${summary(closedAfter)} after connecting; active one still open`);
    assert.ok(Math.min(...closedAfter) >= idleMs - 50, 'none closed before idleMs');
    assert.equal(active.closed, false);
    assert.equal(server.registry.connections.size, 1);
    active.close();
  } finally {
    await server.close();
  }
});

test('abuse: a slow dribbler that never finishes its line is closed', async () => {
  const idleMs = 400;
  const server = await startTestServer({ idleMs });
  try {
    const dribbler = await LineClient.connect(server.tcpPort);
    const started = performance.now();
    let bytes = 0;
    // One byte every 100 ms: never silent long enough for the idle timer, never a whole line.
    while (!dribbler.closed && performance.now() - started < 5000) {
      dribbler.write('{');
      bytes++;
      await sleep(100);
    }
    const lifetime = milliseconds(started);
    console.log(`abuse: dribbler sent ${bytes} bytes, one per 100 ms, and was closed after ` +
      `${lifetime} ms (idleMs ${idleMs})`);
    assert.ok(dribbler.closed, 'the dribbler was closed');
    assert.ok(lifetime >= idleMs, 'it was not closed for silence (it never was silent for idleMs)');
    await assert.rejects(dribbler.readLine(100), 'it never got an answer');
  } finally {
    await server.close();
  }
});

test('abuse: over maxConnections a newcomer gets one too_many_connections line; existing ones ' +
  'keep working', async () => {
  const server = await startTestServer({ maxConnections: 5, maxConnectionsPerAddress: 5 });
  try {
    const existing = await Promise.all(
      Array.from({ length: 5 }, () => LineClient.connect(server.tcpPort)));
    for (const client of existing) assert.equal(await listCode(client), 'not_logged_in');
    const refused = await LineClient.connect(server.tcpPort);
    const line = JSON.parse(await refused.readLine());
    assert.equal(line.type, 'error');
    assert.equal(line.code, 'too_many_connections');
    assert.match(line.message, /5 connections/);
    await refused.waitClosed(4000);
    console.log(`abuse: 6th connection over a cap of 5 was told ${JSON.stringify(line.message)} ` +
      'and closed');
    // The five are unaffected.
    for (const client of existing) assert.equal(await listCode(client), 'not_logged_in');
    // When one leaves, a newcomer is let in.
    existing[0].close();
    await waitUntil(() => server.registry.connections.size === 4, 2000,
      'the server to count the leaver');
    const newcomer = await LineClient.connect(server.tcpPort);
    assert.equal(await listCode(newcomer), 'not_logged_in');
    newcomer.close();
    for (const client of existing) client.close();
  } finally {
    await server.close();
  }
});

/** Sends junk datagrams from a separate process for `ms` milliseconds, then prints a summary. */
const FLOOD_CODE = `
import dgram from 'node:dgram';
import { Buffer } from 'node:buffer';
import process from 'node:process';
const port = Number(process.env.FLOOD_PORT);
const ms = Number(process.env.FLOOD_MS);
const payloads = [Buffer.alloc(1400, 120), Buffer.from('{"type":'), Buffer.from('{"type":"boom"}'),
  Buffer.from('{"type":"hello","username":"ghost","token":"forged"}'),
  Buffer.from([0xff, 0xfe, 0])];
const socket = dgram.createSocket('udp4');
let sent = 0;
let replies = 0;
socket.on('message', () => replies++);
socket.bind(0, '127.0.0.1', async () => {
  console.log('flooding');
  const end = Date.now() + ms;
  while (Date.now() < end && sent < 500000) {
    await new Promise((resolve) => {
      let left = 32;
      for (let i = 0; i < 32; i++) {
        socket.send(payloads[(sent + i) % payloads.length], port, '127.0.0.1', () => {
          if (--left === 0) resolve();
        });
      }
    });
    sent += 32;
  }
  setTimeout(() => {
    console.log('flood ' + JSON.stringify({ sent, replies }));
    socket.close();
  }, 300);
});
`;

test('abuse: a UDP flood from another process does not starve TCP requests', async () => {
  const token = await registerAndLogin(main.tcpPort, 'flood-watcher', 'pw');
  const flood = spawnEval(FLOOD_CODE, { FLOOD_PORT: String(main.udpPort), FLOOD_MS: '2500' });
  try {
    await flood.waitFor('flooding', 15_000);
    const client = await LineClient.connect(main.tcpPort);
    const latencies: number[] = [];
    while (flood.exitCode === null && latencies.length < 2000) {
      const started = performance.now();
      const answer = await client.request({ type: 'list', token }, 3000);
      latencies.push(performance.now() - started);
      assert.equal(answer.type, 'online');
      await sleep(20);
    }
    client.close();
    const [, figures] = await flood.waitFor(/flood (\{.*\})/, 10_000);
    const { sent, replies } = JSON.parse(figures) as { sent: number; replies: number };
    console.log(`abuse: UDP flood of ${sent} datagrams (${replies} forged hellos answered ` +
      'session_unknown) while ' +
      `${latencies.length} TCP list requests were answered: ${summary(latencies.map(Math.round))}`);
    assert.ok(sent > 1000, 'the flood really happened');
    assert.ok(latencies.length >= 5, 'TCP requests kept being answered during the flood');
  } finally {
    flood.kill('SIGKILL');
    await flood.exited;
  }
});

test('abuse: after all that, a normal client still registers, logs in and searches; memory ' +
  'stays bounded', async () => {
  const peerToken = await registerAndLogin(main.tcpPort, 'dave', 'pw', 7001);
  assert.ok(peerToken);
  const client = await LineClient.connect(main.tcpPort);
  const timed = async (message: Record<string, unknown>) => {
    const started = performance.now();
    const answer = await client.request(message);
    return { answer, ms: performance.now() - started };
  };
  const register = await timed({ type: 'register', username: 'carol', password: 'carol-pw' });
  const login =
    await timed({ type: 'login', username: 'carol', password: 'carol-pw', chatPort: 7002 });
  const search = await timed({ type: 'search', token: login.answer.token, username: 'dave' });
  const list = await timed({ type: 'list', token: login.answer.token });
  assert.equal(register.answer.type, 'registered');
  assert.equal(login.answer.type, 'logged_in');
  assert.equal(search.answer.type, 'found');
  assert.equal(search.answer.port, 7001);
  assert.deepEqual(list.answer.users, ['carol', 'dave', 'flood-watcher']);
  console.log(`abuse: normal client after the abuse — register ${register.ms.toFixed(1)} ms, ` +
    `login ${login.ms.toFixed(1)} ms, search ${search.ms.toFixed(1)} ms, ` +
    `list ${list.ms.toFixed(1)} ms (register and login include a ~50 ms scrypt)`);
  client.close();

  await waitUntil(() => main.registry.connections.size === 0, 3000,
    'every abusive connection to be gone');
  const memoryAfter = memoryMiB();
  const { connections, sessionsByToken, failedLoginsByUser, failedLoginsByAddress } = main.registry;
  console.log('abuse: test process memory (server in-process) ' +
    `before: rss ${memoryBefore.rss} MiB, heap ${memoryBefore.heapUsed} MiB; ` +
    `after: rss ${memoryAfter.rss} MiB, heap ${memoryAfter.heapUsed} MiB; ` +
    `server state: ${connections.size} connections, ${sessionsByToken.size} sessions, ` +
    `throttle tables ${failedLoginsByUser.entries.size}/${failedLoginsByAddress.entries.size}`);
  assert.ok(memoryAfter.heapUsed - memoryBefore.heapUsed < 200, 'heap grew by less than 200 MiB');
  assert.ok(memoryAfter.rss - memoryBefore.rss < 400, 'rss grew by less than 400 MiB');
});

// ---------------------------------------------------------------------------------------------
// Storage that fails while the server runs
// ---------------------------------------------------------------------------------------------

/** A working in-memory store with a switch: while `broken`, every method rejects, as a driver
 * does when its database has gone away. (This tests the server's handling, not MongoDB.) */
function breakableStore(): UserStore & { broken: boolean; damaged: boolean } {
  const inner = createMemoryUserStore();
  const failure = () => Promise.reject(new Error('connection to the database was lost'));
  const store = {
    broken: false,
    /** While set, findUser returns a record whose hash has the wrong length. */
    damaged: false,
    description: 'breakable test store',
    storage: 'memory' as const,
    addUser: (user: Parameters<UserStore['addUser']>[0]) =>
      (store.broken ? failure() : inner.addUser(user)),
    findUser: async (name: string) => {
      if (store.broken) return failure();
      const user = await inner.findUser(name);
      return user && store.damaged ? { ...user, passwordHash: 'abcd' } : user;
    },
    nameInUse: (name: string) => (store.broken ? failure() : inner.nameInUse(name)),
    close: () => inner.close(),
  };
  return store;
}

test('abuse: a store that rejects → register/login answer storage_unavailable; search, list ' +
  'and presence keep working', async () => {
  const store = breakableStore();
  const server = await startTestServer({ store, heartbeatMs: 100, timeoutMs: 1500 });
  try {
    const aliceToken = await registerAndLogin(server.tcpPort, 'alice', 'pw', 7001);
    const bobToken = await registerAndLogin(server.tcpPort, 'bob', 'pw', 7002);
    await registerAndLogin(server.tcpPort, 'silent', 'pw', 7003);
    const client = await LineClient.connect(server.tcpPort);
    store.broken = true;

    const register = () => client.request({ type: 'register', username: 'carol', password: 'pw' });
    const registered = await register();
    const login = await loginOn(client, 'carol', 'pw', 7004);
    assert.equal(registered.code, 'storage_unavailable');
    assert.equal(login.code, 'storage_unavailable');
    assert.match(registered.message as string, /storage/);
    assert.ok(server.logLines.some((line) => / storage_error during=register /.test(line)),
      'the failure is logged');

    // Presence: alice and bob say hello; "silent" does not, and is swept as usual.
    const hello = (username: string, token: string) =>
      void sendDatagram(server.udpPort, JSON.stringify({ type: 'hello', username, token }));
    const heartbeats = setInterval(() => {
      hello('alice', aliceToken);
      hello('bob', bobToken);
    }, 100);
    try {
      await waitUntil(() => !server.registry.sessionsByName.has('silent'), 5000,
        'the silent user to be swept');
      await sleep(1700); // longer than timeoutMs: only the hellos keep alice and bob online
      assert.deepEqual(await client.request({ type: 'list', token: aliceToken }),
        { type: 'online', users: ['alice', 'bob'], total: 2 });
      const found = await client.request({ type: 'search', token: aliceToken, username: 'bob' });
      assert.equal(found.type, 'found');
      assert.equal(found.port, 7002);
      assert.equal((await client.request({ type: 'logout', token: bobToken })).type, 'logged_out');
    } finally {
      clearInterval(heartbeats);
    }

    // A damaged record (a hash of the wrong length) is a storage failure too, not a crash.
    store.broken = false;
    store.damaged = true;
    const damaged = await loginOn(client, 'bob', 'pw', 7002);
    assert.equal(damaged.code, 'storage_unavailable');

    // When storage comes back, so do register and login: the server kept running throughout.
    store.damaged = false;
    assert.equal((await register()).type, 'registered');
    assert.equal((await loginOn(client, 'carol', 'pw', 7004)).type, 'logged_in');
    console.log('abuse: storage down → register/login storage_unavailable; list, search, ' +
      'presence, logout worked; storage back → register/login worked');
    client.close();
  } finally {
    await server.close();
  }
});
