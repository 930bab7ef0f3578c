/**
 * test/client-transitions.test.ts — the client's transition table on its own: no sockets, no
 * processes, no clock. Each test feeds events to transition() and checks the next state and the
 * effects it asks for.
 *
 *   state ──▶ transition(state, event, now) ──▶ { state, effects }
 */

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { INVALID_ANSWER, makeTicket } from '../protocol.ts';
import type { ErrorCode, PeerMessage, Reply, Request } from '../protocol.ts';
import { helloNews, initialState, transition } from '../client.ts';
import type { ClientEvent, ClientSettings, ClientState, Effect } from '../client.ts';

const NOW = 1_800_000_000_000;
const SETTINGS: ClientSettings = {
  server: '127.0.0.1', tcpPort: 5000, udpPort: 5001, chatPort: 0, historyDir: undefined,
  dataDir: '/nonexistent', trace: false, registryTimeoutMs: 5000, answerTimeoutMs: 45_000,
  decideTimeoutMs: 30_000,
  greetingTimeoutMs: 5000, maxPendingPeers: 16, maxPendingPeersPerAddress: 4, dropReportMs: 5000,
  plain: true, keyFile: undefined, bell: true,
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
  assert.ok(!next.effects.some((e) => e.do === 'prompt' && e.secret), 'asked before the check');
  const check = { type: 'check_username' as const, username: 'carol' };
  assert.ok(next.effects.some((e) => e.do === 'ask' && e.request.type === 'check_username'));
  const free = run(next.state, { type: 'answer', request: check,
    reply: { type: 'username_free', username: 'carol' }, tag: 0 });
  assert.ok(free.effects.some((e) => e.do === 'prompt' && e.secret));
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

test('an answer that does not fit (askRegistry refused it) fails; the user stays on Search', () => {
  const alice = loggedIn('alice');
  const search = { type: 'search' as const, token: 'tok-alice', username: 'bob' };
  const called = run(alice, typed('bob'));
  const tag = (called.effects.find((e) => e.do === 'ask') as { tag: number }).tag;
  const { state, said } = run(called.state,
    { type: 'answer_failed', request: search, why: INVALID_ANSWER, tag });
  assert.ok(said.some((line) => /the registry sent an invalid answer/i.test(line)));
  assert.equal(state.screen.name, 'search');
  assert.notEqual(state.session, null);
});

test('calls are numbered by a counter: a late answer to a cancelled call is ignored', () => {
  const first = run(loggedIn('alice'), typed('bob'), typed('/cancel'), typed('carol'));
  const asks = first.effects.flatMap((e) => (e.do === 'ask' ? [e] : []));
  assert.deepEqual(asks.map((e) => e.tag), [1, 2]);
  const found: Reply = { type: 'found', username: 'bob', host: '127.0.0.1', port: 1, ticket: 't' };
  const late = run(first.state, { type: 'answer', request: asks[0].request, reply: found, tag: 1 });
  assert.ok(!late.effects.some((e) => e.do === 'connect'), 'connected for a cancelled call');
  assert.equal(late.state.screen.name === 'calling' && late.state.screen.peer, 'carol');
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
    const said: string[] = [];
    let last: string | null | undefined;
    for (const error of [null, null, 'ENETUNREACH', 'ENETUNREACH', null, null]) {
      said.push(...helloNews('ann', last, error));
      last = error;
    }
    assert.deepEqual(said, [
      '→ udp hello from ann (further hellos are shown only when something changes)',
      '→ udp hello failed (ENETUNREACH)',
      '→ udp hellos get through again',
    ]);
    assert.deepEqual(helloNews('ann', undefined, 'EHOSTUNREACH'), [
      '→ udp hello from ann (further hellos are shown only when something changes)',
      '→ udp hello failed (EHOSTUNREACH)',
    ]);
  });

// ---- The transition table in client.ts's header, row by row ----
//
// Each row of the header's table ("screen  event  next screen") is replayed: the test reaches
// the screen with real events, feeds the row's event, and compares where transition() went.

type Row = { screen: string; event: string; next: string };

/** The rows of the table at the top of client.ts. */
function tableRows(): Row[] {
  const lines = readFileSync(new URL('../client.ts', import.meta.url), 'utf8').split('\n');
  const start = lines.findIndex((line) => /^ \* {3}screen {2,}event {2,}next screen$/.test(line));
  assert.ok(start > 0, 'no "screen  event  next screen" table in client.ts\'s header');
  const rows: Row[] = [];
  for (const line of lines.slice(start + 1)) {
    if (line.trim() === '*') break;
    const cells = /^ \* {3}(\S+) {2,}(.+?) {2,}(\S+)(?: .*)?$/.exec(line);
    assert.ok(cells, `a table row that does not read as "screen  event  next": ${line}`);
    rows.push({ screen: cells[1], event: cells[2], next: cells[3] });
  }
  return rows;
}

/** The screen as the table names it: asking(list), chat(lost), … */
function screenKey(state: ClientState): string {
  const { screen } = state;
  if (screen.name === 'asking') return `asking(${screen.about})`;
  if (screen.name === 'chat' && state.session?.lostBecause) return 'chat(lost)';
  return screen.name;
}

type Reached = { state: ClientState; asked: Request | null; tag: number };

/** A client on `screen`, reached by real events. For glare, who sorts first depends on `event`. */
function reach(screen: string, event: string): Reached {
  const [me, peer] = event === 'request(they win)' ? ['bob', 'ann'] : ['ann', 'bob'];
  const steps: Record<string, () => [ClientState, ...ClientEvent[]]> = {
    login_username: () => [initialState(SETTINGS, REGISTRY_UDP, 7000)],
    login_password: () => [...steps.login_username(), typed(me)],
    logging_in: () => [...steps.login_password(), typed('pw')],
    register_username: () => [...steps.login_username(), typed('/register')],
    checking_name: () => [...steps.register_username(), typed(me)],
    register_password: () => [...steps.checking_name(), {
      type: 'answer', request: { type: 'check_username', username: me },
      reply: { type: 'username_free', username: me }, tag: 0,
    }],
    register_confirm: () => [...steps.register_password(), typed('pw')],
    registering: () => [...steps.register_confirm(), typed('pw')],
    search: () => [loggedIn(me)],
    'asking(list)': () => [...steps.search(), typed('/list')],
    'asking(logout)': () => [...steps.search(), typed('/logout')],
    calling: () => [...steps.search(), typed(peer)],
    deciding: () => [...steps.search(), ...request(1, 'dave', me)],
    chat: () => [...steps.deciding(), typed('y')],
    'chat(lost)': () => [...steps.chat(), sessionUnknown],
    quitting: () => [...steps.search(), typed('/quit')],
  };
  assert.ok(steps[screen], `the table names a screen the test cannot reach: ${screen}`);
  const [start, ...events] = steps[screen]();
  const { state, effects } = run(start, ...events);
  const asks = effects.filter((e) => e.do === 'ask');
  const last = asks.at(-1);
  let reached: Reached = { state, asked: last?.request ?? null, tag: last?.tag ?? 0 };
  if (screen === 'calling') { // found, and connected on conn 3: waiting for the peer's answer
    const found: Reply = { type: 'found', username: peer, host: '127.0.0.1', port: 1, ticket: 't' };
    const call = state.screen.name === 'calling' ? state.screen.call : -1;
    reached = { ...reached, state: run(state, answer(reached, found),
      { type: 'call_connected', call, conn: 3 }).state };
  }
  return reached;
}

const sessionUnknown: ClientEvent =
  { type: 'datagram', sender: REGISTRY_UDP, message: { type: 'session_unknown' } };

function answer({ asked, tag }: Reached, reply: Reply): ClientEvent {
  assert.ok(asked, 'an answer on a screen that asked nothing');
  return { type: 'answer', request: asked, reply, tag };
}

function error(code: ErrorCode): Reply {
  return { type: 'error', code, message: code.replace('_', ' ') };
}

/** The row's event, on the reached screen; undefined for an event the test does not know. */
function eventsFor(label: string, at: Reached): ClientEvent[] | undefined {
  const screen = at.state.screen;
  const conn = 'conn' in screen && screen.conn !== null ? screen.conn : 0;
  const me = at.state.session?.username ?? 'ann';
  const peerSaid = (message: PeerMessage): ClientEvent[] =>
    [{ type: 'peer_said', conn, remote: 'x', message }];
  const asked = at.asked;
  const events: Record<string, () => ClientEvent[]> = {
    'typed NAME': () => [typed('carol')],
    'typed PASSWORD': () => [typed('pw')],
    'typed nothing': () => [typed('')],
    'answer logged_in': () => [answer(at, {
      type: 'logged_in', username: asked && 'username' in asked ? asked.username : '?',
      token: 'tok', heartbeatMs: 1000, timeoutMs: 5000, storage: 'memory',
    })],
    'answer registered': () => [answer(at, {
      type: 'registered', username: asked && 'username' in asked ? asked.username : '?',
    })],
    'answer error': () => [answer(at, error(asked?.type === 'search' ? 'not_online'
      : asked?.type === 'register' || asked?.type === 'check_username' ? 'username_taken'
      : 'bad_credentials'))],
    'answer failed': () => [{ type: 'answer_failed', request: asked!, why: 'no registry',
      tag: at.tag }],
    'answer username_free': () => [answer(at, {
      type: 'username_free', username: asked && 'username' in asked ? asked.username : '?',
    })],
    'answer online': () => [answer(at, { type: 'online', users: ['ann'], total: 1 })],
    'answer not_logged_in': () => [answer(at, error('not_logged_in'))],
    'answer logged_out': () => [answer(at, { type: 'logged_out' })],
    request: () => request(5, 'dave', me),
    'request(they win)': () => request(5, 'ann', me),
    'request(we win)': () => request(5, 'bob', me),
    session_unknown: () => [sessionUnknown],
    call_failed: () => [{ type: 'call_failed', why: 'ECONNREFUSED',
      call: screen.name === 'calling' ? screen.call : -1 }],
    'peer chat_accept': () => peerSaid({ type: 'chat_accept' }),
    'peer chat_decline': () => peerSaid({ type: 'chat_decline', reason: 'declined' }),
    'peer bye': () => peerSaid({ type: 'bye' }),
    'pasted lines': () => [{ type: 'pasted', lines: ['/back', 'hi'] }],
    'peer silent': () => [{ type: 'peer_gone', conn, remote: 'x',
      why: { kind: 'silent', waitedMs: 45_000 } }],
    'peer gone': () => [{ type: 'peer_gone', conn, remote: 'x',
      why: { kind: 'error', detail: 'ECONNRESET' } }],
    'timer decide': () => [{ type: 'timer', name: 'decide', conn }],
    signal: () => [{ type: 'signal', name: 'SIGTERM' }],
  };
  if (events[label]) return events[label]();
  if (label.startsWith('typed ')) return [typed(label.slice('typed '.length))];
  return undefined;
}

const ALL_SCREENS = ['login_username', 'login_password', 'logging_in', 'register_username',
  'checking_name', 'register_password', 'register_confirm', 'registering', 'search',
  'asking(list)', 'asking(logout)', 'calling', 'deciding', 'chat', 'chat(lost)', 'quitting'];

/** Where the row's event leads from its screen, compared with the row's next screen ('exit':
 * the exit effect). Null when they agree; otherwise what differs. */
function checkRow({ screen, event, next }: Row): string | null {
  const reached = reach(screen, event);
  assert.equal(screenKey(reached.state), screen, `could not reach ${screen}`);
  const events = eventsFor(event, reached);
  if (events === undefined) return `unknown event "${event}"`;
  const { state, effects } = run(reached.state, ...events);
  const went = effects.some((e) => e.do === 'exit') ? 'exit' : screenKey(state);
  return went === next ? null : `${screen} + ${event}: went to ${went}, not ${next}`;
}

test('the transition table in client.ts\'s header agrees with transition(), row by row', () => {
  const rows = tableRows();
  assert.ok(rows.length >= 30, `only ${rows.length} rows`);
  const wrong = rows.map(checkRow).filter((problem) => problem !== null);
  assert.deepEqual(wrong, []);
  const starts = new Set(rows.map((row) => row.screen));
  for (const screen of ALL_SCREENS) assert.ok(starts.has(screen), `no row leaves ${screen}`);
});

test('the table check itself fails on a wrong row and on an event it does not know', () => {
  assert.equal(checkRow({ screen: 'deciding', event: 'typed y', next: 'chat' }), null);
  assert.match(checkRow({ screen: 'deciding', event: 'typed y', next: 'search' }) ?? '',
    /went to chat, not search/);
  assert.match(checkRow({ screen: 'chat', event: 'signal', next: 'search' }) ?? '',
    /went to quitting, not search/);
  assert.match(checkRow({ screen: 'chat', event: 'peer waves', next: 'chat' }) ?? '',
    /unknown event/);
});

test('on a secure registry a session_unknown is a question: only the registry\'s answer over ' +
  'the secure link ends the session, and hellos are signed', () => {
  const secure = { ...SETTINGS, plain: false };
  const list = { type: 'list' as const, token: 'tok-alice', prefix: 'alice' };
  const login = { type: 'login' as const, username: 'alice', password: 'pw', chatPort: 7000 };
  const reply = {
    type: 'logged_in' as const, username: 'alice', token: 'tok-alice', heartbeatMs: 1,
    timeoutMs: 10_000, storage: 'memory' as const, session: 'sid', helloKey: 'k'.repeat(43),
  };
  const { state } = run(initialState(secure, REGISTRY_UDP, 7000), typed('alice'), typed('pw'),
    { type: 'answer', request: login, reply, tag: 0 });
  const hello = run(state, { type: 'heartbeat_due' }).effects.find((e) => e.do === 'hello');
  assert.deepEqual(hello, { do: 'hello', username: 'alice', token: 'tok-alice', session: 'sid',
    helloKey: 'k'.repeat(43) });

  const forged = { type: 'datagram' as const, sender: REGISTRY_UDP,
    message: { type: 'session_unknown' as const } };
  const asked = run(state, forged, forged);
  assert.equal(asked.state.screen.name, 'search', 'still logged in');
  const asks = asked.effects.filter((e) => e.do === 'ask');
  assert.equal(asks.length, 1, 'one check at a time');
  const tag = asks[0].do === 'ask' ? asks[0].tag : 0;

  const alive = run(asked.state, { type: 'answer', request: list, tag,
    reply: { type: 'online', users: ['alice'], total: 1 } });
  assert.equal(alive.state.screen.name, 'search');
  assert.equal(alive.said.length, 0, 'the check answers nothing on screen');
  const gone = run(asked.state, { type: 'answer', request: list, tag,
    reply: { type: 'error', code: 'not_logged_in', message: 'log in first' } });
  assert.equal(gone.state.screen.name, 'login_username');
});
