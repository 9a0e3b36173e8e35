// procfs.ts — what the bench reads about processes and the machine: a server's peak RSS (VmHWM from
// /proc/<pid>/status), the CPUs this process may use, pinning the bench itself, the machine block
// of the report, and the machine's load while a run goes on: the load average, and every other
// process's CPU time over the run (from /proc/<pid>/stat), to see whether something competed with
// the server or the client. (Server CPU time is sampled by the load generator at the interval edges.)
import { readdirSync, readFileSync } from "node:fs";
import { cpus, release } from "node:os";

/** Peak resident set size of pid in MiB (VmHWM), or null if it cannot be read. */
export function peakRssMiB(pid: number): number | null {
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) / 1024 : null;
  } catch {
    return null;
  }
}

/** CPUs this process may run on (Cpus_allowed_list), else 0..n-1. */
export function allowedCpus(): number[] {
  try {
    const m = /^Cpus_allowed_list:\s+(\S+)/m.exec(readFileSync("/proc/self/status", "utf8"));
    if (m) {
      const out: number[] = [];
      for (const part of m[1]!.split(",")) {
        const [a, b] = part.split("-").map(Number);
        for (let cpu = a!; cpu <= (b ?? a!); cpu++) out.push(cpu);
      }
      if (out.length > 0) return out;
    }
  } catch {
    // not Linux procfs: fall through
  }
  return cpus().map((_, i) => i);
}

/** Moves every thread of this process onto cpus (so the bench never runs on the server's CPU). */
export function pinSelf(cpuList: number[]): boolean {
  if (!Bun.which("taskset") || cpuList.length === 0) return false;
  const r = Bun.spawnSync(["taskset", "-a", "-p", "-c", cpuList.join(","), String(process.pid)], { stdout: "ignore", stderr: "ignore" });
  return r.exitCode === 0;
}

export interface MachineInfo {
  cpuModel: string;
  cores: number;
  kernel: string;
  bun: string;
  node: string | null;
  date: string;
}

export function machineInfo(): MachineInfo {
  const node = Bun.which("node");
  let nodeVersion: string | null = null;
  if (node) {
    const r = Bun.spawnSync([node, "--version"], { stdout: "pipe", stderr: "ignore" });
    nodeVersion = r.exitCode === 0 ? r.stdout.toString().trim() : null;
  }
  return {
    cpuModel: cpus()[0]?.model.trim() ?? "unknown",
    cores: cpus().length,
    kernel: release(),
    bun: Bun.version,
    node: nodeVersion,
    date: new Date().toISOString(),
  };
}

/** The 1-minute load average (/proc/loadavg), or null. */
export function loadAverage(): number | null {
  try {
    const v = Number(readFileSync("/proc/loadavg", "utf8").split(" ")[0]);
    return Number.isFinite(v) ? v : null;
  } catch {
    return null;
  }
}

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ: 100 on every Linux configuration in use). */
const TICKS_PER_SEC = 100;
/** PF_KTHREAD in /proc/<pid>/stat's flags: kernel threads (softirq work the bench itself causes). */
const PF_KTHREAD = 0x00200000;

export interface ProcSnapshot {
  atMs: number;
  /** pid -> [comm, utime + stime ticks], user processes only. */
  procs: Map<number, [string, number]>;
}

/** Every user process's CPU time so far. */
export function snapshotProcs(): ProcSnapshot {
  const procs = new Map<number, [string, number]>();
  let names: string[] = [];
  try {
    names = readdirSync("/proc").filter((n) => /^\d+$/.test(n));
  } catch {
    // no procfs
  }
  for (const name of names) {
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const open = stat.indexOf("(");
      const close = stat.lastIndexOf(")");
      const fields = stat.slice(close + 2).split(" "); // fields[0] is field 3 (state)
      if (Number(fields[6]) & PF_KTHREAD) continue;
      procs.set(Number(name), [stat.slice(open + 1, close), Number(fields[11]) + Number(fields[12])]);
    } catch {
      // exited meanwhile
    }
  }
  return { atMs: performance.now(), procs };
}

export interface Competitor {
  pid: number;
  comm: string;
  /** CPU used between the two snapshots, % of one core. */
  cpuPct: number;
}

/** Processes other than `exclude` that used more than thresholdPct of a core between a and b. */
export function competitors(a: ProcSnapshot, b: ProcSnapshot, exclude: Set<number>, thresholdPct = 10): Competitor[] {
  const seconds = (b.atMs - a.atMs) / 1000;
  if (seconds <= 0) return [];
  const out: Competitor[] = [];
  for (const [pid, [comm, ticks]] of b.procs) {
    if (exclude.has(pid)) continue;
    const before = a.procs.get(pid)?.[1] ?? 0;
    const cpuPct = ((ticks - before) / TICKS_PER_SEC / seconds) * 100;
    if (cpuPct > thresholdPct) out.push({ pid, comm, cpuPct });
  }
  return out.sort((x, y) => y.cpuPct - x.cpuPct);
}
