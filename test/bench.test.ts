/**
 * test/bench.test.ts — the benchmarks still run.
 *
 * Benchmarks are not timed tests: their numbers depend on the machine and on whatever else it is
 * doing, so CI never asserts them. What CI can do is make sure the benchmark code does not rot:
 * this test runs `bench/run.ts --quick` (every figure, at small sizes) as a child process, exactly
 * as `npm run bench -- --quick` would, and checks that it finished, printed a row for every
 * figure, and wrote its Markdown table and SVG chart.
 *
 * The benchmarks are written for Node (they fork children with tsx's loader), so under Deno this
 * test is skipped, visibly.
 */

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import process from 'node:process';
import { test } from 'node:test';
import { ROOT, UNDER_DENO } from './helpers.ts';

/** The start of every row the quick run must print: each of issue 4's seven figures, and each
 * part of it. */
const EXPECTED_ROWS = [
  '1. Heartbeat: CPU per hello',
  '1. Heartbeat: highest rate with no live session swept',
  '2. Sweep pass, none expire',
  '2. Sweep pass, 1 % expire',
  '3. Memory per session',
  '3. Process RSS',
  '4. search, 1 conn, one at a time',
  '4. search, 1 conn, pipelined',
  '4. search, 10 conn, one at a time',
  '5. search p99 during a login storm',
  '5. Login storm: logins per second',
  '6. Chat round trip',
  '6. Chat messages per second',
  '7. Start-up until listening, Node + tsx',
  '7. Start-up until listening, Deno',
];

test('npm run bench -- --quick runs every figure and writes the table and the chart', {
  skip: UNDER_DENO ? 'the benchmarks run under Node (tsx) only' : false,
  timeout: 180_000,
}, async () => {
  const scratch = mkdtempSync(path.join(os.tmpdir(), 'p2p-chat-bench-'));
  const markdownFile = path.join(scratch, 'table.md');
  const svgFile = path.join(scratch, 'chart.svg');
  try {
    const args = ['--quick', '--markdown', markdownFile, '--svg', svgFile];
    const child = spawn(process.execPath, ['--import', 'tsx', 'bench/run.ts', ...args], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (text: string) => (stdout += text));
    child.stderr.on('data', (text: string) => (stderr += text));
    const exitCode = await new Promise<number | null>((resolve) =>
      child.on('exit', (code) => resolve(code)));
    assert.equal(exitCode, 0, `the quick bench failed:\n${stdout}\n${stderr}`);

    const markdown = readFileSync(markdownFile, 'utf8');
    assert.match(markdown,
      /\| figure \| ours \| baseline \(same run\) \| ratio \| target \| met\? \|/);
    for (const row of EXPECTED_ROWS) {
      assert.ok(stdout.includes(row), `the printed table has no row "${row}":\n${stdout}`);
      assert.ok(markdown.includes(`| ${row}`),
        `the Markdown table has no row "${row}":\n${markdown}`);
    }

    const svg = readFileSync(svgFile, 'utf8');
    assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    assert.match(svg, /<polyline /);
    assert.match(svg, /<\/svg>\s*$/);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
});
