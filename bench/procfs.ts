// procfs.ts — what the bench reads about processes and the machine: a server's peak RSS (VmHWM from
// /proc/<pid>/status), the CPUs this process may use, pinning the bench itself, and the machine block
// of the report. (Server CPU time is sampled by the load generator at the interval edges.)
import { readFileSync } from "node:fs";
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
