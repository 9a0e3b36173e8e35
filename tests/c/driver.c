/*
 * driver.c — the C test driver for the shim, built with every c-shim .c file and the load generator's
 * (bench/loadgen/) by `bash tests/c/build.sh` into tests/c/build/driver-asan (ASan+UBSan) and
 * driver-plain (run under valgrind).
 *
 * For each backend (uring when the kernel has it, epoll) and each thread count (1 and 2) it starts a
 * server on an ephemeral loopback port and, from its own client threads:
 *   - streams a per-connection pseudo-random pattern through N connections concurrently and checks
 *     every echoed byte at its offset; half of them half-close (shutdown(SHUT_WR)) right after the
 *     last byte and must still get every byte back and then EOF; the rest shut down after the echo;
 *   - checks the stats once quiet: bytes in == bytes out == bytes sent, accepted == connections,
 *     closed by EOF == connections, no allocation after start, no errors, no buffer held; with two
 *     loops, that both loops accepted connections;
 *   - resets a connection mid-stream (SO_LINGER 0) and checks the server counts it and still echoes;
 *   - stops the server while clients flood it, checks it finishes, every client sees its connection
 *     end and the stats say the connections were closed by stop; then frees it;
 *   - also: start failures (port in use, bad config) return NULL with an error and leak nothing,
 *     bunring_server_free on a running server with an open connection, restarting on the same port
 *     right after free (the port must be released), and ABI round-trips;
 *   - runs the benchmark's load generator against the server on its epoll loop and (where the
 *     uring backend runs) its io_uring loop: a full run with zero errors, and one stopped half-way;
 *   - handler mode (BUNRING_FLAG_HANDLER), with a consumer thread of its own playing the JS side of
 *     each loop's channel (section "handler mode" below): echo through the channel of N connections
 *     with random totals and random send/recv sizes, half of them half-closing (END -> END); a
 *     TERMINATE (the client sees ECONNRESET); a peer reset; stop under load (every CLOSE delivered,
 *     done, free); with a small pool, a client that never reads while the JS side keeps writing (the
 *     WRITE waits for pool room, the stall policy closes it: connClosedStalled); start failures. The
 *     counters must add up (accepted = closes of every kind, and equal to the CLOSE events of each
 *     reason; events consumed = jsEvents; doorbells rung = jsDoorbells), and every OPEN gets
 *     exactly one CLOSE.
 * Exits 0 only if every check passed; prints one summary line. A watchdog (alarm) turns a hang
 * into a failure.
 *
 * Usage: driver [--conns N] [--bytes N] [--flood N] [--timeout SECONDS] [--backends uring,epoll]
 *               [--threads 1,2] [--verbose]
 */
#include "bunring.h"
#include "loadgen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PATLEN 65521u /* prime: never lines up with power-of-two buffers */

static int g_verbose;
static unsigned g_checks;
static unsigned g_failures;
static unsigned g_io_timeout_ms = 30000;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
    if (!g_verbose)
        return;
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&g_lock);
    fputs("driver: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    pthread_mutex_unlock(&g_lock);
    va_end(ap);
}

/* Records one check; prints failures always. */
static bool check(bool ok, const char *ctx, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool check(bool ok, const char *ctx, const char *fmt, ...)
{
    pthread_mutex_lock(&g_lock);
    g_checks++;
    if (!ok) {
        g_failures++;
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "driver: FAIL [%s] ", ctx);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
    }
    pthread_mutex_unlock(&g_lock);
    return ok;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000u, .tv_nsec = (long)(ms % 1000u) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "driver: FAIL watchdog: the run did not finish in time (hang?)\n";
    ssize_t w = write(2, msg, sizeof(msg) - 1);
    (void)w;
    _exit(3);
}

/* ---- stats ---- */

static uint64_t stat_loop(bunring_server *srv, uint32_t loop, enum bunring_stat s)
{
    uint64_t *base = bunring_server_stats(srv);
    return __atomic_load_n(&base[(size_t)loop * BUNRING_STATS_STRIDE + s], __ATOMIC_RELAXED);
}

static uint64_t stat_sum(bunring_server *srv, enum bunring_stat s)
{
    uint64_t sum = 0;
    for (uint32_t i = 0; i < bunring_server_threads(srv); i++)
        sum += stat_loop(srv, i, s);
    return sum;
}

static void dump_stats(bunring_server *srv, const char *ctx)
{
    pthread_mutex_lock(&g_lock);
    fprintf(stderr, "driver: stats [%s]:", ctx);
    for (uint32_t i = 0; i < bunring_stat_count(); i++)
        fprintf(stderr, " %s=%llu", bunring_stat_name(i), (unsigned long long)stat_sum(srv, (enum bunring_stat)i));
    fputc('\n', stderr);
    pthread_mutex_unlock(&g_lock);
}

/* ---- pattern ---- */

static uint32_t xorshift32(uint32_t *x)
{
    if (*x == 0)
        *x = 0x2545f491u;
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

static uint8_t *make_pattern(uint32_t seed)
{
    uint8_t *p = malloc(PATLEN);
    if (!p)
        return NULL;
    uint32_t x = (seed + 1u) * 0x9e3779b1u ^ 0x5bd1e995u;
    if (x == 0)
        x = 1;
    for (uint32_t i = 0; i < PATLEN; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)x;
    }
    return p;
}

/* ---- sockets ---- */

static int connect_to(uint32_t port, char *why, size_t why_len)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(why, why_len, "socket: %s", strerror(errno));
        return -1;
    }
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        snprintf(why, why_len, "connect: %s", strerror(errno));
        close(fd);
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    return fd;
}

/* ---- echo client ---- */

/* Clients held at a gate start sending together, once the server has accepted all of them (see
 * scenario_handler: handler mode resets a connection that arrives while the channel is full). */
static bool wait_gate(const int *gate)
{
    uint64_t end = now_ms() + g_io_timeout_ms;
    while (gate && !__atomic_load_n(gate, __ATOMIC_ACQUIRE)) {
        if (now_ms() > end)
            return false;
        sleep_ms(1);
    }
    return true;
}

struct echo_client {
    uint32_t port;
    uint32_t seed;
    size_t bytes;
    bool half_close; /* shutdown(SHUT_WR) right after the last byte, before the echo is complete */
    uint32_t chunk_seed; /* nonzero: every send and recv takes a pseudo-random size (1..64 KiB, 1..16 KiB) */
    const int *gate;     /* non-NULL: after connecting, wait until *gate is 1 before sending */
    /* results */
    bool ok;
    size_t sent, recvd;
    char why[200];
};

static void *echo_client_run(void *arg)
{
    struct echo_client *c = arg;
    c->ok = false;
    uint8_t *pat = make_pattern(c->seed);
    uint8_t buf[16384];
    int fd = pat ? connect_to(c->port, c->why, sizeof(c->why)) : -1;
    if (!pat)
        snprintf(c->why, sizeof(c->why), "out of memory");
    if (fd < 0) {
        free(pat);
        return NULL;
    }
    if (!wait_gate(c->gate)) {
        snprintf(c->why, sizeof(c->why), "the start gate stayed closed for %u ms", g_io_timeout_ms);
        close(fd);
        free(pat);
        return NULL;
    }
    bool wr_shut = false;
    bool eof = false;
    uint32_t rng = c->chunk_seed;
    uint64_t last_progress = now_ms();
    while (!eof) {
        if (c->sent == c->bytes && !wr_shut && (c->half_close || c->recvd == c->bytes)) {
            if (shutdown(fd, SHUT_WR) != 0) {
                snprintf(c->why, sizeof(c->why), "shutdown: %s", strerror(errno));
                goto out;
            }
            wr_shut = true;
        }
        struct pollfd p = {.fd = fd, .events = (short)(POLLIN | (c->sent < c->bytes ? POLLOUT : 0))};
        int pr = poll(&p, 1, 200);
        if (pr < 0 && errno != EINTR) {
            snprintf(c->why, sizeof(c->why), "poll: %s", strerror(errno));
            goto out;
        }
        if (now_ms() - last_progress > g_io_timeout_ms) {
            snprintf(c->why, sizeof(c->why), "no progress for %u ms", g_io_timeout_ms);
            goto out;
        }
        if (pr <= 0)
            continue;
        if (p.revents & (POLLIN | POLLERR | POLLHUP)) {
            size_t want = rng ? 1 + xorshift32(&rng) % sizeof(buf) : sizeof(buf);
            ssize_t n = recv(fd, buf, want, 0);
            if (n == 0) {
                eof = true;
            } else if (n < 0) {
                if (errno != EAGAIN && errno != EINTR) {
                    snprintf(c->why, sizeof(c->why), "recv: %s", strerror(errno));
                    goto out;
                }
            } else {
                if (c->recvd + (size_t)n > c->bytes) {
                    snprintf(c->why, sizeof(c->why), "got %zu bytes more than sent", c->recvd + (size_t)n - c->bytes);
                    goto out;
                }
                for (ssize_t i = 0; i < n; i++) {
                    uint8_t want = pat[(c->recvd + (size_t)i) % PATLEN];
                    if (buf[i] != want) {
                        snprintf(c->why, sizeof(c->why), "mismatch at byte %zu: expected 0x%02x got 0x%02x",
                                 c->recvd + (size_t)i, want, buf[i]);
                        goto out;
                    }
                }
                c->recvd += (size_t)n;
                last_progress = now_ms();
            }
        }
        if ((p.revents & POLLOUT) && c->sent < c->bytes) {
            size_t off = c->sent % PATLEN;
            size_t n = PATLEN - off;
            if (n > c->bytes - c->sent)
                n = c->bytes - c->sent;
            if (n > 65536)
                n = 65536;
            if (rng) {
                size_t k = 1 + xorshift32(&rng) % 65536u;
                n = k < n ? k : n;
            }
            ssize_t w = send(fd, pat + off, n, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno != EAGAIN && errno != EINTR) {
                    snprintf(c->why, sizeof(c->why), "send: %s", strerror(errno));
                    goto out;
                }
            } else {
                c->sent += (size_t)w;
                last_progress = now_ms();
            }
        }
    }
    if (c->recvd != c->bytes) {
        snprintf(c->why, sizeof(c->why), "EOF after %zu of %zu bytes", c->recvd, c->bytes);
        goto out;
    }
    c->ok = true;
out:
    close(fd);
    free(pat);
    return NULL;
}

static bool wait_stat(bunring_server *srv, enum bunring_stat s, uint64_t at_least, unsigned timeout_ms);

/* Runs the n prepared echo clients at once; returns how many failed (each reported). With gate_srv,
 * they connect, and start sending once gate_srv has accepted all of them. */
static unsigned run_clients(const char *ctx, struct echo_client *cs, unsigned n, bunring_server *gate_srv)
{
    int gate = 0;
    uint64_t accepted_before = gate_srv ? stat_sum(gate_srv, BUNRING_STAT_CONN_ACCEPTED) : 0;
    pthread_t *th = calloc(n, sizeof(*th));
    bool *started = calloc(n, sizeof(*started));
    unsigned bad = 0;
    if (!th || !started) {
        check(false, ctx, "out of memory for %u clients", n);
        free(th);
        free(started);
        return n;
    }
    for (unsigned i = 0; i < n; i++) {
        cs[i].gate = gate_srv ? &gate : NULL;
        started[i] = pthread_create(&th[i], NULL, echo_client_run, &cs[i]) == 0;
        if (!started[i])
            snprintf(cs[i].why, sizeof(cs[i].why), "pthread_create failed");
    }
    if (gate_srv) {
        check(wait_stat(gate_srv, BUNRING_STAT_CONN_ACCEPTED, accepted_before + n, 10000), ctx,
              "%u clients connected, the server accepted %llu", n,
              (unsigned long long)(stat_sum(gate_srv, BUNRING_STAT_CONN_ACCEPTED) - accepted_before));
        __atomic_store_n(&gate, 1, __ATOMIC_RELEASE);
    }
    for (unsigned i = 0; i < n; i++) {
        if (started[i])
            pthread_join(th[i], NULL);
        if (!check(started[i] && cs[i].ok, ctx, "echo client %u (seed %u, %s): %s (sent %zu, received %zu of %zu)", i,
                   cs[i].seed, cs[i].half_close ? "half-close" : "close after echo", cs[i].why, cs[i].sent,
                   cs[i].recvd, cs[i].bytes))
            bad++;
    }
    free(th);
    free(started);
    return bad;
}

/* Runs n echo clients at once, `bytes` each, half of them half-closing; returns how many failed. */
static unsigned run_echo_clients(const char *ctx, uint32_t port, unsigned n, size_t bytes, uint32_t seed_base)
{
    struct echo_client *cs = calloc(n, sizeof(*cs));
    if (!cs) {
        check(false, ctx, "out of memory for %u clients", n);
        return n;
    }
    for (unsigned i = 0; i < n; i++) {
        cs[i].port = port;
        cs[i].seed = seed_base + i;
        cs[i].bytes = bytes;
        cs[i].half_close = (i % 2) == 0;
    }
    unsigned bad = run_clients(ctx, cs, n, NULL);
    free(cs);
    return bad;
}

/* ---- flood client (for stop under load) ---- */

struct flood_client {
    uint32_t port;
    const int *gate; /* non-NULL: after connecting, wait until *gate is 1 */
    volatile int connected; /* 1 once connected, -1 if connect failed */
    bool ended;             /* saw EOF or a reset: the server closed it */
    size_t sent, recvd;
    char why[200];
};

static void *flood_client_run(void *arg)
{
    struct flood_client *c = arg;
    uint8_t *pat = make_pattern(7777);
    uint8_t buf[16384];
    int fd = pat ? connect_to(c->port, c->why, sizeof(c->why)) : -1;
    if (fd < 0) {
        __atomic_store_n(&c->connected, -1, __ATOMIC_RELEASE);
        free(pat);
        return NULL;
    }
    __atomic_store_n(&c->connected, 1, __ATOMIC_RELEASE);
    wait_gate(c->gate);
    uint64_t start = now_ms();
    while (now_ms() - start < (uint64_t)g_io_timeout_ms) {
        struct pollfd p = {.fd = fd, .events = POLLIN | POLLOUT};
        if (poll(&p, 1, 200) <= 0)
            continue;
        if (p.revents & (POLLIN | POLLERR | POLLHUP)) {
            ssize_t n = recv(fd, buf, sizeof(buf), 0);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                c->ended = true;
                break;
            }
            if (n > 0)
                c->recvd += (size_t)n;
        }
        if (p.revents & POLLOUT) {
            size_t off = c->sent % PATLEN;
            ssize_t w = send(fd, pat + off, PATLEN - off, MSG_NOSIGNAL);
            if (w < 0 && errno != EAGAIN && errno != EINTR) {
                c->ended = true;
                break;
            }
            if (w > 0)
                c->sent += (size_t)w;
        }
    }
    if (!c->ended)
        snprintf(c->why, sizeof(c->why), "connection still open %u ms after the flood started", g_io_timeout_ms);
    close(fd);
    free(pat);
    return NULL;
}

/* Polls until cond(srv) holds or timeout_ms passes. */
static bool wait_stat(bunring_server *srv, enum bunring_stat s, uint64_t at_least, unsigned timeout_ms)
{
    uint64_t end = now_ms() + timeout_ms;
    while (now_ms() < end) {
        if (stat_sum(srv, s) >= at_least)
            return true;
        sleep_ms(2);
    }
    return stat_sum(srv, s) >= at_least;
}

/* Bytes echoed in handler mode: what the loops sent and what the JS side sent itself (the shortcut). */
static uint64_t handler_bytes_out(bunring_server *srv)
{
    return stat_sum(srv, BUNRING_STAT_BYTES_OUT) + stat_sum(srv, BUNRING_STAT_JS_DIRECT_BYTES);
}

static bool wait_handler_out(bunring_server *srv, uint64_t at_least, unsigned timeout_ms)
{
    uint64_t end = now_ms() + timeout_ms;
    while (now_ms() < end && handler_bytes_out(srv) < at_least)
        sleep_ms(2);
    return handler_bytes_out(srv) >= at_least;
}

static bool wait_open_zero(bunring_server *srv, unsigned timeout_ms)
{
    uint64_t end = now_ms() + timeout_ms;
    while (now_ms() < end) {
        if (stat_sum(srv, BUNRING_STAT_CONN_OPEN) == 0 && stat_sum(srv, BUNRING_STAT_BUFFERS_IN_USE) == 0)
            return true;
        sleep_ms(2);
    }
    return stat_sum(srv, BUNRING_STAT_CONN_OPEN) == 0 && stat_sum(srv, BUNRING_STAT_BUFFERS_IN_USE) == 0;
}

/* ---- configuration ---- */

struct opts {
    unsigned conns;
    size_t bytes;
    unsigned flood;
    unsigned timeout_s;
    bool uring, epoll;
    bool t1, t2;
};

static void base_config(struct bunring_config *cfg, uint32_t backend, uint32_t threads)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->backend = backend;
    cfg->port = 0;
    cfg->threads = threads;
    cfg->buffer_size = 2048;
    cfg->buffer_count = 256; /* small: connections compete for buffers (ENOBUFS / starvation paths) */
    cfg->max_connections = 1024;
    cfg->max_pending_bytes = 65536;
    cfg->backlog = 512;
    cfg->drain_ms = 1000;
    cfg->idle_timeout_ms = 0;
    cfg->stall_timeout_ms = 10000; /* the default grace for paused peers under pool pressure */
    cfg->flags = 0;
    cfg->cpu_count = 0;
}

static const char *backend_name(uint32_t b) { return b == BUNRING_BACKEND_URING ? "uring" : "epoll"; }

/* ---- scenarios ---- */

static void scenario_server(const struct opts *o, uint32_t backend, uint32_t threads)
{
    char ctx[64];
    snprintf(ctx, sizeof(ctx), "%s threads=%u", backend_name(backend), threads);
    unsigned failures_before = g_failures;
    struct bunring_config cfg;
    base_config(&cfg, backend, threads);
    struct bunring_error err;
    memset(&err, 0, sizeof(err));
    bunring_server *srv = bunring_server_start(&cfg, "127.0.0.1", &err);
    if (!check(srv != NULL, ctx, "start failed: %d %s", err.code, err.message))
        return;
    uint32_t port = bunring_server_port(srv);
    check(port > 0, ctx, "ephemeral port is %u", port);
    check(bunring_server_threads(srv) == threads, ctx, "threads %u", bunring_server_threads(srv));
    check(stat_sum(srv, BUNRING_STAT_BUFFERS_TOTAL) == (uint64_t)cfg.buffer_count * threads, ctx,
          "buffersTotal %llu, expected %u", (unsigned long long)stat_sum(srv, BUNRING_STAT_BUFFERS_TOTAL),
          cfg.buffer_count * threads);
    note("%s: port %u, features 0x%x", ctx, port, bunring_server_features(srv));

    /* 1. concurrent echo with byte-exact checks, half of them half-closing */
    uint64_t t0 = now_ms();
    unsigned bad = run_echo_clients(ctx, port, o->conns, o->bytes, threads * 1000u + backend * 100000u);
    note("%s: %u x %zu bytes echoed in %llu ms (%u failed)", ctx, o->conns, o->bytes,
         (unsigned long long)(now_ms() - t0), bad);
    uint64_t total = (uint64_t)o->conns * o->bytes;
    bool quiet = wait_open_zero(srv, 10000) && wait_stat(srv, BUNRING_STAT_BYTES_OUT, total, 10000);
    check(quiet, ctx, "server did not become quiet after the echo phase");
    uint64_t in = stat_sum(srv, BUNRING_STAT_BYTES_IN), out = stat_sum(srv, BUNRING_STAT_BYTES_OUT);
    bool stats_ok = true;
    stats_ok &= check(in == total && out == total, ctx, "bytesIn %llu bytesOut %llu, sent %llu", (unsigned long long)in,
                      (unsigned long long)out, (unsigned long long)total);
    stats_ok &= check(stat_sum(srv, BUNRING_STAT_CONN_ACCEPTED) == o->conns, ctx, "connAccepted %llu, made %u",
                      (unsigned long long)stat_sum(srv, BUNRING_STAT_CONN_ACCEPTED), o->conns);
    stats_ok &= check(stat_sum(srv, BUNRING_STAT_CONN_CLOSED_EOF) == o->conns, ctx, "connClosedEof %llu, expected %u",
                      (unsigned long long)stat_sum(srv, BUNRING_STAT_CONN_CLOSED_EOF), o->conns);
    stats_ok &= check(stat_sum(srv, BUNRING_STAT_CONN_OPEN) == 0, ctx, "connOpen %llu",
                      (unsigned long long)stat_sum(srv, BUNRING_STAT_CONN_OPEN));
    stats_ok &= check(stat_sum(srv, BUNRING_STAT_ALLOCS_AFTER_START) == 0, ctx, "allocsAfterStart %llu",
                      (unsigned long long)stat_sum(srv, BUNRING_STAT_ALLOCS_AFTER_START));
    stats_ok &= check(stat_sum(srv, BUNRING_STAT_ERRORS) == 0, ctx, "errors %llu",
                      (unsigned long long)stat_sum(srv, BUNRING_STAT_ERRORS));
    stats_ok &= check(stat_sum(srv, BUNRING_STAT_BUFFERS_IN_USE) == 0, ctx, "buffersInUse %llu",
                      (unsigned long long)stat_sum(srv, BUNRING_STAT_BUFFERS_IN_USE));
    stats_ok &= check(stat_sum(srv, BUNRING_STAT_PAUSED_NOW) == 0, ctx, "pausedNow %llu",
                      (unsigned long long)stat_sum(srv, BUNRING_STAT_PAUSED_NOW));
    if (threads > 1 && o->conns >= 32) {
        /* SO_REUSEPORT hashes connections over the loops: with >= 32 connections, each loop gets some
         * unless the hash is broken (probability 2^-31). */
        for (uint32_t i = 0; i < threads; i++)
            stats_ok &= check(stat_loop(srv, i, BUNRING_STAT_CONN_ACCEPTED) > 0, ctx,
                              "loop %u accepted no connection (connections not spread over loops)", i);
    }
    if (!stats_ok)
        dump_stats(srv, ctx);

    /* 2. reset mid-stream: send without reading, then close with SO_LINGER 0 (RST) */
    uint64_t resets_before = stat_sum(srv, BUNRING_STAT_CONN_CLOSED_RESET);
    uint64_t in_before = stat_sum(srv, BUNRING_STAT_BYTES_IN);
    char why[200] = "";
    int fd = connect_to(port, why, sizeof(why));
    if (check(fd >= 0, ctx, "reset client connect: %s", why)) {
        uint8_t *pat = make_pattern(42);
        size_t sent = 0;
        uint64_t end = now_ms() + 5000;
        while (pat && sent < 256 * 1024 && now_ms() < end) {
            ssize_t w = send(fd, pat + (sent % PATLEN), PATLEN - (sent % PATLEN), MSG_NOSIGNAL);
            if (w > 0)
                sent += (size_t)w;
            else
                sleep_ms(1);
        }
        free(pat);
        check(wait_stat(srv, BUNRING_STAT_BYTES_IN, in_before + 1, 5000), ctx, "server never received the reset client's bytes");
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        close(fd);
        check(wait_stat(srv, BUNRING_STAT_CONN_CLOSED_RESET, resets_before + 1, 5000), ctx,
              "peer reset not counted: connClosedReset %llu", (unsigned long long)stat_sum(srv, BUNRING_STAT_CONN_CLOSED_RESET));
        check(wait_open_zero(srv, 5000), ctx, "reset connection still open: connOpen %llu",
              (unsigned long long)stat_sum(srv, BUNRING_STAT_CONN_OPEN));
    }
    /* still healthy afterwards */
    run_echo_clients(ctx, port, 2, 64 * 1024, 900);
    check(wait_open_zero(srv, 5000), ctx, "not quiet after the post-reset echo");
    check(stat_sum(srv, BUNRING_STAT_ERRORS) == 0, ctx, "errors %llu after a peer reset (peer behaviour is not an error)",
          (unsigned long long)stat_sum(srv, BUNRING_STAT_ERRORS));

    /* 3. stop under load */
    unsigned nf = o->flood;
    struct flood_client *fc = calloc(nf, sizeof(*fc));
    pthread_t *th = calloc(nf, sizeof(*th));
    bool *started = calloc(nf, sizeof(*started));
    if (!fc || !th || !started) {
        check(false, ctx, "out of memory");
    } else {
        uint64_t accepted_before = stat_sum(srv, BUNRING_STAT_CONN_ACCEPTED);
        for (unsigned i = 0; i < nf; i++) {
            fc[i].port = port;
            started[i] = pthread_create(&th[i], NULL, flood_client_run, &fc[i]) == 0;
        }
        /* wait until every flooder is accepted and traffic flows */
        check(wait_stat(srv, BUNRING_STAT_CONN_ACCEPTED, accepted_before + nf, 10000), ctx,
              "flood clients not all accepted (%llu of %u)",
              (unsigned long long)(stat_sum(srv, BUNRING_STAT_CONN_ACCEPTED) - accepted_before), nf);
        uint64_t in0 = stat_sum(srv, BUNRING_STAT_BYTES_IN);
        check(wait_stat(srv, BUNRING_STAT_BYTES_IN, in0 + 256 * 1024, 10000), ctx, "flood traffic is not flowing");
        uint64_t stop_at = now_ms();
        bunring_server_stop(srv, 100);
        bunring_server_stop(srv, 100); /* idempotent */
        uint64_t end = now_ms() + 10000;
        while (!bunring_server_done(srv) && now_ms() < end)
            sleep_ms(2);
        uint64_t took = now_ms() - stop_at;
        check(bunring_server_done(srv) == 1, ctx, "stop under load did not finish within 10 s");
        note("%s: stop under load took %llu ms", ctx, (unsigned long long)took);
        for (unsigned i = 0; i < nf; i++) {
            if (started[i])
                pthread_join(th[i], NULL);
            check(started[i] && fc[i].ended, ctx, "flood client %u: %s", i, fc[i].why[0] ? fc[i].why : "did not end");
        }
        check(stat_sum(srv, BUNRING_STAT_CONN_OPEN) == 0, ctx, "connOpen %llu after stop",
              (unsigned long long)stat_sum(srv, BUNRING_STAT_CONN_OPEN));
        check(stat_sum(srv, BUNRING_STAT_CONN_CLOSED_STOP) > 0, ctx, "connClosedStop is 0 after stopping %u busy connections", nf);
        check(stat_sum(srv, BUNRING_STAT_CONN_CLOSED_STOP) + stat_sum(srv, BUNRING_STAT_CONN_CLOSED_RESET) >=
                  nf + resets_before + 1,
              ctx, "closed by stop %llu + reset %llu, expected at least %llu",
              (unsigned long long)stat_sum(srv, BUNRING_STAT_CONN_CLOSED_STOP),
              (unsigned long long)stat_sum(srv, BUNRING_STAT_CONN_CLOSED_RESET),
              (unsigned long long)(nf + resets_before + 1));
        check(stat_sum(srv, BUNRING_STAT_ALLOCS_AFTER_START) == 0, ctx, "allocsAfterStart %llu",
              (unsigned long long)stat_sum(srv, BUNRING_STAT_ALLOCS_AFTER_START));
        check(stat_sum(srv, BUNRING_STAT_ERRORS) == 0, ctx, "errors %llu",
              (unsigned long long)stat_sum(srv, BUNRING_STAT_ERRORS));
        check(stat_sum(srv, BUNRING_STAT_BUFFERS_IN_USE) == 0, ctx, "buffersInUse %llu after stop",
              (unsigned long long)stat_sum(srv, BUNRING_STAT_BUFFERS_IN_USE));
        /* the port no longer accepts */
        int fd2 = connect_to(port, why, sizeof(why));
        check(fd2 < 0, ctx, "port %u still accepts connections after stop", port);
        if (fd2 >= 0)
            close(fd2);
    }
    free(fc);
    free(th);
    free(started);
    if (g_failures > failures_before)
        dump_stats(srv, ctx);
    bunring_server_free(srv);
}

/* bunring_server_free on a running server with an idle open connection must stop, join and free. */
static void scenario_free_running(uint32_t backend, uint32_t threads)
{
    char ctx[64];
    snprintf(ctx, sizeof(ctx), "%s threads=%u free-running", backend_name(backend), threads);
    struct bunring_config cfg;
    base_config(&cfg, backend, threads);
    cfg.drain_ms = 200;
    struct bunring_error err;
    bunring_server *srv = bunring_server_start(&cfg, "127.0.0.1", &err);
    if (!check(srv != NULL, ctx, "start failed: %d %s", err.code, err.message))
        return;
    char why[200];
    int fd = connect_to(bunring_server_port(srv), why, sizeof(why));
    check(fd >= 0, ctx, "connect: %s", why);
    check(wait_stat(srv, BUNRING_STAT_CONN_ACCEPTED, 1, 5000), ctx, "connection not accepted");
    uint64_t t0 = now_ms();
    bunring_server_free(srv);
    check(now_ms() - t0 < 5000, ctx, "free with an idle connection took %llu ms", (unsigned long long)(now_ms() - t0));
    if (fd >= 0) {
        /* the server side is closed: we read EOF (or a reset) */
        char b;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, 5000);
        ssize_t n = pr > 0 ? recv(fd, &b, 1, 0) : 1;
        check(n <= 0, ctx, "client connection not closed by free (poll %d, recv %zd)", pr, n);
        close(fd);
    }
}

/* After bunring_server_free returns, the port is free again: a new server can bind it at once (a
 * restart). Ten cycles on one port, idle and with one echoed connection. */
static void scenario_restart(uint32_t backend, uint32_t threads)
{
    char ctx[64];
    snprintf(ctx, sizeof(ctx), "%s threads=%u restart", backend_name(backend), threads);
    struct bunring_config cfg;
    struct bunring_error err;
    uint32_t port = 0;
    for (int i = 0; i < 10; i++) {
        base_config(&cfg, backend, threads);
        cfg.port = port;
        memset(&err, 0, sizeof(err));
        bunring_server *srv = bunring_server_start(&cfg, "127.0.0.1", &err);
        if (!check(srv != NULL, ctx, "cycle %d: start on port %u right after the previous server was freed: %d %s", i,
                   port, err.code, err.message))
            return;
        port = bunring_server_port(srv);
        if (i % 2 == 1)
            run_echo_clients(ctx, port, 1, 4096, 500u + (uint32_t)i);
        bunring_server_stop(srv, 0);
        uint64_t end = now_ms() + 5000;
        while (!bunring_server_done(srv) && now_ms() < end)
            sleep_ms(1);
        bunring_server_free(srv);
    }
}

/* The benchmark's load generator against a running server: a full run (connect, warm-up, measured
 * interval, drain) with zero errors, and a run stopped half-way, on the given client loop. */
static void scenario_loadgen(uint32_t backend, bool client_uring)
{
    char ctx[80];
    snprintf(ctx, sizeof(ctx), "%s loadgen (client %s)", backend_name(backend), client_uring ? "io_uring" : "epoll");
    struct bunring_config cfg;
    base_config(&cfg, backend, 1);
    struct bunring_error err;
    bunring_server *srv = bunring_server_start(&cfg, "127.0.0.1", &err);
    if (!check(srv != NULL, ctx, "start failed: %d %s", err.code, err.message))
        return;
    for (int stop_early = 0; stop_early < 2; stop_early++) {
        struct bunring_loadgen_error lerr;
        struct bunring_loadgen_config lc;
        memset(&lc, 0, sizeof(lc));
        lc.port = bunring_server_port(srv);
        lc.connections = 16;
        lc.length = 4096;
        lc.threads = 2;
        lc.duration_ms = stop_early ? 5000 : 300;
        lc.connect_timeout_ms = 5000;
        lc.flags = client_uring ? 0 : BUNRING_LOADGEN_FLAG_EPOLL;
        bunring_loadgen *lg = bunring_loadgen_start(&lc, "127.0.0.1", &lerr);
        if (!check(lg != NULL, ctx, "loadgen start failed: %d %s", lerr.code, lerr.message))
            break;
        uint64_t t0 = now_ms();
        if (stop_early) {
            sleep_ms(150);
            bunring_loadgen_stop(lg);
        }
        while (!bunring_loadgen_done(lg) && now_ms() - t0 < 10000)
            sleep_ms(5);
        struct bunring_loadgen_result r;
        memset(&r, 0, sizeof(r));
        if (check(bunring_loadgen_result(lg, &r) == 0, ctx, "loadgen not done after 10 s")) {
            int want_status = stop_early ? -ECANCELED : 0;
            check(r.status == want_status, ctx, "status %d, expected %d (%s)", r.status, want_status, r.message);
            check(r.mismatches + r.short_reads + r.io_errors + r.connect_errors == 0, ctx,
                  "errors: mismatches %llu, short reads %llu, io %llu, connect %llu", (unsigned long long)r.mismatches,
                  (unsigned long long)r.short_reads, (unsigned long long)r.io_errors, (unsigned long long)r.connect_errors);
            /* A stopped run also verified parts of the echoes still in flight: at most one per connection. */
            uint64_t whole = r.responses_total * lc.length;
            bool bytes_ok = stop_early ? r.bytes_verified >= whole && r.bytes_verified < whole + (uint64_t)lc.connections * lc.length
                                       : r.bytes_verified == whole;
            check(r.responses_total > 0 && bytes_ok, ctx, "round trips %llu, bytes verified %llu%s",
                  (unsigned long long)r.responses_total, (unsigned long long)r.bytes_verified,
                  stop_early ? " (stopped run)" : "");
            check(r.uring_workers == (client_uring ? r.workers : 0), ctx, "%u of %u workers on io_uring", r.uring_workers,
                  r.workers);
        }
        bunring_loadgen_free(lg);
    }
    check(wait_open_zero(srv, 5000), ctx, "server still has open connections after the load generator closed them");
    bunring_server_free(srv);
}

/* The load generator's request/response workload with pipelining against the echo server: a table of
 * 8 distinct 100-byte requests whose expected replies are themselves (the table is copied by start(),
 * so the caller's copy is scribbled over right after it), 16 in flight per connection; then the echo
 * workload with 8 in flight. Zero errors, every reply byte verified. */
static void scenario_loadgen_pipelined(uint32_t backend, bool client_uring)
{
    char ctx[96];
    snprintf(ctx, sizeof(ctx), "%s loadgen pipelined (client %s)", backend_name(backend), client_uring ? "io_uring" : "epoll");
    struct bunring_config cfg;
    base_config(&cfg, backend, 1);
    struct bunring_error err;
    bunring_server *srv = bunring_server_start(&cfg, "127.0.0.1", &err);
    if (!check(srv != NULL, ctx, "start failed: %d %s", err.code, err.message))
        return;
    enum { ENTRIES = 8, LEN = 100 };
    for (int echo = 0; echo < 2; echo++) {
        uint8_t *table = malloc(ENTRIES * LEN);
        if (!check(table != NULL, ctx, "out of memory"))
            break;
        for (uint32_t i = 0; i < ENTRIES * LEN; i++)
            table[i] = (uint8_t)('a' + (i * 7 + i / LEN) % 26);
        struct bunring_loadgen_error lerr;
        struct bunring_loadgen_config lc;
        memset(&lc, 0, sizeof(lc));
        lc.port = bunring_server_port(srv);
        lc.connections = 12;
        lc.threads = 2;
        lc.duration_ms = 300;
        lc.connect_timeout_ms = 5000;
        lc.flags = client_uring ? 0 : BUNRING_LOADGEN_FLAG_EPOLL;
        if (echo) {
            lc.length = 700;
            lc.pipeline = 8;
        } else {
            lc.pipeline = 16;
            lc.request_len = LEN;
            lc.request_count = ENTRIES;
            lc.reply_len = LEN;
            lc.reply_count = ENTRIES;
            lc.requests = (uint64_t)(uintptr_t)table;
            lc.replies = (uint64_t)(uintptr_t)table;
        }
        bunring_loadgen *lg = bunring_loadgen_start(&lc, "127.0.0.1", &lerr);
        memset(table, 0, ENTRIES * LEN); /* start() made its own copy */
        free(table);
        if (!check(lg != NULL, ctx, "loadgen start failed: %d %s", lerr.code, lerr.message))
            break;
        uint64_t t0 = now_ms();
        while (!bunring_loadgen_done(lg) && now_ms() - t0 < 10000)
            sleep_ms(5);
        struct bunring_loadgen_result r;
        memset(&r, 0, sizeof(r));
        if (check(bunring_loadgen_result(lg, &r) == 0, ctx, "loadgen not done after 10 s")) {
            uint32_t reply_len = echo ? lc.length : LEN;
            check(r.status == 0, ctx, "%s: status %d (%s)", echo ? "echo" : "table", r.status, r.message);
            check(r.mismatches + r.short_reads + r.extras + r.io_errors + r.connect_errors == 0, ctx,
                  "%s: errors: mismatches %llu, short reads %llu, extras %llu, io %llu, connect %llu", echo ? "echo" : "table",
                  (unsigned long long)r.mismatches, (unsigned long long)r.short_reads, (unsigned long long)r.extras,
                  (unsigned long long)r.io_errors, (unsigned long long)r.connect_errors);
            check(r.responses_total > 0 && r.bytes_verified == r.responses_total * reply_len, ctx,
                  "%s: replies %llu, bytes verified %llu", echo ? "echo" : "table", (unsigned long long)r.responses_total,
                  (unsigned long long)r.bytes_verified);
        }
        bunring_loadgen_free(lg);
    }
    /* A table that is not whole, or a pipeline too deep, is refused at start with a message. */
    struct bunring_loadgen_error lerr;
    struct bunring_loadgen_config bad;
    memset(&bad, 0, sizeof(bad));
    bad.port = bunring_server_port(srv);
    bad.connections = 1;
    bad.threads = 1;
    bad.duration_ms = 100;
    bad.connect_timeout_ms = 1000;
    bad.request_len = 4;
    bad.request_count = 2;
    bad.reply_len = 4;
    bad.reply_count = 3;
    bad.requests = bad.replies = (uint64_t)(uintptr_t)"abcdefgh";
    check(bunring_loadgen_start(&bad, "127.0.0.1", &lerr) == NULL && lerr.code == -EINVAL, ctx,
          "reply_count 3 of 2 requests was accepted (%d %s)", lerr.code, lerr.message);
    bad.reply_count = 1;
    bad.pipeline = BUNRING_LOADGEN_MAX_PIPELINE + 1;
    check(bunring_loadgen_start(&bad, "127.0.0.1", &lerr) == NULL && lerr.code == -EINVAL, ctx,
          "pipeline %u was accepted (%d %s)", bad.pipeline, lerr.code, lerr.message);
    check(wait_open_zero(srv, 5000), ctx, "server still has open connections after the load generator closed them");
    bunring_server_free(srv);
}

/* ---- handler mode: the driver plays the JS side ----
 *
 * One consumer thread per server plays src/channel.ts + src/listen.ts for every loop's channel: it
 * consumes events (freeing rx up to offset + len of the OPEN/DATA records it consumed, then storing
 * ev_head), answers DATA with WRITE commands carrying the same bytes (tx records never wrap: a short
 * end of the area is skipped), answers END with END once its own backlog for that connection is
 * written, publishes cmd_tail and wakes a loop only when c_sleeping is 1 (after publishing, or after
 * freeing room when c_wants_room is 1 too), and before blocking stores js_sleeping = 1 and looks at
 * ev_tail once more. It blocks on an eventfd that the doorbell (called on a loop thread) only writes.
 * Like src/socket.ts it keeps at most HJS_HIGH_WATER bytes of a connection written and not sent.
 * What it cannot hand to tx at once (full tx or command ring) waits in a per-connection backlog, with
 * WANT_DRAIN asked once per wait, PAUSE above HJS_PAUSE_AT and RESUME below HJS_RESUME_AT; control
 * commands that find the ring full are held, in order, and no WRITE overtakes them.
 * It also checks what it is given: every event for a connection that is open with that generation,
 * an OPEN only for a free slot (so every OPEN gets exactly one CLOSE before its slot opens again),
 * records that never wrap and follow each other in rx, bytes below the published rx_tail, DRAIN only
 * when asked, a CLOSE reason that is a close counter, and no events left waiting while the loop
 * believes JS sleeps (a lost doorbell). Clients pick a behaviour for their connection by its port
 * (directives): plain echo, TERMINATE once a given number of bytes was echoed, or FLOOD (write a
 * given number of bytes at the first byte received, whatever comes).
 */
#define HJS_RECORD_MASK (BUNRING_JS_RECORDS - 1u)
#define HJS_RX_MASK (BUNRING_JS_RX_BYTES - 1u)
#define HJS_TX_MASK (BUNRING_JS_TX_BYTES - 1u)
#define HJS_MIN_CONTIGUOUS 4096u /* as src/channel.ts (tx) and js_channel.c (rx) */
#define HJS_HIGH_WATER (1u << 20) /* a connection's bytes written and not sent, at most (highWaterMark) */
#define HJS_PAUSE_AT (256u << 10)
#define HJS_RESUME_AT (64u << 10)
#define HJS_IDLE_WAIT_MS 2000
#define HJS_MAX_DIRECTIVES 64u
#define HJS_MAX_REPORTED 20u

#define ALOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define AADD(p, v) __atomic_add_fetch((p), (v), __ATOMIC_RELAXED)

enum hjs_directive {
    HJS_ECHO = 0,         /* write back what comes */
    HJS_TERMINATE_AT = 1, /* echo arg bytes, then TERMINATE at the next byte (once they were all sent) */
    HJS_FLOOD = 2,        /* at the first byte write arg bytes of the pattern, ignore what comes */
};

struct hconn {
    bool open;
    bool closed_before;   /* the slot had a connection that got its CLOSE */
    bool looked_up;       /* the directive for its port was looked up (at its first DATA) */
    bool peer_ended;      /* END came */
    bool end_sent;        /* END command queued */
    bool terminate_due;   /* TERMINATE once the backlog is written and sent */
    bool terminated;
    bool drain_requested; /* WANT_DRAIN queued, DRAIN not seen yet */
    bool js_paused;
    bool in_work;
    uint16_t port;
    uint32_t gen, last_gen;
    uint32_t directive;
    uint64_t directive_arg;
    uint64_t received; /* DATA bytes */
    uint32_t written;  /* bytes put in tx, free-running like sent[slot] */
    uint8_t *bl;       /* backlog: received, not yet in tx */
    size_t bl_head, bl_len, bl_cap;
};

struct hcmd {
    uint32_t type, slot, gen;
};

struct hloop {
    uint32_t index;
    struct bunring_js_channel *ch;
    uint32_t *sent;
    /* JS-owned positions (their only writer) and the last seen loop-owned ones */
    uint32_t ev_head, cmd_tail, tx_tail, published_cmd_tail, cmd_head_seen, tx_head_seen;
    uint32_t rx_expect; /* where the next OPEN/DATA record starts (or the area's start after a skip) */
    struct hconn *conns;
    uint32_t *work; /* slots with a backlog or an END / TERMINATE to send */
    uint32_t nwork;
    struct hcmd *held;
    uint32_t nheld, held_cap;
    /* counters (read by the main thread with relaxed loads) */
    uint64_t events, opens, closes, data_bytes, drains, pauses, terminates, wakes, room_wakes;
    uint64_t close_by[BUNRING_STAT_COUNT];
    uint64_t doorbells; /* written by the doorbell on the loop thread */
    uint64_t direct_sends, direct_bytes; /* bunring_js_send calls that sent something, and their bytes */
};

struct hjs {
    char ctx[96];
    bunring_server *srv;
    uint32_t nloops, max_conns;
    struct hloop *loops;
    int efd;
    pthread_t thread;
    bool thread_started;
    int quit;        /* atomic: the server is done, consume what is left and end */
    int pending;     /* atomic: the consumer holds work (backlogs, held commands) */
    bool direct;     /* send backlogs with bunring_js_send when nothing is unsent (the low-load shortcut) */
    uint64_t violations;
    pthread_mutex_t lock; /* directives and the close log */
    struct {
        uint16_t port;
        uint32_t kind;
        uint64_t arg;
    } dirs[HJS_MAX_DIRECTIVES];
    uint32_t ndirs;
    struct {
        uint16_t port;
        uint32_t reason;
        uint32_t unsent; /* written - sent[slot] when its CLOSE was consumed */
    } *closelog;
    uint8_t *pat; /* what HJS_FLOOD writes */
    size_t nclosed, closelog_cap;
};

/* The doorbell has no user pointer: one handler server runs at a time, and this is its JS side. */
static struct hjs *g_hjs;
static uint64_t g_stray_doorbells;

static void hjs_doorbell(uint32_t loop)
{
    struct hjs *h = __atomic_load_n(&g_hjs, __ATOMIC_ACQUIRE);
    if (!h || loop >= h->nloops) {
        AADD(&g_stray_doorbells, 1);
        return;
    }
    AADD(&h->loops[loop].doorbells, 1);
    uint64_t one = 1;
    ssize_t w = write(h->efd, &one, sizeof(one)); /* only signals: the consumer thread does the work */
    (void)w;
}

static void hjs_violation(struct hjs *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void hjs_violation(struct hjs *h, const char *fmt, ...)
{
    uint64_t n = AADD(&h->violations, 1);
    if (n > HJS_MAX_REPORTED)
        return;
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&g_lock);
    fprintf(stderr, "driver: FAIL [%s] channel: ", h->ctx);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    pthread_mutex_unlock(&g_lock);
    va_end(ap);
}

static const char *hjs_event_name(uint32_t type)
{
    static const char *names[] = {"?", "OPEN", "DATA", "END", "DRAIN", "CLOSE"};
    return type < 6 ? names[type] : "unknown";
}

static bool is_close_reason(uint32_t r)
{
    return r == BUNRING_STAT_CONN_CLOSED_EOF || r == BUNRING_STAT_CONN_CLOSED_RESET || r == BUNRING_STAT_CONN_CLOSED_STOP ||
           r == BUNRING_STAT_CONN_CLOSED_IDLE || r == BUNRING_STAT_CONN_CLOSED_STALLED;
}

static void hjs_directive(struct hjs *h, uint16_t port, uint32_t kind, uint64_t arg)
{
    pthread_mutex_lock(&h->lock);
    if (h->ndirs < HJS_MAX_DIRECTIVES) {
        h->dirs[h->ndirs].port = port;
        h->dirs[h->ndirs].kind = kind;
        h->dirs[h->ndirs].arg = arg;
        h->ndirs++;
    }
    pthread_mutex_unlock(&h->lock);
}

/* The reason the last connection from this client port was closed with, or -1 if none yet. */
static int hjs_close_reason(struct hjs *h, uint16_t port, uint32_t *unsent)
{
    int r = -1;
    pthread_mutex_lock(&h->lock);
    for (size_t i = h->nclosed; i-- > 0;)
        if (h->closelog[i].port == port) {
            r = (int)h->closelog[i].reason;
            if (unsent)
                *unsent = h->closelog[i].unsent;
            break;
        }
    pthread_mutex_unlock(&h->lock);
    return r;
}

static int hjs_wait_close_reason(struct hjs *h, uint16_t port, unsigned timeout_ms, uint32_t *unsent)
{
    uint64_t end = now_ms() + timeout_ms;
    int r;
    while ((r = hjs_close_reason(h, port, unsent)) < 0 && now_ms() < end)
        sleep_ms(2);
    return r;
}

/* ---- commands (JS -> loop), as src/channel.ts ---- */

static bool hjs_ring_room(struct hloop *L)
{
    if (L->cmd_tail - L->cmd_head_seen < BUNRING_JS_RECORDS)
        return true;
    L->cmd_head_seen = __atomic_load_n(&L->ch->cmd_head, __ATOMIC_ACQUIRE);
    return L->cmd_tail - L->cmd_head_seen < BUNRING_JS_RECORDS;
}

static void hjs_put(struct hloop *L, uint32_t type, uint32_t slot, uint32_t gen, uint32_t offset, uint32_t len)
{
    struct bunring_js_record *r = &L->ch->commands[L->cmd_tail & HJS_RECORD_MASK];
    r->type_gen = type | (gen << 8);
    r->slot = slot;
    r->offset = offset;
    r->len = len;
    L->cmd_tail++;
}

/* A control command: into the ring, or held (in order) while the ring is full. */
static void hjs_command(struct hjs *h, struct hloop *L, uint32_t type, uint32_t slot, uint32_t gen)
{
    if (L->nheld == 0 && hjs_ring_room(L)) {
        hjs_put(L, type, slot, gen, 0, 0);
        return;
    }
    if (L->nheld == L->held_cap) {
        uint32_t cap = L->held_cap ? L->held_cap * 2 : 64;
        struct hcmd *n = realloc(L->held, sizeof(*n) * cap);
        if (!n) {
            hjs_violation(h, "out of memory holding commands");
            return;
        }
        L->held = n;
        L->held_cap = cap;
    }
    L->held[L->nheld++] = (struct hcmd){type, slot, gen};
}

static void hjs_move_held(struct hloop *L)
{
    uint32_t k = 0;
    while (k < L->nheld && hjs_ring_room(L)) {
        hjs_put(L, L->held[k].type, L->held[k].slot, L->held[k].gen, 0, 0);
        k++;
    }
    if (k > 0) {
        memmove(L->held, L->held + k, sizeof(*L->held) * (L->nheld - k));
        L->nheld -= k;
    }
}

/* Contiguous tx room for up to `want` bytes at *offset, skipping a short end of the area. */
static uint32_t hjs_reserve(struct hloop *L, uint32_t want, uint32_t *offset)
{
    uint32_t free_bytes = BUNRING_JS_TX_BYTES - (L->tx_tail - L->tx_head_seen);
    if (free_bytes < want) {
        L->tx_head_seen = __atomic_load_n(&L->ch->tx_head, __ATOMIC_ACQUIRE);
        free_bytes = BUNRING_JS_TX_BYTES - (L->tx_tail - L->tx_head_seen);
    }
    uint32_t to_end = BUNRING_JS_TX_BYTES - (L->tx_tail & HJS_TX_MASK);
    if (to_end < want && to_end < HJS_MIN_CONTIGUOUS && free_bytes > to_end) {
        L->tx_tail += to_end; /* the loop frees the skipped bytes with the next WRITE */
        free_bytes -= to_end;
        to_end = BUNRING_JS_TX_BYTES;
    }
    uint32_t room = free_bytes < to_end ? free_bytes : to_end;
    if (room > BUNRING_JS_MAX_RECORD_BYTES)
        room = BUNRING_JS_MAX_RECORD_BYTES;
    *offset = L->tx_tail;
    return room < want ? room : want;
}

/* Copies up to len bytes into tx as WRITE records; returns how many it took. */
static uint32_t hjs_write(struct hloop *L, uint32_t slot, uint32_t gen, const uint8_t *data, uint32_t len)
{
    if (L->nheld > 0)
        return 0; /* a WRITE may not overtake held control commands */
    uint32_t done = 0;
    while (done < len && hjs_ring_room(L)) {
        uint32_t offset;
        uint32_t room = hjs_reserve(L, len - done, &offset);
        if (room == 0)
            break;
        memcpy(L->ch->tx + (offset & HJS_TX_MASK), data + done, room);
        hjs_put(L, BUNRING_JS_CMD_WRITE, slot, gen, offset, room);
        L->tx_tail += room;
        done += room;
    }
    return done;
}

static void hjs_publish(struct hjs *h, struct hloop *L)
{
    if (L->nheld > 0)
        hjs_move_held(L);
    if (L->cmd_tail == L->published_cmd_tail)
        return;
    /* Records and tx bytes were written before these stores: the loop sees them once it sees the tail. */
    __atomic_store_n(&L->ch->tx_tail, L->tx_tail, __ATOMIC_SEQ_CST);
    __atomic_store_n(&L->ch->cmd_tail, L->cmd_tail, __ATOMIC_SEQ_CST);
    L->published_cmd_tail = L->cmd_tail;
    if (__atomic_load_n(&L->ch->c_sleeping, __ATOMIC_SEQ_CST) == 1) {
        AADD(&L->wakes, 1);
        bunring_js_wake(h->srv, L->index);
    }
}

/* ---- events (loop -> JS) ---- */

static void hjs_add_work(struct hloop *L, uint32_t slot)
{
    struct hconn *st = &L->conns[slot];
    if (!st->in_work) {
        st->in_work = true;
        L->work[L->nwork++] = slot;
    }
}

static bool hjs_append(struct hconn *st, const uint8_t *p, uint32_t n)
{
    if (st->bl_head > 0 && st->bl_head + st->bl_len + n > st->bl_cap) {
        memmove(st->bl, st->bl + st->bl_head, st->bl_len);
        st->bl_head = 0;
    }
    if (st->bl_len + n > st->bl_cap) {
        size_t cap = st->bl_cap ? st->bl_cap * 2 : 65536;
        while (cap < st->bl_len + n)
            cap *= 2;
        uint8_t *b = realloc(st->bl, cap);
        if (!b)
            return false;
        st->bl = b;
        st->bl_cap = cap;
    }
    memcpy(st->bl + st->bl_head + st->bl_len, p, n);
    st->bl_len += n;
    return true;
}

/* The connection an event is for: open, with the event's generation; else a violation. */
static struct hconn *hjs_conn_of(struct hjs *h, struct hloop *L, uint32_t type, uint32_t slot, uint32_t gen)
{
    if (slot >= h->max_conns) {
        hjs_violation(h, "loop %u: %s for slot %u, maxConnections is %u", L->index, hjs_event_name(type), slot, h->max_conns);
        return NULL;
    }
    struct hconn *st = &L->conns[slot];
    if (!st->open || st->gen != gen) {
        hjs_violation(h, "loop %u: %s for slot %u gen %u, which is %s (gen %u)", L->index, hjs_event_name(type), slot, gen,
                      st->open ? "open" : "not open", st->open ? st->gen : st->last_gen);
        return NULL;
    }
    return st;
}

static void hjs_on_open(struct hjs *h, struct hloop *L, uint32_t slot, uint32_t gen, uint32_t offset, uint32_t len)
{
    if (slot >= h->max_conns) {
        hjs_violation(h, "loop %u: OPEN for slot %u, maxConnections is %u", L->index, slot, h->max_conns);
        return;
    }
    struct hconn *st = &L->conns[slot];
    if (st->open)
        hjs_violation(h, "loop %u: OPEN for slot %u gen %u while its connection gen %u got no CLOSE", L->index, slot, gen,
                      st->gen);
    else if (st->closed_before && st->last_gen == gen)
        hjs_violation(h, "loop %u: OPEN for slot %u reuses the closed connection's generation %u", L->index, slot, gen);
    uint16_t family = 0, port = 0;
    uint8_t addr[4] = {0, 0, 0, 0};
    if (len == BUNRING_JS_PEER_ADDRESS_BYTES) {
        const uint8_t *a = L->ch->rx + (offset & HJS_RX_MASK);
        memcpy(&family, a, 2);
        memcpy(&port, a + 2, 2);
        memcpy(addr, a + 4, 4);
    }
    if (len != BUNRING_JS_PEER_ADDRESS_BYTES || family != 2 || port == 0 || addr[0] != 127 || addr[1] != 0 || addr[2] != 0 ||
        addr[3] != 1)
        hjs_violation(h, "loop %u: OPEN for slot %u: peer address of %u bytes, family %u, %u.%u.%u.%u port %u", L->index,
                      slot, len, family, addr[0], addr[1], addr[2], addr[3], port);
    uint8_t *bl = st->bl;
    size_t cap = st->bl_cap;
    bool in_work = st->in_work;
    bool closed_before = st->closed_before;
    uint32_t last_gen = st->last_gen;
    memset(st, 0, sizeof(*st));
    st->bl = bl;
    st->bl_cap = cap;
    st->in_work = in_work; /* a stale entry in the work list is dropped there */
    st->closed_before = closed_before;
    st->last_gen = last_gen;
    st->open = true;
    st->gen = gen;
    st->port = port;
    AADD(&L->opens, 1);
}

static void hjs_on_data(struct hjs *h, struct hloop *L, struct hconn *st, uint32_t slot, uint32_t offset, uint32_t len)
{
    if (len == 0) {
        hjs_violation(h, "loop %u: DATA of 0 bytes for slot %u", L->index, slot);
        return;
    }
    if (st->peer_ended)
        hjs_violation(h, "loop %u: DATA after END for slot %u", L->index, slot);
    AADD(&L->data_bytes, len);
    if (!st->looked_up) {
        st->looked_up = true;
        pthread_mutex_lock(&h->lock);
        for (uint32_t i = h->ndirs; i-- > 0;)
            if (h->dirs[i].port == st->port) {
                st->directive = h->dirs[i].kind;
                st->directive_arg = h->dirs[i].arg;
                break;
            }
        pthread_mutex_unlock(&h->lock);
    }
    if (st->terminated || st->terminate_due)
        return; /* like src/listen.ts: no data after terminate() */
    if (st->directive == HJS_FLOOD) {
        for (uint64_t left = st->received == 0 ? st->directive_arg : 0; left > 0;) {
            uint32_t k = left < PATLEN ? (uint32_t)left : PATLEN;
            if (!hjs_append(st, h->pat, k)) {
                hjs_violation(h, "out of memory for a backlog of %zu bytes", st->bl_len + k);
                break;
            }
            left -= k;
        }
        st->received += len;
        hjs_add_work(L, slot);
        return;
    }
    const uint8_t *p = L->ch->rx + (offset & HJS_RX_MASK);
    uint32_t echo = len;
    if (st->directive == HJS_TERMINATE_AT && st->received + len > st->directive_arg) {
        echo = (uint32_t)(st->directive_arg - st->received);
        st->terminate_due = true;
    }
    st->received += len;
    if (echo > 0 && !hjs_append(st, p, echo))
        hjs_violation(h, "out of memory for a backlog of %zu bytes", st->bl_len + echo);
    hjs_add_work(L, slot);
}

static void hjs_on_close(struct hjs *h, struct hloop *L, struct hconn *st, uint32_t slot, uint32_t reason)
{
    if (!is_close_reason(reason))
        hjs_violation(h, "loop %u: CLOSE for slot %u with reason %u, not a close counter", L->index, slot, reason);
    else
        AADD(&L->close_by[reason], 1);
    AADD(&L->closes, 1);
    st->open = false;
    st->closed_before = true;
    st->last_gen = st->gen;
    st->bl_len = 0;
    st->bl_head = 0;
    pthread_mutex_lock(&h->lock);
    if (h->nclosed == h->closelog_cap) {
        size_t cap = h->closelog_cap ? h->closelog_cap * 2 : 256;
        void *n = realloc(h->closelog, cap * sizeof(*h->closelog));
        if (n) {
            h->closelog = n;
            h->closelog_cap = cap;
        }
    }
    if (h->nclosed < h->closelog_cap) {
        h->closelog[h->nclosed].port = st->port;
        h->closelog[h->nclosed].reason = reason;
        h->closelog[h->nclosed].unsent = st->written - __atomic_load_n(&L->sent[slot], __ATOMIC_ACQUIRE);
        h->nclosed++;
    }
    pthread_mutex_unlock(&h->lock);
}

static void hjs_event(struct hjs *h, struct hloop *L, const struct bunring_js_record *r)
{
    uint32_t type = r->type_gen & 0xffu;
    uint32_t gen = r->type_gen >> 8;
    if (type == BUNRING_JS_EV_OPEN) {
        hjs_on_open(h, L, r->slot, gen, r->offset, r->len);
        return;
    }
    if (type < BUNRING_JS_EV_DATA || type > BUNRING_JS_EV_CLOSE) {
        hjs_violation(h, "loop %u: event type %u", L->index, type);
        return;
    }
    struct hconn *st = hjs_conn_of(h, L, type, r->slot, gen);
    if (!st)
        return;
    switch (type) {
    case BUNRING_JS_EV_DATA:
        hjs_on_data(h, L, st, r->slot, r->offset, r->len);
        break;
    case BUNRING_JS_EV_END:
        if (st->peer_ended)
            hjs_violation(h, "loop %u: a second END for slot %u", L->index, r->slot);
        st->peer_ended = true;
        hjs_add_work(L, r->slot); /* END goes back once the backlog is written */
        break;
    case BUNRING_JS_EV_DRAIN:
        if (!st->drain_requested)
            hjs_violation(h, "loop %u: DRAIN for slot %u, which did not ask for one", L->index, r->slot);
        st->drain_requested = false;
        AADD(&L->drains, 1);
        hjs_add_work(L, r->slot);
        break;
    case BUNRING_JS_EV_CLOSE:
        hjs_on_close(h, L, st, r->slot, r->len);
        break;
    }
}

/* Consumes every published event, then frees them and their rx bytes; returns how many. */
static uint32_t hjs_consume(struct hjs *h, struct hloop *L)
{
    struct bunring_js_channel *ch = L->ch;
    uint32_t tail = __atomic_load_n(&ch->ev_tail, __ATOMIC_SEQ_CST);
    if (tail == L->ev_head)
        return 0;
    if (tail - L->ev_head > BUNRING_JS_RECORDS)
        hjs_violation(h, "loop %u: ev_tail %u is %u records past ev_head %u (ring of %u)", L->index, tail, tail - L->ev_head,
                      L->ev_head, BUNRING_JS_RECORDS);
    /* Stored before ev_tail: at least as new as the records below. */
    uint32_t rx_tail = __atomic_load_n(&ch->rx_tail, __ATOMIC_ACQUIRE);
    bool rx_used = false;
    uint32_t rx_end = 0, n = 0;
    while (L->ev_head != tail) {
        struct bunring_js_record r = ch->events[L->ev_head & HJS_RECORD_MASK];
        L->ev_head++;
        n++;
        uint32_t type = r.type_gen & 0xffu;
        if (type == BUNRING_JS_EV_OPEN || type == BUNRING_JS_EV_DATA) {
            uint32_t at = r.offset & HJS_RX_MASK;
            if (r.len > BUNRING_JS_MAX_RECORD_BYTES || at + r.len > BUNRING_JS_RX_BYTES)
                hjs_violation(h, "loop %u: %s record of %u bytes at rx %u wraps or is too long", L->index,
                              hjs_event_name(type), r.len, at);
            if (r.offset != L->rx_expect && !(at == 0 && r.offset - L->rx_expect < HJS_MIN_CONTIGUOUS))
                hjs_violation(h, "loop %u: %s record at rx offset %u, the previous one ended at %u", L->index,
                              hjs_event_name(type), r.offset, L->rx_expect);
            if ((int32_t)(rx_tail - (r.offset + r.len)) < 0)
                hjs_violation(h, "loop %u: %s record ends at %u, past the published rx_tail %u", L->index,
                              hjs_event_name(type), r.offset + r.len, rx_tail);
            L->rx_expect = r.offset + r.len;
            rx_end = r.offset + r.len;
            rx_used = true;
        }
        hjs_event(h, L, &r);
    }
    AADD(&L->events, n);
    if (rx_used)
        __atomic_store_n(&ch->rx_head, rx_end, __ATOMIC_SEQ_CST);
    __atomic_store_n(&ch->ev_head, L->ev_head, __ATOMIC_SEQ_CST);
    /* A loop asleep with connections waiting for this room would not notice it otherwise. */
    if (__atomic_load_n(&ch->c_sleeping, __ATOMIC_SEQ_CST) == 1 && __atomic_load_n(&ch->c_wants_room, __ATOMIC_SEQ_CST) == 1) {
        AADD(&L->room_wakes, 1);
        AADD(&L->wakes, 1);
        bunring_js_wake(h->srv, L->index);
    }
    return n;
}

/* TERMINATE once every byte written for the connection was handed to the kernel (sent[slot]), so
 * the client has them all before the reset. */
static void hjs_terminate(struct hjs *h, struct hloop *L, uint32_t slot, struct hconn *st)
{
    uint64_t end = now_ms() + 5000;
    while (__atomic_load_n(&L->sent[slot], __ATOMIC_ACQUIRE) != st->written && now_ms() < end)
        sleep_ms(1);
    uint32_t sent = __atomic_load_n(&L->sent[slot], __ATOMIC_ACQUIRE);
    if (sent != st->written)
        hjs_violation(h, "loop %u: slot %u: sent[slot] is %u after 5 s, %u bytes were written", L->index, slot, sent,
                      st->written);
    hjs_command(h, L, BUNRING_JS_CMD_TERMINATE, slot, st->gen);
    st->terminated = true;
    AADD(&L->terminates, 1);
}

/* Writes the backlogs it can, and sends the END / TERMINATE that wait for them. */
static void hjs_flush(struct hjs *h, struct hloop *L)
{
    uint32_t keep = 0;
    for (uint32_t i = 0; i < L->nwork; i++) {
        uint32_t slot = L->work[i];
        struct hconn *st = &L->conns[slot];
        if (!st->open || st->terminated) {
            st->in_work = false;
            continue;
        }
        /* The shortcut, as src/socket.ts takes it: only when every byte handed to the loop was sent. */
        if (h->direct && st->bl_len > 0 && L->nheld == 0 &&
            st->written == __atomic_load_n(&L->sent[slot], __ATOMIC_ACQUIRE)) {
            uint32_t want = st->bl_len > (1u << 20) ? (1u << 20) : (uint32_t)st->bl_len;
            int32_t k = bunring_js_send(h->srv, L->index, slot, st->gen, st->bl + st->bl_head, want);
            if (k > 0) {
                st->bl_head += (uint32_t)k;
                st->bl_len -= (uint32_t)k;
                AADD(&L->direct_sends, 1);
                AADD(&L->direct_bytes, (uint64_t)k);
            } else if (k < 0 && k != -ESTALE && k != -EPIPE && k != -ECONNRESET) {
                hjs_violation(h, "loop %u: bunring_js_send on slot %u: %s", L->index, slot, strerror(-k));
            }
        }
        while (st->bl_len > 0) {
            uint32_t unsent = st->written - __atomic_load_n(&L->sent[slot], __ATOMIC_ACQUIRE);
            if (unsent >= HJS_HIGH_WATER)
                break;
            uint32_t want = st->bl_len > HJS_HIGH_WATER - unsent ? HJS_HIGH_WATER - unsent : (uint32_t)st->bl_len;
            uint32_t k = hjs_write(L, slot, st->gen, st->bl + st->bl_head, want);
            if (k == 0)
                break;
            st->bl_head += k;
            st->bl_len -= k;
            st->written += k;
        }
        if (st->bl_len == 0)
            st->bl_head = 0;
        if (st->js_paused && st->bl_len <= HJS_RESUME_AT) {
            st->js_paused = false;
            hjs_command(h, L, BUNRING_JS_CMD_RESUME, slot, st->gen);
        }
        if (st->bl_len > 0) {
            if (!st->drain_requested) {
                st->drain_requested = true;
                hjs_command(h, L, BUNRING_JS_CMD_WANT_DRAIN, slot, st->gen);
            }
            if (!st->js_paused && st->bl_len >= HJS_PAUSE_AT) {
                st->js_paused = true;
                AADD(&L->pauses, 1);
                hjs_command(h, L, BUNRING_JS_CMD_PAUSE, slot, st->gen);
            }
            L->work[keep++] = slot;
            continue;
        }
        st->in_work = false;
        if (st->terminate_due)
            hjs_terminate(h, L, slot, st);
        else if (st->peer_ended && !st->end_sent) {
            st->end_sent = true;
            hjs_command(h, L, BUNRING_JS_CMD_END, slot, st->gen);
        }
    }
    L->nwork = keep;
}

/* Woken by nothing for HJS_IDLE_WAIT_MS: events that wait while js_sleeping is still 1 were
 * published without the doorbell (allowing the loop a moment between its two stores). */
static void hjs_check_lost_wakeup(struct hjs *h)
{
    for (uint32_t i = 0; i < h->nloops; i++) {
        struct hloop *L = &h->loops[i];
        if (__atomic_load_n(&L->ch->ev_tail, __ATOMIC_SEQ_CST) == L->ev_head)
            continue;
        sleep_ms(500);
        uint32_t tail = __atomic_load_n(&L->ch->ev_tail, __ATOMIC_SEQ_CST);
        if (tail != L->ev_head && __atomic_load_n(&L->ch->js_sleeping, __ATOMIC_SEQ_CST) == 1)
            hjs_violation(h, "loop %u: %u events waited %u ms with js_sleeping still 1: the doorbell was not rung", i,
                          tail - L->ev_head, HJS_IDLE_WAIT_MS + 500);
    }
}

static void *hjs_run(void *arg)
{
    struct hjs *h = arg;
    for (;;) {
        bool quitting = __atomic_load_n(&h->quit, __ATOMIC_ACQUIRE) != 0;
        uint32_t n = 0;
        for (uint32_t i = 0; i < h->nloops; i++)
            n += hjs_consume(h, &h->loops[i]);
        bool pending = false;
        for (uint32_t i = 0; i < h->nloops; i++) {
            hjs_flush(h, &h->loops[i]);
            hjs_publish(h, &h->loops[i]);
            pending |= h->loops[i].nwork > 0 || h->loops[i].nheld > 0;
        }
        __atomic_store_n(&h->pending, pending ? 1 : 0, __ATOMIC_SEQ_CST);
        if (n > 0)
            continue;
        if (quitting)
            break; /* the loops are gone and every event they published was consumed */
        /* Say we sleep, then look once more: events published before the loop saw the flag. */
        bool came = false;
        for (uint32_t i = 0; i < h->nloops; i++) {
            struct hloop *L = &h->loops[i];
            __atomic_store_n(&L->ch->js_sleeping, 1, __ATOMIC_SEQ_CST);
            if (__atomic_load_n(&L->ch->ev_tail, __ATOMIC_SEQ_CST) != L->ev_head) {
                __atomic_store_n(&L->ch->js_sleeping, 0, __ATOMIC_SEQ_CST);
                came = true;
            }
        }
        if (came)
            continue;
        struct pollfd p = {.fd = h->efd, .events = POLLIN};
        int pr = poll(&p, 1, pending ? 1 : HJS_IDLE_WAIT_MS);
        if (pr > 0) {
            uint64_t v;
            ssize_t r = read(h->efd, &v, sizeof(v));
            (void)r;
        } else if (pr == 0 && !pending && !__atomic_load_n(&h->quit, __ATOMIC_ACQUIRE)) {
            hjs_check_lost_wakeup(h);
        }
    }
    return NULL;
}

/* Starts a handler-mode server and its JS side (the consumer thread). NULL (reported) on failure. */
static struct hjs *hjs_start(const char *ctx, const struct bunring_config *cfg)
{
    struct hjs *h = calloc(1, sizeof(*h));
    if (!check(h != NULL, ctx, "out of memory"))
        return NULL;
    snprintf(h->ctx, sizeof(h->ctx), "%s", ctx);
    h->nloops = cfg->threads;
    h->max_conns = cfg->max_connections;
    h->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    pthread_mutex_init(&h->lock, NULL);
    h->loops = calloc(h->nloops, sizeof(*h->loops));
    h->pat = make_pattern(31337);
    bool ok = h->efd >= 0 && h->loops != NULL && h->pat != NULL;
    for (uint32_t i = 0; ok && i < h->nloops; i++) {
        h->loops[i].index = i;
        h->loops[i].conns = calloc(h->max_conns, sizeof(struct hconn));
        h->loops[i].work = calloc(h->max_conns, sizeof(uint32_t));
        ok = h->loops[i].conns && h->loops[i].work;
    }
    struct bunring_error err;
    memset(&err, 0, sizeof(err));
    if (ok) {
        __atomic_store_n(&g_hjs, h, __ATOMIC_RELEASE);
        h->srv = bunring_server_start_handler(cfg, "127.0.0.1", hjs_doorbell, &err);
    }
    if (!check(ok && h->srv != NULL, ctx, "handler start failed: %d %s", err.code, err.message))
        goto fail;
    for (uint32_t i = 0; i < h->nloops; i++) {
        struct hloop *L = &h->loops[i];
        L->ch = bunring_js_channel_of(h->srv, i);
        L->sent = bunring_js_sent_of(h->srv, i);
        if (!check(L->ch != NULL && L->sent != NULL, ctx, "loop %u: channel %p, sent %p", i, (void *)L->ch, (void *)L->sent))
            goto fail;
        check(((uintptr_t)L->ch & 63u) == 0, ctx, "loop %u: channel at %p is not cache-line aligned", i, (void *)L->ch);
        check(L->ch->ev_tail == 0 && L->ch->cmd_head == 0 && L->ch->rx_tail == 0 && L->ch->tx_head == 0 &&
                  L->ch->ev_head == 0 && L->ch->cmd_tail == 0 && L->ch->js_sleeping == 0,
              ctx, "loop %u: channel control words are not zero at start", i);
    }
    check(bunring_js_channel_of(h->srv, h->nloops) == NULL && bunring_js_sent_of(h->srv, h->nloops) == NULL, ctx,
          "channel of loop %u (past the last) is not NULL", h->nloops);
    if (!check(pthread_create(&h->thread, NULL, hjs_run, h) == 0, ctx, "could not start the consumer thread"))
        goto fail;
    h->thread_started = true;
    return h;
fail:
    if (h->srv)
        bunring_server_free(h->srv);
    __atomic_store_n(&g_hjs, NULL, __ATOMIC_RELEASE);
    h->srv = NULL;
    if (h->efd >= 0)
        close(h->efd);
    for (uint32_t i = 0; h->loops && i < h->nloops; i++) {
        free(h->loops[i].conns);
        free(h->loops[i].work);
    }
    free(h->loops);
    free(h->pat);
    pthread_mutex_destroy(&h->lock);
    free(h);
    return NULL;
}

/* The server is done (every loop ended): the consumer takes what is left and ends. */
static void hjs_join(struct hjs *h)
{
    if (!h->thread_started)
        return;
    __atomic_store_n(&h->quit, 1, __ATOMIC_RELEASE);
    uint64_t one = 1;
    ssize_t w = write(h->efd, &one, sizeof(one));
    (void)w;
    pthread_join(h->thread, NULL);
    h->thread_started = false;
}

/* Frees the server (after hjs_join) and the JS side. */
static void hjs_free(struct hjs *h)
{
    hjs_join(h);
    bunring_server_free(h->srv);
    __atomic_store_n(&g_hjs, NULL, __ATOMIC_RELEASE);
    close(h->efd);
    for (uint32_t i = 0; i < h->nloops; i++) {
        struct hloop *L = &h->loops[i];
        for (uint32_t s = 0; s < h->max_conns; s++)
            free(L->conns[s].bl);
        free(L->conns);
        free(L->work);
        free(L->held);
    }
    free(h->loops);
    free(h->pat);
    free(h->closelog);
    pthread_mutex_destroy(&h->lock);
    free(h);
}

/* Quiet: no connection open, every event consumed, every command taken, the consumer holding
 * nothing and asleep; twice in a row 20 ms apart. */
static bool hjs_quiet_now(struct hjs *h)
{
    if (stat_sum(h->srv, BUNRING_STAT_CONN_OPEN) != 0 || __atomic_load_n(&h->pending, __ATOMIC_SEQ_CST) != 0)
        return false;
    for (uint32_t i = 0; i < h->nloops; i++) {
        struct bunring_js_channel *ch = h->loops[i].ch;
        if (__atomic_load_n(&ch->ev_tail, __ATOMIC_SEQ_CST) != __atomic_load_n(&ch->ev_head, __ATOMIC_SEQ_CST) ||
            __atomic_load_n(&ch->cmd_head, __ATOMIC_SEQ_CST) != __atomic_load_n(&ch->cmd_tail, __ATOMIC_SEQ_CST) ||
            __atomic_load_n(&ch->js_sleeping, __ATOMIC_SEQ_CST) != 1)
            return false;
    }
    return true;
}

static bool hjs_wait_quiet(struct hjs *h, unsigned timeout_ms)
{
    uint64_t end = now_ms() + timeout_ms;
    do {
        if (hjs_quiet_now(h)) {
            sleep_ms(20);
            if (hjs_quiet_now(h))
                return true;
        }
        sleep_ms(5);
    } while (now_ms() < end);
    return false;
}

/* The counters add up, on both sides. `final`: the server is done and the consumer has ended (every
 * event consumed), else the server is quiet (hjs_wait_quiet) and every command must have been taken. */
static void hjs_check_accounts(struct hjs *h, const char *ctx, bool final)
{
    bunring_server *srv = h->srv;
    unsigned before = g_failures;
    uint64_t js_closes = 0, js_opens = 0, by[BUNRING_STAT_COUNT];
    memset(by, 0, sizeof(by));
    for (uint32_t i = 0; i < h->nloops; i++) {
        struct hloop *L = &h->loops[i];
        uint64_t opens = ALOAD(&L->opens), closes = ALOAD(&L->closes);
        js_opens += opens;
        js_closes += closes;
        for (uint32_t r = 0; r < BUNRING_STAT_COUNT; r++)
            by[r] += ALOAD(&L->close_by[r]);
        check(opens == stat_loop(srv, i, BUNRING_STAT_CONN_ACCEPTED), ctx, "loop %u: %llu OPEN events, connAccepted %llu", i,
              (unsigned long long)opens, (unsigned long long)stat_loop(srv, i, BUNRING_STAT_CONN_ACCEPTED));
        check(closes == opens, ctx, "loop %u: %llu OPEN events but %llu CLOSE events", i, (unsigned long long)opens,
              (unsigned long long)closes);
        uint32_t still = 0;
        for (uint32_t s = 0; s < h->max_conns; s++)
            still += L->conns[s].open ? 1u : 0u;
        if (final || still)
            check(still == 0, ctx, "loop %u: %u connections got an OPEN and no CLOSE", i, still);
        check(ALOAD(&L->events) == stat_loop(srv, i, BUNRING_STAT_JS_EVENTS), ctx, "loop %u: consumed %llu events, jsEvents %llu",
              i, (unsigned long long)ALOAD(&L->events), (unsigned long long)stat_loop(srv, i, BUNRING_STAT_JS_EVENTS));
        check(ALOAD(&L->doorbells) == stat_loop(srv, i, BUNRING_STAT_JS_DOORBELLS), ctx, "loop %u: %llu doorbells rang, jsDoorbells %llu",
              i, (unsigned long long)ALOAD(&L->doorbells), (unsigned long long)stat_loop(srv, i, BUNRING_STAT_JS_DOORBELLS));
        check(ALOAD(&L->direct_sends) == stat_loop(srv, i, BUNRING_STAT_JS_DIRECT_SENDS) &&
                  ALOAD(&L->direct_bytes) == stat_loop(srv, i, BUNRING_STAT_JS_DIRECT_BYTES),
              ctx, "loop %u: %llu direct sends of %llu bytes, the counters say %llu and %llu", i,
              (unsigned long long)ALOAD(&L->direct_sends), (unsigned long long)ALOAD(&L->direct_bytes),
              (unsigned long long)stat_loop(srv, i, BUNRING_STAT_JS_DIRECT_SENDS),
              (unsigned long long)stat_loop(srv, i, BUNRING_STAT_JS_DIRECT_BYTES));
        check(stat_loop(srv, i, BUNRING_STAT_JS_WAKEUPS) <= ALOAD(&L->wakes), ctx, "loop %u: jsWakeups %llu, but JS woke it %llu times",
              i, (unsigned long long)stat_loop(srv, i, BUNRING_STAT_JS_WAKEUPS), (unsigned long long)ALOAD(&L->wakes));
        uint32_t cmd_tail = __atomic_load_n(&L->ch->cmd_tail, __ATOMIC_SEQ_CST);
        uint64_t taken = stat_loop(srv, i, BUNRING_STAT_JS_COMMANDS);
        if (final)
            check(taken <= cmd_tail, ctx, "loop %u: jsCommands %llu, only %u published", i, (unsigned long long)taken, cmd_tail);
        else
            check(taken == cmd_tail, ctx, "loop %u: jsCommands %llu, %u published", i, (unsigned long long)taken, cmd_tail);
    }
    uint64_t accepted = stat_sum(srv, BUNRING_STAT_CONN_ACCEPTED), closed = 0;
    static const enum bunring_stat reasons[] = {BUNRING_STAT_CONN_CLOSED_EOF, BUNRING_STAT_CONN_CLOSED_RESET,
                                                BUNRING_STAT_CONN_CLOSED_STOP, BUNRING_STAT_CONN_CLOSED_IDLE,
                                                BUNRING_STAT_CONN_CLOSED_STALLED};
    for (size_t k = 0; k < sizeof(reasons) / sizeof(reasons[0]); k++) {
        uint64_t s = stat_sum(srv, reasons[k]);
        closed += s;
        check(by[reasons[k]] == s, ctx, "%llu CLOSE events with reason %s, the counter says %llu",
              (unsigned long long)by[reasons[k]], bunring_stat_name(reasons[k]), (unsigned long long)s);
    }
    check(accepted == closed, ctx, "connAccepted %llu, closes of every kind add up to %llu", (unsigned long long)accepted,
          (unsigned long long)closed);
    check(js_opens == accepted && js_closes == accepted, ctx, "%llu OPEN and %llu CLOSE events for %llu accepted",
          (unsigned long long)js_opens, (unsigned long long)js_closes, (unsigned long long)accepted);
    static const enum bunring_stat zero[] = {BUNRING_STAT_CONN_OPEN, BUNRING_STAT_BUFFERS_IN_USE, BUNRING_STAT_BUFFERS_PAUSED,
                                             BUNRING_STAT_PAUSED_NOW, BUNRING_STAT_ERRORS, BUNRING_STAT_ALLOCS_AFTER_START};
    for (size_t k = 0; k < sizeof(zero) / sizeof(zero[0]); k++)
        check(stat_sum(srv, zero[k]) == 0, ctx, "%s is %llu", bunring_stat_name(zero[k]),
              (unsigned long long)stat_sum(srv, zero[k]));
    if (g_verbose)
        for (uint32_t i = 0; i < h->nloops; i++) {
            struct hloop *L = &h->loops[i];
            note("%s: loop %u: %llu events, %u commands, doorbells %llu, wakes %llu (for room %llu), DRAIN %llu, PAUSE %llu, "
                 "rx at %u, tx at %u", ctx, i, (unsigned long long)ALOAD(&L->events), __atomic_load_n(&L->ch->cmd_tail, __ATOMIC_SEQ_CST),
                 (unsigned long long)ALOAD(&L->doorbells), (unsigned long long)ALOAD(&L->wakes),
                 (unsigned long long)ALOAD(&L->room_wakes), (unsigned long long)ALOAD(&L->drains),
                 (unsigned long long)ALOAD(&L->pauses), __atomic_load_n(&L->ch->rx_head, __ATOMIC_SEQ_CST),
                 __atomic_load_n(&L->ch->tx_tail, __ATOMIC_SEQ_CST));
        }
    check(ALOAD(&h->violations) == 0, ctx, "%llu channel protocol violations (the first %u are printed above)",
          (unsigned long long)ALOAD(&h->violations), HJS_MAX_REPORTED);
    if (g_failures > before)
        dump_stats(srv, ctx);
}

static uint16_t local_port(int fd)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    memset(&a, 0, sizeof(a));
    if (getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        return 0;
    return ntohs(a.sin_port);
}

/* Sends n pattern bytes and reads the n-byte echo back (non-blocking fd), checking every byte. */
static bool exchange(int fd, const uint8_t *pat, size_t n, char *why, size_t why_len)
{
    size_t sent = 0, recvd = 0;
    uint8_t buf[16384];
    uint64_t last = now_ms();
    while (recvd < n) {
        if (now_ms() - last > g_io_timeout_ms) {
            snprintf(why, why_len, "no progress for %u ms (sent %zu, received %zu of %zu)", g_io_timeout_ms, sent, recvd, n);
            return false;
        }
        struct pollfd p = {.fd = fd, .events = (short)(POLLIN | (sent < n ? POLLOUT : 0))};
        if (poll(&p, 1, 200) <= 0)
            continue;
        if (p.revents & (POLLIN | POLLERR | POLLHUP)) {
            ssize_t r = recv(fd, buf, sizeof(buf), 0);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                snprintf(why, why_len, "%s after %zu of %zu echoed bytes", r == 0 ? "EOF" : strerror(errno), recvd, n);
                return false;
            }
            for (ssize_t i = 0; i < r; i++)
                if (buf[i] != pat[(recvd + (size_t)i) % PATLEN]) {
                    snprintf(why, why_len, "mismatch at byte %zu", recvd + (size_t)i);
                    return false;
                }
            if (r > 0) {
                recvd += (size_t)r;
                last = now_ms();
            }
        }
        if ((p.revents & POLLOUT) && sent < n) {
            size_t off = sent % PATLEN, k = PATLEN - off;
            if (k > n - sent)
                k = n - sent;
            ssize_t w = send(fd, pat + off, k, MSG_NOSIGNAL);
            if (w > 0) {
                sent += (size_t)w;
                last = now_ms();
            } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
                snprintf(why, why_len, "send: %s", strerror(errno));
                return false;
            }
        }
    }
    return true;
}

/* Waits (up to timeout_ms) for what a recv says next: returns recv's result, errno in *e. */
static ssize_t recv_next(int fd, int *e, unsigned timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    uint8_t b[64];
    *e = 0;
    if (poll(&p, 1, (int)timeout_ms) <= 0) {
        *e = ETIMEDOUT;
        return -1;
    }
    ssize_t n = recv(fd, b, sizeof(b), 0);
    if (n < 0)
        *e = errno;
    return n;
}

/* Handler mode, one server: streaming echo (random sizes, half of them half-closing), a TERMINATE, a
 * peer reset, then stop under load; the counters must add up after each phase. */
static void scenario_handler(const struct opts *o, uint32_t backend, uint32_t threads)
{
    char ctx[80];
    /* With two loops the JS side also takes the low-load shortcut (bunring_js_send) whenever it may,
     * so replies race the loop's own sends, closes, resets and stop; with one it never does. */
    bool direct = threads == 2;
    snprintf(ctx, sizeof(ctx), "%s threads=%u handler%s", backend_name(backend), threads, direct ? " direct" : "");
    struct bunring_config cfg;
    base_config(&cfg, backend, threads);
    cfg.flags = BUNRING_FLAG_HANDLER;
    struct hjs *h = hjs_start(ctx, &cfg);
    if (!h)
        return;
    h->direct = direct;
    bunring_server *srv = h->srv;
    uint32_t port = bunring_server_port(srv);
    unsigned failures_before = g_failures;

    /* 1. echo through the JS side: random totals (client 0 sends nothing) and random chunk sizes */
    unsigned n = o->conns;
    struct echo_client *cs = calloc(n, sizeof(*cs));
    uint64_t total = 0;
    if (check(cs != NULL, ctx, "out of memory")) {
        uint32_t rng = 0x1234567u + threads * 31u + backend * 7u;
        for (unsigned i = 0; i < n; i++) {
            cs[i].port = port;
            cs[i].seed = 20000u + threads * 1000u + backend * 100000u + i;
            cs[i].bytes = i == 0 ? 0 : 1 + xorshift32(&rng) % o->bytes;
            cs[i].half_close = (i % 2) == 0;
            cs[i].chunk_seed = xorshift32(&rng) | 1u;
            total += cs[i].bytes;
        }
        uint64_t t0 = now_ms();
        unsigned bad = run_clients(ctx, cs, n, srv);
        note("%s: %u connections, %llu bytes echoed through the channel in %llu ms (%u failed)", ctx, n,
             (unsigned long long)total, (unsigned long long)(now_ms() - t0), bad);
        free(cs);
        check(hjs_wait_quiet(h, 10000), ctx, "not quiet after the echo phase");
        /* Out: what the loops sent and what the JS side sent itself. */
        uint64_t in = stat_sum(srv, BUNRING_STAT_BYTES_IN), out = handler_bytes_out(srv);
        check(in == total && out == total, ctx, "bytesIn %llu bytesOut %llu, clients sent %llu", (unsigned long long)in,
              (unsigned long long)out, (unsigned long long)total);
        uint64_t data = 0;
        for (uint32_t i = 0; i < h->nloops; i++)
            data += ALOAD(&h->loops[i].data_bytes);
        check(data == total, ctx, "DATA events carried %llu bytes, clients sent %llu", (unsigned long long)data,
              (unsigned long long)total);
        check(stat_sum(srv, BUNRING_STAT_CONN_ACCEPTED) == n && stat_sum(srv, BUNRING_STAT_CONN_CLOSED_EOF) == n, ctx,
              "connAccepted %llu, connClosedEof %llu, expected %u", (unsigned long long)stat_sum(srv, BUNRING_STAT_CONN_ACCEPTED),
              (unsigned long long)stat_sum(srv, BUNRING_STAT_CONN_CLOSED_EOF), n);
        if (threads > 1 && n >= 32)
            for (uint32_t i = 0; i < threads; i++)
                check(stat_loop(srv, i, BUNRING_STAT_CONN_ACCEPTED) > 0, ctx, "loop %u accepted no connection", i);
        hjs_check_accounts(h, ctx, false);
    }

    /* 2. TERMINATE: the JS side resets the connection once it echoed 100000 bytes and the client sends one more */
    char why[200] = "";
    uint8_t *pat = make_pattern(4242);
    int fd = pat ? connect_to(port, why, sizeof(why)) : -1;
    if (check(fd >= 0, ctx, "terminate client: %s", pat ? why : "out of memory")) {
        uint16_t lp = local_port(fd);
        const size_t tn = 100000;
        hjs_directive(h, lp, HJS_TERMINATE_AT, tn);
        if (check(exchange(fd, pat, tn, why, sizeof(why)), ctx, "terminate client, before the terminate: %s", why)) {
            ssize_t w = send(fd, pat + tn % PATLEN, 1, MSG_NOSIGNAL);
            check(w == 1, ctx, "terminate client: the last byte: %s", w < 0 ? strerror(errno) : "not sent");
            int e;
            ssize_t r = recv_next(fd, &e, 5000);
            check(r < 0 && e == ECONNRESET, ctx, "terminate client: recv gave %zd (%s), expected ECONNRESET", r,
                  r < 0 ? strerror(e) : r == 0 ? "EOF" : "bytes");
            int reason = hjs_wait_close_reason(h, lp, 5000, NULL);
            check(reason == BUNRING_STAT_CONN_CLOSED_RESET, ctx, "terminated connection: CLOSE reason %d (%s)", reason,
                  reason >= 0 ? bunring_stat_name((uint32_t)reason) : "no CLOSE");
        }
        close(fd);
    }

    /* 3. the peer resets mid-stream (SO_LINGER 0) without reading its echo */
    fd = pat ? connect_to(port, why, sizeof(why)) : -1;
    if (check(fd >= 0, ctx, "reset client: %s", why)) {
        uint16_t lp = local_port(fd);
        uint64_t in0 = stat_sum(srv, BUNRING_STAT_BYTES_IN);
        size_t sent = 0;
        uint64_t end = now_ms() + 5000;
        while (sent < 64 * 1024 && now_ms() < end) {
            size_t k = PATLEN - sent % PATLEN;
            if (k > 64 * 1024 - sent)
                k = 64 * 1024 - sent;
            ssize_t w = send(fd, pat + sent % PATLEN, k, MSG_NOSIGNAL);
            if (w > 0)
                sent += (size_t)w;
            else
                sleep_ms(1);
        }
        check(wait_stat(srv, BUNRING_STAT_BYTES_IN, in0 + sent, 5000), ctx, "server did not receive the reset client's bytes");
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        close(fd);
        int reason = hjs_wait_close_reason(h, lp, 5000, NULL);
        check(reason == BUNRING_STAT_CONN_CLOSED_RESET, ctx, "reset connection: CLOSE reason %d (%s)", reason,
              reason >= 0 ? bunring_stat_name((uint32_t)reason) : "no CLOSE");
    }
    free(pat);
    run_echo_clients(ctx, port, 2, 64 * 1024, 950);
    check(hjs_wait_quiet(h, 10000), ctx, "not quiet after terminate and reset");
    hjs_check_accounts(h, ctx, false);
    uint64_t terminates = 0;
    for (uint32_t i = 0; i < h->nloops; i++)
        terminates += ALOAD(&h->loops[i].terminates);
    check(terminates == 1, ctx, "%llu TERMINATE commands sent, expected 1", (unsigned long long)terminates);

    /* 4. stop under load: every connection gets its CLOSE, the server finishes, then it is freed */
    unsigned nf = o->flood;
    struct flood_client *fc = calloc(nf, sizeof(*fc));
    pthread_t *th = calloc(nf, sizeof(*th));
    bool *started = calloc(nf, sizeof(*started));
    if (check(fc && th && started, ctx, "out of memory")) {
        uint64_t accepted_before = stat_sum(srv, BUNRING_STAT_CONN_ACCEPTED);
        int gate = 0;
        for (unsigned i = 0; i < nf; i++) {
            fc[i].port = port;
            fc[i].gate = &gate;
            started[i] = pthread_create(&th[i], NULL, flood_client_run, &fc[i]) == 0;
        }
        check(wait_stat(srv, BUNRING_STAT_CONN_ACCEPTED, accepted_before + nf, 10000), ctx, "flood clients not all accepted");
        __atomic_store_n(&gate, 1, __ATOMIC_RELEASE);
        uint64_t out0 = handler_bytes_out(srv);
        check(wait_handler_out(srv, out0 + 256 * 1024, 10000), ctx, "flood echo is not flowing");
        uint64_t stop_at = now_ms();
        check(bunring_server_stop(srv, 100) == 0, ctx, "stop failed");
        uint64_t end = now_ms() + 10000;
        while (!bunring_server_done(srv) && now_ms() < end)
            sleep_ms(2);
        check(bunring_server_done(srv) == 1, ctx, "stop under load did not finish within 10 s");
        note("%s: stop under load took %llu ms", ctx, (unsigned long long)(now_ms() - stop_at));
        for (unsigned i = 0; i < nf; i++) {
            if (started[i])
                pthread_join(th[i], NULL);
            check(started[i] && fc[i].ended, ctx, "flood client %u: %s", i, fc[i].why[0] ? fc[i].why : "did not end");
        }
        hjs_join(h); /* takes the last events: the loops published their CLOSEs before they ended */
        hjs_check_accounts(h, ctx, true);
        check(stat_sum(srv, BUNRING_STAT_CONN_CLOSED_STOP) > 0, ctx, "connClosedStop is 0 after stopping %u busy connections", nf);
        int fd2 = connect_to(port, why, sizeof(why));
        check(fd2 < 0, ctx, "port %u still accepts connections after stop", port);
        if (fd2 >= 0)
            close(fd2);
    }
    free(fc);
    free(th);
    free(started);
    if (g_failures > failures_before)
        dump_stats(srv, ctx);
    hjs_free(h);
}

/* Handler mode with a small pool: a client that never reads (and keeps sending) while the JS side
 * writes it 8 MiB: the kernel's buffers fill, then the pool, the WRITE waits at the head of the
 * command ring for pool room, and the stall policy closes the connection after stallTimeoutMs
 * (connClosedStalled, the client sees a reset); the loop then takes commands again and other
 * connections are served. */
static void scenario_handler_stall(uint32_t backend, uint32_t threads)
{
    char ctx[80];
    snprintf(ctx, sizeof(ctx), "%s threads=%u handler stall", backend_name(backend), threads);
    struct bunring_config cfg;
    base_config(&cfg, backend, threads);
    cfg.flags = BUNRING_FLAG_HANDLER;
    cfg.buffer_size = 512;
    cfg.buffer_count = 16;
    cfg.max_pending_bytes = 1024;
    cfg.stall_timeout_ms = 1500; /* long enough to see others served while the stalled one waits */
    cfg.drain_ms = 200;
    struct hjs *h = hjs_start(ctx, &cfg);
    if (!h)
        return;
    bunring_server *srv = h->srv;
    uint32_t port = bunring_server_port(srv);
    unsigned failures_before = g_failures;

    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int small = 4096;
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    uint8_t *pat = make_pattern(99);
    if (check(fd >= 0 && pat && setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)) == 0 &&
                  connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0,
              ctx, "stalling client: could not connect: %s", strerror(errno))) {
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        uint16_t lp = local_port(fd);
        hjs_directive(h, lp, HJS_FLOOD, (uint64_t)8 << 20); /* the JS side writes 8 MiB at its first byte */
        size_t sent = 0;
        int end_errno = 0;
        bool others_checked = false;
        uint64_t t0 = now_ms();
        while (!end_errno && now_ms() - t0 < 20000 && sent < ((size_t)256 << 20)) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            if (poll(&p, 1, 100) <= 0) {
                /* The server stopped reading it and holds JS's unsent WRITE, its buffers down to the
                 * reserve: other connections (on any loop; replies that fit the reserve) must still be
                 * answered, not wait behind its WRITE until it is closed. */
                if (!others_checked && stat_sum(srv, BUNRING_STAT_PRESSURE_EVENTS) > 0) {
                    others_checked = true;
                    uint64_t t1 = now_ms();
                    unsigned bad = run_echo_clients(ctx, port, 2, 600, 970);
                    uint64_t took = now_ms() - t1;
                    note("%s: 2 other clients echoed in %llu ms while the stalled one held its WRITE", ctx,
                         (unsigned long long)took);
                    check(bad == 0 && stat_sum(srv, BUNRING_STAT_CONN_CLOSED_STALLED) == 0, ctx,
                          "other clients while a WRITE waited for a peer that does not read: %u failed, "
                          "connClosedStalled %llu (they were served only once it was closed)",
                          bad, (unsigned long long)stat_sum(srv, BUNRING_STAT_CONN_CLOSED_STALLED));
                }
                continue;
            }
            ssize_t w = send(fd, pat + sent % PATLEN, PATLEN - sent % PATLEN, MSG_NOSIGNAL);
            if (w > 0)
                sent += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EINTR)
                end_errno = errno; /* never reads: the server's close comes back as a reset */
        }
        note("%s: the non-reading client sent %zu bytes; closed after %llu ms (%s)", ctx, sent,
             (unsigned long long)(now_ms() - t0), end_errno ? strerror(end_errno) : "not closed");
        check(end_errno == ECONNRESET || end_errno == EPIPE, ctx, "non-reading client: not closed by the server (%zu bytes sent, %s)",
              sent, end_errno ? strerror(end_errno) : "still open after 20 s");
        check(others_checked, ctx, "the pool never came under pressure: other clients were not tried while it did");
        uint32_t unsent = 0;
        int reason = hjs_wait_close_reason(h, lp, 5000, &unsent);
        check(reason == BUNRING_STAT_CONN_CLOSED_STALLED, ctx, "non-reading client: CLOSE reason %d (%s)", reason,
              reason >= 0 ? bunring_stat_name((uint32_t)reason) : "no CLOSE");
        note("%s: %u bytes written and not sent when it was closed", ctx, unsent);
        /* More than the pool holds was written and not sent: a WRITE still waited (deferred) for pool room. */
        check(unsent > cfg.buffer_count * cfg.buffer_size, ctx,
              "non-reading client: %u bytes written and not sent at its CLOSE; a waiting WRITE needs more than the pool's %u",
              unsent, cfg.buffer_count * cfg.buffer_size);
        check(stat_sum(srv, BUNRING_STAT_CONN_CLOSED_STALLED) == 1 && stat_sum(srv, BUNRING_STAT_PRESSURE_EVENTS) > 0, ctx,
              "connClosedStalled %llu, pressureEvents %llu", (unsigned long long)stat_sum(srv, BUNRING_STAT_CONN_CLOSED_STALLED),
              (unsigned long long)stat_sum(srv, BUNRING_STAT_PRESSURE_EVENTS));
    }
    if (fd >= 0)
        close(fd);
    free(pat);
    /* the loop takes commands again: fresh connections are echoed (small: no pool needed) */
    run_echo_clients(ctx, port, 4, 16 * 1024, 960);
    check(hjs_wait_quiet(h, 10000), ctx, "not quiet after the stalled connection");
    hjs_check_accounts(h, ctx, false);
    bunring_server_stop(srv, 0);
    uint64_t end = now_ms() + 5000;
    while (!bunring_server_done(srv) && now_ms() < end)
        sleep_ms(2);
    check(bunring_server_done(srv) == 1, ctx, "stop did not finish within 5 s");
    hjs_join(h);
    hjs_check_accounts(h, ctx, true);
    if (g_failures > failures_before)
        dump_stats(srv, ctx);
    hjs_free(h);
}

/* Handler-mode start failures: the wrong entry point, no doorbell, a port in use (the channels
 * allocated for the loops that did start are released: ASan/valgrind check). */
static void scenario_handler_start_errors(uint32_t backend)
{
    char ctx[64];
    snprintf(ctx, sizeof(ctx), "%s handler start errors", backend_name(backend));
    struct bunring_config cfg;
    struct bunring_error err;
    base_config(&cfg, backend, 1);
    cfg.flags = BUNRING_FLAG_HANDLER;
    bunring_server *srv = bunring_server_start(&cfg, "127.0.0.1", &err);
    check(srv == NULL && err.code == -EINVAL, ctx, "bunring_server_start with BUNRING_FLAG_HANDLER: %p %d %s", (void *)srv,
          err.code, err.message);
    if (srv)
        bunring_server_free(srv);
    srv = bunring_server_start_handler(&cfg, "127.0.0.1", NULL, &err);
    check(srv == NULL && err.code == -EINVAL, ctx, "no doorbell: %p %d %s", (void *)srv, err.code, err.message);
    if (srv)
        bunring_server_free(srv);
    cfg.flags = 0;
    srv = bunring_server_start_handler(&cfg, "127.0.0.1", hjs_doorbell, &err);
    check(srv == NULL && err.code == -EINVAL, ctx, "no BUNRING_FLAG_HANDLER: %p %d %s", (void *)srv, err.code, err.message);
    if (srv)
        bunring_server_free(srv);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof(a);
    if (check(lfd >= 0 && bind(lfd, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(lfd, 8) == 0 &&
                  getsockname(lfd, (struct sockaddr *)&a, &alen) == 0,
              ctx, "could not open a listener to occupy a port")) {
        for (uint32_t t = 1; t <= 2; t++) {
            base_config(&cfg, backend, t);
            cfg.flags = BUNRING_FLAG_HANDLER;
            cfg.port = ntohs(a.sin_port);
            memset(&err, 0, sizeof(err));
            srv = bunring_server_start_handler(&cfg, "127.0.0.1", hjs_doorbell, &err);
            check(srv == NULL && err.code == -EADDRINUSE, ctx, "threads=%u: port in use gave %p %d '%s'", t, (void *)srv,
                  err.code, err.message);
            if (srv)
                bunring_server_free(srv);
        }
    }
    if (lfd >= 0)
        close(lfd);
}

/* Start failures return NULL with an error message and release everything (ASan/valgrind check). */
static void scenario_start_errors(uint32_t backend)
{
    char ctx[64];
    snprintf(ctx, sizeof(ctx), "%s start errors", backend_name(backend));
    struct bunring_config cfg;
    struct bunring_error err;

    /* port in use: hold a plain listening socket */
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof(a);
    if (check(lfd >= 0 && bind(lfd, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(lfd, 8) == 0 &&
                  getsockname(lfd, (struct sockaddr *)&a, &alen) == 0,
              ctx, "could not open a listener to occupy a port")) {
        for (uint32_t t = 1; t <= 2; t++) {
            base_config(&cfg, backend, t);
            cfg.port = ntohs(a.sin_port);
            memset(&err, 0, sizeof(err));
            bunring_server *srv = bunring_server_start(&cfg, "127.0.0.1", &err);
            check(srv == NULL, ctx, "threads=%u: start on a port in use succeeded", t);
            if (srv)
                bunring_server_free(srv);
            else
                check(err.code == -EADDRINUSE && err.message[0] != '\0', ctx,
                      "threads=%u: port in use gave code %d message '%s' (expected -EADDRINUSE)", t, err.code,
                      err.message);
        }
    }
    if (lfd >= 0)
        close(lfd);

    /* bad configs */
    const char *bad[] = {"threads 0", "buffer_count 100", "buffer_size 100"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        base_config(&cfg, backend, 1);
        if (i == 0)
            cfg.threads = 0;
        else if (i == 1)
            cfg.buffer_count = 100;
        else
            cfg.buffer_size = 100;
        memset(&err, 0, sizeof(err));
        bunring_server *srv = bunring_server_start(&cfg, "127.0.0.1", &err);
        check(srv == NULL && err.code < 0 && err.message[0] != '\0', ctx, "%s: start returned %p code %d '%s'",
              bad[i], (void *)srv, err.code, err.message);
        if (srv)
            bunring_server_free(srv);
    }
    /* bad host */
    base_config(&cfg, backend, 2);
    memset(&err, 0, sizeof(err));
    bunring_server *srv = bunring_server_start(&cfg, "not-an-address", &err);
    check(srv == NULL && err.code < 0, ctx, "bad host: start returned %p code %d '%s'", (void *)srv, err.code, err.message);
    if (srv)
        bunring_server_free(srv);
}

static void scenario_abi(void)
{
    const char *ctx = "abi";
    check(bunring_abi_version() == BUNRING_ABI_VERSION, ctx, "abi version %u", bunring_abi_version());
    check(bunring_host_family("127.0.0.1") == 4 && bunring_host_family("::1") == 6 &&
              bunring_host_family("::ffff:1.2.3.4") == 6 && bunring_host_family("localhost") == 0 &&
              bunring_host_family("1.2.3") == 0 && bunring_host_family("") == 0,
          ctx, "bunring_host_family disagrees with inet_pton");
    uint32_t where[2] = {0, 0};
    const char *first = bunring_layout_entry(0, where);
    check(first != NULL && where[1] == sizeof(struct bunring_config), ctx, "layout entry 0 is %s of %u bytes, config is %zu",
          first ? first : "NULL", where[1], sizeof(struct bunring_config));
    check(bunring_stat_count() == BUNRING_STAT_COUNT, ctx, "stat count %u", bunring_stat_count());
    for (uint32_t i = 0; i < BUNRING_STAT_COUNT; i++)
        check(bunring_stat_name(i) != NULL && bunring_stat_name(i)[0] != '\0', ctx, "stat %u has no name", i);
    check(bunring_stat_name(BUNRING_STAT_COUNT) == NULL, ctx, "stat name past the end is not NULL");
    for (uint32_t i = 0; i < BUNRING_FEAT_COUNT; i++)
        check(bunring_feature_name(i) != NULL, ctx, "feature %u has no name", i);
    check(bunring_feature_name(BUNRING_FEAT_COUNT) == NULL, ctx, "feature name past the end is not NULL");
    const uint32_t ops[] = {0, 1, 7, 0xff};
    const uint32_t bids[] = {0, 1, 0x7fff, 0xffff};
    const uint32_t slots[] = {0, 1, 0x80000, BUNRING_UD_MAX_SLOT};
    const uint32_t gens[] = {0, 1, 0x80000, BUNRING_UD_MAX_GEN};
    for (size_t a = 0; a < 4; a++)
        for (size_t b = 0; b < 4; b++)
            for (size_t c = 0; c < 4; c++)
                for (size_t d = 0; d < 4; d++) {
                    uint64_t ud = bunring_ud_encode(ops[a], bids[b], slots[c], gens[d]);
                    uint64_t want = (uint64_t)ops[a] | ((uint64_t)bids[b] << 8) | ((uint64_t)slots[c] << 24) |
                                    ((uint64_t)gens[d] << 44);
                    bool ok = ud == want && bunring_ud_decode_op(ud) == ops[a] && bunring_ud_decode_bid(ud) == bids[b] &&
                              bunring_ud_decode_slot(ud) == slots[c] && bunring_ud_decode_gen(ud) == gens[d];
                    check(ok, ctx, "user_data round trip op=%u bid=%u slot=%u gen=%u -> 0x%016llx", ops[a], bids[b],
                          slots[c], gens[d], (unsigned long long)ud);
                }
    check(bunring_ud_encode(0xff, 0xffff, BUNRING_UD_MAX_SLOT, BUNRING_UD_MAX_GEN) == UINT64_MAX, ctx,
          "all-max user_data is not all ones");
}

static bool parse_list(const char *s, const char *a, const char *b, bool *has_a, bool *has_b)
{
    *has_a = *has_b = false;
    char tmp[64];
    snprintf(tmp, sizeof(tmp), "%s", s);
    for (char *save = NULL, *t = strtok_r(tmp, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (strcmp(t, a) == 0)
            *has_a = true;
        else if (strcmp(t, b) == 0)
            *has_b = true;
        else
            return false;
    }
    return true;
}

static void usage(void)
{
    fprintf(stderr, "usage: driver [--conns N] [--bytes N] [--flood N] [--timeout SECONDS] [--backends uring,epoll] "
                    "[--threads 1,2] [--verbose]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    struct opts o = {.conns = 50, .bytes = 1u << 20, .flood = 8, .timeout_s = 240, .uring = true, .epoll = true, .t1 = true, .t2 = true};
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--verbose") == 0) {
            g_verbose = 1;
        } else if (!v) {
            usage();
        } else if (strcmp(argv[i], "--conns") == 0) {
            o.conns = (unsigned)strtoul(v, NULL, 10), i++;
        } else if (strcmp(argv[i], "--bytes") == 0) {
            o.bytes = (size_t)strtoull(v, NULL, 10), i++;
        } else if (strcmp(argv[i], "--flood") == 0) {
            o.flood = (unsigned)strtoul(v, NULL, 10), i++;
        } else if (strcmp(argv[i], "--timeout") == 0) {
            o.timeout_s = (unsigned)strtoul(v, NULL, 10), i++;
        } else if (strcmp(argv[i], "--backends") == 0) {
            if (!parse_list(v, "uring", "epoll", &o.uring, &o.epoll))
                usage();
            i++;
        } else if (strcmp(argv[i], "--threads") == 0) {
            if (!parse_list(v, "1", "2", &o.t1, &o.t2))
                usage();
            i++;
        } else {
            usage();
        }
    }
    if (o.conns == 0 || o.conns > 1000 || o.flood == 0 || o.flood > 1000)
        usage();
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);
    alarm(o.timeout_s);
    if (o.timeout_s * 1000u / 4u < g_io_timeout_ms)
        g_io_timeout_ms = o.timeout_s * 1000u / 4u;

    scenario_abi();

    struct bunring_error perr;
    memset(&perr, 0, sizeof(perr));
    char release[128] = "";
    uint32_t feats = bunring_probe(&perr, release, sizeof(release));
    bool uring_ok = (feats & BUNRING_FEAT_MULTISHOT_RECV) != 0;
    if (o.uring && !uring_ok)
        fprintf(stderr, "driver: io_uring unavailable on %s (%s): uring scenarios skipped\n", release, perr.message);
    note("kernel %s, probe features 0x%x", release, feats);

    char ran[128] = "";
    uint32_t backends[2] = {BUNRING_BACKEND_URING, BUNRING_BACKEND_EPOLL};
    bool want_b[2] = {o.uring && uring_ok, o.epoll};
    for (int b = 0; b < 2; b++) {
        if (!want_b[b])
            continue;
        for (uint32_t t = 1; t <= 2; t++) {
            if ((t == 1 && !o.t1) || (t == 2 && !o.t2))
                continue;
            scenario_server(&o, backends[b], t);
            scenario_free_running(backends[b], t);
            scenario_restart(backends[b], t);
            scenario_handler(&o, backends[b], t);
            scenario_handler_stall(backends[b], t);
            if (t == 1) {
                scenario_loadgen(backends[b], false);
                scenario_loadgen_pipelined(backends[b], false);
                if (o.uring && uring_ok) { /* the client's ring needs what the uring backend needs */
                    scenario_loadgen(backends[b], true);
                    scenario_loadgen_pipelined(backends[b], true);
                }
            }
            size_t len = strlen(ran);
            snprintf(ran + len, sizeof(ran) - len, "%s%s/t%u", len ? " " : "", backend_name(backends[b]), t);
        }
        scenario_start_errors(backends[b]);
        scenario_handler_start_errors(backends[b]);
    }
    if (g_failures == 0)
        printf("driver: OK %u checks passed [%s] %u conns x %zu bytes, %u flood\n", g_checks, ran, o.conns, o.bytes,
               o.flood);
    else
        printf("driver: FAILED %u of %u checks [%s]\n", g_failures, g_checks, ran);
    fflush(stdout);
    return g_failures == 0 ? 0 : 1;
}
