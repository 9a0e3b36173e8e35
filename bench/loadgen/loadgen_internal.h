/*
 * loadgen_internal.h — what the load generator's two files share: loadgen.c (phases, epoll traffic,
 * accounting, runner, ABI) and loadgen_uring.c (the io_uring traffic phase). Not part of the ABI.
 */
#ifndef BUNRING_LOADGEN_INTERNAL_H
#define BUNRING_LOADGEN_INTERNAL_H

#include "bunring.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>

#define NS_PER_MS 1000000ull
#define NS_PER_S 1000000000ull
#define HEADER_LEN 16u          /* per-message header: index, counter, hash */
#define PATTERN_SPAN 4096u      /* body offsets vary over this many bytes of the random block */
#define SCRATCH_LEN (64u << 10) /* receive scratch per worker */
#define EVENTS_MAX 256
#define CONNECT_WINDOW 128u     /* connects in flight per worker: keeps the server's backlog from overflowing */
#define WAIT_SLICE_MS 100       /* every wait is at most this long, so stop() is seen promptly */
#define DRAIN_NS (1000ull * NS_PER_MS)

enum conn_state { CONN_CLOSED = 0, CONN_CONNECTING, CONN_OPEN };

struct conn {
    int fd;
    uint8_t state;      /* enum conn_state */
    uint8_t want_out;   /* EPOLLOUT is armed: the message is partly written */
    uint8_t pad[2];
    uint32_t index;     /* global connection index */
    uint32_t counter;   /* round number */
    uint32_t sent;      /* bytes of the current message written */
    uint32_t received;  /* bytes of the current message read back and verified */
    uint32_t body_off;  /* offset of this message's body in the worker's pattern block */
    uint64_t started_ns;
    uint8_t header[HEADER_LEN];
};

/* Counters a worker owns (plain: only it writes them; the runner reads them after joining). */
struct counts {
    uint64_t established, connect_errors, mismatches, short_reads, io_errors;
    uint64_t requests, responses, responses_total, bytes_verified;
    uint64_t lat_sum, lat_min, lat_max;
};

/* What progress() may read while the worker runs: copies of some counts, stored relaxed. */
struct published {
    _Atomic uint64_t established, connect_errors, errors, responses_total, responses;
};

struct bunring_loadgen;
struct lg_uring;

struct worker {
    struct bunring_loadgen *lg;
    uint32_t id;
    pthread_t thread;
    bool thread_started;
    int epfd;
    struct conn *conns;
    uint32_t nconns;
    uint32_t live;          /* connections open or connecting */
    int first_connect_errno;
    int fatal_errno;        /* its event wait failed: the worker gave up */
    uint8_t *pattern;       /* length + PATTERN_SPAN random bytes */
    uint8_t *scratch;
    uint64_t *hist;         /* HIST_BUCKETS */
    struct counts c;
    struct lg_uring *uring; /* io_uring state (loadgen_uring.c); NULL when the run uses epoll only */
    bool on_uring;          /* the ring is set up: traffic runs on it, not on epoll */
    struct epoll_event events[EVENTS_MAX];
    _Alignas(64) struct published pub;
};

struct bunring_loadgen {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint32_t length;
    uint32_t hdr_len;       /* min(HEADER_LEN, length) */
    uint32_t connect_timeout_ms;
    uint32_t flags;         /* BUNRING_LOADGEN_FLAG_* */
    uint64_t warmup_ns, duration_ns;
    int32_t server_pid;
    bool have_server_clock;
    clockid_t server_clock;
    cpu_set_t client_cpus;  /* the runner's affinity: the workers' cpus */
    bool pinned;

    struct worker *workers;
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

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static inline bool stopping(const struct bunring_loadgen *lg)
{
    return atomic_load_explicit(&lg->stop, memory_order_relaxed) != 0;
}

static inline bool in_interval(const struct bunring_loadgen *lg, uint64_t t)
{
    return t >= atomic_load_explicit(&lg->start_ns, memory_order_relaxed) &&
           t < atomic_load_explicit(&lg->end_ns, memory_order_relaxed);
}

/* loadgen.c, for loadgen_uring.c */
void lg_publish(struct worker *w);
void lg_conn_close(struct worker *w, struct conn *c);
void lg_message_begin(struct conn *c, uint64_t t);
bool lg_chunk_matches(const struct worker *w, const struct conn *c, uint32_t at, const uint8_t *got, uint32_t n);
bool lg_round_trip_next(struct worker *w, struct conn *c, uint64_t t);

/* loadgen_uring.c: the io_uring traffic phase. alloc runs in start() (0 or -ENOMEM); setup runs on
 * the worker thread (0, or -errno and the worker uses epoll); traffic replaces the epoll traffic
 * phase; finish closes every connection and tears the ring down; free releases the memory. */
int lg_uring_alloc(struct worker *w);
int lg_uring_setup(struct worker *w);
void lg_uring_traffic(struct worker *w);
void lg_uring_finish(struct worker *w);
void lg_uring_free(struct worker *w);

#endif
