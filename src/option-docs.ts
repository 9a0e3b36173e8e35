// option-docs.ts — the README's option table, made from src/option-table.ts and the native library's
// limits, so the README cannot drift from what the CLI and serve() accept. `bun run docs:options`
// rewrites the table between the README's `<!-- options:begin -->` and `<!-- options:end -->` lines;
// tests/docs.test.ts checks that the README holds exactly what this prints.
import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { nativeLimit } from "../ffi/server.ts";
import { OPTION_RULES, OPTION_TABLE, type OptionSpec } from "./option-table.ts";

const BEGIN = "<!-- options:begin -->";
const END = "<!-- options:end -->";
export const README_PATH = join(resolve(import.meta.dir, ".."), "README.md");

function allowed(o: OptionSpec): string {
  switch (o.kind.type) {
    case "integer": {
      const { min, max } = nativeLimit(o.kind.cField);
      const range = `${min}..${max}`;
      const zero = o.kind.zeroMeans ? `; 0 = ${o.kind.zeroMeans}` : "";
      return `${o.kind.powerOfTwo ? "power of two, " : ""}${range}${zero}`;
    }
    case "boolean":
      return "flag";
    case "backend":
      return "`uring`, `epoll`, `auto`";
    case "host":
      return "IPv4/IPv6 literal or `localhost`";
    case "cpus":
      return "CPUs this process may use: `0,1` or `0-3` (CLI), `[0, 1]` (API)";
  }
}

function shownDefault(o: OptionSpec): string {
  if (o.default === undefined) return "no pinning";
  if (o.default === false) return "off";
  return typeof o.default === "string" ? `\`${o.default}\`` : String(o.default);
}

/** The table, one row per option. */
export function optionsMarkdown(): string {
  const rows = OPTION_TABLE.map((o: OptionSpec) => {
    const flag = `\`${o.flag}${o.valueName && o.kind.type !== "backend" ? ` ${o.valueName}` : ""}\``;
    return `| ${flag} | \`${o.name}\` | ${allowed(o)} | ${shownDefault(o)} | ${o.help} |`;
  });
  const rules = `Together: ${OPTION_RULES.map((r) => r.text).join("; ")}.`;
  return ["| flag | serve() option | allowed | default | meaning |", "|---|---|---|---|---|", ...rows, "", rules].join("\n");
}

/** The README with its option table replaced by the current one. */
export function readmeWithOptions(readme: string): string {
  const a = readme.indexOf(BEGIN);
  const b = readme.indexOf(END);
  if (a < 0 || b < a) throw new Error(`README.md has no ${BEGIN} ... ${END} block`);
  return `${readme.slice(0, a + BEGIN.length)}\n\n${optionsMarkdown()}\n\n${readme.slice(b)}`;
}

if (import.meta.main) {
  const readme = readFileSync(README_PATH, "utf8");
  const next = readmeWithOptions(readme);
  if (process.argv.includes("--check")) {
    if (next !== readme) {
      process.stderr.write("README.md's option table is out of date: run `bun run docs:options`\n");
      process.exit(1);
    }
  } else {
    writeFileSync(README_PATH, next);
  }
}
