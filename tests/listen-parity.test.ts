// listen-parity.test.ts — listen() promises to run a handler object written for Bun.listen
// unchanged; this file proves, scenario by scenario, that the handler observes the same things and
// the client sees the same bytes and the same end on both. Each scenario runs ONE handler object on
// Bun.listen first, live, recording a log (the handler calls in the order they were entered, each
// with what it observed, then what the client received and how its connection ended), then on
// listen() on each backend, and expects the logs to be equal: the expected values are Bun's own,
// never typed here, so a change in either runtime shows up as a difference. Only what
// docs/design.md ("Where it differs from Bun.listen") lists as matched is compared; its deliberate
// differences (throwing handlers, highWaterMark, UTF-16 offsets, a thrown non-Error,
// and after end() Bun closing at once and resetting a peer that sends more) are left out.
// terminate() is not here: Bun.listen runs close() inside terminate(), listen() after the handler
// returns (design.md lists it). Every wait is on a condition with a deadline.
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import net from "node:net";
import { listen } from "../src/index.ts";
import { BACKENDS, backendAvailable, type Backend, stopListenersAfterEach } from "./helpers/server.ts";
import { endOf, type ConnEnd } from "./helpers/sockets.ts";
import { waitFor, withTimeout } from "./helpers/wait.ts";

// bunfig.toml's [test] timeout is not applied by bun 1.4.5: set it here.
setDefaultTimeout(20_000);

const live = stopListenersAfterEach();
const HOST = "127.0.0.1";

/** Client sockets of the current test: destroyed after it, also when it failed half-way. */
const clients = new Set<net.Socket>();
afterEach(() => {
  for (const sock of clients) sock.destroy();
  clients.clear();
});

/** The part of a socket these handlers use: Bun's Socket and bunring's both fit it. */
interface ParitySocket {
  readonly readyState: number;
  readonly localAddress: string;
  readonly localPort: number;
  readonly localFamily: string;
  write(data: string | Uint8Array): number;
  end(data?: string | Uint8Array): number;
  shutdown(halfClose?: boolean): void;
  pause(): void;
  resume(): void;
  setNoDelay(noDelay?: boolean): boolean;
  setKeepAlive(enable?: boolean, initialDelay?: number): boolean;
}

/** A handler object, run unchanged by Bun.listen and by listen(). */
interface ParityHandler {
  open?(this: unknown, s: ParitySocket): void;
  data?(this: unknown, s: ParitySocket, bytes: Uint8Array): void;
  end?(this: unknown, s: ParitySocket): void;
  close?(this: unknown, s: ParitySocket, err?: Error): void;
}

/** What the client saw: the bytes it received, whether the server's FIN came, how it closed. */
interface ClientView {
  received: string;
  eof: boolean;
  /** ConnEnd.how: "EOF", an error code such as "ECONNRESET", or "close". */
  how?: string;
}

/** One run's record, compared between the runtimes. */
interface Log {
  /** The handler calls in the order they were entered, each with what it observed. */
  calls: string[];
  client: ClientView;
}

/** One handler call: its name (and bytes, for data) and what the handler observed during it. */
interface Call {
  call: string;
  saw: string[];
}

/** State of the run in progress (one connection per run); the handlers write to it. */
interface Run {
  calls: Call[];
  /** The listener's port (compared with socket.localPort). */
  port: number;
  paused: boolean;
  dataWhilePaused: boolean;
  dataCalls: number;
}

const newRun = (): Run => ({ calls: [], port: 0, paused: false, dataWhilePaused: false, dataCalls: 0 });
let run: Run = newRun();

/**
 * Logs a handler call as it is entered; what the handler observes later in the call goes into the
 * returned entry. Logging at entry, not at return, keeps the log in the order the calls began even
 * when one runs inside another: Bun.listen runs close() inside end() (it closes at once after end(),
 * listen() when the peer's FIN comes: a deliberate difference, docs/design.md).
 */
function enter(call: string): Call {
  const c: Call = { call, saw: [] };
  run.calls.push(c);
  return c;
}

/**
 * A data call. Consecutive ones that observed nothing are merged into one entry, so how TCP
 * happened to cut the stream into chunks (which no runtime promises) does not make the logs differ;
 * the bytes and their order do.
 */
function enterData(bytes: Uint8Array): Call {
  run.dataCalls++;
  const text = Buffer.from(bytes).toString();
  const last = run.calls.at(-1);
  if (last !== undefined && last.call.startsWith("data:") && last.saw.length === 0) {
    last.call += text;
    return last;
  }
  return enter(`data:${text}`);
}

const logged = (calls: Call[]): string[] => calls.map((c) => (c.saw.length === 0 ? c.call : `${c.call} -> ${c.saw.join(", ")}`));

type Server = "Bun.listen" | Backend;

interface Scenario {
  allowHalfOpen?: boolean;
  handler: ParityHandler;
  /** Drives one connection to `port` and returns what the client saw once it has closed. */
  client(port: number): Promise<ClientView>;
}

/**
 * Runs the scenario on `server`: one connection, until both the client and the server's close()
 * are done, then stops the listener (so a second close() would be in the log too).
 */
async function runOn(server: Server, sc: Scenario): Promise<Log> {
  run = newRun();
  const closed = () => waitFor(() => run.calls.some((c) => c.call === "close"), () => `close() on ${server} (calls: ${logged(run.calls).join(" | ")})`);
  let client: ClientView;
  if (server === "Bun.listen") {
    const l = Bun.listen({ hostname: HOST, port: 0, allowHalfOpen: sc.allowHalfOpen ?? false, socket: sc.handler });
    try {
      run.port = l.port;
      client = await sc.client(l.port);
      await closed();
    } finally {
      l.stop(true);
    }
  } else {
    const l = listen({ hostname: HOST, port: 0, backend: server, allowHalfOpen: sc.allowHalfOpen ?? false, socket: sc.handler });
    live.add(l);
    run.port = l.port;
    client = await sc.client(l.port);
    await closed();
    await withTimeout(l.stop(true), 10_000, `stop(true) on ${server}`);
  }
  return { calls: logged(run.calls), client };
}

/** Runs the scenario on Bun.listen, then on listen() on `backend`, and expects the same log. */
async function expectParity(backend: Backend, sc: Scenario): Promise<void> {
  const onBun = await runOn("Bun.listen", sc);
  const onBunring = await runOn(backend, sc);
  expect(onBunring).toEqual(onBun);
}

/** A client connection whose every byte and end is recorded from the start. */
interface Client {
  sock: net.Socket;
  received(): string;
  eof(): boolean;
  closed: Promise<ConnEnd>;
}

/** Connects (resolving once connected), recording bytes and the server's FIN before anything can arrive. */
async function dial(port: number, allowHalfOpen = false): Promise<Client> {
  const sock = net.connect({ port, host: HOST, allowHalfOpen });
  clients.add(sock);
  const parts: Buffer[] = [];
  let eof = false;
  sock.on("data", (b: Buffer) => parts.push(b));
  sock.on("end", () => {
    eof = true;
  });
  const closed = endOf(sock);
  const c: Client = { sock, received: () => Buffer.concat(parts).toString(), eof: () => eof, closed };
  const connected = new Promise<Client>((resolve, reject) => {
    sock.once("connect", () => resolve(c));
    closed.then((end) => reject(end.error ?? new Error("closed before it connected")));
  });
  return withTimeout(connected, 10_000, `connect to ${HOST}:${port}`);
}

/** Waits for the connection to close; what the client received and how it ended. */
async function finish(c: Client): Promise<ClientView> {
  const end = await withTimeout(c.closed, 10_000, () => `the client connection to close (received ${JSON.stringify(c.received())}, eof ${c.eof()})`);
  return { received: c.received(), eof: end.eof, how: end.how };
}

/** Writes and resolves once node handed the bytes to the kernel (so separate writes leave separately). */
function send(c: Client, text: string): Promise<void> {
  return withTimeout(
    new Promise<void>((resolve, reject) => c.sock.write(text, (err) => (err ? reject(err) : resolve()))),
    10_000,
    `write ${JSON.stringify(text)}`,
  );
}

/** A half-open client: "a", then after the server's FIN "b" (its side is still open), then its own FIN. */
async function halfOpenClient(port: number): Promise<Client> {
  const c = await dial(port, true);
  await send(c, "a");
  await waitFor(() => c.eof(), () => `the server's FIN (received ${JSON.stringify(c.received())})`);
  await send(c, "b");
  c.sock.end();
  return c;
}

for (const backend of BACKENDS) {
describe.skipIf(!backendAvailable(backend))(`listen() [${backend}] and Bun.listen run one handler alike`, () => {
  test("`this` inside open, data, end and close is the socket", async () => {
    await expectParity(backend, {
      handler: {
        open(s) {
          enter("open").saw.push(`this===socket:${this === s}`);
        },
        data(s, bytes) {
          enterData(bytes).saw.push(`this===socket:${this === s}`);
        },
        end(s) {
          enter("end").saw.push(`this===socket:${this === s}`);
        },
        close(s) {
          enter("close").saw.push(`this===socket:${this === s}`);
        },
      },
      async client(port) {
        const c = await dial(port);
        await send(c, "hi");
        c.sock.end();
        return finish(c);
      },
    });
  });

  test("readyState in open, after shutdown(), after end(), in close", async () => {
    await expectParity(backend, {
      handler: {
        open(s) {
          enter("open").saw.push(`readyState:${s.readyState}`);
        },
        data(s, bytes) {
          const call = enterData(bytes);
          s.shutdown();
          call.saw.push(`after shutdown() readyState:${s.readyState}`);
          s.end();
          call.saw.push(`after end() readyState:${s.readyState}`);
        },
        close(s) {
          enter("close").saw.push(`readyState:${s.readyState}`);
        },
      },
      async client(port) {
        const c = await dial(port); // ends its side when the server's FIN comes
        await send(c, "x");
        return finish(c);
      },
    });
  });

  test('end("bye") inside data(): a half-open peer\'s later bytes and FIN give no data or end, only close; the client gets "bye" and EOF', async () => {
    await expectParity(backend, {
      allowHalfOpen: true,
      handler: {
        data(s, bytes) {
          const call = enterData(bytes);
          if (run.dataCalls === 1) call.saw.push(`end("bye"):${s.end("bye")}`);
        },
        end() {
          enter("end");
        },
        close() {
          enter("close");
        },
      },
      async client(port) {
        const c = await halfOpenClient(port);
        const seen = await finish(c);
        // Not `how`: Bun.listen closes at once after end() and resets a peer that sends more; listen()
        // waits for the peer's FIN (docs/design.md, a deliberate difference).
        return { received: seen.received, eof: seen.eof };
      },
    });
  });

  for (const allowHalfOpen of [false, true]) {
    test(`shutdown() inside data() after write("bye"): write() then -1, later bytes still come, the peer's FIN gives close without end (allowHalfOpen ${allowHalfOpen})`, async () => {
      await expectParity(backend, {
        allowHalfOpen,
        handler: {
          data(s, bytes) {
            const call = enterData(bytes);
            if (run.dataCalls > 1) return;
            call.saw.push(`write("bye"):${s.write("bye")}`);
            s.shutdown();
            call.saw.push(`after shutdown() write("more"):${s.write("more")} readyState:${s.readyState}`);
          },
          end() {
            enter("end");
          },
          close() {
            enter("close");
          },
        },
        async client(port) {
          return finish(await halfOpenClient(port));
        },
      });
    });
  }

  for (const allowHalfOpen of [false, true]) {
    test(`allowHalfOpen ${allowHalfOpen}: a client that writes then ends sees open, data, end, close, and what end() wrote back`, async () => {
      await expectParity(backend, {
        allowHalfOpen,
        handler: {
          open() {
            enter("open");
          },
          data(_s, bytes) {
            enterData(bytes);
          },
          end(s) {
            enter("end").saw.push(`write("bye"):${s.write("bye")}`);
            if (allowHalfOpen) s.end(); // half-open: ending is the handler's job
          },
          close() {
            enter("close");
          },
        },
        async client(port) {
          const c = await dial(port);
          await send(c, "one,");
          await send(c, "two,");
          await send(c, "three");
          c.sock.end();
          return finish(c);
        },
      });
    });
  }

  test("pause() in open(), resume() from a 50 ms timer: no data while paused, then every byte in order", async () => {
    await expectParity(backend, {
      handler: {
        open(s) {
          s.pause();
          run.paused = true;
          enter("open").saw.push("pause()");
          setTimeout(() => {
            run.paused = false;
            enter("timer").saw.push(`resume(), data while paused:${run.dataWhilePaused}`);
            s.resume();
          }, 50);
        },
        data(_s, bytes) {
          if (run.paused) run.dataWhilePaused = true;
          enterData(bytes);
        },
        end() {
          enter("end").saw.push(`data while paused:${run.dataWhilePaused}`);
        },
        close() {
          enter("close");
        },
      },
      async client(port) {
        const c = await dial(port);
        for (let i = 0; i < 5; i++) await send(c, `chunk ${i};`);
        c.sock.end();
        return finish(c);
      },
    });
  });

  test('write("") and write(new Uint8Array(0)) return 0; write() after end() returns -1; end() twice', async () => {
    await expectParity(backend, {
      handler: {
        open(s) {
          const call = enter("open");
          call.saw.push(`write(""):${s.write("")}`, `write(new Uint8Array(0)):${s.write(new Uint8Array(0))}`);
          s.end("done");
          call.saw.push(`after end("done") write("x"):${s.write("x")} readyState:${s.readyState}`);
          s.end();
          call.saw.push(`after a second end() readyState:${s.readyState}`);
        },
        data(_s, bytes) {
          enterData(bytes);
        },
        end() {
          enter("end");
        },
        close() {
          enter("close");
        },
      },
      async client(port) {
        return finish(await dial(port));
      },
    });
  });

  test("setNoDelay(true) and setKeepAlive(true, 1000) return true; localPort is the listener's, localAddress 127.0.0.1", async () => {
    await expectParity(backend, {
      handler: {
        open(s) {
          enter("open").saw.push(
            `setNoDelay(true):${s.setNoDelay(true)}`,
            `setKeepAlive(true, 1000):${s.setKeepAlive(true, 1000)}`,
            `localPort===listener.port:${s.localPort === run.port}`,
            `localAddress:${s.localAddress}`,
            `localFamily:${s.localFamily}`,
          );
          s.end();
        },
        data(_s, bytes) {
          enterData(bytes); // Bun.listen requires a data or drain handler
        },
        close() {
          enter("close");
        },
      },
      async client(port) {
        return finish(await dial(port));
      },
    });
  });
});
}
