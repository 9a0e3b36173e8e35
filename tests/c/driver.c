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
 *     uring backend runs) its io_uring loop: a full run with zero errors, and one stopped half-way.
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

struct echo_client {
    uint32_t port;
    uint32_t seed;
    size_t bytes;
    bool half_close; /* shutdown(SHUT_WR) right after the last byte, before the echo is complete */
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
    bool wr_shut = false;
    bool eof = false;
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
            ssize_t n = recv(fd, buf, sizeof(buf), 0);
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

/* Runs n echo clients at once; returns how many failed (each reported). */
static unsigned run_echo_clients(const char *ctx, uint32_t port, unsigned n, size_t bytes, uint32_t seed_base)
{
    struct echo_client *cs = calloc(n, sizeof(*cs));
    pthread_t *th = calloc(n, sizeof(*th));
    bool *started = calloc(n, sizeof(*started));
    unsigned bad = 0;
    if (!cs || !th || !started) {
        check(false, ctx, "out of memory for %u clients", n);
        free(cs);
        free(th);
        free(started);
        return n;
    }
    for (unsigned i = 0; i < n; i++) {
        cs[i].port = port;
        cs[i].seed = seed_base + i;
        cs[i].bytes = bytes;
        cs[i].half_close = (i % 2) == 0;
        started[i] = pthread_create(&th[i], NULL, echo_client_run, &cs[i]) == 0;
        if (!started[i])
            snprintf(cs[i].why, sizeof(cs[i].why), "pthread_create failed");
    }
    for (unsigned i = 0; i < n; i++) {
        if (started[i])
            pthread_join(th[i], NULL);
        if (!check(started[i] && cs[i].ok, ctx, "echo client %u (seed %u, %s): %s (sent %zu, received %zu of %zu)", i,
                   cs[i].seed, cs[i].half_close ? "half-close" : "close after echo", cs[i].why, cs[i].sent,
                   cs[i].recvd, cs[i].bytes))
            bad++;
    }
    free(cs);
    free(th);
    free(started);
    return bad;
}

/* ---- flood client (for stop under load) ---- */

struct flood_client {
    uint32_t port;
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
    }
    if (g_failures == 0)
        printf("driver: OK %u checks passed [%s] %u conns x %zu bytes, %u flood\n", g_checks, ran, o.conns, o.bytes,
               o.flood);
    else
        printf("driver: FAILED %u of %u checks [%s]\n", g_failures, g_checks, ran);
    fflush(stdout);
    return g_failures == 0 ? 0 : 1;
}
