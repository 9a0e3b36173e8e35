// example.test.ts — examples/metrics-service.ts as a user runs it: a Bun service with an embedded
// echo server whose live counters /metrics serves in Prometheus text format. Echo through it, then
// the scrape must show exactly that traffic; SIGINT stops it with exit 0; a bad port exits 2.
import { describe, expect, it, setDefaultTimeout } from "bun:test";
import { resolve } from "node:path";
import { exitOf, killIfRunning, REPO, runCli } from "./helpers/cli.ts";
import { echoOnce } from "./helpers/clients.ts";
import { BACKENDS, backendAvailable } from "./helpers/server.ts";
import { waitFor } from "./helpers/wait.ts";

setDefaultTimeout(30_000);

const EXAMPLE = resolve(REPO, "examples", "metrics-service.ts");
const start = (args: string[]) => runCli([], { cmd: [process.execPath, EXAMPLE, ...args] });
const READY_RE = /^echo \((uring|epoll)\) on 127\.0\.0\.1:(\d+); metrics on (http:\/\/127\.0\.0\.1:\d+)\/metrics$/;

/** The sample value of one metric line, e.g. `bunring_bytes_in_total{...} 42`. */
function sample(text: string, metric: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${metric}{`));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1));
}

describe.each([...BACKENDS])("examples/metrics-service.ts [%s]", (backend) => {
  const it_ = backendAvailable(backend) ? it : it.skip;

  it_("serves the echo server's live counters as Prometheus text, then stops on SIGINT", async () => {
    const run = start(["0", "0", backend]);
    try {
      const m = READY_RE.exec(await run.banner);
      expect(m).not.toBeNull();
      const [, used, echoPort, base] = m!;
      expect(used).toBe(backend);
      const message = "Hello, metrics!";
      expect(await echoOnce(Number(echoPort), message)).toBe(message);
      // The connection closes after the echo; wait until the server has counted the close.
      const stats = async () => (await fetch(`${base}/stats`)).json() as Promise<Record<string, number>>;
      await waitFor(async () => (await stats()).connOpen === 0, () => "connection still open after the echo");

      const res = await fetch(`${base}/metrics`);
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toStartWith("text/plain; version=0.0.4");
      const text = await res.text();
      expect(text).toContain("# TYPE bunring_bytes_in_total counter");
      expect(text).toContain("# TYPE bunring_conn_open gauge");
      expect(text).toContain(`bunring_conn_accepted_total{backend="${backend}",port="${echoPort}"} 1`);
      expect(sample(text, "bunring_bytes_in_total")).toBe(message.length);
      expect(sample(text, "bunring_bytes_out_total")).toBe(message.length);
      expect(sample(text, "bunring_conn_open")).toBe(0);
      expect(sample(text, "bunring_allocs_after_start_total")).toBe(0);
      // Every line is a comment or `name{labels} number`.
      for (const line of text.trimEnd().split("\n")) {
        expect(line).toMatch(/^(# TYPE bunring_\w+ (counter|gauge)|bunring_\w+\{[^}]*\} \d+)$/);
      }
      expect((await fetch(`${base}/nope`)).status).toBe(404);

      run.proc.kill("SIGINT");
      const r = await exitOf(run);
      expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
    } finally {
      killIfRunning(run);
    }
  });
});

it("a bad port argument exits 2 with a message naming it", async () => {
  const r = await exitOf(start(["70000", "0", "epoll"]));
  expect(r.code).toBe(2);
  expect(r.stderr).toContain("echoPort");
});
