// run.ts — `bun run bench`: the benchmark matrix. Per workload (echo and js-echo: every length; resp:
// resp-get and resp-set at every pipeline depth) × connection count, repetition after repetition, each
// target of that workload runs in turn (A B C D A B C D ...; echo and js-echo, both echo traffic, share
// one rotation when run together) on a fresh server process pinned to the first CPU (resp-get SETs
// its keys first), while the load generator drives it from the other CPU(s) and samples the server's
// CPU time at the edges of the measured interval. Around each run the bench
// reads the load average and every other process's CPU time (to warn when something competed). A
// live progress line goes to stderr; at the end the Markdown tables go to stdout and JSON + Markdown +
// SVG are written (--out).
// Exit status: 0 all runs clean, 1 some run had errors or failed, 2 usage error, 130 interrupted.
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { runLoadgen, type LoadgenProgress, type LoadgenResult } from "../ffi/loadgen.ts";
import { parseBenchArgs, UsageError, type BenchSettings } from "./args.ts";
import { allowedCpus, competitors, loadAverage, machineInfo, peakRssMiB, pinSelf, snapshotProcs } from "./procfs.ts";
import { benchDocument, loadWarnings, markdown, type RunSettings } from "./report.ts";
import { summarize, type RunSample, type RunWorkload } from "./summary.ts";
import { svgChart } from "./svg.ts";
import { builtinTargets, ECHO_TRAFFIC, externalTarget, freePort, startServer, type Pinning, type ServerProcess, type Target } from "./targets.ts";
import { respWorkload, type Workload } from "./workloads.ts";

const root = resolve(import.meta.dir, "..");

interface Placement {
  serverCpu: number | null;
  clientCpus: number[];
  clientThreads: number;
  pinning: Pinning;
}

interface PlannedRun {
  workload: RunWorkload;
  target: Target;
  connections: number;
  /** echo: message bytes; resp: value bytes. */
  length: number;
  pipeline: number;
  rep: number;
}

function plan(settings: BenchSettings, targets: Target[]): PlannedRun[] {
  const runs: PlannedRun[] = [];
  // A target's connection counts: its own (--target-connections), else its workload's.
  const countsOf = (t: Target) => settings.targetConnections[t.name] ?? settings.connections[t.workload];
  const countsOfAll = (family: (f: Target["workload"]) => boolean) =>
    [...new Set(targets.filter((t) => family(t.workload)).flatMap(countsOf))].sort((a, b) => a - b);
  const add = (workload: RunWorkload, length: number, pipeline: number, family: Target["workload"]) => {
    for (const connections of countsOfAll((f) => f === family)) {
      for (let rep = 0; rep < settings.reps; rep++) {
        for (const target of targets) {
          if (target.workload === family && countsOf(target).includes(connections)) runs.push({ workload, target, connections, length, pipeline, rep });
        }
      }
    }
  };
  let echoTrafficDone = false;
  for (const family of settings.workloads) {
    if (ECHO_TRAFFIC.includes(family)) {
      // echo and js-echo: one rotation over both workloads' targets (C echo beside JS echo, same moment).
      if (echoTrafficDone) continue;
      echoTrafficDone = true;
      const families = settings.workloads.filter((f) => ECHO_TRAFFIC.includes(f));
      const connectionList = countsOfAll((f) => families.includes(f));
      for (const length of settings.lengths) {
        for (const connections of connectionList) {
          for (let rep = 0; rep < settings.reps; rep++) {
            for (const target of targets) {
              const f = target.workload;
              if (families.includes(f) && countsOf(target).includes(connections)) {
                runs.push({ workload: f as "echo" | "js-echo", target, connections, length, pipeline: 1, rep });
              }
            }
          }
        }
      }
    } else {
      for (const op of ["resp-get", "resp-set"] as const) {
        for (const pipeline of settings.pipelines) add(op, settings.valueSize, pipeline, "resp");
      }
    }
  }
  return runs;
}

function place(settings: BenchSettings): Placement {
  const cpus = allowedCpus();
  if (cpus.length < 2) {
    return { serverCpu: null, clientCpus: [], clientThreads: settings.clientThreads ?? 1, pinning: "none" };
  }
  const clientCpus = cpus.slice(1);
  return {
    serverCpu: cpus[0]!,
    clientCpus,
    clientThreads: settings.clientThreads ?? clientCpus.length,
    pinning: Bun.which("taskset") ? "taskset" : "cli",
  };
}

function clock(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function progressText(p: LoadgenProgress): string {
  if (p.phase === "measuring" || p.phase === "draining") {
    const rate = p.measuredS > 0 ? Math.round(p.responses / p.measuredS).toLocaleString("en-US") : "0";
    return `measuring ${p.measuredS.toFixed(1)}/${p.durationS} s, ${rate} req/s, errors ${p.errors + p.connectErrors}`;
  }
  if (p.phase === "connecting") return `connecting ${p.connections}`;
  return p.phase;
}

/** What the bench measured around a run: load average before and after, other processes' CPU. */
interface Surroundings {
  loadAvg: RunSample["loadAvg"];
  competitors: RunSample["competitors"];
}

function sampleFrom(run: PlannedRun, r: LoadgenResult, rssMiB: number | null, note: string | null, around: Surroundings): RunSample {
  const errors = r.connectErrors + r.mismatches + r.shortReads + r.extras + r.ioErrors;
  const ran = r.responses > 0 && r.elapsedS > 0;
  const notes = [note, r.status !== 0 || r.connectErrors > 0 ? r.message : null].filter(Boolean);
  return {
    workload: run.workload,
    target: run.target.name,
    connections: run.connections,
    length: run.length,
    pipeline: run.pipeline,
    rep: run.rep,
    reqPerSec: ran ? r.responsesPerSec : null,
    serverCpuUsPerReq: ran && r.serverCpuUs !== null ? r.serverCpuUs / r.responses : null,
    clientCpuPct: ran && r.clientCpuUs !== null ? (r.clientCpuUs / 1e6 / r.elapsedS) * 100 : null,
    serverCpuPct: ran && r.serverCpuUs !== null ? (r.serverCpuUs / 1e6 / r.elapsedS) * 100 : null,
    loadAvg: around.loadAvg,
    competitors: around.competitors,
    latencyUs: ran ? { p50: r.latencyUs.p50, p90: r.latencyUs.p90, p99: r.latencyUs.p99, p999: r.latencyUs.p999, max: r.latencyUs.max } : null,
    serverRssMiB: rssMiB,
    edgeSkewUs: ran ? r.edgeSkewUs : null,
    errors,
    failure: ran ? null : r.message || "no round trip completed in the measured interval",
    note: notes.length > 0 ? notes.join("; ") : null,
  };
}

function failedSample(run: PlannedRun, failure: string, loadStart: number | null): RunSample {
  return {
    workload: run.workload,
    target: run.target.name,
    connections: run.connections,
    length: run.length,
    pipeline: run.pipeline,
    rep: run.rep,
    reqPerSec: null,
    serverCpuUsPerReq: null,
    clientCpuPct: null,
    serverCpuPct: null,
    loadAvg: { start: loadStart, end: loadAverage() },
    competitors: [],
    latencyUs: null,
    serverRssMiB: null,
    edgeSkewUs: null,
    errors: 0,
    failure,
    note: null,
  };
}

function commandLine(argv: string[]): string {
  const quote = (a: string) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`);
  return ["bun run bench", ...(argv.length > 0 ? ["--", ...argv.map(quote)] : [])].join(" ");
}

function sidePath(out: string, ext: string): string {
  return `${out.replace(/\.json$/i, "")}.${ext}`;
}

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  let settings: BenchSettings;
  try {
    settings = parseBenchArgs(argv);
  } catch (e) {
    if (e instanceof UsageError || e instanceof TypeError) {
      process.stderr.write(`bench: ${e.message} (see --help)\n`);
      return 2;
    }
    throw e;
  }
  const all = [...builtinTargets(), ...settings.external.map(externalTarget)];
  const targets = settings.selected.map((n) => all.find((t) => t.name === n)!);
  // The RESP tables, built once (resp-get's prepare SETs the keys on each fresh server).
  const respWorkloads = new Map<RunWorkload, Workload>();
  const workloadFor = (w: RunWorkload): Workload | null => {
    if (w === "echo" || w === "js-echo") return null;
    if (!respWorkloads.has(w)) respWorkloads.set(w, respWorkload(w, settings.keySpace, settings.valueSize));
    return respWorkloads.get(w)!;
  };
  const placement = place(settings);
  if (placement.clientCpus.length > 0 && !pinSelf(placement.clientCpus)) {
    process.stderr.write("bench: note: could not pin the bench process itself (no taskset); its load threads are still pinned\n");
  }
  if (placement.serverCpu === null) process.stderr.write("bench: note: only one CPU is usable; nothing is pinned\n");

  const skipped = new Map<string, string>();
  for (const t of targets) if (t.unavailable) skipped.set(t.name, t.unavailable);
  const started = new Set<string>();
  const runs = plan(settings, targets);
  const samples: RunSample[] = [];
  const clientIoUsed = new Set<string>();
  const abort = new AbortController();
  let current: ServerProcess | null = null;
  const interrupt = () => abort.abort();
  process.on("SIGINT", interrupt);
  process.on("SIGTERM", interrupt);
  process.on("exit", () => {
    if (current) {
      try {
        process.kill(current.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
  });

  const tty = process.stderr.isTTY === true;
  const perRunS = (settings.warmupMs + settings.durationMs) / 1000 + 0.8;
  const t0 = performance.now();
  let lastDraw = 0;
  const draw = (i: number, run: PlannedRun, status: string, force = false) => {
    const now = performance.now();
    if (!force && now - lastDraw < 250) return;
    lastDraw = now;
    const done = i / runs.length;
    const eta = done > 0 ? ((now - t0) / 1000 / done) * (1 - done) : runs.length * perRunS;
    const shape = run.workload === "echo" || run.workload === "js-echo" ? `len=${run.length}` : `${run.workload} P=${run.pipeline}`;
    const head = `[${String(i + 1).padStart(String(runs.length).length)}/${runs.length}] ${run.target.name} ` +
      `c=${run.connections} ${shape} rep ${run.rep + 1}/${settings.reps}`;
    const line = `${head}: ${status} | ETA ${clock(eta)}`;
    process.stderr.write(tty ? `\r${line}\x1b[K` : force ? `${line}\n` : "");
  };

  for (const [i, run] of runs.entries()) {
    if (abort.signal.aborted) break;
    if (skipped.has(run.target.name)) continue;
    draw(i, run, "starting server", true);
    const loadStart = loadAverage();
    const port = run.target.fixedPort ?? (await freePort());
    try {
      current = await startServer(run.target, port, {
        serverCpu: placement.serverCpu,
        pinning: placement.pinning,
        listenTimeoutMs: 20_000,
      });
    } catch (e) {
      const message = (e as Error).message;
      samples.push(failedSample(run, message, loadStart));
      if (!started.has(run.target.name)) skipped.set(run.target.name, message);
      if (tty) process.stderr.write("\n");
      process.stderr.write(`bench: ${run.target.name}: ${message}\n`);
      continue;
    }
    started.add(run.target.name);
    const server = current;
    try {
      const comm = server.comm();
      const note = comm === "sh" || comm === "taskset" ? `measured pid ${server.pid} is '${comm}', not the server` : null;
      const workload = workloadFor(run.workload);
      if (workload?.prepare) {
        draw(i, run, `preparing ${run.workload}`, true);
        try {
          await workload.prepare("127.0.0.1", port);
        } catch (e) {
          const message = `preparing ${run.workload}: ${(e as Error).message}`;
          samples.push(failedSample(run, message, loadStart));
          if (tty) process.stderr.write("\n");
          process.stderr.write(`bench: ${run.target.name}: ${message}\n`);
          continue;
        }
      }
      const before = snapshotProcs();
      const result = await runLoadgen(
        {
          host: "127.0.0.1",
          port,
          connections: run.connections,
          length: workload ? 0 : run.length,
          pipeline: run.pipeline,
          table: workload?.table,
          threads: Math.min(placement.clientThreads, run.connections),
          warmupMs: settings.warmupMs,
          durationMs: settings.durationMs,
          connectTimeoutMs: 20_000,
          cpus: placement.clientCpus,
          serverPid: server.pid,
          io: settings.clientIo,
        },
        { signal: abort.signal, pollMs: 100, onProgress: (p) => draw(i, run, progressText(p)) },
      );
      if (abort.signal.aborted) break; // a partial run is not a sample
      const around: Surroundings = {
        loadAvg: { start: loadStart, end: loadAverage() },
        competitors: competitors(before, snapshotProcs(), new Set([process.pid, server.pid])),
      };
      if (result.connections > 0) clientIoUsed.add(result.io);
      const sample = sampleFrom(run, result, peakRssMiB(server.pid), note, around);
      samples.push(sample);
      const summary = sample.reqPerSec === null
        ? `failed: ${sample.failure}`
        : `${Math.round(sample.reqPerSec).toLocaleString("en-US")} req/s, errors ${sample.errors}`;
      draw(i, run, summary, true);
    } finally {
      await server.stop();
      current = null;
    }
  }
  if (tty) process.stderr.write("\n");

  const order = targets.map((t) => t.name);
  const cells = summarize(samples, order, settings.baselines);
  const runSettings: RunSettings = {
    workloads: settings.workloads,
    durationS: settings.durationMs / 1000,
    warmupS: settings.warmupMs / 1000,
    reps: settings.reps,
    lengths: settings.lengths,
    connections: Object.fromEntries(settings.workloads.map((w) => [w, settings.connections[w]])),
    pipelines: settings.pipelines,
    keySpace: settings.keySpace,
    valueSize: settings.valueSize,
    serverCpu: placement.serverCpu,
    clientCpus: placement.clientCpus,
    clientThreads: placement.clientThreads,
    clientIo: [...clientIoUsed].join(", ") || settings.clientIo,
    pinning: placement.pinning,
    baselines: settings.baselines as Record<string, string>,
  };
  const warnings = loadWarnings(cells, 1 + placement.clientThreads);
  const doc = benchDocument(
    machineInfo(),
    commandLine(argv),
    runSettings,
    targets.map((t) => ({ name: t.name, workload: t.workload, command: t.display, skipped: skipped.get(t.name) ?? null })),
    cells,
    samples,
    warnings,
  );
  const md = markdown(doc, cells);
  const out = resolve(root, settings.out);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify(doc, null, 2)}\n`);
  writeFileSync(sidePath(out, "md"), md);
  writeFileSync(sidePath(out, "svg"), svgChart(cells, order.filter((n) => !skipped.has(n) || started.has(n))));
  process.stdout.write(md);
  if (warnings.length > 0) process.stderr.write(`bench: warning: other load on the machine may have skewed ${warnings.length === 1 ? "a figure" : "figures"} (see Warnings)\n`);
  process.stderr.write(`bench: wrote ${out}, ${sidePath(out, "md")} and ${sidePath(out, "svg")}\n`);
  if (abort.signal.aborted) {
    process.stderr.write("bench: interrupted; the files hold the runs completed so far\n");
    return 130;
  }
  const bad = samples.filter((s) => s.errors > 0 || s.failure !== null).length;
  if (bad > 0) process.stderr.write(`bench: ${bad} run${bad === 1 ? "" : "s"} had errors or failed (see the table)\n`);
  return bad > 0 ? 1 : 0;
}

process.exit(await main());
