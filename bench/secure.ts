/**
 * bench/secure.ts — what the secure channel (secure.ts) costs, next to the plain path, in one run.
 *
 *   npx tsx bench/secure.ts [--quick]        (Deno: deno run -A bench/secure.ts)
 *
 * Figures, each beside a baseline measured in the same run so the ratio holds on a busy machine:
 *   S1. connection set-up over loopback: TCP connect + XX handshake, vs TCP connect alone
 *   S2. handshake CPU, both sides in this process, vs one X25519 Diffie-Hellman (the ratio is
 *       roughly how many DH-sized steps a handshake takes)
 *   S3. a 100-byte line sealed and opened (CPU), vs what the plain path already does per line:
 *       JSON.stringify, to bytes, back to text, JSON.parse
 *   S4. a 100-byte line's round trip through an echo server over loopback, secure vs plain
 *   S5. the registry's check of one hello (decode, then the signature and counter), vs a plain
 *       registry's (decode, then the token looked up)
 *   S6. search requests answered one after another by a registry with a key (each over a new
 *       secure link, as the client asks), vs a plain registry
 *
 * Client and server share this process, so S1 and S4 count both sides' work. Standalone for now:
 * bench/run.ts does not call it yet.
 */

import { diffieHellman, generateKeyPairSync } from 'node:crypto';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { connect, formatMicros, formatMs, formatRatio, median } from './common.ts';
import { CipherState, generateKeyPair, Handshake, secureSocket } from '../secure.ts';
import {
  askRegistry, decodeDatagram, encodeDatagram, signedHello, signedHelloValid,
} from '../protocol.ts';
import type { LoggedIn, Request } from '../protocol.ts';
import { startServer } from '../server.ts';
import type { KeyPair } from '../secure.ts';

const QUICK = process.argv.includes('--quick');
const PROLOGUE = 'p2p-chat bench';
const MESSAGE = { type: 'msg', text: 'x'.repeat(64), at: 1_700_000_000_000 };
const LINE = JSON.stringify(MESSAGE) + '\n';

type Row = { figure: string; ours: string; baseline: string; ratio: string };

/** Median milliseconds of `runs` calls of `work`, after a tenth as many to warm up. */
async function timeEach(runs: number, work: () => unknown): Promise<number> {
  const samples: number[] = [];
  for (let i = 0; i < runs + Math.ceil(runs / 10); i++) {
    const started = performance.now();
    await work();
    if (i >= Math.ceil(runs / 10)) samples.push(performance.now() - started);
  }
  return median(samples);
}

/** Mean microseconds per call of a cheap synchronous `work`, over `runs` calls. */
function microsEach(runs: number, work: () => unknown): number {
  for (let i = 0; i < runs / 10; i++) work();
  const started = performance.now();
  for (let i = 0; i < runs; i++) work();
  return ((performance.now() - started) * 1000) / runs;
}

/** An echo server, plain or secure (as the responder, with `key`). */
async function echoServer(key: KeyPair | undefined) {
  const server = net.createServer(async (socket) => {
    socket.on('error', () => {});
    try {
      const stream = key ? await secureSocket(socket, { initiator: false, staticKey: key,
        prologue: PROLOGUE }) : socket;
      stream.on('error', () => {});
      stream.on('data', (chunk: Buffer) => stream.write(chunk));
    } catch { /* a failed handshake closed the socket already */ }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as net.AddressInfo).port, close: () => server.close() };
}

async function connectionSetUp(runs: number, serverKey: KeyPair, clientKey: KeyPair) {
  const plain = await echoServer(undefined);
  const secure = await echoServer(serverKey);
  try {
    const plainMs = await timeEach(runs, async () => (await connect(plain.port)).destroy());
    const secureMs = await timeEach(runs, async () => {
      const stream = await secureSocket(await connect(secure.port), {
        initiator: true, staticKey: clientKey, prologue: PROLOGUE,
        expectedRemoteKey: serverKey.publicKey,
      });
      stream.destroy();
    });
    return { plainMs, secureMs };
  } finally {
    plain.close();
    secure.close();
  }
}

async function roundTrips(runs: number, serverKey: KeyPair, clientKey: KeyPair) {
  const plain = await echoServer(undefined);
  const secure = await echoServer(serverKey);
  const measure = async (stream: net.Socket | Awaited<ReturnType<typeof secureSocket>>) => {
    let received = 0;
    let arrived = () => {};
    stream.on('data', (chunk: Buffer) => {
      received += chunk.length;
      if (received >= LINE.length) arrived();
    });
    const ms = await timeEach(runs, () => new Promise<void>((resolve) => {
      received = 0;
      arrived = resolve;
      stream.write(LINE);
    }));
    stream.destroy();
    return ms;
  };
  try {
    const plainSocket = await connect(plain.port);
    plainSocket.setNoDelay(true);
    const plainMs = await measure(plainSocket);
    const secureMs = await measure(await secureSocket(await connect(secure.port), {
      initiator: true, staticKey: clientKey, prologue: PROLOGUE,
    }));
    return { plainMs, secureMs };
  } finally {
    plain.close();
    secure.close();
  }
}

/** Searches per second, asked one after another as the client asks (a new connection each). */
async function searchRate(runs: number, serverKey: KeyPair | undefined, clientKey: KeyPair) {
  const server = await startServer({ host: '127.0.0.1', tcpPort: 0, udpPort: 0, log: () => {},
    identity: serverKey });
  const registry = { host: '127.0.0.1', port: server.tcpPort, name: 'bench' };
  const link = serverKey ? { staticKey: clientKey, expectedRemoteKey: serverKey.publicKey }
    : undefined;
  const ask = (request: Request) => askRegistry(request, registry, 5000, undefined, link);
  try {
    for (const username of ['alice', 'bob']) {
      await ask({ type: 'register', username, password: 'bench password' });
    }
    const login = await ask({ type: 'login', username: 'alice', password: 'bench password',
      chatPort: 7000 }) as LoggedIn;
    await ask({ type: 'login', username: 'bob', password: 'bench password', chatPort: 7001 });
    const search: Request = { type: 'search', token: login.token, username: 'bob' };
    for (let i = 0; i < runs / 10; i++) await ask(search); // warm up
    const started = performance.now();
    for (let i = 0; i < runs; i++) await ask(search);
    return Math.round(runs / ((performance.now() - started) / 1000));
  } finally {
    await server.close();
  }
}

async function main(): Promise<void> {
  const scale = QUICK ? 0.05 : 1;
  const serverKey = generateKeyPair();
  const clientKey = generateKeyPair();
  const rows: Row[] = [];

  const setUp = await connectionSetUp(Math.ceil(300 * scale), serverKey, clientKey);
  rows.push({ figure: 'S1. connection set-up (loopback)', ours: formatMs(setUp.secureMs),
    baseline: `${formatMs(setUp.plainMs)} (TCP connect)`,
    ratio: formatRatio(setUp.secureMs, setUp.plainMs) });

  const handshakeMicros = microsEach(Math.ceil(1000 * scale), () => {
    const initiator = new Handshake({ initiator: true, staticKey: clientKey });
    const responder = new Handshake({ initiator: false, staticKey: serverKey });
    responder.readMessage(initiator.writeMessage());
    initiator.readMessage(responder.writeMessage());
    responder.readMessage(initiator.writeMessage());
  });
  const ours = generateKeyPairSync('x25519');
  const theirs = generateKeyPairSync('x25519');
  const dhMicros = microsEach(Math.ceil(2000 * scale), () =>
    diffieHellman({ privateKey: ours.privateKey, publicKey: theirs.publicKey }));
  rows.push({ figure: 'S2. handshake CPU, both sides', ours: formatMicros(handshakeMicros),
    baseline: `${formatMicros(dhMicros)} (one X25519 DH)`,
    ratio: formatRatio(handshakeMicros, dhMicros) });

  const key = generateKeyPair().privateKey;
  const sender = new CipherState(key);
  const receiver = new CipherState(key);
  const none = Buffer.alloc(0);
  const sealMicros = microsEach(Math.ceil(50_000 * scale), () =>
    receiver.decryptWithAd(none, sender.encryptWithAd(none, Buffer.from(LINE))).toString());
  const plainMicros = microsEach(Math.ceil(50_000 * scale), () =>
    JSON.parse(Buffer.from(JSON.stringify(MESSAGE) + '\n').toString()));
  rows.push({ figure: `S3. ${LINE.length}-byte line sealed + opened`,
    ours: formatMicros(sealMicros),
    baseline: `${formatMicros(plainMicros)} (JSON line out and in)`,
    ratio: formatRatio(sealMicros, plainMicros) });

  const trips = await roundTrips(Math.ceil(3000 * scale), serverKey, clientKey);
  rows.push({ figure: `S4. ${LINE.length}-byte line round trip (loopback)`,
    ours: formatMs(trips.secureMs), baseline: `${formatMs(trips.plainMs)} (plain echo)`,
    ratio: formatRatio(trips.secureMs, trips.plainMs) });

  const helloKey = generateKeyPair().privateKey;
  const signed = encodeDatagram(signedHello(helloKey.toString('base64url'), 'alice', 's1', 1));
  const plainHello = encodeDatagram({ type: 'hello', username: 'alice', token: 't'.repeat(22) });
  const tokens = new Map([['t'.repeat(22), { helloCounter: 0 }]]);
  const signedMicros = microsEach(Math.ceil(50_000 * scale), () => {
    const hello = decodeDatagram(signed);
    return hello.ok && hello.message.type === 'hello' && signedHelloValid(helloKey, hello.message);
  });
  const tokenMicros = microsEach(Math.ceil(50_000 * scale), () => {
    const hello = decodeDatagram(plainHello);
    return hello.ok && hello.message.type === 'hello' && tokens.get(hello.message.token ?? '');
  });
  rows.push({ figure: 'S5. one hello checked by the registry', ours: formatMicros(signedMicros),
    baseline: `${formatMicros(tokenMicros)} (token looked up)`,
    ratio: formatRatio(signedMicros, tokenMicros) });

  const searches = Math.ceil(1000 * scale);
  const secureRate = await searchRate(searches, serverKey, clientKey);
  const plainRate = await searchRate(searches, undefined, clientKey);
  rows.push({ figure: 'S6. searches per second, one at a time', ours: `${secureRate}/s`,
    baseline: `${plainRate}/s (plain registry)`, ratio: formatRatio(plainRate, secureRate) });

  const columns: (keyof Row)[] = ['figure', 'ours', 'baseline', 'ratio'];
  const all = [{ figure: 'figure', ours: 'secure', baseline: 'baseline (same run)',
    ratio: 'ratio' }, ...rows];
  const widths = columns.map((column) => Math.max(...all.map((row) => row[column].length)));
  for (const row of all) {
    console.log(columns.map((column, i) => row[column].padEnd(widths[i])).join('  ').trimEnd());
  }
}

await main();
