// package.test.ts — bunring embedded as a dependency, the way a Bun user gets it: `npm pack` this
// repository (prepack builds the shim into the tarball), install the tarball into a fresh Bun project
// with install scripts off, and run a script there that does `import { serve } from "bunring"` and
// echoes a message over a real socket. Covers the prebuilt library used as is, the first-use build
// into the package (writable), into the per-user cache (package read-only, as user nobody when we are
// root), two first uses at once, and the one error naming what to install when there is no C compiler
// or no liburing headers. Also checks the tarball ships no bench or test code and no dangling import.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, normalize, resolve } from "node:path";

const repo = resolve(import.meta.dir, "..");
const bun = process.execPath;
const isRoot = process.getuid?.() === 0;
const setpriv = Bun.which("setpriv") ?? "/usr/bin/setpriv"; // resolved here: the runs below may have a reduced PATH
const NOBODY = 65534;
const STEP_MS = 120_000; // per spawned step: generous, a busy 2-core machine must not fail this

let tmp: string;
let project: string;
let pkgDir: string;
let tarball: string;
let tarFiles: string[] = [];

type Run = { code: number | null; stdout: string; stderr: string };

function run(cmd: string[], opts: { cwd?: string; env?: Record<string, string | undefined> } = {}): Run {
  const r = Bun.spawnSync(cmd, {
    cwd: opts.cwd ?? repo,
    env: opts.env ?? cleanEnv(),
    stdout: "pipe",
    stderr: "pipe",
    timeout: STEP_MS,
  });
  return { code: r.exitCode, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

/** This process's environment without anything that would steer bunring or npm elsewhere. */
function cleanEnv(extra: Record<string, string> = {}): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = { ...process.env, npm_config_update_notifier: "false", ...extra };
  delete env.BUNRING_LIB;
  for (const k of Object.keys(env)) if (k.startsWith("npm_") && k !== "npm_config_update_notifier") delete env[k];
  return env;
}

function must(r: Run, what: string): Run {
  if (r.code !== 0) throw new Error(`${what} exited ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  return r;
}

// The consumer's script: echo one message through a bunring server, print which libbunring.so the
// process mapped, then OK.
const ECHO_SCRIPT = `
import { serve } from "bunring";
import { connect } from "node:net";
import { readFileSync } from "node:fs";
setTimeout(() => { console.error("echo script timed out"); process.exit(3); }, 60_000).unref();
const server = serve({ port: 0 });
const message = "hello from a dependent project";
const echoed = await new Promise((resolve, reject) => {
  const sock = connect(server.port, "127.0.0.1", () => sock.write(message));
  let got = "";
  sock.on("data", (d) => { got += d; if (got.length >= message.length) { sock.end(); resolve(got); } });
  sock.on("error", reject);
});
await server.stop();
if (echoed !== message) throw new Error("echoed " + JSON.stringify(echoed));
const lib = readFileSync("/proc/self/maps", "utf8").split("\\n").map((l) => l.split(/\\s+/)[5]).find((p) => p?.endsWith("/libbunring.so"));
console.log("LIB " + lib);
console.log("OK");
`;

/** Runs the echo script in the project: as nobody (with its own HOME and cache) when `asNobody`. */
function runEcho(opts: { asNobody?: boolean; path?: string; home?: string } = {}): Run {
  const home = opts.home ?? join(tmp, "home-root");
  const env = cleanEnv({ HOME: home, XDG_CACHE_HOME: join(home, "cache"), ...(opts.path ? { PATH: opts.path } : {}) });
  const cmd = opts.asNobody && isRoot
    ? [setpriv, `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", bun, "run", "echo.ts"]
    : [bun, "run", "echo.ts"];
  return run(cmd, { cwd: project, env });
}

function libOf(r: Run): string {
  return /^LIB (.*)$/m.exec(r.stdout)?.[1] ?? "";
}

/** A home directory the user running the echo script (nobody, when root) owns. */
function homeFor(name: string): string {
  const home = join(tmp, name);
  mkdirSync(join(home, "cache"), { recursive: true });
  if (isRoot) {
    chownSync(home, NOBODY, NOBODY);
    chownSync(join(home, "cache"), NOBODY, NOBODY);
  }
  return home;
}

/** A PATH directory with bash and the tools build.sh uses, and `cc` only when given. */
function fakeBin(name: string, cc?: string): string {
  const dir = join(tmp, name);
  mkdirSync(dir, { recursive: true });
  for (const tool of ["bash", "sh", "dirname", "mkdir", "cat", "sha256sum", "ls", "cut", "id", "find", "mv", "rm", "env"]) {
    const real = Bun.which(tool);
    if (real) symlinkSync(real, join(dir, tool));
  }
  if (cc !== undefined) {
    writeFileSync(join(dir, "cc"), cc);
    chmodSync(join(dir, "cc"), 0o755);
  }
  return dir;
}

const buildDir = () => join(pkgDir, "c-shim", "build");

function setWritable(dir: string, writable: boolean): void {
  run(["chmod", "-R", writable ? "u+w" : "a-w", dir]);
}

beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), "bunring-package-"));
  chmodSync(tmp, 0o755); // nobody must reach the project
  const packs = join(tmp, "packs");
  mkdirSync(packs);
  // npm pack runs prepack (build.sh), so the tarball carries a library built now.
  must(run(["npm", "pack", "--pack-destination", packs, "--loglevel=error"]), "npm pack");
  const tgz = readdirSync(packs).filter((f) => f.endsWith(".tgz"));
  expect(tgz).toHaveLength(1);
  tarball = join(packs, tgz[0]!);
  tarFiles = must(run(["tar", "-tzf", tarball]), "tar -tzf").stdout.split("\n").filter(Boolean).map((f) => f.replace(/^package\//, ""));

  project = join(tmp, "app");
  mkdirSync(project);
  writeFileSync(
    join(project, "package.json"),
    JSON.stringify({ name: "bunring-consumer", private: true, type: "module", dependencies: { bunring: `file:${tarball}` } }, null, 2),
  );
  writeFileSync(join(project, "echo.ts"), ECHO_SCRIPT);
  // No install scripts: the library the app gets is the tarball's, or what first use builds.
  const home = homeFor("home-root");
  must(
    run([bun, "install", "--ignore-scripts", "--no-save", "--no-progress"], {
      cwd: project,
      env: cleanEnv({ HOME: home, BUN_INSTALL_CACHE_DIR: join(tmp, "bun-cache") }),
    }),
    "bun install",
  );
  pkgDir = join(project, "node_modules", "bunring");
  expect(existsSync(join(pkgDir, "package.json"))).toBe(true);
}, STEP_MS * 2);

afterAll(() => {
  if (!tmp) return;
  run(["chmod", "-R", "u+w", tmp]);
  rmSync(tmp, { recursive: true, force: true });
});

describe("the packed tarball", () => {
  test("ships the product only: no bench/, tests/ or examples/, the prebuilt shim and its stamp", () => {
    for (const f of tarFiles) {
      expect(f).not.toMatch(/^(bench|tests|examples|\.ci|docs)\//);
    }
    const top = new Set(tarFiles.map((f) => f.split("/")[0]));
    for (const t of top) expect(["package.json", "README.md", "LICENSE", "src", "ffi", "c-shim"]).toContain(t!);
    expect(tarFiles).toContain("c-shim/build/libbunring.so");
    expect(tarFiles).toContain("c-shim/build/libbunring.so.source-hash");
    expect(tarFiles).toContain("c-shim/build.sh");
    expect(tarFiles).toContain("src/index.ts");
    expect(tarFiles.filter((f) => f.startsWith("c-shim/build/"))).toHaveLength(2);
  });

  test("every relative import of a shipped module resolves to a shipped file", () => {
    const shipped = new Set(tarFiles);
    const dangling: string[] = [];
    for (const f of tarFiles.filter((f) => f.endsWith(".ts"))) {
      const text = readFileSync(join(pkgDir, f), "utf8");
      for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)\b[^;]*?from\s+"(\.{1,2}\/[^"]+)"/g)) {
        const target = normalize(join(dirname(f), m[1]!));
        if (!shipped.has(target)) dangling.push(`${f} -> ${m[1]}`);
      }
    }
    expect(dangling).toEqual([]);
  });
});

describe("import { serve } from \"bunring\" in a dependent project (install scripts not run)", () => {
  test("the prebuilt library from the tarball is used as is, and does not need liburing installed", () => {
    const lib = join(buildDir(), "libbunring.so");
    const before = statSync(lib);
    const r = must(runEcho(), "echo script");
    expect(r.stdout).toContain("OK");
    expect(libOf(r)).toBe(lib);
    const after = statSync(lib);
    expect(after.ino).toBe(before.ino); // not rebuilt
    const ldd = must(run(["ldd", lib]), "ldd");
    expect(ldd.stdout).not.toContain("liburing");
  }, STEP_MS);

  test("no C compiler: one error naming build-essential", () => {
    rmSync(buildDir(), { recursive: true, force: true });
    const r = runEcho({ path: fakeBin("bin-no-cc") });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("no working C compiler");
    expect(r.stderr).toContain("build-essential");
    expect(existsSync(join(buildDir(), "libbunring.so"))).toBe(false);
  }, STEP_MS);

  test("no liburing headers (not root): one error naming liburing-dev", () => {
    if (!isRoot) setWritable(pkgDir, false);
    // A cc that cannot find liburing.h and otherwise is the real compiler.
    const cc = `#!/bin/sh
if [ "$1" = "-E" ]; then
  input=$(cat)
  case "$input" in *liburing.h*) echo "<stdin>:1:10: fatal error: liburing.h: No such file or directory" >&2; exit 1 ;; esac
  printf '%s\\n' "$input" | exec ${Bun.which("cc") ?? "/usr/bin/cc"} "$@"
fi
exec ${Bun.which("cc") ?? "/usr/bin/cc"} "$@"
`;
    const home = homeFor("home-no-uring");
    const r = runEcho({ asNobody: true, home, path: fakeBin("bin-no-uring", cc) });
    if (!isRoot) setWritable(pkgDir, true);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("liburing headers are missing");
    expect(r.stderr).toContain("liburing-dev");
  }, STEP_MS);

  test("read-only package: first use builds into the per-user cache", () => {
    rmSync(buildDir(), { recursive: true, force: true });
    setWritable(pkgDir, false);
    const home = homeFor("home-readonly");
    let r: Run;
    try {
      r = runEcho({ asNobody: true, home });
    } finally {
      setWritable(pkgDir, true);
    }
    must(r, "echo script (read-only package)");
    expect(r.stdout).toContain("OK");
    const lib = libOf(r);
    expect(lib.startsWith(join(home, "cache", "bunring") + "/")).toBe(true);
    expect(lib).toMatch(/\/bunring\/[0-9a-f]{16}-linux-[a-z0-9]+\/libbunring\.so$/);
    expect(existsSync(`${lib}.source-hash`)).toBe(true);
    expect(existsSync(join(buildDir(), "libbunring.so"))).toBe(false);
    // Second use: the cached build, not rebuilt.
    const ino = statSync(lib).ino;
    setWritable(pkgDir, false);
    try {
      r = runEcho({ asNobody: true, home });
    } finally {
      setWritable(pkgDir, true);
    }
    must(r, "echo script (read-only package, second use)");
    expect(libOf(r)).toBe(lib);
    expect(statSync(lib).ino).toBe(ino);
  }, STEP_MS * 2);

  test("writable package: two first uses at once both build and echo; the library lands in the package", async () => {
    rmSync(buildDir(), { recursive: true, force: true });
    const home = join(tmp, "home-root");
    const start = () =>
      Bun.spawn([bun, "run", "echo.ts"], {
        cwd: project,
        env: cleanEnv({ HOME: home, XDG_CACHE_HOME: join(home, "cache") }),
        stdout: "pipe",
        stderr: "pipe",
      });
    const procs = [start(), start()];
    const timer = setTimeout(() => procs.forEach((p) => p.kill()), STEP_MS);
    const results = await Promise.all(
      procs.map(async (p) => ({ code: await p.exited, stdout: await new Response(p.stdout).text(), stderr: await new Response(p.stderr).text() })),
    );
    clearTimeout(timer);
    const lib = join(buildDir(), "libbunring.so");
    for (const r of results) {
      must(r, "concurrent echo script");
      expect(r.stdout).toContain("OK");
      expect(libOf(r)).toBe(lib);
    }
    expect(readdirSync(buildDir()).sort()).toEqual(["libbunring.so", "libbunring.so.source-hash"]); // no temporaries left
    expect(must(run(["ldd", lib]), "ldd").stdout).not.toContain("liburing");
  }, STEP_MS);
});
