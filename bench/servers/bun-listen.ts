// bun-listen.ts — the benchmark's Bun.listen echo server, written to be correct under backpressure:
// socket.write() may take only part of a chunk, so the rest (and anything received while a backlog
// exists) is copied into a per-socket queue, flushed in order from the drain handler.
//   bun bench/servers/bun-listen.ts --port 6381 [--host 127.0.0.1]
import { parseArgs } from "node:util";
import type { Socket } from "bun";

const { values } = parseArgs({
  options: { port: { type: "string" }, host: { type: "string", default: "127.0.0.1" } },
  strict: true,
});
const port = Number(values.port);
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  process.stderr.write(`bun-listen: --port must be an integer in 1..65535, got ${JSON.stringify(values.port)}\n`);
  process.exit(2);
}

interface Backlog {
  /** Bytes not yet accepted by the kernel, oldest first (copies: Bun reuses the data buffer). */
  queue: Uint8Array[];
}

/** Writes queued chunks in order until the socket stops taking bytes. */
function flush(socket: Socket<Backlog>): void {
  const queue = socket.data.queue;
  while (queue.length > 0) {
    const head = queue[0]!;
    const written = socket.write(head);
    if (written < 0) return; // closed
    if (written < head.byteLength) {
      queue[0] = head.subarray(written);
      return;
    }
    queue.shift();
  }
}

Bun.listen<Backlog>({
  hostname: values.host,
  port,
  socket: {
    open(socket) {
      socket.data = { queue: [] };
    },
    data(socket, chunk) {
      const queue = socket.data.queue;
      if (queue.length > 0) {
        queue.push(new Uint8Array(chunk)); // keep order behind the backlog
        return;
      }
      const written = socket.write(chunk);
      if (written >= 0 && written < chunk.byteLength) queue.push(new Uint8Array(chunk.subarray(written)));
    },
    drain(socket) {
      flush(socket);
    },
    error() {},
  },
});
process.stdout.write(`bun-listen listening on ${values.host}:${port}\n`);
for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => process.exit(0));
