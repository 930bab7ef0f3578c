/**
 * bench/memory.ts — figures 2 and 3: the sweeper's cost and the memory per online session.
 *
 * For each size (10 k, 100 k, 1 M sessions) a fresh child process makes that many sessions with
 * openSession() — no logins, no sockets per session — then reports its RSS and heap and times
 * sweeper passes (see measureRegistrySessions in target.ts). A second fresh child fills a bare
 * Map of token → name with as many entries: the least any registry must remember, our baseline.
 * One child per size and per kind, so no measurement inherits another's garbage.
 *
 * Layout:
 *   - sizes
 *   - measuring one size
 *   - the rows of the table (and the points of the chart)
 */

import type { BenchConfig, Row } from './common.ts';
import { formatCount, formatMB, formatMs, formatRatio, startTarget } from './common.ts';

// ============================================================================================
// Sizes
// ============================================================================================

const FULL_SIZES = [10_000, 100_000, 1_000_000];
const QUICK_SIZES = [1_000, 10_000];
/** Issue 4's memory target: a million sessions in at most this much RSS. */
const RSS_TARGET_BYTES = 400e6;
/** "Does not grow with N": we allow the largest size's pass to cost this many times the
 * smallest's before calling it growth, because passes this short are at the mercy of noise. */
const FLAT_TOLERANCE = 3;

// ============================================================================================
// Measuring one size
// ============================================================================================

/** Everything measured at one number of sessions; also the points run.ts puts on the chart. */
export type SizePoint = {
  sessions: number;
  /** RSS of the whole registry process with this many sessions. */
  rssBytes: number;
  /** Growth of RSS and of the JS heap per session. */
  rssPerSession: number;
  heapPerSession: number;
  /** The same for the bare Map baseline. */
  bareRssBytes: number;
  bareRssPerSession: number;
  /** Sweeper passes, in ms. */
  sweepBeforeHellosMs: number;
  sweepSteadyMs: number;
  fullScanMs: number;
  sweepOnePercentMs: number;
  bareDeleteOnePercentMs: number;
};

async function measureSize(sessions: number, timingMs: number): Promise<SizePoint> {
  const ours = await startTarget(['--expose-gc']);
  const registry = await ours.ask('measure-registry-sessions', { count: sessions, timingMs });
  await ours.stop();
  const bare = await startTarget(['--expose-gc']);
  const bareMap = await bare.ask('measure-bare-map', { count: sessions });
  await bare.stop();
  const n = (value: unknown) => value as number;
  return {
    sessions,
    rssBytes: n(registry.rssAfter),
    rssPerSession: (n(registry.rssAfter) - n(registry.rssBefore)) / sessions,
    heapPerSession: (n(registry.heapAfter) - n(registry.heapBefore)) / sessions,
    bareRssBytes: n(bareMap.rssAfter),
    bareRssPerSession: (n(bareMap.rssAfter) - n(bareMap.rssBefore)) / sessions,
    sweepBeforeHellosMs: n(registry.sweepBeforeHellosMs),
    sweepSteadyMs: n(registry.sweepSteadyMs),
    fullScanMs: n(registry.fullScanMs),
    sweepOnePercentMs: n(registry.sweepOnePercentMs),
    bareDeleteOnePercentMs: n(bareMap.deleteOnePercentMs),
  };
}

// ============================================================================================
// The rows of the table
// ============================================================================================

export async function runMemoryAndSweep(
  config: BenchConfig,
): Promise<{ rows: Row[]; points: SizePoint[] }> {
  const sizes = config.quick ? QUICK_SIZES : FULL_SIZES;
  const points: SizePoint[] = [];
  // A pass where nobody expires is far too short for the clock to time on its own, so it is
  // repeated for this many milliseconds (and at least 1000 times) and the mean is taken.
  const timingMs = config.quick ? 20 : 200;
  for (const sessions of sizes) points.push(await measureSize(sessions, timingMs));

  const rows: Row[] = [];
  const smallest = points[0];
  const largest = points[points.length - 1];

  // Figure 2: the sweeper. The no-expiry pass is shown against a naive pass that looks at every
  // session, which is what the last-heard order saves; "met" asks whether it stays flat in N.
  for (const point of points) {
    const flat = point.sweepSteadyMs <= FLAT_TOLERANCE * smallest.sweepSteadyMs;
    rows.push({
      figure: `2. Sweep pass, none expire, ${formatCount(point.sessions)} sessions`,
      ours: `${formatMs(point.sweepSteadyMs)} ` +
        `(before any hello: ${formatMs(point.sweepBeforeHellosMs)})`,
      baseline: `${formatMs(point.fullScanMs)} (scan every session)`,
      ratio: formatRatio(point.sweepSteadyMs, point.fullScanMs),
      target: `flat in N (≤ ${FLAT_TOLERANCE}× the ${formatCount(smallest.sessions)} pass)`,
      met: point === smallest ? '—' : flat ? 'yes' : 'no',
    });
  }
  rows.push({
    figure: `2. Sweep pass, 1 % expire, ${formatCount(largest.sessions)} sessions`,
    ours: formatMs(largest.sweepOnePercentMs),
    baseline: `${formatMs(largest.bareDeleteOnePercentMs)} (delete 1 % of a bare Map)`,
    ratio: formatRatio(largest.sweepOnePercentMs, largest.bareDeleteOnePercentMs),
    target: '—',
    met: '—',
  });

  // Figure 3: memory. Per-session growth at every size but the smallest (where the constant
  // cost of the process blurs it), and the absolute RSS target at the largest.
  for (const point of points.slice(config.quick ? 0 : 1)) {
    rows.push({
      figure: `3. Memory per session, ${formatCount(point.sessions)} sessions`,
      ours: `${point.rssPerSession.toFixed(0)} B RSS, ${point.heapPerSession.toFixed(0)} B heap`,
      baseline: `${point.bareRssPerSession.toFixed(0)} B RSS (bare Map token → name)`,
      ratio: formatRatio(point.rssPerSession, point.bareRssPerSession),
      target: '—',
      met: '—',
    });
  }
  rows.push({
    figure: `3. Process RSS, ${formatCount(largest.sessions)} sessions`,
    ours: formatMB(largest.rssBytes),
    baseline: `${formatMB(largest.bareRssBytes)} (bare Map)`,
    ratio: formatRatio(largest.rssBytes, largest.bareRssBytes),
    target: config.quick ? '≤ 400 MB at 1 M' : '≤ 400 MB',
    met: config.quick ? '—' : largest.rssBytes <= RSS_TARGET_BYTES ? 'yes' : 'no',
  });
  return { rows, points };
}
