/**
 * bench/target.ts — the process under test: our registry, or a bare baseline, in a child.
 *
 * bench/common.ts starts this file with fork() and sends it commands over IPC; it answers each
 * one. The child measures nothing on its own except what only it can see: its own CPU time and
 * memory, and how long a sweeper pass takes inside it.
 *
 * Layout:
 *   - what this process holds        the registry or baseline it is running
 *   - the bare baselines             a UDP receiver that only counts, an NDJSON echo server
 *   - memory and sweep               sessions made directly, RSS, one timed sweeper pass
 *   - commands                       one case per message from the parent
 */

import { Buffer } from 'node:buffer';
import { randomBytes, scryptSync } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { LineSplitter, PeerChannel } from '../protocol.ts';
import {
  createMemoryUserStore, openSession, refreshSession, startServer, sweepExpiredSessions,
} from '../server.ts';
import type { RunningServer, UserStore } from '../server.ts';

// ============================================================================================
// What this process holds
// ============================================================================================

/** The registry, when the parent asked for one. Its event log goes to stdout = /dev/null. */
let registryServer: RunningServer | undefined;
/** The registry's account store, kept so the login storm can add users without hashing each. */
let registryStore: UserStore | undefined;
/** The bare UDP receiver, and how many datagrams it has counted (the figure itself counts what
 * the kernel dropped instead, the same way for both receivers; counting here is just the least
 * work a receiver can do with a datagram). */
let counterSocket: dgram.Socket | undefined;
let datagramsCounted = 0;
/** The bare echo server. */
let echoServer: net.Server | undefined;
/** The chat echo made of the client's PeerChannel (figure 6). */
let peerEchoServer: net.Server | undefined;

// ============================================================================================
// The bare baselines
// ============================================================================================
//
// Each baseline does the least a server of its kind must do, with the same Node machinery our
// server uses, so the ratio shows what our own code adds on top.

/** Listens on an ephemeral port of 127.0.0.1; resolves with the port. */
function listenOnLoopback(server: net.Server): Promise<number> {
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port));
  });
}

/** A UDP socket that only counts what arrives: no decoding, no lookup. */
function startCounter(): Promise<number> {
  return new Promise((resolve) => {
    counterSocket = dgram.createSocket('udp4');
    counterSocket.on('message', () => {
      datagramsCounted += 1;
    });
    counterSocket.bind(0, '127.0.0.1', () => resolve(counterSocket!.address().port));
  });
}

/** Answers every line with the same line: the least an NDJSON request server can do. It cuts
 * the stream with protocol.ts's own LineSplitter, and gathers the answers to the lines of one
 * read into one write (cork/uncork), as the registry does: a baseline that wrote once per line
 * would pay a system call per answer the registry does not pay, flattering our pipelined rows. */
function startEcho(): Promise<number> {
  echoServer = net.createServer((socket) => {
    const splitter = new LineSplitter();
    socket.setNoDelay(true); // the registry does the same
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => {
      const { lines } = splitter.push(chunk);
      const gathering = lines.length > 1;
      if (gathering) socket.cork();
      for (const line of lines) socket.write(Buffer.concat([line, NEWLINE]));
      if (gathering) socket.uncork();
    });
  });
  return listenOnLoopback(echoServer);
}
const NEWLINE = Buffer.from('\n');

/** The far end of a chat, written with the client's own PeerChannel: every message it receives
 * (validated, as the client does) it sends straight back. */
function startPeerEcho(): Promise<number> {
  peerEchoServer = net.createServer((socket) => {
    new PeerChannel(socket, {
      onMessage: (message, channel) => channel.send(message),
      onClose: () => {},
    });
  });
  return listenOnLoopback(peerEchoServer);
}

// ============================================================================================
// Memory and sweep
// ============================================================================================
//
// Sessions are made with openSession() directly: logging in a million users through scrypt
// would take hours and measure the hash, not the registry. The parent starts this process with
// --expose-gc so we can collect garbage before reading the memory figures; otherwise RSS would
// include whatever the collector had not got round to yet.

type MemoryAndSweep = {
  rssBefore: number;
  rssAfter: number;
  heapBefore: number;
  heapAfter: number;
  /** Mean time of one sweeper pass when nobody has expired, right after the sessions were made
   * (before any hello has reordered them). */
  sweepBeforeHellosMs: number;
  /** The same after one round of heartbeats (every session refreshed once, oldest first): the
   * state a running server is in. */
  sweepSteadyMs: number;
  /** Mean time of a naive pass that looks at every session: what keeping the sessions in
   * last-heard order saves. */
  fullScanMs: number;
  /** Median time of one pass that removes 1 % of the sessions. */
  sweepOnePercentMs: number;
};

function collectGarbage(): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error('start this process with --expose-gc');
  gc();
  gc();
}

/** Runs `pass` until `minMs` has gone by (at least `minRuns` times); returns the mean in ms. */
function meanPassMs(pass: () => void, minRuns: number, minMs: number): number {
  let runs = 0;
  const started = performance.now();
  while (runs < minRuns || performance.now() - started < minMs) {
    pass();
    runs += 1;
  }
  return (performance.now() - started) / runs;
}

async function measureRegistrySessions(count: number, timingMs: number): Promise<MemoryAndSweep> {
  // A timeout of a day: the background sweeper (every second) never removes anything while we
  // measure; we make sessions expire ourselves by ageing their lastHeardAt.
  const server = await startServer({
    host: '127.0.0.1', tcpPort: 0, udpPort: 0, timeoutMs: 86_400_000,
  });
  const registry = server.registry;
  const timeoutMs = registry.settings.timeoutMs;
  collectGarbage();
  const before = process.memoryUsage();
  for (let i = 0; i < count; i += 1) openSession(registry, `user${i}`, '127.0.0.1', 7000);
  collectGarbage();
  const after = process.memoryUsage();

  const noExpiry = () => {
    sweepExpiredSessions(registry, performance.now());
  };
  const sweepBeforeHellosMs = meanPassMs(noExpiry, 1000, timingMs);
  const fullScanMs = meanPassMs(() => {
    const now = performance.now();
    let expired = 0;
    for (const session of registry.sessionsByToken.values()) {
      if (now - session.lastHeardAt >= timeoutMs) expired += 1;
    }
    if (expired < 0) throw new Error('unreachable'); // keeps the loop from being optimised away
  }, 3, timingMs);

  // One round of heartbeats, in last-heard order, as hellos would arrive.
  for (const session of [...registry.sessionsByToken.values()]) {
    refreshSession(registry, session, performance.now());
  }
  const sweepSteadyMs = meanPassMs(noExpiry, 1000, timingMs);

  // 1 % expire: age the oldest 1 % (the front of the last-heard list) past the timeout, then time
  // one pass. Three rounds, each taking the next 1 %; the median is reported.
  const onePercent = Math.max(1, Math.floor(count / 100));
  const onePercentTimes: number[] = [];
  for (let round = 0; round < 3; round += 1) {
    const longAgo = performance.now() - timeoutMs - 1;
    let aged = 0;
    let session = registry.oldestSession;
    for (; session !== undefined && aged < onePercent; session = session.heardAfter) {
      session.lastHeardAt = longAgo;
      aged += 1;
    }
    const started = performance.now();
    const removed = sweepExpiredSessions(registry, performance.now());
    onePercentTimes.push(performance.now() - started);
    if (removed !== onePercent) throw new Error(`expected ${onePercent} removed, got ${removed}`);
  }
  onePercentTimes.sort((a, b) => a - b);
  await server.close();
  return {
    rssBefore: before.rss,
    rssAfter: after.rss,
    heapBefore: before.heapUsed,
    heapAfter: after.heapUsed,
    sweepBeforeHellosMs,
    sweepSteadyMs,
    fullScanMs,
    sweepOnePercentMs: onePercentTimes[1],
  };
}

/** The baseline: the least any registry must keep per session — a token mapped to a name — in
 * one bare Map; and the cost of deleting 1 % of it, the least a sweep must do. */
function measureBareMap(count: number): {
  rssBefore: number;
  rssAfter: number;
  heapBefore: number;
  heapAfter: number;
  deleteOnePercentMs: number;
} {
  collectGarbage();
  const before = process.memoryUsage();
  const names = new Map<string, string>();
  for (let i = 0; i < count; i += 1) names.set(randomBytes(32).toString('base64url'), `user${i}`);
  collectGarbage();
  const after = process.memoryUsage();
  const onePercent = Math.max(1, Math.floor(count / 100));
  const started = performance.now();
  let deleted = 0;
  for (const token of names.keys()) {
    if (deleted === onePercent) break;
    names.delete(token);
    deleted += 1;
  }
  const deleteOnePercentMs = performance.now() - started;
  return {
    rssBefore: before.rss,
    rssAfter: after.rss,
    heapBefore: before.heapUsed,
    heapAfter: after.heapUsed,
    deleteOnePercentMs,
  };
}

// ============================================================================================
// Commands
// ============================================================================================

type Command = { id: number; command: string; [argument: string]: unknown };

async function answer(message: Command): Promise<Record<string, unknown>> {
  switch (message.command) {
    case 'ping':
      return {};
    case 'cpu':
      return { ...process.cpuUsage() };
    case 'start-registry': {
      if (registryServer) await registryServer.close();
      registryStore = createMemoryUserStore();
      registryServer = await startServer({
        host: '127.0.0.1',
        tcpPort: 0,
        udpPort: 0,
        heartbeatMs: message.heartbeatMs as number | undefined,
        timeoutMs: message.timeoutMs as number | undefined,
        maxConnections: 10_000,
        store: registryStore,
      });
      return { tcpPort: registryServer.tcpPort, udpPort: registryServer.udpPort };
    }
    case 'open-sessions': {
      // Sessions named `${prefix}0`, `${prefix}1`, …; their tokens go back to the parent, which
      // needs them to send hellos and searches.
      const tokens: string[] = [];
      for (let i = 0; i < (message.count as number); i += 1) {
        const name = `${message.prefix}${i}`;
        tokens.push(openSession(registryServer!.registry, name, '127.0.0.1', 7000).token);
      }
      return { tokens };
    }
    case 'add-users': {
      // Users for the login storm. Hashing each password would take ~50 ms apiece, so all of
      // them share one salt and hash: the logins still run scrypt in full, which is what we time.
      const password = message.password as string;
      const salt = randomBytes(16);
      const passwordHash = scryptSync(password, salt, 64).toString('hex');
      for (let i = 0; i < (message.count as number); i += 1) {
        const name = `${message.prefix}${i}`;
        await registryStore!.addUser({
          name, displayName: name, passwordHash, salt: salt.toString('hex'),
        });
      }
      return {};
    }
    case 'session-count':
      return { count: registryServer!.registry.sessionsByToken.size };
    case 'start-counter':
      return { udpPort: await startCounter() };
    case 'start-peer-echo':
      return { tcpPort: await startPeerEcho() };
    case 'start-echo':
      return { tcpPort: await startEcho() };
    case 'measure-registry-sessions':
      return await measureRegistrySessions(message.count as number, message.timingMs as number);
    case 'measure-bare-map':
      return measureBareMap(message.count as number);
    default:
      throw new Error(`unknown command ${message.command}`);
  }
}

process.on('message', (message: Command) => {
  answer(message).then(
    (result) => process.send!({ id: message.id, ...result }),
    (error: unknown) => process.send!({
      id: message.id,
      error: error instanceof Error ? error.message : String(error),
    }),
  );
});

// The parent going away (even killed) closes the IPC channel: leave with it, never linger.
process.on('disconnect', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
