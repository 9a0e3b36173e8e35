// resp-bun-listen.ts — the benchmark's RESP2 server on Bun.listen: the handler module of
// examples/resp-server.ts (its respHandler: the same object `bun run resp` hands to bunring's listen())
// run on Bun.listen with the same options (allowHalfOpen: true, default binaryType), so the `resp`
// workload's targets resp-bunring-uring, resp-bunring-epoll and resp-bun-listen run one handler module
// and differ only in the runtime under it (as bench/servers/js-echo.ts does for js-echo). The `resp`
// workload's reference point (target resp-bun-listen), and what the tests run the RESP presets against
// when no redis-server is installed.
//   bun bench/servers/resp-bun-listen.ts --port 6390 [--host 127.0.0.1]
import { parseArgs } from "node:util";
import { respHandler, type RespConnection } from "../../examples/resp-server.ts";

function fail(message: string): never {
  process.stderr.write(`resp-bun-listen: ${message}\n`);
  process.exit(2);
}

let values: { port?: string; host?: string };
try {
  ({ values } = parseArgs({
    options: { port: { type: "string" }, host: { type: "string", default: "127.0.0.1" } },
    strict: true,
  }));
} catch (e) {
  fail((e as Error).message);
}
const port = Number(values.port);
if (!Number.isInteger(port) || port < 1 || port > 65535) fail(`--port must be an integer in 1..65535, got ${JSON.stringify(values.port)}`);
const hostname = values.host!;

Bun.listen<RespConnection>({ hostname, port, allowHalfOpen: true, socket: respHandler });
for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => process.exit(0));
process.stdout.write(`resp-bun-listen (examples/resp-server.ts's handler on Bun.listen) listening on ${hostname}:${port}\n`);
