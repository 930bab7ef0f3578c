/**
 * test/protocol.test.ts — the shared protocol pieces on their own: the decoder, the line
 * splitter and tickets. (The fuzz test in fuzz.test.ts throws random input at the same code.)
 */

import assert from 'node:assert/strict';
import { Buffer } from 'node:buffer';
import { describe, test } from 'node:test';
import {
  LineSplitter, checkTicket, decodeDatagram, decodePeerMessage, decodeReply, decodeRequest,
  encodeLine, makeTicket,
} from '../protocol.ts';

const text = (bytes: Uint8Array) => Buffer.from(bytes).toString('utf8');

describe('decoder', () => {
  test('a valid request comes back typed, with only the fields of its schema', () => {
    const decoded = decodeRequest(
      '{"type":"login","username":"a","password":"b","chatPort":80,"extra":1}');
    assert.deepEqual(decoded, {
      ok: true,
      message: { type: 'login', username: 'a', password: 'b', chatPort: 80 },
    });
  });

  test('each channel accepts only its own messages', () => {
    assert.equal(decodeRequest('{"type":"hello","username":"a","token":"t"}').ok, false);
    assert.equal(decodeDatagram('{"type":"hello","username":"a","token":"t"}').ok, true);
    assert.equal(decodePeerMessage('{"type":"msg","text":"hi","at":1}').ok, true);
    assert.equal(decodePeerMessage('{"type":"msg","text":"hi","at":"now"}').ok, false);
    assert.equal(decodePeerMessage('{"type":"chat_decline","reason":"rude"}').ok, false);
    assert.equal(decodeReply('{"type":"error","code":"not_online","message":"m"}').ok, true);
    assert.equal(decodeReply('{"type":"error","code":"made_up","message":"m"}').ok, false);
  });

  test('what the registry sends follows the same rules as what a stranger sends', () => {
    const loggedIn = (fields: object) => decodeReply(JSON.stringify({
      type: 'logged_in', username: 'kate', token: 't', heartbeatMs: 2000, timeoutMs: 10000,
      storage: 'memory', ...fields,
    })).ok;
    assert.equal(loggedIn({}), true);
    assert.equal(loggedIn({ replaced: true }), true);
    assert.equal(loggedIn({ replaced: 'yes' }), false);
    assert.equal(loggedIn({ storage: 'disk' }), false);
    for (const username of ['\u001b]52;c;aGk=\u0007', '../../x', '\u212Aate', '', 'a'.repeat(33)]) {
      assert.equal(loggedIn({ username }), false, JSON.stringify(username));
      assert.equal(decodeReply(JSON.stringify({ type: 'registered', username })).ok, false);
      assert.equal(decodeReply(JSON.stringify({ type: 'online', users: [username], total: 1 })).ok,
        false);
      assert.equal(decodePeerMessage(JSON.stringify({ type: 'chat_request', from: username,
        ticket: 't' })).ok, false, 'a chat_request "from" follows the username rule too');
    }
    const found = (host: unknown) => decodeReply(JSON.stringify({
      type: 'found', username: 'bob', host, port: 4000, ticket: 't',
    })).ok;
    for (const host of ['10.0.0.7', '::1', 'fe80::1', 'chat.example.org', 'localhost']) {
      assert.equal(found(host), true, host);
    }
    for (const host of ['', 'a b', 'x\u001b[2J', '../../x', 'a'.repeat(254), 7]) {
      assert.equal(found(host), false, String(host));
    }
  });

  test('optional fields may be left out, but not filled with the wrong kind', () => {
    assert.deepEqual(decodeRequest('{"type":"list","token":"t"}'),
      { ok: true, message: { type: 'list', token: 't' } });
    assert.deepEqual(decodeRequest('{"type":"list","token":"t","prefix":"al"}'),
      { ok: true, message: { type: 'list', token: 't', prefix: 'al' } });
    assert.equal(decodeRequest('{"type":"list","token":"t","prefix":5}').ok, false);
    assert.deepEqual(decodeDatagram('{"type":"session_unknown","reason":"replaced"}'),
      { ok: true, message: { type: 'session_unknown', reason: 'replaced' } });
    assert.equal(decodeDatagram('{"type":"session_unknown","reason":"bored"}').ok, false);
  });

  test('"__proto__" keys are data, never a prototype', () => {
    const decoded = decodeRequest('{"type":"list","token":"t","__proto__":{"admin":true}}');
    assert.ok(decoded.ok);
    assert.equal(Object.getPrototypeOf(decoded.message), Object.prototype);
    assert.equal((decoded.message as Record<string, unknown>).admin, undefined);
    const inherited = decodeRequest('{"__proto__":{"type":"list","token":"t"}}');
    assert.equal(inherited.ok, false, 'fields must be own fields, not inherited');
  });

  test('invalid UTF-8 bytes are an error, not replacement characters', () => {
    const decoded = decodeRequest(Uint8Array.from([0x7b, 0x22, 0xff, 0x22, 0x7d]));
    assert.deepEqual(decoded, { ok: false, error: 'the message is not valid UTF-8' });
  });

  test('encodeLine writes one line that decodes back to the same message', () => {
    const message = { type: 'msg', text: 'multi\nline "quoted"', at: 5 } as const;
    const line = encodeLine(message);
    assert.equal(line.indexOf('\n'), line.length - 1);
    assert.deepEqual(decodePeerMessage(line.trimEnd()), { ok: true, message });
  });
});

describe('line splitter', () => {
  test('joins lines cut across chunks, including inside a multi-byte character', () => {
    const splitter = new LineSplitter(100);
    const bytes = Buffer.from('{"a":"é"}\n{"b":2}\r\n\n{"c"');
    const cut = bytes.indexOf(0xa9); // the second byte of é
    const first = splitter.push(bytes.subarray(0, cut));
    const second = splitter.push(bytes.subarray(cut));
    assert.deepEqual(first.lines, []);
    assert.deepEqual(second.lines.map(text), ['{"a":"é"}', '{"b":2}']);
    assert.equal(splitter.bufferedBytes, 4);
    assert.deepEqual(splitter.push(Buffer.from(':3}\n')).lines.map(text), ['{"c":3}']);
    assert.equal(splitter.bufferedBytes, 0);
  });

  test('a line over the limit is reported, whether it arrives whole or in pieces', () => {
    assert.equal(new LineSplitter(10).push(Buffer.from('12345678901\n')).tooLong, true);
    assert.equal(new LineSplitter(10).push(Buffer.from('1234567890\n')).tooLong, false);
    const dribbled = new LineSplitter(10);
    assert.equal(dribbled.push(Buffer.from('123456')).tooLong, false);
    assert.equal(dribbled.push(Buffer.from('78901')).tooLong, true,
      'no newline needed to know it is too long');
  });

  test('the limit is on the line itself: a line of exactly the limit may end in "\\r\\n"', () => {
    const limit = 16 * 1024;
    const line = Buffer.alloc(limit, 'a');
    const whole = new LineSplitter(limit).push(Buffer.concat([line, Buffer.from('\r\n')]));
    assert.deepEqual([whole.tooLong, whole.lines.length, whole.lines[0]?.length],
      [false, 1, limit]);
    const dribbled = new LineSplitter(limit);
    for (const byte of Buffer.concat([line, Buffer.from('\r')])) {
      assert.equal(dribbled.push(Uint8Array.of(byte)).tooLong, false);
    }
    assert.equal(dribbled.push(Buffer.from('\n')).lines[0]?.length, limit);
    const over = new LineSplitter(limit).push(Buffer.concat([line, Buffer.from('a\r\n')]));
    assert.equal(over.tooLong, true, 'one byte more is too long, "\\r" or not');
  });

  test('a line dribbled one byte at a time comes out whole and in order', () => {
    const splitter = new LineSplitter(100);
    const received: string[] = [];
    for (const byte of Buffer.from('first line\nsecond, é\r\n')) {
      received.push(...splitter.push(Uint8Array.of(byte)).lines.map(text));
    }
    assert.deepEqual(received, ['first line', 'second, é']);
    assert.equal(splitter.bufferedBytes, 0);
  });
});

describe('tickets', () => {
  const bobToken = 'bob-session-token';
  const ticket = makeTicket(bobToken, 'Alice.A', 'bob', 1_000_000);

  test('verify for the right caller and callee, ignoring case, until they expire', () => {
    assert.equal(checkTicket(bobToken, ticket, 'alice.a', 'BOB', 999_999), 'valid');
    assert.equal(checkTicket(bobToken, ticket, 'alice.a', 'bob', 1_000_001), 'expired');
  });

  test('refuse the wrong key, caller or callee, and any tampering', () => {
    assert.equal(checkTicket('other-token', ticket, 'Alice.A', 'bob', 0), 'forged');
    assert.equal(checkTicket(bobToken, ticket, 'mallory', 'bob', 0), 'wrong_caller');
    assert.equal(checkTicket(bobToken, ticket, 'Alice.A', 'carol', 0), 'wrong_callee');
    const parts = ticket.split('.');
    const later = [...parts.slice(0, 3), '9999999999999', parts[4]].join('.');
    assert.equal(checkTicket(bobToken, later, 'Alice.A', 'bob', 0), 'forged',
      'a pushed-back expiry breaks the signature');
    for (const junk of ['', 'v1', 'a.b.c.d.e', ticket + 'x', ticket.replace('v1', 'v2')]) {
      assert.equal(checkTicket(bobToken, junk, 'Alice.A', 'bob', 0), 'forged', junk);
    }
  });
});
