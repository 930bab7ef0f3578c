/**
 * test/budget.test.ts — the files keep within their budgets.
 *
 * This project is read as much as it is run. A file that keeps growing buries its lesson: a reader
 * of client.ts once met the first socket call two thirds of the way down. So each file has a
 * budget, with the reason for it, and this test fails when one is outgrown.
 *
 * When it fails: move something out first (a defence into its limits section or a file of its
 * own, a measurement into bench/README.md, a caveat into docs/). Raise a budget only in the same
 * commit as the reason for it, written next to the number below.
 */

import assert from 'node:assert/strict';
import { Buffer } from 'node:buffer';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { ROOT } from './helpers.ts';

type Budget = { file: string; most: number; unit: 'lines' | 'bytes'; why: string };

const BUDGETS: Budget[] = [
  {
    // 1350 → 1900: issue 16 (lines only on the screen they were typed for, pipes in order,
    // paste, the bell, registration asked first and twice, acks and delivery marks), issue 17's
    // device proofs and bounded peer queue, and issue 18's keys: what the client knows of keys,
    // pinning, warnings and /verify. The first socket is still met in the first fifth.
    // 1900 → 1940: a script's lines wait for a call's outcome and for the answers at start and
    // at login (a piped /quit no longer loses them); --server HOST:PORT is a clear error; a new
    // identity key is saved only once its login succeeds (a mistyped name leaves no file).
    file: 'client.ts', most: 1940, unit: 'lines',
    why: 'the state machine, its screens and the effect runner; the screen lives in terminal.ts',
  },
  {
    // 1300 → 1330: check_username (a taken name is told before the password is typed).
    // 1330 → 1750: issue 17's limits (device proofs and their lane, logins per account, failures
    // counted when known, eviction when full, the stall clock, look-alike names in both stores)
    // and issue 18's wiring (the handshake at accept, signed hellos, keys in found and tickets).
    file: 'server.ts', most: 1750, unit: 'lines',
    why: 'the registry: sockets, handlers, sessions, sweeper, stores, and its limits section',
  },
  {
    // 850 → 870: check_username / username_free, and the device proof on login and logged_in.
    // 870 → 1050: acks, words for socket errors, the bound on a peer's queue (issues 16, 17);
    // signed hellos, tickets bound to a key, askRegistry and PeerChannel over a secure link (18).
    file: 'protocol.ts', most: 1050, unit: 'lines',
    why: 'message shapes, the decoder, framing, tickets and the client\'s two socket helpers',
  },
  {
    // 320 → 410: bracketed paste (readline knows no paste markers, so a stream takes pastes out
    // of stdin first), a draft dropped when the screen changes, Ctrl-C clearing a draft.
    file: 'terminal.ts', most: 410, unit: 'lines',
    why: 'the redraw idea in three steps, then the refinements readline needs',
  },
  {
    file: 'secure.ts', most: 720, unit: 'lines',
    why: 'the Noise handshake token by token, sealed frames as a stream, key files and known keys',
  },
  {
    // 12 → 16 KB: the threats section and the secure link (issue 18: the transcript meets keys,
    // the protocol tables name session, helloKey, key), and issues 16-17's new messages
    // (check_username, device, acks). Still about a third of the words it had before issue 15.
    file: 'README.md', most: 16 * 1024, unit: 'bytes',
    why: 'a first screen for a newcomer: the rest lives one click away in docs/ and bench/',
  },
];

function sizeOf(file: string, unit: Budget['unit']): number {
  const text = readFileSync(path.join(ROOT, file), 'utf8');
  if (unit === 'bytes') return Buffer.byteLength(text);
  return text.endsWith('\n') ? text.split('\n').length - 1 : text.split('\n').length;
}

for (const { file, most, unit, why } of BUDGETS) {
  test(`${file} keeps within ${most} ${unit}`, () => {
    const size = sizeOf(file, unit);
    console.log(`${file}: ${size} of ${most} ${unit}`);
    assert.ok(size <= most, `${file} is ${size} ${unit}, over its budget of ${most} (${why}). ` +
      'Move something out of it rather than raise the number; if the number must rise, give ' +
      'the reason next to it in test/budget.test.ts, in the same commit.');
  });
}

test('no top-level .ts file has a line over 100 columns', () => {
  for (const file of readdirSync(ROOT).filter((name) => name.endsWith('.ts'))) {
    const lines = readFileSync(path.join(ROOT, file), 'utf8').split('\n');
    const long = lines.findIndex((line) => [...line].length > 100);
    assert.equal(long, -1, `${file}:${long + 1} is over 100 columns`);
  }
});
