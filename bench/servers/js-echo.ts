// js-echo.ts — the benchmark's js-echo targets: ONE handler module (examples/js-echo.ts's echoHandler)
// run on bunring's C loops through listen({ backend }) or on Bun.listen, with the same options
// (allowHalfOpen: true, default binaryType), so the runtime under the handlers is the only difference.
//   bun bench/servers/js-echo.ts --runtime bunring-uring|bunring-epoll|bun-listen --port N [--host 127.0.0.1]
//                                [--stats FILE] [--cpu N]
// --cpu (bunring runtimes only) pins the loop thread, for machines without taskset.
// On SIGTERM/SIGINT a bunring runtime stops and writes its final server.stats() as one JSON line to
// stderr ("js-echo stats: {...}") and, with --stats, to FILE (where the handler mode's counters per
// request come from: jsEvents, jsCommands, jsDoorbells, jsWakeups, loopIterations over bytesOut / length).
import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { echoHandler, type EchoState } from "../../examples/js-echo.ts";
import { listen } from "../../src/index.ts";

const RUNTIMES = ["bunring-uring", "bunring-epoll", "bun-listen"] as const;
type Runtime = (typeof RUNTIMES)[number];

function fail(message: string): never {
  process.stderr.write(`js-echo: ${message}\n`);
  process.exit(2);
}

let values: { runtime?: string; port?: string; host?: string; stats?: string; cpu?: string };
try {
  ({ values } = parseArgs({
    options: {
      runtime: { type: "string" },
      port: { type: "string" },
      host: { type: "string", default: "127.0.0.1" },
      stats: { type: "string" },
      cpu: { type: "string" },
    },
    strict: true,
  }));
} catch (e) {
  fail((e as Error).message);
}
const runtime = values.runtime as Runtime;
if (!(RUNTIMES as readonly string[]).includes(runtime)) fail(`--runtime must be one of ${RUNTIMES.join(", ")}, got ${JSON.stringify(values.runtime)}`);
const port = Number(values.port);
if (!Number.isInteger(port) || port < 1 || port > 65535) fail(`--port must be an integer in 1..65535, got ${JSON.stringify(values.port)}`);
const hostname = values.host!;
const cpu = values.cpu === undefined ? undefined : Number(values.cpu);
if (cpu !== undefined && (!Number.isInteger(cpu) || cpu < 0)) fail(`--cpu must be a CPU number, got ${JSON.stringify(values.cpu)}`);

if (runtime === "bun-listen") {
  Bun.listen<EchoState>({ hostname, port, allowHalfOpen: true, socket: echoHandler });
  for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => process.exit(0));
} else {
  const backend = runtime === "bunring-uring" ? "uring" : "epoll";
  let server: ReturnType<typeof listen>;
  try {
    server = listen<EchoState>({ hostname, port, backend, allowHalfOpen: true, socket: echoHandler, ...(cpu === undefined ? {} : { cpus: [cpu] }) });
  } catch (e) {
    process.stderr.write(`js-echo: ${(e as Error).message}\n`);
    process.exit(1);
  }
  let stopping = false;
  const onSignal = () => {
    if (stopping) return;
    stopping = true;
    // The load is over when the bench stops a server: close what is left at once.
    void server.stop(true).then(() => {
      const line = JSON.stringify({ runtime, ...server.stats() });
      process.stderr.write(`js-echo stats: ${line}\n`);
      if (values.stats) writeFileSync(values.stats, `${line}\n`);
      process.exit(0);
    });
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, onSignal);
}
process.stdout.write(`js-echo (${runtime}) listening on ${hostname}:${port}\n`);
