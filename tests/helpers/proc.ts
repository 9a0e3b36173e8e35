/**
 * Readings from /proc, for leak checks and resource measurements: the open fds of this or any
 * process (listed, counted, diffed, awaited back to a baseline: clients the test made close a tick
 * later), this process's threads and RSS, a process's CPU time, LISTEN sockets on a port, a TCP
 * socket's send and receive queues, and whether the machine has an IPv6 loopback.
 */
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { MiB } from "./scale.ts";
import { waitFor } from "./wait.ts";

export type Pid = number | "self";

/**
 * Open fds of a process, fd → what it points to. For "self", the fd readdir itself used is not
 * listed (it is closed by the time its link is read, like any fd closed meanwhile).
 */
export function listFds(pid: Pid = "self"): Map<number, string> {
  const out = new Map<number, string>();
  for (const name of readdirSync(`/proc/${pid}/fd`)) {
    let target = "?";
    try {
      target = readlinkSync(`/proc/${pid}/fd/${name}`);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") continue; // closed meanwhile
    }
    out.set(Number(name), target);
  }
  return out;
}

/** Number of open fds of a process. */
export function fdCount(pid: Pid = "self"): number {
  return listFds(pid).size;
}

/** Describes fds present in `after` but not in `before` (or different), for failure messages. */
export function fdDiff(before: Map<number, string>, after: Map<number, string>): string {
  const added: string[] = [];
  for (const [fd, target] of after) {
    if (before.get(fd) !== target) added.push(`${fd} -> ${target}`);
  }
  const removed: string[] = [];
  for (const [fd, target] of before) {
    if (!after.has(fd)) removed.push(`${fd} -> ${target}`);
  }
  return `added [${added.join(", ")}] removed [${removed.join(", ")}]`;
}

/**
 * Waits until this process has no more fds than `before` had (fds the test's own clients hold close
 * asynchronously); the timeout message lists the fds added and removed.
 */
export async function expectFdsBackTo(before: Map<number, string>, timeoutMs = 5_000): Promise<void> {
  await waitFor(
    () => fdCount() <= before.size,
    () => `fd count back to ${before.size} (now ${fdCount()}): ${fdDiff(before, listFds())}`,
    { timeoutMs, intervalMs: 10 },
  );
}

/** Number of native threads of this process. */
export function threadCount(): number {
  return readdirSync("/proc/self/task").length;
}

/** This process's resident set after a full GC, in MiB. */
export function rssMiB(): number {
  Bun.gc(true);
  return process.memoryUsage.rss() / MiB;
}

let clkTck: number | undefined;
/** USER_HZ (clock ticks per second of /proc/<pid>/stat times). */
export function clockTicks(): number {
  if (clkTck === undefined) {
    const r = spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" });
    const n = Number(r.stdout?.trim());
    clkTck = Number.isInteger(n) && n > 0 ? n : 100;
  }
  return clkTck;
}

/** utime + stime of a process, in seconds. */
export function cpuSeconds(pid: Pid): number {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = f.slice(f.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / clockTicks();
}

/** The columns of every TCP socket in /proc/net/tcp{,6} (local, remote, state, tx:rx queue, …). */
function* tcpSockets(): Generator<string[]> {
  for (const f of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = readFileSync(f, "utf8");
    } catch {
      continue; // no IPv6 in this kernel
    }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length > 4) yield cols;
    }
  }
}

const portHex = (port: number) => `:${port.toString(16).toUpperCase().padStart(4, "0")}`;

/** LISTEN sockets on a port, from /proc/net/tcp{,6}. */
export function listenersOn(port: number): number {
  let n = 0;
  for (const cols of tcpSockets()) if (cols[1]!.endsWith(portHex(port)) && cols[3] === "0A") n++;
  return n;
}

/**
 * The queues of the established socket from localPort to remotePort: tx = bytes written and not yet
 * acknowledged by the peer (held back by a closed window when the peer does not read), rx = bytes
 * received and not yet read. Undefined if there is no such socket.
 */
export function tcpQueues(localPort: number, remotePort: number): { tx: number; rx: number } | undefined {
  for (const cols of tcpSockets()) {
    if (cols[3] !== "01" || !cols[1]!.endsWith(portHex(localPort)) || !cols[2]!.endsWith(portHex(remotePort))) continue;
    const [tx, rx] = cols[4]!.split(":").map((h) => parseInt(h, 16));
    return { tx: tx!, rx: rx! };
  }
  return undefined;
}

/** The machine has the IPv6 loopback address ::1 (else IPv6 cases are skipped). */
export function hasIPv6Loopback(): boolean {
  try {
    return readFileSync("/proc/net/if_inet6", "utf8").includes("00000000000000000000000000000001");
  } catch {
    return false;
  }
}
