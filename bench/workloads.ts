// workloads.ts — what the load generator sends and what it must get back, for `bun run client` and
// `bun run bench`: the echo workload (the default), a custom request/reply given on the command line
// (backslash escapes or @FILE), and the RESP2 presets (resp-ping, resp-get, resp-set) built into a
// request/reply table for the load generator (ffi/loadgen.ts, LoadgenTable), plus the step resp-get
// needs before it is measured: SETting its keys.
import { readFileSync } from "node:fs";
import { connect } from "node:net";
import { LOADGEN_LIMITS, type LoadgenTable } from "../ffi/loadgen.ts";
import { UsageError } from "../src/flags.ts";

export const RESP_PRESETS = ["resp-ping", "resp-get", "resp-set"] as const;
export type RespPreset = (typeof RESP_PRESETS)[number];
export type WorkloadName = "echo" | "custom" | RespPreset;

export const RESP_DEFAULTS = { keySpace: 1000, valueSize: 3 } as const;
export const RESP_LIMITS = { maxKeySpace: 1_000_000, maxValueSize: 1 << 20 } as const;

export interface Workload {
  name: WorkloadName;
  /** The request/reply table; undefined for echo. */
  table?: LoadgenTable;
  /** resp-get/resp-set: the keys and value size. */
  keySpace?: number;
  valueSize?: number;
  /** Run once before the load (resp-get: SET every key), against host:port. */
  prepare?: (host: string, port: number) => Promise<void>;
}

/** "\r\n", "\x00", "\\": the escapes \r \n \t \\ \xHH; any other backslash is a usage error. */
export function decodeEscapes(flag: string, raw: string): Uint8Array {
  const out: number[] = [];
  const text = new TextEncoder().encode(raw);
  for (let i = 0; i < text.length; i++) {
    const b = text[i]!;
    if (b !== 0x5c) {
      out.push(b);
      continue;
    }
    const next = String.fromCharCode(text[i + 1] ?? 0);
    const hex = String.fromCharCode(text[i + 2] ?? 0, text[i + 3] ?? 0);
    const simple: Record<string, number> = { r: 13, n: 10, t: 9, "\\": 92 };
    if (next in simple) {
      out.push(simple[next]!);
      i++;
    } else if (next === "x" && /^[0-9a-fA-F]{2}$/.test(hex)) {
      out.push(parseInt(hex, 16));
      i += 3;
    } else {
      throw new UsageError(`${flag}: unknown escape at byte ${i} of ${JSON.stringify(raw)}; use \\r \\n \\t \\\\ or \\xHH`);
    }
  }
  return new Uint8Array(out);
}

/** A --request/--expect value: @FILE reads the file's bytes as they are, else decodeEscapes. */
export function bytesArg(flag: string, raw: string): Uint8Array {
  let bytes: Uint8Array;
  if (raw.startsWith("@")) {
    try {
      bytes = new Uint8Array(readFileSync(raw.slice(1)));
    } catch (e) {
      throw new UsageError(`${flag}: cannot read ${JSON.stringify(raw.slice(1))}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  } else {
    bytes = decodeEscapes(flag, raw);
  }
  if (bytes.length < 1 || bytes.length > LOADGEN_LIMITS.maxLength) {
    throw new UsageError(`${flag} must be 1 to ${LOADGEN_LIMITS.maxLength} bytes, got ${bytes.length}`);
  }
  return bytes;
}

export function customWorkload(request: Uint8Array, reply: Uint8Array): Workload {
  return { name: "custom", table: { requests: request, requestLen: request.length, replies: reply, replyLen: reply.length } };
}

const enc = new TextEncoder();

/** Fixed-width key names: key:000000 ... (at least 6 digits, more when the key space needs them). */
export function respKey(k: number, keySpace: number): string {
  return `key:${String(k).padStart(Math.max(6, String(keySpace - 1).length), "0")}`;
}

/** Key k's value: valueSize letters and digits from a generator seeded by k (so a GET answered with
 * another key's value is a mismatch). */
function respValue(k: number, valueSize: number, out: Uint8Array, at: number): void {
  const ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789";
  let x = (k + 1) * 0x9e3779b1;
  for (let i = 0; i < valueSize; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[at + i] = ALPHABET.charCodeAt((x >>> 0) % 36);
  }
}

function bulk(s: string): string {
  return `$${enc.encode(s).length}\r\n${s}\r\n`;
}

/** Lays out n equal-length entries end to end; make(k, into, at) writes entry k. */
function table(n: number, len: number, make: (k: number, out: Uint8Array, at: number) => void): Uint8Array {
  const out = new Uint8Array(n * len);
  for (let k = 0; k < n; k++) make(k, out, k * len);
  return out;
}

/** SET commands for every key, end to end (entry k = SET key:k value_k). */
function setTable(keySpace: number, valueSize: number): { bytes: Uint8Array; len: number } {
  const head = (k: number) => `*3\r\n$3\r\nSET\r\n${bulk(respKey(k, keySpace))}$${valueSize}\r\n`;
  const len = head(0).length + valueSize + 2;
  const bytes = table(keySpace, len, (k, out, at) => {
    const h = enc.encode(head(k));
    out.set(h, at);
    respValue(k, valueSize, out, at + h.length);
    out[at + len - 2] = 13;
    out[at + len - 1] = 10;
  });
  return { bytes, len };
}

export function checkRespSizes(flag: string, keySpace: number, valueSize: number): void {
  const setLen = `*3\r\n$3\r\nSET\r\n${bulk(respKey(0, keySpace))}$${valueSize}\r\n`.length + valueSize + 2;
  if (setLen * keySpace > LOADGEN_LIMITS.maxTableBytes) {
    throw new UsageError(
      `${flag}: ${keySpace} keys × ${valueSize}-byte values make a ${setLen * keySpace}-byte table, more than ${LOADGEN_LIMITS.maxTableBytes}`,
    );
  }
}

/** A RESP2 preset as a request/reply table. */
export function respWorkload(name: RespPreset, keySpace: number = RESP_DEFAULTS.keySpace, valueSize: number = RESP_DEFAULTS.valueSize): Workload {
  if (name === "resp-ping") {
    const req = enc.encode("*1\r\n$4\r\nPING\r\n");
    const rep = enc.encode("+PONG\r\n");
    return { name, table: { requests: req, requestLen: req.length, replies: rep, replyLen: rep.length } };
  }
  const sets = setTable(keySpace, valueSize);
  if (name === "resp-set") {
    const rep = enc.encode("+OK\r\n");
    return { name, keySpace, valueSize, table: { requests: sets.bytes, requestLen: sets.len, replies: rep, replyLen: rep.length } };
  }
  const getLen = enc.encode(`*2\r\n$3\r\nGET\r\n${bulk(respKey(0, keySpace))}`).length;
  const gets = table(keySpace, getLen, (k, out, at) => out.set(enc.encode(`*2\r\n$3\r\nGET\r\n${bulk(respKey(k, keySpace))}`), at));
  const replyHead = enc.encode(`$${valueSize}\r\n`);
  const replyLen = replyHead.length + valueSize + 2;
  const replies = table(keySpace, replyLen, (k, out, at) => {
    out.set(replyHead, at);
    respValue(k, valueSize, out, at + replyHead.length);
    out[at + replyLen - 2] = 13;
    out[at + replyLen - 1] = 10;
  });
  return {
    name,
    keySpace,
    valueSize,
    table: { requests: gets, requestLen: getLen, replies, replyLen },
    prepare: (host, port) => respPreload(host, port, sets.bytes, sets.len, keySpace),
  };
}

/**
 * Sends `count` SET commands (entries of `len` bytes in `sets`) on one connection, pipelined in
 * batches of 1000, and checks that every reply is +OK. Rejects on anything else, or after 30 s.
 */
export function respPreload(host: string, port: number, sets: Uint8Array, len: number, count: number, timeoutMs = 30_000): Promise<void> {
  const OK = "+OK\r\n";
  const BATCH = 1000;
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port });
    let sentUpTo = 0;
    let got = "";
    let replies = 0;
    const finish = (e?: Error) => {
      clearTimeout(timer);
      socket.destroy();
      if (e) reject(e);
      else resolve();
    };
    const timer = setTimeout(() => finish(new Error(`SETting ${count} keys took more than ${timeoutMs / 1000} s (${replies} done)`)), timeoutMs);
    const sendBatch = () => {
      const next = Math.min(count, sentUpTo + BATCH);
      socket.write(sets.subarray(sentUpTo * len, next * len));
      sentUpTo = next;
    };
    socket.once("connect", sendBatch);
    socket.on("error", (e) => finish(new Error(`SETting the keys: ${e.message}`)));
    socket.on("close", () => finish(new Error(`the server closed the connection after ${replies} of ${count} SETs`)));
    socket.on("data", (chunk: Buffer) => {
      got += chunk.toString("latin1");
      while (got.length >= OK.length) {
        if (!got.startsWith(OK)) {
          finish(new Error(`SET ${respKey(replies, count)} was answered ${JSON.stringify(got.slice(0, 60))}, not +OK`));
          return;
        }
        got = got.slice(OK.length);
        replies++;
      }
      if (replies === count) finish();
      else if (replies === sentUpTo) sendBatch();
    });
  });
}
