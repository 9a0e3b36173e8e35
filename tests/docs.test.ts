// docs.test.ts — the README's option table is the one src/option-docs.ts makes from the option table
// and the library's limits (run `bun run docs:options` after changing an option), and the README
// stays a user's page (at most 10 KB; measurements and design notes live in docs/).
import { expect, test } from "bun:test";
import { readFileSync, statSync } from "node:fs";
import { README_PATH, readmeWithOptions } from "../src/option-docs.ts";

test("README's option table matches the option table (bun run docs:options)", () => {
  const readme = readFileSync(README_PATH, "utf8");
  expect(readmeWithOptions(readme)).toBe(readme);
});

test("README is at most 10 KB", () => {
  expect(statSync(README_PATH).size).toBeLessThanOrEqual(10 * 1024);
});
