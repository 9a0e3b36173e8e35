/*
 * loadgen.c — the benchmark client (load generator): its ABI entry points, the worker threads and the
 * runner that sequences the phases. It lives in C, not in JS, so that the instrument outruns what it
 * measures: one JS thread cannot drive hundreds of thousands of verified round trips per second
 * without becoming the bottleneck.
 *
 * Workload: N connections; each keeps up to `pipeline` requests in flight and verifies every reply
 * byte for byte as it arrives, in order (requests, window and verification: loadgen_core.c). The
 * default is rust_echo_bench's echo (`length`-byte messages that must come back unchanged); a
 * request/reply table (e.g. RESP commands and their replies) replaces it. A mismatch, bytes that
 * arrive with no request outstanding, or EOF from the server closes that connection and is counted.
 *
 * Threads: W workers and one runner. Each worker (pinned when asked) opens its connections
 * (loadgen_epoll.c's connect phase), then carries the traffic on its own io_uring (loadgen_uring.c)
 * or, where the ring cannot be set up or epoll was asked for, on its epoll set (loadgen_epoll.c).
 * The runner sequences the phases: connect (bounded by a timeout) -> warm-up -> measured interval ->
 * drain. The interval's edges are absolute CLOCK_MONOTONIC times fixed before the first message is
 * sent, so each worker classifies every reply by its own completion timestamp: exactly those
 * completed inside [start, end) count, and rates divide by end - start. At each edge the runner
 * samples the server's CPU time (process CPU clock in ns, and utime+stime from /proc/<pid>/stat) and
 * the workers' CPU.
 *
 * Everything is allocated in start(): connection tables, request slots, the copies of the
 * request/reply tables, pattern blocks, receive scratch, io_uring buffers and the latency histograms. Nothing is allocated per request. No exit/abort: start()
 * returns -errno plus a message; the run reports its status and message in the result. This file
 * calls the two traffic loops and the core; none of them calls back into it.
 */
#include "loadgen_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void lg_error(struct bunring_loadgen_error *err, int code, const char *fmt, ...)
{
    if (!err)
        return;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
}

/* ---- worker threads ---- */

/* Waits on lg->cond (mu held) for at most LG_WAIT_SLICE_MS. */
static void wait_slice(struct bunring_loadgen *lg)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += LG_WAIT_SLICE_MS * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&lg->cond, &lg->mu, &ts);
}

static void *worker_main(void *arg)
{
    struct lg_worker *w = arg;
    struct bunring_loadgen *lg = w->lg;
    /* The ring is created here, not in start(): SINGLE_ISSUER | DEFER_TASKRUN tie it to this thread. */
    w->on_uring = w->uring && lg_uring_setup(w) == 0;
    lg_epoll_connect(w);

    pthread_mutex_lock(&lg->mu);
    lg->connected_workers++;
    pthread_cond_broadcast(&lg->cond);
    while (!lg->go && !lg_stopping(lg))
        wait_slice(lg);
    bool run = lg->go && !lg->abort_run;
    pthread_mutex_unlock(&lg->mu);

    if (run && !lg_stopping(lg)) {
        if (w->on_uring)
            lg_uring_traffic(w);
        else
            lg_epoll_traffic(w);
    }
    if (w->on_uring)
        lg_uring_finish(w);
    for (uint32_t i = 0; i < w->nconns; i++)
        lg_conn_close(w, &w->conns[i]);
    lg_publish(w);
    atomic_fetch_add_explicit(&lg->idle_workers, 1, memory_order_release);

    /* Stay alive (idle) until the runner has read this thread's CPU clock at the interval's end. */
    pthread_mutex_lock(&lg->mu);
    while (!lg->released && !lg_stopping(lg))
        wait_slice(lg);
    pthread_mutex_unlock(&lg->mu);
    return NULL;
}

/* ---- runner: phases, CPU samples at the interval edges, the result ---- */

/* utime + stime of a process, in clock ticks, from /proc/<pid>/stat; -1 if unreadable. */
static int64_t proc_cpu_ticks(int32_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may contain spaces and parentheses */
    if (!p)
        return -1;
    /* After ") ": field 3 (state) is token 0; utime (field 14) is token 11, stime token 12. */
    unsigned long long utime = 0, stime = 0;
    int token = 0;
    for (p++; *p && token <= 12; token++) {
        while (*p == ' ')
            p++;
        char *endp = p;
        unsigned long long v = strtoull(p, &endp, 10);
        if (token == 11)
            utime = v;
        if (token == 12)
            stime = v;
        while (*endp && *endp != ' ')
            endp++;
        p = endp;
    }
    return token > 12 ? (int64_t)(utime + stime) : -1;
}

static int64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    if (clock_gettime(id, &ts) != 0)
        return -1;
    return (int64_t)ts.tv_sec * (int64_t)LG_NS_PER_S + ts.tv_nsec;
}

struct cpu_sample {
    uint64_t at_ns;
    int64_t server_ns, server_ticks, client_ns;
};

static void sample_cpu(struct bunring_loadgen *lg, struct cpu_sample *s)
{
    s->at_ns = lg_now_ns();
    s->server_ns = lg->have_server_clock ? clock_ns(lg->server_clock) : -1;
    s->server_ticks = lg->server_pid > 0 ? proc_cpu_ticks(lg->server_pid) : -1;
    s->client_ns = 0;
    for (uint32_t i = 0; i < lg->nworkers; i++) {
        clockid_t id;
        int64_t v = pthread_getcpuclockid(lg->workers[i].thread, &id) == 0 ? clock_ns(id) : -1;
        if (v < 0) {
            s->client_ns = -1;
            break;
        }
        s->client_ns += v;
    }
}

enum wait_result { REACHED, STOPPED, WORKERS_GONE };

/* Sleeps until the absolute time target, in slices, watching for stop() and for every worker having
 * finished (all connections lost). */
static enum wait_result sleep_until(struct bunring_loadgen *lg, uint64_t target)
{
    for (;;) {
        if (lg_stopping(lg))
            return STOPPED;
        uint64_t t = lg_now_ns();
        if (t >= target)
            return REACHED;
        if (atomic_load_explicit(&lg->idle_workers, memory_order_acquire) == lg->nworkers)
            return WORKERS_GONE;
        uint64_t wake = target - t > LG_WAIT_SLICE_MS * LG_NS_PER_MS ? t + LG_WAIT_SLICE_MS * LG_NS_PER_MS : target;
        struct timespec ts = {.tv_sec = (time_t)(wake / LG_NS_PER_S), .tv_nsec = (long)(wake % LG_NS_PER_S)};
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
    }
}

static void result_message(struct bunring_loadgen *lg, int32_t status, const char *fmt, ...)
{
    struct bunring_loadgen_result *r = &lg->result;
    if (status != 0 || r->status == 0)
        r->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->message, sizeof r->message, fmt, ap);
    va_end(ap);
}

static void collect(struct bunring_loadgen *lg)
{
    struct bunring_loadgen_result *r = &lg->result;
    uint64_t lat_sum = 0, lat_min = UINT64_MAX, lat_max = 0;
    int first_connect_errno = 0, fatal = 0;
    r->workers = lg->nworkers;
    for (uint32_t i = 0; i < lg->nworkers; i++) {
        const struct lg_worker *w = &lg->workers[i];
        r->uring_workers += w->on_uring;
        r->connections += (uint32_t)w->c.established;
        r->connect_errors += w->c.connect_errors;
        r->mismatches += w->c.mismatches;
        r->short_reads += w->c.short_reads;
        r->extras += w->c.extras;
        r->io_errors += w->c.io_errors;
        r->requests += w->c.requests;
        r->responses += w->c.responses;
        r->responses_total += w->c.responses_total;
        r->bytes_verified += w->c.bytes_verified;
        lat_sum += w->c.lat_sum;
        if (w->c.lat_min < lat_min)
            lat_min = w->c.lat_min;
        if (w->c.lat_max > lat_max)
            lat_max = w->c.lat_max;
        for (uint32_t b = 0; b < LG_HIST_BUCKETS; b++)
            lg->hist[b] += w->hist[b];
        if (!first_connect_errno)
            first_connect_errno = w->first_connect_errno;
        if (!fatal)
            fatal = w->fatal_errno;
    }
    if (r->responses > 0) {
        r->latency_min_ns = lat_min;
        r->latency_max_ns = lat_max;
        r->latency_mean_ns = lat_sum / r->responses;
        r->latency_p50_ns = lg_hist_quantile(lg->hist, r->responses, 0.50, lat_max);
        r->latency_p90_ns = lg_hist_quantile(lg->hist, r->responses, 0.90, lat_max);
        r->latency_p99_ns = lg_hist_quantile(lg->hist, r->responses, 0.99, lat_max);
        r->latency_p999_ns = lg_hist_quantile(lg->hist, r->responses, 0.999, lat_max);
    }
    if (fatal)
        result_message(lg, -fatal, "waiting for events failed in a worker: %s", strerror(fatal));
    else if (r->status == 0 && r->connect_errors > 0)
        result_message(lg, 0, "%llu of %llu connections failed; first error: %s",
                       (unsigned long long)r->connect_errors,
                       (unsigned long long)(r->connect_errors + r->connections), strerror(first_connect_errno));
    if (r->status == 0 && r->connections == 0)
        result_message(lg, first_connect_errno ? -first_connect_errno : -ECONNREFUSED,
                       "no connection could be established: %s",
                       strerror(first_connect_errno ? first_connect_errno : ECONNREFUSED));
}

static void *runner_main(void *arg)
{
    struct bunring_loadgen *lg = arg;
    struct bunring_loadgen_result *r = &lg->result;

    /* Connect phase: wait until every worker has finished connecting. */
    pthread_mutex_lock(&lg->mu);
    while (lg->connected_workers < lg->nworkers && !lg_stopping(lg))
        wait_slice(lg);
    uint64_t established = 0; /* workers that reported in wrote their counts before, under mu */
    if (lg->connected_workers == lg->nworkers)
        for (uint32_t i = 0; i < lg->nworkers; i++)
            established += lg->workers[i].c.established;
    uint64_t t = lg_now_ns();
    r->connect_ns = t - lg->begin_ns;
    lg->abort_run = lg_stopping(lg) || established == 0;
    if (!lg->abort_run) {
        atomic_store_explicit(&lg->start_ns, t + lg->warmup_ns, memory_order_relaxed);
        atomic_store_explicit(&lg->end_ns, t + lg->warmup_ns + lg->duration_ns, memory_order_relaxed);
        atomic_store_explicit(&lg->phase, BUNRING_LOADGEN_WARMUP, memory_order_relaxed);
    }
    lg->go = true;
    pthread_cond_broadcast(&lg->cond);
    pthread_mutex_unlock(&lg->mu);

    if (!lg->abort_run) {
        uint64_t start = atomic_load_explicit(&lg->start_ns, memory_order_relaxed);
        uint64_t end = atomic_load_explicit(&lg->end_ns, memory_order_relaxed);
        struct cpu_sample s0, s1;
        enum wait_result w = sleep_until(lg, start);
        if (w == REACHED) {
            sample_cpu(lg, &s0);
            atomic_store_explicit(&lg->phase, BUNRING_LOADGEN_MEASURING, memory_order_relaxed);
            w = sleep_until(lg, end);
            sample_cpu(lg, &s1);
            atomic_store_explicit(&lg->phase, BUNRING_LOADGEN_DRAINING, memory_order_relaxed);
            /* Ended early: the counts cover [start, now), so that is the interval measured. */
            r->elapsed_ns = w == REACHED ? end - start : s1.at_ns - start;
            uint64_t skew0 = s0.at_ns - start, skew1 = w == REACHED ? s1.at_ns - end : 0;
            r->edge_skew_ns = skew0 > skew1 ? skew0 : skew1;
            r->server_cpu_ns = s0.server_ns >= 0 && s1.server_ns >= 0 ? s1.server_ns - s0.server_ns : -1;
            r->server_cpu_ticks = s0.server_ticks >= 0 && s1.server_ticks >= 0 ? s1.server_ticks - s0.server_ticks : -1;
            r->client_cpu_ns = s0.client_ns >= 0 && s1.client_ns >= 0 ? s1.client_ns - s0.client_ns : -1;
        } else {
            atomic_store_explicit(&lg->phase, BUNRING_LOADGEN_DRAINING, memory_order_relaxed);
        }
        if (w == STOPPED)
            result_message(lg, -ECANCELED, "stopped before the measured interval ended");
        else if (w == WORKERS_GONE)
            result_message(lg, -ECONNRESET, "every connection was lost before the measured interval ended");
    } else if (lg_stopping(lg)) {
        result_message(lg, -ECANCELED, "stopped during the connect phase");
    }

    pthread_mutex_lock(&lg->mu);
    lg->released = true;
    pthread_cond_broadcast(&lg->cond);
    pthread_mutex_unlock(&lg->mu);
    for (uint32_t i = 0; i < lg->nworkers; i++)
        pthread_join(lg->workers[i].thread, NULL);
    collect(lg);
    atomic_store_explicit(&lg->phase, BUNRING_LOADGEN_DONE, memory_order_relaxed);
    atomic_store_explicit(&lg->done, 1, memory_order_release);
    return NULL;
}

/* ---- ABI entry points (see loadgen.h) ---- */

static int lg_check_config(const struct bunring_loadgen_config *cfg, const char *host, struct bunring_loadgen *lg,
                           struct bunring_loadgen_error *err)
{
    if (!cfg || !host)
        return lg_error(err, -EINVAL, "config and host are required"), -EINVAL;
    if (cfg->port < 1 || cfg->port > 65535)
        return lg_error(err, -EINVAL, "port %u is outside 1..65535", cfg->port), -EINVAL;
    if (cfg->connections < 1 || cfg->connections > BUNRING_LOADGEN_MAX_CONNECTIONS)
        return lg_error(err, -EINVAL, "connections %u is outside 1..%u", cfg->connections,
                        BUNRING_LOADGEN_MAX_CONNECTIONS), -EINVAL;
    if (cfg->request_len == 0 && (cfg->length < 1 || cfg->length > BUNRING_LOADGEN_MAX_LENGTH))
        return lg_error(err, -EINVAL, "length %u is outside 1..%u", cfg->length, BUNRING_LOADGEN_MAX_LENGTH), -EINVAL;
    uint32_t pipeline = cfg->pipeline ? cfg->pipeline : 1;
    if (pipeline > BUNRING_LOADGEN_MAX_PIPELINE)
        return lg_error(err, -EINVAL, "pipeline %u is outside 1..%u", cfg->pipeline, BUNRING_LOADGEN_MAX_PIPELINE), -EINVAL;
    if ((uint64_t)pipeline * cfg->connections > BUNRING_LOADGEN_MAX_SLOTS)
        return lg_error(err, -EINVAL, "connections x pipeline = %llu is more than %u",
                        (unsigned long long)pipeline * cfg->connections, BUNRING_LOADGEN_MAX_SLOTS), -EINVAL;
    if (cfg->request_len == 0) {
        if (cfg->request_count || cfg->reply_len || cfg->reply_count || cfg->requests || cfg->replies)
            return lg_error(err, -EINVAL, "request_len is 0 (echo) but other request/reply table fields are set"), -EINVAL;
    } else {
        if (cfg->request_len > BUNRING_LOADGEN_MAX_LENGTH || cfg->reply_len < 1 || cfg->reply_len > BUNRING_LOADGEN_MAX_LENGTH)
            return lg_error(err, -EINVAL, "request_len %u and reply_len %u must be 1..%u", cfg->request_len, cfg->reply_len,
                            BUNRING_LOADGEN_MAX_LENGTH), -EINVAL;
        if (cfg->request_count < 1 || cfg->request_count > BUNRING_LOADGEN_MAX_ENTRIES)
            return lg_error(err, -EINVAL, "request_count %u is outside 1..%u", cfg->request_count,
                            BUNRING_LOADGEN_MAX_ENTRIES), -EINVAL;
        if (cfg->reply_count != 1 && cfg->reply_count != cfg->request_count)
            return lg_error(err, -EINVAL, "reply_count %u must be 1 or request_count (%u)", cfg->reply_count,
                            cfg->request_count), -EINVAL;
        if ((uint64_t)cfg->request_len * cfg->request_count > BUNRING_LOADGEN_MAX_TABLE_BYTES ||
            (uint64_t)cfg->reply_len * cfg->reply_count > BUNRING_LOADGEN_MAX_TABLE_BYTES)
            return lg_error(err, -EINVAL, "the request or reply table is larger than %u bytes",
                            BUNRING_LOADGEN_MAX_TABLE_BYTES), -EINVAL;
        if (!cfg->requests || !cfg->replies)
            return lg_error(err, -EINVAL, "requests and replies must point at the tables"), -EINVAL;
    }
    uint32_t max_threads = cfg->connections < BUNRING_LOADGEN_MAX_THREADS ? cfg->connections : BUNRING_LOADGEN_MAX_THREADS;
    if (cfg->threads < 1 || cfg->threads > max_threads)
        return lg_error(err, -EINVAL, "threads %u is outside 1..%u (at most one per connection)", cfg->threads,
                        max_threads), -EINVAL;
    if (cfg->warmup_ms > BUNRING_LOADGEN_MAX_WARMUP_MS)
        return lg_error(err, -EINVAL, "warmup %u ms is outside 0..%u", cfg->warmup_ms, BUNRING_LOADGEN_MAX_WARMUP_MS),
               -EINVAL;
    if (cfg->duration_ms < 1 || cfg->duration_ms > BUNRING_LOADGEN_MAX_DURATION_MS)
        return lg_error(err, -EINVAL, "duration %u ms is outside 1..%u", cfg->duration_ms,
                        BUNRING_LOADGEN_MAX_DURATION_MS), -EINVAL;
    if (cfg->connect_timeout_ms < 1 || cfg->connect_timeout_ms > BUNRING_LOADGEN_MAX_CONNECT_TIMEOUT_MS)
        return lg_error(err, -EINVAL, "connect timeout %u ms is outside 1..%u", cfg->connect_timeout_ms,
                        BUNRING_LOADGEN_MAX_CONNECT_TIMEOUT_MS), -EINVAL;
    if (cfg->server_pid < 0)
        return lg_error(err, -EINVAL, "server pid %d is negative", cfg->server_pid), -EINVAL;
    if (cfg->flags & ~(uint32_t)BUNRING_LOADGEN_FLAG_EPOLL)
        return lg_error(err, -EINVAL, "flags %u: only BUNRING_LOADGEN_FLAG_EPOLL (1) is defined", cfg->flags), -EINVAL;
    if (cfg->cpu_count > BUNRING_LOADGEN_MAX_CPUS)
        return lg_error(err, -EINVAL, "cpus has %u entries, at most %u", cfg->cpu_count, BUNRING_LOADGEN_MAX_CPUS), -EINVAL;
    cpu_set_t allowed;
    bool know_allowed = sched_getaffinity(0, sizeof allowed, &allowed) == 0;
    for (uint32_t i = 0; i < cfg->cpu_count; i++) {
        int cpu = cfg->cpus[i];
        if (cpu < 0 || cpu >= CPU_SETSIZE || (know_allowed && !CPU_ISSET(cpu, &allowed)))
            return lg_error(err, -EINVAL, "cpus[%u] = %d is not a CPU this process may run on", i, cpu), -EINVAL;
    }

    memset(&lg->addr, 0, sizeof lg->addr);
    struct sockaddr_in *v4 = (struct sockaddr_in *)&lg->addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&lg->addr;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)cfg->port);
        lg->addrlen = sizeof *v4;
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)cfg->port);
        lg->addrlen = sizeof *v6;
    } else {
        return lg_error(err, -EINVAL, "host '%.64s' is not an IPv4 or IPv6 literal", host), -EINVAL;
    }
    return 0;
}

/* Every connection is an fd: lift the soft RLIMIT_NOFILE if it is too low, or say why it can't be. */
static int ensure_fd_limit(uint32_t wanted, struct bunring_loadgen_error *err)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= wanted)
        return 0;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < wanted)
        return lg_error(err, -EMFILE, "%u connections need about %u file descriptors; the hard RLIMIT_NOFILE is %llu",
                        wanted - 64, wanted, (unsigned long long)rl.rlim_max), -EMFILE;
    rl.rlim_cur = wanted;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        int e = errno;
        return lg_error(err, -e, "raising RLIMIT_NOFILE to %u failed: %s", wanted, strerror(e)), -e;
    }
    return 0;
}

static void release(struct bunring_loadgen *lg)
{
    for (uint32_t i = 0; lg->workers && i < lg->nworkers; i++) {
        struct lg_worker *w = &lg->workers[i];
        if (w->epfd >= 0)
            close(w->epfd);
        free(w->conns);
        free(w->pattern);
        free(w->starts);
        free(w->echo);
        free(w->scratch);
        free(w->hist);
        lg_uring_free(w);
    }
    free(lg->workers);
    free(lg->hist);
    free(lg->requests);
    free(lg->replies);
    pthread_cond_destroy(&lg->cond);
    pthread_mutex_destroy(&lg->mu);
    free(lg);
}

/* Ends a start() that failed after creating threads: releases them, then frees. */
static void abandon(struct bunring_loadgen *lg)
{
    atomic_store(&lg->stop, 1);
    pthread_mutex_lock(&lg->mu);
    lg->abort_run = true;
    lg->go = true;
    lg->released = true;
    pthread_cond_broadcast(&lg->cond);
    pthread_mutex_unlock(&lg->mu);
    for (uint32_t i = 0; i < lg->nworkers; i++)
        if (lg->workers[i].thread_started)
            pthread_join(lg->workers[i].thread, NULL);
    release(lg);
}

static int setup_worker(struct bunring_loadgen *lg, const struct bunring_loadgen_config *cfg, uint32_t i,
                        struct bunring_loadgen_error *err)
{
    struct lg_worker *w = &lg->workers[i];
    uint32_t first = (uint32_t)((uint64_t)cfg->connections * i / lg->nworkers);
    uint32_t last = (uint32_t)((uint64_t)cfg->connections * (i + 1) / lg->nworkers);
    w->lg = lg;
    w->id = i;
    w->nconns = last - first;
    w->c.lat_min = UINT64_MAX;
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (w->epfd < 0) {
        int e = errno;
        return lg_error(err, -e, "epoll_create1 failed: %s", strerror(e)), -e;
    }
    size_t slots = (size_t)w->nconns * lg->pipeline;
    w->conns = calloc(w->nconns, sizeof *w->conns);
    w->pattern = lg->echo ? malloc((size_t)lg->length + LG_PATTERN_SPAN) : NULL;
    w->starts = calloc(slots, sizeof *w->starts);
    w->echo = lg->echo ? calloc(slots, sizeof *w->echo) : NULL;
    w->scratch = malloc(LG_SCRATCH_LEN);
    w->hist = calloc(LG_HIST_BUCKETS, sizeof *w->hist);
    if (!w->conns || (lg->echo && (!w->pattern || !w->echo)) || !w->starts || !w->scratch || !w->hist)
        return lg_error(err, -ENOMEM, "out of memory for worker %u (%u connections, pipeline %u, %u-byte requests)", i,
                        w->nconns, lg->pipeline, lg->request_len), -ENOMEM;
    if (!(lg->flags & BUNRING_LOADGEN_FLAG_EPOLL) && lg_uring_alloc(w) != 0)
        return lg_error(err, -ENOMEM, "out of memory for worker %u's io_uring buffers (%u connections, pipeline %u, %u-byte replies)",
                        i, w->nconns, lg->pipeline, lg->reply_len), -ENOMEM;
    for (uint32_t k = 0; k < w->nconns; k++) {
        w->conns[k].fd = -1;
        w->conns[k].index = first + k;
    }
    uint64_t seed = lg_mix64(0x6c6f616467656eull ^ i);
    for (size_t k = 0; lg->echo && k < (size_t)lg->length + LG_PATTERN_SPAN; k += 8) {
        seed = lg_mix64(seed);
        size_t n = (size_t)lg->length + LG_PATTERN_SPAN - k < 8 ? (size_t)lg->length + LG_PATTERN_SPAN - k : 8;
        memcpy(w->pattern + k, &seed, n);
    }
    return 0;
}

static int spawn(pthread_t *thread, const cpu_set_t *cpus, void *(*fn)(void *), void *arg)
{
    pthread_attr_t attr;
    int rc = pthread_attr_init(&attr);
    if (rc != 0)
        return rc;
    if (cpus)
        rc = pthread_attr_setaffinity_np(&attr, sizeof *cpus, cpus);
    if (rc == 0)
        rc = pthread_create(thread, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    return rc;
}

bunring_loadgen *bunring_loadgen_start(const struct bunring_loadgen_config *cfg, const char *host,
                                       struct bunring_loadgen_error *err)
{
    if (err) {
        err->code = 0;
        err->message[0] = '\0';
    }
    struct bunring_loadgen *lg = calloc(1, sizeof *lg);
    if (!lg)
        return lg_error(err, -ENOMEM, "out of memory"), NULL;
    if (lg_check_config(cfg, host, lg, err) != 0) {
        free(lg);
        return NULL;
    }
    if (ensure_fd_limit(cfg->connections + 64, err) != 0) {
        free(lg);
        return NULL;
    }
    pthread_mutex_init(&lg->mu, NULL);
    pthread_cond_init(&lg->cond, NULL);
    lg->echo = cfg->request_len == 0;
    lg->pipeline = cfg->pipeline ? cfg->pipeline : 1;
    lg->connections = cfg->connections;
    if (lg->echo) {
        lg->length = cfg->length;
        lg->hdr_len = cfg->length < LG_HEADER_LEN ? cfg->length : LG_HEADER_LEN;
        lg->request_len = lg->reply_len = cfg->length;
    } else {
        lg->request_len = cfg->request_len;
        lg->reply_len = cfg->reply_len;
        lg->request_count = cfg->request_count;
        lg->reply_count = cfg->reply_count;
        lg->entry_step = cfg->connections % cfg->request_count;
        size_t rq = (size_t)cfg->request_len * cfg->request_count, rp = (size_t)cfg->reply_len * cfg->reply_count;
        lg->requests = malloc(rq);
        lg->replies = malloc(rp);
        if (!lg->requests || !lg->replies) {
            lg_error(err, -ENOMEM, "out of memory for the request and reply tables (%zu + %zu bytes)", rq, rp);
            release(lg);
            return NULL;
        }
        memcpy(lg->requests, (const void *)(uintptr_t)cfg->requests, rq);
        memcpy(lg->replies, (const void *)(uintptr_t)cfg->replies, rp);
    }
    lg->connect_timeout_ms = cfg->connect_timeout_ms;
    lg->flags = cfg->flags;
    lg->warmup_ns = (uint64_t)cfg->warmup_ms * LG_NS_PER_MS;
    lg->duration_ns = (uint64_t)cfg->duration_ms * LG_NS_PER_MS;
    lg->server_pid = cfg->server_pid;
    lg->result.server_cpu_ns = -1;
    lg->result.server_cpu_ticks = -1;
    lg->result.client_cpu_ns = -1;
    long tck = sysconf(_SC_CLK_TCK);
    lg->result.ticks_per_sec = tck > 0 ? (uint64_t)tck : 100;
    if (cfg->server_pid > 0) {
        int rc = clock_getcpuclockid(cfg->server_pid, &lg->server_clock);
        if (rc != 0 && rc != EPERM) {
            lg_error(err, -rc, "server pid %d: %s", cfg->server_pid, strerror(rc));
            release(lg);
            return NULL;
        }
        lg->have_server_clock = rc == 0 && clock_ns(lg->server_clock) >= 0;
    }

    lg->nworkers = cfg->threads;
    lg->workers = calloc(lg->nworkers, sizeof *lg->workers);
    lg->hist = calloc(LG_HIST_BUCKETS, sizeof *lg->hist);
    if (!lg->workers || !lg->hist) {
        lg_error(err, -ENOMEM, "out of memory");
        release(lg);
        return NULL;
    }
    for (uint32_t i = 0; i < lg->nworkers; i++)
        lg->workers[i].epfd = -1;
    for (uint32_t i = 0; i < lg->nworkers; i++) {
        if (setup_worker(lg, cfg, i, err) != 0) {
            release(lg);
            return NULL;
        }
    }

    CPU_ZERO(&lg->client_cpus);
    for (uint32_t i = 0; i < cfg->cpu_count; i++)
        CPU_SET(cfg->cpus[i], &lg->client_cpus);
    lg->pinned = cfg->cpu_count > 0;
    lg->begin_ns = lg_now_ns();
    for (uint32_t i = 0; i < lg->nworkers; i++) {
        cpu_set_t one;
        CPU_ZERO(&one);
        if (lg->pinned)
            CPU_SET(cfg->cpus[i % cfg->cpu_count], &one);
        int rc = spawn(&lg->workers[i].thread, lg->pinned ? &one : NULL, worker_main, &lg->workers[i]);
        if (rc != 0) {
            lg_error(err, -rc, "starting worker thread %u%s failed: %s", i, lg->pinned ? " (pinned)" : "", strerror(rc));
            abandon(lg);
            return NULL;
        }
        lg->workers[i].thread_started = true;
    }
    int rc = spawn(&lg->runner, lg->pinned ? &lg->client_cpus : NULL, runner_main, lg);
    if (rc != 0) {
        lg_error(err, -rc, "starting the runner thread failed: %s", strerror(rc));
        abandon(lg);
        return NULL;
    }
    lg->runner_started = true;
    return lg;
}

void bunring_loadgen_progress(const bunring_loadgen *lg, struct bunring_loadgen_progress *out)
{
    memset(out, 0, sizeof *out);
    out->phase = atomic_load_explicit(&lg->phase, memory_order_relaxed);
    out->done = atomic_load_explicit(&lg->done, memory_order_acquire);
    for (uint32_t i = 0; i < lg->nworkers; i++) {
        const struct lg_published *p = &lg->workers[i].pub;
        out->connections += atomic_load_explicit(&p->established, memory_order_relaxed);
        out->connect_errors += atomic_load_explicit(&p->connect_errors, memory_order_relaxed);
        out->errors += atomic_load_explicit(&p->errors, memory_order_relaxed);
        out->responses_total += atomic_load_explicit(&p->responses_total, memory_order_relaxed);
        out->responses += atomic_load_explicit(&p->responses, memory_order_relaxed);
    }
    out->now_ns = lg_now_ns();
    out->start_ns = atomic_load_explicit(&lg->start_ns, memory_order_relaxed);
    out->end_ns = atomic_load_explicit(&lg->end_ns, memory_order_relaxed);
}

uint32_t bunring_loadgen_done(const bunring_loadgen *lg)
{
    return atomic_load_explicit(&lg->done, memory_order_acquire);
}

void bunring_loadgen_stop(bunring_loadgen *lg)
{
    atomic_store(&lg->stop, 1);
}

int32_t bunring_loadgen_result(const bunring_loadgen *lg, struct bunring_loadgen_result *out)
{
    if (!atomic_load_explicit(&lg->done, memory_order_acquire))
        return -EBUSY;
    *out = lg->result;
    return 0;
}

void bunring_loadgen_free(bunring_loadgen *lg)
{
    if (!lg)
        return;
    atomic_store(&lg->stop, 1);
    if (lg->runner_started)
        pthread_join(lg->runner, NULL);
    release(lg);
}
