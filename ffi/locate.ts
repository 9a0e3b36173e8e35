// locate.ts — where the product's native library is, building it on first use when needed.
//   1. $BUNRING_LIB, as is (never built).
//   2. c-shim/build/libbunring.so in this package, when it is current and loads here (a library
//      shipped prebuilt in the npm tarball is used as is).
//   3. The per-user cache, $XDG_CACHE_HOME/bunring/<source hash>-<platform>-<arch>/libbunring.so (or
//      ~/.cache/bunring/...), when it is current and loads.
//   4. Otherwise build it, once, with `bash c-shim/build.sh --quiet`: into c-shim/build/ when that
//      directory is writable, else into the cache directory of step 3.
// "Current" means libbunring.so.source-hash beside the library records the hash of the C sources,
// headers and build.sh in c-shim/ (build.sh writes it; see source_hash there), so file times (which
// npm and bun set as they like when unpacking) play no part, and two versions never share a cache
// entry. build.sh links under a temporary name and renames, so two processes building at once each
// end with a complete library. No C compiler or no liburing headers (and not root, where build.sh
// installs liburing-dev with apt-get): one Error naming the packages to install.
import { dlopen, FFIType } from "bun:ffi";
import { accessSync, constants, existsSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { isAbsolute, join, resolve } from "node:path";

const packageRoot = resolve(import.meta.dir, "..");
const shimDir = join(packageRoot, "c-shim");
const packageBuildDir = join(shimDir, "build");
const LIB_NAME = "libbunring.so";
const STAMP_SUFFIX = ".source-hash";

/** What to do about a library that is missing, stale or does not match this package's ffi/. */
export const BUILD_HINT =
  "rebuild it with `bash c-shim/build.sh --force` in the bunring package directory (bunring builds a missing or outdated library on first use), or point BUNRING_LIB at a current build";

/** The library located (and perhaps built) by locateLibrary in this process. */
let located: string | undefined;

/**
 * Path of the shared object: $BUNRING_LIB, else the library locateLibrary found or built in this
 * process, else c-shim/build/libbunring.so in this package (which may not exist yet).
 */
export function libraryPath(): string {
  return process.env.BUNRING_LIB ?? located ?? join(packageBuildDir, LIB_NAME);
}

/**
 * Bun's own hasher, not node:crypto's: every process that uses bunring runs this at start, and
 * loading node:crypto costs about 5 MiB of resident memory (Bun.CryptoHasher under 1).
 */
function sha256(data: string | Uint8Array): string {
  return new Bun.CryptoHasher("sha256").update(data).digest("hex");
}

/**
 * Hash of c-shim's *.c, *.h and build.sh, computed as build.sh's source_hash does: sha256 of the
 * listing "<sha256 of file>  <name>\n" over the names in byte order. Undefined without sources.
 */
function sourceHash(): string | undefined {
  let names: string[];
  try {
    names = readdirSync(shimDir).filter(
      (n) => !n.startsWith(".") && (n.endsWith(".c") || n.endsWith(".h") || n === "build.sh"),
    );
  } catch {
    return undefined;
  }
  if (!names.includes("build.sh")) return undefined;
  names.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  let listing = "";
  for (const name of names) {
    listing += `${sha256(readFileSync(join(shimDir, name)))}  ${name}\n`;
  }
  return sha256(listing);
}

/** True when `lib` exists and its stamp records `hash`. */
function isCurrent(lib: string, hash: string): boolean {
  if (!existsSync(lib)) return false;
  try {
    return readFileSync(lib + STAMP_SUFFIX, "utf8").trim() === hash;
  } catch {
    return false;
  }
}

/** Undefined when `lib` can be dlopen'ed here (right architecture, C library new enough); else why not. */
function loadError(lib: string): string | undefined {
  try {
    dlopen(lib, { bunring_abi_version: { args: [], returns: FFIType.u32 } }).close();
    return undefined;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}

function writable(dir: string): boolean {
  // The build directory if it exists, else c-shim/ where build.sh would create it.
  const probe = existsSync(dir) ? dir : resolve(dir, "..");
  try {
    accessSync(probe, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

function cacheRoot(): string {
  const xdg = process.env.XDG_CACHE_HOME;
  if (xdg && isAbsolute(xdg)) return join(xdg, "bunring");
  return join(homedir(), ".cache", "bunring");
}

/** Runs build.sh into `dir` (the package's build directory when it is that), throwing on failure. */
function build(dir: string, force: boolean): void {
  const args = [join(shimDir, "build.sh"), "--quiet"];
  if (dir !== packageBuildDir) args.push("--out", dir);
  if (force) args.push("--force");
  let r: ReturnType<typeof Bun.spawnSync>;
  try {
    r = Bun.spawnSync(["bash", ...args], { cwd: packageRoot, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  } catch (e) {
    throw new Error(`bunring: the native shim ${join(dir, LIB_NAME)} must be built, but running bash failed: ${(e as Error).message}`);
  }
  if (r.exitCode === 0) return;
  const output = `${r.stderr?.toString() ?? ""}${r.stdout?.toString() ?? ""}`.trim();
  // build.sh's own one-line verdict when the toolchain is missing names the packages to install.
  const verdict = output.split("\n").find((line) => line.startsWith("bunring: cannot build the native shim"));
  if (verdict) {
    throw new Error(`${verdict} bunring builds its native shim on first use; or set BUNRING_LIB to a libbunring.so built elsewhere.`);
  }
  const tail = output.split("\n").slice(-40).join("\n");
  const how = r.signalCode ? `was killed by ${r.signalCode}` : `exited with status ${r.exitCode}`;
  throw new Error(`bunring: building the native shim into ${dir} failed (bash c-shim/build.sh ${how}):\n${tail}`);
}

function findOrBuild(): string {
  const packageLib = join(packageBuildDir, LIB_NAME);
  const hash = sourceHash();
  if (hash === undefined) {
    // No C sources to build from: only a library already in place can be used.
    if (existsSync(packageLib)) return packageLib;
    throw new Error(`bunring: the native shim ${packageLib} is missing and ${shimDir} has no sources to build it from; ${BUILD_HINT}`);
  }

  const cacheDir = join(cacheRoot(), `${hash.slice(0, 16)}-${process.platform}-${process.arch}`);
  const cacheLib = join(cacheDir, LIB_NAME);
  let force = false;
  for (const lib of [packageLib, cacheLib]) {
    if (!isCurrent(lib, hash)) continue;
    if (loadError(lib) === undefined) return lib;
    force = true; // current sources, but built for another machine (architecture, C library): rebuild
  }

  const target = writable(packageBuildDir) ? packageBuildDir : cacheDir;
  if (target === cacheDir) {
    try {
      mkdirSync(cacheDir, { recursive: true });
    } catch (e) {
      throw new Error(
        `bunring: the native shim must be built, ${packageBuildDir} is not writable and neither is the cache directory ${cacheDir} (${(e as Error).message}); set XDG_CACHE_HOME to a writable directory or BUNRING_LIB to a built libbunring.so`,
      );
    }
  }
  build(target, force);
  const lib = join(target, LIB_NAME);
  if (!isCurrent(lib, hash)) {
    throw new Error(`bunring: bash c-shim/build.sh reported success but ${lib} is not built from the current sources; ${BUILD_HINT}`);
  }
  const why = loadError(lib);
  if (why !== undefined) throw new Error(`bunring: the freshly built native shim ${lib} does not load: ${why}`);
  return lib;
}

/**
 * The library to open: $BUNRING_LIB as is, else this package's (or the per-user cache's) current
 * build, building it first when there is none. Throws an Error saying what to install or do when
 * it cannot be built.
 */
export function locateLibrary(): string {
  const override = process.env.BUNRING_LIB;
  if (override !== undefined) {
    if (!existsSync(override)) throw new Error(`bunring: BUNRING_LIB names ${override}, which does not exist; ${BUILD_HINT}`);
    return override;
  }
  if (located === undefined || !existsSync(located)) located = findOrBuild();
  return located;
}
