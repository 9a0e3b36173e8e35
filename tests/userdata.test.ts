// userdata.test.ts — every user_data test: the io_uring user_data layout (op 8 bits | buffer id 16 |
// slot 20 | generation 20, see c-shim/bunring.h) round-trips through the shim's exported encode/decode
// functions at every field's extremes and for arbitrary values, matches the documented bit positions,
// uses all 64 bits (decode then encode is the identity on every 64-bit value), and fields never bleed
// into each other. Scale: BUNRING_USERDATA_RUNS (5,000 property runs; 50,000 with BUNRING_SOAK=1).
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { userData } from "../ffi/server.ts";
import { knob } from "./helpers/scale.ts";

const RUNS = knob("BUNRING_USERDATA_RUNS", 5_000, 50_000);

const MAX = { op: 0xff, bid: 0xffff, slot: 2 ** 20 - 1, gen: 2 ** 20 - 1 } as const;
const SHIFT = { op: 0n, bid: 8n, slot: 24n, gen: 44n } as const;
type Field = keyof typeof MAX;
const FIELDS: Field[] = ["op", "bid", "slot", "gen"];

/** The documented layout, computed independently of the shim. */
function reference(op: number, bid: number, slot: number, gen: number): bigint {
  return BigInt(op) | (BigInt(bid) << 8n) | (BigInt(slot) << 24n) | (BigInt(gen) << 44n);
}

function roundTrip(op: number, bid: number, slot: number, gen: number): void {
  const ud = userData.encode(op, bid, slot, gen);
  expect(typeof ud).toBe("bigint");
  expect(ud).toBe(reference(op, bid, slot, gen));
  expect(userData.decode(ud)).toEqual({ op, bid, slot, gen });
}

describe("user_data", () => {
  test("the exported field limits are the documented widths (8, 16, 20, 20 bits)", () => {
    expect(userData.limits).toEqual({ ...MAX });
  });

  test("every combination of field extremes (0, 1, max-1, max) round-trips", () => {
    const values = (f: Field) => [0, 1, MAX[f] - 1, MAX[f]];
    let n = 0;
    for (const op of values("op"))
      for (const bid of values("bid"))
        for (const slot of values("slot"))
          for (const gen of values("gen")) {
            roundTrip(op, bid, slot, gen);
            n++;
          }
    expect(n).toBe(256);
  });

  test("all fields at max is all 64 bits set; all zero is 0", () => {
    expect(userData.encode(MAX.op, MAX.bid, MAX.slot, MAX.gen)).toBe(2n ** 64n - 1n);
    expect(userData.encode(0, 0, 0, 0)).toBe(0n);
    expect(userData.decode(2n ** 64n - 1n)).toEqual({ ...MAX });
    expect(userData.decode(0n)).toEqual({ op: 0, bid: 0, slot: 0, gen: 0 });
  });

  test("each field alone at max occupies exactly its documented bits", () => {
    for (const f of FIELDS) {
      const args = { op: 0, bid: 0, slot: 0, gen: 0, [f]: MAX[f] };
      const ud = userData.encode(args.op, args.bid, args.slot, args.gen);
      expect(ud).toBe(BigInt(MAX[f]) << SHIFT[f]);
      expect(userData.decode(ud)).toEqual(args);
    }
  });

  test("the generation survives values above 2^53 (no float rounding across the FFI)", () => {
    // gen in the top bits makes the value exceed Number.MAX_SAFE_INTEGER
    const ud = userData.encode(1, 2, 3, MAX.gen);
    expect(ud).toBeGreaterThan(BigInt(Number.MAX_SAFE_INTEGER));
    expect(userData.decode(ud)).toEqual({ op: 1, bid: 2, slot: 3, gen: MAX.gen });
    const odd = reference(0xab, 0x1234, 0xfedcb, 0x13579);
    expect(userData.decode(odd)).toEqual({ op: 0xab, bid: 0x1234, slot: 0xfedcb, gen: 0x13579 });
  });

  test(`property: any in-range fields round-trip, fit in 64 bits and match the documented layout (${RUNS} runs)`, () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: MAX.op }),
        fc.integer({ min: 0, max: MAX.bid }),
        fc.integer({ min: 0, max: MAX.slot }),
        fc.integer({ min: 0, max: MAX.gen }),
        (op, bid, slot, gen) => {
          const ud = userData.encode(op, bid, slot, gen);
          const d = userData.decode(ud);
          return (
            ud >= 0n &&
            ud < 1n << 64n &&
            ud === reference(op, bid, slot, gen) &&
            d.op === op &&
            d.bid === bid &&
            d.slot === slot &&
            d.gen === gen
          );
        },
      ),
      { numRuns: RUNS },
    );
  });

  test(`property: decode then encode of any 64-bit value is the identity (${RUNS} runs)`, () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), (ud) => {
        const d = userData.decode(ud);
        return userData.encode(d.op, d.bid, d.slot, d.gen) === ud;
      }),
      { numRuns: RUNS },
    );
  });

  test("property: changing one field never changes another", () => {
    fc.assert(
      fc.property(
        fc.record({
          op: fc.integer({ min: 0, max: MAX.op }),
          bid: fc.integer({ min: 0, max: MAX.bid }),
          slot: fc.integer({ min: 0, max: MAX.slot }),
          gen: fc.integer({ min: 0, max: MAX.gen }),
        }),
        fc.constantFrom(...FIELDS),
        fc.nat(),
        (base, field, raw) => {
          const changed = { ...base, [field]: raw % (MAX[field] + 1) };
          const d = userData.decode(userData.encode(changed.op, changed.bid, changed.slot, changed.gen));
          return FIELDS.every((f) => d[f] === changed[f]);
        },
      ),
      { numRuns: 2000 },
    );
  });
});
