/*
 * loadgen_internal.h — the load generator's shared state and the functions its files offer each
 * other. Not part of the ABI (that is loadgen.h).
 *
 * Dependencies go one way, so each file can be read (and changed) knowing only the ones below it:
 *
 *   loadgen.c        ABI entry points, config check, worker threads, runner (phases, CPU samples,
 *                    result). Calls the two traffic loops and the core.
 *   loadgen_epoll.c  the connect phase (always on epoll) and the epoll traffic loop. Calls the core.
 *   loadgen_uring.c  the io_uring traffic loop. Calls the core.
 *   loadgen_core.c   what both traffic loops share: request contents (echo messages or table
 *                    entries), the send window (pipelining), reply verification as bytes stream in,
 *                    reply accounting, latency histogram, closing a connection. Calls nothing above it.
 *   loadgen_abi.c    ABI version and struct layout description. Depends on loadgen.h only.
 *
 * Names carry an lg_ / LG_ prefix: the C test driver links this library's sources together with the
 * server's (c-shim/), whose struct conn, conn_open, CONN_* and friends must not meet these.
 */
#ifndef BUNRING_LOADGEN_INTERNAL_H
#define BUNRING_LOADGEN_INTERNAL_H

#include "loadgen.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#define LG_NS_PER_MS 1000000ull
#define LG_NS_PER_S 1000000000ull
#define LG_HEADER_LEN 16u          /* echo: per-request header: connection index, request number, hash */
#define LG_PATTERN_SPAN 4096u      /* body offsets vary over this many bytes of the random block */
#define LG_SCRATCH_LEN (64u << 10) /* receive scratch per worker */
#define LG_EVENTS_MAX 256
#define LG_CONNECT_WINDOW 128u     /* connects in flight per worker: keeps the server's backlog from overflowing */
#define LG_WAIT_SLICE_MS 100       /* every wait is at most this long, so stop() is seen promptly */
#define LG_DRAIN_NS (1000ull * LG_NS_PER_MS)
#define LG_IOV_MAX 64u             /* iovecs per sendmsg: requests in one send, at most 64 (echo: 32) */

/* Latency histogram: values in ns; exact below 256 ns, then 128 sub-buckets per octave. */
#define LG_HIST_SUB_BITS 7u
#define LG_HIST_SUB (1u << LG_HIST_SUB_BITS)
#define LG_HIST_MAX_EXP 36u /* values clamp below 2^36 ns (~68.7 s); max is tracked exactly anyway */
#define LG_HIST_BUCKETS ((LG_HIST_MAX_EXP - LG_HIST_SUB_BITS + 1u) * LG_HIST_SUB)

enum lg_conn_state { LG_CONN_CLOSED = 0, LG_CONN_CONNECTING, LG_CONN_OPEN };

/*
 * A connection's requests are numbered 0, 1, 2, ... (uint32, differences taken modulo 2^32), with
 * done <= started, sent_seq <= started and started - done <= pipeline (done may pass sent_seq: an
 * echo can be back before its send completion is seen). Request s's start time (and, for echo, its
 * header) lives in slot s % pipeline until its reply is complete.
 */
struct lg_conn {
    int fd;
    uint8_t state;      /* enum lg_conn_state */
    uint8_t want_out;   /* epoll: EPOLLOUT is armed, started requests are partly written */
    uint8_t pad[2];
    uint32_t index;     /* global connection index */
    uint32_t slot0;     /* its first slot in the worker's starts[] / echo[] (k * pipeline) */
    uint32_t entry0;    /* table workloads: entry of request 0 (index % request_count) */
    uint32_t started;   /* requests started: stamped, and handed to a send */
    uint32_t sent_seq;  /* requests fully written */
    uint32_t sent;      /* bytes of request sent_seq written */
    uint32_t done;      /* replies complete */
    uint32_t received;  /* bytes of reply `done` read and verified */
};

/* Echo workload: what request s looks like (header, and where its body starts in the pattern). */
struct lg_echo_slot {
    uint32_t body_off;
    uint8_t header[LG_HEADER_LEN];
};

/* Counters a worker owns (plain: only it writes them; the runner reads them after joining). */
struct lg_counts {
    uint64_t established, connect_errors, mismatches, short_reads, extras, io_errors;
    uint64_t requests, responses, responses_total, bytes_verified;
    uint64_t lat_sum, lat_min, lat_max;
};

/* What progress() may read while the worker runs: copies of some counts, stored relaxed. */
struct lg_published {
    _Atomic uint64_t established, connect_errors, errors, responses_total, responses;
};

struct bunring_loadgen;
struct lg_uring;

struct lg_worker {
    struct bunring_loadgen *lg;
    uint32_t id;
    pthread_t thread;
    bool thread_started;
    int epfd;               /* connect phase, and the epoll traffic loop */
    struct lg_conn *conns;
    uint32_t nconns;
    uint32_t live;          /* connections open or connecting */
    int first_connect_errno;
    int fatal_errno;        /* its event wait failed: the worker gave up */
    uint8_t *pattern;       /* echo: length + LG_PATTERN_SPAN random bytes */
    uint64_t *starts;       /* nconns x pipeline: when each in-flight request was started */
    struct lg_echo_slot *echo; /* echo: nconns x pipeline; NULL for table workloads */
    uint8_t *scratch;
    uint64_t *hist;         /* LG_HIST_BUCKETS */
    struct lg_counts c;
    struct lg_uring *uring; /* io_uring state (loadgen_uring.c); NULL when the run uses epoll only */
    bool on_uring;          /* the ring is set up: traffic runs on it, not on epoll */
    struct epoll_event events[LG_EVENTS_MAX];
    _Alignas(64) struct lg_published pub;
};

struct bunring_loadgen {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint32_t length;        /* echo: message length */
    uint32_t hdr_len;       /* echo: min(LG_HEADER_LEN, length) */
    bool echo;              /* the echo workload (else the request/reply table) */
    uint32_t pipeline;
    uint32_t connections;   /* all workers' */
    uint32_t request_len, reply_len; /* echo: both are length */
    uint32_t request_count, reply_count;
    uint32_t entry_step;    /* connections % request_count: how far a connection's entry moves per request */
    uint8_t *requests, *replies; /* copies of the caller's tables */
    uint32_t connect_timeout_ms;
    uint32_t flags;         /* BUNRING_LOADGEN_FLAG_* */
    uint64_t warmup_ns, duration_ns;
    int32_t server_pid;
    bool have_server_clock;
    clockid_t server_clock;
    cpu_set_t client_cpus;  /* the runner's affinity: the workers' cpus */
    bool pinned;

    struct lg_worker *workers;
    uint32_t nworkers;
    pthread_t runner;
    bool runner_started;

    pthread_mutex_t mu;     /* guards connected_workers, go, abort_run, released */
    pthread_cond_t cond;
    uint32_t connected_workers;
    bool go, abort_run;
    bool released;          /* the runner has taken its last sample: workers may exit */

    _Atomic uint32_t phase;
    _Atomic uint32_t done;
    _Atomic uint32_t stop;
    _Atomic uint32_t idle_workers; /* workers whose traffic has ended (all connections closed) */
    _Atomic uint64_t start_ns, end_ns; /* the measured interval, published before go */
    uint64_t begin_ns;                 /* start() time */

    uint64_t *hist;                    /* merged */
    struct bunring_loadgen_result result;
};

static inline uint64_t lg_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * LG_NS_PER_S + (uint64_t)ts.tv_nsec;
}

static inline bool lg_stopping(const struct bunring_loadgen *lg)
{
    return atomic_load_explicit(&lg->stop, memory_order_relaxed) != 0;
}

static inline bool lg_in_interval(const struct bunring_loadgen *lg, uint64_t t)
{
    return t >= atomic_load_explicit(&lg->start_ns, memory_order_relaxed) &&
           t < atomic_load_explicit(&lg->end_ns, memory_order_relaxed);
}

/* ---- loadgen_core.c: shared by both traffic loops and the runner ---- */
uint64_t lg_mix64(uint64_t x);
/* The smallest bucket value with at least ceil(q * total) values at or below it, capped at max. */
uint64_t lg_hist_quantile(const uint64_t *hist, uint64_t total, double q, uint64_t max);
/* Copies the worker's counts where progress() reads them. */
void lg_publish(struct lg_worker *w);
/* Closes the socket (no-op when closed) and counts the connection as no longer live. */
void lg_conn_close(struct lg_worker *w, struct lg_conn *c);
/* Sets a connection up for traffic (its counters and slots), before its first send. */
void lg_conn_begin(struct lg_worker *w, struct lg_conn *c, uint32_t k);
/* True when the connection is done: no request will start any more (the interval is over at t, or
 * the run stopped) and every started request has its reply. The caller then closes it. */
bool lg_conn_finished(const struct lg_worker *w, const struct lg_conn *c, uint64_t t);
/* Describes, in at most max iovecs, what is left to write: the rest of request sent_seq and the
 * requests after it, up to the send window (done + pipeline; none past the interval's end at t).
 * Requests entering it for the first time are started at t. Returns the iovecs used (0: nothing). */
uint32_t lg_send_iov(struct lg_worker *w, struct lg_conn *c, struct iovec *iov, uint32_t max, uint64_t t);
/* n bytes of what lg_send_iov described were written at t: counts requests fully written. */
void lg_sent(struct lg_worker *w, struct lg_conn *c, uint64_t n, uint64_t t);
/* n bytes received at time t: verified in place against the outstanding replies, in order,
 * completing (and counting) each one whose last byte is among them. False: a mismatch, or bytes
 * with no request outstanding (counted); the caller closes the connection. */
bool lg_take_reply(struct lg_worker *w, struct lg_conn *c, const uint8_t *data, uint32_t n, uint64_t t);

/* ---- loadgen_epoll.c ---- */
/* Opens the worker's connections on its epoll set, at most LG_CONNECT_WINDOW in flight, until all are
 * open or failed or the connect timeout passes (the rest then count as connect errors). */
void lg_epoll_connect(struct lg_worker *w);
/* Runs requests on epoll until the interval ends, then lets in-flight replies finish for up to
 * LG_DRAIN_NS. */
void lg_epoll_traffic(struct lg_worker *w);

/* ---- loadgen_uring.c: the io_uring traffic loop. alloc runs in start() (0 or -ENOMEM); setup runs
 * on the worker thread (0, or -errno and the worker uses epoll); traffic replaces the epoll traffic
 * loop; finish closes every connection and tears the ring down; free releases the memory. ---- */
int lg_uring_alloc(struct lg_worker *w);
int lg_uring_setup(struct lg_worker *w);
void lg_uring_traffic(struct lg_worker *w);
void lg_uring_finish(struct lg_worker *w);
void lg_uring_free(struct lg_worker *w);

#endif
