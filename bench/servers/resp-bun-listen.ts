// resp-bun-listen.ts — the benchmark's small RESP2 server on Bun.listen: PING, GET, SET (and an error
// for anything else), one Map of keys, pipelined commands answered in order, commands split across
// data events reassembled. The `resp` workload's reference point (target resp-bun-listen), and what
// the tests run the RESP presets against when no redis-server is installed. Replies are queued in
// order when the socket does not take them all (as bench/servers/bun-listen.ts does).
//   bun bench/servers/resp-bun-listen.ts --port 6390 [--host 127.0.0.1]
import { parseArgs } from "node:util";
import type { Socket } from "bun";

const { values } = parseArgs({
  options: { port: { type: "string" }, host: { type: "string", default: "127.0.0.1" } },
  strict: true,
});
const port = Number(values.port);
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  process.stderr.write(`resp-bun-listen: --port must be an integer in 1..65535, got ${JSON.stringify(values.port)}\n`);
  process.exit(2);
}

const store = new Map<string, Buffer>();
const OK = Buffer.from("+OK\r\n");
const PONG = Buffer.from("+PONG\r\n");
const NIL = Buffer.from("$-1\r\n");

interface Conn {
  /** Received bytes not yet parsed into a whole command. */
  pending: Buffer;
  /** Replies the kernel did not take yet, oldest first. */
  queue: Uint8Array[];
}

/** Parses one command (an array of bulk strings) at `at`: [args, next offset], null if incomplete, or an Error. */
function parseCommand(buf: Buffer, at: number): [Buffer[], number] | null | Error {
  const line = (from: number): [string, number] | null => {
    const end = buf.indexOf("\r\n", from, "latin1");
    return end < 0 ? null : [buf.toString("latin1", from, end), end + 2];
  };
  const head = line(at);
  if (!head) return null;
  if (!head[0].startsWith("*")) return new Error("expected an array of bulk strings");
  const n = Number(head[0].slice(1));
  let pos = head[1];
  const args: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const len = line(pos);
    if (!len) return null;
    if (!len[0].startsWith("$")) return new Error("expected a bulk string");
    const size = Number(len[0].slice(1));
    if (len[1] + size + 2 > buf.length) return null;
    args.push(buf.subarray(len[1], len[1] + size));
    pos = len[1] + size + 2;
  }
  return [args, pos];
}

function reply(args: Buffer[]): Buffer {
  const cmd = args[0]?.toString("latin1").toUpperCase();
  if (cmd === "PING" && args.length === 1) return PONG;
  if (cmd === "GET" && args.length === 2) {
    const v = store.get(args[1]!.toString("latin1"));
    return v ? Buffer.concat([Buffer.from(`$${v.length}\r\n`), v, Buffer.from("\r\n")]) : NIL;
  }
  if (cmd === "SET" && args.length === 3) {
    store.set(args[1]!.toString("latin1"), Buffer.from(args[2]!));
    return OK;
  }
  return Buffer.from(`-ERR unknown command or wrong number of arguments\r\n`);
}

function send(socket: Socket<Conn>, bytes: Uint8Array): void {
  const queue = socket.data.queue;
  if (queue.length > 0) {
    queue.push(bytes);
    return;
  }
  const written = socket.write(bytes);
  if (written >= 0 && written < bytes.byteLength) queue.push(bytes.subarray(written));
}

Bun.listen<Conn>({
  hostname: values.host,
  port,
  socket: {
    open(socket) {
      socket.data = { pending: Buffer.alloc(0), queue: [] };
    },
    data(socket, chunk) {
      const buf = socket.data.pending.length > 0 ? Buffer.concat([socket.data.pending, chunk]) : Buffer.from(chunk);
      const out: Buffer[] = [];
      let at = 0;
      for (;;) {
        const parsed = parseCommand(buf, at);
        if (parsed === null) break;
        if (parsed instanceof Error) {
          send(socket, Buffer.from(`-ERR protocol error: ${parsed.message}\r\n`));
          socket.end();
          return;
        }
        out.push(reply(parsed[0]));
        at = parsed[1];
      }
      // Copy the unparsed tail: Bun reuses the chunk's memory after this handler.
      socket.data.pending = at < buf.length ? Buffer.from(buf.subarray(at)) : Buffer.alloc(0);
      if (out.length > 0) send(socket, out.length === 1 ? out[0]! : Buffer.concat(out));
    },
    drain(socket) {
      const queue = socket.data.queue;
      while (queue.length > 0) {
        const head = queue[0]!;
        const written = socket.write(head);
        if (written < 0) return;
        if (written < head.byteLength) {
          queue[0] = head.subarray(written);
          return;
        }
        queue.shift();
      }
    },
    error() {},
  },
});
process.stdout.write(`resp-bun-listen listening on ${values.host}:${port}\n`);
for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => process.exit(0));
