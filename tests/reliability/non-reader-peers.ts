// non-reader-peers.ts — the child process of tests/reliability/non-readers.test.ts: N TCP peers that
// each send a capped number of bytes and never read, until told to ("reform").
//
// Why raw sockets (libc through bun:ffi) and not node:net: with node:net, socket.pause() does stop
// the kernel reads (the peer's Recv-Q fills to its 128 KiB receive buffer), but on loopback the
// kernel alone then absorbs the whole echo of a few hundred KiB: the server's send buffer is sized
// from the peer's MSS (~64 KiB on loopback) times the initial window and grows to ~4 MiB. Measured
// with 20 paused node:net peers × 256 KiB: the server held no buffer and paused nobody. (Bun.connect
// with a data handler that ignores its data is no better: Bun still reads, Recv-Q stays 0.) So every
// peer here sets, before it connects, a small TCP_MAXSEG (1024: the server sizes its send buffer
// from it, ~100 KiB, absorbing ~80 KiB of echo) and a small SO_RCVBUF (its receive window stays a
// few KiB). Without the MSS the server still absorbs everything; with it, a peer that sends 256 KiB
// leaves ~55-90 KiB of echo in the server's pool and is paused there: the situation under test.
//
// Usage: bun non-reader-peers.ts '<json config>' (see Config). Lines on stdout:
//   connected <n>                       every peer connected
//   ready <status>                      every peer wrote its cap, or was closed, or has been unable to
//                                       write anything for settleMs (the kernel stopped taking)
//   status <status>                     answer to "status"
//   reformed <json>                     answer to "reform <k>", once each of those k peers has read
//                                       back all it sent (then half-closed and seen the server's EOF)
//                                       or was cut off by the server; every byte read is checked
//                                       against what the peer sent at that offset
//   closed <status>                     answer to "close": every socket closed; the process exits 0
//   fatal <message>                     something went wrong in the child; it exits 1
// <status> is `key=value` pairs: open, connected, written (bytes), complete (peers that wrote their
// cap), blocked, gone (peers the server closed, seen as a reset/hang-up without reading: a close whose
// FIN waits behind unread echo shows only once the peer reads), reading.
// stdin commands, one per line: "status", "reform <k>" (k peers spread over the set start reading),
// "close". stdin's end also closes everything and exits.
import { dlopen, FFIType, read } from "bun:ffi";
import { Pattern, PATTERN_LEN } from "../helpers/prng.ts";

interface Config {
  port: number;
  host?: string; // IPv4 only
  peers: number;
  /** Bytes each peer sends (then it stops writing; it never half-closes unless reformed). */
  bytes: number;
  /** Bytes per send() call. */
  chunk?: number;
  /** SO_RCVBUF set before connect (the kernel doubles it). */
  rcvbuf?: number;
  /** TCP_MAXSEG set before connect: the MSS this peer advertises (0: the kernel's). */
  mss?: number;
  /** Connects in flight at once. */
  connectBatch?: number;
  /** No write progress for this long counts as blocked (for "ready"). */
  settleMs?: number;
  /** Pattern seed; peer i's stream is the seed's Pattern from offset i × 7919. */
  seed?: number;
}

const cfg = JSON.parse(process.argv[2] ?? "{}") as Config;
const HOST = cfg.host ?? "127.0.0.1";
const CHUNK = Math.min(cfg.chunk ?? 16 * 1024, PATTERN_LEN);
const RCVBUF = cfg.rcvbuf ?? 4096;
const MSS = cfg.mss ?? 1024;
const CONNECT_BATCH = cfg.connectBatch ?? 256;
const SETTLE_MS = cfg.settleMs ?? 250;
const pattern = new Pattern(cfg.seed ?? 1);

// x86_64 / aarch64 Linux values.
const AF_INET = 2;
const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_ERROR = 4;
const SO_RCVBUF = 8;
const IPPROTO_TCP = 6;
const TCP_MAXSEG = 2;
const MSG_DONTWAIT = 0x40;
const MSG_NOSIGNAL = 0x4000;
const SHUT_WR = 1;
const POLLIN = 0x1;
const POLLOUT = 0x4;
const POLLERR = 0x8;
const POLLHUP = 0x10;
const POLLRDHUP = 0x2000;
const EAGAIN = 11;
const EINTR = 4;
const EINPROGRESS = 115;
const ERRNO_NAMES: Record<number, string> = { 32: "EPIPE", 104: "ECONNRESET", 110: "ETIMEDOUT", 111: "ECONNREFUSED", 24: "EMFILE" };

const libc = dlopen("libc.so.6", {
  socket: { args: [FFIType.i32, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
  setsockopt: { args: [FFIType.i32, FFIType.i32, FFIType.i32, FFIType.ptr, FFIType.u32], returns: FFIType.i32 },
  getsockopt: { args: [FFIType.i32, FFIType.i32, FFIType.i32, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  connect: { args: [FFIType.i32, FFIType.ptr, FFIType.u32], returns: FFIType.i32 },
  send: { args: [FFIType.i32, FFIType.ptr, FFIType.u64, FFIType.i32], returns: FFIType.i64 },
  recv: { args: [FFIType.i32, FFIType.ptr, FFIType.u64, FFIType.i32], returns: FFIType.i64 },
  shutdown: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
  close: { args: [FFIType.i32], returns: FFIType.i32 },
  poll: { args: [FFIType.ptr, FFIType.u64, FFIType.i32], returns: FFIType.i32 },
  __errno_location: { args: [], returns: FFIType.ptr },
}).symbols;

const errno = (): number => read.i32(libc.__errno_location()!, 0);
const errName = (e: number) => ERRNO_NAMES[e] ?? `errno ${e}`;
const num = (v: number | bigint) => Number(v);

function out(line: string): void {
  process.stdout.write(`${line}\n`);
}

function fatal(msg: string): never {
  out(`fatal ${msg}`);
  closeAll();
  process.exit(1);
}

const addr = Buffer.alloc(16);
addr.writeUInt16LE(AF_INET, 0);
addr.writeUInt16BE(cfg.port, 2);
HOST.split(".").forEach((p, i) => addr.writeUInt8(Number(p), 4 + i));
const intOpt = new Int32Array(1);
const intLen = new Uint32Array([4]);

type State = "idle" | "connecting" | "open" | "gone" | "closed";

interface Peer {
  i: number;
  fd: number;
  state: State;
  /** Stream offset of this peer's first byte in `pattern`. */
  base: number;
  written: number;
  lastProgress: number;
  reading: boolean;
  received: number;
  /** Half-closed after reading everything back; waiting for the server's EOF. */
  finishing: boolean;
  result?: { complete: boolean; received: number; written: number; how: string; mismatch?: string };
  goneHow?: string;
}

const peers: Peer[] = Array.from({ length: cfg.peers }, (_, i) => ({
  i,
  fd: -1,
  state: "idle" as State,
  base: (i * 7919) % PATTERN_LEN,
  written: 0,
  lastProgress: 0,
  reading: false,
  received: 0,
  finishing: false,
}));

let nextToConnect = 0;
let connecting = 0;
let connected = 0;
let readySent = false;
let reformPending: Peer[] | null = null;
let closing = false;

function startConnect(p: Peer): void {
  const fd = libc.socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) fatal(`socket() failed: ${errName(errno())} after ${connected} peers`);
  p.fd = fd;
  intOpt[0] = RCVBUF;
  if (libc.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, intOpt, 4) !== 0) fatal(`SO_RCVBUF: ${errName(errno())}`);
  intOpt[0] = MSS;
  if (MSS > 0 && libc.setsockopt(fd, IPPROTO_TCP, TCP_MAXSEG, intOpt, 4) !== 0) fatal(`TCP_MAXSEG: ${errName(errno())}`);
  if (libc.connect(fd, addr, 16) !== 0) {
    const e = errno();
    if (e !== EINPROGRESS) fatal(`connect() failed: ${errName(e)} (peer ${p.i})`);
    p.state = "connecting";
    connecting++;
  } else {
    onConnected(p);
  }
}

function onConnected(p: Peer): void {
  p.state = "open";
  p.lastProgress = performance.now();
  connected++;
  if (connected === cfg.peers) out(`connected ${connected}`);
}

function markGone(p: Peer, how: string): void {
  if (p.state !== "open") return;
  p.state = "gone";
  p.goneHow = how;
  if (p.reading && !p.result) p.result = { complete: false, received: p.received, written: p.written, how };
  libc.close(p.fd);
  p.fd = -1;
}

/** Writes until the cap or EAGAIN. */
function pump(p: Peer): boolean {
  let progressed = false;
  while (p.state === "open" && p.written < cfg.bytes) {
    const off = p.base + p.written;
    const n = Math.min(CHUNK, cfg.bytes - p.written, PATTERN_LEN - (off % PATTERN_LEN));
    const r = num(libc.send(p.fd, pattern.window(off, n), n, MSG_DONTWAIT | MSG_NOSIGNAL));
    if (r < 0) {
      const e = errno();
      if (e === EAGAIN || e === EINTR) break;
      markGone(p, errName(e));
      return true;
    }
    p.written += r;
    p.lastProgress = performance.now();
    progressed = true;
  }
  return progressed;
}

const rbuf = Buffer.alloc(64 * 1024);

/** Reads what is there (a reformed peer), checking every byte against what it sent. */
function drain(p: Peer): boolean {
  let progressed = false;
  while (p.state === "open") {
    const r = num(libc.recv(p.fd, rbuf, rbuf.length, MSG_DONTWAIT));
    if (r < 0) {
      const e = errno();
      if (e === EAGAIN || e === EINTR) break;
      markGone(p, errName(e));
      return true;
    }
    progressed = true;
    if (r === 0) {
      // The server's EOF: after our half-close once everything came back, or a cut-off.
      const complete = p.received === cfg.bytes && p.finishing;
      p.result ??= { complete, received: p.received, written: p.written, how: complete ? "EOF after every byte" : "EOF" };
      p.state = "closed";
      libc.close(p.fd);
      p.fd = -1;
      break;
    }
    if (p.received + r > p.written) {
      p.result = { complete: false, received: p.received, written: p.written, how: "extra bytes", mismatch: `${p.received + r - p.written} bytes more than were sent` };
      markGone(p, "extra bytes");
      break;
    }
    const bad = verify(p, rbuf.subarray(0, r), p.received);
    if (bad) {
      p.result = { complete: false, received: p.received, written: p.written, how: "mismatch", mismatch: bad };
      markGone(p, "mismatch");
      break;
    }
    p.received += r;
    if (p.received === cfg.bytes && !p.finishing) {
      p.finishing = true;
      libc.shutdown(p.fd, SHUT_WR);
    }
  }
  return progressed;
}

function verify(p: Peer, chunk: Buffer, at: number): string | null {
  // Pattern.verify checks a stream from offset 0; this peer's stream starts at p.base.
  for (let done = 0; done < chunk.length; ) {
    const off = p.base + at + done;
    const n = Math.min(PATTERN_LEN - (off % PATTERN_LEN), chunk.length - done);
    const got = chunk.subarray(done, done + n);
    if (Buffer.compare(got, pattern.window(off, n)) !== 0) {
      const bad = pattern.verify(got, off);
      return `peer ${p.i}: echo differs from what it sent at its byte ${at + done}: ${bad}`;
    }
    done += n;
  }
  return null;
}

function status(): string {
  let open = 0;
  let written = 0;
  let complete = 0;
  let blocked = 0;
  let gone = 0;
  let reading = 0;
  const now = performance.now();
  for (const p of peers) {
    written += p.written;
    if (p.state === "open") open++;
    if (p.state === "gone") gone++;
    if (p.written >= cfg.bytes) complete++;
    else if (p.state === "open" && now - p.lastProgress >= SETTLE_MS) blocked++;
    if (p.reading) reading++;
  }
  return `open=${open} connected=${connected} written=${written} complete=${complete} blocked=${blocked} gone=${gone} reading=${reading}`;
}

function settled(): boolean {
  if (connected < cfg.peers) return false;
  const now = performance.now();
  return peers.every((p) => p.state !== "open" || p.written >= cfg.bytes || now - p.lastProgress >= SETTLE_MS);
}

// One poll(2) over every socket each tick: connects completing, room to write, data for the
// reformed peers, and resets/hang-ups (the server closing a peer that does not read).
let pfds = Buffer.alloc(8 * 1024);
let pfdPeers: Peer[] = [];

function tick(waitMs: number): boolean {
  while (connecting < CONNECT_BATCH && nextToConnect < cfg.peers) startConnect(peers[nextToConnect++]!);
  pfdPeers = [];
  for (const p of peers) if (p.state === "connecting" || p.state === "open") pfdPeers.push(p);
  if (pfds.length < pfdPeers.length * 8) pfds = Buffer.alloc(pfdPeers.length * 16);
  for (let k = 0; k < pfdPeers.length; k++) {
    const p = pfdPeers[k]!;
    let ev = POLLRDHUP;
    if (p.state === "connecting" || p.written < cfg.bytes) ev |= POLLOUT;
    if (p.reading) ev |= POLLIN;
    pfds.writeInt32LE(p.fd, k * 8);
    pfds.writeInt16LE(ev, k * 8 + 4);
    pfds.writeInt16LE(0, k * 8 + 6);
  }
  if (pfdPeers.length === 0) return false;
  const n = libc.poll(pfds, pfdPeers.length, connecting > 0 ? 0 : waitMs);
  if (n < 0) {
    if (errno() === EINTR) return false;
    fatal(`poll: ${errName(errno())}`);
  }
  if (n === 0) return false;
  let progressed = false;
  for (let k = 0; k < pfdPeers.length; k++) {
    const rev = pfds.readInt16LE(k * 8 + 6) & 0xffff;
    if (rev === 0) continue;
    const p = pfdPeers[k]!;
    if (p.state === "connecting") {
      connecting--;
      intLen[0] = 4;
      libc.getsockopt(p.fd, SOL_SOCKET, SO_ERROR, intOpt, intLen);
      if (intOpt[0] !== 0) fatal(`connect failed: ${errName(intOpt[0]!)} (peer ${p.i}, ${connected} connected)`);
      onConnected(p);
      progressed = true;
      pump(p);
      continue;
    }
    if (p.reading && rev & (POLLIN | POLLHUP | POLLERR | POLLRDHUP)) progressed = drain(p) || progressed;
    if (p.state !== "open") continue;
    if (rev & POLLERR || (!p.reading && rev & (POLLHUP | POLLRDHUP))) {
      // Not reading: a reset or the server's FIN ends this peer (SO_ERROR says which).
      intLen[0] = 4;
      libc.getsockopt(p.fd, SOL_SOCKET, SO_ERROR, intOpt, intLen);
      markGone(p, intOpt[0] ? errName(intOpt[0]) : rev & POLLRDHUP ? "EOF" : "HUP");
      progressed = true;
      continue;
    }
    if (rev & POLLOUT) progressed = pump(p) || progressed;
  }
  return progressed;
}

function checkReform(): void {
  if (!reformPending) return;
  if (!reformPending.every((p) => p.result)) return;
  const done = reformPending;
  reformPending = null;
  const complete = done.filter((p) => p.result!.complete);
  const cut = done.filter((p) => !p.result!.complete && !p.result!.mismatch);
  const mismatched = done.filter((p) => p.result!.mismatch);
  out(
    `reformed ${JSON.stringify({
      peers: done.length,
      complete: complete.length,
      completeBytes: complete.reduce((a, p) => a + p.result!.received, 0),
      cut: cut.map((p) => ({ peer: p.i, received: p.result!.received, written: p.result!.written, how: p.result!.how })),
      mismatches: mismatched.map((p) => p.result!.mismatch),
    })}`,
  );
}

function reform(k: number): void {
  if (reformPending) return fatal("reform while a reform is running");
  const chosen: Peer[] = [];
  const step = Math.max(1, Math.floor(cfg.peers / Math.max(1, k)));
  for (let i = 0; i < cfg.peers && chosen.length < k; i += step) chosen.push(peers[i]!);
  for (const p of chosen) {
    p.reading = true;
    if (p.state !== "open") p.result ??= { complete: false, received: 0, written: p.written, how: `already gone (${p.goneHow ?? p.state})` };
  }
  reformPending = chosen;
}

function closeAll(): void {
  for (const p of peers) {
    if (p.fd >= 0) libc.close(p.fd);
    p.fd = -1;
    if (p.state === "open" || p.state === "connecting") p.state = "closed";
  }
}

function command(line: string): void {
  const [cmd, arg] = line.trim().split(/\s+/);
  if (cmd === "status") out(`status ${status()}`);
  else if (cmd === "reform") reform(Number(arg));
  else if (cmd === "close") shutdownAndExit();
  else if (cmd) fatal(`unknown command ${JSON.stringify(line)}`);
}

function shutdownAndExit(): void {
  if (closing) return;
  closing = true;
  const st = status();
  closeAll();
  out(`closed ${st}`);
  process.exit(0);
}

let inbuf = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (t: string) => {
  inbuf += t;
  let i: number;
  while ((i = inbuf.indexOf("\n")) >= 0) {
    const line = inbuf.slice(0, i);
    inbuf = inbuf.slice(i + 1);
    command(line);
  }
});
process.stdin.on("end", shutdownAndExit);

if (!(cfg.peers > 0 && cfg.bytes > 0 && cfg.port > 0)) fatal(`bad config ${process.argv[2]}`);

// The driver: poll, then yield to the event loop (stdin). When nothing moved, poll(2) itself waits up
// to 10 ms for something to happen, so an idle child costs next to no CPU.
(async () => {
  let progressed = true;
  for (;;) {
    if (closing) return;
    try {
      progressed = tick(progressed ? 0 : 10);
    } catch (e) {
      fatal(`tick threw: ${(e as Error).stack ?? e}`);
    }
    if (!readySent && settled()) {
      readySent = true;
      out(`ready ${status()}`);
    }
    checkReform();
    await new Promise((r) => setTimeout(r, pfdPeers.length === 0 ? 10 : 0)); // nothing to poll: just wait for stdin
  }
})();
