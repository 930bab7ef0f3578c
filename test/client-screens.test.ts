/**
 * test/client-screens.test.ts — what a newcomer meets in the first minutes (issue 9, section 2),
 * wherever pipes can show it: real client.ts processes driven through stdin/stdout, a real
 * registry in this process. (Defects that only a screen shows are in terminal.test.ts.)
 *
 * Matches are case-insensitive key words from the client contract, not whole sentences.
 */

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import process from 'node:process';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  STARTUP_MS, loginThroughScreens, registerAccount, sleep, spawnScript, startChat, startTestServer,
  waitUntil,
} from './helpers.ts';
import type { ScriptProcess, TestServer } from './helpers.ts';

/** Flags that keep every wait short. */
const FAST = [
  '--registry-timeout-ms', '2000', '--decide-timeout-ms', '8000', '--answer-timeout-ms', '10000',
];

let registry: TestServer;
/** Every client started, stopped in `after` (SIGKILL) if still running. */
const clients: ScriptProcess[] = [];

/** client.ts pointed at `server` (not waiting for anything). */
function spawnClient(
  server: TestServer,
  args: string[] = [],
  env: Record<string, string> = {},
): ScriptProcess {
  const client = spawnScript(
    'client.ts',
    ['--tcp-port', String(server.tcpPort), '--udp-port', String(server.udpPort), ...args],
    env,
  );
  clients.push(client);
  return client;
}

/** client.ts at its Login prompt. */
async function startClient(
  server: TestServer,
  args: string[] = [],
  env: Record<string, string> = {},
): Promise<ScriptProcess> {
  const client = spawnClient(server, [...FAST, ...args], env);
  await client.waitFor(/username/i, STARTUP_MS);
  return client;
}

before(async () => {
  registry = await startTestServer({ heartbeatMs: 200, timeoutMs: 30_000 });
});

after(async () => {
  await Promise.all(clients.map(async (client) => {
    if (client.exitCode !== null) return;
    client.kill('SIGKILL');
    await client.exited;
  }));
  await registry.close();
});

/** A client.ts logged in as a freshly registered `username`, at its Search prompt. */
async function loggedIn(
  username: string,
  args: string[] = [],
  server = registry,
): Promise<ScriptProcess> {
  await registerAccount(server.tcpPort, username);
  const client = await startClient(server, args);
  await loginThroughScreens(client, username);
  return client;
}

/** The exit code, or null if the process is still running after `ms`. */
async function exitCodeWithin(client: ScriptProcess, ms: number): Promise<number | null> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const code = await Promise.race([
    client.exited,
    new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), ms))),
  ]);
  clearTimeout(timer);
  return code;
}

/** Everything `client` printed from `from` on. */
function since(client: ScriptProcess, from: number): string {
  return client.stdout.slice(from);
}

/** Types /help and waits for `prompt` to come back; returns what was printed before it. */
async function help(client: ScriptProcess, prompt: RegExp): Promise<string> {
  const from = client.stdout.length;
  client.type('/help');
  const regex = new RegExp(prompt.source, 'i');
  await waitUntil(() => regex.test(since(client, from)), 5000,
    `${prompt} after /help; got:\n${since(client, from)}`);
  const printed = since(client, from);
  return printed.slice(0, regex.exec(printed)!.index);
}

function assertIsHelp(text: string, screen: string, commands = /\/\w+/): void {
  assert.match(text, commands, `/help on ${screen} printed no commands:\n${text}`);
  assert.doesNotMatch(text, /not a username|^(new )?password: |unknown command|please answer/im,
    `/help on ${screen} was taken as input:\n${text}`);
}

// ---------------------------------------------------------------------------------------------

test('defect 4: after a registry restart that lost the accounts, ' +
  'a failed login says the account may be gone', async () => {
  const first = await startTestServer({ heartbeatMs: 200, timeoutMs: 30_000 });
  let second: TestServer | undefined;
  try {
    const client = await loggedIn('amnesia', [], first);
    await first.close();
    second = await startTestServer({
      heartbeatMs: 200, timeoutMs: 30_000, tcpPort: first.tcpPort, udpPort: first.udpPort,
    });
    await client.waitFor(/did it restart/i, 10_000);
    await client.waitFor(/username/i);
    client.type('amnesia');
    await client.waitFor(/password/i);
    client.type('secret');
    await client.waitFor(/wrong username or password/i);
    const advice = await client.waitFor(/[^\n]*may be gone[^\n]*/i);
    assert.match(advice[0] + since(client, 0).slice(-400), /register/i);
  } finally {
    await second?.close();
  }
});

test('defect 5: crossing calls end in a chat on both sides, five rounds, no y/n and no busy',
  async () => {
  const [alice, bob] = [await loggedIn('cross-a'), await loggedIn('cross-b')];
  for (let round = 1; round <= 5; round++) {
    const [fromA, fromB] = [alice.stdout.length, bob.stdout.length];
    alice.type('cross-b');
    bob.type('cross-a');
    await alice.waitFor(/chatting with cross-b/i, 10_000);
    await bob.waitFor(/chatting with cross-a/i, 10_000);
    for (const [client, from, who] of [
      [alice, fromA, 'cross-a'], [bob, fromB, 'cross-b'],
    ] as const) {
      const shown = since(client, from);
      assert.doesNotMatch(shown, /\(y\/n\)/i, `round ${round}: ${who} was asked y/n:\n${shown}`);
      assert.doesNotMatch(shown, /busy/i, `round ${round}: ${who} was told busy:\n${shown}`);
    }
    // The chat works both ways, then one leaves and both are back on Search.
    alice.type(`ping ${round}`);
    await bob.waitFor(new RegExp(`cross-a: ping ${round}`));
    alice.type('/back');
    await alice.waitFor(/cross-a> /);
    await bob.waitFor(/left the chat/i);
    await bob.waitFor(/cross-b> /);
  }
});

test('defect 5: typing the caller\'s name at the y/n prompt counts as yes', async () => {
  const [carol, dave] = [await loggedIn('yn-carol'), await loggedIn('yn-dave')];
  carol.type('yn-dave');
  await dave.waitFor(/\(y\/n\)/i);
  dave.type('yn-carol');
  await dave.waitFor(/chatting with yn-carol/i);
  await carol.waitFor(/accepted/i);
  carol.type('/back');
  await dave.waitFor(/left the chat/i);
});

test('defect 7: a login elsewhere ends the old session: the old client says so and shows Login',
  async () => {
  const old = await loggedIn('twice');
  const fresh = await startClient(registry);
  await loginThroughScreens(fresh, 'twice');
  assert.match(fresh.stdout, /ended your earlier session/i);
  await old.waitFor(/logged in somewhere else/i, 5000);
  await old.waitFor(/Login[^\n]*username/i);
});

test('defect 8: Register checks the name before asking a password', async () => {
  const client = await startClient(registry);
  client.type('/register');
  await client.waitFor(/Register[^\n]*username[^\n]*\n?/i);
  const from = client.stdout.length;
  client.type('not a name!');
  await client.waitFor(/Not a username/i);
  await client.waitFor(/Register[^\n]*username/i);
  assert.doesNotMatch(since(client, from), /password/i, 'a password was asked for an invalid name');
});

test('defect 8: /help works on every screen and is never taken as a name or a line', async () => {
  const client = await startClient(registry);
  assertIsHelp(await help(client, /Login — username/), 'Login');
  client.type('/register');
  await client.waitFor(/Register[^\n]*username/i);
  assertIsHelp(await help(client, /Register — new username/), 'Register');
  client.type('/login');
  await client.waitFor(/Login[^\n]*username/i);
  client.endInput();
  const [erin, frank] = [await loggedIn('help-erin'), await loggedIn('help-frank')];
  assertIsHelp(await help(erin, /help-erin> /), 'Search');
  frank.type('help-erin');
  await erin.waitFor(/\(y\/n\)/i);
  assertIsHelp(await help(erin, /Accept help-frank\? \(y\/n\)/), 'the y/n question',
    /\/\w+|\by\b[^\n]*\bn\b/);
  erin.type('y');
  await erin.waitFor(/chatting with help-frank/i);
  await frank.waitFor(/accepted/i);
  const from = frank.stdout.length;
  const inChat = await help(erin, /help-erin → help-frank> /);
  assertIsHelp(inChat, 'Chat');
  erin.type('after help');
  await frank.waitFor(/help-erin: after help/);
  assert.doesNotMatch(since(frank, from), /\/help/, 'the peer received /help');
});

test('defect 9: //text sends "/text"; /usr/bin and /quitter are refused with the // hint',
  async () => {
  const [gina, hank] = [await loggedIn('slash-gina'), await loggedIn('slash-hank')];
  await startChat(gina, 'slash-gina', hank, 'slash-hank');
  const from = hank.stdout.length;
  gina.type('//text');
  await hank.waitFor(/slash-gina: \/text\b/);
  assert.doesNotMatch(since(hank, from), /\/\/text/);
  gina.type('/usr/bin');
  await gina.waitFor(/unknown command[^\n]*\/usr\/bin[^\n]*\/\/usr\/bin/i);
  gina.type('/quitter');
  await gina.waitFor(/unknown command[^\n]*\/quitter/i);
  gina.type('still here');
  await hank.waitFor(/slash-gina: still here/);
  assert.doesNotMatch(since(hank, from), /usr\/bin|quitter/, 'a refused line reached the peer');
  assert.equal(gina.exitCode, null, '/quitter quit');
});

test('defect 10: a bad --history stops the client at start-up with exit 2, ' +
  'the path and the reason', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'p2p-history-'));
  try {
    const file = path.join(dir, 'a-file');
    writeFileSync(file, 'not a folder');
    const cases: Array<[string, string]> = [
      ['a file', file],
      ['a path under a file', path.join(file, 'sub')],
      // Cannot be created even by root (root ignores file modes, not these file systems).
      ['a folder that cannot be created (sysfs)', '/sys/p2p-chat-history-test'],
      ['a folder that cannot be created (procfs)', '/proc/p2p-chat-history-test'],
      ['two levels that cannot be created (procfs)', '/proc/p2p-chat-history-test/deeper'],
    ];
    if (process.getuid?.() !== 0) {
      const locked = path.join(dir, 'locked');
      mkdirSync(locked, { mode: 0o500 });
      cases.push(['a folder without write permission', path.join(locked, 'inside')]);
    }
    for (const [label, bad] of cases) {
      const client = spawnClient(registry, ['--history', bad]);
      const code = await exitCodeWithin(client, 10_000);
      if (code === null) client.kill('SIGKILL'); // e.g. spinning in mkdir
      assert.equal(code, 2,
        `${label}: exit code; stdout:\n${client.stdout}\nstderr:\n${client.stderr}`);
      assert.ok(client.stderr.includes(bad),
        `${label}: stderr does not name ${bad}:\n${client.stderr}`);
      assert.match(client.stderr, /--history/);
      assert.match(
        client.stderr,
        new RegExp(`${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: \\S`),
        `${label}: no reason`,
      );
      assert.doesNotMatch(client.stdout, /Login/i, `${label}: the Login screen showed`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('defect 11: the busy user is told who tried to reach them', async () => {
  const [ivy, jack, kim] = [
    await loggedIn('bz-ivy'), await loggedIn('bz-jack'), await loggedIn('bz-kim'),
  ];
  await startChat(ivy, 'bz-ivy', jack, 'bz-jack');
  kim.type('bz-ivy');
  await kim.waitFor(/bz-ivy is busy/i);
  ivy.type('/back');
  await ivy.waitFor(/bz-ivy> /);
  // During the chat (a quiet line) or after it: anywhere in what ivy saw.
  await waitUntil(() => /bz-kim tried to reach you/i.test(ivy.stdout), 3000,
    `"bz-kim tried to reach you" in:\n${ivy.stdout}`);
});

test('defect 12: /list inside a chat; commands ignore case', async () => {
  const [lee, max] = [await loggedIn('list-lee'), await loggedIn('list-max')];
  lee.type('/LIST');
  await lee.waitFor(/Online \(\d+\):[^\n]*list-max/i);
  const from0 = lee.stdout.length;
  lee.type('/HELP');
  await waitUntil(() => /list-lee> /.test(since(lee, from0)), 5000, '/HELP to answer');
  assertIsHelp(since(lee, from0), 'Search, as /HELP');
  await startChat(lee, 'list-lee', max, 'list-max');
  const from = max.stdout.length;
  lee.type('/list');
  await lee.waitFor(/Online \(\d+\):[^\n]*list-max/i);
  lee.type('/List list-m');
  await lee.waitFor(/Online \(\d+\):[^\n]*list-max/i);
  lee.type('after list');
  await max.waitFor(/list-lee: after list/);
  assert.doesNotMatch(since(max, from), /\/list/i, 'the peer received /list');
  lee.type('/BACK');
  await max.waitFor(/left the chat/i);
});

test('defect 12: "Looking up X…" before the registry answers, ' +
  'then "Waiting for X…" as the registry spells it', async () => {
  const nora = await loggedIn('look-nora');
  const oscar = await loggedIn('Look-Oscar');
  const from = nora.stdout.length;
  nora.type('look-oscar');
  await nora.waitFor(/Looking up look-oscar/i);
  await nora.waitFor(/Waiting for Look-Oscar/);
  const shown = since(nora, from);
  assert.ok(shown.search(/Looking up/i) < shown.search(/Waiting for/i), shown);
  await oscar.waitFor(/\(y\/n\)/i);
  oscar.type('n');
  await nora.waitFor(/declined/i);
});

test('defect 12: a failed registry request keeps the user on Search', async () => {
  const own = await startTestServer({ heartbeatMs: 200, timeoutMs: 30_000 });
  try {
    const pat = await loggedIn('gone-pat', [], own);
    await own.close();
    const from = pat.stdout.length;
    pat.type('/list');
    await pat.waitFor(/gone-pat> /, 8000);
    pat.type('someone');
    await pat.waitFor(/gone-pat> /, 8000);
    assert.doesNotMatch(since(pat, from), /Login[^\n]*username/i,
      `sent back to Login:\n${since(pat, from)}`);
  } finally {
    await own.close().catch(() => {});
  }
});

test('defect 12: --trace shows the first hello, not one per heartbeat', async () => {
  const fast = await startTestServer({ heartbeatMs: 100, timeoutMs: 30_000 });
  try {
    const quinn = await loggedIn('trace-quinn', ['--trace'], fast);
    await quinn.waitFor(/hello/);
    await sleep(1500); // fifteen heartbeats
    const hellos = quinn.stdout.match(/hello/g)?.length ?? 0;
    assert.ok(hellos <= 2, `${hellos} hello lines in 1.5 s:\n${quinn.stdout.slice(-1500)}`);
  } finally {
    await fast.close();
  }
});

test('defect 12: a history file starts each conversation with a "began" header in local time',
  async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'p2p-history-'));
  const zone = 'Asia/Kolkata'; // +05:30: a UTC time would be caught
  try {
    const rae = await (async () => {
      await registerAccount(registry.tcpPort, 'hist-rae');
      const client = await startClient(registry, ['--history', dir], { TZ: zone });
      await loginThroughScreens(client, 'hist-rae');
      return client;
    })();
    const sam = await loggedIn('hist-sam');
    await startChat(rae, 'hist-rae', sam, 'hist-sam');
    rae.type('hello sam');
    await sam.waitFor(/hist-rae: hello sam/);
    const file = path.join(dir, 'hist-rae', 'hist-sam.log');
    await waitUntil(() => {
      try {
        return readFileSync(file, 'utf8').includes('hello sam');
      } catch {
        return false;
      }
    }, 5000, `${file} to hold the line`);
    const first = readFileSync(file, 'utf8').split('\n')[0];
    const match = /began (\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)/.exec(first);
    assert.ok(match, `no "began" header: ${first}`);
    const parts = new Intl.DateTimeFormat('en-CA', {
      timeZone: zone, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit',
      minute: '2-digit', hourCycle: 'h23',
    }).formatToParts(new Date());
    const part = (type: string) => Number(parts.find((p) => p.type === type)!.value);
    const nowMinutes = part('hour') * 60 + part('minute');
    const headerMinutes = Number(match[4]) * 60 + Number(match[5]);
    const apart = Math.min(Math.abs(nowMinutes - headerMinutes),
      1440 - Math.abs(nowMinutes - headerMinutes));
    assert.ok(apart <= 2, `header time ${match[4]}:${match[5]} is not local time in ${zone} ` +
      `(now ${part('hour')}:${part('minute')})`);
    assert.match(first, /hist-sam/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

