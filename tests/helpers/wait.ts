/**
 * Waiting on conditions instead of sleeping as synchronisation: poll a condition until it holds or a
 * deadline passes, or bound a promise by a deadline; either way a timeout fails with a description of
 * what was awaited and the state things were in at that moment.
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

/** A description, or a function that builds it when needed (so it shows the state at the timeout). */
export type What = string | (() => string);

const describe = (what: What): string => (typeof what === "string" ? what : what());

/**
 * Polls `check` until it returns a truthy value (which is returned) or the timeout passes.
 * `what` says what was awaited; as a function it is called at the timeout to show the state then.
 */
export async function waitFor<T>(check: () => T | Promise<T>, what: What, opts: WaitOptions = {}): Promise<NonNullable<T>> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const intervalMs = opts.intervalMs ?? 5;
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value as NonNullable<T>;
    if (performance.now() >= deadline) {
      throw new WaitTimeoutError(`timed out after ${timeoutMs} ms waiting for: ${describe(what)}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Rejects with a clear message if `p` does not settle within `ms`. */
export async function withTimeout<T>(p: Promise<T>, ms: number, what: What): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new WaitTimeoutError(`timed out after ${ms} ms: ${describe(what)}`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
