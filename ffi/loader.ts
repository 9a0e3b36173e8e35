// loader.ts — the one place that opens native libraries: dlopen with the caller's symbol table, check
// the library's ABI version, and read the struct layouts the library describes about itself (name,
// offset and size of every field, from offsetof/sizeof in C). Per-area bindings (ffi/server.ts,
// ffi/loadgen.ts) declare the fields they use by name and kind and get their offsets from here, so a
// field that moved, changed size, or was added in C without the binding knowing fails at load time.
import { CString, dlopen, type FFIFunction, type Pointer } from "bun:ffi";

/** The kinds of field a binding may declare, with their sizes in bytes. */
export type FieldKind = "u32" | "i32" | "u64" | "i64" | { bytes: number };

/** Offsets of a struct's fields as the library laid them out, plus its total size. */
export type StructLayout<F extends string> = Readonly<Record<F, number>> & { readonly size: number };

export interface LibrarySpec<S extends Record<string, FFIFunction>> {
  /** For messages: "libbunring.so". */
  name: string;
  path: string;
  symbols: S;
  /** Exported function returning the library's ABI version, and the version this binding speaks. */
  abiSymbol: keyof S & string;
  abiVersion: number;
  /**
   * Exported `const char *fn(uint32_t index, uint32_t out[2])`: the name of layout entry `index`
   * ("struct" or "struct.field") with out = [offset, size], or NULL past the last entry.
   */
  layoutSymbol: keyof S & string;
  /** What to tell the user when the library is missing or stale. */
  rebuildHint: string;
}

export interface Library<S extends Record<string, FFIFunction>> {
  symbols: ReturnType<typeof dlopen<S>>["symbols"];
  /** Offsets of one struct, checked field by field against the library's own description. */
  struct<F extends string>(cName: string, fields: Record<F, FieldKind>): StructLayout<F>;
}

const KIND_BYTES = { u32: 4, i32: 4, u64: 8, i64: 8 } as const;

function kindBytes(kind: FieldKind): number {
  return typeof kind === "string" ? KIND_BYTES[kind] : kind.bytes;
}

/** camelCase binding names map to the C fields' snake_case: maxPendingBytes -> max_pending_bytes. */
function snake(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

type LayoutEntry = { offset: number; size: number };

function readLayout(fn: (index: number, out: Uint32Array) => Pointer | null): Map<string, LayoutEntry> {
  const entries = new Map<string, LayoutEntry>();
  const out = new Uint32Array(2);
  for (let i = 0; ; i++) {
    const name = fn(i, out);
    if (!name) break;
    entries.set(String(new CString(name)), { offset: out[0]!, size: out[1]! });
  }
  return entries;
}

/** Opens a library, checks its ABI version and reads its layout description; throws an Error that says what to do. */
export function openLibrary<S extends Record<string, FFIFunction>>(spec: LibrarySpec<S>): Library<S> {
  const { symbols } = dlopen(spec.path, spec.symbols);
  const call = symbols as unknown as Record<string, (...args: unknown[]) => unknown>;
  const version = call[spec.abiSymbol]!() as number;
  if (version !== spec.abiVersion) {
    throw new Error(
      `bunring: ${spec.path} speaks ABI version ${version}, this package's ffi/ speaks ${spec.abiVersion}; ${spec.rebuildHint}`,
    );
  }
  const layout = readLayout(call[spec.layoutSymbol] as (i: number, out: Uint32Array) => Pointer | null);
  const mismatch = (what: string) => new Error(`bunring: ${spec.name} layout mismatch: ${what}; ${spec.rebuildHint}`);
  return {
    symbols,
    struct<F extends string>(cName: string, fields: Record<F, FieldKind>): StructLayout<F> {
      const whole = layout.get(cName);
      if (!whole) throw mismatch(`the library does not describe struct ${cName}`);
      const offsets: Record<string, number> = {};
      for (const [field, kind] of Object.entries(fields) as [F, FieldKind][]) {
        const key = `${cName}.${snake(field)}`;
        const entry = layout.get(key);
        if (!entry) throw mismatch(`${key} does not exist in the library`);
        if (entry.size !== kindBytes(kind)) {
          throw mismatch(`${key} is ${entry.size} bytes in the library, ${kindBytes(kind)} in the binding`);
        }
        offsets[field] = entry.offset;
      }
      const declared = new Set(Object.keys(fields).map((f) => `${cName}.${snake(f)}`));
      for (const key of layout.keys()) {
        if (key.startsWith(`${cName}.`) && !declared.has(key)) {
          throw mismatch(`${key} exists in the library but not in the binding`);
        }
      }
      return Object.freeze({ ...offsets, size: whole.size }) as StructLayout<F>;
    },
  };
}

/** A NUL-terminated string inside a byte buffer (error messages, names in result structs). */
export function cStringAt(bytes: Uint8Array, offset: number, length: number): string {
  const slice = bytes.subarray(offset, offset + length);
  const end = slice.indexOf(0);
  return new TextDecoder().decode(end < 0 ? slice : slice.subarray(0, end));
}
