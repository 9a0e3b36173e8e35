// cpus.ts — CPU lists as Linux writes them ("0-3,6"): the CPUs this process may run on (its affinity
// mask, which taskset or a container may narrow), and parsing/formatting such lists for --cpu.

import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";

/** Parses "0-3,6" into [0, 1, 2, 3, 6]; undefined if it is not such a list (digits, ranges a-b with a <= b). */
export function parseCpuList(text: string): number[] | undefined {
  const out: number[] = [];
  for (const part of text.split(",")) {
    const m = /^\s*(\d{1,5})(?:-(\d{1,5}))?\s*$/.exec(part);
    if (!m) return undefined;
    const first = Number(m[1]);
    const last = m[2] === undefined ? first : Number(m[2]);
    if (last < first) return undefined;
    for (let cpu = first; cpu <= last; cpu++) out.push(cpu);
  }
  return out;
}

/** [0, 1, 2, 3, 6] as "0-3,6". */
export function formatCpuList(cpus: readonly number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < cpus.length; ) {
    let j = i;
    while (j + 1 < cpus.length && cpus[j + 1] === cpus[j]! + 1) j++;
    parts.push(i === j ? `${cpus[i]}` : `${cpus[i]}-${cpus[j]}`);
    i = j + 1;
  }
  return parts.join(",");
}

/** CPUs this process may run on (Cpus_allowed_list of /proc/self/status), else 0..n-1. */
export function allowedCpus(): number[] {
  try {
    const m = /^Cpus_allowed_list:\s+(\S+)/m.exec(readFileSync("/proc/self/status", "utf8"));
    const cpus = m ? parseCpuList(m[1]!) : undefined;
    if (cpus && cpus.length > 0) return cpus;
  } catch {
    // no procfs: fall through
  }
  return Array.from({ length: availableParallelism() }, (_, i) => i);
}
