/**
 * Client sockets and ports: connect with a deadline and get a handle that counts what arrives and
 * says how the connection ended (EOF, an error code, or a plain close), find a free port, and tell
 * whether a port refuses connections. The verifying echo clients are in clients.ts.
 */
import net from "node:net";
import { withTimeout } from "./wait.ts";

/** How a connection ended, seen from the client. */
export interface ConnEnd {
  /** The socket closed because of an error (then `error` is it). */
  hadError: boolean;
  error?: NodeJS.ErrnoException;
  /** The peer's FIN arrived before the close. */
  eof: boolean;
  /** The error's code (e.g. "ECONNRESET") if any, else "EOF" if the peer's FIN came, else "close". */
  how: string;
  /** performance.now() at the close. */
  at: number;
}

/**
 * Resolves when `sock` has closed, with how it ended. Attach it before anything can happen on the
 * socket (it listens for 'end' and 'error'; having an 'error' listener also means an error ends the
 * connection instead of throwing from the event loop).
 */
export function endOf(sock: net.Socket): Promise<ConnEnd> {
  let eof = false;
  let error: NodeJS.ErrnoException | undefined;
  sock.on("end", () => {
    eof = true;
  });
  sock.on("error", (e: NodeJS.ErrnoException) => {
    error ??= e;
  });
  return new Promise((resolve) => {
    sock.once("close", (hadError) =>
      resolve({ hadError, error, eof, how: error ? (error.code ?? error.message) : eof ? "EOF" : "close", at: performance.now() }),
    );
  });
}

/** A connected client socket: bytes received are counted (and dropped), its end is a promise. */
export interface Conn {
  sock: net.Socket;
  received: () => number;
  closed: Promise<ConnEnd>;
}

/** Connects and resolves once connected; rejects on a connect error or after `timeoutMs`. */
export function connect(port: number, host = "127.0.0.1", timeoutMs = 10_000): Promise<Conn> {
  const sock = net.connect({ port, host });
  let received = 0;
  sock.on("data", (b: Buffer) => {
    received += b.length;
  });
  const closed = endOf(sock);
  const connected = new Promise<Conn>((resolve, reject) => {
    sock.once("connect", () => resolve({ sock, received: () => received, closed }));
    closed.then((end) => reject(end.error ?? new Error(`connection to ${host}:${port} closed before it connected`)));
  });
  return withTimeout(connected, timeoutMs, `connect to ${host}:${port}`).catch((e: unknown) => {
    sock.destroy();
    throw e;
  });
}

/** A port nothing listens on right now (bound then released by the kernel's ephemeral choice). */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, host, () => r()));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/** Resolves true if a TCP connect to host:port is refused (nothing listening), false otherwise. */
export function refused(port: number, host = "127.0.0.1"): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host });
    s.once("connect", () => {
      s.destroy();
      resolve(false);
    });
    s.once("error", (e: NodeJS.ErrnoException) => resolve(e.code === "ECONNREFUSED"));
  });
}
