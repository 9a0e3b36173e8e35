// js-echo.ts — an echo server written as Bun.listen socket handlers, which run unchanged on Bun.listen
// and on bunring's listen() (the C loops do the socket I/O, these handlers run in JS):
//   Bun.listen({ hostname, port, allowHalfOpen: true, socket: echoHandler })
//   listen({ hostname, port, allowHalfOpen: true, socket: echoHandler })
// What write() does not take is queued in order and written on drain; reading pauses while more than
// PAUSE_BYTES wait (a peer that sends but does not read cannot grow the queue without bound); after
// the peer's FIN everything still queued is echoed, then the socket ends. (With allowHalfOpen false
// the runtime ends the socket right after end(): bytes still queued here are then dropped.)
//
// As a script: bun examples/js-echo.ts [--port 6379] [--host 127.0.0.1] [--backend epoll] [--threads 1]
import { parseArgs } from "node:util";

/** Per-connection state, in socket.data. */
export interface EchoState {
  /** Bytes write() did not take yet, oldest first. */
  queue: Uint8Array[];
  queuedBytes: number;
  /** The peer's FIN came: end once the queue is empty. */
  ended: boolean;
  paused: boolean;
}

/** The part of a socket the handlers use: both Bun's Socket and bunring's fit it. */
export interface EchoSocket {
  data: EchoState;
  write(data: Uint8Array): number;
  end(): unknown;
  pause(): void;
  resume(): void;
}

/** Queued bytes past which the connection stops reading until the queue drains. */
export const PAUSE_BYTES = 1 << 20;

/** Writes queued bytes while the socket takes them; false when it stopped taking them. */
function flushQueue(s: EchoSocket): boolean {
  const st = s.data;
  while (st.queue.length > 0) {
    const head = st.queue[0]!;
    const n = s.write(head);
    if (n < 0) {
      st.queue.length = 0;
      st.queuedBytes = 0;
      return false;
    }
    st.queuedBytes -= Math.max(n, 0);
    if (n < head.length) {
      st.queue[0] = head.subarray(n);
      return false;
    }
    st.queue.shift();
  }
  return true;
}

export const echoHandler = {
  open(s: EchoSocket): void {
    s.data = { queue: [], queuedBytes: 0, ended: false, paused: false };
  },
  data(s: EchoSocket, chunk: Uint8Array): void {
    const st = s.data;
    const n = st.queue.length === 0 ? s.write(chunk) : 0;
    if (n < 0 || n === chunk.length) return;
    // Copy (a Buffer's slice() would not): the chunk may be a view valid only during this call
    // (listen's zeroCopy).
    st.queue.push(new Uint8Array(chunk.subarray(n)));
    st.queuedBytes += chunk.length - n;
    if (st.queuedBytes > PAUSE_BYTES && !st.paused) {
      st.paused = true;
      s.pause();
    }
  },
  drain(s: EchoSocket): void {
    const st = s.data;
    if (!flushQueue(s)) return;
    if (st.paused) {
      st.paused = false;
      s.resume();
    }
    if (st.ended) s.end();
  },
  end(s: EchoSocket): void {
    const st = s.data;
    st.ended = true;
    if (st.queue.length === 0) s.end();
  },
};

async function main(): Promise<void> {
  const { listen } = await import("../src/index.ts");
  const { values } = parseArgs({
    options: {
      port: { type: "string", default: "6379" },
      host: { type: "string", default: "127.0.0.1" },
      backend: { type: "string", default: "epoll" },
      threads: { type: "string", default: "1" },
    },
    strict: true,
  });
  const port = Number(values.port);
  const threads = Number(values.threads);
  const backend = values.backend as "epoll" | "auto" | "uring";
  let server: ReturnType<typeof listen>;
  try {
    server = listen<EchoState>({ hostname: values.host, port, threads, backend, allowHalfOpen: true, socket: echoHandler });
  } catch (e) {
    process.stderr.write(`js-echo: ${(e as Error).message}\n`);
    process.exit(e instanceof TypeError || e instanceof RangeError ? 2 : 1);
  }
  // Handlers first, banner second: a supervisor may signal as soon as it reads the banner.
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => {
      void server.stop().then(() => process.exit(0));
    });
  }
  process.stdout.write(`js-echo (bunring listen, ${server.backend}) listening on ${server.hostname}:${server.port}\n`);
}

if (import.meta.main) await main();
