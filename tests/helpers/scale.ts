/**
 * How big and how long the tests run: the short CI versions by default, the long ones with
 * BUNRING_SOAK=1, and any single scale overridable by its own environment variable (its name is
 * written where the knob is declared, at the top of each test file). Also the size units.
 */

/** BUNRING_SOAK=1: the long versions (minutes); default: the short CI versions. */
export const SOAK = process.env.BUNRING_SOAK === "1";

export const KiB = 1 << 10;
export const MiB = 1 << 20;

/**
 * A scale parameter read from the environment variable `env` (e.g. "BUNRING_STREAM_CONNS"): `ci` by
 * default, `soak` (default: `ci`) with BUNRING_SOAK=1; the variable, when set, overrides both.
 * Scales are counts, sizes and durations: a negative or non-numeric value is an error.
 */
export function knob(env: string, ci: number, soak = ci): number {
  const raw = process.env[env];
  if (raw === undefined || raw === "") return SOAK ? soak : ci;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${env}=${raw} is not a non-negative number`);
  return Math.trunc(n);
}

/** Per-test timeout: generous in CI (a hang fails with a message, not a stuck runner), longer in soak. */
export function testTimeout(ciMs: number, soakMs = ciMs * 10): number {
  return SOAK ? soakMs : ciMs;
}
