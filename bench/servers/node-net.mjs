// node-net.mjs — the benchmark's node:net echo server (run with `node`): every connection is piped
// into itself, so node's own backpressure (pause on a full write buffer, resume on drain) keeps it
// correct for any traffic. Socket errors (e.g. a client resetting) only close that socket.
//   node bench/servers/node-net.mjs --port 6380 [--host 127.0.0.1]
import net from "node:net";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: { port: { type: "string" }, host: { type: "string", default: "127.0.0.1" } },
  strict: true,
});
const port = Number(values.port);
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  process.stderr.write(`node-net: --port must be an integer in 1..65535, got ${JSON.stringify(values.port)}\n`);
  process.exit(2);
}

const server = net.createServer({ noDelay: true }, (socket) => {
  socket.on("error", () => socket.destroy());
  socket.pipe(socket);
});
server.on("error", (err) => {
  process.stderr.write(`node-net: ${err.message}\n`);
  process.exit(1);
});
server.listen({ port, host: values.host, backlog: 4096 }, () => {
  process.stdout.write(`node-net listening on ${values.host}:${port}\n`);
});
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => process.exit(0));
