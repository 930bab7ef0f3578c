/**
 * test/client-input.test.ts — where typed lines go (issue 16, items 1 to 3 and 16), wherever
 * pipes can show it: a real registry process, real client.ts processes fed through a pipe, and a
 * peer written by hand (RawPeer) where the test must choose what the peer answers. What only a
 * screen shows (a draft, a paste, Ctrl-C, the bell) is in terminal.test.ts.
 *
 *   printf 'alice\npw\n/list\n/quit\n' ──stdin──▶ client.ts ──TCP──▶ server.ts ◀── RawPeer
 */

import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { LOGIN_LIST_TAG, initialState, transition } from '../client.ts';
import type { ClientEvent, ClientSettings, ClientState, Effect } from '../client.ts';
import { makeTicket } from '../protocol.ts';
import {
  STARTUP_MS, SpawnedProcesses, registerAccount, spawnScript, waitUntil,
} from './helpers.ts';
import type { ScriptProcess, SpawnedServer } from './helpers.ts';
import { RawPeer } from './terminal-helpers.ts';

const spawned = new SpawnedProcesses();
let registry: Promise<SpawnedServer> | undefined;
const clients: ScriptProcess[] = [];

/** One registry process for the whole file (each test uses its own user names). */
function theRegistry(): Promise<SpawnedServer> {
  registry ??= spawned.server(['--heartbeat-ms', '200', '--timeout-ms', '30000']);
  return registry;
}

after(async () => {
  RawPeer.closeAll();
  await Promise.all(clients.map(async (client) => {
    if (client.exitCode === null) client.kill('SIGKILL');
    await client.exited;
  }));
  await spawned.stopAll();
});

/** client.ts with all of `script` already in its stdin; the pipe ends when `end` is set. */
async function pipedClient(script: string[], { end = true, args = [] as string[] } = {}) {
  const { tcpPort, udpPort } = await theRegistry();
  const client = spawnScript('client.ts', ['--tcp-port', String(tcpPort),
    '--udp-port', String(udpPort), '--registry-timeout-ms', '3000', ...args]);
  clients.push(client);
  client.child.stdin!.write(script.map((line) => `${line}\n`).join(''));
  if (end) client.endInput();
  return client;
}

/** Waits for the client to exit; returns its code, with its output in the failure message. */
async function exitCode(client: ScriptProcess, ms = 15_000): Promise<number | null> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const code = await Promise.race([client.exited,
    new Promise<'running'>((resolve) => (timer = setTimeout(() => resolve('running'), ms)))]);
  clearTimeout(timer);
  assert.notEqual(code, 'running', `still running after ${ms} ms:\n${client.stdout}`);
  return code as number | null;
}

test('item 1: `alice pw /list /quit` through a pipe logs in, lists, then quits, in that order',
  async () => {
    const { server, tcpPort } = await theRegistry();
    await registerAccount(tcpPort, 'pipe-ann', 'pw-ann');
    const client = await pipedClient(['pipe-ann', 'pw-ann', '/list', '/quit']);
    assert.equal(await exitCode(client, STARTUP_MS), 0);
    const out = client.stdout;
    const order = ['Logged in as pipe-ann', 'Online (', 'Bye.'].map((text) => out.indexOf(text));
    console.log(`piped script: ${order.join(' < ')} (positions in stdout)`);
    assert.ok(order.every((at, i) => at >= 0 && (i === 0 || at > order[i - 1])), out);
    assert.match(out, /Online \(\d+\): [^\n]*pipe-ann/);
    await server.waitFor(/ logout user=pipe-ann /, 5000);
  });

test('item 1: without /quit, the answer to the last /list is printed before the client leaves',
  async () => {
    const { server, tcpPort } = await theRegistry();
    await registerAccount(tcpPort, 'pipe-bea', 'pw-bea');
    const client = await pipedClient(['pipe-bea', 'pw-bea', '/list pipe-b']);
    assert.equal(await exitCode(client, STARTUP_MS), 0);
    assert.match(client.stdout, /Online \(1\): pipe-bea\n[^]*Bye\./, client.stdout);
    await server.waitFor(/ logout user=pipe-bea /, 5000);
  });

test('item 1: a script sees every answer in order: the check at start, the login\'s list, a ' +
  'lookup of someone offline, then Bye (the /quit behind the lookup waits for its answer)',
  async () => {
    const { tcpPort } = await theRegistry();
    await registerAccount(tcpPort, 'pipe-eli', 'pw-eli');
    const client = await pipedClient(['pipe-eli', 'pw-eli', '/search pipe-nobody', 'hi', '/quit']);
    assert.equal(await exitCode(client, STARTUP_MS), 0);
    const out = client.stdout;
    const order = [': reachable', 'Login —', 'Logged in as pipe-eli', 'Online now (',
      'Looking up pipe-nobody', 'pipe-nobody is not online.', 'Not sent: 1 line', 'Bye.']
      .map((text) => out.indexOf(text));
    console.log(`piped lookup: ${order.join(' < ')} (positions in stdout)`);
    assert.ok(order.every((at, i) => at >= 0 && (i === 0 || at > order[i - 1])), out);
  });

test('item 1: lines behind a call wait for the peer\'s answer, then go to that chat in order; ' +
  'a /list there holds the next lines until its answer',
  async () => {
    const { tcpPort, udpPort } = await theRegistry();
    await registerAccount(tcpPort, 'pipe-cat', 'pw-cat');
    const dan = await RawPeer.login(tcpPort, udpPort, 'pipe-dan');
    const client = await pipedClient(['pipe-cat', 'pw-cat', 'pipe-dan', 'first', '/list', 'second',
      '/quit']); // /quit too waits its turn: it once jumped the queue, and no chat happened
    const chat = await dan.waitForChat(STARTUP_MS);
    await chat.waitFor((message) => message.type === 'bye', 'bye after /quit');
    assert.deepEqual(chat.texts(), ['first', 'second']);
    assert.equal(await exitCode(client), 0);
    // The chat's /list held "second" and /quit until its answer came.
    assert.match(client.stdout, /Online \(\d+\): [^\n]*pipe-dan[^]*Bye\./, client.stdout);
  });

test('item 2: while waiting for a peer, /help and /list are answered at once', async () => {
  const { tcpPort, udpPort } = await theRegistry();
  await registerAccount(tcpPort, 'wait-eve', 'pw-eve');
  const fay = await RawPeer.login(tcpPort, udpPort, 'wait-fay', { accept: false });
  const client = await pipedClient(['wait-eve', 'pw-eve', 'wait-fay'], { end: false });
  await client.waitFor('Waiting for wait-fay', STARTUP_MS);
  client.type('/help');
  await client.waitFor(/\/cancel gives up/i);
  client.type('/list wait-');
  await client.waitFor(/Online \(2\): wait-eve, wait-fay/);
  assert.equal(fay.chat, null, 'the call was answered');
  client.type('/cancel');
  await client.waitFor('Cancelled the request to wait-fay');
  client.type('/quit');
  assert.equal(await exitCode(client), 0);
});

test('item 3: when a call is declined, a line a script meant for the chat is not run on Search',
  async () => {
    const { tcpPort, udpPort } = await theRegistry();
    await registerAccount(tcpPort, 'decl-gus', 'pw-gus');
    const hal = await RawPeer.login(tcpPort, udpPort, 'decl-hal', { accept: false });
    await registerAccount(tcpPort, 'thanks', 'pw-thanks'); // a user the line would have called
    const client = await pipedClient(['decl-gus', 'pw-gus', 'decl-hal', 'thanks']);
    await waitUntil(() => hal.connections.some((c) => c.received.length > 0), 10_000,
      'the chat_request');
    hal.connections[0].send({ type: 'chat_decline', reason: 'declined' });
    assert.equal(await exitCode(client), 0);
    assert.match(client.stdout, /declined/);
    assert.match(client.stdout, /Not sent: 1 line/);
    assert.doesNotMatch(client.stdout, /Looking up thanks/, client.stdout);
  });

test('item 16: --no-bell is a flag, and a pipe never gets the bell, even for a request',
  async () => {
    const { tcpPort, udpPort } = await theRegistry();
    for (const args of [[], ['--no-bell']]) {
      const name = `bell-ida${args.length}`;
      await registerAccount(tcpPort, name, 'pw-ida');
      const client = await pipedClient([name, 'pw-ida'], { end: false, args });
      await client.waitFor(`${name}> `, STARTUP_MS);
      const caller = await RawPeer.login(tcpPort, udpPort, `bell-jo${args.length}`);
      await caller.call(name);
      await client.waitFor('wants to chat');
      client.type('n');
      await client.waitFor(/Declined/);
      client.endInput();
      assert.equal(await exitCode(client), 0);
      assert.ok(!client.stdout.includes('\x07'), `a BEL went down the pipe (${args})`);
    }
  });

// ---- The same rules in transition() alone: no sockets, no clock ----

const SETTINGS: ClientSettings = {
  server: '127.0.0.1', tcpPort: 5000, udpPort: 5001, chatPort: 0, historyDir: undefined,
  trace: false, bell: true, registryTimeoutMs: 5000, answerTimeoutMs: 45_000,
  decideTimeoutMs: 30_000, greetingTimeoutMs: 5000, maxPendingPeers: 16,
  maxPendingPeersPerAddress: 4, dropReportMs: 5000, plain: true, dataDir: '/nonexistent',
  keyFile: undefined,
};
const T0 = 1_800_000_000_000;

/** Feeds [event, at] pairs in order; returns the last state and every effect. */
function feed(state: ClientState, ...events: Array<[ClientEvent, number?]>) {
  const effects: Effect[] = [];
  for (const [event, at = T0] of events) {
    const step = transition(state, event, at);
    state = step.state;
    effects.push(...step.effects);
  }
  const said = effects.flatMap((e) => (e.do === 'say' ? [e.text] : []));
  return { state, effects, said, sent: sentTexts(effects) };
}
const sentTexts = (effects: Effect[]) => effects.flatMap((e) =>
  e.do === 'send' && e.message.type === 'msg' ? [e.message.text] : []);
const typed = (line: string, piped = false): [ClientEvent] => [{ type: 'typed', line, piped }];

/** Logged in as ann, then in a chat with bob (who called), at time T0. */
function annChattingWithBob(settings = SETTINGS): ClientState {
  const login = { type: 'login' as const, username: 'ann', password: 'pw', chatPort: 7000 };
  const reply = { type: 'logged_in' as const, username: 'ann', token: 'tok-ann', heartbeatMs: 1000,
    timeoutMs: 10_000, storage: 'memory' as const };
  const ticket = makeTicket('tok-ann', 'bob', 'ann', T0 + 60_000);
  return feed(initialState(settings, '127.0.0.1:5001', 7000), typed('ann'), typed('pw'),
    [{ type: 'answer', request: login, reply, tag: 0 }],
    [{ type: 'answer', request: { type: 'list', token: 'tok-ann' },
      reply: { type: 'online', users: ['ann'], total: 1 }, tag: LOGIN_LIST_TAG }],
    [{ type: 'peer_arrived', conn: 1, address: '127.0.0.1', remote: '127.0.0.1:4000' }],
    [{ type: 'peer_said', conn: 1, remote: 'x', message: { type: 'chat_request', from: 'bob',
      ticket } }], typed('y')).state;
}

test('item 3: a typed line the waiting screen cannot take is dropped with a note, a piped one ' +
  'waits', () => {
  const chatting = annChattingWithBob();
  const search = feed(chatting, typed('/back')).state;
  const calling = feed(search, typed('carol')).state;
  assert.equal(calling.screen.name, 'calling');
  const byHand = feed(calling, typed('thanks'), typed('/cancel'));
  assert.ok(byHand.said.some((line) => /Not sent: "thanks"; still waiting for carol/.test(line)));
  assert.equal(byHand.state.screen.name, 'search');
  assert.equal(byHand.effects.filter((e) => e.do === 'ask').length, 0, 'looked up "thanks"');
  const piped = feed(calling, typed('thanks', true));
  assert.deepEqual(piped.state.typedAhead, ['thanks']);
});

test('item 4: pasted lines in a chat are text; more than three wait for a yes; elsewhere none run',
  () => {
    const chatting = annChattingWithBob();
    const two = feed(chatting, [{ type: 'pasted', lines: ['/back', '//x'] }]);
    assert.deepEqual(two.sent, ['/back', '//x']);
    assert.equal(two.state.screen.name, 'chat');
    const five = ['a', 'b', 'c', 'd', 'e'];
    const asked = feed(chatting, [{ type: 'pasted', lines: five }]);
    assert.deepEqual(asked.sent, []);
    assert.ok(asked.effects.some((e) => e.do === 'prompt' && /Send 5 pasted lines/.test(e.text)));
    assert.deepEqual(feed(asked.state, typed('y')).sent, five);
    assert.deepEqual(feed(asked.state, typed('n')).sent, []);
    const onSearch = feed(feed(chatting, typed('/back')).state,
      [{ type: 'pasted', lines: ['/logout', 'carol'] }]);
    assert.deepEqual(onSearch.effects.filter((e) => e.do === 'ask'), [], 'a pasted line ran');
  });

test('item 16: a request rings; a message rings after 30 s without typing, once; --no-bell', () => {
  const rings = (effects: Effect[]) => effects.filter((e) => e.do === 'bell').length;
  const msg = (text: string, at: number): [ClientEvent, number] =>
    [{ type: 'peer_said', conn: 1, remote: 'x', message: { type: 'msg', text, at } }, at];
  const chatting = annChattingWithBob(); // ann typed "y" at T0
  const soon = feed(chatting, msg('soon', T0 + 10_000));
  assert.equal(rings(soon.effects), 0);
  const later = feed(chatting, msg('later', T0 + 31_000), msg('again', T0 + 32_000));
  assert.equal(rings(later.effects), 1);
  const quiet = feed(annChattingWithBob({ ...SETTINGS, bell: false }), msg('later', T0 + 31_000));
  assert.equal(rings(quiet.effects), 0);
});

test('item 1: end of input waits for an answer on its way, for the registry timeout at most',
  () => {
    const search = feed(annChattingWithBob(), typed('/back')).state;
    const listing = feed(search, typed('/list', true), [{ type: 'input_ended' }]);
    assert.equal(listing.state.screen.name, 'asking');
    assert.ok(listing.effects.some((e) => e.do === 'timer' && e.name === 'input_end' &&
      e.ms === SETTINGS.registryTimeoutMs));
    const gaveUp = feed(listing.state, [{ type: 'timer', name: 'input_end', conn: 0 }]);
    assert.equal(gaveUp.state.screen.name, 'quitting');
  });
