// non-readers.test.ts — reliability scenario: many peers that send and never read.
// A peer that does not read makes its connection pause at maxPendingBytes while it holds receive
// buffers from the loop's fixed pool; enough of them once held the whole pool and a fresh client got
// no echo. The policy (c-shim/conn.c, "Stalled peers"): a reserve of a quarter of the pool for
// connections that are not paused; under pressure a connection pauses at 2 buffers, and a paused
// peer that has read nothing of its echo for stallTimeoutMs is closed (connClosedStalled), after
// only 50 ms when no buffer is free and a connection waits for one. These tests put N such peers (a child process, see
// non-reader-peers.ts: raw sockets with a small receive buffer and MSS so the server, not the
// kernel, ends up holding their data) next to H healthy request/response connections:
//   * Many non-readers (CI 1000, soak 10000), default pool: every healthy connection completes round
//     trips in every 1 s window while the non-readers sit there; a fresh client gets its echo within
//     2 s (measured latency reported); buffersInUse never exceeds buffersTotal and allocsAfterStart
//     stays 0 (sampled throughout); the non-readers really hold pool buffers (pausedNow,
//     buffersPaused, pressureEvents); reformed peers (they start reading) get a byte-exact echo, all
//     of it unless the server had closed them (then a byte-exact prefix, and never more cut than
//     connClosedStalled); once everyone has gone the close counters add up to connAccepted and
//     nothing is open, held or paused; no fd leak in the test process.
//   * A few non-readers, default pool (no pressure): each is paused holding buffers, and when it
//     finally reads it gets back exactly what it sent; connClosedStalled 0, bytesIn = bytesOut.
//   * A small pool forcing the policy (bufferCount 256, maxPendingBytes 16 KiB, stallTimeoutMs 500,
//     CI 300 non-readers): healthy connections keep going, a fresh client is echoed, connClosedStalled
//     > 0; then every non-reader reads: each gets all its bytes back or was cut off by the server,
//     and the number cut off equals connClosedStalled exactly (each stalled close counted once).
// Each on both backends, with 1 and 2 loops. The healthy rate with vs before the non-readers is
// reported on a `[reliability] non-readers` line, not asserted.
// Knobs (CI / BUNRING_SOAK=1): BUNRING_REL_NONREADERS_PEERS 1000/10000, _BYTES (per peer) 256/96 KiB,
// _HEALTHY 50/200, _HOLD_MS 3000/30000, _WINDOW_MS 1000, _BASE_MS 1500/5000, _REFORM 50/500, _FEW
// 20/40, _FEW_BYTES 256/512 KiB, _SMALL_PEERS 300/3000.
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { BUN } from "../helpers/cli.ts";
import { RoundTripper } from "../helpers/clients.ts";
import { expectFdsBackTo, listFds } from "../helpers/proc.ts";
import { report } from "../helpers/report.ts";
import { KiB, knob, MiB, testTimeout } from "../helpers/scale.ts";
import { BACKENDS, backendAvailable, fmtStats, startServer, statsReach, stopAll, stopServer, type Backend, type Server, type ServeOptions, type ServerStats } from "../helpers/server.ts";
import { connect } from "../helpers/sockets.ts";
import { withTimeout } from "../helpers/wait.ts";

const PEERS = knob("BUNRING_REL_NONREADERS_PEERS", 1000, 10000);
// What each non-reader sends. On loopback the kernel absorbs ~85 KiB of a non-reader's echo (the
// server's send buffer, ~80 KiB, plus the peer's small receive buffer); beyond that the server holds
// it in pool buffers. Soak: 10000 × 96 KiB keeps kernel TCP memory around 1 GiB at most.
const PEER_BYTES = knob("BUNRING_REL_NONREADERS_BYTES", 256 * KiB, 96 * KiB);
/** Measured: the server's send buffer plus the peer's receive buffer take ~85 KiB of a non-reader's echo. */
const KERNEL_ABSORBS = 90 * KiB;
const HEALTHY = knob("BUNRING_REL_NONREADERS_HEALTHY", 50, 200);
const HOLD_MS = knob("BUNRING_REL_NONREADERS_HOLD_MS", 3_000, 30_000);
const WINDOW_MS = knob("BUNRING_REL_NONREADERS_WINDOW_MS", 1_000);
const BASE_MS = knob("BUNRING_REL_NONREADERS_BASE_MS", 1_500, 5_000);
const REFORM = knob("BUNRING_REL_NONREADERS_REFORM", 50, 500);
const FEW = knob("BUNRING_REL_NONREADERS_FEW", 20, 40); // each holds up to ~90 KiB: well under 3/4 of one loop's pool
/** The few must each send enough to reach the pause limit (64 KiB held) beyond what the kernel absorbs. */
const FEW_BYTES = knob("BUNRING_REL_NONREADERS_FEW_BYTES", 256 * KiB, 512 * KiB);
const SMALL_PEERS = knob("BUNRING_REL_NONREADERS_SMALL_PEERS", 300, 3000);
/** A fresh client must get its echo within this long (generous: a 2-core box shared with other work). */
const FRESH_BOUND_MS = 2_000;
const MSG = 1024;

const CHILD = resolve(import.meta.dir, "non-reader-peers.ts");
const THREADS = [1, 2] as const;

afterEach(async () => {
  const left = [...children];
  children.clear();
  for (const c of left) c.kill();
  await Promise.all(left.map((c) => withTimeout(c.exited, 10_000, "killed non-reader child exits").catch(() => undefined)));
  await stopAll();
});
setDefaultTimeout(testTimeout(60_000, 600_000));

// ---------------------------------------------------------------------------------------------
// The child process holding the non-reading peers.

const children = new Set<PeersChild>();

class PeersChild {
  readonly proc: ReturnType<typeof Bun.spawn>;
  readonly lines: string[] = [];
  private stderr = "";
  private waiters: { prefix: string; resolve: (l: string) => void }[] = [];
  readonly exited: Promise<number>;

  constructor(cfg: { port: number; peers: number; bytes: number; seed: number }) {
    const proc = Bun.spawn({
      cmd: [BUN, CHILD, JSON.stringify(cfg)],
      stdin: "pipe",
      stdout: "pipe",
      stderr: "pipe",
      env: { ...process.env },
    });
    this.proc = proc;
    children.add(this);
    const dec = new TextDecoder();
    let partial = "";
    const pumpOut = (async () => {
      for await (const chunk of proc.stdout as ReadableStream<Uint8Array>) {
        partial += dec.decode(chunk, { stream: true });
        let i: number;
        while ((i = partial.indexOf("\n")) >= 0) {
          const line = partial.slice(0, i);
          partial = partial.slice(i + 1);
          this.lines.push(line);
          this.waiters = this.waiters.filter((w) => {
            if (!line.startsWith(w.prefix)) return true;
            w.resolve(line);
            return false;
          });
        }
      }
    })();
    const pumpErr = (async () => {
      for await (const chunk of proc.stderr as ReadableStream<Uint8Array>) this.stderr += dec.decode(chunk, { stream: true });
    })();
    this.exited = (async () => {
      await Promise.all([pumpOut, pumpErr]);
      return await proc.exited;
    })();
  }

  /** The first line from now on starting with `prefix`; a `fatal` line or the child's exit fails it. */
  async line(prefix: string, ms: number, what: string): Promise<string> {
    const from = this.lines.length;
    const found = new Promise<string>((resolve) => {
      const old = this.lines.slice(from).find((l) => l.startsWith(prefix));
      if (old) return resolve(old);
      this.waiters.push({ prefix, resolve });
    });
    const fatal = new Promise<never>((_, reject) => {
      this.waiters.push({ prefix: "fatal", resolve: (l) => reject(new Error(`non-reader child: ${l}`)) });
    });
    const died = this.exited.then((code) => {
      throw new Error(`non-reader child exited (${code}) before "${prefix}"; stderr: ${this.stderr.trim().slice(-2000)}`);
    });
    return await withTimeout(Promise.race([found, fatal, died]), ms, () => `non-reader child: ${what} (last lines: ${this.lines.slice(-3).join(" | ")})`);
  }

  send(cmd: string): void {
    const sink = this.proc.stdin as import("bun").FileSink;
    sink.write(`${cmd}\n`);
    sink.flush();
  }

  /** "close": every socket closed, the child exits 0. */
  async close(ms = 15_000): Promise<string> {
    const line = this.line("closed", ms, "closes its sockets");
    this.send("close");
    const l = await line;
    const code = await withTimeout(this.exited, ms, "non-reader child exits after close");
    expect(code).toBe(0);
    children.delete(this);
    return l;
  }

  kill(): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill("SIGKILL");
  }
}

interface Reformed {
  peers: number;
  complete: number;
  completeBytes: number;
  cut: { peer: number; received: number; written: number; how: string }[];
  mismatches: string[];
}

function kv(line: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of line.matchAll(/(\w+)=(\d+)/g)) out[m[1]!] = Number(m[2]);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Healthy connections and what is watched while the non-readers are there.

// After a failed test, afterEach's stopAll() stops the server, which closes these connections too.
function openHealthy(port: number, n: number): Promise<RoundTripper[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => RoundTripper.open(port, i, MSG)));
}

async function stopHealthy(rts: RoundTripper[]): Promise<void> {
  await Promise.all(rts.map((r) => r.stop()));
}

/** Sum of TCP memory (pages) over the whole machine, /proc/net/sockstat: reported, not asserted. */
function tcpMemMiB(): number {
  try {
    const m = /TCP:.* mem (\d+)/.exec(readFileSync("/proc/net/sockstat", "utf8"));
    return m ? (Number(m[1]) * 4096) / MiB : 0;
  } catch {
    return 0;
  }
}

interface Window {
  ms: number;
  trips: number;
  min: number;
  starved: number[];
}

/**
 * Samples the server every 20 ms (buffersInUse ≤ buffersTotal, allocsAfterStart 0, peaks) and cuts
 * the healthy connections' round trips into windows of WINDOW_MS, recording each connection's count.
 * The windows are measured on this thread's clock: a stall of the test process stretches a window
 * rather than emptying it.
 */
class Watch {
  windows: Window[] = [];
  violations: string[] = [];
  peak = { inUse: 0, paused: 0, buffersPaused: 0, tcpMiB: 0 };
  private running = true;
  private done: Promise<void>;

  constructor(
    private readonly s: Server,
    private readonly rts: RoundTripper[],
  ) {
    this.done = this.run();
  }

  sample(): ServerStats {
    const st = this.s.stats();
    this.peak.inUse = Math.max(this.peak.inUse, st.buffersInUse);
    this.peak.paused = Math.max(this.peak.paused, st.pausedNow);
    this.peak.buffersPaused = Math.max(this.peak.buffersPaused, st.buffersPaused);
    if (st.buffersInUse > st.buffersTotal) this.violations.push(`buffersInUse ${st.buffersInUse} > buffersTotal ${st.buffersTotal}: ${fmtStats(st)}`);
    if (st.allocsAfterStart !== 0) this.violations.push(`allocsAfterStart ${st.allocsAfterStart}: ${fmtStats(st)}`);
    return st;
  }

  private async run(): Promise<void> {
    let start = performance.now();
    let before = this.rts.map((r) => r.trips);
    let n = 0;
    while (this.running) {
      this.sample();
      if (n++ % 25 === 0) this.peak.tcpMiB = Math.max(this.peak.tcpMiB, tcpMemMiB());
      const now = performance.now();
      if (now - start >= WINDOW_MS) {
        const per = this.rts.map((r, i) => r.trips - before[i]!);
        const min = Math.min(...per);
        this.windows.push({ ms: now - start, trips: per.reduce((a, b) => a + b, 0), min, starved: per.flatMap((t, i) => (t === 0 ? [i] : [])) });
        start = now;
        before = this.rts.map((r) => r.trips);
      }
      await new Promise((r) => setTimeout(r, 20)); // sampling period, not synchronisation
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.done;
  }

  rate(): number {
    const trips = this.windows.reduce((a, w) => a + w.trips, 0);
    const ms = this.windows.reduce((a, w) => a + w.ms, 0);
    return ms > 0 ? (trips / ms) * 1000 : 0;
  }
}

/** Healthy round trips per second over `ms` (a measurement window, not synchronisation). */
async function rateOver(rts: RoundTripper[], ms: number): Promise<number> {
  const before = rts.reduce((a, r) => a + r.trips, 0);
  const t0 = performance.now();
  while (performance.now() - t0 < ms) await new Promise((r) => setTimeout(r, 20));
  return ((rts.reduce((a, r) => a + r.trips, 0) - before) / (performance.now() - t0)) * 1000;
}

/**
 * A fresh client: connects, sends MSG bytes, and resolves with the ms from the connect attempt to
 * the whole echo (checked byte for byte); then closes cleanly. Fails after FRESH_BOUND_MS + 8 s
 * (the bound itself is asserted by the caller, so a slow echo is reported with its latency).
 */
async function freshEcho(s: Server, id: number): Promise<number> {
  const msg = Buffer.alloc(MSG);
  for (let i = 0; i < MSG; i++) msg[i] = (id * 131 + i * 7) & 0xff;
  const t0 = performance.now();
  const c = await connect(s.port, "127.0.0.1", FRESH_BOUND_MS + 8_000);
  const parts: Buffer[] = [];
  let got = 0;
  const echoed = new Promise<number>((resolve) => {
    c.sock.on("data", (b: Buffer) => {
      parts.push(b);
      got += b.length;
      if (got >= MSG) resolve(performance.now() - t0);
    });
  });
  c.sock.write(msg);
  const ms = await withTimeout(
    Promise.race([echoed, c.closed.then((e) => Promise.reject(new Error(`fresh client ${id} closed (${e.how}) after ${got} of ${MSG} bytes`)))]),
    FRESH_BOUND_MS + 8_000,
    () => `fresh client ${id} gets its echo (got ${got} of ${MSG}); stats ${fmtStats(s.stats())}`,
  ).catch((e: unknown) => {
    c.sock.destroy();
    throw e;
  });
  expect(Buffer.concat(parts).equals(msg)).toBe(true);
  c.sock.end();
  const end = await withTimeout(c.closed, 10_000, `fresh client ${id} closes`);
  expect(end.error).toBeUndefined();
  return ms;
}

/** Waits until every connection is gone, then checks the counters add up and nothing is held. */
async function expectAllGone(s: Server, accepted: number): Promise<ServerStats> {
  await statsReach(
    () => s.stats(),
    (st) => st.connOpen === 0 && st.connAccepted === accepted && st.buffersInUse === 0,
    `all ${accepted} connections closed and every buffer back`,
  );
  const st = s.stats();
  expect({
    connAccepted: st.connAccepted,
    closes: st.connClosedEof + st.connClosedReset + st.connClosedStop + st.connClosedIdle + st.connClosedStalled,
    connOpen: st.connOpen,
    buffersInUse: st.buffersInUse,
    buffersPaused: st.buffersPaused,
    pausedNow: st.pausedNow,
    allocsAfterStart: st.allocsAfterStart,
    errors: st.errors,
    connRejected: st.connRejected,
    connClosedStop: st.connClosedStop,
    connClosedIdle: st.connClosedIdle,
    bytesOutNotAboveIn: st.bytesOut <= st.bytesIn,
  }).toEqual({
    connAccepted: accepted,
    closes: accepted,
    connOpen: 0,
    buffersInUse: 0,
    buffersPaused: 0,
    pausedNow: 0,
    allocsAfterStart: 0,
    errors: 0,
    connRejected: 0,
    connClosedStop: 0,
    connClosedIdle: 0,
    bytesOutNotAboveIn: true,
  });
  return st;
}

/**
 * How the cut-off peers that had read something ended (EOF or reset after how many bytes), grouped.
 * A peer the server closed while it was not reading may still read a prefix the kernel held.
 */
function cutSummary(r: Reformed): string {
  const groups = new Map<string, number>();
  for (const c of r.cut) if (c.received > 0) groups.set(`${c.how} after ${c.received} B`, (groups.get(`${c.how} after ${c.received} B`) ?? 0) + 1);
  return [...groups].map(([k, n]) => `${n}× ${k}`).join(", ") || "none";
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const loops = (t: number) => `${t} loop${t > 1 ? "s" : ""}`;

// ---------------------------------------------------------------------------------------------
// The scenarios.

interface Held {
  child: PeersChild;
  watch: Watch;
  fresh: number[];
  ready: Record<string, number>;
  readyMs: number;
  /** Windows the hold was to last. */
  want: number;
}

const windowsIn = (ms: number) => Math.max(1, Math.floor(ms / WINDOW_MS));

/**
 * Starts `peers` non-readers next to the healthy connections, waits until they are in (the child's
 * "ready"), then holds for HOLD_MS: the Watch cuts windows, and a fresh client is echoed once per
 * window. Returns with the non-readers still there.
 */
async function holdNonReaders(s: Server, rts: RoundTripper[], peers: number, seed: number, holdMs: number): Promise<Held> {
  const t0 = performance.now();
  const child = new PeersChild({ port: s.port, peers, bytes: PEER_BYTES, seed });
  const readyLine = await child.line("ready", testTimeout(45_000, 300_000), `${peers} peers connect and send ${PEER_BYTES} B each`);
  const readyMs = performance.now() - t0;
  const watch = new Watch(s, rts);
  const fresh: number[] = [];
  const want = windowsIn(holdMs);
  const deadline = performance.now() + holdMs + 10_000; // windows stretched by a busy machine
  while (watch.windows.length < want && performance.now() < deadline) {
    const w0 = performance.now();
    fresh.push(await freshEcho(s, fresh.length));
    // Pace: the next fresh client in the next window (the hold's length is the measurement).
    while (performance.now() - w0 < WINDOW_MS && watch.windows.length < want) await new Promise((r) => setTimeout(r, 20));
  }
  await watch.stop();
  return { child, watch, fresh, ready: kv(readyLine), readyMs, want };
}

function expectNoStarvation(held: Held, s: Server): void {
  const { watch } = held;
  expect(watch.violations).toEqual([]);
  expect(watch.windows.length).toBeGreaterThanOrEqual(held.want);
  const starved = watch.windows.flatMap((w, i) => (w.min === 0 ? [`window ${i} (${w.ms.toFixed(0)} ms): healthy conns ${w.starved.join(",")} made no round trip`] : []));
  if (starved.length > 0) throw new Error(`healthy connections starved while the non-readers sat there: ${starved.join("; ")}; stats ${fmtStats(s.stats())}`);
  for (const ms of held.fresh) expect(ms).toBeLessThanOrEqual(FRESH_BOUND_MS);
}

function describeFresh(fresh: number[]): string {
  return `fresh-client echo ${median(fresh).toFixed(1)} ms median, ${Math.max(...fresh).toFixed(1)} ms max (${fresh.length} clients, bound ${FRESH_BOUND_MS} ms)`;
}

const variants = BACKENDS.flatMap((b) => THREADS.map((t) => [b, t] as [Backend, number]));

describe.each(variants)("reliability: many peers that never read [%s, threads %d]", (backend, threads) => {
  const it = backendAvailable(backend) ? test : test.skip;

  it(
    `${PEERS} non-readers (${PEER_BYTES / KiB} KiB each) next to ${HEALTHY} healthy connections: nobody starves, fresh clients are echoed within ${FRESH_BOUND_MS} ms, the pool holds, reformed peers get a byte-exact echo, counters add up`,
    async () => {
      const fds0 = listFds();
      const s = startServer(backend, { threads });
      const stats = () => s.stats();
      const rts = await openHealthy(s.port, HEALTHY);
      await statsReach(stats, (st) => st.connOpen === HEALTHY, `${HEALTHY} healthy connections open`);
      await rateOver(rts, 300); // warm-up, not counted
      const before = await rateOver(rts, BASE_MS);

      const held = await holdNonReaders(s, rts, PEERS, 1, HOLD_MS);
      const atHold = stats();
      expectNoStarvation(held, s);
      // The scenario really happened: the non-readers were paused holding pool buffers.
      expect(held.watch.peak.paused).toBeGreaterThan(0);
      expect(held.watch.peak.buffersPaused).toBeGreaterThan(0);
      // When what the non-readers send beyond what the kernel absorbs (KERNEL_ABSORBS each) is twice
      // the pools, the pool must have reached its reserve: the situation the policy is for.
      if (PEERS * Math.max(0, PEER_BYTES - KERNEL_ABSORBS) >= 2 * threads * atHold.buffersTotal * 2 * KiB) {
        expect(atHold.pressureEvents).toBeGreaterThan(0);
      }

      // Reform: some non-readers start reading. Each gets a byte-exact echo: all of it, or (if the
      // server had closed it as stalled) a prefix.
      const k = Math.min(REFORM, PEERS);
      const t0 = performance.now();
      const reformedLine = held.child.line("reformed", testTimeout(30_000, 300_000), `${k} reformed peers read their echo back`);
      const atReform = stats();
      held.child.send(`reform ${k}`);
      const reformed = JSON.parse((await reformedLine).slice("reformed ".length)) as Reformed;
      const reformMs = performance.now() - t0;
      expect(reformed.mismatches).toEqual([]);
      expect(reformed.complete + reformed.cut.length).toBe(k);
      expect(reformed.completeBytes).toBe(reformed.complete * PEER_BYTES);
      const afterReform = stats();
      expect(reformed.cut.length).toBeLessThanOrEqual(afterReform.connClosedStalled);
      for (const c of reformed.cut) expect(c.received).toBeLessThanOrEqual(c.written);

      const closedLine = await held.child.close();
      await stopHealthy(rts);
      for (const r of rts) expect(r.failure()).toBeUndefined();
      const st = await expectAllGone(s, PEERS + HEALTHY + held.fresh.length);

      const withRate = held.watch.rate();
      const slowest = Math.min(...held.watch.windows.map((w) => w.min));
      report(
        "non-readers",
        `${backend}, ${loops(threads)}`,
        `${PEERS} non-readers × ${PEER_BYTES / KiB} KiB in after ${(held.readyMs / 1000).toFixed(1)} s (child: ${held.ready.complete} wrote all, ${held.ready.gone} already closed by the server); ` +
          `${HEALTHY} healthy conns: ${before.toFixed(0)} round trips/s before, ${withRate.toFixed(0)} with the non-readers → ${((withRate / before) * 100).toFixed(0)} %; ` +
          `slowest healthy conn ${slowest} trips in a ${WINDOW_MS} ms window (${held.watch.windows.length} windows); ${describeFresh(held.fresh)}; ` +
          `pool peak ${held.watch.peak.inUse}/${atHold.buffersTotal} in use, ${held.watch.peak.buffersPaused} held by up to ${held.watch.peak.paused} paused conns; ` +
          `at ${HOLD_MS / 1000} s: pressureEvents ${atHold.pressureEvents} connClosedStalled ${atHold.connClosedStalled} enobufs ${atHold.enobufs} open ${atHold.connOpen}; ` +
          `reform ${k}: ${reformed.complete} got every byte back, ${reformed.cut.length} had been cut off (in ${(reformMs / 1000).toFixed(1)} s; stalled closes during it ${afterReform.connClosedStalled - atReform.connClosedStalled}; cut-off endings: ${cutSummary(reformed)}); ` +
          `final: accepted ${st.connAccepted} = eof ${st.connClosedEof} + reset ${st.connClosedReset} + stalled ${st.connClosedStalled}; in ${(st.bytesIn / MiB).toFixed(0)} MiB out ${(st.bytesOut / MiB).toFixed(0)} MiB; ` +
          `kernel TCP memory peak ${held.watch.peak.tcpMiB.toFixed(0)} MiB; child at close: ${closedLine.slice(7)}`,
      );

      await stopServer(s);
      await expectFdsBackTo(fds0, 10_000);
    },
    testTimeout(90_000, 900_000),
  );

  it(
    `${FEW} non-readers with the pool not under pressure: each is paused holding buffers, and when it reads it gets back exactly what it sent; nothing is closed as stalled`,
    async () => {
      const fds0 = listFds();
      const s = startServer(backend, { threads });
      const stats = () => s.stats();
      const watch = new Watch(s, []); // pool peaks and the buffersInUse/allocsAfterStart checks, every 20 ms
      const child = new PeersChild({ port: s.port, peers: FEW, bytes: FEW_BYTES, seed: 2 });
      await child.line("ready", 20_000, `${FEW} peers connect and send`);
      // Every one of them is paused, holding pool buffers (the server, not the kernel, has its data).
      await statsReach(stats, (st) => st.pausedNow === FEW && st.buffersPaused >= FEW, `all ${FEW} non-readers paused holding buffers`);
      const held = watch.sample();
      // The pool is not under pressure: more than the reserve (a quarter) is free. (A burst of
      // receives as they arrived may have touched the reserve for a moment: pressureEvents is
      // reported, not asserted; with the default grace of 10 s that closes nobody.)
      expect(held.buffersInUse).toBeLessThan((held.buffersTotal * 3) / 4);
      const fresh = await freshEcho(s, 0);
      expect(fresh).toBeLessThanOrEqual(FRESH_BOUND_MS);

      const reformed = child.line("reformed", testTimeout(30_000, 300_000), `${FEW} peers read everything back`);
      child.send(`reform ${FEW}`);
      const r = JSON.parse((await reformed).slice("reformed ".length)) as Reformed;
      expect(r).toEqual({ peers: FEW, complete: FEW, completeBytes: FEW * FEW_BYTES, cut: [], mismatches: [] });
      await child.close();
      await watch.stop();
      expect(watch.violations).toEqual([]);
      const st = await expectAllGone(s, FEW + 1);
      expect({ stalled: st.connClosedStalled, bytesIn: st.bytesIn, bytesOut: st.bytesOut, eof: st.connClosedEof }).toEqual({
        stalled: 0,
        bytesIn: FEW * FEW_BYTES + MSG,
        bytesOut: FEW * FEW_BYTES + MSG,
        eof: FEW + 1,
      });
      report(
        "non-readers reform",
        `${backend}, ${loops(threads)}`,
        `${FEW} non-readers × ${FEW_BYTES / KiB} KiB: all paused holding ${held.buffersPaused}/${held.buffersTotal} buffers (${((held.buffersPaused * 2 * KiB) / FEW / KiB).toFixed(0)} KiB each; ` +
          `pool peak ${watch.peak.inUse}, pressureEvents ${held.pressureEvents} by then, ${st.pressureEvents} after the read-back); ` +
          `fresh-client echo ${fresh.toFixed(1)} ms; each read back all ${FEW_BYTES} bytes byte-exact; connClosedStalled 0`,
      );
      await stopServer(s);
      await expectFdsBackTo(fds0, 10_000);
    },
    testTimeout(60_000, 600_000),
  );

  it(
    `small pool (256 buffers, maxPendingBytes 16 KiB, stallTimeoutMs 500) and ${SMALL_PEERS} non-readers: healthy connections keep going, stalled peers are closed and each close is counted`,
    async () => {
      const fds0 = listFds();
      const opts: ServeOptions = { threads, bufferCount: 256, maxPendingBytes: 16 * KiB, stallTimeoutMs: 500 };
      const s = startServer(backend, opts);
      const stats = () => s.stats();
      const rts = await openHealthy(s.port, HEALTHY);
      await statsReach(stats, (st) => st.connOpen === HEALTHY, `${HEALTHY} healthy connections open`);
      await rateOver(rts, 200); // warm-up, not counted
      const before = await rateOver(rts, BASE_MS);
      const hold = Math.max(2 * WINDOW_MS, Math.min(HOLD_MS, 3_000));
      const held = await holdNonReaders(s, rts, SMALL_PEERS, 3, hold);
      expectNoStarvation(held, s);
      await statsReach(stats, (st) => st.connClosedStalled > 0, "the policy closes stalled non-readers (connClosedStalled > 0)", 10_000);
      const atHold = stats();

      // Every non-reader now reads: those still open get every byte back; the others were closed by
      // the server after a byte-exact prefix. Cut-off peers and stalled closes match one to one.
      const reformedLine = held.child.line("reformed", testTimeout(45_000, 450_000), `all ${SMALL_PEERS} peers read their echo back`);
      const atReform = stats();
      const tReform = performance.now();
      held.child.send(`reform ${SMALL_PEERS}`);
      const r = JSON.parse((await reformedLine).slice("reformed ".length)) as Reformed;
      const reformMs = performance.now() - tReform;
      const openAtReform = atReform.connOpen - HEALTHY;
      expect(r.mismatches).toEqual([]);
      expect(r.complete + r.cut.length).toBe(SMALL_PEERS);
      expect(r.completeBytes).toBe(r.complete * PEER_BYTES);
      await held.child.close();
      await stopHealthy(rts);
      for (const rt of rts) expect(rt.failure()).toBeUndefined();
      const st = await expectAllGone(s, SMALL_PEERS + HEALTHY + held.fresh.length);
      expect({ stalled: st.connClosedStalled, eof: st.connClosedEof, reset: st.connClosedReset }).toEqual({
        stalled: r.cut.length,
        eof: r.complete + HEALTHY + held.fresh.length,
        reset: 0,
      });
      const withRate = held.watch.rate();
      report(
        "non-readers small pool",
        `${backend}, ${loops(threads)}`,
        `${SMALL_PEERS} non-readers × ${PEER_BYTES / KiB} KiB, pool 256 × 2 KiB per loop, stallTimeoutMs 500: ` +
          `${HEALTHY} healthy conns ${before.toFixed(0)} → ${withRate.toFixed(0)} round trips/s (${((withRate / before) * 100).toFixed(0)} %), ` +
          `slowest ${Math.min(...held.watch.windows.map((w) => w.min))} trips in a ${WINDOW_MS} ms window; ${describeFresh(held.fresh)}; ` +
          `at ${(hold / 1000).toFixed(0)} s: stalled ${atHold.connClosedStalled}, pressureEvents ${atHold.pressureEvents}, enobufs ${atHold.enobufs}, pool peak ${held.watch.peak.inUse}/${atHold.buffersTotal}; ` +
          `all read back: ${r.complete} got every byte, ${r.cut.length} cut off = connClosedStalled ${st.connClosedStalled} ` +
          `(read back in ${reformMs.toFixed(0)} ms; when told to read, ${openAtReform} were still open, ${atReform.pausedNow} paused, ` +
          `pool ${atReform.buffersInUse}/${atReform.buffersTotal} in use, pressureEvents ${atReform.pressureEvents}; ` +
          `${st.connClosedStalled - atReform.connClosedStalled} closed as stalled after that, pressureEvents then ${st.pressureEvents}; cut-off endings: ${cutSummary(r)})`,
      );
      await stopServer(s);
      await expectFdsBackTo(fds0, 10_000);
    },
    testTimeout(90_000, 900_000),
  );
});
