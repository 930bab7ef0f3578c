/**
 * test/protocol.test.ts — the shared protocol pieces on their own: the decoder, the line
 * splitter, tickets, askRegistry over a real socket, and the command-line helpers. (The fuzz test
 * in fuzz.test.ts throws random input at the same code; PeerChannel has client-peer-channel.)
 */

import assert from 'node:assert/strict';
import { Buffer } from 'node:buffer';
import net from 'node:net';
import { describe, test } from 'node:test';
import {
  INVALID_ANSWER, LineSplitter, UsageError, answerFits, askRegistry, checkTicket, decodeDatagram,
  decodePeerMessage, decodeReply, decodeRequest, encodeLine, makeTicket, numberFlagsUsage,
  readNumberFlags,
} from '../protocol.ts';
import type { NumberFlag, Request } from '../protocol.ts';

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

  test('a ticket bound to a caller\'s key passes only with that key', () => {
    const key = 'A'.repeat(43);
    const bound = makeTicket(bobToken, 'alice', 'bob', 1_000_000, key);
    assert.equal(checkTicket(bobToken, bound, 'alice', 'bob', 0, key), 'valid');
    assert.equal(checkTicket(bobToken, bound, 'alice', 'bob', 0, 'B'.repeat(43)), 'forged');
    assert.equal(checkTicket(bobToken, bound, 'alice', 'bob', 0), 'forged', 'no key proved');
  });

  test('refuse the wrong key, caller or callee, and any tampering', () => {
    assert.equal(checkTicket('other-token', ticket, 'Alice.A', 'bob', 0), 'forged');
    assert.equal(checkTicket(bobToken, ticket, 'mallory', 'bob', 0), 'wrong_caller');
    assert.equal(checkTicket(bobToken, ticket, 'Alice.A', 'carol', 0), 'wrong_callee');
    const parts = ticket.split('.');
    const later = [...parts.slice(0, 3), '9999999999999', parts[4]].join('.');
    assert.equal(checkTicket(bobToken, later, 'Alice.A', 'bob', 0), 'forged',
      'a pushed-back expiry breaks the signature');
    for (const junk of ['', 'v2', 'a.b.c.d.e', ticket + 'x', ticket.replace('v2', 'v1')]) {
      assert.equal(checkTicket(bobToken, junk, 'Alice.A', 'bob', 0), 'forged', junk);
    }
  });
});

describe('answers', () => {
  const search: Request = { type: 'search', token: 't', username: 'Bob' };
  const found = {
    type: 'found', username: 'bob', host: '127.0.0.1', port: 9, ticket: 'x',
  } as const;

  test('an answer fits only the question it answers, about the name asked', () => {
    assert.equal(answerFits(search, found), true);
    assert.equal(answerFits(search, { ...found, username: 'mallory' }), false);
    assert.equal(answerFits(search, { type: 'logged_out' }), false);
    assert.equal(answerFits(search, { type: 'error', code: 'not_online', message: 'm' }), true);
    const list: Request = { type: 'list', token: 't' };
    assert.equal(answerFits(list, { type: 'online', users: ['a'], total: 1 }), true);
    assert.equal(answerFits(list, { type: 'online', users: ['a', 'b'], total: 1 }), false);
  });

  /** A registry that answers every line with `answer` (undefined: never answers). */
  async function fakeRegistry(answer: string | undefined): Promise<net.Server & { port: number }> {
    const server = net.createServer((socket) => {
      socket.on('data', () => {
        if (answer !== undefined) socket.write(answer);
      });
      socket.on('error', () => {});
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return Object.assign(server, { port: (server.address() as net.AddressInfo).port });
  }

  test('askRegistry: the decoded answer, or a sentence for each way it can fail', async () => {
    const ask = (port: number, timeoutMs = 2000) =>
      askRegistry(search, { host: '127.0.0.1', port, name: `here:${port}` }, timeoutMs);
    const good = await fakeRegistry(encodeLine(found));
    // Well-formed JSON, but the name breaks the username rule (it would clear the screen).
    const garbage = await fakeRegistry(JSON.stringify({ ...found, username: '\u001b[2J' }) + '\n');
    // Valid, but not an answer to a search (answerFits): refused here, never seen by the client.
    const unfitting = await fakeRegistry(encodeLine({ type: 'logged_out' }));
    const silent = await fakeRegistry(undefined);
    try {
      assert.deepEqual(await ask(good.port), found);
      await assert.rejects(ask(garbage.port), { message: INVALID_ANSWER });
      await assert.rejects(ask(unfitting.port), { message: INVALID_ANSWER });
      await assert.rejects(ask(silent.port, 200),
        { message: `no answer from the registry at here:${silent.port} within 200 ms` });
      const closed = silent.port;
      silent.close();
      await assert.rejects(ask(closed), { message: `cannot reach the registry at here:${closed} ` +
        '(ECONNREFUSED): nothing is listening on that port (is the registry running?)' });
    } finally {
      good.close();
      garbage.close();
      unfitting.close();
      silent.close();
    }
  });
});

describe('command-line flags', () => {
  const flags: ReadonlyArray<NumberFlag<'port' | 'waitMs'>> = [
    ['port', 'port', 0, 65535, 'where to listen'],
    ['wait-ms', 'waitMs', 1, 1000, 'how long to wait'],
  ];

  test('given flags are read and checked; flags not given are left out', () => {
    assert.deepEqual(readNumberFlags(flags, { port: '80' }), { port: 80 });
    assert.deepEqual(readNumberFlags(flags, {}), {});
    for (const bad of ['-1', '65536', '1.5', 'x']) {
      assert.throws(() => readNumberFlags(flags, { port: bad }), UsageError);
    }
    assert.throws(() => readNumberFlags(flags, { 'wait-ms': '0' }),
      { message: '--wait-ms needs a whole number from 1 to 1000, not "0"' });
  });

  test('--help lines come from the same table, with the defaults', () => {
    const usage = numberFlagsUsage(flags, { port: 5000, waitMs: 20 });
    assert.match(usage, /^ {2}--port N +where to listen \(default 5000\)$/m);
    assert.match(usage, /^ {2}--wait-ms N +how long to wait \(default 20\)$/m);
  });
});
