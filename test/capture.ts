/**
 * test/capture.ts — a packet capture on the loopback interface, as a classmate would run one.
 *
 * Node cannot open a raw packet socket, so a few lines of Python do (AF_PACKET, root only): every
 * frame that crosses `lo` while the capture runs is copied to our side, whole. A test then looks
 * for secrets in those bytes exactly as someone with Wireshark would: anywhere in any packet.
 * Where Python or the raw socket is missing (not root, another OS), startCapture() says why, and
 * the test that needs it is skipped visibly.
 */

import { Buffer } from 'node:buffer';
import { spawn, spawnSync } from 'node:child_process';

const CAPTURE_SCRIPT = `
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(3))
s.bind(("lo", 0))
s.settimeout(0.2)
sys.stdout.write("ready\\n"); sys.stdout.flush()
out = sys.stdout.buffer
while True:
    try:
        frame = s.recv(65535)
    except socket.timeout:
        continue
    out.write(len(frame).to_bytes(4, "big") + frame); out.flush()
`;

/** Why a capture cannot run here, or undefined if it can. */
export function captureUnavailable(): string | undefined {
  const probe = spawnSync('python3', ['-c',
    'import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(3))'], {
    encoding: 'utf8',
  });
  if (probe.error) return `python3 is not available (${probe.error.message})`;
  if (probe.status !== 0) {
    return `no raw packet socket here: ${probe.stderr.trim().split('\n').pop()}`;
  }
  return undefined;
}

/** A running capture: stop() ends it and returns every frame seen, concatenated. */
export type Capture = { stop(): Promise<Buffer> };

export async function startCapture(): Promise<Capture> {
  const child = spawn('python3', ['-u', '-c', CAPTURE_SCRIPT], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const chunks: Buffer[] = [];
  let ready = false;
  await new Promise<void>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => {
      reject(new Error(`the capture exited (${code}) before it was ready`));
    });
    child.stdout.on('data', (chunk: Buffer) => {
      if (ready) return void chunks.push(chunk);
      const text = chunk.toString('latin1');
      const newline = text.indexOf('\n');
      if (newline < 0) return;
      ready = true;
      chunks.push(chunk.subarray(newline + 1));
      resolve();
    });
  });
  let stopped: Promise<Buffer> | undefined; // stop() twice (a test's finally) is harmless
  return {
    stop() {
      stopped ??= (async () => {
        await new Promise((resolve) => setTimeout(resolve, 300)); // the last frames to arrive
        child.kill('SIGKILL');
        if (child.exitCode === null && child.signalCode === null) {
          await new Promise((resolve) => child.once('exit', resolve));
        }
        return Buffer.concat(chunks);
      })();
      return stopped;
    },
  };
}

/** Which of `secrets` appear anywhere in the captured bytes (as UTF-8, or as the base64/base64url
 * or hex a protocol might wrap them in). */
export function secretsSeen(captured: Buffer, secrets: string[]): string[] {
  return secrets.filter((secret) => {
    const bytes = Buffer.from(secret, 'utf8');
    const forms = [bytes, Buffer.from(bytes.toString('base64url')),
      Buffer.from(bytes.toString('hex'))];
    return forms.some((form) => form.length > 0 && captured.includes(form));
  });
}
