// index.ts — the public API of bunring: serve() an echo server on io_uring or epoll, probe() the
// kernel, and the types that go with them.
export { serve, probe, type Server, type ServerStats, type ProbeReport } from "./server.ts";
export { DEFAULTS, type ServeOptions, type Backend } from "./options.ts";
export { listen, LISTEN_DEFAULTS, type Listener, type ListenStats, type ListenOptions, type SocketHandler, type BinaryType, type Socket, type ReadyState, type WriteData } from "./listen.ts";
