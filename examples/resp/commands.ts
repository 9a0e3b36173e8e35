// commands.ts — the key-value store and the command table of the RESP example server: strings only,
// one database. A command is looked up case-insensitively, its arity checked, then it runs and
// writes its reply. Replies and error words are redis-server's (7.0 for errors; HELLO, CONFIG GET
// and COMMAND answer as redis-server 6.2 does over RESP2), so clients and tools see what they expect.
//
// Keys are the arguments' bytes decoded as latin1 (one character per byte, so any byte string is a
// key and comes back unchanged); values are the argument arrays the parser handed out (its own
// copies), stored as they are and never changed in place (INCR stores a new array), so a reply may
// hold a reference to a value while it waits to be written. Keys with a time to live expire when
// they are next looked at, and a few are swept every COMMANDS_PER_SWEEP commands.
import type { ReplyBuffer } from "./reply.ts";

/** The redis-server version HELLO and INFO report (the one whose RESP2 replies are followed). */
export const REDIS_VERSION = "6.2.0";

const INT64_MAX = (1n << 63n) - 1n;
const INT64_MIN = -(1n << 63n);
/** Every this many commands, up to SWEEP_BUDGET keys with a time to live are checked for expiry. */
const COMMANDS_PER_SWEEP = 1024;
const SWEEP_BUDGET = 64;

/** The data: one database of string keys. Shared by every connection of a server. */
export interface Store {
  readonly values: Map<string, Uint8Array>;
  /** When a key expires (ms, on the `now` clock), for keys that have a time to live. */
  readonly expires: Map<string, number>;
  /** What CONFIG GET reports and CONFIG SET changes (informational: nothing reads it). */
  readonly config: Map<string, string>;
  /** The clock, in ms. */
  readonly now: () => number;
  nextClientId: number;
  sinceSweep: number;
  sweep: Iterator<[string, number]> | null;
}

/** A new, empty store. `now` replaces the clock (ms), for tests. */
export function createStore(options: { now?: () => number } = {}): Store {
  return {
    values: new Map(),
    expires: new Map(),
    config: new Map([
      ["save", ""],
      ["appendonly", "no"],
      ["databases", "1"],
      ["maxmemory", "0"],
      ["maxmemory-policy", "noeviction"],
      ["proto-max-bulk-len", "536870912"],
      ["timeout", "0"],
    ]),
    now: options.now ?? Date.now,
    nextClientId: 1,
    sinceSweep: 0,
    sweep: null,
  };
}

/** One connection's state as the commands see it. */
export interface Session {
  readonly id: number;
  /** CLIENT SETNAME / HELLO SETNAME. */
  name: string | null;
  /** QUIT was run: close the connection once the replies so far are written. */
  closeAfterReply: boolean;
  /** Between MULTI and EXEC: the commands queued; else null. */
  multi: Uint8Array[][] | null;
  /** A command queued after MULTI was refused (unknown, wrong arity): EXEC discards the transaction. */
  multiFailed: boolean;
}

export function createSession(store: Store): Session {
  return { id: store.nextClientId++, name: null, closeAfterReply: false, multi: null, multiFailed: false };
}

/** Bytes as a latin1 string (one character per byte). */
export function latin1(b: Uint8Array): string {
  // Short ones (command names, most keys) byte by byte: reading `.buffer` of a small array the parser
  // just made has JSC move its bytes out of the GC heap first, which cost more than the rest of a GET.
  if (b.length <= 32) {
    let s = "";
    for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]!);
    return s;
  }
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("latin1");
}

function bytesOf(s: string): Uint8Array {
  return Buffer.from(s, "latin1");
}

/** What C's "%.Ns" prints of a string: up to its first NUL, at most `max` characters. */
function cstr(s: string, max: number): string {
  const nul = s.indexOf("\0");
  return (nul < 0 ? s : s.slice(0, nul)).slice(0, max);
}

/** A whole int64 as redis-server's string2ll reads it (no sign "+", no leading zero, no spaces), else null. */
export function parseInt64(b: Uint8Array): bigint | null {
  const n = b.length;
  if (n === 0 || n > 20) return null;
  if (n === 1 && b[0] === 48) return 0n;
  let i = b[0] === 45 ? 1 : 0;
  if (i >= n || b[i]! < 49 || b[i]! > 57) return null;
  for (i++; i < n; i++) if (b[i]! < 48 || b[i]! > 57) return null;
  const v = BigInt(latin1(b));
  return v > INT64_MAX || v < INT64_MIN ? null : v;
}

/** The value of a key, or undefined when it is missing or expired (then it is deleted). */
function lookup(store: Store, key: string): Uint8Array | undefined {
  const value = store.values.get(key);
  if (value === undefined || store.expires.size === 0) return value;
  const at = store.expires.get(key);
  if (at !== undefined && at < store.now()) {
    store.values.delete(key);
    store.expires.delete(key);
    return undefined;
  }
  return value;
}

function removeExpired(store: Store, budget: number): void {
  if (store.expires.size === 0) return;
  const now = store.now();
  store.sweep ??= store.expires.entries();
  for (let i = 0; i < budget; i++) {
    const r = store.sweep.next();
    if (r.done) {
      store.sweep = null;
      return;
    }
    const [key, at] = r.value;
    if (at < now) {
      store.values.delete(key);
      store.expires.delete(key);
    }
  }
}

/** What a command's run() gets. */
interface Call {
  readonly store: Store;
  readonly session: Session;
  readonly args: Uint8Array[];
  readonly out: ReplyBuffer;
}

interface CommandSpec {
  /** Lowercase, "container|sub" for a subcommand (as redis-server names it in errors). */
  readonly name: string;
  /** n > 0: exactly n arguments (the name included); n < 0: at least -n. */
  readonly arity: number;
  /** For COMMAND's replies. */
  readonly flags: readonly string[];
  readonly categories: readonly string[];
  readonly keys: readonly [first: number, last: number, step: number];
  readonly run: (c: Call) => void;
  readonly subcommands?: ReadonlyMap<string, CommandSpec>;
}

const NOT_INTEGER = "ERR value is not an integer or out of range";
const SYNTAX = "ERR syntax error";
const CLIENT_NAME_CHARS = "Client names cannot contain spaces, newlines or special characters.";

function arityError(name: string): string {
  return `ERR wrong number of arguments for '${name}' command`;
}

function invalidExpire(name: string): string {
  return `ERR invalid expire time in '${name}' command`;
}

/** Each key argument as a string. */
function keysOf(args: Uint8Array[], from: number, step = 1): string[] {
  const keys: string[] = [];
  for (let i = from; i < args.length; i += step) keys.push(latin1(args[i]!));
  return keys;
}

/** A name redis-server accepts for a client: printable ASCII without spaces. */
function printable(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 33 || c > 126) return false;
  }
  return true;
}

// --- strings and keys ---

function set({ store, args, out }: Call): void {
  let nx = false;
  let xx = false;
  let get = false;
  let keepTtl = false;
  let expireKind: "ex" | "px" | "exat" | "pxat" | null = null;
  let expireArg: Uint8Array | undefined;
  for (let j = 3; j < args.length; j++) {
    const opt = latin1(args[j]!).toLowerCase();
    const hasNext = j < args.length - 1;
    if (opt === "nx" && !xx) nx = true;
    else if (opt === "xx" && !nx) xx = true;
    else if (opt === "get") get = true;
    else if (opt === "keepttl" && expireKind === null) keepTtl = true;
    else if ((opt === "ex" || opt === "px" || opt === "exat" || opt === "pxat") && !keepTtl && (expireKind === null || expireKind === opt) && hasNext) {
      expireKind = opt;
      expireArg = args[++j];
    } else {
      out.error(SYNTAX);
      return;
    }
  }
  let at: number | undefined;
  if (expireKind !== null) {
    let ms = parseInt64(expireArg!);
    if (ms === null) {
      out.error(NOT_INTEGER);
      return;
    }
    const seconds = expireKind === "ex" || expireKind === "exat";
    if (ms <= 0n || (seconds && ms > INT64_MAX / 1000n)) {
      out.error(invalidExpire("set"));
      return;
    }
    if (seconds) ms *= 1000n;
    if (expireKind === "ex" || expireKind === "px") ms += BigInt(store.now());
    if (ms > INT64_MAX) {
      out.error(invalidExpire("set"));
      return;
    }
    at = Number(ms);
  }
  const key = latin1(args[1]!);
  const old = lookup(store, key);
  if (get) out.bulk(old ?? null);
  if ((nx && old !== undefined) || (xx && old === undefined)) {
    if (!get) out.bulk(null);
    return;
  }
  store.values.set(key, args[2]!);
  if (at !== undefined) store.expires.set(key, at);
  else if (!keepTtl) store.expires.delete(key);
  if (!get) out.simple("OK");
}

function incrBy(c: Call, delta: bigint): void {
  const { store, out } = c;
  const key = latin1(c.args[1]!);
  const current = lookup(store, key);
  let n = 0n;
  if (current !== undefined) {
    const v = parseInt64(current);
    if (v === null) {
      out.error(NOT_INTEGER);
      return;
    }
    n = v;
  }
  const r = n + delta;
  if (r > INT64_MAX || r < INT64_MIN) {
    out.error("ERR increment or decrement would overflow");
    return;
  }
  store.values.set(key, bytesOf(r.toString())); // the time to live stays
  out.integer(r);
}

function incrByArg(c: Call, sign: 1n | -1n): void {
  const by = parseInt64(c.args[2]!);
  if (by === null) {
    c.out.error(NOT_INTEGER);
    return;
  }
  if (sign < 0n && by === INT64_MIN) {
    c.out.error("ERR decrement would overflow");
    return;
  }
  incrBy(c, sign * by);
}

/** EXPIRE / PEXPIRE key time [NX | XX | GT | LT]. */
function expire(c: Call, name: string, unitMs: 1000n | 1n): void {
  const { store, args, out } = c;
  let nx = false;
  let xx = false;
  let gt = false;
  let lt = false;
  for (let j = 3; j < args.length; j++) {
    const opt = latin1(args[j]!);
    const o = opt.toLowerCase();
    if (o === "nx") nx = true;
    else if (o === "xx") xx = true;
    else if (o === "gt") gt = true;
    else if (o === "lt") lt = true;
    else {
      out.error(`ERR Unsupported option ${cstr(opt, Infinity)}`);
      return;
    }
  }
  if (nx && (xx || gt || lt)) {
    out.error("ERR NX and XX, GT or LT options at the same time are not compatible");
    return;
  }
  if (gt && lt) {
    out.error("ERR GT and LT options at the same time are not compatible");
    return;
  }
  let when = parseInt64(args[2]!);
  if (when === null) {
    out.error(NOT_INTEGER);
    return;
  }
  if (unitMs === 1000n) {
    if (when > INT64_MAX / 1000n || when < INT64_MIN / 1000n) {
      out.error(invalidExpire(name));
      return;
    }
    when *= 1000n;
  }
  const now = store.now();
  if (when > INT64_MAX - BigInt(now)) {
    out.error(invalidExpire(name));
    return;
  }
  when += BigInt(now);
  const key = latin1(args[1]!);
  if (lookup(store, key) === undefined) {
    out.integer(0);
    return;
  }
  const current = store.expires.get(key);
  const at = Number(when);
  if (
    (nx && current !== undefined) ||
    (xx && current === undefined) ||
    (gt && (current === undefined || at <= current)) ||
    (lt && current !== undefined && at >= current)
  ) {
    out.integer(0);
    return;
  }
  if (at <= now) {
    store.values.delete(key);
    store.expires.delete(key);
  } else {
    store.expires.set(key, at);
  }
  out.integer(1);
}

function ttl(c: Call, inMs: boolean): void {
  const { store, out } = c;
  const key = latin1(c.args[1]!);
  if (lookup(store, key) === undefined) {
    out.integer(-2);
    return;
  }
  const at = store.expires.get(key);
  if (at === undefined) {
    out.integer(-1);
    return;
  }
  const left = Math.max(0, at - store.now());
  out.integer(inMs ? left : Math.floor((left + 500) / 1000));
}

function flush(c: Call): void {
  const { store, args, out } = c;
  if (args.length > 2 || (args.length === 2 && !["sync", "async"].includes(latin1(args[1]!).toLowerCase()))) {
    out.error(SYNTAX);
    return;
  }
  store.values.clear();
  store.expires.clear();
  store.sweep = null;
  out.simple("OK");
}

function dbsize({ store, out }: Call): void {
  if (store.expires.size > 0) {
    store.sweep = null;
    removeExpired(store, Infinity);
  }
  out.integer(store.values.size);
}

// --- connection and server ---

/** The default user has no password: AUTH default <anything> is accepted, as redis-server's nopass user. */
function checkUser(user: string): string | null {
  return user === "default" ? null : "WRONGPASS invalid username-password pair or user is disabled.";
}

function auth({ args, out }: Call): void {
  if (args.length > 3) out.error(SYNTAX);
  else if (args.length === 2) {
    out.error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
  } else {
    const err = checkUser(latin1(args[1]!));
    if (err) out.error(err);
    else out.simple("OK");
  }
}

/** HELLO [protover [AUTH username password] [SETNAME clientname]]: RESP2 only, answered as redis-server 6.2 does. */
function hello({ session, args, out }: Call): void {
  let j = 1;
  if (args.length >= 2) {
    const version = parseInt64(args[1]!);
    if (version === null) {
      out.error("ERR Protocol version is not an integer or out of range");
      return;
    }
    if (version !== 2n) {
      out.error("NOPROTO unsupported protocol version");
      return;
    }
    j = 2;
  }
  let name: string | undefined;
  for (; j < args.length; j++) {
    const opt = latin1(args[j]!);
    const more = args.length - 1 - j;
    if (opt.toLowerCase() === "auth" && more >= 2) {
      const err = checkUser(latin1(args[j + 1]!));
      if (err) {
        out.error(err);
        return;
      }
      j += 2;
    } else if (opt.toLowerCase() === "setname" && more >= 1) {
      name = latin1(args[++j]!);
      if (!printable(name)) {
        out.error(`ERR ${CLIENT_NAME_CHARS}`);
        return;
      }
    } else {
      out.error(`ERR Syntax error in HELLO option '${cstr(opt, Infinity)}'`);
      return;
    }
  }
  if (name !== undefined) session.name = name === "" ? null : name;
  out.array(14);
  out.bulkText("server");
  out.bulkText("redis");
  out.bulkText("version");
  out.bulkText(REDIS_VERSION);
  out.bulkText("proto");
  out.integer(2);
  out.bulkText("id");
  out.integer(session.id);
  out.bulkText("mode");
  out.bulkText("standalone");
  out.bulkText("role");
  out.bulkText("master");
  out.bulkText("modules");
  out.array(0);
}

function select({ args, out }: Call): void {
  const id = parseInt64(args[1]!);
  if (id === null) out.error(NOT_INTEGER);
  else if (id > 2147483647n || id < -2147483648n) out.error("ERR value is out of range, value must between -2147483648 and 2147483647");
  else if (id !== 0n) out.error("ERR DB index is out of range");
  else out.simple("OK");
}

function info({ store, out }: Call): void {
  const lines = [
    "# Server",
    `redis_version:${REDIS_VERSION}`,
    "redis_mode:standalone",
    "server_name:bunring-resp",
    `process_id:${process.pid}`,
    "",
    "# Keyspace",
  ];
  if (store.values.size > 0) lines.push(`db0:keys=${store.values.size},expires=${store.expires.size},avg_ttl=0`);
  out.bulkText(`${lines.join("\r\n")}\r\n`);
}

/** redis-server's stringmatchlen, case-insensitive (both sides are lowercased by the caller). */
function globMatch(p: string, pi: number, s: string, si: number): boolean {
  while (pi < p.length) {
    const c = p[pi]!;
    if (c === "*") {
      while (p[pi + 1] === "*") pi++;
      if (pi + 1 === p.length) return true;
      for (let k = si; k <= s.length; k++) if (globMatch(p, pi + 1, s, k)) return true;
      return false;
    }
    if (si >= s.length) return false;
    if (c === "?") {
      pi++;
      si++;
      continue;
    }
    if (c === "[") {
      pi++;
      const not = p[pi] === "^";
      if (not) pi++;
      let hit = false;
      for (;;) {
        if (pi >= p.length) {
          pi = p.length - 1;
          break;
        }
        if (p[pi] === "\\" && pi + 1 < p.length) {
          pi++;
          if (p[pi] === s[si]) hit = true;
        } else if (p[pi] === "]") {
          break;
        } else if (p[pi + 1] === "-" && pi + 2 < p.length) {
          let lo = p[pi]!;
          let hi = p[pi + 2]!;
          if (lo > hi) [lo, hi] = [hi, lo];
          if (s[si]! >= lo && s[si]! <= hi) hit = true;
          pi += 2;
        } else if (p[pi] === s[si]) {
          hit = true;
        }
        pi++;
      }
      if (not) hit = !hit;
      if (!hit) return false;
      pi++;
      si++;
      continue;
    }
    if (c === "\\" && pi + 1 < p.length) pi++;
    if (p[pi] !== s[si]) return false;
    pi++;
    si++;
  }
  return si === s.length;
}

function configGet({ store, args, out }: Call): void {
  const patterns = keysOf(args, 2).map((p) => p.toLowerCase());
  const hits = [...store.config].filter(([name]) => patterns.some((p) => globMatch(p, 0, name, 0)));
  out.array(hits.length * 2);
  for (const [name, value] of hits) {
    out.bulkText(name);
    out.bulkText(value);
  }
}

function configSet({ store, args, out }: Call): void {
  if (args.length % 2 !== 0) {
    out.error(arityError("config|set"));
    return;
  }
  const pairs: [string, string][] = [];
  for (let j = 2; j < args.length; j += 2) {
    const name = latin1(args[j]!).toLowerCase();
    if (!store.config.has(name)) {
      out.error(`ERR Unknown option or number of arguments for CONFIG SET - '${cstr(latin1(args[j]!), Infinity)}'`);
      return;
    }
    pairs.push([name, latin1(args[j + 1]!)]);
  }
  for (const [name, value] of pairs) store.config.set(name, value);
  out.simple("OK");
}

function clientSetName({ session, args, out }: Call): void {
  const name = latin1(args[2]!);
  if (!printable(name)) {
    out.error(`ERR ${CLIENT_NAME_CHARS}`);
    return;
  }
  session.name = name === "" ? null : name;
  out.simple("OK");
}

function clientSetInfo({ args, out }: Call): void {
  const attr = latin1(args[2]!);
  if (!["lib-name", "lib-ver"].includes(attr.toLowerCase())) {
    out.error(`ERR Unrecognized option '${cstr(attr, Infinity)}'`);
    return;
  }
  if (!printable(latin1(args[3]!))) {
    out.error(`ERR ${cstr(attr, Infinity)} cannot contain spaces, newlines or special characters.`);
    return;
  }
  out.simple("OK");
}

/** A command's entry in COMMAND's replies, as redis-server 6.2 gives it. */
function commandInfo(out: ReplyBuffer, spec: CommandSpec): void {
  out.array(7);
  out.bulkText(spec.name);
  out.integer(spec.arity);
  out.array(spec.flags.length);
  for (const f of spec.flags) out.simple(f);
  out.integer(spec.keys[0]);
  out.integer(spec.keys[1]);
  out.integer(spec.keys[2]);
  out.array(spec.categories.length);
  for (const cat of spec.categories) out.simple(cat);
}

function commandAll({ out }: Call): void {
  out.array(COMMANDS.size);
  for (const spec of COMMANDS.values()) commandInfo(out, spec);
}

function commandInfoCmd(c: Call): void {
  if (c.args.length === 2) {
    commandAll(c);
    return;
  }
  c.out.array(c.args.length - 2);
  for (const name of keysOf(c.args, 2)) {
    const spec = COMMANDS.get(name.toLowerCase());
    if (spec) commandInfo(c.out, spec);
    else c.out.bulk(null);
  }
}

function commandList({ args, out }: Call): void {
  if (args.length > 2) {
    out.error(SYNTAX);
    return;
  }
  out.array(COMMANDS.size);
  for (const name of COMMANDS.keys()) out.bulkText(name);
}

// --- transactions: one thread runs every command, so a queued batch runs as one ---

function multi({ session, out }: Call): void {
  if (session.multi !== null) {
    out.error("ERR MULTI calls can not be nested");
    return;
  }
  session.multi = [];
  session.multiFailed = false;
  out.simple("OK");
}

function exec({ store, session, out }: Call): void {
  const queued = session.multi;
  if (queued === null) {
    out.error("ERR EXEC without MULTI");
    return;
  }
  session.multi = null;
  if (session.multiFailed) {
    out.error("EXECABORT Transaction discarded because of previous errors.");
    return;
  }
  out.array(queued.length);
  for (const args of queued) {
    const command = resolve(args);
    if (typeof command === "string") out.error(command);
    else command.run({ store, session, args, out });
  }
}

function discard({ session, out }: Call): void {
  if (session.multi === null) {
    out.error("ERR DISCARD without MULTI");
    return;
  }
  session.multi = null;
  out.simple("OK");
}

/** Commands that run at once between MULTI and EXEC instead of being queued. */
const NOT_QUEUED = new Set(["multi", "exec", "discard", "quit"]);

// --- the table ---

type Group = "string" | "keyspace" | "connection" | "server";

function spec(
  name: string,
  arity: number,
  flags: string,
  group: Group,
  keys: readonly [number, number, number],
  run: (c: Call) => void,
  subcommands?: CommandSpec[],
): CommandSpec {
  const fl = flags.split(" ").filter(Boolean);
  const categories = [`@${group}`];
  if (fl.includes("write")) categories.push("@write");
  if (fl.includes("readonly")) categories.push("@read");
  if (fl.includes("fast")) categories.push("@fast");
  return {
    name,
    arity,
    flags: fl,
    categories,
    keys,
    run,
    subcommands: subcommands && new Map(subcommands.map((s) => [s.name.slice(s.name.indexOf("|") + 1), s])),
  };
}

const NO_KEYS = [0, 0, 0] as const;
const KEY1 = [1, 1, 1] as const;
const ALL_KEYS = [1, -1, 1] as const;

const TABLE: CommandSpec[] = [
  spec("ping", -1, "fast stale", "connection", NO_KEYS, ({ args, out }) => {
    if (args.length > 2) out.error(arityError("ping"));
    else if (args.length === 2) out.bulk(args[1]!);
    else out.simple("PONG");
  }),
  spec("echo", 2, "fast", "connection", NO_KEYS, ({ args, out }) => out.bulk(args[1]!)),
  spec("set", -3, "write denyoom", "string", KEY1, set),
  spec("get", 2, "readonly fast", "string", KEY1, ({ store, args, out }) => out.bulk(lookup(store, latin1(args[1]!)) ?? null)),
  spec("del", -2, "write", "keyspace", ALL_KEYS, ({ store, args, out }) => {
    let n = 0;
    for (const key of keysOf(args, 1)) {
      if (lookup(store, key) === undefined) continue;
      store.values.delete(key);
      store.expires.delete(key);
      n++;
    }
    out.integer(n);
  }),
  spec("exists", -2, "readonly fast", "keyspace", ALL_KEYS, ({ store, args, out }) => {
    let n = 0;
    for (const key of keysOf(args, 1)) if (lookup(store, key) !== undefined) n++;
    out.integer(n);
  }),
  spec("incr", 2, "write denyoom fast", "string", KEY1, (c) => incrBy(c, 1n)),
  spec("decr", 2, "write denyoom fast", "string", KEY1, (c) => incrBy(c, -1n)),
  spec("incrby", 3, "write denyoom fast", "string", KEY1, (c) => incrByArg(c, 1n)),
  spec("decrby", 3, "write denyoom fast", "string", KEY1, (c) => incrByArg(c, -1n)),
  spec("mget", -2, "readonly fast", "string", ALL_KEYS, ({ store, args, out }) => {
    out.array(args.length - 1);
    for (const key of keysOf(args, 1)) out.bulk(lookup(store, key) ?? null);
  }),
  spec("mset", -3, "write denyoom", "string", [1, -1, 2], ({ store, args, out }) => {
    if (args.length % 2 === 0) {
      out.error(arityError("mset"));
      return;
    }
    for (let j = 1; j < args.length; j += 2) {
      const key = latin1(args[j]!);
      store.values.set(key, args[j + 1]!);
      store.expires.delete(key);
    }
    out.simple("OK");
  }),
  spec("strlen", 2, "readonly fast", "string", KEY1, ({ store, args, out }) => out.integer(lookup(store, latin1(args[1]!))?.length ?? 0)),
  spec("type", 2, "readonly fast", "keyspace", KEY1, ({ store, args, out }) =>
    out.simple(lookup(store, latin1(args[1]!)) === undefined ? "none" : "string"),
  ),
  spec("expire", -3, "write fast", "keyspace", KEY1, (c) => expire(c, "expire", 1000n)),
  spec("pexpire", -3, "write fast", "keyspace", KEY1, (c) => expire(c, "pexpire", 1n)),
  spec("ttl", 2, "readonly random fast", "keyspace", KEY1, (c) => ttl(c, false)),
  spec("pttl", 2, "readonly random fast", "keyspace", KEY1, (c) => ttl(c, true)),
  spec("persist", 2, "write fast", "keyspace", KEY1, ({ store, args, out }) => {
    const key = latin1(args[1]!);
    out.integer(lookup(store, key) !== undefined && store.expires.delete(key) ? 1 : 0);
  }),
  spec("dbsize", 1, "readonly fast", "keyspace", NO_KEYS, dbsize),
  spec("flushall", -1, "write", "keyspace", NO_KEYS, flush),
  spec("flushdb", -1, "write", "keyspace", NO_KEYS, flush),
  spec("select", 2, "loading stale fast", "connection", NO_KEYS, select),
  spec("auth", -2, "noscript loading stale fast no_auth", "connection", NO_KEYS, auth),
  spec("hello", -1, "noscript loading stale fast no_auth", "connection", NO_KEYS, hello),
  spec("quit", -1, "loading stale fast no_auth", "connection", NO_KEYS, ({ session, out }) => {
    session.closeAfterReply = true;
    out.simple("OK");
  }),
  spec("multi", 1, "noscript loading stale fast", "connection", NO_KEYS, multi),
  spec("exec", 1, "noscript loading stale skip_slowlog", "connection", NO_KEYS, exec),
  spec("discard", 1, "noscript loading stale fast", "connection", NO_KEYS, discard),
  spec("info", -1, "loading stale", "server", NO_KEYS, info),
  spec("command", -1, "loading stale", "connection", NO_KEYS, commandAll, [
    spec("command|count", 2, "loading stale", "connection", NO_KEYS, ({ out }) => out.integer(COMMANDS.size)),
    spec("command|info", -2, "loading stale", "connection", NO_KEYS, commandInfoCmd),
    spec("command|docs", -2, "loading stale", "connection", NO_KEYS, ({ out }) => out.array(0)),
    spec("command|list", -2, "loading stale", "connection", NO_KEYS, commandList),
  ]),
  spec("config", -2, "", "server", NO_KEYS, () => undefined, [
    spec("config|get", -3, "admin noscript loading stale", "server", NO_KEYS, configGet),
    spec("config|set", -4, "admin noscript loading stale", "server", NO_KEYS, configSet),
    spec("config|resetstat", 2, "admin noscript loading stale", "server", NO_KEYS, ({ out }) => out.simple("OK")),
  ]),
  spec("client", -2, "", "connection", NO_KEYS, () => undefined, [
    spec("client|setname", 3, "noscript loading stale", "connection", NO_KEYS, clientSetName),
    spec("client|getname", 2, "noscript loading stale", "connection", NO_KEYS, ({ session, out }) =>
      session.name === null ? out.bulk(null) : out.bulkText(session.name),
    ),
    spec("client|id", 2, "noscript loading stale", "connection", NO_KEYS, ({ session, out }) => out.integer(session.id)),
    spec("client|setinfo", 4, "noscript loading stale", "connection", NO_KEYS, clientSetInfo),
  ]),
];

/** The commands by lowercase name. */
export const COMMANDS: ReadonlyMap<string, CommandSpec> = new Map(TABLE.map((s) => [s.name, s]));

/** The command `args` name (a subcommand for a container), or the error reply when there is none or the arity is wrong. */
function resolve(args: Uint8Array[]): CommandSpec | string {
  const typed = latin1(args[0]!);
  let command = COMMANDS.get(typed.toLowerCase());
  if (command === undefined) {
    let list = "";
    for (let i = 1; i < args.length && list.length < 128; i++) list += `'${cstr(latin1(args[i]!), 128 - list.length)}' `;
    return `ERR unknown command '${cstr(typed, 128)}', with args beginning with: ${list}`;
  }
  if (command.subcommands && args.length >= 2) {
    const sub = command.subcommands.get(latin1(args[1]!).toLowerCase());
    if (sub === undefined) return `ERR unknown subcommand '${cstr(latin1(args[1]!), 128)}'. Try ${command.name.toUpperCase()} HELP.`;
    command = sub;
  }
  if (command.arity > 0 ? args.length !== command.arity : args.length < -command.arity) return arityError(command.name);
  return command;
}

/**
 * Runs one command (its arguments, the name first) and writes its reply to `out`; after MULTI,
 * queues it instead (+QUEUED). The arguments are kept by the store as they are (SET stores
 * args[2]): the caller must not reuse them.
 */
export function execute(store: Store, session: Session, args: Uint8Array[], out: ReplyBuffer): void {
  if (++store.sinceSweep >= COMMANDS_PER_SWEEP) {
    store.sinceSweep = 0;
    removeExpired(store, SWEEP_BUDGET);
  }
  const command = resolve(args);
  if (session.multi !== null && (typeof command === "string" || !NOT_QUEUED.has(command.name))) {
    if (typeof command === "string") {
      session.multiFailed = true;
      out.error(command);
    } else {
      session.multi.push(args);
      out.simple("QUEUED");
    }
    return;
  }
  if (typeof command === "string") out.error(command);
  else command.run({ store, session, args, out });
}
