/*
 * loadgen.h — the whole C ABI of the benchmark's load generator (libbunring_loadgen.so).
 *
 * The load generator is benchmark equipment, not part of the product: it is built into its own
 * library by bench/loadgen/build.sh, bound by ffi/loadgen.ts, and shares no header or symbol with
 * the server library (c-shim/), so both can be linked into one program (tests/c/driver.c) and each
 * changes without touching the other's ABI. Everything here is prefixed bunring_loadgen_ /
 * BUNRING_LOADGEN_ for that reason.
 *
 * The benchmark client: N connections, each sending requests and verifying the replies byte for
 * byte as they stream in, on worker threads the library creates, each with its own io_uring (epoll
 * where the ring cannot be set up, or when asked) and optionally pinned to a CPU. The workload is
 * either rust_echo_bench's echo (the default: each request is `length` bytes that differ per
 * connection and per round, and the reply must be the same bytes) or a request/reply table given by
 * the caller (request_len > 0: e.g. RESP commands and the replies they must get). Up to `pipeline`
 * requests are in flight per connection; replies are matched to requests in order. Phases:
 * connect (bounded by a timeout) -> warm-up -> measured interval -> drain. Only replies completed
 * inside the measured interval count, divided by its exact length. When server_pid is set, the
 * server's CPU time is sampled at the two edges of that interval, so CPU per request covers exactly
 * the requests counted. TS calls start, polls progress until done
 * (never blocks), reads the result and frees. No function here exits or aborts: failures come back
 * as a negative errno plus a message.
 *
 * Every struct here is plain data with fixed-width fields; bunring_loadgen_layout_entry describes
 * each one's layout so ffi/ takes every offset from the library.
 */
#ifndef BUNRING_LOADGEN_H
#define BUNRING_LOADGEN_H

#include <stddef.h>
#include <stdint.h>

#define BUNRING_LOADGEN_API __attribute__((visibility("default")))

/* Bumped on any change to the structs or functions below; ffi/loadgen.ts checks it at load time. */
#define BUNRING_LOADGEN_ABI_VERSION 2u

#define BUNRING_LOADGEN_MAX_CONNECTIONS 100000u
#define BUNRING_LOADGEN_MAX_LENGTH (1u << 20)
#define BUNRING_LOADGEN_MAX_THREADS 64u
#define BUNRING_LOADGEN_MAX_WARMUP_MS 60000u
#define BUNRING_LOADGEN_MAX_DURATION_MS 3600000u
#define BUNRING_LOADGEN_MAX_CONNECT_TIMEOUT_MS 60000u
#define BUNRING_LOADGEN_MAX_CPUS 256u
#define BUNRING_LOADGEN_MAX_PIPELINE 1024u
#define BUNRING_LOADGEN_MAX_SLOTS (1u << 22)       /* connections x pipeline, at most */
#define BUNRING_LOADGEN_MAX_ENTRIES (1u << 22)     /* request table entries */
#define BUNRING_LOADGEN_MAX_TABLE_BYTES (256u << 20) /* each of the request and reply tables */

struct bunring_loadgen_config {
    uint32_t port;               /* 1..65535 */
    uint32_t connections;        /* 1..BUNRING_LOADGEN_MAX_CONNECTIONS */
    uint32_t length;             /* echo: bytes per message, 1..BUNRING_LOADGEN_MAX_LENGTH; ignored when request_len > 0 */
    uint32_t threads;            /* worker threads, 1..min(BUNRING_LOADGEN_MAX_THREADS, connections) */
    uint32_t warmup_ms;          /* traffic before the measured interval, 0..MAX_WARMUP_MS */
    uint32_t duration_ms;        /* the measured interval, 1..MAX_DURATION_MS (the hard cap) */
    uint32_t connect_timeout_ms; /* connects not done by then count as connect errors, 1..MAX */
    int32_t server_pid;          /* > 0: sample this process's CPU time at the interval edges; 0 = no */
    uint32_t flags;              /* BUNRING_LOADGEN_FLAG_* */
    uint32_t cpu_count;          /* entries used in cpus[]; 0 = no pinning */
    int32_t cpus[BUNRING_LOADGEN_MAX_CPUS]; /* worker i runs on cpus[i % cpu_count] */
    uint32_t pipeline;           /* requests in flight per connection, 1..MAX_PIPELINE (0 means 1);
                                  * connections x pipeline <= MAX_SLOTS */
    /* The request/reply table (all zero: the echo workload). Request s of connection i (s = 0, 1, ...)
     * is entry e = (i + s * connections) % request_count of `requests` (request_len bytes each), and
     * its reply must be entry e % reply_count of `replies` (reply_len bytes each): each connection
     * cycles through its share of the entries. reply_count is 1 (one reply for every request) or
     * request_count. start() copies both tables, so they need to live only until it returns. */
    uint32_t request_len;        /* 0 = echo; else 1..MAX_LENGTH */
    uint32_t request_count;      /* 1..MAX_ENTRIES; request_len x request_count <= MAX_TABLE_BYTES */
    uint32_t reply_len;          /* 1..MAX_LENGTH */
    uint32_t reply_count;        /* 1 or request_count; reply_len x reply_count <= MAX_TABLE_BYTES */
    uint64_t requests;           /* address of the request table */
    uint64_t replies;            /* address of the reply table */
};

/* Traffic on epoll even where io_uring works (to compare the two, or to rule the ring out). */
#define BUNRING_LOADGEN_FLAG_EPOLL 1u

enum bunring_loadgen_phase {
    BUNRING_LOADGEN_CONNECTING = 0,
    BUNRING_LOADGEN_WARMUP = 1,
    BUNRING_LOADGEN_MEASURING = 2,
    BUNRING_LOADGEN_DRAINING = 3, /* interval over: in-flight echoes finish (<= 1 s), sockets close */
    BUNRING_LOADGEN_DONE = 4,     /* result ready */
};

/* Why bunring_loadgen_start failed: negative errno (or 0) and a human message. */
struct bunring_loadgen_error {
    int32_t code;
    char message[252];
};

/* A live snapshot for progress displays (relaxed reads of per-worker counters). */
struct bunring_loadgen_progress {
    uint32_t phase;           /* enum bunring_loadgen_phase */
    uint32_t done;            /* 1 once the result is ready */
    uint64_t connections;     /* established so far */
    uint64_t connect_errors;
    uint64_t errors;          /* mismatches + short reads + extras + I/O errors */
    uint64_t responses_total; /* replies completed in any phase */
    uint64_t responses;       /* replies completed inside the measured interval so far */
    uint64_t now_ns;          /* CLOCK_MONOTONIC now */
    uint64_t start_ns;        /* measured interval [start_ns, end_ns); 0 until the connect phase ends */
    uint64_t end_ns;
};

struct bunring_loadgen_result {
    int32_t status;           /* 0 = ran to the end; else -errno (message says why) */
    uint32_t connections;     /* established */
    uint64_t connect_errors;  /* failed or timed-out connects */
    uint64_t mismatches;      /* replies with a byte that differs from the expected reply */
    uint64_t short_reads;     /* EOF from the server before the run was done with the connection */
    uint64_t extras;          /* bytes that arrived while no request was outstanding */
    uint64_t io_errors;       /* reset, broken pipe, other socket errors */
    uint64_t requests;        /* requests fully written inside the interval */
    uint64_t responses;       /* replies completed (and verified) inside the interval */
    uint64_t responses_total; /* replies completed in any phase */
    uint64_t bytes_verified;  /* reply bytes compared equal, all phases */
    uint64_t elapsed_ns;      /* length of the measured interval */
    uint64_t connect_ns;      /* how long the connect phase took */
    uint64_t latency_min_ns;  /* per request, its send to its whole reply, over the interval's responses */
    uint64_t latency_mean_ns;
    uint64_t latency_p50_ns;  /* percentiles: log-linear histogram, <= 0.4% error */
    uint64_t latency_p90_ns;
    uint64_t latency_p99_ns;
    uint64_t latency_p999_ns;
    uint64_t latency_max_ns;  /* exact */
    int64_t server_cpu_ns;    /* server user+system CPU over the interval (process CPU clock); -1 = not sampled */
    int64_t server_cpu_ticks; /* the same from /proc/<pid>/stat utime+stime, in clock ticks; -1 = not sampled */
    uint64_t ticks_per_sec;   /* sysconf(_SC_CLK_TCK) */
    int64_t client_cpu_ns;    /* the workers' CPU over the interval (thread CPU clocks); -1 = unavailable */
    uint64_t edge_skew_ns;    /* how late the CPU samples were taken after the interval edges (max) */
    uint32_t uring_workers;   /* workers whose traffic ran on io_uring (the rest used epoll) */
    uint32_t workers;
    char message[256];        /* why status != 0, or a note such as the first connect error */
};

typedef struct bunring_loadgen bunring_loadgen;

/* ---- library info ---- */
BUNRING_LOADGEN_API uint32_t bunring_loadgen_abi_version(void);
/* The layout of every struct in this header, for ffi/: entry `index` is a struct
 * ("bunring_loadgen_config", out = {0, sizeof}) or one of its fields ("bunring_loadgen_config.port",
 * out = {offsetof, sizeof}); NULL past the last entry. */
BUNRING_LOADGEN_API const char *bunring_loadgen_layout_entry(uint32_t index, uint32_t out[2]);

/* ---- runs ---- */
/* Validates cfg, raises RLIMIT_NOFILE if needed, allocates everything and starts the threads; the
 * connect phase begins at once. host is an IPv4 or IPv6 literal. NULL with err filled on failure. */
BUNRING_LOADGEN_API bunring_loadgen *bunring_loadgen_start(const struct bunring_loadgen_config *cfg, const char *host,
                                                           struct bunring_loadgen_error *err);
/* Never blocks. */
BUNRING_LOADGEN_API void bunring_loadgen_progress(const bunring_loadgen *lg, struct bunring_loadgen_progress *out);
/* 1 once the result is ready (every thread has finished), else 0. Never blocks. */
BUNRING_LOADGEN_API uint32_t bunring_loadgen_done(const bunring_loadgen *lg);
/* Asks the run to end early (status -ECANCELED); returns at once, idempotent. */
BUNRING_LOADGEN_API void bunring_loadgen_stop(bunring_loadgen *lg);
/* Copies the result: 0, or -EBUSY while not done. */
BUNRING_LOADGEN_API int32_t bunring_loadgen_result(const bunring_loadgen *lg, struct bunring_loadgen_result *out);
/* Stops (if needed), joins every thread and frees everything. Blocks until the threads end (<= ~1.2 s
 * after a stop: every wait in the loadgen is bounded to 100 ms, the drain to 1 s). */
BUNRING_LOADGEN_API void bunring_loadgen_free(bunring_loadgen *lg);

#endif
