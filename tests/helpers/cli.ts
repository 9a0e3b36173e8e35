/**
 * Running the CLI (src/cli.ts), or any other script, as a child process: spawn it, wait for its
 * banner line, signal it, collect its exit code and output, and read its final `bunring stopped:`
 * line, with deadlines so a hung child fails the test instead of hanging it (and is killed).
 */
import { resolve } from "node:path";
import { withTimeout } from "./wait.ts";

export const REPO = resolve(import.meta.dir, "..", "..");
export const CLI = resolve(REPO, "src", "cli.ts");
export const BUN = process.execPath;

/** `bunring <backend> listening on <host>:<port> (...)`, IPv6 hosts in brackets. */
export const BANNER_RE = /^bunring (uring|epoll) listening on (\[[0-9a-fA-F:.]+\]|[0-9.]+):(\d+) \((.*)\)$/;

export interface CliRun {
  proc: ReturnType<typeof Bun.spawn>;
  /** stdout lines so far (complete lines only). */
  lines: string[];
  /** Resolves with the first stdout line. */
  banner: Promise<string>;
  /** Resolves once the process exited, with everything it wrote. */
  exited: Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }>;
}

async function readAll(stream: ReadableStream<Uint8Array>, onChunk?: (text: string) => void): Promise<string> {
  const dec = new TextDecoder();
  let out = "";
  for await (const chunk of stream) {
    const t = dec.decode(chunk, { stream: true });
    out += t;
    onChunk?.(t);
  }
  return out;
}

/** Spawns `bun src/cli.ts ...args` (or any argv with `cmd`). */
export function runCli(args: string[], opts: { cmd?: string[]; env?: Record<string, string> } = {}): CliRun {
  const proc = Bun.spawn({
    cmd: opts.cmd ?? [BUN, CLI, ...args],
    cwd: REPO,
    stdout: "pipe",
    stderr: "pipe",
    stdin: "ignore",
    env: { ...process.env, ...opts.env },
  });
  const lines: string[] = [];
  let partial = "";
  let resolveBanner!: (l: string) => void;
  let rejectBanner!: (e: Error) => void;
  const banner = new Promise<string>((res, rej) => {
    resolveBanner = res;
    rejectBanner = rej;
  });
  banner.catch(() => undefined); // tests that never wait for a banner must not see an unhandled rejection
  const stdoutP = readAll(proc.stdout as ReadableStream<Uint8Array>, (t) => {
    partial += t;
    let i: number;
    while ((i = partial.indexOf("\n")) >= 0) {
      const line = partial.slice(0, i);
      partial = partial.slice(i + 1);
      if (lines.length === 0) resolveBanner(line);
      lines.push(line);
    }
  });
  const stderrP = readAll(proc.stderr as ReadableStream<Uint8Array>);
  const exited = (async () => {
    const [stdout, stderr] = await Promise.all([stdoutP, stderrP]);
    const code = await proc.exited;
    rejectBanner(new Error(`CLI exited (code ${code}) without a banner; stderr: ${stderr.trim()}`));
    const signal = proc.signalCode === null ? null : String(proc.signalCode);
    return { code: signal ? null : code, signal, stdout, stderr };
  })();
  return { proc, lines, banner, exited };
}

/** Waits for the banner and parses it. */
export async function bannerOf(run: CliRun, ms = 15_000): Promise<{ line: string; backend: string; host: string; port: number; details: string }> {
  const line = await withTimeout(run.banner, ms, "CLI banner line");
  const m = BANNER_RE.exec(line);
  if (!m) throw new Error(`banner does not match ${BANNER_RE}: ${JSON.stringify(line)}`);
  return { line, backend: m[1]!, host: m[2]!, port: Number(m[3]), details: m[4]! };
}

/** Waits for exit; kills the process (and fails) if it does not exit in time. */
export async function exitOf(run: CliRun, ms = 15_000): Promise<Awaited<CliRun["exited"]>> {
  try {
    return await withTimeout(run.exited, ms, "CLI exit");
  } catch (e) {
    run.proc.kill("SIGKILL");
    throw e;
  }
}

/** SIGKILLs the child unless it already exited (for `finally` blocks and afterEach). */
export function killIfRunning(run: CliRun): void {
  if (run.proc.exitCode === null && run.proc.signalCode === null) run.proc.kill("SIGKILL");
}

/** The `key=value` counters of a `bunring stopped: <signal>; accepted=N open=0 ...` line. */
export function stoppedStats(line: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of line.matchAll(/(\w+)=(\d+)/g)) out[m[1]!] = Number(m[2]);
  return out;
}
