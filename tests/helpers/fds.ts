/**
 * File-descriptor accounting for leak checks: count and describe this process's open fds through
 * /proc/self/fd, and wait for the count to come back to a baseline (closing is asynchronous on the
 * JS side: sockets of clients the test made close a tick later).
 */
import { readdirSync, readlinkSync } from "node:fs";
import { waitFor } from "./wait.ts";

/** Open fds of this process (the readdir's own fd is excluded by taking the list twice). */
export function listFds(): Map<number, string> {
  const out = new Map<number, string>();
  for (const name of readdirSync("/proc/self/fd")) {
    const fd = Number(name);
    let target = "?";
    try {
      target = readlinkSync(`/proc/self/fd/${name}`);
    } catch {
      continue; // the directory fd readdir used, already closed
    }
    out.set(fd, target);
  }
  return out;
}

export function countFds(): number {
  return listFds().size;
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
 * asynchronously), then returns the final diff description ("" when equal).
 */
export async function expectFdsBackTo(before: Map<number, string>, timeoutMs = 5_000): Promise<void> {
  await waitFor(
    () => countFds() <= before.size,
    () => `fd count back to ${before.size} (now ${countFds()}): ${fdDiff(before, listFds())}`,
    { timeoutMs, intervalMs: 10 },
  );
}

/** Number of native threads in this process. */
export function countThreads(): number {
  return readdirSync("/proc/self/task").length;
}
