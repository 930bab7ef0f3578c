/**
 * test/server.test.ts — the registry, spoken to over real sockets.
 *
 * Each test starts a registry in this process on ephemeral ports (port 0) with short timeouts,
 * opens real TCP connections and UDP sockets to it, writes raw lines and asserts the lines that
 * come back — the way a person with `nc` would see them. A last group runs server.ts as a real
 * process to check the command line: port in use, --help, clean shutdown on SIGTERM.
 */

import assert from 'node:assert/strict';
import { Buffer } from 'node:buffer';
import { after, before, describe, test } from 'node:test';
import { checkTicket } from '../protocol.ts';
import {
  LineClient, registerAndLogin, sendDatagram, sleep, spawnScript, spawnServer, startTestServer,
  waitUntil,
} from './helpers.ts';
import type { TestServer } from './helpers.ts';
import type { StoredUser, UserStore } from '../server.ts';

describe('accounts: register and login', () => {
  let server: TestServer;
  let client: LineClient;
  before(async () => {
    server = await startTestServer();
    client = await LineClient.connect(server.tcpPort);
  });
  after(async () => {
    client.close();
    await server.close();
  });
  /** The two requests of this group, on the shared connection. */
  const register = (username: string, password: string) =>
    client.request({ type: 'register', username, password });
  const login = (username: string, password: string, chatPort = 7000) =>
    client.request({ type: 'login', username, password, chatPort });

  test('register answers registered with the name as given', async () => {
    assert.deepEqual(await register('Alice', 'wonderland'), {
      type: 'registered',
      username: 'Alice',
    });
  });

  test('a name is taken whatever its case', async () => {
    const answer = await register('aLiCe', 'other');
    assert.equal(answer.type, 'error');
    assert.equal(answer.code, 'username_taken');
    assert.match(String(answer.message), /taken/);
  });

  test('check_username: a free name, a taken one (any case), an invalid one; each counted like ' +
    'a registration', async () => {
    const check = (username: string) => client.request({ type: 'check_username', username });
    assert.deepEqual(await check('Bob'), { type: 'username_free', username: 'Bob' });
    assert.equal((await check('ALICE')).code, 'username_taken');
    assert.equal((await check('no spaces')).code, 'invalid_username');
    const counted = server.registry.registrationsByAddress.entries.get('127.0.0.1');
    assert.ok(counted !== undefined && counted.attempts >= 2, 'checks count as registrations');
  });

  test('invalid usernames and empty passwords are refused with their own codes', async () => {
    for (const username of ['', 'has space', 'x'.repeat(33), 'émile', 'semi;colon']) {
      const answer = await register(username, 'pw');
      assert.equal(answer.code, 'invalid_username', `username ${JSON.stringify(username)}`);
    }
    const answer = await register('okname', '');
    assert.equal(answer.code, 'invalid_password');
    // 32 characters of every allowed kind is fine.
    const longest = 'A-b_c.9'.padEnd(32, 'z');
    assert.equal((await register(longest, 'pw')).type, 'registered');
  });

  test('login ignores case, shows the registered name and gives a long random token', async () => {
    const answer = await login('ALICE', 'wonderland', 6001);
    assert.equal(answer.type, 'logged_in');
    assert.equal(answer.username, 'Alice');
    assert.equal(answer.heartbeatMs, 2000);
    assert.equal(answer.timeoutMs, 10_000);
    assert.ok(typeof answer.token === 'string', 'a token');
    assert.ok(Buffer.from(answer.token, 'base64url').length >= 16, 'token ≥ 128 bits');
  });

  test('login says where accounts live: storage "memory" for the in-memory store', async () => {
    const answer = await login('alice', 'wonderland', 6001);
    assert.equal(answer.storage, 'memory');
    assert.equal(answer.replaced, true, 'the session of the test before was replaced');
  });

  test('the right password takes over a live session: old token dead at once, its hello told ' +
    '"replaced"', async () => {
    const first = await login('alice', 'wonderland', 6001);
    assert.equal(first.type, 'logged_in');
    const second = await login('ALICE', 'wonderland', 6002);
    assert.equal(second.type, 'logged_in');
    assert.equal(second.replaced, true);
    assert.notEqual(second.token, first.token);
    // The old token is dead for every request, and its hello learns why.
    const old = await client.request({ type: 'list', token: first.token });
    assert.equal(old.code, 'not_logged_in');
    assert.match(String(old.message), /logged in somewhere else/);
    const hello = JSON.stringify({ type: 'hello', username: 'alice', token: first.token });
    const answer = await sendDatagram(server.udpPort, hello, 1000);
    assert.deepEqual(JSON.parse(answer!), { type: 'session_unknown', reason: 'replaced' });
    // The new session is the one online, with the new chat port.
    const found = await client.request({ type: 'search', token: second.token, username: 'alice' });
    assert.equal(found.port, 6002);
    assert.ok(server.logLines.some((line) => / login user=Alice .* replaced=true$/.test(line)),
      'logged');
    // A first login (nobody online) says nothing about replacing.
    await client.request({ type: 'logout', token: second.token });
    const fresh = await login('alice', 'wonderland', 6003);
    assert.equal(fresh.replaced, undefined);
    assert.ok(!('replaced' in fresh));
  });

  test('a wrong password does not touch the live session', async () => {
    const live = await login('alice', 'wonderland', 6001);
    const wrong = await login('alice', 'not-it', 6009);
    assert.equal(wrong.code, 'bad_credentials');
    const found = await client.request({ type: 'search', token: live.token, username: 'alice' });
    assert.equal(found.port, 6001);
  });

  test('a password that is not well-formed Unicode is invalid_password, not one of three equal ' +
    'ones', async () => {
    // JSON.stringify writes a lone surrogate as the escape "\ud800", as a hostile client would.
    for (const password of ['\ud800', '\udfff', 'ab\ud800cd', '\udc00\ud800']) {
      const answer = await register('surrogate', password);
      assert.equal(answer.code, 'invalid_password', JSON.stringify(password));
    }
    // A proper pair (an emoji) is fine, and U+FFFD is a password of its own.
    assert.equal((await register('emoji', '\ud83d\ude00')).type, 'registered');
    assert.equal((await register('fffd', '\ufffd')).type, 'registered');
    assert.equal((await login('fffd', '\ud800')).code, 'invalid_password');
  });

  test('wrong password and unknown user get the same answer', async () => {
    const wrongPassword = await login('alice', 'nope', 6001);
    const noSuchUser = await login('nobody', 'nope', 6001);
    assert.equal(wrongPassword.code, 'bad_credentials');
    assert.deepEqual(noSuchUser, wrongPassword);
  });

  test('twenty simultaneous registrations of one name: exactly one wins', async () => {
    const clients = await Promise.all(
      Array.from({ length: 20 }, () => LineClient.connect(server.tcpPort)));
    const answers = await Promise.all(clients.map((racer, index) =>
      racer.request({ type: 'register', username: `Racer`, password: `pw${index}` }, 10_000)));
    for (const racer of clients) racer.close();
    assert.equal(answers.filter((answer) => answer.type === 'registered').length, 1);
    assert.equal(answers.filter((answer) => answer.code === 'username_taken').length, 19);
  });
});

describe('presence, search, list and logout', () => {
  let server: TestServer;
  before(async () => {
    // Short heartbeat and timeout so expiry can be watched in well under a second.
    server = await startTestServer({ heartbeatMs: 50, timeoutMs: 400 });
  });
  after(() => server.close());
  const hello = (username: string, token: string) =>
    JSON.stringify({ type: 'hello', username, token });

  test('search finds an online user: their address, chat port and a ticket only they can ' +
    'verify', async () => {
    const aliceToken = await registerAndLogin(server.tcpPort, 'alice', 'pw', 7001);
    const bobToken = await registerAndLogin(server.tcpPort, 'Bob', 'pw', 7002);
    const client = await LineClient.connect(server.tcpPort);
    const found = await client.request({ type: 'search', token: aliceToken, username: 'BOB' });
    client.close();
    assert.equal(found.type, 'found');
    assert.equal(found.username, 'Bob');
    assert.equal(found.host, '127.0.0.1');
    assert.equal(found.port, 7002);
    const ticket = String(found.ticket);
    assert.equal(checkTicket(bobToken, ticket, 'alice', 'bob'), 'valid');
    assert.equal(checkTicket(aliceToken, ticket, 'alice', 'bob'), 'forged',
      'another token cannot verify it');
    assert.equal(checkTicket(bobToken, ticket, 'mallory', 'bob'), 'wrong_caller');
    assert.equal(checkTicket(bobToken, ticket, 'alice', 'bob', Date.now() + 61_000), 'expired');
  });

  test('search: not online, invalid name, and no session', async () => {
    const token = await registerAndLogin(server.tcpPort, 'carol');
    const client = await LineClient.connect(server.tcpPort);
    await client.request({ type: 'register', username: 'dave', password: 'pw' });
    const search = async (token: string, username: string) =>
      (await client.request({ type: 'search', token, username })).code;
    assert.equal(await search(token, 'dave'), 'not_online');
    assert.equal(await search(token, 'nobody-at-all'), 'not_online');
    assert.equal(await search(token, 'bad name'), 'invalid_username');
    assert.equal(await search('made-up', 'carol'), 'not_logged_in');
    client.close();
  });

  test('list shows everyone online, sorted ignoring case, and needs a session', async () => {
    const token = await registerAndLogin(server.tcpPort, 'erin');
    const client = await LineClient.connect(server.tcpPort);
    const online = await client.request({ type: 'list', token });
    assert.equal(online.type, 'online');
    const users = online.users as string[];
    assert.ok(users.includes('erin') && users.includes('Bob'));
    // Sorted by lower-case form, character by character (the same in every runtime and locale).
    const lower = users.map((name) => name.toLowerCase());
    assert.deepEqual(lower, [...lower].sort());
    assert.equal(online.total, users.length);
    assert.equal((await client.request({ type: 'list', token: 'made-up' })).code, 'not_logged_in');
    client.close();
  });

  test('logout ends the session at once and kills the token', async () => {
    const token = await registerAndLogin(server.tcpPort, 'frank');
    const client = await LineClient.connect(server.tcpPort);
    assert.deepEqual(await client.request({ type: 'logout', token }), { type: 'logged_out' });
    assert.equal((await client.request({ type: 'list', token })).code, 'not_logged_in');
    assert.equal((await client.request({ type: 'logout', token })).code, 'not_logged_in');
    // Logged out means logged out: the name is free to log in again straight away.
    const login = { type: 'login', username: 'frank', password: 'secret', chatPort: 7000 };
    const again = await client.request(login);
    assert.equal(again.type, 'logged_in');
    client.close();
  });

  test('hellos keep a user online past the timeout; a silent one is swept within the ' +
    'window', async () => {
    const keeperToken = await registerAndLogin(server.tcpPort, 'keeper');
    await registerAndLogin(server.tcpPort, 'sleeper');
    const sleeperLoggedInAt = Date.now();
    const heartbeat = setInterval(() => {
      sendDatagram(server.udpPort, hello('keeper', keeperToken));
    }, 50);
    try {
      // The sweeper must drop sleeper between timeoutMs (400) and timeoutMs + its period.
      await waitUntil(() => !server.registry.sessionsByName.has('sleeper'), 3000,
        'sleeper to be swept');
      const silentFor = Date.now() - sleeperLoggedInAt;
      assert.ok(silentFor >= 400, `swept after ${silentFor} ms, before the timeout`);
      assert.ok(silentFor <= 400 + 1000, `swept after ${silentFor} ms, too late`);
      await sleep(600); // keeper has now lived well past one timeout on heartbeats alone
      const client = await LineClient.connect(server.tcpPort);
      const online = await client.request({ type: 'list', token: keeperToken });
      client.close();
      assert.ok((online.users as string[]).includes('keeper'));
      assert.ok(!(online.users as string[]).includes('sleeper'));
      assert.ok(server.logLines.some((line) => / timeout user=sleeper /.test(line)),
        'the timeout is logged');
    } finally {
      clearInterval(heartbeat);
    }
  });

  test('a hello with a forged token refreshes nothing and is answered session_unknown',
    async () => {
    const token = await registerAndLogin(server.tcpPort, 'grace');
    const forged =
      await sendDatagram(server.udpPort, hello('grace', token.slice(0, -2) + 'xx'), 1000);
    assert.deepEqual(JSON.parse(forged!), { type: 'session_unknown' });
    // A real token under someone else's name is not accepted either.
    const wrongName = await sendDatagram(server.udpPort, hello('keeper', token), 1000);
    assert.deepEqual(JSON.parse(wrongName!), { type: 'session_unknown' });
    // The real hello gets no answer.
    assert.equal(await sendDatagram(server.udpPort, hello('GRACE', token), 200), null);
    // Only forged hellos from now on: grace must still expire.
    const forgery = setInterval(() => {
      sendDatagram(server.udpPort, hello('grace', 'forged'));
    }, 50);
    try {
      await waitUntil(() => !server.registry.sessionsByName.has('grace'), 3000,
        'grace to expire despite forged hellos');
    } finally {
      clearInterval(forgery);
    }
  });

  test('non-hello datagrams and garbage are ignored without an answer', async () => {
    for (const payload of ['not json', '{"type":"list","token":"x"}', '[]',
      '{"type":"session_unknown"}']) {
      assert.equal(await sendDatagram(server.udpPort, payload, 100), null, payload);
    }
  });
});

describe('bad input', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(() => server.close());

  /** Registers on `client`; the answer's type. */
  const register = async (client: LineClient, username: string) =>
    (await client.request({ type: 'register', username, password: 'pw' })).type;

  test('every kind of malformed line is answered bad_request and the connection stays usable',
    async () => {
    const client = await LineClient.connect(server.tcpPort);
    const badLines: Array<[string, RegExp]> = [
      ['this is not json', /not valid JSON/],
      ['{"type":"register","username":"a"', /not valid JSON/],
      ['42', /must be a JSON object/],
      ['[1,2,3]', /must be a JSON object/],
      ['null', /must be a JSON object/],
      ['{}', /"type"/],
      ['{"type":7}', /"type"/],
      ['{"type":"shout"}', /unknown message type/],
      ['{"type":"toString"}', /unknown message type/],
      ['{"type":"__proto__"}', /unknown message type/],
      ['{"type":"register","username":"zed"}', /"password"/],
      ['{"type":"register","username":5,"password":"x"}', /"username"/],
      ['{"type":"login","username":"zed","password":"x","chatPort":"80"}', /"chatPort"/],
      ['{"type":"login","username":"zed","password":"x","chatPort":70000}', /"chatPort"/],
      ['{"type":"login","username":"zed","password":"x","chatPort":1.5}', /"chatPort"/],
      ['{"type":"search","token":"t"}', /"username"/],
      ['{"__proto__":{"polluted":true},"type":"list"}', /"token"/],
    ];
    for (const [line, reason] of badLines) {
      client.write(line + '\n');
      const answer = JSON.parse(await client.readLine());
      assert.equal(answer.type, 'error', line);
      assert.equal(answer.code, 'bad_request', line);
      assert.match(answer.message, reason, line);
    }
    assert.equal(({} as Record<string, unknown>).polluted, undefined, 'Object.prototype untouched');
    // Still usable after all that.
    assert.equal(await register(client, 'survivor'), 'registered');
    client.close();
  });

  test('invalid UTF-8 is refused as bad_request', async () => {
    const client = await LineClient.connect(server.tcpPort);
    client.write(Buffer.concat([
      Buffer.from('{"type":"register","username":"'),
      Buffer.from([0xc3, 0x28]),
      Buffer.from('","password":"x"}\n'),
    ]));
    const answer = JSON.parse(await client.readLine());
    assert.equal(answer.code, 'bad_request');
    assert.match(answer.message, /UTF-8/);
    client.close();
  });

  test('a line over 16 KiB is answered, then the connection is closed', async () => {
    const client = await LineClient.connect(server.tcpPort);
    const big = { type: 'register', username: 'big', password: 'x'.repeat(20_000) };
    client.write(JSON.stringify(big) + '\n');
    const answer = JSON.parse(await client.readLine());
    assert.equal(answer.code, 'bad_request');
    assert.match(answer.message, /longer than 16384 bytes/);
    await client.waitClosed();
    // And nobody else noticed.
    const other = await LineClient.connect(server.tcpPort);
    assert.equal(await register(other, 'unbothered'), 'registered');
    other.close();
  });

  test('pipelined requests are answered in order, even when some take longer (scrypt)',
    async () => {
    const client = await LineClient.connect(server.tcpPort);
    client.write(
      [
        '{"type":"register","username":"pipe1","password":"pw"}',
        'garbage',
        '{"type":"list","token":"nope"}',
        '{"type":"register","username":"pipe2","password":"pw"}',
        '{"type":"login","username":"pipe1","password":"pw","chatPort":9000}',
        '',
        '{"type":"logout","token":"nope"}',
      ].join('\n') + '\n',
    );
    const answers = [];
    for (let i = 0; i < 6; i++) answers.push(JSON.parse(await client.readLine(5000)));
    assert.deepEqual(
      answers.map((answer) => answer.type === 'error' ? answer.code : answer.type),
      ['registered', 'bad_request', 'not_logged_in', 'registered', 'logged_in', 'not_logged_in'],
    );
    assert.equal(answers[0].username, 'pipe1');
    assert.equal(answers[3].username, 'pipe2');
    client.close();
  });

  test('a CRLF line end (nc -C) works', async () => {
    const client = await LineClient.connect(server.tcpPort);
    client.write('{"type":"register","username":"crlf","password":"pw"}\r\n');
    assert.equal(JSON.parse(await client.readLine()).type, 'registered');
    client.close();
  });
});

describe('the event log', () => {
  test('records each event with time, user and address, and never a password or token',
    async () => {
    const server = await startTestServer({ timeoutMs: 200, heartbeatMs: 50 });
    try {
      const password = 'correct-horse-battery-staple';
      const client = await LineClient.connect(server.tcpPort);
      await client.request({ type: 'register', username: 'logged', password });
      const login = (password: string) =>
        client.request({ type: 'login', username: 'logged', password, chatPort: 7000 });
      await login('wrong-password-123');
      const loggedIn = await login(password);
      const token = String(loggedIn.token);
      await client.request({ type: 'search', token, username: 'logged' });
      await client.request({ type: 'search', token, username: 'ghost' });
      await client.request({ type: 'list', token });
      await client.request({ type: 'logout', token });
      await registerAndLogin(server.tcpPort, 'timer', password);
      await waitUntil(() => server.logLines.some((line) => line.includes('timeout user=timer')),
        2000, 'timeout line');
      client.close();

      const events = server.logLines.map((line) => line.split(' ')[1]);
      for (const event of ['start', 'storage', 'register', 'login_failed', 'login', 'search_hit',
        'search_miss', 'list', 'logout', 'timeout']) {
        assert.ok(events.includes(event), `a ${event} line`);
      }
      for (const line of server.logLines) {
        assert.match(line, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \w+ /, line);
        assert.ok(!line.includes(password) && !line.includes('wrong-password-123'),
          `password in: ${line}`);
        assert.ok(!line.includes(token), `token in: ${line}`);
      }
      const loginLine = server.logLines.find((line) => / login user=logged /.test(line))!;
      assert.match(loginLine, /from=127\.0\.0\.1:\d+/);
    } finally {
      await server.close();
    }
  });
});

describe('storage failure', () => {
  test('register and login answer storage_unavailable; the server and presence keep working',
    async () => {
    let storageWorks = true;
    const users = new Map<string, StoredUser>();
    const flakyStore: UserStore = {
      description: 'a store that can be switched off',
      storage: 'memory',
      async addUser(user) {
        if (!storageWorks) throw new Error('connection lost');
        if (users.has(user.name)) return 'taken';
        users.set(user.name, user);
        return 'added';
      },
      async findUser(name) {
        if (!storageWorks) throw new Error('connection lost');
        return users.get(name) ?? null;
      },
      async nameInUse(name) {
        return users.has(name) ? 'taken' : 'free';
      },
      async close() {},
    };
    const server = await startTestServer({ store: flakyStore });
    try {
      const token = await registerAndLogin(server.tcpPort, 'steady');
      storageWorks = false;
      const client = await LineClient.connect(server.tcpPort);
      const register = () =>
        client.request({ type: 'register', username: 'newbie', password: 'pw' });
      const login = { type: 'login', username: 'other', password: 'pw', chatPort: 1 };
      assert.equal((await register()).code, 'storage_unavailable');
      assert.equal((await client.request(login)).code, 'storage_unavailable');
      assert.equal((await client.request({ type: 'list', token })).type, 'online');
      const found = await client.request({ type: 'search', token, username: 'steady' });
      assert.equal(found.type, 'found');
      assert.ok(server.logLines.some((line) => line.includes('storage_error')));
      storageWorks = true;
      assert.equal((await register()).type, 'registered');
      client.close();
    } finally {
      await server.close();
    }
  });
});

describe('server.ts as a program', () => {
  test('speaks the protocol, and exits 0 on SIGTERM', async () => {
    const { server, tcpPort } = await spawnServer();
    try {
      await server.waitFor('accounts are kept in memory; set MONGODB_URI to keep them in MongoDB');
      const client = await LineClient.connect(tcpPort);
      const answer =
        await client.request({ type: 'register', username: 'proc', password: 'pw' }, 5000);
      assert.equal(answer.type, 'registered');
      client.close();
    } finally {
      server.kill('SIGTERM');
    }
    assert.equal(await server.exited, 0);
    // Log lines are gathered and written once per event-loop turn; none may be lost at exit.
    assert.match(server.stdout, / register user=proc from=127\.0\.0\.1:\d+\n/);
    assert.match(server.stdout, / stop signal=SIGTERM\n$/);
  });

  test('a port in use is one line naming the flag to change', async () => {
    const first = await startTestServer();
    try {
      const onPorts = (tcpPort: number, udpPort: number) => spawnScript('server.ts',
        ['--host', '127.0.0.1', '--tcp-port', String(tcpPort), '--udp-port', String(udpPort)]);
      const second = onPorts(first.tcpPort, 0);
      assert.equal(await second.exited, 1);
      assert.match(second.stderr, /TCP port \d+ is already in use; choose another with --tcp-port/);
      const third = onPorts(0, first.udpPort);
      assert.equal(await third.exited, 1);
      assert.match(third.stderr, /UDP port \d+ is already in use; choose another with --udp-port/);
    } finally {
      await first.close();
    }
  });

  test('--help explains the flags, options before limits, in 80 columns; a bad flag value is ' +
    'a clear error', async () => {
    const help = spawnScript('server.ts', ['--help']);
    assert.equal(await help.exited, 0);
    const flags = ['--tcp-port', '--udp-port', '--host', '--heartbeat-ms', '--timeout-ms',
      '--idle-ms', '--max-connections-per-address', '--max-registrations-per-address',
      'MONGODB_URI'];
    for (const flag of flags) {
      assert.ok(help.stdout.includes(flag), flag);
    }
    const wide = help.stdout.split('\n').filter((line) => [...line].length > 80);
    assert.deepEqual(wide, [], 'every line of --help fits in 80 columns');
    const options = help.stdout.indexOf('Options:');
    const limits = help.stdout.indexOf('Limits on connections');
    assert.ok(options >= 0 && limits > options, 'the options come first, then the limits');
    assert.ok(help.stdout.indexOf('--timeout-ms') < limits, '--timeout-ms is an option');
    assert.ok(help.stdout.indexOf('--max-connections ') > limits, '--max-connections is a limit');
    const bad = spawnScript('server.ts', ['--timeout-ms', 'soon']);
    assert.equal(await bad.exited, 2);
    assert.match(bad.stderr, /--timeout-ms needs a whole number/);
  });
});
