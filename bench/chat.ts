/**
 * bench/chat.ts — figure 6: the chat path, client to client, with the client's own peer code.
 *
 * Two chat endpoints, each a PeerChannel from protocol.ts (the class the client uses for every
 * peer connection: line splitting, validation of each message, deadlines). One lives in this
 * process and sends `msg` messages; the other lives in a child process and sends every message
 * back.
 *
 *   this process: PeerChannel ── msg ──▶ child: PeerChannel, sends it back
 *                             ◀── msg ──
 *
 * The baseline is the same conversation over raw node:net: JSON lines written to a socket, cut
 * into lines and parsed on arrival, echoed by a bare NDJSON echo server — what any chat over TCP
 * must at least do. We measure round-trip time one message at a time, and messages per second
 * with several in flight. The two alternate in short rounds so that a noisy neighbour hurts both.
 *
 * Layout:
 *   - sizes
 *   - the two kinds of sender
 *   - measuring, and the rows
 */

import { performance } from 'node:perf_hooks';
import { PeerChannel } from '../protocol.ts';
import type { ChatMessage } from '../protocol.ts';
import type { BenchConfig, Row } from './common.ts';
import { connect, formatMs, formatRate, formatRatio, percentile, startTarget } from './common.ts';

// ============================================================================================
// Sizes
// ============================================================================================

const FULL = { seconds: 0.5, rounds: 4 };
const QUICK = { seconds: 0.1, rounds: 1 };
/** Messages in flight when measuring throughput. */
const IN_FLIGHT = 16;
/** A hard cap on messages per run, whatever the clock says. */
const MAX_MESSAGES_PER_RUN = 2_000_000;
/** If echoes stop coming, the run ends this long after it should have, with what it has. */
const GRACE_MS = 10_000;
/** Issue 4's target: round trip at most this many times the raw one. */
const RTT_TARGET_RATIO = 1.2;

// ============================================================================================
// The two kinds of sender
// ============================================================================================

/** What the measuring loop needs from either kind: send one chat message, and be told when one
 * comes back. */
type Sender = {
  send: () => void;
  onEcho: (callback: () => void) => void;
  close: () => void;
};

const TEXT = 'Hello! This is a chat message of about the length people type.';

/** Our client's code on both ends. */
async function peerChannelSender(port: number): Promise<Sender> {
  let echoed = () => {};
  const channel = await PeerChannel.connect('127.0.0.1', port, {
    onMessage: () => echoed(),
    onClose: () => {},
  });
  return {
    send: () => channel.send({ type: 'msg', text: TEXT, at: Date.now() }),
    onEcho: (callback) => (echoed = callback),
    close: () => channel.socket.destroy(),
  };
}

/** Raw node:net: the same JSON line out; lines cut and parsed on the way back. */
async function rawSender(port: number): Promise<Sender> {
  let echoed = () => {};
  const socket = await connect(port);
  socket.setNoDelay(true);
  let partial = '';
  socket.setEncoding('utf8');
  socket.on('data', (text: string) => {
    const lines = (partial + text).split('\n');
    partial = lines.pop()!;
    for (const line of lines) {
      JSON.parse(line) as ChatMessage;
      echoed();
    }
  });
  return {
    send: () => {
      const message = { type: 'msg', text: TEXT, at: Date.now() } satisfies ChatMessage;
      return socket.write(JSON.stringify(message) + '\n');
    },
    onEcho: (callback) => (echoed = callback),
    close: () => socket.destroy(),
  };
}

// ============================================================================================
// Measuring, and the rows
// ============================================================================================

type ChatRun = { perSecond: number; roundTripsMs: number[] };

/** Keeps `inFlight` messages travelling for `seconds`; each echo is timed and replaced. */
async function measure(sender: Sender, inFlight: number, seconds: number): Promise<ChatRun> {
  const sentAt: number[] = [];
  const roundTripsMs: number[] = [];
  const started = performance.now();
  let sending = true;
  let sent = 0;
  await new Promise<void>((resolve) => {
    const watchdog = setTimeout(resolve, seconds * 1000 + GRACE_MS);
    sender.onEcho(() => {
      const now = performance.now();
      roundTripsMs.push(now - sentAt.shift()!);
      const done = now - started > seconds * 1000 || sent >= MAX_MESSAGES_PER_RUN;
      if (sending && done) sending = false;
      if (sending) {
        sentAt.push(performance.now());
        sent += 1;
        sender.send();
      } else if (sentAt.length === 0) {
        clearTimeout(watchdog);
        resolve();
      }
    });
    for (let i = 0; i < inFlight; i += 1) {
      sentAt.push(performance.now());
      sent += 1;
      sender.send();
    }
  });
  return { perSecond: roundTripsMs.length / ((performance.now() - started) / 1000), roundTripsMs };
}

export async function runChat(config: BenchConfig): Promise<Row[]> {
  const { seconds, rounds } = config.quick ? QUICK : FULL;
  const peerTarget = await startTarget();
  const peerPort = (await peerTarget.ask('start-peer-echo')).tcpPort as number;
  const rawTarget = await startTarget();
  const rawPort = (await rawTarget.ask('start-echo')).tcpPort as number;
  const ours = await peerChannelSender(peerPort);
  const raw = await rawSender(rawPort);

  // Warm up both, then alternate short rounds.
  await measure(ours, IN_FLIGHT, seconds);
  await measure(raw, IN_FLIGHT, seconds);
  const ourTrips: number[] = [];
  const rawTrips: number[] = [];
  const ourRates: number[] = [];
  const rawRates: number[] = [];
  for (let round = 0; round < rounds; round += 1) {
    ourTrips.push(...(await measure(ours, 1, seconds)).roundTripsMs);
    rawTrips.push(...(await measure(raw, 1, seconds)).roundTripsMs);
    ourRates.push((await measure(ours, IN_FLIGHT, seconds)).perSecond);
    rawRates.push((await measure(raw, IN_FLIGHT, seconds)).perSecond);
  }
  ours.close();
  raw.close();
  await peerTarget.stop();
  await rawTarget.stop();

  const ourP50 = percentile(ourTrips, 0.5);
  const rawP50 = percentile(rawTrips, 0.5);
  const ourRate = ourRates.reduce((sum, rate) => sum + rate, 0) / rounds;
  const rawRate = rawRates.reduce((sum, rate) => sum + rate, 0) / rounds;
  return [
    {
      figure: '6. Chat round trip, one message at a time (PeerChannel both ends)',
      ours: `p50 ${formatMs(ourP50)}, p99 ${formatMs(percentile(ourTrips, 0.99))}`,
      baseline: `p50 ${formatMs(rawP50)}, p99 ${formatMs(percentile(rawTrips, 0.99))} ` +
        '(raw node:net NDJSON echo)',
      ratio: formatRatio(ourP50, rawP50),
      target: `≤ ${RTT_TARGET_RATIO}× raw (p50)`,
      met: ourP50 <= RTT_TARGET_RATIO * rawP50 ? 'yes' : 'no',
    },
    {
      figure: `6. Chat messages per second, ${IN_FLIGHT} in flight`,
      ours: formatRate(ourRate),
      baseline: `${formatRate(rawRate)} (raw node:net NDJSON echo)`,
      ratio: formatRatio(ourRate, rawRate),
      target: '—',
      met: '—',
    },
  ];
}

