/**
 * test/fuzz.test.ts — the protocol decoders and the line splitter survive hostile input.
 *
 * What this file proves, for decodeRequest, decodeReply, decodeDatagram, decodePeerMessage and
 * LineSplitter, over many thousand random and mutated inputs:
 *   - nothing throws;
 *   - every result is typed: { ok: true, message } whose fields have exactly the schema's types
 *     (checked against an independent copy of the wire schema written out below), or
 *     { ok: false, error } with a non-empty string;
 *   - the decoder agrees with that independent schema on every input (a differential check, so a
 *     decoder that rejected everything, or accepted too much, would fail here);
 *   - `__proto__` / `constructor` / `prototype` keys never reach a prototype: Object.prototype and
 *     Array.prototype are unchanged afterwards and every message is a plain object;
 *   - the splitter returns exactly the lines a simple reference splitter finds, flags over-long
 *     lines at the right moment, and never buffers more than its limit.
 *
 * The inputs come from a seeded PRNG. The seed is printed; rerun a failure with
 *   FUZZ_SEED=<seed> node --import tsx --test test/fuzz.test.ts
 */

import assert from 'node:assert/strict';
import { Buffer } from 'node:buffer';
import { isIP } from 'node:net';
import process from 'node:process';
import { test } from 'node:test';
import {
  LineSplitter, decodeDatagram, decodePeerMessage, decodeReply, decodeRequest,
} from '../protocol.ts';
import type { Decoded } from '../protocol.ts';

// ---------------------------------------------------------------------------------------------
// A small seeded PRNG (mulberry32): the same seed gives the same inputs on every runtime.
// ---------------------------------------------------------------------------------------------

const SEED = process.env.FUZZ_SEED !== undefined
  ? Number(process.env.FUZZ_SEED) >>> 0
  : (Date.now() ^ (Math.random() * 2 ** 32)) >>> 0;

function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Rng = {
  next: () => number;
  int: (below: number) => number;
  pick: <T>(items: readonly T[]) => T;
  chance: (probability: number) => boolean;
};

function makeRng(seed: number): Rng {
  const next = mulberry32(seed);
  return {
    next,
    int: (below) => Math.floor(next() * below),
    pick: (items) => items[Math.floor(next() * items.length)],
    chance: (probability) => next() < probability,
  };
}

// ---------------------------------------------------------------------------------------------
// The wire schema, written out again independently of protocol.ts (from the protocol table):
// what a decoder must accept, field by field.
// ---------------------------------------------------------------------------------------------

type Kind =
  | 'string' | 'text' | 'username' | 'usernames' | 'host' | 'port' | 'positive' | 'count' | 'time'
  | 'true' | 'storage' | 'replaced' | 'error_code' | 'decline_reason' | 'key';
/** A kind ending in "?" marks a field that may be left out. */
type Field = Kind | `${Kind}?`;
type Channel = {
  name: string;
  decode: (input: Uint8Array | string) => Decoded<object>;
  schemas: Record<string, Record<string, Field>>;
};
const baseKind = (field: Field) => field.replace('?', '') as Kind;
const isOptional = (field: Field) => field.endsWith('?');

const ERROR_CODES = [
  'bad_request', 'invalid_username', 'invalid_password', 'username_taken', 'bad_credentials',
  'not_logged_in', 'not_online', 'storage_unavailable', 'too_many_attempts',
  'too_many_connections',
];
const DECLINE_REASONS = ['declined', 'busy', 'timeout', 'bad_ticket'];

const CHANNELS: Channel[] = [
  {
    name: 'decodeRequest',
    decode: decodeRequest,
    schemas: {
      register: { username: 'string', password: 'string' },
      check_username: { username: 'string' },
      login: { username: 'string', password: 'string', chatPort: 'port', device: 'string?' },
      search: { token: 'string', username: 'string' },
      list: { token: 'string', prefix: 'string?' },
      logout: { token: 'string' },
    },
  },
  {
    name: 'decodeReply',
    decode: decodeReply,
    schemas: {
      registered: { username: 'username' },
      username_free: { username: 'username' },
      logged_in: {
        username: 'username', token: 'text', heartbeatMs: 'positive', timeoutMs: 'positive',
        storage: 'storage', replaced: 'true?', device: 'text?', session: 'text?',
        helloKey: 'key?',
      },
      found: { username: 'username', host: 'host', port: 'port', ticket: 'text', key: 'key?' },
      online: { users: 'usernames', total: 'count' },
      logged_out: {},
      error: { code: 'error_code', message: 'string' },
    },
  },
  {
    name: 'decodeDatagram',
    decode: decodeDatagram,
    schemas: {
      hello: {
        username: 'string', token: 'string?', session: 'string?', counter: 'positive?',
        mac: 'string?',
      },
      session_unknown: { reason: 'replaced?' },
    },
  },
  {
    name: 'decodePeerMessage',
    decode: decodePeerMessage,
    schemas: {
      chat_request: { from: 'username', ticket: 'string', acks: 'true?' },
      chat_accept: { acks: 'true?' },
      chat_decline: { reason: 'decline_reason' },
      msg: { text: 'string', at: 'time', id: 'positive?' },
      ack: { id: 'positive' },
      bye: {},
    },
  },
];

/** Usernames and host names, spelled out again from the protocol table. */
const NAME = /^[A-Za-z0-9_.-]{1,32}$/;
const isName = (value: unknown) => typeof value === 'string' && NAME.test(value);
const isHostName = (value: string) => value.length <= 253 &&
  value.split('.').every((label) => /^[A-Za-z0-9-]{1,63}$/.test(label));

function kindHolds(kind: Kind, value: unknown): boolean {
  const isInt = typeof value === 'number' && Number.isInteger(value);
  switch (kind) {
    case 'string': return typeof value === 'string';
    case 'text': return typeof value === 'string' && value !== '';
    case 'username': return isName(value);
    case 'usernames': return Array.isArray(value) && value.every(isName);
    case 'host': return typeof value === 'string' && (isIP(value) !== 0 || isHostName(value));
    case 'port': return isInt && (value as number) >= 1 && (value as number) <= 65535;
    case 'positive': return isInt && (value as number) >= 1;
    case 'count': return isInt && (value as number) >= 0;
    case 'time': return typeof value === 'number' && Number.isFinite(value);
    case 'true': return value === true;
    case 'storage': return value === 'memory' || value === 'mongodb';
    case 'replaced': return value === 'replaced';
    case 'error_code': return typeof value === 'string' && ERROR_CODES.includes(value);
    case 'decline_reason': return typeof value === 'string' && DECLINE_REASONS.includes(value);
    case 'key': // 32 bytes in base64url, unpadded: 43 characters
      return typeof value === 'string' && /^[A-Za-z0-9_-]{43}$/.test(value);
  }
}

/** What the decoder must answer for this input, worked out the slow, obvious way. */
function expectedOutcome(
  channel: Channel,
  input: Uint8Array | string,
): { ok: boolean; message?: Record<string, unknown> } {
  let text: string;
  if (typeof input === 'string') text = input;
  else {
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(input);
    } catch {
      return { ok: false };
    }
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return { ok: false };
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return { ok: false };
  const own = (key: string) => (Object.getOwnPropertyDescriptor(parsed, key)?.value as unknown);
  const type = own('type');
  if (typeof type !== 'string' || !Object.hasOwn(channel.schemas, type)) return { ok: false };
  const message: Record<string, unknown> = { type };
  for (const [field, kind] of Object.entries(channel.schemas[type])) {
    if (own(field) === undefined && isOptional(kind)) continue;
    if (!kindHolds(baseKind(kind), own(field))) return { ok: false };
    message[field] = own(field);
  }
  return { ok: true, message };
}

// ---------------------------------------------------------------------------------------------
// Input generation: valid messages as [key, JSON text] entries, then mutated at the field
// level (wrong types, hostile keys, missing fields) and at the byte level (truncation, random
// and invalid UTF-8 bytes).
// ---------------------------------------------------------------------------------------------

/** JSON texts of awkward values: wrong types, huge and odd numbers, deep nesting, hostile keys. */
function awkwardValue(rng: Rng): string {
  // Deep nesting, now and then very deep.
  const depth = rng.chance(0.03) ? 100_000 : rng.pick([10, 100, 2000]);
  const choices: Array<() => string> = [
    () => 'null', () => 'true', () => 'false', () => '""', () => '"x"', () => '0', () => '-0',
    () => '1',
    () => '-1', () => '1.5', () => '65535', () => '65536', () => '1.0', () => '0.1e1', () => '1e21',
    () => '1e400', () => '-1e400', () => '1e-400', () => '9007199254740993',
    () => '123456789012345678901234567890123456789012345678901234567890',
    () => '[]', () => '["a","b"]', () => '["a",1]', () => '[null]', () => '{}',
    () => '{"__proto__":{"polluted":"yes"}}',
    () => '{"constructor":{"prototype":{"polluted":"yes"}}}',
    () => '"\\ud800"', () => '"\\u0000"', () => '"a\\nb"', () => JSON.stringify('é✓😀'),
    () => JSON.stringify('x'.repeat(rng.chance(0.05) ? 1 << 20 : 5000)),
    () => '['.repeat(depth) + ']'.repeat(depth),
    () => '{"a":'.repeat(depth) + '1' + '}'.repeat(depth),
    () => JSON.stringify(rng.pick(ERROR_CODES)), () => JSON.stringify(rng.pick(DECLINE_REASONS)),
    () => String(Math.floor(rng.next() * 70_000)), () => String(rng.next() * 1e6),
  ];
  return rng.pick(choices)();
}

/** A plausible good value for a field of this kind. */
function goodValue(field: Field, rng: Rng): unknown {
  if (isOptional(field) && rng.chance(0.3)) return undefined; // left out
  switch (baseKind(field)) {
    case 'string': return rng.pick(['alice', 'Bob_2', '', 'x'.repeat(rng.int(40)), 'ünï', 'a b']);
    case 'text': return rng.pick(['tok', 'x'.repeat(1 + rng.int(60)), '127.0.0.1']);
    case 'username': return rng.pick(['alice', 'Bob_2', 'x'.repeat(1 + rng.int(32)), 'a.b-c']);
    case 'usernames': return Array.from({ length: rng.int(5) }, (_, i) => `user${i}`);
    case 'host': return rng.pick(['127.0.0.1', '10.0.0.7', '::1', 'fe80::1', 'chat.example.org']);
    case 'port': return 1 + rng.int(65535);
    case 'positive': return 1 + rng.int(100_000);
    case 'count': return rng.int(100_000);
    case 'time': return rng.pick([Date.now(), 0, -5, 1.25]);
    case 'true': return true;
    case 'storage': return rng.pick(['memory', 'mongodb']);
    case 'replaced': return 'replaced';
    case 'error_code': return rng.pick(ERROR_CODES);
    case 'decline_reason': return rng.pick(DECLINE_REASONS);
    case 'key': return rng.pick(['A'.repeat(43), 'q-_9'.repeat(10) + 'xyz']);
  }
}

const HOSTILE_KEYS = [
  '__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf',
];
const HOSTILE_TYPES = [
  '__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'TYPE', 'Login', '',
];

type Entry = [string, string]; // key, JSON text of the value

function validEntries(channel: Channel, rng: Rng): Entry[] {
  const type = rng.pick(Object.keys(channel.schemas));
  const entries: Entry[] = [['type', JSON.stringify(type)]];
  for (const [field, kind] of Object.entries(channel.schemas[type])) {
    const value = goodValue(kind, rng);
    if (value !== undefined) entries.push([field, JSON.stringify(value)]);
  }
  return entries;
}

function mutateEntries(entries: Entry[], channel: Channel, rng: Rng): Entry[] {
  const out = entries.map((entry) => [...entry] as Entry);
  const rounds = 1 + rng.int(3);
  for (let round = 0; round < rounds; round++) {
    if (out.length === 0) out.push(['type', JSON.stringify(rng.pick(HOSTILE_TYPES))]);
    const at = rng.int(out.length);
    switch (rng.int(9)) {
      case 0: out[at][1] = awkwardValue(rng); break; // wrong type or odd value
      case 1: out.splice(at, 1); break; // missing field
      case 2:
        out.splice(rng.int(out.length + 1), 0, [rng.pick(HOSTILE_KEYS), awkwardValue(rng)]);
        break;
      case 3:
        out.splice(rng.int(out.length + 1), 0, ['__proto__', '{"polluted":"yes","type":"list"}']);
        break;
      case 4: // duplicate key: last wins
        out.push(['type', JSON.stringify(rng.pick(HOSTILE_TYPES))]);
        break;
      case 5: { // another channel's type
        const other = CHANNELS[rng.int(CHANNELS.length)];
        out[0] = ['type', JSON.stringify(rng.pick(Object.keys(other.schemas)))];
        break;
      }
      case 6: out.reverse(); break;
      case 7: out.push(['extra', awkwardValue(rng)]); break; // unknown fields are allowed
      case 8: out.push([rng.pick(Object.keys(channel.schemas)), '"x"']); break;
    }
  }
  return out;
}

function entriesToText(entries: Entry[]): string {
  return '{' + entries.map(([key, value]) => `${JSON.stringify(key)}:${value}`).join(',') + '}';
}

/** Byte sequences that are not valid UTF-8. */
const INVALID_UTF8: number[][] = [
  [0xff], [0xfe], [0xc0, 0x80], [0xc3], [0xe2, 0x82], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80],
  [0x80],
];

function mutateBytes(bytes: Uint8Array, rng: Rng): Uint8Array {
  let out = Buffer.from(bytes);
  const rounds = 1 + rng.int(3);
  for (let round = 0; round < rounds; round++) {
    const at = rng.int(out.length + 1);
    const insert = (inserted: ArrayLike<number>) =>
      Buffer.concat([out.subarray(0, at), Buffer.from(Array.from(inserted)), out.subarray(at)]);
    switch (rng.int(6)) {
      case 0: out = out.subarray(0, at); break; // truncated
      case 1: out = insert(rng.pick(INVALID_UTF8)); break;
      case 2: out = insert([rng.int(256)]); break;
      case 3: if (out.length > 0) out[Math.min(at, out.length - 1)] = rng.int(256); break;
      case 4: out = Buffer.concat([out.subarray(0, at), out.subarray(at + 1)]); break;
      case 5:
        out = insert(Buffer.from(rng.pick(['{', '}', '"', ',', ':', '[', '\\', '\\u', '\n', ' '])));
        break;
    }
  }
  return Uint8Array.from(out);
}

/** Wholly random text: sometimes JSON-ish punctuation, sometimes plain noise. */
function randomLine(rng: Rng): Uint8Array {
  const length = rng.int(200);
  const alphabet = rng.chance(0.5) ? '{}[]":,0123456789eE.-+ truefalsnl\\u_typeprotocnstruc' : null;
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) {
    bytes[i] = alphabet ? alphabet.charCodeAt(rng.int(alphabet.length)) : rng.int(256);
  }
  return bytes;
}

// ---------------------------------------------------------------------------------------------
// Checking one result
// ---------------------------------------------------------------------------------------------

function describeInput(input: Uint8Array | string): string {
  const text = typeof input === 'string' ? input : Buffer.from(input).toString('latin1');
  return JSON.stringify(text.length > 300 ? text.slice(0, 300) + `… (${text.length} chars)` : text);
}

/** Asserts the result's shape and that it matches the independent oracle. */
function checkResult(
  channel: Channel,
  input: Uint8Array | string,
  result: Decoded<object>,
): boolean {
  const where = () => `${channel.name}(${describeInput(input)}) [FUZZ_SEED=${SEED}]`;
  assert.equal(Object.getPrototypeOf(result), Object.prototype,
    `result is a plain object: ${where()}`);
  const expected = expectedOutcome(channel, input);
  if (result.ok) {
    assert.deepEqual(Object.keys(result).sort(), ['message', 'ok'], where());
    const message = result.message as Record<string, unknown>;
    assert.equal(Object.getPrototypeOf(message), Object.prototype,
      `message has Object.prototype: ${where()}`);
    const schema = channel.schemas[message.type as string];
    assert.ok(schema !== undefined && Object.hasOwn(channel.schemas, message.type as string),
      `known type: ${where()}`);
    for (const name of Object.getOwnPropertyNames(message)) {
      assert.ok(name === 'type' || Object.hasOwn(schema, name), `only schema fields: ${where()}`);
    }
    for (const [field, kind] of Object.entries(schema)) {
      if (message[field] === undefined && isOptional(kind)) continue;
      assert.ok(kindHolds(baseKind(kind), message[field]),
        `field ${field} is a ${kind}: ${where()}`);
      if (kind === 'usernames') {
        assert.equal(Object.getPrototypeOf(message[field]), Array.prototype, where());
      }
    }
    assert.ok(expected.ok, `the decoder accepted what the schema refuses: ${where()}`);
    assert.deepEqual(message, expected.message, `decoded fields equal the input's: ${where()}`);
  } else {
    assert.deepEqual(Object.keys(result).sort(), ['error', 'ok'], where());
    assert.equal(typeof result.error, 'string', where());
    assert.ok(result.error.length > 0, `error says something: ${where()}`);
    assert.ok(!expected.ok, `the decoder refused a valid message (${result.error}): ${where()}`);
  }
  return result.ok;
}

function decodeChecked(channel: Channel, input: Uint8Array | string): boolean {
  let result: Decoded<object>;
  try {
    result = channel.decode(input);
  } catch (error) {
    assert.fail(`${channel.name} threw ${String(error)} on ${describeInput(input)} ` +
      `[FUZZ_SEED=${SEED}]`);
  }
  return checkResult(channel, input, result);
}

function prototypeSnapshot(): string {
  const describe = (object: object) => Object.getOwnPropertyNames(object).sort()
    .map((name) => `${name}:${typeof Object.getOwnPropertyDescriptor(object, name)?.value}`)
    .join(',');
  return [Object.prototype, Array.prototype, Function.prototype].map(describe).join('|');
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

const CASES_PER_DECODER = 6000;

test('fuzz: the four decoders never throw, always return typed results, and agree with the ' +
  'schema', () => {
  console.log(`fuzz seed ${SEED} (rerun with FUZZ_SEED=${SEED})`);
  const rng = makeRng(SEED);
  const before = prototypeSnapshot();
  const started = performance.now();
  let total = 0;
  let decodes = 0;
  for (const channel of CHANNELS) {
    const counts = {
      valid: 0, fieldMutated: 0, byteMutated: 0, random: 0, accepted: 0, refused: 0,
    };
    for (let i = 0; i < CASES_PER_DECODER; i++) {
      const entries = validEntries(channel, rng);
      let input: Uint8Array | string;
      const form = rng.int(10);
      if (form === 0) {
        // An untouched valid message must be accepted, with its fields intact.
        input = entriesToText(entries);
        assert.ok(decodeChecked(channel, input), `valid message refused: ${input}`);
        counts.valid++;
      } else if (form <= 4) {
        input = entriesToText(mutateEntries(entries, channel, rng));
        counts.fieldMutated++;
      } else if (form <= 8) {
        const text =
          entriesToText(rng.chance(0.5) ? mutateEntries(entries, channel, rng) : entries);
        input = mutateBytes(Buffer.from(text, 'utf8'), rng);
        counts.byteMutated++;
      } else {
        input = randomLine(rng);
        counts.random++;
      }
      // Every input is decoded both as bytes (as TCP and UDP deliver it) and as a string.
      const asBytes = typeof input === 'string' ? Buffer.from(input, 'utf8') : input;
      const okBytes = decodeChecked(channel, asBytes);
      decodes++;
      if (typeof input === 'string') {
        decodeChecked(channel, input);
        decodes++;
      }
      if (okBytes) counts.accepted++;
      else counts.refused++;
      total++;
    }
    console.log(`fuzz ${channel.name}: ${CASES_PER_DECODER} cases (valid ${counts.valid}, ` +
      `field-mutated ${counts.fieldMutated}, byte-mutated ${counts.byteMutated}, ` +
      `random ${counts.random}) → accepted ${counts.accepted}, refused ${counts.refused}`);
    // Both outcomes must really occur, or the fuzzing is not exercising the decoder.
    assert.ok(counts.accepted > CASES_PER_DECODER / 20,
      `${channel.name} accepted too few to be meaningful`);
    assert.ok(counts.refused > CASES_PER_DECODER / 5,
      `${channel.name} refused too few to be meaningful`);
  }
  assert.equal(prototypeSnapshot(), before, 'Object/Array/Function prototypes are unchanged');
  for (const probe of [{}, [], Object.create(null) as object]) {
    assert.equal((probe as Record<string, unknown>).polluted, undefined,
      'no "polluted" property appeared');
  }
  console.log(`fuzz decoders: ${total} inputs (${decodes} decodes) in ` +
    `${(performance.now() - started).toFixed(0)} ms; prototypes untouched`);
});

test('fuzz: hand-written prototype-pollution attempts are refused or stripped', () => {
  const attacks = [
    '{"__proto__":{"polluted":"yes"},"type":"list","token":"t"}',
    '{"type":"list","token":"t","__proto__":{"type":"register","isAdmin":true}}',
    '{"constructor":{"prototype":{"polluted":"yes"}},"type":"logout","token":"t"}',
    '{"type":"__proto__"}', '{"type":"constructor"}', '{"type":"toString"}',
    '{"type":"hasOwnProperty"}',
    '{"__proto__":{"type":"list","token":"t"}}', // type only inherited: must be refused
    '{"type":"list","__proto__":{"token":"t"}}', // field only inherited: must be refused
    '{"type":"online","users":{"__proto__":[],"length":1,"0":"a"}}', // array look-alike
  ];
  const before = prototypeSnapshot();
  for (const channel of CHANNELS) {
    for (const attack of attacks) decodeChecked(channel, attack);
  }
  const request = decodeRequest(attacks[1]);
  assert.ok(request.ok);
  assert.deepEqual(request.message, { type: 'list', token: 't' });
  assert.equal(Object.hasOwn(request.message, 'isAdmin'), false);
  assert.equal(decodeRequest(attacks[7]).ok, false,
    'a type inherited through __proto__ is not a type');
  assert.equal(decodeRequest(attacks[8]).ok, false,
    'a field inherited through __proto__ is not a field');
  assert.equal(decodeReply(attacks[9]).ok, false, 'an object with a length is not a list of names');
  assert.equal(prototypeSnapshot(), before);
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  assert.equal(({} as Record<string, unknown>).isAdmin, undefined);
});

/** The obvious splitter, one byte at a time: which lines come out, and at which chunk a line is
 * first known to be over the limit (a finished line over it, or an unfinished tail over it). */
function referenceSplit(
  chunks: Uint8Array[],
  maxLineBytes: number,
): { lines: string[]; overflowAtChunk: number; tail: number } {
  const lines: string[] = [];
  let current: number[] = [];
  for (let c = 0; c < chunks.length; c++) {
    for (const byte of chunks[c]) {
      if (byte !== 10) {
        current.push(byte);
        continue;
      }
      if (current.length > 0 && current[current.length - 1] === 13) current.pop();
      if (current.length > maxLineBytes) return { lines, overflowAtChunk: c, tail: 0 };
      if (current.length > 0) lines.push(Buffer.from(current).toString('latin1'));
      current = [];
    }
    // An unfinished line may hold one byte more than the limit only if that byte is the "\r"
    // of a "\r\n" still to come.
    const endsInCr = current[current.length - 1] === 13;
    if (current.length > maxLineBytes + (endsInCr ? 1 : 0)) {
      return { lines, overflowAtChunk: c, tail: 0 };
    }
  }
  return { lines, overflowAtChunk: -1, tail: current.length };
}

test('fuzz: LineSplitter returns exactly the reference lines, flags over-long ones, and stays ' +
  'bounded', () => {
  const rng = makeRng(SEED ^ 0x5eed);
  const streams = 3000;
  let chunksFed = 0;
  let linesOut = 0;
  let overflows = 0;
  let maxBuffered = 0;
  for (let s = 0; s < streams; s++) {
    const maxLineBytes = rng.pick([1, 8, 64, 300, 1024]);
    const splitter = rng.chance(0.04) ? new LineSplitter() : new LineSplitter(maxLineBytes);
    const limit = splitter.maxLineBytes;
    // Lines of random lengths around the limit, with \n, \r\n, empty lines and invalid UTF-8.
    const parts: number[] = [];
    const lineCount = 1 + rng.int(12);
    for (let l = 0; l < lineCount; l++) {
      const length = rng.chance(0.06)
        ? rng.pick([limit + 1, rng.int(2 * limit + 2)]) // sometimes over the limit
        : rng.pick([0, 1, rng.int(limit + 1), limit, Math.max(0, limit - 1)]);
      for (let i = 0; i < length; i++) {
        parts.push(rng.chance(0.1) ? rng.pick([0xff, 0xc3, 0x0d, 0x00]) : 97 + rng.int(26));
      }
      if (rng.chance(0.9)) parts.push(...(rng.chance(0.3) ? [13, 10] : [10]));
    }
    const stream = Uint8Array.from(parts);
    const chunks: Uint8Array[] = [];
    for (let at = 0; at < stream.length;) {
      const size = Math.max(1, rng.pick([1, 2, 7, rng.int(limit * 2 + 3), stream.length]));
      chunks.push(stream.slice(at, at + size));
      at += size;
    }
    const expected = referenceSplit(chunks, limit);
    const got: string[] = [];
    let overflowAt = -1;
    for (let c = 0; c < chunks.length; c++) {
      const result = splitter.push(chunks[c]);
      chunksFed++;
      got.push(...result.lines.map((line) => Buffer.from(line).toString('latin1')));
      if (result.tooLong) {
        overflowAt = c;
        break;
      }
      assert.ok(splitter.bufferedBytes <= limit + 1,
        `buffered ${splitter.bufferedBytes} > limit ${limit} + "\\r" [FUZZ_SEED=${SEED}]`);
      maxBuffered = Math.max(maxBuffered, splitter.bufferedBytes);
    }
    const sizes = chunks.map((chunk) => chunk.length).join('+');
    const context = `stream ${s}, limit ${limit}, chunks ${sizes} [FUZZ_SEED=${SEED}]`;
    assert.deepEqual(got, expected.lines, `lines differ: ${context}`);
    assert.equal(overflowAt, expected.overflowAtChunk,
      `over-long line flagged at the wrong chunk: ${context}`);
    if (overflowAt === -1) {
      assert.equal(splitter.bufferedBytes, expected.tail, `unfinished tail: ${context}`);
    }
    for (const line of got) {
      assert.ok(line.length <= limit, `a line over the limit came out: ${context}`);
    }
    linesOut += got.length;
    if (overflowAt !== -1) overflows++;
  }
  console.log(`fuzz LineSplitter: ${streams} streams, ${chunksFed} chunks, ` +
    `${linesOut} lines out, ${overflows} over-long lines flagged; ` +
    `largest unfinished buffer ${maxBuffered} bytes (limit ≤ 16384)`);
  assert.ok(overflows > streams / 20 && overflows < streams, 'both outcomes occurred');
});
