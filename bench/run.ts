/**
 * bench/run.ts — `npm run bench`: how far the registry and the chat path are from the machine's
 * limit, measured against bare baselines in the same run.
 *
 *   npm run bench                          every figure at full size (about a minute and a half)
 *   npm run bench -- --quick               every figure at small sizes, in seconds (the test
 *                                          uses it)
 *   npm run bench -- --markdown out.md     also write the table as Markdown, for the README
 *   npm run bench -- --svg chart.svg       where to draw the memory and sweep chart
 *   npm run bench -- --only 1,4            only some figures
 *
 * Every figure is measured next to a baseline that does the least possible work of the same kind
 * (a bare UDP receiver, an echo server, a bare Map, raw sockets…), so the ratio holds even when
 * other programs share the machine and slow both down.
 *
 * Layout:
 *   - command line
 *   - the figures, in order (one file each: heartbeat, memory, requests, login-storm, chat,
 *     startup)
 *   - the machine
 *   - the table, as text and as Markdown
 *   - main
 */

import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { memoryAndSweepChart } from './chart.ts';
import { runChat } from './chat.ts';
import type { BenchConfig, Row } from './common.ts';
import { runHeartbeat } from './heartbeat.ts';
import { runLoginStorm } from './login-storm.ts';
import { runMemoryAndSweep } from './memory.ts';
import type { SizePoint } from './memory.ts';
import { runRequests } from './requests.ts';
import { runStartup } from './startup.ts';

// ============================================================================================
// Command line
// ============================================================================================

const USAGE = `Usage: npm run bench -- [options]

Measures the registry and the chat path against bare baselines, and prints one table.

Options:
  --quick            small sizes, short runs: checks that every figure works, in seconds
  --markdown FILE    also write the table (and the machine it ran on) as Markdown
  --svg FILE         where to draw the memory and sweep chart
                     (default: bench/performance.svg for a full run, none with --quick)
  --only LIST        only these figures, e.g. --only 1,4
  -h, --help         show this help`;

/** Where a full run draws its chart unless told otherwise; the README shows this file. */
const DEFAULT_SVG = fileURLToPath(new URL('./performance.svg', import.meta.url));

// ============================================================================================
// The figures, in order
// ============================================================================================
//
// Each returns its rows; figures 2 and 3 (memory.ts) also return the points of the chart.

type Figure = { numbers: number[]; name: string; run: (config: BenchConfig) => Promise<Row[]> };

/** Filled in by figures 2 and 3 when they run. */
let chartPoints: SizePoint[] | undefined;

const FIGURES: Figure[] = [
  { numbers: [1], name: 'heartbeat cost', run: runHeartbeat },
  {
    numbers: [2, 3],
    name: 'sweep and memory',
    run: async (config) => {
      const { rows, points } = await runMemoryAndSweep(config);
      chartPoints = points;
      return rows;
    },
  },
  { numbers: [4], name: 'requests', run: runRequests },
  { numbers: [5], name: 'login storm', run: runLoginStorm },
  { numbers: [6], name: 'chat path', run: runChat },
  { numbers: [7], name: 'start-up', run: runStartup },
];

// ============================================================================================
// The machine
// ============================================================================================

/** One line saying what the numbers were measured on. */
function describeMachine(): string {
  const cpus = os.cpus();
  const denoPath = fileURLToPath(new URL('../node_modules/.bin/deno', import.meta.url));
  const deno = spawnSync(denoPath, ['--version'], { encoding: 'utf8' });
  const denoVersion = deno.status === 0
    ? deno.stdout.split('\n')[0].replace(/^deno /, '').split(' ')[0]
    : 'not found';
  return `${cpus.length} × ${cpus[0]?.model.trim() ?? 'unknown CPU'}, ` +
    `${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, ` +
    `${os.type()} ${os.release()}, Node ${process.version}, Deno ${denoVersion}`;
}

// ============================================================================================
// The table, as text and as Markdown
// ============================================================================================

const HEADINGS: Row = {
  figure: 'figure',
  ours: 'ours',
  baseline: 'baseline (same run)',
  ratio: 'ratio',
  target: 'target',
  met: '—',
};
const COLUMNS: Array<keyof Row> = ['figure', 'ours', 'baseline', 'ratio', 'target', 'met'];

/** Columns padded to line up in a terminal. */
function textTable(rows: Row[]): string {
  const headings = { ...HEADINGS, met: 'met?' } as Record<keyof Row, string>;
  const all = [headings, ...rows] as Array<Record<keyof Row, string>>;
  const widths = COLUMNS.map((column) => Math.max(...all.map((row) => row[column].length)));
  const line = (row: Record<keyof Row, string>) =>
    COLUMNS.map((column, i) => row[column].padEnd(widths[i])).join('  ').trimEnd();
  return [
    line(headings),
    widths.map((width) => '─'.repeat(width)).join('  '),
    ...rows.map((row) => line(row as Record<keyof Row, string>)),
  ].join('\n');
}

/** A Markdown table, with the machine and the command above it. */
function markdownTable(rows: Row[], machine: string, command: string, seconds: number): string {
  const escape = (cell: string) => cell.replace(/\|/g, '\\|');
  const lines = [
    `Measured on ${machine}, with \`${command}\` (${seconds.toFixed(0)} s).`,
    '',
    '| figure | ours | baseline (same run) | ratio | target | met? |',
    '|---|---|---|---|---|---|',
    ...rows.map((row) => `| ${COLUMNS.map((column) => escape(row[column])).join(' | ')} |`),
  ];
  return lines.join('\n') + '\n';
}

// ============================================================================================
// Main
// ============================================================================================

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean' },
      markdown: { type: 'string' },
      svg: { type: 'string' },
      only: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const config: BenchConfig = { quick: values.quick ?? false };
  const only = values.only?.split(',').map(Number);
  const figures = FIGURES.filter((figure) =>
    only === undefined || figure.numbers.some((number) => only.includes(number)));

  const machine = describeMachine();
  const quickNote = config.quick ? ' (quick: small sizes, numbers are not meaningful)' : '';
  console.log(`p2p-chat benchmarks${quickNote}`);
  console.log(`machine: ${machine}\n`);

  // Progress goes to stderr, so stdout holds only the results.
  const started = performance.now();
  const rows: Row[] = [];
  for (const figure of figures) {
    const figureStarted = performance.now();
    process.stderr.write(`figure ${figure.numbers.join(' and ')}: ${figure.name}… `);
    rows.push(...(await figure.run(config)));
    process.stderr.write(`${((performance.now() - figureStarted) / 1000).toFixed(1)} s\n`);
  }
  const seconds = (performance.now() - started) / 1000;

  console.log(textTable(rows));
  console.log(`\n${rows.length} rows in ${seconds.toFixed(1)} s`);

  const command = `npm run bench${config.quick ? ' -- --quick' : ''}`;
  if (values.markdown !== undefined) {
    writeFileSync(values.markdown, markdownTable(rows, machine, command, seconds));
    console.log(`table written to ${values.markdown}`);
  }
  const svgPath = values.svg ?? (config.quick ? undefined : DEFAULT_SVG);
  if (svgPath !== undefined && chartPoints !== undefined) {
    writeFileSync(svgPath, memoryAndSweepChart(chartPoints));
    console.log(`chart written to ${svgPath}`);
  }
}

await main();
