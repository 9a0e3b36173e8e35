/*
 * bunring.h — the whole C ABI of the bunring shim (libbunring.so).
 *
 * The shim owns the event loops (io_uring or epoll) and runs them on native threads it creates; the
 * TypeScript side (ffi/) fills a bunring_config, calls bunring_server_start, maps the stats block once
 * and later calls bunring_server_stop / bunring_server_done / bunring_server_free. No function here
 * exits or aborts: failures come back as a negative errno plus a message in a bunring_error.
 *
 * Every struct here is plain data with fixed-width fields so ffi/layout.ts can mirror it by offset.
 */
#ifndef BUNRING_H
#define BUNRING_H

#include <stddef.h>
#include <stdint.h>

#define BUNRING_API __attribute__((visibility("default")))

#define BUNRING_ABI_VERSION 4u

enum bunring_backend {
    BUNRING_BACKEND_URING = 0,
    BUNRING_BACKEND_EPOLL = 1,
};

#define BUNRING_MAX_CPUS 256u
#define BUNRING_MAX_THREADS 64u

/*
 * Allowed range of each numeric config field, inclusive. bunring_server_start checks every field
 * against these, and bunring_limit_entry exports them, so the TS option table (src/option-table.ts)
 * shows and checks exactly these numbers: they are written here only.
 */
#define BUNRING_PORT_MAX 65535u
#define BUNRING_BUFFER_SIZE_MIN 512u
#define BUNRING_BUFFER_SIZE_MAX (1u << 20)
#define BUNRING_BUFFER_COUNT_MIN 16u /* and a power of two */
#define BUNRING_BUFFER_COUNT_MAX 32768u
#define BUNRING_MAX_CONNECTIONS_MAX 1000000u /* whole server */
#define BUNRING_MAX_PENDING_MIN 1024u
#define BUNRING_MAX_PENDING_MAX (1u << 30)
#define BUNRING_BACKLOG_MAX 65535u
#define BUNRING_DRAIN_MS_MAX 3600000u
#define BUNRING_IDLE_TIMEOUT_MS_MAX 86400000u
#define BUNRING_STALL_TIMEOUT_MS_MAX 86400000u
/* The pool must hold what one connection may hold at its pause limit (see conn.c):
 * buffer_count >= max(4, 2 * ceil(max_pending_bytes / buffer_size)). */

/* Server configuration. Every field is validated again by the shim against the limits above (the TS
 * side validates first and names the option as the user spelled it). Layout: ffi/ reads every offset
 * from bunring_layout_entry. */
struct bunring_config {
    uint32_t backend;           /* enum bunring_backend */
    uint32_t port;              /* 0 = ephemeral */
    uint32_t threads;           /* loops, 1..BUNRING_MAX_THREADS */
    uint32_t buffer_size;       /* bytes per receive buffer */
    uint32_t buffer_count;      /* buffers per loop, power of two */
    uint32_t max_connections;   /* open at once across the whole server */
    uint32_t max_pending_bytes; /* per connection: receiving pauses at this many unsent bytes */
    uint32_t backlog;           /* listen(2) backlog, 1..BUNRING_BACKLOG_MAX */
    uint32_t drain_ms;          /* stop(): how long in-flight echoes may finish */
    uint32_t idle_timeout_ms;   /* 0 = never; else close connections idle this long */
    uint32_t stall_timeout_ms;  /* grace of a paused peer while the pool is short (see conn.c) */
    uint32_t flags;             /* BUNRING_FLAG_* */
    uint32_t cpu_count;         /* entries used in cpus[]; 0 = no pinning */
    int32_t cpus[BUNRING_MAX_CPUS];
};

#define BUNRING_FLAG_SQPOLL (1u << 0)      /* ask for IORING_SETUP_SQPOLL */
#define BUNRING_FLAG_NO_DEFER (1u << 1)    /* do not use DEFER_TASKRUN/SINGLE_ISSUER (testing) */
#define BUNRING_FLAG_FORCE_NO_URING (1u << 2) /* behave as if io_uring were unavailable (testing) */
#define BUNRING_FLAG_NO_FIXED_FILES (1u << 3) /* uring: ordinary fds instead of direct descriptors */
#define BUNRING_FLAG_HANDLER (1u << 4)    /* handler mode: bytes go to JS through a channel per loop */
#define BUNRING_FLAG_REUSE_PORT (1u << 5) /* every loop's socket SO_REUSEPORT, no "port is free" check:
                                             several servers (Workers, processes) share the port */
#define BUNRING_FLAGS_ALL 0x3fu

/* An error coming back from the shim: negative errno (or 0) and a human message. */
struct bunring_error {
    int32_t code;
    char message[252];
};

/* io_uring ring features actually in use by a running uring server, and probe results. */
#define BUNRING_FEAT_SINGLE_ISSUER (1u << 0)
#define BUNRING_FEAT_DEFER_TASKRUN (1u << 1)
#define BUNRING_FEAT_COOP_TASKRUN (1u << 2)
#define BUNRING_FEAT_SQPOLL (1u << 3)
#define BUNRING_FEAT_REGISTERED_RING_FD (1u << 4)
#define BUNRING_FEAT_MULTISHOT_ACCEPT (1u << 5)
#define BUNRING_FEAT_MULTISHOT_RECV (1u << 6)
#define BUNRING_FEAT_BUF_RING (1u << 7)
#define BUNRING_FEAT_RECV_BUNDLE (1u << 8)
#define BUNRING_FEAT_BUF_RING_INC (1u << 9)
#define BUNRING_FEAT_FIXED_FILES (1u << 10)
#define BUNRING_FEAT_NO_SQARRAY (1u << 11)
#define BUNRING_FEAT_SEND_BUNDLE (1u << 12)
#define BUNRING_FEAT_COUNT 13u

/*
 * Per-loop statistics: BUNRING_STAT_COUNT 64-bit counters, each written only by its loop thread
 * (jsDirect*: only by the JS thread) with plain (relaxed) stores and read by TS without locks. A server with N loops exposes N blocks
 * of BUNRING_STATS_STRIDE counters (padded so loops never share a cache line); TS sums them.
 * Names come from bunring_stat_name() so ffi/ can check its copy of this order at load time.
 */
enum bunring_stat {
    BUNRING_STAT_CONN_ACCEPTED = 0,   /* connections accepted and served */
    BUNRING_STAT_CONN_OPEN,           /* gauge: connections open now */
    BUNRING_STAT_CONN_CLOSED_EOF,     /* peer closed (after we echoed everything) */
    BUNRING_STAT_CONN_CLOSED_RESET,   /* ECONNRESET / EPIPE / other socket error */
    BUNRING_STAT_CONN_CLOSED_STOP,    /* closed by stop() */
    BUNRING_STAT_CONN_CLOSED_IDLE,    /* closed by idle timeout */
    BUNRING_STAT_CONN_REJECTED,       /* closed at once: maxConnections reached */
    BUNRING_STAT_ACCEPT_ERRORS,       /* accept failed (EMFILE, ENFILE, ENOMEM, ...) */
    BUNRING_STAT_BYTES_IN,
    BUNRING_STAT_BYTES_OUT,
    BUNRING_STAT_BYTES_DISCARDED,     /* received after stop() began: not echoed, dropped */
    BUNRING_STAT_RECV_COMPLETIONS,    /* successful receives (uring CQEs / epoll recv calls) */
    BUNRING_STAT_SEND_COMPLETIONS,    /* successful sends */
    BUNRING_STAT_SHORT_SENDS,         /* sends that moved fewer bytes than asked */
    BUNRING_STAT_SEND_EAGAIN,         /* epoll: send would block, bytes queued */
    BUNRING_STAT_ENOBUFS,             /* no receive buffer was free */
    BUNRING_STAT_PAUSES,              /* times a connection hit maxPendingBytes */
    BUNRING_STAT_PAUSED_NOW,          /* gauge: connections paused now */
    BUNRING_STAT_RECV_REARMS,         /* multishot recv re-armed after it ended */
    BUNRING_STAT_ACCEPT_REARMS,       /* multishot accept re-armed after it ended */
    BUNRING_STAT_STALE_COMPLETIONS,   /* completions for a closed connection (generation mismatch) */
    BUNRING_STAT_LOOP_ITERATIONS,
    BUNRING_STAT_WAIT_CALLS,          /* io_uring_enter / epoll_wait calls */
    BUNRING_STAT_ALLOCS_AFTER_START,  /* heap allocations after the loop started: must stay 0 */
    BUNRING_STAT_BUFFERS_TOTAL,       /* gauge: receive buffers owned by the loop */
    BUNRING_STAT_BUFFERS_IN_USE,      /* gauge: buffers holding unechoed bytes */
    BUNRING_STAT_ERRORS,              /* unexpected errors (not peer behaviour) */
    BUNRING_STAT_CONN_CLOSED_STALLED, /* closed: paused (peer not reading) while the pool ran short */
    BUNRING_STAT_CONN_REFUSED_STOPPING, /* accepted after stop() began: closed unserved */
    BUNRING_STAT_BUFFERS_PAUSED,      /* gauge: buffers held by paused connections */
    BUNRING_STAT_PRESSURE_EVENTS,     /* times the free pool fell to the reserve kept for flowing connections */
    BUNRING_STAT_JS_EVENTS,           /* handler mode: events published to JS */
    BUNRING_STAT_JS_COMMANDS,         /* handler mode: commands taken from JS */
    BUNRING_STAT_JS_DOORBELLS,        /* handler mode: times the loop woke the sleeping JS thread */
    BUNRING_STAT_JS_WAKEUPS,          /* handler mode: times JS woke the sleeping loop */
    BUNRING_STAT_JS_DIRECT_SENDS,     /* handler mode: sends the JS thread made itself (bunring_js_send) */
    BUNRING_STAT_JS_DIRECT_BYTES,     /* ... and their bytes (not in bytesOut, which counts the loop's) */
    BUNRING_STAT_JS_DIRECT_SHORT,     /* ... of them, sends that took less than asked (TS adds it to shortSends) */
    BUNRING_STAT_JS_DIRECT_EAGAIN,    /* JS-thread sends that found the socket full (TS adds it to sendEagain) */
    BUNRING_STAT_COUNT
};
/* Room for the counters still to come (handler mode's among them) without changing the stride, which
 * is part of the ABI: >= BUNRING_STAT_COUNT, a multiple of 8 (whole 64-byte lines). */
#define BUNRING_STATS_STRIDE 64u

/*
 * user_data layout (io_uring): every operation's context packed into the 64-bit user_data.
 *
 *   bits  0..7   op          enum bunring_op
 *   bits  8..23  buffer id   provided-buffer id (send: the buffer being echoed), 0..65535
 *   bits 24..43  slot        connection slot in the loop's table, 0..(2^20 - 1)
 *   bits 44..63  generation  slot generation, 0..(2^20 - 1), bumped each time the slot is freed
 *
 * A completion whose generation differs from its slot's current one belongs to a connection that
 * is gone (even if a new connection now has the same fd or slot) and is only used to return its
 * buffer. Encode/decode are the only code that knows these shifts.
 */
enum bunring_op {
    BUNRING_OP_ACCEPT = 1,
    BUNRING_OP_RECV = 2,
    BUNRING_OP_SEND = 3,
    BUNRING_OP_CANCEL = 4,
    BUNRING_OP_WAKE = 5,
    BUNRING_OP_TIMEOUT = 6,
    BUNRING_OP_CLOSE = 7,
    BUNRING_OP_POLL = 8, /* handler mode: watching a paused connection for a reset */
};

#define BUNRING_UD_OP_BITS 8u
#define BUNRING_UD_BID_BITS 16u
#define BUNRING_UD_SLOT_BITS 20u
#define BUNRING_UD_GEN_BITS 20u
#define BUNRING_UD_MAX_SLOT ((1u << BUNRING_UD_SLOT_BITS) - 1u)
#define BUNRING_UD_MAX_GEN ((1u << BUNRING_UD_GEN_BITS) - 1u)

static inline uint64_t bunring_ud_pack(uint32_t op, uint32_t bid, uint32_t slot, uint32_t gen)
{
    return (uint64_t)(op & 0xffu) | ((uint64_t)(bid & 0xffffu) << 8) |
           ((uint64_t)(slot & BUNRING_UD_MAX_SLOT) << 24) | ((uint64_t)(gen & BUNRING_UD_MAX_GEN) << 44);
}
static inline uint32_t bunring_ud_op(uint64_t ud) { return (uint32_t)(ud & 0xffu); }
static inline uint32_t bunring_ud_bid(uint64_t ud) { return (uint32_t)((ud >> 8) & 0xffffu); }
static inline uint32_t bunring_ud_slot(uint64_t ud) { return (uint32_t)((ud >> 24) & BUNRING_UD_MAX_SLOT); }
static inline uint32_t bunring_ud_gen(uint64_t ud) { return (uint32_t)((ud >> 44) & BUNRING_UD_MAX_GEN); }

/* Exported copies of the above so tests can check round-trips through the real code. */
BUNRING_API uint64_t bunring_ud_encode(uint32_t op, uint32_t bid, uint32_t slot, uint32_t gen);
BUNRING_API uint32_t bunring_ud_decode_op(uint64_t ud);
BUNRING_API uint32_t bunring_ud_decode_bid(uint64_t ud);
BUNRING_API uint32_t bunring_ud_decode_slot(uint64_t ud);
BUNRING_API uint32_t bunring_ud_decode_gen(uint64_t ud);

/* ---- library info ---- */
BUNRING_API uint32_t bunring_abi_version(void);
BUNRING_API uint32_t bunring_stat_count(void);
BUNRING_API const char *bunring_stat_name(uint32_t index);   /* NULL past the end */
BUNRING_API const char *bunring_feature_name(uint32_t bit);  /* NULL past the end */
/* The layout of every struct in this header, for ffi/: entry `index` is a struct ("bunring_config",
 * out = {0, sizeof}) or one of its fields ("bunring_config.port", out = {offsetof, sizeof}); NULL
 * past the last entry. ffi/ takes every offset from here, so TS never types an offset by hand. */
BUNRING_API const char *bunring_layout_entry(uint32_t index, uint32_t out[2]);
/* The ranges above: entry `index` names a config field ("buffer_size") with out = {min, max}; NULL
 * past the last entry. */
BUNRING_API const char *bunring_limit_entry(uint32_t index, uint32_t out[2]);

/* What the running kernel supports: BUNRING_FEAT_* bits, or 0 with err filled if io_uring cannot be
 * used at all (disabled by sysctl, blocked by seccomp, too old). kernel_release gets uname -r. */
BUNRING_API uint32_t bunring_probe(struct bunring_error *err, char *kernel_release, uint32_t release_len);
/* 4 or 6 when host is an IPv4 or IPv6 literal as the server parses it when it binds (inet_pton),
 * else 0: options are checked with the same parser that will use them. */
BUNRING_API uint32_t bunring_host_family(const char *host);

/*
 * Handler mode (listen() in TS, BUNRING_FLAG_HANDLER): instead of echoing, each loop hands what it
 * receives to the JS thread and sends what JS writes, through one bunring_js_channel per loop in
 * memory the shim allocates at start and TS maps once. The channel holds two single-producer
 * single-consumer rings of 16-byte records, each with a byte area:
 *   events   (loop -> JS): OPEN, DATA (bytes in rx), END (peer shut down its write side), DRAIN,
 *                          CLOSE (len = the close counter's enum bunring_stat);
 *   commands (JS -> loop): WRITE (bytes in tx), END (FIN once written bytes are out), TERMINATE
 *                          (reset), WANT_DRAIN (send a DRAIN event once nothing is left to send),
 *                          PAUSE / RESUME (stop / start reading).
 * Indices and byte offsets are free-running uint32 (a record's slot is index % BUNRING_JS_RECORDS, a
 * byte's is offset % the area's size, BUNRING_JS_RX_BYTES or BUNRING_JS_TX_BYTES); a producer
 * publishes with a release store of its tail, the consumer frees with a release store of its head.
 * A record never wraps: a producer that needs more contiguous bytes than remain before the end of an
 * area skips to its start (the consumer frees up to offset + len of each record it consumed, which
 * covers the skip).
 * Sleeping: before blocking, the loop stores c_sleeping = 1 and re-checks the command ring; JS, after
 * publishing commands, wakes it (bunring_js_wake) only if c_sleeping is 1. JS stores js_sleeping = 1
 * when it has consumed every event and re-checks; the loop, after publishing events, calls the
 * doorbell (a threadsafe callback given at start) only if it exchanged js_sleeping from 1 to 0. A
 * loop that sleeps while connections wait for room in the channel says so in c_wants_room; JS, after
 * freeing events or rx bytes, wakes it if both flags are 1. So
 * under load nobody makes a system call per request, and an idle server sleeps.
 * sent[slot] (bunring_js_sent) counts the bytes each connection has handed to the kernel (reset when
 * the slot is opened), so JS knows how much of what it wrote is still queued without any event.
 */
#define BUNRING_JS_RECORDS 4096u
#define BUNRING_JS_RX_BYTES (512u << 10) /* the rx area: what the loops read ahead of JS */
#define BUNRING_JS_TX_BYTES (1u << 20)   /* the tx area: what JS wrote and the loop has not taken yet */
#define BUNRING_JS_MAX_RECORD_BYTES 65536u /* DATA and WRITE records carry at most this many bytes */
#define BUNRING_JS_PEER_ADDRESS_BYTES 20u  /* OPEN: u16 family (2 IPv4, 10 IPv6), u16 port, 16 address bytes */

enum bunring_js_event { BUNRING_JS_EV_OPEN = 1, BUNRING_JS_EV_DATA, BUNRING_JS_EV_END, BUNRING_JS_EV_DRAIN, BUNRING_JS_EV_CLOSE };
enum bunring_js_command {
    BUNRING_JS_CMD_WRITE = 1,
    BUNRING_JS_CMD_END,
    BUNRING_JS_CMD_TERMINATE,
    BUNRING_JS_CMD_WANT_DRAIN,
    BUNRING_JS_CMD_PAUSE,
    BUNRING_JS_CMD_RESUME,
};

/* type in bits 0..7 and the slot's generation in bits 8..31 of type_gen; a command whose generation
 * is not the slot's current one is for a connection that is gone, and is dropped. */
struct bunring_js_record {
    uint32_t type_gen;
    uint32_t slot;
    uint32_t offset; /* DATA / WRITE: free-running byte offset in rx / tx */
    uint32_t len;    /* DATA / WRITE: bytes; CLOSE: enum bunring_stat of the reason; OPEN: peer address bytes in rx */
};

struct bunring_js_channel {
    /* written by the loop, each on its own cache line */
    uint32_t ev_tail;
    uint32_t rx_tail;
    uint32_t cmd_head;
    uint32_t tx_head;
    uint32_t c_sleeping;
    uint32_t c_wants_room; /* the loop waits for JS to free events or rx: JS wakes it after freeing */
    uint32_t loop_pad[10];
    /* written by JS */
    uint32_t ev_head;
    uint32_t rx_head;
    uint32_t cmd_tail;
    uint32_t tx_tail;
    uint32_t js_sleeping;
    uint32_t js_pad[11];
    struct bunring_js_record events[BUNRING_JS_RECORDS];
    struct bunring_js_record commands[BUNRING_JS_RECORDS];
    uint8_t rx[BUNRING_JS_RX_BYTES];
    uint8_t tx[BUNRING_JS_TX_BYTES];
};

/* The doorbell: called on a loop thread with the loop's index when JS was asleep and events wait. */
typedef void (*bunring_js_doorbell)(uint32_t loop);

/* ---- servers ---- */
typedef struct bunring_server bunring_server;

/* Starts a server: binds, listens and sets up every loop before returning. host is an IPv4 or IPv6
 * literal. Returns NULL with err filled on any failure, having released everything it took. */
BUNRING_API bunring_server *bunring_server_start(const struct bunring_config *cfg, const char *host,
                                                 struct bunring_error *err);
/* Handler mode: start with a doorbell (BUNRING_FLAG_HANDLER must be set; either backend). */
BUNRING_API bunring_server *bunring_server_start_handler(const struct bunring_config *cfg, const char *host,
                                                         bunring_js_doorbell doorbell, struct bunring_error *err);
/* Handler mode: loop i's channel, its sent[] array (max_connections entries) and a wake for its loop. */
BUNRING_API struct bunring_js_channel *bunring_js_channel_of(bunring_server *srv, uint32_t loop);
BUNRING_API uint32_t *bunring_js_sent_of(bunring_server *srv, uint32_t loop);
BUNRING_API void bunring_js_wake(bunring_server *srv, uint32_t loop);
/* Handler mode, on the JS thread, at low load: sends up to len bytes to connection (slot, gen) of loop
 * `loop` straight away, instead of a WRITE for a sleeping loop. Only when nothing JS wrote to that
 * connection is still unsent (sent[slot] says so): then the loop has nothing to send on it and order
 * holds. Returns the bytes the socket took (0 when it is full: hand them over as a WRITE),
 * -ESTALE when the connection is gone, another negative errno on a socket error (the loop sees it
 * too). Never blocks; safe against the loop closing the connection meanwhile (js_direct.c). */
BUNRING_API int32_t bunring_js_send(bunring_server *srv, uint32_t loop, uint32_t slot, uint32_t gen,
                                    const uint8_t *data, uint32_t len);
/* Handler mode, on the JS thread (socket.setNoDelay / setKeepAlive): sets an option on connection
 * (slot, gen): NODELAY value 0 or 1; KEEPALIVE 0 or 1; KEEPIDLE seconds before the first probe
 * (also 10 probes 1 s apart, as Bun sets them). 0, -ESTALE when the connection is gone, -EINVAL for
 * an unknown option, else -errno. Safe against the loop closing it meanwhile, as bunring_js_send. */
enum bunring_js_option { BUNRING_JS_OPT_NODELAY = 1, BUNRING_JS_OPT_KEEPALIVE, BUNRING_JS_OPT_KEEPIDLE };
BUNRING_API int32_t bunring_js_set_option(bunring_server *srv, uint32_t loop, uint32_t slot, uint32_t gen,
                                          uint32_t option, uint32_t value);
/* Handler mode, on the JS thread (socket.localAddress): connection (slot, gen)'s local address into
 * out, BUNRING_JS_PEER_ADDRESS_BYTES in OPEN's layout. 0, -ESTALE when the connection is gone, else -errno. */
BUNRING_API int32_t bunring_js_local_address(bunring_server *srv, uint32_t loop, uint32_t slot, uint32_t gen,
                                             uint8_t *out);
BUNRING_API uint32_t bunring_server_port(const bunring_server *srv);
BUNRING_API uint32_t bunring_server_features(const bunring_server *srv); /* BUNRING_FEAT_* in use */
BUNRING_API uint32_t bunring_server_threads(const bunring_server *srv);
/* Base of threads * BUNRING_STATS_STRIDE uint64 counters, valid until bunring_server_free. */
BUNRING_API uint64_t *bunring_server_stats(bunring_server *srv);
/* Asks every loop to stop: no new connections, in-flight echoes finish for up to drain_ms, then all
 * connections close. Returns at once. Called again during the drain, a shorter drain_ms moves the
 * deadline closer (0 closes everything now); a longer one changes nothing. 0, or -EINVAL when
 * drain_ms is above BUNRING_DRAIN_MS_MAX. */
BUNRING_API int32_t bunring_server_stop(bunring_server *srv, uint32_t drain_ms);
/* Stops accepting and keeps serving the open connections (Bun.listen's stop(false)): each loop ends
 * once its last connection has closed; a bunring_server_stop meanwhile drains and closes them as
 * usual. Returns at once; 0. */
BUNRING_API int32_t bunring_server_close_listener(bunring_server *srv);
/* 1 once every loop thread has finished (stop completed), else 0. Never blocks. */
BUNRING_API uint32_t bunring_server_done(const bunring_server *srv);
/* Stops (if needed), joins the loop threads and frees everything. Blocks until the loops end. */
BUNRING_API void bunring_server_free(bunring_server *srv);

#endif
