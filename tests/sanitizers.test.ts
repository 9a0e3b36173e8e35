// sanitizers.test.ts — part of `bun test`: builds the C driver with ASan+UBSan and plain
// (`bash tests/c/build.sh`), runs driver-asan (both backends, threads 1 and 2: echo with
// byte-exact checks, half-close, a reset, stop under load, start failures, free while running; and in
// handler mode, with the driver playing the JS side of the channel: echo, half-close, terminate, a
// stalled reader closed by the stall policy, stop under load) with
// leak detection and halt-on-error, and driver-plain under valgrind memcheck with a smaller load.
// Each must exit 0 with no sanitizer or valgrind finding in its output. See tests/c/run-sanitizers.ts.
import { beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { buildDrivers, describeStep, hasValgrind, ok, runAsan, runValgrind, type StepResult } from "./c/run-sanitizers.ts";

setDefaultTimeout(320_000);

let build: StepResult;
beforeAll(async () => {
  build = await buildDrivers();
});

describe("C driver under sanitizers", () => {
  test("tests/c/build.sh builds driver-asan and driver-plain (-Wall -Wextra -Werror)", () => {
    if (!ok(build)) throw new Error(describeStep(build));
    expect(build.code).toBe(0);
  });

  test("driver-asan: both backends, threads 1 and 2, no ASan/UBSan/LSan report, all checks pass", async () => {
    if (!ok(build)) throw new Error(`build failed:\n${describeStep(build)}`);
    const r = await runAsan();
    if (!ok(r)) throw new Error(describeStep(r));
    expect(r.stdout).toMatch(/^driver: OK \d+ checks passed/m);
    expect(r.stderr).not.toContain("Sanitizer");
  });

  (hasValgrind() ? test : test.skip)("driver-plain under valgrind memcheck: no errors, no definite/indirect leaks", async () => {
    if (!ok(build)) throw new Error(`build failed:\n${describeStep(build)}`);
    const r = await runValgrind();
    if (!ok(r)) throw new Error(describeStep(r));
    expect(r.stdout).toMatch(/^driver: OK \d+ checks passed/m);
    expect(r.stderr).toMatch(/ERROR SUMMARY: 0 errors/);
  });
});
