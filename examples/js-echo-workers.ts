// js-echo-workers.ts — the JS echo of examples/js-echo.ts on several cores. One listen() runs all its
// handlers on the one thread that called it, however many loops it has; to give handlers more cores,
// run one listen() per Bun Worker, each with its own loop (threads: 1), all on the same port with
// reusePort: true (SO_REUSEPORT): the kernel spreads new connections over the Workers' sockets, and
// each connection stays with the Worker that accepted it. The first Worker may take port 0 (a free
// port); the others then join the port it got. On SIGINT/SIGTERM the main thread asks every Worker
// to stop: each awaits server.stop(), reports its counters and exits.
//
//   bun examples/js-echo-workers.ts [--workers 2] [--port 6379] [--host 127.0.0.1] [--backend epoll]
//
// This file is both the main thread's module (startEchoWorkers, also used by
// tests/listen-workers.test.ts) and each Worker's entry point.
import { parseArgs } from "node:util";
import { listen, type Listener, type ServerStats } from "../src/index.ts";
import { echoHandler, type EchoState } from "./js-echo.ts";

type Backend = "uring" | "epoll" | "auto";

/** main → worker: listen / stats / stop, each answered with a Reply of the same id. */
type Ask = { type: "listen"; host: string; port: number; backend: Backend } | { type: "stats" } | { type: "stop" };
type Request = Ask & { id: number };
/** worker → main. */
type Result = { ok: true; port?: number; backend?: string; stats?: ServerStats } | { ok: false; message: string; code?: string };
type Reply = Result & { id: number };

// ---- in each Worker ----

declare const self: Worker;

function runWorker(): void {
  let server: Listener | undefined;
  self.onmessage = async (ev: MessageEvent<Request>) => {
    const req = ev.data;
    const reply = (r: Result) => self.postMessage({ id: req.id, ...r });
    try {
      if (req.type === "listen") {
        const { host: hostname, port, backend } = req;
        server = listen<EchoState>({ hostname, port, backend, threads: 1, reusePort: true, allowHalfOpen: true, socket: echoHandler });
        reply({ ok: true, port: server.port, backend: server.backend });
      } else if (req.type === "stats") {
        reply({ ok: true, stats: server?.stats() });
      } else {
        await server?.stop();
        reply({ ok: true, stats: server?.stats() });
        self.onmessage = null; // nothing left to do: the Worker's event loop empties and it exits
      }
    } catch (e) {
      reply({ ok: false, message: (e as Error).message, code: (e as { code?: string }).code });
    }
  };
}

// ---- on the main thread ----

/** One Worker running the echo. */
export interface EchoWorker {
  readonly index: number;
  readonly port: number;
  readonly backend: string;
  /** Its server's counters (connAccepted: connections this Worker accepted). */
  stats(): Promise<ServerStats>;
  /** Stops its server (the Worker awaits server.stop()); resolves with its final counters once the Worker exited. */
  stop(): Promise<ServerStats>;
}

function spawnWorker(index: number) {
  const worker = new Worker(import.meta.url);
  const pending = new Map<number, { resolve: (r: Reply & { ok: true }) => void; reject: (e: Error) => void }>();
  let nextId = 0;
  let gone: Error | undefined;
  /** The Worker failed or exited: what is still asked will not be answered. */
  const fail = (why: string) => {
    gone ??= new Error(`js-echo-workers: worker ${index} ${why}`);
    for (const p of pending.values()) p.reject(gone);
    pending.clear();
  };
  worker.addEventListener("error", (ev) => fail(`failed: ${(ev as ErrorEvent).message}`));
  const exited = new Promise<void>((resolve) => worker.addEventListener("close", () => (fail("exited"), resolve())));
  worker.onmessage = (ev: MessageEvent<Reply>) => {
    const r = ev.data;
    const p = pending.get(r.id);
    pending.delete(r.id);
    if (r.ok) p?.resolve(r);
    else p?.reject(Object.assign(new Error(r.message), { code: r.code }));
  };
  const ask = (req: Ask) =>
    new Promise<Reply & { ok: true }>((resolve, reject) => {
      if (gone) return reject(gone);
      const id = nextId++;
      pending.set(id, { resolve, reject });
      worker.postMessage({ id, ...req });
    });
  return { worker, ask, exited };
}

/**
 * Starts `workers` Workers, each listening with the echo handler on host:port with reusePort (port 0:
 * the first picks a free port, the rest join it). Resolves once all listen; if one cannot, stops the
 * others and rejects with its error.
 */
export async function startEchoWorkers(
  o: { workers?: number; port?: number; host?: string; backend?: Backend } = {},
): Promise<EchoWorker[]> {
  const host = o.host ?? "127.0.0.1";
  const backend = o.backend ?? "epoll";
  let port = o.port ?? 6379;
  const started: EchoWorker[] = [];
  try {
    for (let index = 0; index < (o.workers ?? 2); index++) {
      const { worker, ask, exited } = spawnWorker(index);
      const r = await ask({ type: "listen", host, port, backend }).catch(async (e: unknown) => {
        worker.terminate();
        await exited;
        throw e;
      });
      port = r.port!;
      started.push({
        index,
        port,
        backend: r.backend!,
        stats: async () => (await ask({ type: "stats" })).stats!,
        stop: async () => {
          const final = (await ask({ type: "stop" })).stats!;
          await exited;
          return final;
        },
      });
    }
  } catch (e) {
    await Promise.all(started.map((w) => w.stop()));
    throw e;
  }
  return started;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      workers: { type: "string", default: "2" },
      port: { type: "string", default: "6379" },
      host: { type: "string", default: "127.0.0.1" },
      backend: { type: "string", default: "epoll" },
    },
    strict: true,
  });
  let workers: EchoWorker[];
  try {
    const backend = values.backend as Backend;
    workers = await startEchoWorkers({ workers: Number(values.workers), port: Number(values.port), host: values.host, backend });
  } catch (e) {
    process.stderr.write(`js-echo-workers: ${(e as Error).message}\n`);
    process.exit(1);
  }
  let stopping = false;
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => {
      if (stopping) return;
      stopping = true;
      void Promise.all(workers.map((w) => w.stop())).then((finals) => {
        const accepted = finals.map((s) => s.connAccepted).join(", ");
        process.stdout.write(`js-echo-workers: stopped; connections accepted per worker: ${accepted}\n`);
        process.exit(0);
      });
    });
  }
  const w0 = workers[0]!;
  process.stdout.write(`js-echo-workers (bunring listen, ${w0.backend}, ${workers.length} workers) listening on ${values.host}:${w0.port}\n`);
}

if (!Bun.isMainThread) runWorker();
else if (import.meta.main) await main();
