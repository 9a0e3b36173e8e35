// run-sanitizers.ts — builds the C driver (tests/c/driver.c + every c-shim and bench/loadgen .c file,
// with tests/c/build.sh) with ASan+UBSan and plain, runs driver-asan with leak detection and
// halt-on-error, and driver-plain under valgrind memcheck (leak-check full; definite/indirect leaks
// and any memory error fail the run). Used by
// tests/sanitizers.test.ts (so it runs in `bun test`) and runnable alone: `bun tests/c/run-sanitizers.ts`
// (package.json "test:asan").
//
// Valgrind and io_uring: valgrind 3.19 (this machine's Debian 12 package) does not treat a blocking
// io_uring_enter as a blocking syscall, so the loop thread waiting for completions holds valgrind's
// big lock and every other thread (the driver's clients) stops: the run deadlocks (see
// axboe/liburing#657). Under valgrind the driver therefore exercises the epoll backend only, unless
// BUNRING_VALGRIND_URING=1 says the installed valgrind copes. ASan/UBSan cover both backends.
import { existsSync } from "node:fs";
import { resolve } from "node:path";

export const REPO = resolve(import.meta.dir, "..", "..");
const BUILD = resolve(REPO, "tests", "c", "build");
export const DRIVER_ASAN = resolve(BUILD, "driver-asan");
export const DRIVER_PLAIN = resolve(BUILD, "driver-plain");

export interface StepResult {
  name: string;
  cmd: string[];
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
  timedOut: boolean;
  /** Sanitizer / valgrind findings recognised in the output. */
  problems: string[];
}

/** Lines that mean a sanitizer or valgrind found something. */
const PATTERNS: RegExp[] = [
  /ERROR: AddressSanitizer/,
  /ERROR: LeakSanitizer/,
  /SUMMARY: AddressSanitizer/,
  /SUMMARY: UndefinedBehaviorSanitizer/,
  /runtime error:/, // UBSan
  /WARNING: ThreadSanitizer/,
  /==\d+== (Invalid (read|write|free)|Mismatched free|Conditional jump|Use of uninitialised|Syscall param|Source and destination overlap)/,
  /==\d+== +definitely lost: [1-9]/,
  /==\d+== +indirectly lost: [1-9]/,
  /==\d+== ERROR SUMMARY: [1-9]/,
  /driver: FAIL/,
];

export function findProblems(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split("\n")) if (PATTERNS.some((p) => p.test(line))) out.push(line.trim());
  return out;
}

async function run(name: string, cmd: string[], env: Record<string, string>, timeoutMs: number): Promise<StepResult> {
  const t0 = performance.now();
  const proc = Bun.spawn({ cmd, cwd: REPO, env: { ...process.env, ...env }, stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    proc.kill("SIGKILL");
  }, timeoutMs);
  const [stdout, stderr] = await Promise.all([
    new Response(proc.stdout as ReadableStream).text(),
    new Response(proc.stderr as ReadableStream).text(),
  ]);
  const code = await proc.exited;
  clearTimeout(timer);
  return {
    name,
    cmd,
    code: proc.signalCode ? null : code,
    stdout,
    stderr,
    ms: Math.round(performance.now() - t0),
    timedOut,
    problems: findProblems(stdout + "\n" + stderr),
  };
}

export const SOAK = process.env.BUNRING_SOAK === "1";

export function buildDrivers(): Promise<StepResult> {
  return run("build (tests/c/build.sh)", ["bash", "tests/c/build.sh", "--quiet"], {}, 180_000);
}

/** ASan + UBSan driver over both backends, threads 1 and 2. */
export function runAsan(extraArgs: string[] = []): Promise<StepResult> {
  const load = SOAK ? ["--conns", "200", "--bytes", String(4 << 20), "--flood", "32"] : ["--conns", "50", "--bytes", String(1 << 20), "--flood", "8"];
  return run(
    "driver-asan (ASan+UBSan)",
    [DRIVER_ASAN, ...load, "--timeout", "240", ...extraArgs],
    {
      ASAN_OPTIONS: "detect_leaks=1:halt_on_error=1:abort_on_error=0:exitcode=23",
      UBSAN_OPTIONS: "print_stacktrace=1:halt_on_error=1",
    },
    300_000,
  );
}

/** Valgrind memcheck over the plain driver, smaller load. */
export function runValgrind(extraArgs: string[] = []): Promise<StepResult> {
  const backends = process.env.BUNRING_VALGRIND_URING === "1" ? "uring,epoll" : "epoll";
  const load = SOAK ? ["--conns", "32", "--bytes", String(512 << 10), "--flood", "8"] : ["--conns", "8", "--bytes", String(128 << 10), "--flood", "4"];
  return run(
    `driver-plain under valgrind (backends ${backends})`,
    [
      "valgrind",
      "--leak-check=full",
      "--error-exitcode=99",
      "--errors-for-leak-kinds=definite,indirect",
      "--show-leak-kinds=definite,indirect",
      DRIVER_PLAIN,
      ...load,
      "--backends",
      backends,
      "--timeout",
      "240",
      ...extraArgs,
    ],
    {},
    300_000,
  );
}

export function hasValgrind(): boolean {
  return Bun.which("valgrind") !== null;
}

export function describeStep(r: StepResult): string {
  const tail = (s: string) => s.trim().split("\n").slice(-40).join("\n");
  return [
    `${r.name}: exit ${r.code}${r.timedOut ? " (killed: timed out)" : ""} in ${r.ms} ms`,
    `  $ ${r.cmd.join(" ")}`,
    r.problems.length ? `  findings:\n    ${r.problems.slice(0, 30).join("\n    ")}` : "",
    `  stdout:\n${tail(r.stdout)}`,
    `  stderr (tail):\n${tail(r.stderr)}`,
  ]
    .filter(Boolean)
    .join("\n");
}

export function ok(r: StepResult): boolean {
  return r.code === 0 && !r.timedOut && r.problems.length === 0;
}

if (import.meta.main) {
  const steps: StepResult[] = [];
  const build = await buildDrivers();
  steps.push(build);
  if (ok(build) && existsSync(DRIVER_ASAN)) {
    steps.push(await runAsan());
    if (hasValgrind()) steps.push(await runValgrind());
    else console.log("valgrind not installed: skipped");
  }
  let failed = 0;
  for (const s of steps) {
    const good = ok(s);
    if (!good) failed++;
    console.log(good ? `ok   ${s.name} (${s.ms} ms): ${s.stdout.trim().split("\n").at(-1) ?? ""}` : `FAIL ${describeStep(s)}`);
  }
  process.exit(failed === 0 ? 0 : 1);
}
