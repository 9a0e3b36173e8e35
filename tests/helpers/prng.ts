/**
 * Test data that can be replayed: one seeded generator (xorshift32), uniform and log-uniform draws
 * from it, the repeating per-seed byte Pattern the streaming echo clients send and verify, and a pool
 * of random bytes that pipelined messages are cut from. A failing seed regenerates the same traffic.
 */
import { randomBytes } from "node:crypto";
import { MiB } from "./scale.ts";

/** xorshift32 as a stream of uint32s; the seed is mixed first (0 would be a fixed point). */
export function xorshift32(seed: number): () => number {
  let x = (Math.imul(seed + 1, 0x9e3779b1) ^ 0x5bd1e995) >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

/** Uniform in [0, 1), deterministic per seed. */
export function rng(seed: number): () => number {
  const next = xorshift32(seed);
  return () => next() / 0x100000000;
}

/** Log-uniform size in [1, max]: as many 1–10 B messages as 100 KiB–256 KiB ones; both ends occur. */
export function logUniformSize(random: () => number, max: number): number {
  const u = random();
  if (u < 0.01) return 1;
  if (u > 0.99) return max;
  return Math.min(max, Math.max(1, Math.floor(Math.exp(random() * Math.log(max + 1)))));
}

/** Length of the repeating Pattern block: prime, so it never lines up with power-of-two buffers. */
export const PATTERN_LEN = 65_521;

/** A per-seed pseudo-random block, stored twice in a row so any window up to PATTERN_LEN is contiguous. */
export class Pattern {
  readonly block: Buffer;
  constructor(readonly seed: number) {
    const one = Buffer.allocUnsafe(PATTERN_LEN);
    const next = xorshift32(seed);
    for (let i = 0; i < PATTERN_LEN; i++) one[i] = next() & 0xff;
    this.block = Buffer.concat([one, one]);
  }

  /** Bytes [offset, offset + n) of the infinite stream; n <= PATTERN_LEN. A view, do not modify. */
  window(offset: number, n: number): Buffer {
    if (n > PATTERN_LEN) throw new RangeError(`window of ${n} > ${PATTERN_LEN}`);
    const start = offset % PATTERN_LEN;
    return this.block.subarray(start, start + n);
  }

  /** The whole stream prefix [0, n) as one buffer (for small messages). */
  bytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    for (let off = 0; off < n; off += PATTERN_LEN) {
      this.window(off, Math.min(PATTERN_LEN, n - off)).copy(out, off);
    }
    return out;
  }

  /**
   * Checks `chunk` against the stream at `offset`. Returns null when it matches, else a description
   * of the first differing byte.
   */
  verify(chunk: Uint8Array, offset: number): string | null {
    for (let done = 0; done < chunk.length; ) {
      const n = Math.min(PATTERN_LEN - ((offset + done) % PATTERN_LEN), chunk.length - done);
      const got = chunk.subarray(done, done + n);
      const want = this.window(offset + done, n);
      if (Buffer.compare(got, want) !== 0) {
        let i = 0;
        while (i < n && got[i] === want[i]) i++;
        const at = offset + done + i;
        const hex = (b: Uint8Array) => Buffer.from(b.subarray(i, i + 16)).toString("hex");
        return `byte ${at}: expected 0x${want[i]!.toString(16)} got 0x${got[i]!.toString(16)} (expected ${hex(want)}…, got ${hex(got)}…)`;
      }
      done += n;
    }
    return null;
  }
}

let poolBytes: Buffer | undefined;
/** 8 MiB of random content (made once) that messages are cut from at random offsets. */
export function randomPool(): Buffer {
  poolBytes ??= randomBytes(8 * MiB);
  return poolBytes;
}
