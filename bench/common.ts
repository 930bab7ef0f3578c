/**
 * bench/common.ts — small tools every figure of the benchmark shares.
 *
 * Layout:
 *   - the table row            what each figure hands back to run.ts
 *   - numbers                  percentiles and the way figures are printed
 *   - child processes          starting bench/target.ts and talking to it over IPC
 *   - loopback helpers         connecting, waiting, reading the kernel's UDP drop counter
 *
 * Why child processes: a benchmark that measures a server's CPU time must not count the load
 * generator's work as the server's. process.cpuUsage() is per process, so the server under test
 * (or the bare baseline) runs in its own process — bench/target.ts — and reports its own CPU time
 * when asked. On a two-core machine this also lets the generator and the server run side by side.
 */

import { fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import process from 'node:process';
import { fileURLToPath } from 'node:url';

/** The repository root, found from this file's own URL (no __dirname in ESM). */
export const ROOT = fileURLToPath(new URL('..', import.meta.url));

// ============================================================================================
// The table row
// ============================================================================================

/** One line of the results table. Every cell is already text, so run.ts only lays them out. */
export type Row = {
  /** What was measured, e.g. "1. Heartbeat: CPU per hello". */
  figure: string;
  /** Our server (or client) measured in this run. */
  ours: string;
  /** The bare baseline measured in the same run, with what it was. */
  baseline: string;
  /** ours ÷ baseline, or "—" where a ratio would mean nothing. */
  ratio: string;
  /** The goal from issue 4, in words. */
  target: string;
  /** 'yes', 'no', or '—' when the figure has no target. */
  met: 'yes' | 'no' | '—';
};

/** How big and how long. `quick` shrinks every figure so the whole run takes seconds. */
export type BenchConfig = {
  quick: boolean;
};

// ============================================================================================
// Numbers
// ============================================================================================

/** The value below which `fraction` of the samples fall (0.5 = median, 0.99 = p99). */
export function percentile(samples: number[], fraction: number): number {
  if (samples.length === 0) return NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const index = Math.min(sorted.length - 1, Math.ceil(fraction * sorted.length) - 1);
  return sorted[Math.max(0, index)];
}

export function median(samples: number[]): number {
  return percentile(samples, 0.5);
}

/** Milliseconds, with as many decimals as a person needs to compare two of them. */
export function formatMs(ms: number): string {
  if (!Number.isFinite(ms)) return 'n/a';
  if (ms < 0.01) return `${(ms * 1000).toFixed(2)} µs`;
  if (ms < 1) return `${(ms * 1000).toFixed(0)} µs`;
  if (ms < 100) return `${ms.toFixed(2)} ms`;
  return `${ms.toFixed(0)} ms`;
}

/** Microseconds, for per-datagram CPU costs. */
export function formatMicros(micros: number): string {
  if (!Number.isFinite(micros)) return 'n/a';
  return micros < 10 ? `${micros.toFixed(2)} µs` : `${micros.toFixed(1)} µs`;
}

/** A rate such as requests per second: 1234 → "1.23 k/s". */
export function formatRate(perSecond: number): string {
  if (!Number.isFinite(perSecond)) return 'n/a';
  if (perSecond >= 1000) return `${(perSecond / 1000).toFixed(1)} k/s`;
  return `${perSecond.toFixed(0)} /s`;
}

/** Bytes as MB (10^6), the unit of the memory target. */
export function formatMB(bytes: number): string {
  return `${(bytes / 1e6).toFixed(0)} MB`;
}

/** "1.23×"; the ratio column of the table. Tiny ratios keep two significant digits ("0.0028×"). */
export function formatRatio(ours: number, baseline: number): string {
  const ratio = ours / baseline;
  if (!Number.isFinite(ratio)) return 'n/a';
  return ratio >= 0.1 ? `${ratio.toFixed(2)}×` : `${ratio.toPrecision(2)}×`;
}

/** 10000 → "10 k", 1000000 → "1 M": session counts in figure names. */
export function formatCount(count: number): string {
  if (count >= 1_000_000) return `${count / 1_000_000} M`;
  if (count >= 1000) return `${count / 1000} k`;
  return String(count);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ============================================================================================
// Child processes
// ============================================================================================
//
// bench/target.ts runs in a child started with fork(), which gives both sides an IPC channel:
// the parent sends { id, command, ... } and the child answers { id, ... } or { id, error }.
// The child's stdout goes to /dev/null, where a deployed server's event log might as well go:
// the server still formats and writes every log line, as it would in production.

/** Asks and answers, one after the other; the figures never need two questions in flight. */
export class Target {
  readonly child: ChildProcess;
  private nextId = 1;
  private waiting = new Map<number, {
    resolve: (answer: Record<string, unknown>) => void;
    reject: (error: Error) => void;
  }>();

  constructor(child: ChildProcess) {
    this.child = child;
    child.on('message', (message: Record<string, unknown>) => {
      const waiter = this.waiting.get(message.id as number);
      if (waiter === undefined) return;
      this.waiting.delete(message.id as number);
      if (typeof message.error === 'string') {
        waiter.reject(new Error(`bench target: ${message.error}`));
      } else waiter.resolve(message);
    });
    child.on('exit', () => {
      for (const waiter of this.waiting.values()) waiter.reject(new Error('bench target exited'));
      this.waiting.clear();
    });
  }

  /** Sends one command and waits for its answer. */
  ask(command: string, args: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.child.send({ id, command, ...args });
    });
  }

  /** Total CPU time the child has used so far, in microseconds (user + system). */
  async cpuMicros(): Promise<number> {
    const answer = await this.ask('cpu');
    return (answer.user as number) + (answer.system as number);
  }

  /** Ends the child and waits for it to be gone. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.kill('SIGTERM');
    await exited;
  }
}

/** Starts bench/target.ts in a child process. `extraNodeFlags` e.g. ['--expose-gc']. */
export async function startTarget(extraNodeFlags: string[] = []): Promise<Target> {
  // process.execArgv holds whatever made TypeScript loadable in this process (tsx's loader), so
  // the child can load .ts files the same way.
  const child = fork(fileURLToPath(new URL('./target.ts', import.meta.url)), [], {
    cwd: ROOT,
    execArgv: [...process.execArgv, ...extraNodeFlags],
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  const target = new Target(child);
  await target.ask('ping');
  return target;
}

// ============================================================================================
// Loopback helpers
// ============================================================================================

/** Opens a TCP connection to 127.0.0.1 and resolves once it is connected. */
export function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => {
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

/** Datagrams the kernel threw away because the socket bound to `port` on 127.0.0.1 did not read
 * them fast enough (its receive buffer was full). Linux keeps this count in /proc/net/udp; on
 * other systems we return 0 and the figures simply cannot see drops. */
export function udpDrops(port: number): number {
  try {
    const table = readFileSync('/proc/net/udp', 'utf8').split('\n').slice(1);
    const local = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
    for (const line of table) {
      const columns = line.trim().split(/\s+/);
      if (columns[1] === local) return Number(columns[columns.length - 1]);
    }
  } catch {
    // not Linux: no counter
  }
  return 0;
}
