/**
 * bench/login-storm.ts — figure 5: logins, which hash a password with scrypt, while others search.
 *
 * scrypt is deliberately slow (tens of milliseconds) and the registry runs it with the async
 * crypto.scrypt, which hands the work to libuv's thread pool, so the event loop stays free to
 * answer everyone else. This figure checks that: a prober sends searches one at a time, first on a
 * quiet registry, then while several connections log in and out as fast as they can.
 *
 *   this process ── login, logout, login, … (S connections) ──▶ child: registry
 *                ── search, search, …       (1 connection)  ──▶     (scrypt on the thread pool)
 *
 * Baselines: for search, the same prober on the quiet registry; for logins, bare crypto.scrypt
 * calls with as many in flight, in this process, with the registry's parameters.
 *
 * Layout:
 *   - sizes
 *   - a line-at-a-time client for the storm
 *   - the storm, the prober, and the rows
 */

import { Buffer } from 'node:buffer';
import { randomBytes, scrypt } from 'node:crypto';
import type net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { BenchConfig, Row } from './common.ts';
import { connect, formatMs, formatRate, formatRatio, percentile, startTarget } from './common.ts';
import { runLoad } from './requests.ts';

// ============================================================================================
// Sizes
// ============================================================================================

const FULL = { stormConnections: 8, seconds: 3 };
const QUICK = { stormConnections: 2, seconds: 0.5 };
/** Accounts made for the storm; each login uses a fresh one, so nobody is "already online". The
 * loop stops if it runs out, which bounds the storm in count as well as in time. */
const STORM_ACCOUNTS = 5000;
const PASSWORD = 'correct horse battery staple';
/** The registry's scrypt key length (server.ts: SCRYPT_KEY_BYTES); other parameters are Node's
 * defaults, as in the registry. */
const SCRYPT_KEY_BYTES = 64;
/** Issue 4's target for search p99 during the storm. */
const P99_TARGET_MS = 5;

// ============================================================================================
// A line-at-a-time client for the storm
// ============================================================================================

/** Sends one request line and resolves with the parsed answer line. One request in flight. If
 * the connection closes (or is silent for 10 s, and so is closed) the answer is
 * { type: 'closed' }. */
function requester(socket: net.Socket): (request: object) => Promise<Record<string, unknown>> {
  let buffered = '';
  let waiting: ((line: string) => void) | undefined;
  socket.setEncoding('utf8');
  socket.setTimeout(10_000, () => socket.destroy());
  socket.on('close', () => waiting?.('{"type":"closed"}'));
  socket.on('data', (text: string) => {
    buffered += text;
    const newline = buffered.indexOf('\n');
    if (newline !== -1 && waiting !== undefined) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      const wake = waiting;
      waiting = undefined;
      wake(line);
    }
  });
  return (request) => new Promise((resolve) => {
    if (socket.destroyed) return resolve({ type: 'closed' });
    waiting = (line) => resolve(JSON.parse(line));
    socket.write(JSON.stringify(request) + '\n');
  });
}

// ============================================================================================
// The storm, the prober, and the rows
// ============================================================================================

/** S connections logging in and out until `stop()` says so; returns every login's latency. */
async function loginStorm(
  port: number,
  connections: number,
  stop: () => boolean,
): Promise<{ latenciesMs: number[]; failures: number }> {
  const latenciesMs: number[] = [];
  let failures = 0;
  let nextAccount = 0;
  const loops: Promise<void>[] = [];
  for (let i = 0; i < connections; i += 1) {
    const socket = await connect(port);
    const request = requester(socket);
    loops.push((async () => {
      while (!stop() && nextAccount < STORM_ACCOUNTS) {
        const username = `storm${nextAccount++}`;
        const started = performance.now();
        const answer = await request({
          type: 'login', username, password: PASSWORD, chatPort: 7000,
        });
        latenciesMs.push(performance.now() - started);
        if (answer.type === 'closed') break;
        if (answer.type !== 'logged_in') failures += 1;
        else await request({ type: 'logout', token: answer.token });
      }
      socket.destroy();
    })());
  }
  await Promise.all(loops);
  return { latenciesMs, failures };
}

/** Bare scrypt with `inFlight` calls at a time for `seconds`: hashes per second. */
async function bareScryptRate(inFlight: number, seconds: number): Promise<number> {
  const salt = randomBytes(16);
  let hashes = 0;
  const started = performance.now();
  const loop = async () => {
    while (performance.now() - started < seconds * 1000) {
      await new Promise<void>((resolve, reject) =>
        scrypt(PASSWORD, salt, SCRYPT_KEY_BYTES, (error) => (error ? reject(error) : resolve())));
      hashes += 1;
    }
  };
  await Promise.all(Array.from({ length: inFlight }, loop));
  return hashes / ((performance.now() - started) / 1000);
}

export async function runLoginStorm(config: BenchConfig): Promise<Row[]> {
  const { stormConnections, seconds } = config.quick ? QUICK : FULL;
  const target = await startTarget();
  const registry = await target.ask('start-registry');
  const port = registry.tcpPort as number;
  await target.ask('add-users', { count: STORM_ACCOUNTS, prefix: 'storm', password: PASSWORD });
  const { tokens } = await target.ask('open-sessions', { count: 1, prefix: 'prober' });
  await target.ask('open-sessions', { count: 1, prefix: 'callee' });
  const search = { type: 'search', token: (tokens as string[])[0], username: 'callee0' };
  const searchLine = Buffer.from(JSON.stringify(search) + '\n');

  // Quiet: the prober alone (after a short warm-up).
  await runLoad(port, 1, 1, seconds / 4, () => searchLine);
  const quiet = await runLoad(port, 1, 1, seconds, () => searchLine);

  // Storm: the same prober while S connections log in and out.
  let stormOver = false;
  const stormStarted = performance.now();
  const storm = loginStorm(port, stormConnections, () => stormOver);
  const during = await runLoad(port, 1, 1, seconds, () => searchLine);
  stormOver = true;
  const { latenciesMs: loginLatencies, failures } = await storm;
  const stormSeconds = (performance.now() - stormStarted) / 1000;
  await target.stop();

  const bareRate = await bareScryptRate(stormConnections, Math.min(seconds, 2));
  const loginRate = loginLatencies.length / stormSeconds;
  const quietP99 = percentile(quiet.latenciesMs, 0.99);
  const stormP99 = percentile(during.latenciesMs, 0.99);
  return [
    {
      figure: `5. search p99 during a login storm (${stormConnections} logins in flight)`,
      ours: `p99 ${formatMs(stormP99)}, p50 ${formatMs(percentile(during.latenciesMs, 0.5))}`,
      baseline: `p99 ${formatMs(quietP99)} (same prober, no storm)`,
      ratio: formatRatio(stormP99, quietP99),
      target: `< ${P99_TARGET_MS} ms`,
      met: stormP99 < P99_TARGET_MS ? 'yes' : 'no',
    },
    {
      figure: `5. Login storm: logins per second (${stormConnections} in flight)`,
      ours: `${formatRate(loginRate)}, p50 ${formatMs(percentile(loginLatencies, 0.5))}, ` +
        `p99 ${formatMs(percentile(loginLatencies, 0.99))}` +
        (failures > 0 ? `, ${failures} failed` : ''),
      baseline: `${formatRate(bareRate)} (bare scrypt, ${stormConnections} in flight)`,
      ratio: formatRatio(loginRate, bareRate),
      target: '—',
      met: '—',
    },
  ];
}
