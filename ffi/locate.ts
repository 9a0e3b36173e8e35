// locate.ts — where the product's native library is: $BUNRING_LIB, else c-shim/build/libbunring.so in
// this package. Refuses a library that is missing or older than its sources, saying how to build it.
import { existsSync, readdirSync, statSync } from "node:fs";
import { join, resolve } from "node:path";

const packageRoot = resolve(import.meta.dir, "..");
const shimDir = join(packageRoot, "c-shim");
export const BUILD_HINT = "build it with `bun run build` (or `bash c-shim/build.sh`) from the bunring package directory";

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

/** The library to open; throws an Error saying how to build it when it is missing or stale. */
export function locateLibrary(): string {
  const path = libraryPath();
  if (!existsSync(path)) {
    throw new Error(`bunring: the native shim ${path} is missing; ${BUILD_HINT}`);
  }
  if (process.env.BUNRING_LIB === undefined && existsSync(shimDir) && statSync(path).mtimeMs < newestSourceMtime()) {
    throw new Error(`bunring: the native shim ${path} is older than its sources in c-shim/; re-${BUILD_HINT}`);
  }
  return path;
}
