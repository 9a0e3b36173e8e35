// lib.ts — finds and loads libbunring.so with bun:ffi and declares every symbol's C types. This file
// and layout.ts are the only places that know symbol names, argument types and struct layouts.
import { dlopen, FFIType, CString } from "bun:ffi";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { ABI_VERSION, CONFIG_SIZE, STAT_NAMES } from "./layout.ts";

const packageRoot = resolve(import.meta.dir, "..");
const shimDir = join(packageRoot, "c-shim");
const buildHint = "build it with `bun run build` (or `bash c-shim/build.sh`) from the bunring package directory";

const symbols = {
  bunring_abi_version: { args: [], returns: FFIType.u32 },
  bunring_config_size: { args: [], returns: FFIType.u32 },
  bunring_stat_count: { args: [], returns: FFIType.u32 },
  bunring_stat_name: { args: [FFIType.u32], returns: FFIType.ptr },
  bunring_feature_name: { args: [FFIType.u32], returns: FFIType.ptr },
  bunring_probe: { args: [FFIType.ptr, FFIType.ptr, FFIType.u32], returns: FFIType.u32 },
  bunring_server_start: { args: [FFIType.ptr, FFIType.ptr, FFIType.ptr], returns: FFIType.ptr },
  bunring_server_port: { args: [FFIType.ptr], returns: FFIType.u32 },
  bunring_server_features: { args: [FFIType.ptr], returns: FFIType.u32 },
  bunring_server_threads: { args: [FFIType.ptr], returns: FFIType.u32 },
  bunring_server_stats: { args: [FFIType.ptr], returns: FFIType.ptr },
  bunring_server_stop: { args: [FFIType.ptr, FFIType.u32], returns: FFIType.void },
  bunring_server_done: { args: [FFIType.ptr], returns: FFIType.u32 },
  bunring_server_free: { args: [FFIType.ptr], returns: FFIType.void },
  bunring_ud_encode: { args: [FFIType.u32, FFIType.u32, FFIType.u32, FFIType.u32], returns: FFIType.u64 },
  bunring_ud_decode_op: { args: [FFIType.u64], returns: FFIType.u32 },
  bunring_ud_decode_bid: { args: [FFIType.u64], returns: FFIType.u32 },
  bunring_ud_decode_slot: { args: [FFIType.u64], returns: FFIType.u32 },
  bunring_ud_decode_gen: { args: [FFIType.u64], returns: FFIType.u32 },
} as const;

/** Path of the shared object: $BUNRING_LIB, else c-shim/build/libbunring.so in this package. */
export function libraryPath(): string {
  return process.env.BUNRING_LIB ?? join(shimDir, "build", "libbunring.so");
}

function newestSourceMtime(): number {
  let newest = 0;
  for (const name of readdirSync(shimDir)) {
    if (name.endsWith(".c") || name.endsWith(".h") || name === "build.sh") {
      newest = Math.max(newest, statSync(join(shimDir, name)).mtimeMs);
    }
  }
  return newest;
}

/** Throws an Error saying how to build the shim when it is missing or older than its sources. */
export function checkBuilt(path: string): void {
  if (!existsSync(path)) {
    throw new Error(`bunring: the native shim ${path} is missing; ${buildHint}`);
  }
  if (process.env.BUNRING_LIB === undefined && existsSync(shimDir) && statSync(path).mtimeMs < newestSourceMtime()) {
    throw new Error(`bunring: the native shim ${path} is older than its sources in c-shim/; re-${buildHint}`);
  }
}

function open() {
  const path = libraryPath();
  checkBuilt(path);
  const lib = dlopen(path, symbols);
  const s = lib.symbols;
  if (s.bunring_abi_version() !== ABI_VERSION || s.bunring_config_size() !== CONFIG_SIZE) {
    throw new Error(`bunring: ${path} was built for another ABI version; ${buildHint}`);
  }
  const count = s.bunring_stat_count();
  const names = Array.from({ length: count }, (_, i) => String(new CString(s.bunring_stat_name(i)!)));
  if (names.join() !== STAT_NAMES.join()) {
    throw new Error(`bunring: ${path} reports stats [${names.join(", ")}], ffi/layout.ts expects [${STAT_NAMES.join(", ")}]`);
  }
  const features: string[] = [];
  for (let bit = 0; ; bit++) {
    const p = s.bunring_feature_name(bit);
    if (!p) break;
    features.push(String(new CString(p)));
  }
  return { symbols: s, featureNames: features };
}

let loaded: ReturnType<typeof open> | undefined;

/** The loaded library (opened on first use, so importing bunring never fails by itself). */
export function native(): ReturnType<typeof open> {
  loaded ??= open();
  return loaded;
}

/** A NUL-terminated string inside a byte buffer (error messages, names in result structs). */
export function cStringAt(bytes: Uint8Array, offset: number, length: number): string {
  const slice = bytes.subarray(offset, offset + length);
  const end = slice.indexOf(0);
  return new TextDecoder().decode(end < 0 ? slice : slice.subarray(0, end));
}
