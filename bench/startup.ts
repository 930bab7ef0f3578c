/**
 * bench/startup.ts — figure 7: how long from starting the server until it is listening.
 *
 * We start server.ts as a person would — under Node with tsx, and under Deno — and time from
 * spawn() to the moment its "start" line (printed once both ports are bound) reaches us. The
 * baseline is the same runtime running a few lines of plain JavaScript that bind a TCP and a UDP
 * port and print "start": what start-up costs before any of our code or TypeScript is involved.
 *
 * Layout:
 *   - what is started
 *   - timing one start
 *   - the rows
 */

import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import type { BenchConfig, Row } from './common.ts';
import { ROOT, formatMs, formatRatio, median } from './common.ts';

// ============================================================================================
// What is started
// ============================================================================================

const SERVER_ARGS = ['--tcp-port', '0', '--udp-port', '0', '--host', '127.0.0.1'];
/** The Deno binary that the `deno` npm package installs. */
const DENO = fileURLToPath(new URL('../node_modules/.bin/deno', import.meta.url));
/** Binds a TCP and a UDP port, then prints "start". Written to run unchanged under `node -e` and
 * `deno eval`, hence the dynamic imports. */
const BARE_SCRIPT = `
Promise.all([import('node:net'), import('node:dgram')]).then(([net, dgram]) => {
  const tcp = net.createServer();
  tcp.listen(0, '127.0.0.1', () => {
    const udp = dgram.createSocket('udp4');
    udp.bind(0, '127.0.0.1', () => console.log('start'));
  });
});`;

type Command = { program: string; args: string[] };

const RUNTIMES: Array<{ name: string; ours: Command; bare: Command }> = [
  {
    name: 'Node + tsx',
    ours: { program: process.execPath, args: ['--import', 'tsx', 'server.ts', ...SERVER_ARGS] },
    bare: { program: process.execPath, args: ['-e', BARE_SCRIPT] },
  },
  {
    name: 'Deno',
    ours: { program: DENO, args: ['run', '-A', 'server.ts', ...SERVER_ARGS] },
    bare: { program: DENO, args: ['eval', BARE_SCRIPT] },
  },
];

const FULL = { runs: 5 };
const QUICK = { runs: 1 };
/** A start that takes longer than this is reported as failed rather than waited for. */
const GIVE_UP_MS = 30_000;

// ============================================================================================
// Timing one start
// ============================================================================================

/** Milliseconds from spawn() until a line containing "start" appears on stdout. The process is
 * then stopped with SIGTERM and we wait for it to exit, so runs do not overlap. */
function timeStart(command: Command): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(command.program, command.args, {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, NO_COLOR: '1' },
    });
    let stdout = '';
    let stderr = '';
    let elapsedMs: number | undefined;
    const timer = setTimeout(() => child.kill('SIGKILL'), GIVE_UP_MS);
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (text: string) => (stderr += text));
    child.stdout.on('data', (text: string) => {
      stdout += text;
      if (elapsedMs === undefined && /\bstart\b/.test(stdout)) {
        elapsedMs = performance.now() - started;
        child.kill('SIGTERM');
      }
    });
    child.on('exit', () => {
      clearTimeout(timer);
      if (elapsedMs !== undefined) resolve(elapsedMs);
      else {
        reject(new Error(`${command.program} ${command.args[0]} never printed "start": ` +
          stderr.trim().slice(-500)));
      }
    });
  });
}

/** Median of `runs` starts, after one unmeasured start that fills the disk cache (and Deno's
 * module cache). */
async function medianStart(command: Command, runs: number): Promise<number> {
  await timeStart(command);
  const times: number[] = [];
  for (let run = 0; run < runs; run += 1) times.push(await timeStart(command));
  return median(times);
}

// ============================================================================================
// The rows
// ============================================================================================

export async function runStartup(config: BenchConfig): Promise<Row[]> {
  const { runs } = config.quick ? QUICK : FULL;
  const rows: Row[] = [];
  for (const runtime of RUNTIMES) {
    const ours = await medianStart(runtime.ours, runs);
    const bare = await medianStart(runtime.bare, runs);
    rows.push({
      figure: `7. Start-up until listening, ${runtime.name}`,
      ours: formatMs(ours),
      baseline: `${formatMs(bare)} (bare script binding both ports)`,
      ratio: formatRatio(ours, bare),
      target: '—',
      met: '—',
    });
  }
  return rows;
}
