// targets.ts — the servers under test and their processes: the built-in targets (echo servers, and
// RESP servers: examples/resp-server.ts's handler on listen() and on Bun.listen, and a real
// redis-server when installed), --target parsing,
// starting one server process (fd limit raised to the hard limit, pinned to the server CPU with
// taskset, wrapped so that the spawned pid *is* the server), waiting until it accepts a connection,
// and stopping it (SIGTERM, then SIGKILL after a grace period). The js-echo targets run one handler
// module (examples/js-echo.ts's echoHandler) on bunring's listen() (both backends) and on Bun.listen;
// likewise the RESP targets resp-bunring-uring, resp-bunring-epoll (examples/resp-server.ts, i.e.
// `bun run resp`, on listen()) and resp-bun-listen (the same respHandler on Bun.listen).
import type { Subprocess } from "bun";
import { connect, createServer } from "node:net";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";

const root = resolve(import.meta.dir, "..");

/**
 * What a target speaks: echo, RESP (the bench's resp workload runs resp-get and resp-set on it), or
 * js-echo (echo traffic, the same load as echo, served by JS handlers: its own workload so that its
 * ratios compare JS handlers on one runtime with the same handlers on another).
 */
export const WORKLOAD_FAMILIES = ["echo", "resp", "js-echo"] as const;
export type WorkloadFamily = (typeof WORKLOAD_FAMILIES)[number];

export const BUILTIN_NAMES = [
  "bunring-uring",
  "bunring-epoll",
  "bun-listen",
  "node-net",
  "resp-bunring-uring",
  "resp-bunring-epoll",
  "resp-bun-listen",
  "resp-redis-server",
  "js-echo-bunring-uring",
  "js-echo-bunring-epoll",
  "js-echo-bun-listen",
] as const;
export type BuiltinName = (typeof BUILTIN_NAMES)[number];
export const BUILTIN_WORKLOAD: Record<BuiltinName, WorkloadFamily> = {
  "bunring-uring": "echo",
  "bunring-epoll": "echo",
  "bun-listen": "echo",
  "node-net": "echo",
  "resp-bunring-uring": "resp",
  "resp-bunring-epoll": "resp",
  "resp-bun-listen": "resp",
  "resp-redis-server": "resp",
  "js-echo-bunring-uring": "js-echo",
  "js-echo-bunring-epoll": "js-echo",
  "js-echo-bun-listen": "js-echo",
};

/** The families whose traffic is echo (the load generator's echo workload, --length bytes). */
export const ECHO_TRAFFIC: readonly WorkloadFamily[] = ["echo", "js-echo"];

export interface ExternalTarget {
  name: string;
  command: string;
  port: number;
  workload: WorkloadFamily;
}

/** How a server is pinned to its CPU: taskset around the process, or bunring's own --cpu (loops only). */
export type Pinning = "taskset" | "cli" | "none";

export interface Target {
  name: string;
  workload: WorkloadFamily;
  /** For the report: the command as a person would type it (PORT stands for the port). */
  display: string;
  /** A fixed port (external targets), or null: a free port is picked for every run. */
  fixedPort: number | null;
  /** argv of the server for this port; cpuFlag: append bunring's --cpu when taskset is missing. */
  argv(port: number, cpuFlag: number | null): string[];
  /** Why this target cannot run here (e.g. node missing), or null. */
  unavailable: string | null;
}

export function parseTargetFlag(raw: string, UsageError: new (m: string) => Error): ExternalTarget {
  const m = /^([A-Za-z0-9._-]+)=(.+)@(\d+)$/s.exec(raw);
  const port = m ? Number(m[3]) : 0;
  if (!m || !m[2]!.trim() || port < 1 || port > 65535) {
    throw new UsageError(
      `--target must be NAME=COMMAND@PORT (NAME of letters, digits, . _ -; PORT 1..65535), got ${JSON.stringify(raw)}`,
    );
  }
  return { name: m[1]!, command: m[2]!.trim(), port, workload: "echo" };
}

export function builtinTargets(): Target[] {
  const bun = process.execPath;
  const node = Bun.which("node");
  const redis = Bun.which("redis-server");
  const bunring = (backend: string): Target => ({
    name: `bunring-${backend}`,
    workload: "echo",
    display: `bun src/cli.ts --backend ${backend} --port PORT`,
    fixedPort: null,
    argv: (port, cpu) => [
      bun,
      resolve(root, "src/cli.ts"),
      "--backend",
      backend,
      "--host",
      "127.0.0.1",
      "--port",
      String(port),
      ...(cpu === null ? [] : ["--cpu", String(cpu)]),
    ],
    unavailable: null,
  });
  const jsEcho = (runtime: "bunring-uring" | "bunring-epoll" | "bun-listen"): Target => ({
    name: `js-echo-${runtime}`,
    workload: "js-echo",
    display: `bun bench/servers/js-echo.ts --runtime ${runtime} --port PORT`,
    fixedPort: null,
    argv: (port, cpu) => [
      bun,
      resolve(root, "bench/servers/js-echo.ts"),
      "--runtime",
      runtime,
      "--host",
      "127.0.0.1",
      "--port",
      String(port),
      // Without taskset: bunring's loop thread is pinned by listen({ cpus }) (Bun.listen cannot be).
      ...(cpu === null || runtime === "bun-listen" ? [] : ["--cpu", String(cpu)]),
    ],
    unavailable: null,
  });
  // examples/resp-server.ts as `bun run resp` runs it (the script, not `bun run`, so the pid is the
  // server's). It has no --cpu flag: without taskset it runs unpinned, like the Bun.listen targets.
  const respBunring = (backend: "uring" | "epoll"): Target => ({
    name: `resp-bunring-${backend}`,
    workload: "resp",
    display: `bun run resp -- --port PORT --backend ${backend}`,
    fixedPort: null,
    argv: (port) => [bun, resolve(root, "examples/resp-server.ts"), "--host", "127.0.0.1", "--port", String(port), "--backend", backend],
    unavailable: null,
  });
  return [
    bunring("uring"),
    bunring("epoll"),
    {
      name: "bun-listen",
      workload: "echo",
      display: "bun bench/servers/bun-listen.ts --port PORT",
      fixedPort: null,
      argv: (port) => [bun, resolve(root, "bench/servers/bun-listen.ts"), "--port", String(port)],
      unavailable: null,
    },
    {
      name: "node-net",
      workload: "echo",
      display: "node bench/servers/node-net.mjs --port PORT",
      fixedPort: null,
      argv: (port) => [node ?? "node", resolve(root, "bench/servers/node-net.mjs"), "--port", String(port)],
      unavailable: node ? null : "`node` is not on PATH",
    },
    respBunring("uring"),
    respBunring("epoll"),
    {
      name: "resp-bun-listen",
      workload: "resp",
      display: "bun bench/servers/resp-bun-listen.ts --port PORT",
      fixedPort: null,
      argv: (port) => [bun, resolve(root, "bench/servers/resp-bun-listen.ts"), "--port", String(port)],
      unavailable: null,
    },
    {
      name: "resp-redis-server",
      workload: "resp",
      display: "redis-server --port PORT --bind 127.0.0.1 --save '' --appendonly no",
      fixedPort: null,
      argv: (port) => [
        redis ?? "redis-server",
        "--port",
        String(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
        "--daemonize",
        "no",
      ],
      unavailable: redis ? null : "`redis-server` is not installed (Debian/Ubuntu: apt-get install redis-server)",
    },
    jsEcho("bunring-uring"),
    jsEcho("bunring-epoll"),
    jsEcho("bun-listen"),
  ];
}

export function externalTarget(t: ExternalTarget): Target {
  return {
    name: t.name,
    workload: t.workload,
    display: t.command,
    fixedPort: t.port,
    argv: () => ["sh", "-c", `exec ${t.command}`],
    unavailable: null,
  };
}

/** Connects once to 127.0.0.1:port: true if something accepted. */
export function canConnect(port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((done) => {
    const socket = connect({ host: "127.0.0.1", port });
    const finish = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      done(ok);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.once("connect", () => finish(true));
    socket.once("error", () => finish(false));
  });
}

/** A port the kernel just handed out for 127.0.0.1 (released again for the server to take). */
export function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => done(port));
    });
  });
}

export interface ServerProcess {
  pid: number;
  port: number;
  /** The process name of pid (from /proc/<pid>/comm), to check that the wrapper was replaced. */
  comm(): string;
  /** The last lines the server wrote to stderr. */
  stderrTail(): string;
  stop(): Promise<void>;
}

/** Keeps the last ~4 KiB of a stream (read in the background). */
function tail(stream: ReadableStream<Uint8Array>): () => string {
  let text = "";
  const decoder = new TextDecoder();
  void (async () => {
    try {
      for await (const chunk of stream) text = (text + decoder.decode(chunk, { stream: true })).slice(-4096);
    } catch {
      // the process went away: keep what we have
    }
  })();
  return () => text.trim();
}

export interface StartOptions {
  serverCpu: number | null;
  pinning: Pinning;
  listenTimeoutMs: number;
}

/** Starts target on port and resolves once it accepts a connection (or rejects: exited, timed out). */
export async function startServer(target: Target, port: number, o: StartOptions): Promise<ServerProcess> {
  if (await canConnect(port, 300)) {
    throw new Error(`port ${port} already accepts connections before ${target.name} started; is another server running there?`);
  }
  const argv = target.argv(port, o.pinning === "cli" ? o.serverCpu : null);
  const pinned = o.pinning === "taskset" && o.serverCpu !== null ? ["taskset", "-c", String(o.serverCpu), ...argv] : argv;
  // sh raises the soft fd limit to the hard one, then execs (taskset execs too): the pid is the server's.
  const cmd = ["sh", "-c", 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"', "bench-server", ...pinned];
  const proc: Subprocess<"ignore", "ignore", "pipe"> = Bun.spawn({
    cmd,
    cwd: root,
    env: { ...process.env, PORT: String(port) },
    stdin: "ignore",
    stdout: "ignore",
    stderr: "pipe",
  });
  const stderrTail = tail(proc.stderr);
  const server: ServerProcess = {
    pid: proc.pid,
    port,
    comm: () => {
      try {
        return readFileSync(`/proc/${proc.pid}/comm`, "utf8").trim();
      } catch {
        return "";
      }
    },
    stderrTail,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill("SIGTERM");
      const exited = await Promise.race([proc.exited.then(() => true), Bun.sleep(10_000).then(() => false)]);
      if (!exited) {
        proc.kill("SIGKILL");
        await proc.exited;
      }
    },
  };
  const deadline = performance.now() + o.listenTimeoutMs;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      await Bun.sleep(50); // let the stderr reader catch the last words
      throw new Error(`${target.name} exited (${proc.exitCode ?? proc.signalCode}) before listening: ${stderrTail() || "no output"}`);
    }
    if (await canConnect(port, 500)) return server;
    if (performance.now() > deadline) {
      await server.stop();
      throw new Error(`${target.name} did not accept connections on 127.0.0.1:${port} within ${o.listenTimeoutMs} ms`);
    }
    await Bun.sleep(20);
  }
}
