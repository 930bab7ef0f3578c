/**
 * test/client-attacks.test.ts — a logged-in client under attack (issue 8): it trusts neither
 * its peers nor the registry.
 *
 * Everything here is black-box: a real client.ts process, driven over pipes, and around it
 *
 *   FakeRegistry ── TCP answers (valid, or hostile) ──▶ client ◀── raw sockets ("peers")
 *        ▲   └──── UDP session_unknown ──────────────▶   │        from 127.0.0.1, .2, .3 …
 *        └──────── UDP hellos (counted) ◀────────────────┘
 *
 * The fake registry hands the client a session token it chose itself, so the test can mint
 * valid tickets (makeTicket) for any caller without a real registry. A "peer" is a raw TCP
 * socket to the chat port the client prints at login, bound to a chosen loopback address with
 * `localAddress`, so that per-address limits can be told apart from overall ones.
 *
 * Each test prints its figure (RSS growth, lines printed, hellos per second, …) and asserts a
 * bound the unfixed client breaks.
 */

import assert from 'node:assert/strict';
import { Buffer } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { makeTicket } from '../protocol.ts';
import {
  LineClient, SpawnedProcesses, registerAndLogin, sleep, startTestServer, waitUntil,
} from './helpers.ts';
import type { ScriptProcess } from './helpers.ts';

// ---------------------------------------------------------------------------------------------
// A fake registry
// ---------------------------------------------------------------------------------------------

type FakeRequest = { type: string; [field: string]: unknown };

/** What the fake registry answers to one request: an object (sent as a JSON line), a string
 * (sent as it is, plus "\n"), or undefined for the default, well-behaved answer. */
type FakeAnswer = ((request: FakeRequest, count: number) => unknown) | undefined;

/** A registry on 127.0.0.1 that answers each request line at once (the default answers are a
 * registry that works), and counts the hellos that reach its UDP port. */
class FakeRegistry {
  readonly token = `fake-token-${randomBytes(12).toString('hex')}`;
  /** Every request received, in order. */
  readonly requests: FakeRequest[] = [];
  /** Every hello datagram received: when, and from which address:port. */
  readonly hellos: Array<{ at: number; address: string; port: number }> = [];
  /** heartbeatMs in the next logged_in answer. */
  heartbeatMs = 200;
  /** Set to answer (some) requests differently. */
  answer: FakeAnswer = undefined;
  private readonly counts = new Map<string, number>();
  private readonly sockets = new Set<net.Socket>();

  readonly tcp: net.Server;
  readonly udp: dgram.Socket;
  readonly tcpPort: number;
  readonly udpPort: number;

  private constructor(tcp: net.Server, udp: dgram.Socket) {
    this.tcp = tcp;
    this.udp = udp;
    this.tcpPort = (tcp.address() as net.AddressInfo).port;
    this.udpPort = udp.address().port;
  }

  static async start(): Promise<FakeRegistry> {
    const tcp = net.createServer();
    await new Promise<void>((resolve) => tcp.listen(0, '127.0.0.1', resolve));
    const udp = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => udp.bind(0, '127.0.0.1', resolve));
    const fake = new FakeRegistry(tcp, udp);
    tcp.on('connection', (socket) => fake.serve(socket));
    udp.on('message', (bytes, sender) => {
      if (Buffer.from(bytes).toString('utf8').includes('"hello"')) {
        fake.hellos.push({ at: Date.now(), address: sender.address, port: sender.port });
      }
    });
    return fake;
  }

  private serve(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => {});
    socket.setEncoding('utf8');
    let partial = '';
    socket.on('data', (text: string) => {
      const pieces = (partial + text).split('\n');
      partial = pieces.pop() ?? '';
      for (const line of pieces) {
        let request: FakeRequest;
        try {
          request = JSON.parse(line);
        } catch {
          continue;
        }
        this.requests.push(request);
        const count = (this.counts.get(request.type) ?? 0) + 1;
        this.counts.set(request.type, count);
        const answer = this.answer?.(request, count) ?? this.defaultAnswer(request);
        socket.write((typeof answer === 'string' ? answer : JSON.stringify(answer)) + '\n');
      }
    });
  }

  private defaultAnswer(request: FakeRequest): unknown {
    switch (request.type) {
      case 'register': return { type: 'registered', username: request.username };
      case 'check_username': return { type: 'username_free', username: request.username };
      case 'login':
        return {
          type: 'logged_in', username: request.username, token: this.token,
          heartbeatMs: this.heartbeatMs, timeoutMs: 10_000, storage: 'memory',
        };
      case 'list': return { type: 'online', users: ['bob'], total: 1 };
      case 'logout': return { type: 'logged_out' };
      default: return { type: 'error', code: 'not_online', message: 'no such user is online' };
    }
  }

  /** Where the client's heartbeat socket is, learned from its last hello. */
  get clientUdp(): { address: string; port: number } {
    const last = this.hellos.at(-1);
    if (last === undefined) throw new Error('no hello from the client yet');
    return last;
  }

  /** A ticket the client logged in here will accept: signed with the token we gave it. */
  ticket(caller: string, callee = 'bob', validForMs = 60_000): string {
    return makeTicket(this.token, caller, callee, Date.now() + validForMs);
  }

  close(): void {
    for (const socket of this.sockets) socket.destroy();
    this.tcp.close();
    this.udp.close();
  }
}

/** From the Login prompt: logs in (the fake registry says yes); resolves with the chat port. */
async function logIn(client: ScriptProcess, username = 'bob'): Promise<number> {
  client.type(username);
  await client.waitFor('password');
  client.type('secret');
  const match = await client.waitFor(/Peers reach you on port (\d+)/);
  await client.waitFor(`${username}> `);
  return Number(match[1]);
}

/** A client.ts process pointed at the fake registry, logged in as bob. */
async function loggedInBob(
  spawned: SpawnedProcesses,
  fake: FakeRegistry,
  args: string[] = [],
): Promise<{ bob: ScriptProcess; chatPort: number }> {
  const bob = await spawned.client(fake.tcpPort, fake.udpPort,
    ['--registry-timeout-ms', '3000', ...args]);
  const chatPort = await logIn(bob);
  return { bob, chatPort };
}

// ---------------------------------------------------------------------------------------------
// Raw peers
// ---------------------------------------------------------------------------------------------

/** A raw TCP connection to a client's chat port from a chosen loopback address, reading lines. */
class RawPeer {
  readonly lines: string[] = [];
  closed = false;
  closedAt = 0;
  readonly connectedAt = Date.now();
  private partial = '';

  readonly socket: net.Socket;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setEncoding('utf8');
    socket.setNoDelay(true);
    socket.on('error', () => {});
    socket.on('data', (text: string) => {
      const pieces = (this.partial + text).split('\n');
      this.partial = pieces.pop() ?? '';
      this.lines.push(...pieces);
    });
    socket.on('close', () => {
      this.closed = true;
      this.closedAt = Date.now();
    });
  }

  static connect(port: number, localAddress = '127.0.0.1'): Promise<RawPeer> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(
        { port, host: '127.0.0.1', localAddress },
        () => resolve(new RawPeer(socket)),
      );
      socket.once('error', reject);
    });
  }

  send(message: unknown): void {
    if (!this.socket.destroyed) {
      this.socket.write((typeof message === 'string' ? message : JSON.stringify(message)) + '\n');
    }
  }

  async nextLine(timeoutMs = 5000): Promise<string> {
    await waitUntil(() => this.lines.length > 0 || this.closed, timeoutMs,
      'a line from the client');
    const line = this.lines.shift();
    if (line === undefined) throw new Error('the client closed the connection without a line');
    return line;
  }

  /** ms from connecting until the client closed the connection, or null if still open. */
  closedAfter(): number | null {
    return this.closed ? this.closedAt - this.connectedAt : null;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** Lines printed since stdout had `since` characters, not counting a bare prompt (over pipes the
 * client prints each prompt as a line; at a terminal it is redrawn in place). */
function linesSince(client: ScriptProcess, since: number): string[] {
  return client.stdout.slice(since).split('\n')
    .filter((line) => line.trim() !== '' && !/^\S+> $/.test(line));
}

function count(text: string, needle: string): number {
  return text.split(needle).length - 1;
}

/** The client's resident memory in MiB (Linux /proc), or null where /proc is missing. */
function rssMiB(pid: number): number | null {
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) / 1024 : null;
  } catch {
    return null;
  }
}

const INVALID_ANSWER = /the registry sent an invalid answer/i;
const ESC = '\u001b';

// ---------------------------------------------------------------------------------------------
// 1. The chat port has limits
// ---------------------------------------------------------------------------------------------

test('1a. 200 connections dribbling one byte per TCP segment for 4.5 s: ' +
  'client RSS grows < 40 MB, a few lines printed', async (t) => {
  if (!existsSync('/proc/self/status')) {
    console.log('SKIPPED: no /proc here, so the client\'s RSS cannot be read');
    t.skip('no /proc: cannot read the client\'s RSS');
    return;
  }
  const fake = await FakeRegistry.start();
  const spawned = new SpawnedProcesses();
  const slots: Array<RawPeer | null> = Array.from({ length: 200 }, () => null);
  const everyPeer: RawPeer[] = [];
  try {
    // The default 5 s greeting timeout: no connection is dropped for silence during the 4.5 s.
    const { bob, chatPort } = await loggedInBob(spawned, fake);
    const pid = bob.child.pid!;
    await sleep(500);
    const before = rssMiB(pid)!;
    const since = bob.stdout.length;
    // 200 connections from 50 loopback addresses (4 each), so a per-address cap alone cannot stop
    // them. A connection the client closes is opened again (at most every 500 ms per slot), as a
    // real attacker would, so the churn of refused connections costs the client too.
    const address = (slot: number) => `127.0.0.${(slot % 50) + 1}`;
    const reconnectAt: number[] = slots.map(() => 0);
    let connections = 0;
    const open = (slot: number) => {
      reconnectAt[slot] = Infinity; // until this attempt settles
      connections++;
      RawPeer.connect(chatPort, address(slot)).then((peer) => {
        everyPeer.push(peer);
        slots[slot] = peer;
        reconnectAt[slot] = Date.now() + 500;
      }, () => (reconnectAt[slot] = Date.now() + 500));
    };
    slots.forEach((_, slot) => open(slot));
    const line = Buffer.from(
      '{"type":"chat_request","from":"mallory","ticket":"' + 'A'.repeat(20_000),
    );
    const offsets: number[] = slots.map(() => 0);
    let segments = 0;
    let peak = before;
    let rounds = 0;
    const startedAt = Date.now();
    while (Date.now() - startedAt < 4500) {
      const now = Date.now();
      slots.forEach((peer, slot) => {
        if (peer !== null && !peer.closed) {
          // setNoDelay: one byte, one segment
          peer.socket.write(line.subarray(offsets[slot], offsets[slot] + 1));
          offsets[slot]++;
          segments++;
        } else if (now >= reconnectAt[slot]) {
          slots[slot] = null;
          offsets[slot] = 0;
          open(slot);
        }
      });
      if (++rounds % 20 === 0) peak = Math.max(peak, rssMiB(pid) ?? peak);
      await sleep(4);
    }
    peak = Math.max(peak, rssMiB(pid) ?? peak);
    const stillOpen = slots.filter((peer) => peer !== null && !peer.closed).length;
    const growth = peak - before;
    const printed = linesSince(bob, since);
    console.log(`client RSS under a 200-connection one-byte dribble for 4.5 s: ` +
      `${before.toFixed(0)} → peak ${peak.toFixed(0)} MB (+${growth.toFixed(1)} MB); ` +
      `${segments} one-byte segments over ${connections} connections (reconnecting when closed); ` +
      `${stillOpen} of 200 open at the end; ${printed.length} lines printed`);
    for (const shown of printed.slice(0, 4)) console.log(`  | ${shown.slice(0, 160)}`);
    assert.ok(growth < 40, `the client grew by ${growth.toFixed(1)} MB (limit 40 MB)`);
    assert.ok(printed.length <= 6,
      `${printed.length} lines printed during the attack (a few wanted)`);
    assert.equal(bob.exitCode, null, 'the client died');
  } finally {
    for (const peer of everyPeer) peer.destroy();
    await spawned.stopAll();
    fake.close();
  }
});

test('1b. connections that have not greeted are capped (16 overall, 4 per address); ' +
  'extra ones are closed at once', async () => {
  const fake = await FakeRegistry.start();
  const spawned = new SpawnedProcesses();
  const peers: RawPeer[] = [];
  const connect = async (address: string) => {
    const peer = await RawPeer.connect(chatPort, address);
    peers.push(peer);
    return peer;
  };
  let chatPort = 0;
  try {
    const started = await loggedInBob(spawned, fake); // greeting timeout: the default 5 s
    chatPort = started.chatPort;
    const { bob } = started;

    // Per address: 4 from 127.0.0.1 are kept, the 5th is closed at once.
    const firstFour = await Promise.all([1, 2, 3, 4].map(() => connect('127.0.0.1')));
    await sleep(300);
    assert.deepEqual(firstFour.map((peer) => peer.closed), [false, false, false, false],
      'one of the first 4 was closed');
    const fifth = await connect('127.0.0.1');
    await waitUntil(() => fifth.closed, 2000, 'the 5th connection from 127.0.0.1 to be closed')
      .catch(() => {});
    const perAddressMs = fifth.closedAfter();
    console.log(`5th silent connection from one address: ` +
      `${perAddressMs === null ? 'still open after 2 s' : `closed after ${perAddressMs} ms`}`);
    assert.ok(perAddressMs !== null && perAddressMs < 500,
      `the 5th connection from one address was not closed at once (${perAddressMs} ms)`);

    // Overall: 4 more from each of 127.0.0.2, .3 and .4 make 16; the 17th, from .5, is closed.
    const twelve = await Promise.all(['127.0.0.2', '127.0.0.3', '127.0.0.4']
      .flatMap((address) => [1, 2, 3, 4].map(() => connect(address))));
    await sleep(300);
    const kept = [...firstFour, ...twelve].filter((peer) => !peer.closed).length;
    assert.equal(kept, 16, `only ${kept} of 16 connections within the caps were kept`);
    const seventeenth = await connect('127.0.0.5');
    await waitUntil(() => seventeenth.closed, 2000, 'the 17th connection to be closed')
      .catch(() => {});
    const overallMs = seventeenth.closedAfter();
    console.log(`17th silent connection (a fresh address, 16 pending): ` +
      `${overallMs === null ? 'still open after 2 s' : `closed after ${overallMs} ms`}`);
    assert.ok(overallMs !== null && overallMs < 500,
      `the 17th pending connection was not closed at once (${overallMs} ms)`);

    // The caps free up when the pending connections go.
    for (const peer of [...firstFour, ...twelve]) peer.destroy();
    await sleep(300);
    const later = await connect('127.0.0.5');
    await sleep(300);
    assert.equal(later.closed, false, 'a connection after the others left was refused');
    assert.equal(bob.exitCode, null);
  } finally {
    for (const peer of peers) peer.destroy();
    await spawned.stopAll();
    fake.close();
  }
});

test('1c. 200 forged chat requests in 1 s: a few summary lines, ' +
  'at most 40 characters of attacker text each', async () => {
  const fake = await FakeRegistry.start();
  const spawned = new SpawnedProcesses();
  const peers: RawPeer[] = [];
  try {
    const { bob, chatPort } = await loggedInBob(spawned, fake);
    await sleep(300);
    // A recognisable 600-character marker in each forged request, in each place a client might
    // echo it: a forged ticket, a `from` that is no username, an unknown type, plain garbage.
    const marker = 'Qz'.repeat(300);
    const forged = [
      { type: 'chat_request', from: 'mallory', ticket: marker },
      { type: 'chat_request', from: marker, ticket: 'v1.x.y.1.ab' },
      { type: marker },
      `${marker} not json`,
    ];
    const since = bob.stdout.length;
    const startedAt = Date.now();
    for (let i = 0; i < 200; i++) {
      RawPeer.connect(chatPort).then((peer) => {
        peers.push(peer);
        peer.send(forged[i % forged.length]);
      }, () => {});
      await sleep(Math.max(0, startedAt + (i + 1) * 5 - Date.now()));
    }
    const sentIn = Date.now() - startedAt;
    await sleep(1000);
    const burstLines = linesSince(bob, since);
    const markerRuns = bob.stdout.slice(since).match(/[Qz]{4,}/g) ?? [];
    const longestRun = Math.max(0, ...markerRuns.map((run) => run.length));
    const echoed = markerRuns.reduce((sum, run) => sum + run.length, 0);
    console.log(`200 forged chat requests sent in ${sentIn} ms: ` +
      `${burstLines.length} lines printed during the burst and 1 s after; ` +
      `${echoed} characters of attacker text echoed (longest excerpt ${longestRun})`);
    for (const shown of burstLines.slice(0, 5)) console.log(`  | ${shown.slice(0, 160)}`);
    assert.ok(burstLines.length <= 5,
      `${burstLines.length} lines printed for one burst (at most ~3 wanted)`);
    assert.ok(longestRun <= 40,
      `an excerpt of ${longestRun} attacker characters was shown (limit 40)`);
    assert.ok(echoed <= 40 * Math.max(1, burstLines.length),
      `${echoed} attacker characters echoed`);

    // The user is told, in a summary: "dropped N … from <address>".
    await waitUntil(() => /dropped \d+/i.test(bob.stdout.slice(since)), 7000,
      'a "dropped N" summary line');
    const summary = linesSince(bob, since).find((line) => /dropped \d+/i.test(line))!;
    console.log(`summary: ${summary}`);
    assert.match(summary, /from 127\.0\.0\.1/);
    assert.ok(linesSince(bob, since).length <= 6,
      `${linesSince(bob, since).length} lines in all for one burst`);

    bob.type('/list');
    await bob.waitFor(/Online \(1\)/);
  } finally {
    for (const peer of peers) peer.destroy();
    await spawned.stopAll();
    fake.close();
  }
});

test('1d. a valid request then silence is shown once; its replay gets bad_ticket; ' +
  'unshown connections never make us busy', async () => {
  const fake = await FakeRegistry.start();
  const spawned = new SpawnedProcesses();
  const peers: RawPeer[] = [];
  const connect = async (address = '127.0.0.1') => {
    const peer = await RawPeer.connect(chatPort, address);
    peers.push(peer);
    return peer;
  };
  let chatPort = 0;
  try {
    const started = await loggedInBob(spawned, fake, ['--decide-timeout-ms', '800']);
    chatPort = started.chatPort;
    const { bob } = started;

    // A valid request, then silence: shown once, declined for the user when the time is up.
    const ticket = fake.ticket('mallory');
    const mallory = await connect('127.0.0.1');
    mallory.send({ type: 'chat_request', from: 'mallory', ticket });
    await bob.waitFor('mallory wants to chat');
    assert.equal(JSON.parse(await mallory.nextLine(5000)).reason, 'timeout');
    await bob.waitFor('bob> ');

    // The same ticket again, from a new connection: refused, not shown.
    const replayedAt = Date.now();
    const replay = await connect('127.0.0.2');
    replay.send({ type: 'chat_request', from: 'mallory', ticket });
    const answer = await replay.nextLine(5000)
      .catch((error: Error) => `(no answer: ${error.message})`);
    await sleep(300);
    const shown = count(bob.stdout, 'mallory wants to chat');
    console.log(`replayed ticket: answered ${answer} after ${Date.now() - replayedAt - 300} ms; ` +
      `"mallory wants to chat" shown ${shown} time(s)`);
    assert.equal(shown, 1, 'the replayed request was shown to the user again');
    assert.deepEqual(JSON.parse(answer), { type: 'chat_decline', reason: 'bad_ticket' });

    // 15 silent, unverified connections (3 + 4 + 4 + 4 from four addresses, under both caps) do
    // not make bob busy: a real caller from a fifth address is shown and can chat.
    for (const [address, n] of [
      ['127.0.0.1', 3], ['127.0.0.2', 4], ['127.0.0.3', 4], ['127.0.0.4', 4],
    ] as const) {
      for (let i = 0; i < n; i++) await connect(address);
    }
    await sleep(200);
    const since = bob.stdout.length;
    const alice = await connect('127.0.0.9');
    alice.send({ type: 'chat_request', from: 'alice', ticket: fake.ticket('alice') });
    await bob.waitFor('alice wants to chat');
    bob.type('y');
    assert.equal(await alice.nextLine(5000), '{"type":"chat_accept","acks":true}');
    alice.send({ type: 'msg', text: 'made it past 15 silent connections', at: Date.now() });
    await bob.waitFor('alice: made it past 15 silent connections');
    console.log(`with 15 silent connections pending, a real caller was shown and chatted; ` +
      `bob printed: ${linesSince(bob, since).slice(0, 3).join(' | ')}`);
    assert.ok(!/busy/i.test(bob.stdout.slice(since)));
    alice.send({ type: 'bye' });
    await bob.waitFor('alice left');
  } finally {
    for (const peer of peers) peer.destroy();
    await spawned.stopAll();
    fake.close();
  }
});

// ---------------------------------------------------------------------------------------------
// 2. Only the registry can end the session
// ---------------------------------------------------------------------------------------------

/** Sends one datagram from a socket bound to address:port. */
async function datagramFrom(
  address: string,
  port: number,
  to: { address: string; port: number },
  text: string,
): Promise<void> {
  const socket = dgram.createSocket('udp4');
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(port, address, resolve);
    });
    await new Promise<void>((resolve, reject) => socket.send(Buffer.from(text), to.port, to.address,
      (error) => error ? reject(error) : resolve()));
  } finally {
    socket.close();
  }
}

test('2. session_unknown from another address, or another port, is ignored; ' +
  'from the registry it ends the session', async () => {
  const fake = await FakeRegistry.start();
  const spawned = new SpawnedProcesses();
  try {
    const { bob } = await loggedInBob(spawned, fake, ['--trace']);
    await waitUntil(() => fake.hellos.length > 0, 5000, 'a first hello');
    const target = fake.clientUdp;
    const sessionUnknown = '{"type":"session_unknown"}';
    const stillLoggedIn = async (sentAt: number, what: string) => {
      await sleep(400);
      bob.type('/list');
      await bob.waitFor(/Online \(1\)/, 5000).catch(() => {
        throw new Error(
          `after ${what}, /list did not work:\n${bob.stdout.slice(sentAt).slice(-1500)}`,
        );
      });
      assert.ok(!/Login — username|log in again/i.test(bob.stdout.slice(sentAt)),
        `after ${what}, the client went back to Login`);
    };

    // The registry's port number, from another address.
    let sentAt = bob.stdout.length;
    await datagramFrom('127.0.0.2', fake.udpPort, target, sessionUnknown);
    await stillLoggedIn(sentAt, 'a session_unknown from 127.0.0.2 with the registry\'s port');
    const ignored = /ignored[^\n]*127\.0\.0\.2:\d+|127\.0\.0\.2:\d+[^\n]*ignored/i.exec(bob.stdout);
    console.log(`session_unknown from 127.0.0.2:${fake.udpPort}: still logged in; ` +
      `trace says: ${ignored?.[0] ?? '(no "ignored" line)'}`);
    assert.ok(ignored, 'with --trace, no "ignored … 127.0.0.2:port" line');

    // The registry's address, another port.
    sentAt = bob.stdout.length;
    await datagramFrom('127.0.0.1', 0, target, sessionUnknown);
    await stillLoggedIn(sentAt, 'a session_unknown from the registry\'s address and another port');
    console.log('session_unknown from 127.0.0.1:<another port>: still logged in');

    // A flood of them, 500 from 127.0.0.3 in about half a second: still logged in, a few lines.
    sentAt = bob.stdout.length;
    const flood = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => flood.bind(fake.udpPort, '127.0.0.3', resolve));
    for (let i = 0; i < 500; i++) {
      flood.send(Buffer.from(sessionUnknown), target.port, target.address);
      if (i % 10 === 9) await sleep(10);
    }
    await sleep(300);
    flood.close();
    const floodLines = bob.stdout.slice(sentAt).split('\n').filter((line) => /ignored/i.test(line));
    await stillLoggedIn(sentAt, 'a flood of 500 session_unknown from 127.0.0.3');
    console.log(`500 session_unknown datagrams from 127.0.0.3: still logged in; ` +
      `${floodLines.length} "ignored" lines printed (with --trace)`);
    assert.ok(floodLines.length <= 3, `${floodLines.length} "ignored" lines for one flood`);

    // The registry itself: back to Login (so the checks above can fail).
    fake.udp.send(Buffer.from(sessionUnknown), target.port, target.address);
    await bob.waitFor(/Login — username/, 5000);
    console.log('session_unknown from the registry\'s own address and port: back to Login');

    // The check must not lock out the real registry when it is named rather than numbered.
    const hellosBefore = fake.hellos.length;
    const named = await spawned.client(fake.tcpPort, fake.udpPort,
      ['--server', 'localhost', '--registry-timeout-ms', '3000']);
    await logIn(named);
    await waitUntil(() => fake.hellos.length > hellosBefore, 5000,
      'a hello from the client started with --server localhost');
    const namedTarget = fake.clientUdp;
    fake.udp.send(Buffer.from(sessionUnknown), namedTarget.port, namedTarget.address);
    await named.waitFor(/Login — username/, 5000);
    console.log(
      'with --server localhost, session_unknown from the registry still ends the session',
    );
  } finally {
    await spawned.stopAll();
    fake.close();
  }
});

// ---------------------------------------------------------------------------------------------
// 3. What the registry sends is checked like what peers send
// ---------------------------------------------------------------------------------------------

test('3. hostile registry answers: escape codes and ../ never reach the screen or the disk; ' +
  'heartbeatMs is clamped', async () => {
  const fake = await FakeRegistry.start();
  const spawned = new SpawnedProcesses();
  const parent = mkdtempSync(path.join(os.tmpdir(), 'p2p-attacks-'));
  const historyDir = path.join(parent, 'hist');
  // A peer that accepts any call and says something, so a client that wrongly trusted a `found`
  // would chat, and write history under the name the registry gave.
  const peerServer = net.createServer((socket) => {
    socket.on('error', () => {});
    socket.once('data', () => {
      socket.write('{"type":"chat_accept"}\n');
      socket.write(`{"type":"msg","text":"written where?","at":${Date.now()}}\n`);
    });
  });
  await new Promise<void>((resolve) => peerServer.listen(0, '127.0.0.1', resolve));
  const peerPort = (peerServer.address() as net.AddressInfo).port;
  const osc52 = '\u001b]52;c;cm0gLXJmIH4K\u0007';
  const clear = '\u001b[2J';
  const title = '\u001b]0;pwned\u0007';
  const found = (username: string) => ({
    type: 'found', username, host: '127.0.0.1', port: peerPort, ticket: 'v1.x.y.1.ab',
  });
  let hostileLists = 0;
  fake.answer = (request, n) => {
    if (request.type === 'register') return { type: 'registered', username: `${osc52}eve` };
    if (request.type === 'login' && n === 1) {
      return {
        type: 'logged_in', username: `${clear}bob`, token: fake.token, heartbeatMs: 200,
        timeoutMs: 10_000, storage: 'memory',
      };
    }
    if (request.type === 'login' && n === 2) {
      return {
        type: 'logged_in', username: '../../x', token: fake.token, heartbeatMs: 200,
        timeoutMs: 10_000, storage: 'memory',
      };
    }
    if (request.type === 'search' && request.username === 'alice') return found(`${title}alice`);
    if (request.type === 'search' && request.username === 'carol') return found('../../x');
    if (request.type === 'search' && request.username === 'dave') {
      return { ...found('dave'), host: `${title}` };
    }
    if (request.type === 'search' && request.username === 'erin') {
      return { ...found('erin'), port: 0 };
    }
    // An error's message is free text: printed, but with its control and bidi characters replaced.
    if (request.type === 'search' && request.username === 'frank') {
      return { type: 'error', code: 'not_online', message: `frank ${osc52}is \u202Eenilno ton` };
    }
    // (The client also lists at start and after login: the hostile answers go to "/list b".)
    if (request.type === 'list' && request.prefix === 'b' && ++hostileLists === 1) {
      return { type: 'online', users: ['bob', `${clear}x`], total: 2 };
    }
    // valid, but not an answer to list
    if (request.type === 'list' && request.prefix === 'b') return { type: 'logged_out' };
    if (request.type === 'login' && n === 3) fake.heartbeatMs = 1;
    if (request.type === 'login' && n === 4) fake.heartbeatMs = 2 ** 31;
    return undefined;
  };
  try {
    const bob = await spawned.client(fake.tcpPort, fake.udpPort,
      ['--registry-timeout-ms', '3000', '--history', historyDir]);
    let invalid = 0;
    const expectInvalid = async (what: string) => {
      await bob.waitFor(INVALID_ANSWER, 5000).catch((error: Error) => {
        throw new Error(`${what}: ${error.message}`);
      });
      invalid++;
    };

    // registered with an OSC 52 clipboard write in the name: stays on Register.
    bob.type('/register');
    await bob.waitFor(/Register — new username/);
    bob.type('eve');
    await bob.waitFor('new password: ');
    bob.type('secret');
    await bob.waitFor('new password again: ');
    bob.type('secret');
    await expectInvalid('registered with OSC 52');
    await bob.waitFor(/Register — new username/);
    bob.type('/login');
    await bob.waitFor(/Login — username/);

    // logged_in with a screen clear, then with ../../x: stays on Login.
    for (const what of ['logged_in with a screen clear', 'logged_in with ../../x']) {
      bob.type('bob');
      await bob.waitFor('password');
      bob.type('secret');
      await expectInvalid(what);
      await bob.waitFor(/Login — username/);
    }

    // A good login, whose heartbeatMs is 1: hellos are clamped to at most ~10 a second.
    await logIn(bob);
    const loginAt = Date.now();
    await sleep(2000);
    const fastHellos = fake.hellos
      .filter((hello) => hello.at >= loginAt && hello.at < loginAt + 2000).length;
    console.log(`heartbeatMs 1 from the registry: ${fastHellos / 2} hellos per second`);
    assert.ok(fastHellos / 2 <= 11,
      `${fastHellos / 2} hellos a second (heartbeatMs must be clamped to ≥ 100 ms)`);

    // found with a title change, with ../../x, with a host that is an escape code, with port 0;
    // online with a screen clear as a name, an answer of the wrong type: each time, stays on
    // Search.
    for (const [typed, what] of [
      ['alice', 'found with a title change'], ['carol', 'found with ../../x'],
      ['dave', 'found with an escape-code host'], ['erin', 'found with port 0'],
      ['/list b', 'online with a screen clear'], ['/list b', 'logged_out in answer to list'],
    ]) {
      bob.type(typed);
      await expectInvalid(what);
      await bob.waitFor('bob> ');
    }
    // An error whose message holds OSC 52 and U+202E: shown, neutralised, still on Search.
    bob.type('frank');
    const errorShown = (await bob.waitFor(/frank[^\n]*enilno ton/))[0];
    await bob.waitFor('bob> ');
    console.log(`error message with OSC 52 and U+202E from the registry shown as: ` +
      `${JSON.stringify(errorShown)}`);
    assert.ok(!errorShown.includes('\u202E'), 'U+202E from the registry reached the screen');

    // A login whose heartbeatMs is 2^31: no TimeoutOverflowWarning, no flood, no crash.
    bob.type('/logout');
    await bob.waitFor(/Login — username/);
    await logIn(bob);
    const slowLoginAt = Date.now();
    await sleep(1500);
    const slowHellos = fake.hellos.filter((hello) => hello.at >= slowLoginAt).length;
    bob.type('/list');
    await bob.waitFor(/Online \(1\)/);
    const warned = /TimeoutOverflowWarning/.test(bob.stdout + bob.stderr);
    console.log(`heartbeatMs 2^31 from the registry: ${slowHellos} hellos in 1.5 s; ` +
      `TimeoutOverflowWarning ${warned ? 'printed' : 'not printed'}`);
    assert.ok(!warned, 'Node\'s TimeoutOverflowWarning reached the user');
    assert.ok(slowHellos <= 3, `${slowHellos} hellos in 1.5 s with heartbeatMs 2^31`);
    assert.equal(bob.exitCode, null);

    // Nothing raw reached the screen: over pipes with NO_COLOR the client prints no escape codes
    // at all, so any ESC or BEL would be the attacker's.
    const escapes = count(bob.stdout + bob.stderr, ESC) + count(bob.stdout + bob.stderr, '\u0007');
    const files = readdirSync(parent, { recursive: true }).map(String);
    console.log(`invalid answers reported: ${invalid}; ESC/BEL bytes on screen: ${escapes}; ` +
      `files under the history's parent: ${JSON.stringify(files)}`);
    assert.equal(escapes, 0, 'an escape code from the registry reached the terminal');
    assert.equal(invalid, 9);
    // Nothing outside the history folder, and nothing in it named after the attacker's names.
    for (const file of files) {
      assert.ok(file === 'hist' || file.startsWith(`hist${path.sep}`),
        `${file} was created outside the history folder`);
      assert.ok(!(/x\.log$|alice/.test(file) || file.includes('\u001b')),
        `${file} is named after a name the registry made up`);
    }
    if (existsSync(historyDir)) assert.ok(statSync(historyDir).isDirectory());
  } finally {
    await spawned.stopAll();
    fake.close();
    peerServer.close();
    rmSync(parent, { recursive: true, force: true });
  }
});

test('3b. names made only of dots (valid usernames) keep the history inside --history DIR',
  async () => {
  // "." and ".." follow the username rule, so a registry may well hand them out; as path parts
  // they would climb out of the history folder.
  const fake = await FakeRegistry.start();
  const spawned = new SpawnedProcesses();
  const peers: RawPeer[] = [];
  const parent = mkdtempSync(path.join(os.tmpdir(), 'p2p-dots-'));
  const historyDir = path.join(parent, 'hist');
  try {
    const you = await spawned.client(fake.tcpPort, fake.udpPort,
      ['--registry-timeout-ms', '3000', '--history', historyDir]);
    const chatPort = await logIn(you, '..');
    const caller = await RawPeer.connect(chatPort);
    peers.push(caller);
    caller.send({
      type: 'chat_request', from: '.',
      ticket: makeTicket(fake.token, '.', '..', Date.now() + 60_000),
    });
    await you.waitFor('. wants to chat');
    you.type('y');
    assert.equal(await caller.nextLine(), '{"type":"chat_accept","acks":true}');
    caller.send({ type: 'msg', text: 'where does this go', at: Date.now() });
    await you.waitFor('.: where does this go');
    you.type('and this');
    await you.waitFor(/\.\.: and this|and this/);
    caller.send({ type: 'bye' });
    await you.waitFor('. left');
    const files = readdirSync(parent, { recursive: true }).map(String);
    const written = files.filter((file) => statSync(path.join(parent, file)).isFile());
    console.log(
      `user ".." chatting with ".": files under the history's parent: ${JSON.stringify(files)}`,
    );
    for (const file of files) {
      assert.ok(file === 'hist' || file.startsWith(`hist${path.sep}`),
        `${file} was created outside the history folder`);
    }
    assert.ok(written.some((file) =>
      readFileSync(path.join(parent, file), 'utf8').includes('where does this go')),
      'the conversation was not written inside the history folder');
  } finally {
    for (const peer of peers) peer.destroy();
    await spawned.stopAll();
    fake.close();
    rmSync(parent, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------------------------
// 4. Tickets are single-use; names are ASCII
// ---------------------------------------------------------------------------------------------

test('4. a ticket replayed after its chat ended gets bad_ticket; ' +
  '"\\u212Aate" with a ticket for kate is refused', async () => {
  const fake = await FakeRegistry.start();
  const spawned = new SpawnedProcesses();
  const peers: RawPeer[] = [];
  try {
    const { bob, chatPort } = await loggedInBob(spawned, fake);
    const ticket = fake.ticket('alice');
    const alice = await RawPeer.connect(chatPort);
    peers.push(alice);
    alice.send({ type: 'chat_request', from: 'alice', ticket });
    await bob.waitFor('alice wants to chat');
    bob.type('y');
    assert.equal(await alice.nextLine(), '{"type":"chat_accept","acks":true}');
    alice.send({ type: 'msg', text: 'first and only chat', at: Date.now() });
    await bob.waitFor('alice: first and only chat');
    alice.send({ type: 'bye' });
    await bob.waitFor('alice left');
    await bob.waitFor('bob> ');

    // Seconds later, well within the ticket's 60 s: the same ticket again.
    const replay = await RawPeer.connect(chatPort);
    peers.push(replay);
    replay.send({ type: 'chat_request', from: 'alice', ticket });
    const answer = await replay.nextLine(5000)
      .catch((error: Error) => `(no answer: ${error.message})`);
    await sleep(300);
    const shown = count(bob.stdout, 'alice wants to chat');
    console.log(
      `ticket replayed after the chat ended: answered ${answer}; request shown ${shown} time(s)`,
    );
    assert.equal(shown, 1, 'the replayed ticket was shown to the user again');
    assert.deepEqual(JSON.parse(answer), { type: 'chat_decline', reason: 'bad_ticket' });

    // KELVIN SIGN: lower-cased, "\u212Aate" is "kate"; it must be refused before that.
    const kelvin = await RawPeer.connect(chatPort);
    peers.push(kelvin);
    kelvin.send({ type: 'chat_request', from: '\u212Aate', ticket: fake.ticket('kate') });
    await waitUntil(() => kelvin.closed || kelvin.lines.length > 0, 5000,
      'an answer to the KELVIN SIGN request');
    await sleep(300);
    const kelvinAnswer = kelvin.lines[0] ?? '(closed without an answer)';
    console.log(`"\\u212Aate" with a ticket for kate: ${kelvinAnswer}`);
    assert.ok(!/ate wants to chat/i.test(bob.stdout),
      'the KELVIN SIGN caller was shown to the user');
    assert.ok(!kelvin.lines.some((line) => line.includes('chat_accept')));
    if (kelvin.lines.length > 0) assert.match(kelvinAnswer, /chat_decline/);
  } finally {
    for (const peer of peers) peer.destroy();
    await spawned.stopAll();
    fake.close();
  }
});

test('4c. with the real registry: a ticket from a real search works once, then gets bad_ticket',
  async () => {
  // The same replay as in 4, with a ticket the real server.ts minted, so the fake registry's
  // tickets above are known to be the real thing.
  const server = await startTestServer({ timeoutMs: 60_000 });
  const spawned = new SpawnedProcesses();
  const peers: RawPeer[] = [];
  try {
    const tcpPort = server.tcpPort;
    const udpPort = server.udpPort;
    const { client: bob, chatPort } = await spawned.loggedInClient(tcpPort, udpPort, 'bob');
    const token = await registerAndLogin(tcpPort, 'alice');
    const registry = await LineClient.connect(tcpPort);
    const found = await registry.request({ type: 'search', token, username: 'bob' });
    registry.close();
    assert.equal(found.type, 'found');
    const ticket = String(found.ticket);
    const alice = await RawPeer.connect(Number(found.port));
    peers.push(alice);
    alice.send({ type: 'chat_request', from: 'alice', ticket });
    await bob.waitFor('alice wants to chat');
    bob.type('y');
    assert.equal(await alice.nextLine(), '{"type":"chat_accept","acks":true}');
    alice.send({ type: 'bye' });
    await bob.waitFor('alice left');
    const replay = await RawPeer.connect(chatPort, '127.0.0.2');
    peers.push(replay);
    replay.send({ type: 'chat_request', from: 'alice', ticket });
    const answer = await replay.nextLine(5000)
      .catch((error: Error) => `(no answer: ${error.message})`);
    console.log(`real registry's ticket replayed after its chat: ${answer}`);
    assert.deepEqual(JSON.parse(answer), { type: 'chat_decline', reason: 'bad_ticket' });
    assert.equal(count(bob.stdout, 'alice wants to chat'), 1);
  } finally {
    for (const peer of peers) peer.destroy();
    await spawned.stopAll();
    await server.close();
  }
});

test('4b. 1000 more valid tickets used while the user decides: ' +
  'the first ticket is still refused, and the user is not flooded', async () => {
  // Valid tickets come only from the registry, but anyone logged in can ask it for one per
  // search. A replay table that forgets unexpired tickets when it is full lets an old one back in.
  const fake = await FakeRegistry.start();
  const spawned = new SpawnedProcesses();
  const peers: RawPeer[] = [];
  try {
    const { bob, chatPort } = await loggedInBob(spawned, fake, ['--decide-timeout-ms', '60000']);
    // alice's call, declined: her ticket is now used.
    const aliceTicket = fake.ticket('alice');
    const alice = await RawPeer.connect(chatPort);
    peers.push(alice);
    alice.send({ type: 'chat_request', from: 'alice', ticket: aliceTicket });
    await bob.waitFor('alice wants to chat');
    bob.type('n');
    assert.match(await alice.nextLine(), /chat_decline/);
    await bob.waitFor('bob> ');
    // carol's call is shown; bob takes his time.
    const carol = await RawPeer.connect(chatPort, '127.0.0.9');
    peers.push(carol);
    carol.send({ type: 'chat_request', from: 'carol', ticket: fake.ticket('carol') });
    await bob.waitFor('carol wants to chat');
    const since = bob.stdout.length;

    // 1000 callers with fresh valid tickets, 16 at a time from four addresses: each is busy.
    const startedAt = Date.now();
    const reasons = new Map<string, number>();
    let next = 0;
    const worker = async (lane: number) => {
      while (next < 1000) {
        const i = next++;
        const peer = await RawPeer.connect(chatPort, `127.0.0.${(lane % 4) + 1}`);
        peer.send({ type: 'chat_request', from: `m${i}`, ticket: fake.ticket(`m${i}`) });
        const answer = await peer.nextLine(5000).catch(() => '(none)');
        const reason = answer.startsWith('{') ? String(JSON.parse(answer).reason) : answer;
        reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
        peer.destroy();
      }
    };
    await Promise.all(Array.from({ length: 16 }, (_, lane) => worker(lane)));
    const took = Date.now() - startedAt;
    await sleep(500);
    const printed = linesSince(bob, since);
    console.log(`1000 valid calls while deciding, in ${took} ms: ` +
      `answers ${JSON.stringify(Object.fromEntries(reasons))}; ` +
      `${printed.length} lines printed meanwhile`);
    for (const shown of printed.slice(0, 3)) console.log(`  | ${shown.slice(0, 160)}`);

    // alice's ticket, 1000 tickets later and well within its 60 s.
    const replay = await RawPeer.connect(chatPort, '127.0.0.5');
    peers.push(replay);
    replay.send({ type: 'chat_request', from: 'alice', ticket: aliceTicket });
    const answer = await replay.nextLine(5000)
      .catch((error: Error) => `(no answer: ${error.message})`);
    console.log(`alice's used ticket replayed after 1000 others: ${answer}`);
    assert.deepEqual(JSON.parse(answer), { type: 'chat_decline', reason: 'bad_ticket' });
    assert.ok(printed.length <= 10, `${printed.length} lines printed for 1000 calls while busy`);
    // carol's call is still there to answer.
    bob.type('y');
    assert.equal(await carol.nextLine(), '{"type":"chat_accept","acks":true}');
  } finally {
    for (const peer of peers) peer.destroy();
    await spawned.stopAll();
    fake.close();
  }
});

// ---------------------------------------------------------------------------------------------
// 5. Peer text cannot rearrange the screen
// ---------------------------------------------------------------------------------------------

test('5. bidi controls and invisible separators in peer text never reach the screen ' +
  'or the history; ZWJ emoji stay', async () => {
  const fake = await FakeRegistry.start();
  const spawned = new SpawnedProcesses();
  const peers: RawPeer[] = [];
  const historyDir = mkdtempSync(path.join(os.tmpdir(), 'p2p-bidi-'));
  // The issue's list, then the rest of the contract's set.
  const dangerous = [
    0x202e, 0x2066, 0x2067, 0x2068, 0x2069, 0x200b, 0x2028, 0x2029, 0x061c, 0x200e, 0x200f, 0xfeff,
    0x202a, 0x202b, 0x202c, 0x202d, 0x2060, 0x2061, 0x2062, 0x2063, 0x2064,
  ].map((code) => String.fromCodePoint(code));
  const family = '\u{1F468}\u200D\u{1F469}\u200D\u{1F467}';
  try {
    const { bob, chatPort } = await loggedInBob(spawned, fake, ['--history', historyDir]);
    const alice = await RawPeer.connect(chatPort);
    peers.push(alice);
    alice.send({ type: 'chat_request', from: 'alice', ticket: fake.ticket('alice') });
    await bob.waitFor('alice wants to chat');
    bob.type('y');
    assert.equal(await alice.nextLine(), '{"type":"chat_accept","acks":true}');
    const text = `start ${dangerous.map((char, i) => `${i}${char}`).join('')} family ${family} end`;
    alice.send({ type: 'msg', text, at: Date.now() });
    await bob.waitFor(/alice: start[^\n]*end/);
    alice.send({ type: 'bye' });
    await bob.waitFor('alice left');

    const shownLine = /alice: start[^\n]*end/.exec(bob.stdout)![0];
    const logFile = path.join(historyDir, 'bob', 'alice.log');
    const history = existsSync(logFile) ? readFileSync(logFile, 'utf8') : '';
    const onScreen = dangerous.filter((char) => bob.stdout.includes(char));
    const inHistory = dangerous.filter((char) => history.includes(char));
    const codes = (chars: string[]) => chars
      .map((char) => `U+${char.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`)
      .join(' ');
    console.log(`${dangerous.length} bidi/invisible code points sent: ` +
      `${dangerous.length - onScreen.length} neutralised on screen ` +
      `(${count(shownLine, '\uFFFD')} shown as U+FFFD), ` +
      `${dangerous.length - inHistory.length} in the history; ` +
      `left on screen: [${codes(onScreen)}], in history: [${codes(inHistory)}]; ` +
      `ZWJ family intact on screen: ${shownLine.includes(family)}, ` +
      `in history: ${history.includes(family)}`);
    assert.ok(history.includes('start'), `no history written to ${logFile}`);
    assert.deepEqual(codes(onScreen), '', 'bidi or invisible code points reached the screen');
    assert.deepEqual(codes(inHistory), '',
      'bidi or invisible code points reached the history file');
    assert.ok(shownLine.includes(family), 'the ZWJ family emoji was broken on screen');
    assert.ok(history.includes(family), 'the ZWJ family emoji was broken in the history');
  } finally {
    for (const peer of peers) peer.destroy();
    await spawned.stopAll();
    fake.close();
    rmSync(historyDir, { recursive: true, force: true });
  }
});
