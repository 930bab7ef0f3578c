/**
 * test/client-transitions.test.ts — the client's transition table on its own: no sockets, no
 * processes, no clock. Each test feeds events to transition() and checks the next state and the
 * effects it asks for.
 *
 *   state ──▶ transition(state, event, now) ──▶ { state, effects }
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { makeTicket } from '../protocol.ts';
import { initialState, transition } from '../client.ts';
import type { ClientEvent, ClientSettings, ClientState, Effect } from '../client.ts';

const NOW = 1_800_000_000_000;
const SETTINGS: ClientSettings = {
  server: '127.0.0.1', tcpPort: 5000, udpPort: 5001, chatPort: 0, historyDir: undefined,
  trace: false, registryTimeoutMs: 5000, answerTimeoutMs: 45_000, decideTimeoutMs: 30_000,
  greetingTimeoutMs: 5000, maxPendingPeers: 16, maxPendingPeersPerAddress: 4, dropReportMs: 5000,
};
const REGISTRY_UDP = '127.0.0.1:5001';

/** Feeds events in order; returns the last state and every effect asked for. */
function run(state: ClientState, ...events: ClientEvent[]) {
  const effects: Effect[] = [];
  for (const event of events) {
    const step = transition(state, event, NOW);
    state = step.state;
    effects.push(...step.effects);
  }
  return { state, effects, said: effects.flatMap((e) => (e.do === 'say' ? [e.text] : [])) };
}

const typed = (line: string): ClientEvent => ({ type: 'typed', line });

/** A client logged in as `name` (token "tok-<name>"), on the Search screen. */
function loggedIn(name: string, storage: 'memory' | 'mongodb' = 'memory'): ClientState {
  const login = { type: 'login' as const, username: name, password: 'pw', chatPort: 7000 };
  const reply = {
    type: 'logged_in' as const, username: name, token: `tok-${name}`, heartbeatMs: 1,
    timeoutMs: 10_000, storage,
  };
  const { state } = run(initialState(SETTINGS, REGISTRY_UDP, 7000), typed(name), typed('pw'),
    { type: 'answer', request: login, reply, tag: 0 });
  assert.equal(state.screen.name, 'search');
  return state;
}

/** A valid chat_request from `from` to `to`, arriving on connection `conn`. */
function request(conn: number, from: string, to: string, ticket?: string): ClientEvent[] {
  return [
    { type: 'peer_arrived', conn, address: '127.0.0.1', remote: `127.0.0.1:${40000 + conn}` },
    {
      type: 'peer_said', conn, remote: `127.0.0.1:${40000 + conn}`,
      message: {
        type: 'chat_request', from,
        ticket: ticket ?? makeTicket(`tok-${to}`, from, to, NOW + 60_000),
      },
    },
  ];
}

test('a password is asked only after the name passes the username rule; /HELP is a command', () => {
  const start = initialState(SETTINGS, REGISTRY_UDP, 7000);
  const { state, said, effects } = run(start, typed('/REGISTER'), typed('/help'),
    typed('bad name'));
  assert.equal(state.screen.name, 'register_username');
  assert.ok(said.some((line) => /not a username/i.test(line)));
  assert.ok(!effects.some((e) => e.do === 'prompt' && e.secret), 'a password prompt was shown');
  const next = run(state, typed('carol'));
  assert.ok(next.effects.some((e) => e.do === 'prompt' && e.secret));
});

test('heartbeatMs from the registry is clamped to 100..60000 ms', () => {
  const login = { type: 'login' as const, username: 'a', password: 'pw', chatPort: 7000 };
  for (const [asked, used] of [[1, 100], [2 ** 31, 60_000], [2000, 2000]]) {
    const reply = {
      type: 'logged_in' as const, username: 'a', token: 't', heartbeatMs: asked, timeoutMs: 1,
      storage: 'memory' as const,
    };
    const { effects } = run(initialState(SETTINGS, REGISTRY_UDP, 7000), typed('a'), typed('pw'),
      { type: 'answer', request: login, reply, tag: 0 });
    assert.deepEqual(effects.find((e) => e.do === 'heartbeat'), { do: 'heartbeat', everyMs: used });
  }
});

test('an answer of the wrong type is an invalid answer, and the user stays on the screen', () => {
  const alice = loggedIn('alice');
  const search = { type: 'search' as const, token: 'tok-alice', username: 'bob' };
  const called = run(alice, typed('bob'));
  const tag = (called.effects.find((e) => e.do === 'ask') as { tag: number }).tag;
  const { state, said } = run(called.state,
    { type: 'answer', request: search, reply: { type: 'logged_out' }, tag });
  assert.ok(said.some((line) => /the registry sent an invalid answer/i.test(line)));
  assert.equal(state.screen.name, 'search');
  assert.notEqual(state.session, null);
});

test('session_unknown counts only from the registry\'s address and port', () => {
  const alice = loggedIn('alice');
  const forged = run(alice,
    { type: 'datagram', sender: '127.0.0.1:9999', message: { type: 'session_unknown' } });
  assert.equal(forged.state.screen.name, 'search');
  const real = run(alice,
    { type: 'datagram', sender: REGISTRY_UDP, message: { type: 'session_unknown' } });
  assert.equal(real.state.screen.name, 'login_username');
  assert.ok(real.said.some((line) => /did it restart/i.test(line)));
  const replaced = run(alice, {
    type: 'datagram', sender: REGISTRY_UDP,
    message: { type: 'session_unknown', reason: 'replaced' },
  });
  assert.ok(replaced.said.some((line) => /you logged in somewhere else/i.test(line)));
});

test('after a restart of a memory registry, bad_credentials says the account may be gone', () => {
  const lost = run(loggedIn('alice', 'memory'),
    { type: 'datagram', sender: REGISTRY_UDP, message: { type: 'session_unknown' } });
  const login = { type: 'login' as const, username: 'alice', password: 'pw', chatPort: 7000 };
  const reply = {
    type: 'error' as const, code: 'bad_credentials' as const,
    message: 'wrong username or password',
  };
  const { said } = run(lost.state, typed('alice'), typed('pw'),
    { type: 'answer', request: login, reply, tag: 0 });
  assert.ok(said.some((line) => /may be gone.*register/i.test(line)), said.join('\n'));
});

test('a replayed ticket is refused with bad_ticket', () => {
  const bob = loggedIn('bob');
  const ticket = makeTicket('tok-bob', 'alice', 'bob', NOW + 60_000);
  const first = run(bob, ...request(1, 'alice', 'bob', ticket));
  assert.equal(first.state.screen.name, 'deciding');
  const declined = run(first.state, typed('n'), ...request(2, 'alice', 'bob', ticket));
  assert.deepEqual(declined.effects.filter((e) => e.do === 'send' && e.conn === 2),
    [{ do: 'send', conn: 2, message: { type: 'chat_decline', reason: 'bad_ticket' } }]);
});

test('busy: a second caller is declined and our user is told quietly', () => {
  const bob = loggedIn('bob');
  const { state, effects, said } = run(bob, ...request(1, 'alice', 'bob'),
    ...request(2, 'carol', 'bob'));
  assert.equal(state.screen.name, 'deciding');
  assert.ok(effects.some((e) => e.do === 'send' && e.conn === 2 &&
    e.message.type === 'chat_decline' && e.message.reason === 'busy'));
  assert.ok(said.some((line) => /carol tried to reach you while you were busy/i.test(line)));
});

test('glare: the call from the name that sorts first wins; the other side accepts it', () => {
  // bob calls alice while alice's request reaches him: "alice" < "bob", so bob accepts hers.
  const bob = run(loggedIn('bob'), typed('alice')).state;
  const accepted = run(bob, ...request(1, 'alice', 'bob'));
  assert.equal(accepted.state.screen.name, 'chat');
  assert.ok(accepted.effects.some((e) => e.do === 'send' && e.conn === 1 &&
    e.message.type === 'chat_accept'));
  assert.ok(!accepted.said.some((line) => /busy|\(y\/n\)/i.test(line)));
  // alice calls bob while bob's request reaches her: hers wins, so she holds his request.
  const alice = run(loggedIn('alice'), typed('bob')).state;
  const held = run(alice, ...request(1, 'bob', 'alice'));
  assert.equal(held.state.screen.name, 'calling');
  assert.ok(!held.effects.some((e) => e.do === 'send' && e.conn === 1),
    'answered the held request');
});

test('typing the asker\'s name at the y/n prompt counts as yes', () => {
  const { state } = run(loggedIn('bob'), ...request(1, 'Alice', 'bob'), typed('alice'));
  assert.equal(state.screen.name, 'chat');
});

test('the chat port keeps at most 4 waiting connections per address, and warns in summary', () => {
  let state = loggedIn('bob');
  const effects: Effect[] = [];
  const said: string[] = [];
  for (let conn = 1; conn <= 200; conn++) {
    const step = run(state,
      { type: 'peer_arrived', conn, address: '10.0.0.7', remote: `10.0.0.7:${conn}` });
    state = step.state;
    effects.push(...step.effects);
    said.push(...step.said);
  }
  assert.equal(state.pendingPeers.size, 4);
  assert.equal(effects.filter((e) => e.do === 'close' && e.atOnce).length, 196);
  assert.equal(said.length, 1, said.join('\n'));
  const report = run(state, { type: 'timer', name: 'drop_report', conn: 0 });
  assert.deepEqual(report.said, ['dropped 195 chat connections from 10.0.0.7 in the last 5 s']);
});

test('//text sends "/text"; an unknown command is refused with the // hint', () => {
  const bob = run(loggedIn('bob'), ...request(1, 'alice', 'bob'), typed('y')).state;
  const sent = run(bob, typed('//usr/bin'));
  assert.ok(sent.effects.some((e) => e.do === 'send' && e.message.type === 'msg' &&
    e.message.text === '/usr/bin'));
  const refused = run(bob, typed('/usr/bin'));
  assert.ok(!refused.effects.some((e) => e.do === 'send'));
  assert.ok(refused.said.some((line) => /unknown command \/usr\/bin.*\/\/usr\/bin/i.test(line)));
});

test('bidi controls and invisible separators from a peer are replaced; ZWJ emoji stay', () => {
  const bob = run(loggedIn('bob'), ...request(1, 'alice', 'bob'), typed('y')).state;
  const text = 'a\u202Eb\u2066c\u200Bd\u2028e 👨‍👩‍👧';
  const { said, effects } = run(bob, {
    type: 'peer_said', conn: 1, remote: 'x', message: { type: 'msg', text, at: 1 },
  });
  assert.ok(said.some((line) => line.endsWith('alice: a\uFFFDb\uFFFDc\uFFFDd\uFFFDe 👨‍👩‍👧')),
    said.join('\n'));
  const saved = effects.find((e) => e.do === 'save' && e.line.includes('alice:'));
  assert.ok(saved && saved.do === 'save' &&
    saved.line.endsWith('alice: a\uFFFDb\uFFFDc\uFFFDd\uFFFDe 👨‍👩‍👧'));
});

test('--trace shows the first hello, then only changes: a failure, and getting through again',
  () => {
    const traced = { ...loggedIn('ann'), settings: { ...SETTINGS, trace: true } };
    const due: ClientEvent = { type: 'heartbeat_due' };
    const sent = (error: string | null): ClientEvent => ({ type: 'hello_sent', error });
    const { effects, said } = run(traced, due, sent(null), due, sent(null), due,
      sent('ENETUNREACH'), due, sent('ENETUNREACH'), due, sent(null), due, sent(null));
    assert.equal(effects.filter((e) => e.do === 'hello').length, 6);
    assert.deepEqual(said, [
      '→ udp hello from ann (further hellos are shown only when something changes)',
      '→ udp hello failed (ENETUNREACH)',
      '→ udp hellos get through again',
    ]);
  });
