// flags.ts — strict command-line parsing shared by the three command lines (server, client, bench):
// node:util parseArgs, plus two things it does not do. A value that starts with a dash is taken
// after a flag that needs one (`--port -1` reads as `--port=-1`, so the flag's own check can say
// what is wrong with -1), and parseArgs' own errors, which span several lines, become one line
// naming the flag. Every usage problem is a UsageError; callers print it and exit 2.
import { parseArgs } from "node:util";

export class UsageError extends Error {}

type FlagSpec = { type: "string" | "boolean"; short?: string; multiple?: boolean };
type FlagSpecs = Record<string, FlagSpec>;

/** Long form of a flag that takes a value, for `--name` or its `-x` short form; else undefined. */
function valueFlag(arg: string, specs: FlagSpecs): string | undefined {
  if (arg.startsWith("--") && !arg.includes("=")) {
    const name = arg.slice(2);
    return specs[name]?.type === "string" ? name : undefined;
  }
  if (/^-[^-]$/.test(arg)) {
    const entry = Object.entries(specs).find(([, s]) => s.short === arg[1]);
    return entry && entry[1].type === "string" ? entry[0] : undefined;
  }
  return undefined;
}

function joinDashValues(argv: string[], specs: FlagSpecs): string[] {
  const out: string[] = [];
  const shorts = new Set(Object.values(specs).map((s) => `-${s.short}`));
  for (let i = 0; i < argv.length; i++) {
    const name = valueFlag(argv[i]!, specs);
    const next = argv[i + 1];
    // "-1", "-abc": a value. "--x" or a known short flag: the value is missing (parseArgs says so).
    if (name !== undefined && next !== undefined && next.startsWith("-") && !next.startsWith("--") && !shorts.has(next)) {
      out.push(`--${name}=${next}`);
      i++;
    } else {
      out.push(argv[i]!);
    }
  }
  return out;
}

function oneLine(e: Error & { code?: string }, specs: FlagSpecs): string | undefined {
  if (typeof e.code !== "string" || !e.code.startsWith("ERR_PARSE_ARGS_")) return undefined;
  // "Option '-n, --number <value>' ...": name the long form.
  const flag = /'(?:-[^-' ], )?(-{1,2}[^' ,]+)/.exec(e.message)?.[1] ?? "a flag";
  if (e.code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
    return `unknown flag ${flag}; flags are ${Object.keys(specs).map((n) => `--${n}`).join(", ")}`;
  }
  if (/does not take an argument/.test(e.message)) return `${flag} takes no value`;
  if (e.code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") return `${flag} needs a value`;
  return e.message.split("\n")[0];
}

/** parseArgs (strict, positionals allowed so the caller can name a stray one) with one-line errors. */
export function parseFlags<T extends FlagSpecs>(argv: string[], options: T) {
  try {
    return parseArgs({ args: joinDashValues(argv, options), strict: true, allowPositionals: true, options });
  } catch (e) {
    const message = oneLine(e as Error, options);
    throw message === undefined ? e : new UsageError(message);
  }
}

/**
 * A whole number as typed: digits only, exact (at most 2^53 - 1), within [min, max]; else a
 * UsageError naming the flag, what is allowed (`allowed`, by default "an integer from min to max")
 * and the value as typed (so 1e23 is shown as typed, not as 1e+23).
 */
export function integerFlag(flag: string, raw: string, min: number, max: number, allowed?: string): number {
  const value = /^\d+$/.test(raw) ? Number(raw) : Number.NaN;
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new UsageError(`${flag} must be ${allowed ?? `an integer from ${min} to ${max}`}, got ${JSON.stringify(raw)}`);
  }
  return value;
}

/** A number of seconds as typed ("2", "0.5"), within [minS, maxS], returned in whole milliseconds. */
export function secondsFlag(flag: string, raw: string, minS: number, maxS: number): number {
  const value = /^\d+(\.\d+)?$/.test(raw) ? Number(raw) : Number.NaN;
  if (!(value >= minS && value <= maxS)) {
    throw new UsageError(`${flag} must be a number of seconds from ${minS} to ${maxS}, got ${JSON.stringify(raw)}`);
  }
  return Math.round(value * 1000);
}
