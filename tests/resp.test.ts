// resp.test.ts — examples/resp-server.ts, the Redis-protocol server written as socket handlers, on
// listen() with both backends. Real clients: redis-cli (skipped with the reason when it is not
// installed) and the npm `redis` client (node-redis: its connect handshake, a 1 MiB value, a MULTI
// batch and an automatically pipelined one, QUIT). Raw sockets: inline commands, 1,000 pipelined
// commands, a 32 MiB value arriving in random pieces, and a client that sends many GETs of 1 MiB
// values without reading (the server queues, pauses and resumes; every reply arrives whole and in
// order). A fast-check property: any input cut at random points gives the same replies as the same
// input in one piece, checked on the parser directly and through the server. The parser's work stays
// linear however its input is cut; the handlers give the same bytes on Bun.listen; the script starts,
// answers and stops, and rejects a bad flag with exit 2. Every wait is on a condition with a deadline.
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import fc from "fast-check";
import net from "node:net";
import { resolve } from "node:path";
import { createClient } from "redis";
import { createRespHandler, createStore, FLUSH_BYTES, type RespConnection, type RespSocket } from "../examples/resp-server.ts";
import { createSession, execute, type Store } from "../examples/resp/commands.ts";
import { BIG_ARG, parseAll, ProtocolError, RespParser, splitInline } from "../examples/resp/parser.ts";
import { ReplyBuffer } from "../examples/resp/reply.ts";
import { listen, type Listener } from "../src/index.ts";
import { exitOf, killIfRunning, REPO, runCli } from "./helpers/cli.ts";
import { Pattern, rng } from "./helpers/prng.ts";
import { MiB, testTimeout } from "./helpers/scale.ts";
import { BACKENDS, backendAvailable, type Backend, stopListenersAfterEach } from "./helpers/server.ts";
import { endOf } from "./helpers/sockets.ts";
import { waitFor, withTimeout } from "./helpers/wait.ts";

// bunfig.toml's [test] timeout is not applied by bun 1.4.5: set it here.
setDefaultTimeout(testTimeout(60_000, 600_000));

const REDIS_CLI = Bun.which("redis-cli");
if (!REDIS_CLI) console.warn("resp tests: redis-cli not found (apt-get install redis-tools); the redis-cli cases are skipped");

const live = stopListenersAfterEach();

/** A RESP server on listen() over a fresh store, on an ephemeral loopback port. */
function startResp(backend: Backend, socket?: ReturnType<typeof createRespHandler>, store = createStore()): { l: Listener; store: Store } {
  const l = listen<RespConnection>({
    port: 0,
    hostname: "127.0.0.1",
    backend,
    allowHalfOpen: true,
    socket: socket ?? createRespHandler(store),
  });
  live.add(l);
  return { l, store };
}

type Arg = string | Uint8Array;

const bytes = (a: Arg): Buffer => (typeof a === "string" ? Buffer.from(a, "latin1") : Buffer.from(a.buffer, a.byteOffset, a.byteLength));

/** A command as a RESP array of bulk strings. */
function resp(...args: Arg[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const a of args) {
    const b = bytes(a);
    parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from("\r\n"));
  }
  return Buffer.concat(parts);
}

const bulk = (v: Arg): Buffer => Buffer.concat([Buffer.from(`$${bytes(v).length}\r\n`), bytes(v), Buffer.from("\r\n")]);

/** Cuts `input` at the given points (any numbers; taken modulo its length, sorted, deduplicated). */
function cut(input: Uint8Array, points: number[]): Uint8Array[] {
  const at = [...new Set(points.map((p) => p % (input.length + 1)))].sort((a, b) => a - b);
  const pieces: Uint8Array[] = [];
  let from = 0;
  for (const p of [...at, input.length]) {
    if (p > from) pieces.push(input.subarray(from, p));
    from = Math.max(from, p);
  }
  return pieces;
}

/**
 * The replies the server's loop gives for `pieces` over a fresh store (fixed clock), without a
 * socket: feed each piece, run every complete command; a protocol error replies and stops.
 */
function repliesOf(pieces: Uint8Array[]): Buffer {
  const store = createStore({ now: () => 1_700_000_000_000 });
  const session = createSession(store);
  const parser = new RespParser();
  const out = new ReplyBuffer();
  const all: Uint8Array[] = [];
  for (const piece of pieces) {
    parser.push(piece);
    try {
      for (let args = parser.next(); args; args = parser.next()) {
        execute(store, session, args, out);
        if (session.closeAfterReply) break;
      }
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      out.error(`ERR ${e.message}`);
    }
    all.push(...out.take());
    if (parser.broken || session.closeAfterReply) break;
  }
  return Buffer.concat(all);
}

/**
 * Sends `pieces` on a new connection (each handed to the kernel before the next, with a pause now
 * and then so they arrive apart), then FIN; resolves with everything received until the server closed.
 */
async function exchange(port: number, pieces: Uint8Array[], ms = 20_000): Promise<Buffer> {
  const sock = net.connect({ port, host: "127.0.0.1" });
  sock.setNoDelay(true);
  const parts: Buffer[] = [];
  let got = 0;
  sock.on("data", (b: Buffer) => {
    parts.push(b);
    got += b.length;
  });
  const ended = endOf(sock);
  await withTimeout(new Promise((r) => sock.once("connect", r)), 10_000, "connect");
  for (let i = 0; i < pieces.length; i++) {
    await new Promise<void>((r) => sock.write(pieces[i]!, () => r()));
    if (i % 4 === 3) await Bun.sleep(1);
  }
  sock.end();
  const end = await withTimeout(ended, ms, () => `the server to answer and close (${got} bytes so far)`);
  expect(end.how).toBe("EOF");
  return Buffer.concat(parts);
}

/** Reads from `sock` until `n` bytes came (counting from now). */
function receive(sock: net.Socket, n: number, what: string, ms = 20_000): Promise<Buffer> {
  const parts: Buffer[] = [];
  let got = 0;
  return withTimeout(
    new Promise<Buffer>((done) => {
      const on = (b: Buffer) => {
        parts.push(b);
        got += b.length;
        if (got >= n) {
          sock.off("data", on);
          done(Buffer.concat(parts));
        }
      };
      sock.on("data", on);
    }),
    ms,
    () => `${what}: ${got}/${n} bytes`,
  );
}

async function connected(port: number): Promise<net.Socket> {
  const sock = net.connect({ port, host: "127.0.0.1" });
  sock.on("error", () => undefined);
  await withTimeout(new Promise((r) => sock.once("connect", r)), 10_000, "connect");
  return sock;
}

async function redisCli(port: number, ...args: string[]): Promise<string> {
  const proc = Bun.spawn([REDIS_CLI!, "-p", String(port), ...args], { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const [out, err] = await withTimeout(
    Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]),
    15_000,
    `redis-cli ${args.join(" ")}`,
  );
  expect(err).toBe("");
  return out;
}

// --- the property's input: commands whose replies depend only on what came before ---

const KEYS = ["a", "b", "c", "k\r\n\0\xff"];
const key = fc.constantFrom(...KEYS);
const bigValue = fc.integer({ min: BIG_ARG, max: BIG_ARG + 3000 }).map((n) => new Pattern(n).bytes(n));
const value = fc.oneof({ weight: 12, arbitrary: fc.uint8Array({ maxLength: 24 }) }, { weight: 1, arbitrary: bigValue });
const word = fc.stringMatching(/^[a-z0-9]{1,8}$/);
const command: fc.Arbitrary<Arg[]> = fc.oneof(
  fc.tuple(fc.constant("SET"), key, value),
  fc.tuple(fc.constant("SET"), key, value, fc.constantFrom("NX", "XX", "nx", "EX", "KEEPTTL")),
  fc.tuple(fc.constant("GET"), key),
  fc.tuple(fc.constant("get")),
  fc.tuple(fc.constant("DEL"), key, key),
  fc.tuple(fc.constant("EXISTS"), key, key, key),
  fc.tuple(fc.constantFrom("INCR", "DECR", "incr"), key),
  fc.tuple(fc.constant("SET"), key, fc.integer({ min: -3, max: 3 }).map(String)),
  fc.tuple(fc.constant("MGET"), key, key),
  fc.tuple(fc.constant("MSET"), key, value, key, value),
  fc.tuple(fc.constant("MSET"), key),
  fc.tuple(fc.constant("EXPIRE"), key, fc.constantFrom("1000", "-1", "x")),
  fc.tuple(fc.constant("TTL"), key),
  fc.tuple(fc.constant("PING")),
  fc.tuple(fc.constant("ECHO"), value),
  fc.tuple(fc.constant("DBSIZE")),
  fc.tuple(fc.constant("NOSUCH"), value),
  fc.tuple(fc.constant("MULTI")),
  fc.tuple(fc.constant("EXEC")),
);
/** A command as RESP, or inline when its arguments allow (printable words, maybe quoted). */
const encoded = fc.tuple(command, fc.boolean(), fc.constantFrom("\r\n", "\n")).map(([args, inline, eol]) => {
  const plain = args.every((a) => typeof a === "string" && /^[A-Za-z0-9-]+$/.test(a));
  return inline && plain ? Buffer.from(`${args.join(" ")}${eol}`) : resp(...args);
});
/** FLUSHALL first (for a server shared by the runs), then commands, sometimes a protocol error last. */
const session = fc
  .tuple(
    fc.array(fc.oneof({ weight: 6, arbitrary: encoded }, { weight: 1, arbitrary: word.map((w) => Buffer.from(`ECHO "${w} \\x41\\n"\r\nECHO '${w}'\r\n`)) }), {
      minLength: 1,
      maxLength: 40,
    }),
    fc.constantFrom("", "", "", "*1\r\n$x\r\n", "*2\r\n+PING\r\n", "set 'a\r\n", "*abc\r\n"),
  )
  .map(([cmds, tail]) => Buffer.concat([resp("FLUSHALL"), ...cmds, Buffer.from(tail)]));
const cuts = fc.array(fc.nat(), { maxLength: 30 });

describe("the parser", () => {
  test("splits inline requests as redis-server does: quotes, escapes, empty lines, unbalanced quotes", () => {
    const split = (s: string) => splitInline(Buffer.from(s, "latin1"), 0, s.length)?.map((a) => Buffer.from(a).toString("latin1")) ?? null;
    expect(split("SET  greeting   hello")).toEqual(["SET", "greeting", "hello"]);
    expect(split(`SET k "a b\\r\\n\\x41\\"" 'it\\'s'`)).toEqual(["SET", "k", "a b\r\nA\"", "it's"]);
    expect(split(`ECHO ""`)).toEqual(["ECHO", ""]);
    expect(split("   ")).toEqual([]);
    expect(split(`SET "a"b`)).toBeNull();
    expect(split(`SET 'a`)).toBeNull();
    expect(split(`SET "a`)).toBeNull();
    const { commands, error } = parseAll(Buffer.from("PING\r\n\r\nGET a\n*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\nset 'x\r\nPING\r\n"));
    expect(commands.map((c) => c.map((a) => Buffer.from(a).toString()))).toEqual([["PING"], ["GET", "a"], ["PING"]]);
    expect(error?.message).toBe("Protocol error: unbalanced quotes in request");
  });

  test("protocol errors are worded as redis-server words them, after the commands before them", () => {
    const errorOf = (s: string) => parseAll(Buffer.from(s)).error?.message;
    expect(errorOf("*1\r\n+PING\r\n")).toBe("Protocol error: expected '$', got '+'");
    expect(errorOf("*x\r\n")).toBe("Protocol error: invalid multibulk length");
    expect(errorOf("*01\r\n")).toBe("Protocol error: invalid multibulk length");
    expect(errorOf(`*${1024 * 1024 + 1}\r\n`)).toBe("Protocol error: invalid multibulk length");
    expect(errorOf("*1\r\n$-1\r\n")).toBe("Protocol error: invalid bulk length");
    expect(errorOf(`*1\r\n$${512 * MiB + 1}\r\n`)).toBe("Protocol error: invalid bulk length");
    expect(errorOf(`*1\r\n$${512 * MiB}\r\n`)).toBeUndefined(); // the limit itself is allowed (and not complete yet)
    expect(errorOf(`${"x".repeat(70_000)}`)).toBe("Protocol error: too big inline request");
    expect(errorOf(`*${"1".repeat(70_000)}`)).toBe("Protocol error: too big mbulk count string");
    const r = parseAll(Buffer.concat([resp("SET", "a", "1"), Buffer.from("*1\r\n$x\r\n"), resp("PING")]));
    expect(r.commands).toHaveLength(1);
    expect(r.error).toBeInstanceOf(ProtocolError);
  });

  test("property: input cut at random points gives the same commands and replies as in one piece", () => {
    fc.assert(
      fc.property(session, cuts, (input, points) => {
        const whole = parseAll(input);
        const parser = new RespParser();
        const commands: Uint8Array[][] = [];
        let error: ProtocolError | null = null;
        for (const piece of cut(input, points)) {
          parser.push(piece);
          try {
            for (let c = parser.next(); c; c = parser.next()) commands.push(c);
          } catch (e) {
            error = e as ProtocolError;
            break;
          }
        }
        expect(commands).toEqual(whole.commands);
        expect(error?.message).toBe(whole.error?.message);
        expect(repliesOf(cut(input, points)).equals(repliesOf([input]))).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  test("linear work however the input is cut: each byte searched once, copied a bounded number of times", () => {
    const random = rng(7);
    const value = new Pattern(3).bytes(4 * MiB);
    const cmds: Buffer[] = [];
    for (let i = 0; i < 2000; i++) cmds.push(i % 2 ? resp("GET", `key:${i}`) : Buffer.from(`SET key:${i} ${i}\r\n`));
    cmds.push(Buffer.from(`SET long ${"x".repeat(20_000)}\r\n`), resp("SET", "big", value), resp("PING"));
    const input = Buffer.concat(cmds);
    const parser = new RespParser();
    let n = 0;
    let big: Uint8Array | undefined;
    for (let at = 0; at < input.length; ) {
      const size = 1 + Math.floor(random() * 7);
      parser.push(input.subarray(at, at + size));
      at += size;
      for (let c = parser.next(); c; c = parser.next()) {
        n++;
        if (c.length === 3 && Buffer.from(c[1]!).toString() === "big") big = c[2];
      }
    }
    expect(n).toBe(2003);
    expect(big && Buffer.from(big).equals(value)).toBe(true);
    // Every byte but the big value's is in some line; none is searched twice.
    expect(parser.bytesSearched).toBeLessThanOrEqual(input.length - value.length);
    expect(parser.bytesCopied).toBeLessThanOrEqual(3 * input.length);
    expect(parser.buffered).toBe(0);
  });
});

for (const backend of BACKENDS) {
describe.skipIf(!backendAvailable(backend))(`examples/resp-server.ts on listen() [${backend}]`, () => {
  describe.skipIf(!REDIS_CLI)("redis-cli", () => {
    test("SET/GET/INCR/MGET/EXPIRE+TTL/DEL/DBSIZE, an unknown command's error, wrong arity", async () => {
      const { l } = startResp(backend);
      const cli = (...args: string[]) => redisCli(l.port, ...args);
      expect(await cli("PING")).toBe("PONG\n");
      expect(await cli("SET", "greeting", "hello world")).toBe("OK\n");
      expect(await cli("GET", "greeting")).toBe("hello world\n");
      expect(await cli("GET", "missing")).toBe("\n");
      expect(await cli("INCR", "counter")).toBe("1\n");
      expect(await cli("INCRBY", "counter", "41")).toBe("42\n");
      expect(await cli("DECR", "counter")).toBe("41\n");
      expect(await cli("INCR", "greeting")).toBe("ERR value is not an integer or out of range\n\n");
      expect(await cli("MSET", "a", "1", "b", "2")).toBe("OK\n");
      expect(await cli("MGET", "a", "missing", "b")).toBe("1\n\n2\n");
      expect(await cli("TTL", "a")).toBe("-1\n");
      expect(await cli("EXPIRE", "a", "100")).toBe("1\n");
      expect(await cli("TTL", "a")).toBe("100\n");
      expect(await cli("EXPIRE", "missing", "100")).toBe("0\n");
      expect(await cli("TTL", "missing")).toBe("-2\n");
      expect(await cli("SET", "short", "x", "PX", "50")).toBe("OK\n");
      await waitFor(async () => (await cli("EXISTS", "short")) === "0\n", "the 50 ms key to expire");
      expect(await cli("DBSIZE")).toBe("4\n");
      expect(await cli("DEL", "a", "b", "missing")).toBe("2\n");
      expect(await cli("DBSIZE")).toBe("2\n");
      expect(await cli("FOO", "bar", "baz")).toBe("ERR unknown command 'FOO', with args beginning with: 'bar' 'baz' \n\n");
      expect(await cli("GET")).toBe("ERR wrong number of arguments for 'get' command\n\n");
      expect(await cli("GET", "a", "b")).toBe("ERR wrong number of arguments for 'get' command\n\n");
      expect(await cli("CONFIG", "GET")).toBe("ERR wrong number of arguments for 'config|get' command\n\n");
      expect(await cli("SET", "a", "b", "NX", "XX")).toBe("ERR syntax error\n\n");
      expect(await cli("HELLO", "3")).toBe("NOPROTO unsupported protocol version\n\n");
      expect(await cli("FLUSHALL")).toBe("OK\n");
      expect(await cli("DBSIZE")).toBe("0\n");
      // Commands on stdin, one connection.
      const proc = Bun.spawn([REDIS_CLI!, "-p", String(l.port)], { stdin: "pipe", stdout: "pipe" });
      proc.stdin.write("SET x 5\nINCR x\nGET x\n");
      await proc.stdin.end();
      expect(await withTimeout(new Response(proc.stdout).text(), 15_000, "redis-cli with stdin")).toBe("OK\n6\n6\n");
    });
  });

  test("the npm redis client: connect, SET/GET/INCR/MSET/MGET, a 1 MiB value, MULTI and pipelined batches, QUIT", async () => {
    const { l, store } = startResp(backend);
    const client = createClient({ socket: { host: "127.0.0.1", port: l.port, reconnectStrategy: false }, name: "resp-test" });
    const errors: Error[] = [];
    client.on("error", (e: Error) => errors.push(e));
    await withTimeout(client.connect(), 10_000, "node-redis connect (its handshake: CLIENT SETNAME, CLIENT SETINFO)");
    expect(await client.ping()).toBe("PONG");
    expect(await client.clientGetName()).toBe("resp-test");
    expect(await client.set("greeting", "hello")).toBe("OK");
    expect(await client.get("greeting")).toBe("hello");
    expect(await client.get("missing")).toBeNull();
    expect(await client.incr("n")).toBe(1);
    expect(await client.incrBy("n", 9)).toBe(10);
    expect(await client.mSet({ a: "1", b: "2" })).toBe("OK");
    expect(await client.mGet(["a", "missing", "b"])).toEqual(["1", null, "2"]);
    expect(await client.set("nx", "1", { condition: "NX", expiration: { type: "EX", value: 60 } })).toBe("OK");
    expect(await client.set("nx", "2", { condition: "NX" })).toBeNull();
    expect(await client.ttl("nx")).toBe(60);
    // 1 MiB of random letters.
    const random = rng(11);
    const big = Array.from({ length: MiB }, () => String.fromCharCode(97 + Math.floor(random() * 26))).join("");
    expect(await client.set("big", big)).toBe("OK");
    expect(await client.get("big")).toBe(big);
    expect(store.values.get("big")?.length).toBe(MiB);
    // A transaction, and a batch sent without waiting (node-redis pipelines it on the connection).
    const tx: unknown[] = await client.multi().set("m", "1").incr("m").get("m").mGet(["m", "a"]).exec();
    expect(tx).toEqual(["OK", 2, "2", ["2", "1"]]);
    const batch = await Promise.all(Array.from({ length: 200 }, (_, i) => (i % 2 ? client.get(`p${i - 1}`) : client.set(`p${i}`, `v${i}`))));
    expect(batch).toEqual(Array.from({ length: 200 }, (_, i) => (i % 2 ? `v${i - 1}` : "OK")));
    const pipelined: unknown[] = await client.multi().incr("x").incr("x").execAsPipeline();
    expect(pipelined).toEqual([1, 2]);
    expect(await client.dbSize()).toBe(store.values.size);
    await withTimeout(client.quit(), 10_000, "QUIT");
    expect(client.isOpen).toBe(false);
    await waitFor(() => l.stats().connOpen === 0, () => `the connection closed after QUIT: ${JSON.stringify(l.stats())}`);
    expect(errors).toEqual([]);
  });

  test("inline commands, mixed with RESP; a protocol error replies and closes", async () => {
    const { l } = startResp(backend);
    const input = [
      "PING\r\n",
      "SET greeting \"hello world\"\r\n",
      "GET greeting\n",
      "   \r\n",
      "\r\n",
      "ECHO 'it\\'s' \r\n",
      "ECHO \"\\x41\\tb\"\r\n",
      "*2\r\n$6\r\nEXISTS\r\n$8\r\ngreeting\r\n",
      "set a 1\r\nincr a\r\nmget a greeting nope\r\n",
      "nosuch arg\r\n",
      "set 'x\r\n",
      "PING\r\n", // never answered: the connection closes at the protocol error
    ].join("");
    const want = [
      "+PONG\r\n",
      "+OK\r\n",
      "$11\r\nhello world\r\n",
      "$4\r\nit's\r\n",
      "$3\r\nA\tb\r\n",
      ":1\r\n",
      "+OK\r\n:2\r\n*3\r\n$1\r\n2\r\n$11\r\nhello world\r\n$-1\r\n",
      "-ERR unknown command 'nosuch', with args beginning with: 'arg' \r\n",
      "-ERR Protocol error: unbalanced quotes in request\r\n",
    ].join("");
    // In one piece and a byte at a time.
    expect((await exchange(l.port, [Buffer.from(input)])).toString()).toBe(want);
    expect((await exchange(l.port, cut(Buffer.from(input), [...Array(input.length).keys()]))).toString()).toBe(want);
  });

  test("1,000 pipelined commands in one write are answered in order", async () => {
    const { l } = startResp(backend);
    const cmds: Buffer[] = [];
    const want: string[] = [];
    for (let i = 0; i < 1000; i++) {
      if (i % 4 === 0) {
        cmds.push(resp("SET", `key:${i}`, `value:${i}`));
        want.push("+OK\r\n");
      } else if (i % 4 === 1) {
        cmds.push(resp("GET", `key:${i - 1}`));
        want.push(bulk(`value:${i - 1}`).toString());
      } else if (i % 4 === 2) {
        cmds.push(resp("INCR", "counter"));
        want.push(`:${(i + 2) / 4}\r\n`);
      } else {
        cmds.push(Buffer.from(`EXISTS key:${i - 3} key:${i}\r\n`));
        want.push(":1\r\n");
      }
    }
    const sock = await connected(l.port);
    const expected = want.join("");
    const got = receive(sock, expected.length, "1,000 replies");
    sock.write(Buffer.concat(cmds));
    expect((await got).toString()).toBe(expected);
    // Nothing more comes: PING's reply is next.
    const pong = receive(sock, 7, "PONG");
    sock.write("PING\r\n");
    expect((await pong).toString()).toBe("+PONG\r\n");
    sock.destroy();
  });

  test("a 32 MiB value sent in random pieces is stored and read back byte-exact", async () => {
    const { l, store } = startResp(backend);
    const size = 32 * MiB;
    const value = new Pattern(21).bytes(size); // random bytes, \r\n included
    const input = Buffer.concat([resp("SET", "big", value), resp("STRLEN", "big"), resp("GET", "big")]);
    const random = rng(5);
    const points: number[] = [];
    for (let at = 0; at < input.length; ) {
      at += random() < 0.3 ? 1 + Math.floor(random() * 64) : 1 + Math.floor(random() * 2 * MiB);
      points.push(at);
    }
    const reply = await exchange(l.port, cut(input, points), 60_000);
    const want = Buffer.concat([Buffer.from(`+OK\r\n:${size}\r\n`), bulk(value)]);
    expect(reply.length).toBe(want.length);
    expect(reply.equals(want)).toBe(true);
    expect(Buffer.from(store.values.get("big")!).equals(value)).toBe(true);
  });

  test("property, through the server: input cut at random points gives the replies of the whole input", async () => {
    const { l } = startResp(backend);
    await fc.assert(
      fc.asyncProperty(session, cuts, async (input, points) => {
        const whole = await exchange(l.port, [input]);
        const pieces = await exchange(l.port, cut(input, points));
        expect(pieces.equals(whole)).toBe(true);
        expect(whole.equals(repliesOf([input]))).toBe(true);
      }),
      { numRuns: 25 },
    );
  });

  test("backpressure: many GETs of 1 MiB values sent without reading; every reply arrives whole and in order", async () => {
    const store = createStore();
    const values = Array.from({ length: 8 }, (_, i) => new Pattern(100 + i).bytes(MiB));
    values.forEach((v, i) => store.values.set(`v${i}`, v));
    const inner = createRespHandler(store);
    let drains = 0;
    let maxQueued = 0;
    let pausedSeen = false;
    let parked = 0; // bytes of commands waiting in the parser while paused
    const track = (s: RespSocket) => {
      maxQueued = Math.max(maxQueued, s.data.queuedBytes);
      if (s.data.paused) {
        pausedSeen = true;
        parked = Math.max(parked, s.data.parser.buffered);
      }
    };
    const handler = {
      ...inner,
      data(s: RespSocket, chunk: Uint8Array) {
        inner.data(s, chunk);
        track(s);
      },
      drain(s: RespSocket) {
        drains++;
        inner.drain(s);
        track(s);
      },
    };
    const { l } = startResp(backend, handler, store);
    const gets = 64;
    const sock = await connected(l.port);
    sock.pause(); // read nothing yet
    const request = Buffer.concat(Array.from({ length: gets }, (_, i) => resp("GET", `v${i % values.length}`)));
    sock.write(request);
    sock.end();
    // The server stops: replies wait in its queue, reading is paused, the other GETs wait parsed-to-be.
    // The kernel's buffers take a few MB first (drain keeps coming back); then nothing moves.
    let last = -1;
    let still = 0;
    await waitFor(
      () => {
        still = pausedSeen && drains === last ? still + 1 : 0;
        last = drains;
        return still >= 10;
      },
      () => `the server stuck on a client that does not read (drains ${drains}, paused ${pausedSeen}): ${JSON.stringify(l.stats())}`,
      { intervalMs: 20 },
    );
    expect(parked).toBeGreaterThan(0);
    const drainsWhilePaused = drains;
    // Another client is served meanwhile.
    const other = await connected(l.port);
    const pong = receive(other, 7, "PONG on another connection");
    other.write("PING\r\n");
    expect((await pong).toString()).toBe("+PONG\r\n");
    other.destroy();
    // Now read: everything, in order, checked as it arrives.
    const one = (i: number) => Buffer.concat([Buffer.from(`$${MiB}\r\n`), values[i % values.length]!, Buffer.from("\r\n")]);
    const expected = Buffer.concat(Array.from({ length: gets }, (_, i) => one(i)));
    let got = 0;
    let firstBad = -1;
    sock.on("data", (b: Buffer) => {
      if (firstBad < 0 && !expected.subarray(got, got + b.length).equals(b)) firstBad = got;
      got += b.length;
    });
    const ended = endOf(sock);
    sock.resume();
    const end = await withTimeout(ended, 60_000, () => `all ${expected.length} bytes (got ${got})`);
    expect(end.how).toBe("EOF");
    expect(firstBad).toBe(-1);
    expect(got).toBe(expected.length);
    expect(drains).toBeGreaterThan(drainsWhilePaused);
    // Queued replies stay about one batch plus one value (values are queued by reference).
    expect(maxQueued).toBeLessThanOrEqual(FLUSH_BYTES + MiB + 1024);
  });

  test("the same handlers on Bun.listen put the same bytes on the wire", async () => {
    const input = Buffer.concat([
      resp("SET", "a", "1"),
      Buffer.from("INCR a\r\nMGET a b\r\nHELLO 2\r\nHELLO 3\r\nCONFIG GET save\r\nCLIENT SETNAME x\r\nCLIENT GETNAME\r\nSELECT 0\r\nCOMMAND DOCS\r\n"),
      resp("SET", "big", new Pattern(9).bytes(200_000)),
      resp("GET", "big"),
      Buffer.from("QUIT\r\nPING\r\n"),
    ]);
    const { l } = startResp(backend);
    const bun = Bun.listen<RespConnection>({ hostname: "127.0.0.1", port: 0, allowHalfOpen: true, socket: createRespHandler(createStore()) });
    try {
      const ours = await exchange(l.port, cut(input, [5, 100, 1000, 100_000]));
      const theirs = await exchange(bun.port, cut(input, [5, 100, 1000, 100_000]));
      expect(ours.equals(theirs)).toBe(true);
      const text = ours.toString("latin1");
      expect(text).toContain("*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n");
      expect(text).toContain("$5\r\nproto\r\n:2\r\n");
      expect(text).toContain("-NOPROTO unsupported protocol version\r\n");
      expect(text).toContain("*2\r\n$4\r\nsave\r\n$0\r\n\r\n");
      expect(text.endsWith("+OK\r\n")).toBe(true); // QUIT's; PING after it is not answered
    } finally {
      bun.stop(true);
    }
  });

  test("bun run resp: starts with the flags, answers, stops on SIGTERM; a bad flag exits 2 with one line", async () => {
    const script = resolve(REPO, "examples", "resp-server.ts");
    const run = runCli([], { cmd: [process.execPath, script, "--port", "0", "--backend", backend, "--threads", "2"] });
    try {
      const banner = await withTimeout(run.banner, 15_000, "banner");
      const m = /^resp-server \(bunring listen, (uring|epoll), 2 threads\) listening on 127\.0\.0\.1:(\d+)$/.exec(banner);
      expect(m?.[1]).toBe(backend);
      const reply = await exchange(Number(m![2]), [Buffer.from("SET k v\r\nGET k\r\nQUIT\r\n")]);
      expect(reply.toString()).toBe("+OK\r\n$1\r\nv\r\n+OK\r\n");
      run.proc.kill("SIGTERM");
      const r = await exitOf(run);
      expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
    } finally {
      killIfRunning(run);
    }
    for (const args of [["--port", "70000"], ["--backend", "kqueue"], ["--threads", "0"], ["--bogus"], ["extra"]]) {
      const bad = await exitOf(runCli([], { cmd: [process.execPath, script, ...args] }));
      expect(bad.code).toBe(2);
      expect(bad.stderr.trimEnd().split("\n")).toHaveLength(1);
      expect(bad.stderr).toStartWith("resp-server: ");
    }
  });
});
}
