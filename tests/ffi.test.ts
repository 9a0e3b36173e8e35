// ffi.test.ts — the binding layer itself: every struct offset comes from the library's own layout
// description and a binding that disagrees with it fails at load; counters are read whole (a 64-bit
// value never mixes the halves of two stores); the option table's integer ranges are the library's.
import { describe, expect, test } from "bun:test";
import { FFIType } from "bun:ffi";
import { openLibrary } from "../ffi/loader.ts";
import { libraryPath } from "../ffi/locate.ts";
import fc from "fast-check";
import { ABI_VERSION, nativeLimit, startNative, STAT_NAMES, sumStats, type NativeError } from "../ffi/server.ts";
import { OPTION_TABLE } from "../src/option-table.ts";
import { resolveOptions } from "../src/options.ts";

const STRIDE = 64;

function openProduct() {
  return openLibrary({
    name: "libbunring.so",
    path: libraryPath(),
    symbols: {
      bunring_abi_version: { args: [], returns: FFIType.u32 },
      bunring_layout_entry: { args: [FFIType.u32, FFIType.ptr], returns: FFIType.ptr },
    },
    abiSymbol: "bunring_abi_version",
    abiVersion: ABI_VERSION,
    layoutSymbol: "bunring_layout_entry",
    rebuildHint: "rebuild",
  });
}

const CONFIG_FIELDS = {
  backend: "u32",
  port: "u32",
  threads: "u32",
  bufferSize: "u32",
  bufferCount: "u32",
  maxConnections: "u32",
  maxPendingBytes: "u32",
  backlog: "u32",
  drainMs: "u32",
  idleTimeoutMs: "u32",
  stallTimeoutMs: "u32",
  flags: "u32",
  cpuCount: "u32",
  cpus: { bytes: 1024 },
} as const;

describe("layouts from C", () => {
  test("the config's offsets are the library's, in declaration order, and the struct size covers them", () => {
    const at = openProduct().struct("bunring_config", CONFIG_FIELDS);
    const offsets = Object.keys(CONFIG_FIELDS).map((f) => at[f as keyof typeof CONFIG_FIELDS]);
    expect(offsets).toEqual([...offsets].sort((a, b) => a - b));
    expect(new Set(offsets).size).toBe(offsets.length);
    expect(at.size).toBeGreaterThanOrEqual(at.cpus + 1024);
  });

  test("a field the binding sizes differently fails loudly, naming it", () => {
    expect(() => openProduct().struct("bunring_config", { ...CONFIG_FIELDS, port: "u64" })).toThrow(/bunring_config\.port is 4 bytes/);
  });

  test("a field the library has and the binding does not declare fails loudly", () => {
    const { stallTimeoutMs: _, ...missing } = CONFIG_FIELDS;
    expect(() => openProduct().struct("bunring_config", missing)).toThrow(/bunring_config\.stall_timeout_ms exists in the library/);
  });

  test("a field the binding declares and the library lacks fails loudly", () => {
    expect(() => openProduct().struct("bunring_config", { ...CONFIG_FIELDS, nosuchField: "u32" })).toThrow(/nosuch_field does not exist/);
  });

  test("a wrong ABI version is refused with what to do", () => {
    expect(() =>
      openLibrary({
        name: "libbunring.so",
        path: libraryPath(),
        symbols: {
          bunring_abi_version: { args: [], returns: FFIType.u32 },
          bunring_layout_entry: { args: [FFIType.u32, FFIType.ptr], returns: FFIType.ptr },
        },
        abiSymbol: "bunring_abi_version",
        abiVersion: 999,
        layoutSymbol: "bunring_layout_entry",
        rebuildHint: "rebuild it",
      }),
    ).toThrow(new RegExp(`speaks ABI version ${ABI_VERSION}, .* speaks 999; rebuild it`));
  });
});

describe("stats read whole", () => {
  test("counters at and around 2^32 (and up to 2^53) read exactly, summed across loops", () => {
    const threads = 3;
    const words = new BigUint64Array(threads * STRIDE);
    const near = [2n ** 32n - 1n, 2n ** 32n, 2n ** 32n + 1n, 2n ** 40n + 12345n, 2n ** 52n];
    STAT_NAMES.forEach((_, i) => {
      for (let t = 0; t < threads; t++) words[t * STRIDE + i] = near[(i + t) % near.length]!;
    });
    const stats = sumStats(words, threads);
    STAT_NAMES.forEach((name, i) => {
      let want = 0n;
      for (let t = 0; t < threads; t++) want += near[(i + t) % near.length]!;
      expect(stats[name]).toBe(Number(want));
    });
  });
});

describe("one table of options", () => {
  test("every integer option's range is the library's, shown in its messages", () => {
    for (const o of OPTION_TABLE) {
      if (o.kind.type !== "integer") continue;
      const { min, max } = nativeLimit(o.kind.cField);
      expect(() => resolveOptions({ [o.name]: max + 1 })).toThrow(new RegExp(`${o.name} must be .*${max}`));
      if (min > 0) expect(() => resolveOptions({ [o.name]: min - 1 })).toThrow(RangeError);
    }
  });

  test("a pool smaller than two paused connections is refused naming both options", () => {
    expect(() => resolveOptions({ bufferCount: 16, maxPendingBytes: 65536 })).toThrow(/bufferCount \(16\) must be at least 64: with maxPendingBytes 65536/);
    expect(() => resolveOptions({ bufferCount: 16, maxPendingBytes: 4096, bufferSize: 2048 })).not.toThrow();
  });

  test("the C side accepts exactly the configurations the table's checks and rules accept", () => {
    const pow2 = fc.integer({ min: 3, max: 16 }).map((e) => 2 ** e);
    fc.assert(
      fc.property(
        fc.record({
          threads: fc.integer({ min: 1, max: 4 }),
          maxConnections: fc.integer({ min: 1, max: 8 }),
          bufferSize: fc.constantFrom(256, 512, 1024, 2048, 65536),
          bufferCount: pow2,
          maxPendingBytes: fc.constantFrom(512, 1024, 4096, 65536, 1 << 20),
          reusePort: fc.boolean(),
        }),
        (o) => {
          let tsOk = true;
          try {
            resolveOptions({ ...o, backend: "epoll", port: 0 });
          } catch {
            tsOk = false;
          }
          let cOk = true;
          try {
            const server = startNative(
              { ...o, backend: "epoll", port: 0, backlog: 16, drainMs: 0, idleTimeoutMs: 0, stallTimeoutMs: 0, cpus: [], sqpoll: false },
              "127.0.0.1",
            );
            server.stop(0);
            server.free();
          } catch (e) {
            expect((e as NativeError).code).toBe(-22); // EINVAL: a config the C side refused
            cOk = false;
          }
          expect(cOk).toBe(tsOk);
        },
      ),
      { numRuns: 200 },
    );
  });
});
