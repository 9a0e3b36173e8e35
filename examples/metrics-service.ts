// metrics-service.ts — a Bun service that embeds a bunring echo server in-process and serves its live
// counters in Prometheus text format at /metrics (and a JSON view at /stats).
//   bun examples/metrics-service.ts [echoPort=6379] [httpPort=9100] [backend=uring]
import { serve, type ServerStats } from "../src/index.ts";

const [echoPort = "6379", httpPort = "9100", backend = "uring"] = process.argv.slice(2);
if (backend !== "uring" && backend !== "epoll" && backend !== "auto") {
  console.error(`backend must be uring, epoll or auto, got ${JSON.stringify(backend)}`);
  process.exit(2);
}

function portArg(name: string, raw: string): number {
  if (!/^\d+$/.test(raw) || Number(raw) > 65535) {
    console.error(`${name} must be a port from 0 to 65535 (0 = any free port), got ${JSON.stringify(raw)}`);
    process.exit(2);
  }
  return Number(raw);
}

const echo = serve({ backend, port: portArg("echoPort", echoPort) });

/** Counters that only go up are Prometheus counters; the rest are gauges. */
const GAUGES = new Set<keyof ServerStats>(["connOpen", "pausedNow", "buffersTotal", "buffersInUse"]);

function snake(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

export function prometheusText(stats: ServerStats, labels: Record<string, string>): string {
  const labelText = Object.entries(labels)
    .map(([k, v]) => `${k}="${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`)
    .join(",");
  const lines: string[] = [];
  for (const [name, value] of Object.entries(stats) as [keyof ServerStats, number][]) {
    const gauge = GAUGES.has(name);
    const metric = `bunring_${snake(name)}${gauge ? "" : "_total"}`;
    lines.push(`# TYPE ${metric} ${gauge ? "gauge" : "counter"}`, `${metric}{${labelText}} ${value}`);
  }
  return lines.join("\n") + "\n";
}

const http = Bun.serve({
  port: portArg("httpPort", httpPort),
  hostname: "127.0.0.1",
  fetch(req) {
    const { pathname } = new URL(req.url);
    if (pathname === "/metrics") {
      const body = prometheusText(echo.stats(), { backend: echo.backend, port: String(echo.port) });
      return new Response(body, { headers: { "content-type": "text/plain; version=0.0.4" } });
    }
    if (pathname === "/stats") return Response.json(echo.stats());
    return new Response("not found\n", { status: 404 });
  },
});

console.log(`echo (${echo.backend}) on 127.0.0.1:${echo.port}; metrics on http://127.0.0.1:${http.port}/metrics`);

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, async () => {
    await http.stop();
    await echo.stop();
    process.exit(0);
  });
}
