/**
 * bench/heartbeat.ts — figure 1: what one heartbeat costs the registry, and how many it can take.
 *
 * The generator (this process) sends `hello` datagrams for N logged-in sessions over loopback at
 * a fixed rate. The receiver runs in a child (target.ts), so its CPU time is its own:
 *
 *   this process ── hello, hello, … (N tokens, round robin, R per second) ──▶ child: registry
 *                                                                          or child: bare counter
 *
 * Part 1, cost: R is the rate N real clients would send (one hello per heartbeatMs each), well
 * below saturation. CPU time used by the child during the run ÷ datagrams it received = CPU per
 * hello, for the registry and for a bare node:dgram socket that only counts them. Both children
 * run side by side and the load alternates between them in short rounds.
 *
 * Part 2, capacity: R doubles step by step. At each step the registry is started with a heartbeat
 * of N ÷ R (each session is heard that often) and the usual timeout of five heartbeats, and the
 * load lasts two timeouts. If the registry falls behind — datagrams pile up in the kernel buffer
 * and are dropped, or the event loop lags — live sessions go unheard and are swept. The highest
 * step where all N sessions survive is the figure.
 *
 * Layout:
 *   - sizes and rates
 *   - the generator
 *   - part 1: CPU per hello
 *   - part 2: highest safe rate
 */

import { Buffer } from 'node:buffer';
import dgram from 'node:dgram';
import { performance } from 'node:perf_hooks';
import type { BenchConfig, Row, Target } from './common.ts';
import {
  formatCount, formatMicros, formatRatio, formatRate, sleep, startTarget, udpDrops,
} from './common.ts';

// ============================================================================================
// Sizes and rates
// ============================================================================================

/** Heartbeat interval the cost is measured at: the protocol's default, 2 s. */
const HEARTBEAT_MS = 2000;
/** A session is swept after this many heartbeat intervals of silence (10 s ÷ 2 s by default). */
const TIMEOUT_IN_HEARTBEATS = 5;

const FULL = {
  sessions: 10_000, costSeconds: 1, costRounds: 4, rates: [20_000, 40_000, 80_000, 160_000],
};
const QUICK = { sessions: 1_000, costSeconds: 0.3, costRounds: 1, rates: [20_000] };

/** Issue 4's target: at most this many times the bare receiver's CPU per datagram. */
const COST_TARGET_RATIO = 1.5;

// ============================================================================================
// The generator
// ============================================================================================

/** One ready-made hello datagram per session, so the generator does no JSON work while sending. */
function helloDatagrams(tokens: string[], prefix: string): Buffer[] {
  return tokens.map((token, i) =>
    Buffer.from(JSON.stringify({ type: 'hello', username: `${prefix}${i}`, token })));
}

/** Sends `datagrams` round robin to 127.0.0.1:port at `perSecond` for `seconds`. Every
 * millisecond or so it sends as many as the clock says are due, so the rate holds even when the
 * timer fires late. If we fall far behind (a busy machine) we skip the backlog instead of sending
 * it in one burst; the rate actually achieved, which we return with the count sent, tells. */
async function sendAtRate(
  port: number,
  datagrams: Buffer[],
  perSecond: number,
  seconds: number,
): Promise<{ sent: number; achievedPerSecond: number }> {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()));
  const total = Math.round(perSecond * seconds);
  const maxBurst = Math.max(1, Math.round(perSecond / 100)); // at most 10 ms worth at once
  let sent = 0;
  let skipped = 0;
  let next = 0;
  const started = performance.now();
  while (sent + skipped < total && performance.now() - started < seconds * 1000 + 1000) {
    const due = Math.min(total, Math.floor(((performance.now() - started) / 1000) * perSecond));
    let burst = due - sent - skipped;
    if (burst > maxBurst) {
      skipped += burst - maxBurst;
      burst = maxBurst;
    }
    for (let i = 0; i < burst; i += 1) {
      socket.send(datagrams[next], port, '127.0.0.1');
      next = (next + 1) % datagrams.length;
    }
    sent += Math.max(0, burst);
    await sleep(1);
  }
  const elapsedSeconds = (performance.now() - started) / 1000;
  await sleep(50); // let the last sends leave before closing
  socket.close();
  return { sent, achievedPerSecond: sent / elapsedSeconds };
}

// ============================================================================================
// Part 1: CPU per hello
// ============================================================================================

/** CPU time a receiver used and datagrams it received, over one or more runs. */
type Cost = { cpuMicros: number; received: number };

/** Runs the load once against the receiver in `target`, listening on `port`. Loopback loses
 * nothing except what the kernel drops when a socket's receive buffer is full, and Linux counts
 * those per socket, so: received = sent − drops. */
async function measureCost(
  target: Target,
  port: number,
  datagrams: Buffer[],
  perSecond: number,
  seconds: number,
): Promise<Cost> {
  const dropsBefore = udpDrops(port);
  const cpuBefore = await target.cpuMicros();
  const { sent } = await sendAtRate(port, datagrams, perSecond, seconds);
  await sleep(100); // let the receiver finish what is still in its buffer
  const cpuAfter = await target.cpuMicros();
  return { cpuMicros: cpuAfter - cpuBefore, received: sent - (udpDrops(port) - dropsBefore) };
}

async function runCost(config: BenchConfig): Promise<Row> {
  const { sessions, costSeconds, costRounds } = config.quick ? QUICK : FULL;
  const perSecond = sessions / (HEARTBEAT_MS / 1000); // what N real clients send

  // Our registry, with N sessions opened directly, and the bare receiver, side by side.
  const registryTarget = await startTarget();
  const registry = await registryTarget.ask('start-registry', {
    heartbeatMs: HEARTBEAT_MS,
    timeoutMs: HEARTBEAT_MS * TIMEOUT_IN_HEARTBEATS,
  });
  const registryPort = registry.udpPort as number;
  const { tokens } = await registryTarget.ask('open-sessions', { count: sessions, prefix: 'user' });
  const datagrams = helloDatagrams(tokens as string[], 'user');
  const counterTarget = await startTarget();
  const counterPort = (await counterTarget.ask('start-counter')).udpPort as number;

  // Warm up both first: the first few thousand hellos run in V8's interpreter, before the
  // optimising compiler has looked at the handler; a long-running server pays that only once.
  // Then alternate short rounds, so that a noisy neighbour slows both rather than one.
  await sendAtRate(registryPort, datagrams, perSecond, costSeconds / 2);
  await sendAtRate(counterPort, datagrams, perSecond, costSeconds / 2);
  const ours: Cost = { cpuMicros: 0, received: 0 };
  const bare: Cost = { cpuMicros: 0, received: 0 };
  for (let round = 0; round < costRounds; round += 1) {
    const oursThisRound =
      await measureCost(registryTarget, registryPort, datagrams, perSecond, costSeconds);
    ours.cpuMicros += oursThisRound.cpuMicros;
    ours.received += oursThisRound.received;
    const bareThisRound =
      await measureCost(counterTarget, counterPort, datagrams, perSecond, costSeconds);
    bare.cpuMicros += bareThisRound.cpuMicros;
    bare.received += bareThisRound.received;
  }
  await registryTarget.stop();
  await counterTarget.stop();

  const oursPerDatagram = ours.cpuMicros / ours.received;
  const barePerDatagram = bare.cpuMicros / bare.received;
  return {
    figure: `1. Heartbeat: CPU per hello, ${formatCount(sessions)} sessions at ` +
      formatRate(perSecond),
    ours: formatMicros(oursPerDatagram),
    baseline: `${formatMicros(barePerDatagram)} (bare dgram counter)`,
    ratio: formatRatio(oursPerDatagram, barePerDatagram),
    target: `≤ ${COST_TARGET_RATIO}×`,
    met: oursPerDatagram <= COST_TARGET_RATIO * barePerDatagram ? 'yes' : 'no',
  };
}

// ============================================================================================
// Part 2: highest safe rate
// ============================================================================================

type Step = {
  perSecond: number;
  seconds: number;
  achievedPerSecond: number;
  swept: number;
  dropped: number;
  sent: number;
};

/** One step: a fresh registry whose timeout is five of the intervals at which each session is
 * heard at this rate, under load for two timeouts. */
async function runStep(target: Target, sessions: number, perSecond: number): Promise<Step> {
  const heartbeatMs = Math.round((sessions / perSecond) * 1000);
  const timeoutMs = heartbeatMs * TIMEOUT_IN_HEARTBEATS;
  const registry = await target.ask('start-registry', { heartbeatMs, timeoutMs });
  const port = registry.udpPort as number;
  const { tokens } = await target.ask('open-sessions', { count: sessions, prefix: 'user' });
  const datagrams = helloDatagrams(tokens as string[], 'user');
  const dropsBefore = udpDrops(port);
  const seconds = Math.max(0.5, (2 * timeoutMs) / 1000);
  const { sent, achievedPerSecond } = await sendAtRate(port, datagrams, perSecond, seconds);
  const { count } = await target.ask('session-count');
  return {
    perSecond,
    seconds,
    achievedPerSecond,
    swept: sessions - (count as number),
    dropped: udpDrops(port) - dropsBefore,
    sent,
  };
}

async function runCapacity(config: BenchConfig): Promise<Row> {
  const { sessions, rates } = config.quick ? QUICK : FULL;
  const target = await startTarget();
  let highestSafe: Step | undefined;
  let firstUnsafe: Step | undefined;
  for (const perSecond of rates) {
    const step = await runStep(target, sessions, perSecond);
    if (step.swept > 0) {
      firstUnsafe = step;
      break;
    }
    highestSafe = step;
  }
  await target.stop();

  const droppedShare = (step: { dropped: number; sent: number }) =>
    `${((100 * step.dropped) / step.sent).toFixed(1)} % dropped`;
  let ours: string;
  let baseline = '—';
  if (highestSafe === undefined) {
    ours = `< ${formatRate(rates[0])}`;
  } else {
    // The baseline: the bare receiver at the same rate, for as long. It cannot "sweep" anyone, but
    // how much the kernel drops for it shows how much of our loss the machine causes anyway.
    const counterTarget = await startTarget();
    const counterPort = (await counterTarget.ask('start-counter')).udpPort as number;
    const fakeTokens = Array.from({ length: sessions }, () => 'x'.repeat(43));
    const datagrams = helloDatagrams(fakeTokens, 'user');
    const dropsBefore = udpDrops(counterPort);
    const { sent } =
      await sendAtRate(counterPort, datagrams, highestSafe.perSecond, highestSafe.seconds);
    await sleep(100);
    const dropped = udpDrops(counterPort) - dropsBefore;
    baseline = `bare counter at that rate: ${droppedShare({ dropped, sent })}`;
    await counterTarget.stop();
    // If the generator could not reach the offered rate, the limit is ours, not the registry's.
    const generatorBound = highestSafe.achievedPerSecond < 0.9 * highestSafe.perSecond;
    ours = `${formatRate(highestSafe.achievedPerSecond)} (${droppedShare(highestSafe)}` +
      `${generatorBound ? '; the generator was the limit' : ''})`;
    ours += firstUnsafe === undefined
      ? '; highest step tried'
      : `; at ${formatRate(firstUnsafe.achievedPerSecond)} ${firstUnsafe.swept} swept`;
  }
  return {
    figure: '1. Heartbeat: highest rate with no live session swept ' +
      `(${formatCount(sessions)} sessions)`,
    ours,
    baseline,
    ratio: '—',
    target: '—',
    met: '—',
  };
}

// ============================================================================================
// Both parts
// ============================================================================================

export async function runHeartbeat(config: BenchConfig): Promise<Row[]> {
  return [await runCost(config), await runCapacity(config)];
}
