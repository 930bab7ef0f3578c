/**
 * test/client-peer-channel.test.ts — PeerChannel on its own, in this process, over loopback.
 *
 *   PeerChannel (caller) ◀──── TCP 127.0.0.1 ────▶ PeerChannel or raw socket (answerer)
 *
 * PeerChannel lives in protocol.ts: the client uses it for every peer connection, and the
 * benchmark uses it on its own. So it is tested here without any terminal or registry.
 */

import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { MAX_LINE_BYTES, PeerChannel } from '../protocol.ts';
import type { PeerChannelEnd, PeerMessage } from '../protocol.ts';
import { waitUntil } from './helpers.ts';

/** Everything one side of a connection saw. */
type Seen = { messages: PeerMessage[]; ends: PeerChannelEnd[] };

function recorder(): Seen & {
  handlers: { onMessage: (m: PeerMessage) => void; onClose: (e: PeerChannelEnd) => void };
} {
  const seen: Seen = { messages: [], ends: [] };
  return {
    ...seen,
    handlers: {
      onMessage: (message) => seen.messages.push(message),
      onClose: (end) => seen.ends.push(end),
    },
  };
}

/** A listening server whose accepted sockets are handed to `onSocket`. */
async function listener(
  onSocket: (socket: net.Socket) => void,
): Promise<{ port: number; close: () => void }> {
  const server = net.createServer(onSocket);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as net.AddressInfo).port, close: () => server.close() };
}

test('messages travel both ways, in order; close() ends the other side', async () => {
  const answerer = recorder();
  let accepted: PeerChannel | undefined;
  const server = await listener(
    (socket) => (accepted = new PeerChannel(socket, answerer.handlers)),
  );
  const caller = recorder();
  try {
    const channel = await PeerChannel.connect('127.0.0.1', server.port, caller.handlers);
    channel.send({ type: 'chat_request', from: 'alice', ticket: 't' });
    for (let i = 0; i < 50; i++) channel.send({ type: 'msg', text: `line ${i} ✓`, at: 1000 + i });
    await waitUntil(() => answerer.messages.length === 51, 5000, 'all 51 messages');
    assert.deepEqual(answerer.messages[0], { type: 'chat_request', from: 'alice', ticket: 't' });
    assert.deepEqual(answerer.messages[50], { type: 'msg', text: 'line 49 ✓', at: 1049 });
    assert.deepEqual(
      answerer.messages.map((m) => (m.type === 'msg' ? m.at : 0)).slice(1),
      Array.from({ length: 50 }, (_, i) => 1000 + i),
    );

    accepted!.send({ type: 'chat_accept' });
    await waitUntil(() => caller.messages.length === 1, 5000, 'the accept');
    assert.deepEqual(caller.messages, [{ type: 'chat_accept' }]);

    channel.send({ type: 'bye' });
    channel.close();
    await waitUntil(() => answerer.ends.length === 1, 5000, 'the answerer to see the end');
    assert.deepEqual(answerer.ends, [{ kind: 'ended' }]);
    assert.equal(answerer.messages.at(-1)?.type, 'bye'); // sent before close: still delivered
    assert.equal(channel.isOpen, false);
    assert.deepEqual(caller.ends, []); // our own close() is not reported back to us
    channel.send({ type: 'msg', text: 'after close', at: 1 }); // ignored, does not throw
  } finally {
    server.close();
  }
});

test('garbage, an over-long line and silence each end the channel with the reason', async () => {
  const sockets: net.Socket[] = [];
  const server = await listener((socket) => {
    sockets.push(socket);
    socket.on('error', () => {});
  });
  try {
    async function connectAndSend(
      raw: string | null,
      expectWithinMs?: number,
    ): Promise<{ seen: ReturnType<typeof recorder>; remoteClosed: Promise<void> }> {
      const seen = recorder();
      const channel = await PeerChannel.connect('127.0.0.1', server.port, seen.handlers);
      if (expectWithinMs !== undefined) channel.expectWithin(expectWithinMs);
      await waitUntil(() => sockets.length > 0, 2000, 'the server to accept');
      const remote = sockets.shift()!;
      const remoteClosed = new Promise<void>((resolve) => remote.on('close', () => resolve()));
      if (raw !== null) remote.write(raw);
      return { seen, remoteClosed };
    }

    const bad = await connectAndSend('{"type":"chat_accept"}\n{not json}\n{"type":"bye"}\n');
    await waitUntil(() => bad.seen.ends.length === 1, 5000, 'the garbage to end the channel');
    // the valid line before it counts; nothing after
    assert.deepEqual(bad.seen.messages, [{ type: 'chat_accept' }]);
    assert.deepEqual(bad.seen.ends, [{ kind: 'garbage', detail: 'the message is not valid JSON' }]);
    await bad.remoteClosed; // and we hung up on them

    const proto = await connectAndSend(
      '{"type":"msg","text":"x","at":1,"__proto__":{"polluted":true}}\n{"type":"hello"}\n',
    );
    await waitUntil(
      () => proto.seen.ends.length === 1,
      5000,
      'the unknown type to end the channel',
    );
    assert.equal(proto.seen.messages.length, 1);
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    assert.equal(proto.seen.ends[0].kind, 'garbage');

    const long = await connectAndSend('"'.repeat(MAX_LINE_BYTES + 1));
    await waitUntil(() => long.seen.ends.length === 1, 5000, 'the long line to end the channel');
    assert.deepEqual(long.seen.ends, [{ kind: 'too_long' }]);
    await long.remoteClosed;

    const startedAt = Date.now();
    const quiet = await connectAndSend(null, 200);
    await waitUntil(() => quiet.seen.ends.length === 1, 5000, 'silence to end the channel');
    assert.deepEqual(quiet.seen.ends, [{ kind: 'silent', waitedMs: 200 }]);
    assert.ok(Date.now() - startedAt >= 190);
    await quiet.remoteClosed;
  } finally {
    for (const socket of sockets) socket.destroy();
    server.close();
  }
});

test('connect() fails cleanly when nobody listens', async () => {
  const probe = await listener(() => {});
  const port = probe.port;
  probe.close();
  const seen = recorder();
  await assert.rejects(PeerChannel.connect('127.0.0.1', port, seen.handlers, 2000), /ECONNREFUSED/);
  assert.deepEqual(seen.ends, []);
});

test('destroy() cuts the connection at once; the other side sees the end', async () => {
  const answerer = recorder();
  const server = await listener((socket) => new PeerChannel(socket, answerer.handlers));
  const caller = recorder();
  try {
    const channel = await PeerChannel.connect('127.0.0.1', server.port, caller.handlers);
    channel.destroy();
    assert.equal(channel.isOpen, false);
    assert.equal(channel.socket.destroyed, true);
    await waitUntil(() => answerer.ends.length === 1, 5000, 'the answerer to see the end');
    channel.send({ type: 'msg', text: 'after destroy', at: 1 }); // ignored, does not throw
    assert.deepEqual(caller.ends, []);
    assert.deepEqual(answerer.messages, []);
  } finally {
    server.close();
  }
});
