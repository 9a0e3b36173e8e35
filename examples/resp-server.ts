// resp-server.ts — a Redis-protocol (RESP2) key-value server written as Bun.listen socket handlers,
// which run unchanged on Bun.listen and on bunring's listen() (the C loops do the socket I/O, these
// handlers run in JS). The protocol is in examples/resp/: parser.ts reads requests, commands.ts holds
// the store and the commands, reply.ts writes replies. This file is the per-connection glue and the
// command line:
//   const store = createStore();
//   Bun.listen({ hostname, port, allowHalfOpen: true, socket: createRespHandler(store) })
//   listen({ hostname, port, allowHalfOpen: true, socket: createRespHandler(store) })
//
// Each data event feeds the connection's parser; the complete commands run in order and their
// replies leave together, written whenever FLUSH_BYTES have gathered and at the end. When write()
// takes less than it was given, the rest waits in the connection's queue, reading pauses (pause())
// and the remaining commands wait in the parser; drain() writes the queue and, once it is empty,
// runs them and resumes reading. So a client that sends and does not read holds at most about one
// FLUSH_BYTES batch plus one value (values are queued by reference, not copied). QUIT and protocol
// errors close the connection once their reply is out; after the peer's FIN the commands already
// received are answered, then the socket ends (with allowHalfOpen: false the runtime ends it right
// after end(), and replies still queued here are dropped).
//
// As a script (bun run resp -- ...):
//   bun examples/resp-server.ts [--port 6379] [--host 127.0.0.1] [--backend uring|epoll|auto] [--threads 1]
import { createSession, createStore, execute, type Session, type Store } from "./resp/commands.ts";
import { ProtocolError, RespParser } from "./resp/parser.ts";
import { ReplyBuffer } from "./resp/reply.ts";
import type { Listener } from "../src/index.ts";

export { createStore, type Store } from "./resp/commands.ts";

/** Reply bytes gathered while running a batch of commands before they are written. */
export const FLUSH_BYTES = 256 * 1024;

/** Per-connection state, in socket.data. */
export interface RespConnection {
  parser: RespParser;
  session: Session;
  /** Reply bytes write() did not take yet, oldest first. */
  queue: Uint8Array[];
  queuedBytes: number;
  /** Reading is paused until the queue is written. */
  paused: boolean;
  /** The peer sent FIN: answer what came, then end. */
  peerEnded: boolean;
  /** QUIT or a protocol error: run nothing more, end once the queue is written. */
  closing: boolean;
  /** end() was called, or the socket closed under us: nothing more to do. */
  done: boolean;
}

/** The part of a socket the handlers use: both Bun's Socket and bunring's fit it. */
export interface RespSocket {
  data: RespConnection;
  write(data: Uint8Array): number;
  end(): unknown;
  pause(): void;
  resume(): void;
}

export interface RespHandler {
  open(s: RespSocket): void;
  data(s: RespSocket, chunk: Uint8Array): void;
  drain(s: RespSocket): void;
  end(s: RespSocket): void;
  error(s: RespSocket, error: Error): void;
}

/** The socket handlers of a RESP server over `store` (every connection shares it). */
export function createRespHandler(store: Store = createStore()): RespHandler {
  // One reply buffer for every connection: handlers run one at a time, and each run takes it empty.
  const out = new ReplyBuffer();

  /** Writes queued replies while the socket takes them; false when it stopped taking them. */
  const flushQueue = (s: RespSocket): boolean => {
    const st = s.data;
    while (st.queue.length > 0) {
      const head = st.queue[0]!;
      const n = s.write(head);
      if (n < 0) {
        // Closed under us: nothing more will be written.
        st.queue.length = 0;
        st.queuedBytes = 0;
        st.done = true;
        return false;
      }
      st.queuedBytes -= n;
      if (n < head.length) {
        st.queue[0] = head.subarray(n);
        if (!st.paused) {
          st.paused = true;
          s.pause();
        }
        return false;
      }
      st.queue.shift();
    }
    return true;
  };

  /** Queues what `out` gathered and writes it; false when the socket stopped taking it. */
  const send = (s: RespSocket): boolean => {
    const st = s.data;
    for (const part of out.take()) {
      st.queue.push(part);
      st.queuedBytes += part.length;
    }
    return flushQueue(s);
  };

  /** Runs the parsed commands while the socket takes the replies; ends the socket when it is time. */
  const run = (s: RespSocket): void => {
    const st = s.data;
    while (!st.closing) {
      let args: Uint8Array[] | null;
      try {
        args = st.parser.next();
      } catch (e) {
        if (!(e instanceof ProtocolError)) throw e;
        out.error(`ERR ${e.message}`);
        st.closing = true;
        break;
      }
      if (args === null) break;
      execute(store, st.session, args, out);
      if (st.session.closeAfterReply) st.closing = true;
      else if (out.size >= FLUSH_BYTES && !send(s)) return; // drain() comes back here
    }
    if (!send(s) || st.done) return;
    if (st.closing || st.peerEnded) {
      st.done = true;
      s.end();
      return;
    }
    if (st.paused) {
      st.paused = false;
      s.resume();
    }
  };

  return {
    open(s) {
      s.data = {
        parser: new RespParser(),
        session: createSession(store),
        queue: [],
        queuedBytes: 0,
        paused: false,
        peerEnded: false,
        closing: false,
        done: false,
      };
    },
    data(s, chunk) {
      const st = s.data;
      if (st.closing || st.done) return;
      st.parser.push(chunk); // copies what it keeps: the chunk may be a view valid only now
      if (st.queue.length === 0) run(s); // else drain() runs them once the queue is written
    },
    drain(s) {
      const st = s.data;
      if (st.done || !flushQueue(s)) return;
      run(s);
    },
    end(s) {
      const st = s.data;
      st.peerEnded = true;
      if (st.queue.length === 0 && !st.done) run(s);
    },
    error(_s, error) {
      console.error("resp-server: a handler failed:", error);
    },
  };
}

/** The handlers over one store made when this module loads: `Bun.listen({ ..., socket: respHandler })`. */
export const respHandler: RespHandler = createRespHandler();

/** Prints a one-line error and exits: 2 for a usage error, 1 when the server could not start. */
function fail(message: string, code: 1 | 2): never {
  process.stderr.write(`resp-server: ${message.replace(/^bunring: /, "")}${code === 2 ? " (see --help)" : ""}\n`);
  process.exit(code);
}

async function main(): Promise<void> {
  const { integerFlag, parseFlags, UsageError } = await import("../src/flags.ts");
  const { listen } = await import("../src/index.ts");
  const usage = "usage: bun run resp -- [--port 6379] [--host 127.0.0.1] [--backend uring|epoll|auto] [--threads N]";
  let options: { port: number; host: string; backend: "uring" | "epoll" | "auto"; threads: number };
  try {
    const { values, positionals } = parseFlags(process.argv.slice(2), {
      port: { type: "string" },
      host: { type: "string" },
      backend: { type: "string" },
      threads: { type: "string" },
      help: { type: "boolean", short: "h" },
    });
    if (values.help) {
      process.stdout.write(`${usage}\n`);
      process.exit(0);
    }
    if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
    const backend = values.backend ?? "auto";
    if (backend !== "uring" && backend !== "epoll" && backend !== "auto") {
      throw new UsageError(`--backend must be uring, epoll or auto, got ${JSON.stringify(backend)}`);
    }
    options = {
      port: integerFlag("--port", values.port ?? "6379", 0, 65535),
      host: values.host ?? "127.0.0.1",
      backend,
      threads: integerFlag("--threads", values.threads ?? "1", 1, 1024),
    };
  } catch (e) {
    if (e instanceof UsageError) fail(e.message, 2);
    throw e;
  }
  let server: Listener;
  try {
    server = listen<RespConnection>({
      hostname: options.host,
      port: options.port,
      backend: options.backend,
      threads: options.threads,
      allowHalfOpen: true,
      socket: respHandler,
    });
  } catch (e) {
    fail((e as Error).message, e instanceof TypeError || e instanceof RangeError ? 2 : 1);
  }
  // Handlers first, banner second: a supervisor may signal as soon as it reads the banner.
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => {
      void server.stop().then(() => process.exit(0));
    });
  }
  const address = server.hostname.includes(":") ? `[${server.hostname}]:${server.port}` : `${server.hostname}:${server.port}`;
  process.stdout.write(
    `resp-server (bunring listen, ${server.backend}, ${server.threads} thread${server.threads === 1 ? "" : "s"}) listening on ${address}\n`,
  );
}

if (import.meta.main) await main();
