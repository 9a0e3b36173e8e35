/**
 * Waiting on conditions without sleeping as synchronisation: poll a condition until it holds or a
 * deadline passes, and fail with a description of what was awaited and the last value seen.
 */

export interface WaitOptions {
  /** Give up after this long (default 10 s). */
  timeoutMs?: number;
  /** Poll interval (default 5 ms). */
  intervalMs?: number;
}

export class WaitTimeoutError extends Error {
  override name = "WaitTimeoutError";
}

/**
 * Polls `check` until it returns a truthy value (which is returned) or the timeout passes.
 * `describe` is called on timeout to say what was awaited and what state things were in.
 */
export async function waitFor<T>(
  check: () => T | Promise<T>,
  describe: string | (() => string),
  opts: WaitOptions = {},
): Promise<NonNullable<T>> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const intervalMs = opts.intervalMs ?? 5;
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value as NonNullable<T>;
    if (performance.now() >= deadline) {
      const what = typeof describe === "string" ? describe : describe();
      throw new WaitTimeoutError(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Rejects with a clear message if `p` does not settle within `ms`. */
export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new WaitTimeoutError(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Integer environment knob with a default (for soak/scale parameters). */
export function envInt(name: string, dflt: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return dflt;
  const n = Number(raw);
  if (!Number.isFinite(n)) throw new Error(`${name}=${raw} is not a number`);
  return Math.trunc(n);
}

/** True when BUNRING_SOAK=1 asks for the longer variants. */
export const SOAK = process.env.BUNRING_SOAK === "1";
