/*
 * server.c — a server's life cycle: check the config, open one SO_REUSEPORT listening socket per
 * loop (a single loop's is plain, unless the server shares its port with others: reusePort), start
 * each loop on its own native thread (pinned if asked), wait until every loop has set up its ring or
 * epoll instance (so start returns only once the server listens, or returns the first error with
 * everything released), and later stop, join and free. Nothing here runs per request.
 */
#include "internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

static bool in_range(uint32_t v, uint32_t min, uint32_t max) { return v >= min && v <= max; }

/* Fills err with an EINVAL message and returns -EINVAL. */
static int reject(struct bunring_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int reject(struct bunring_error *err, const char *fmt, ...)
{
    if (err) {
        err->code = -EINVAL;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

/* The C ABI checks everything it is given, against the limits bunring.h defines (and exports). */
static int check_config(const struct bunring_config *cfg, struct bunring_error *err)
{
    if (cfg->backend != BUNRING_BACKEND_URING && cfg->backend != BUNRING_BACKEND_EPOLL)
        return reject(err, "backend %u is not 0 (uring) or 1 (epoll)", cfg->backend);
    if (cfg->port > BUNRING_PORT_MAX)
        return reject(err, "port %u is outside 0..%u", cfg->port, BUNRING_PORT_MAX);
    if (!in_range(cfg->threads, 1, BUNRING_MAX_THREADS))
        return reject(err, "threads %u is outside 1..%u", cfg->threads, BUNRING_MAX_THREADS);
    if (!in_range(cfg->buffer_size, BUNRING_BUFFER_SIZE_MIN, BUNRING_BUFFER_SIZE_MAX))
        return reject(err, "bufferSize %u is outside %u..%u", cfg->buffer_size, BUNRING_BUFFER_SIZE_MIN, BUNRING_BUFFER_SIZE_MAX);
    if (!in_range(cfg->buffer_count, BUNRING_BUFFER_COUNT_MIN, BUNRING_BUFFER_COUNT_MAX) ||
        (cfg->buffer_count & (cfg->buffer_count - 1)))
        return reject(err, "bufferCount %u is not a power of two in %u..%u", cfg->buffer_count, BUNRING_BUFFER_COUNT_MIN,
               BUNRING_BUFFER_COUNT_MAX);
    if (!in_range(cfg->max_connections, cfg->threads, BUNRING_MAX_CONNECTIONS_MAX))
        return reject(err, "maxConnections %u is outside %u (threads)..%u", cfg->max_connections, cfg->threads,
               BUNRING_MAX_CONNECTIONS_MAX);
    if (!in_range(cfg->max_pending_bytes, BUNRING_MAX_PENDING_MIN, BUNRING_MAX_PENDING_MAX))
        return reject(err, "maxPendingBytes %u is outside %u..%u", cfg->max_pending_bytes, BUNRING_MAX_PENDING_MIN,
               BUNRING_MAX_PENDING_MAX);
    uint32_t per_conn = conn_pause_buffers(cfg->max_pending_bytes, cfg->buffer_size);
    if (cfg->buffer_count < per_conn)
        return reject(err, "bufferCount %u is smaller than the %u buffers one connection may hold with maxPendingBytes %u "
                           "and bufferSize %u",
                      cfg->buffer_count, per_conn, cfg->max_pending_bytes, cfg->buffer_size);
    if (!in_range(cfg->backlog, 1, BUNRING_BACKLOG_MAX))
        return reject(err, "backlog %u is outside 1..%u", cfg->backlog, BUNRING_BACKLOG_MAX);
    if (cfg->drain_ms > BUNRING_DRAIN_MS_MAX)
        return reject(err, "drainMs %u is outside 0..%u", cfg->drain_ms, BUNRING_DRAIN_MS_MAX);
    if (cfg->idle_timeout_ms > BUNRING_IDLE_TIMEOUT_MS_MAX)
        return reject(err, "idleTimeoutMs %u is outside 0..%u", cfg->idle_timeout_ms, BUNRING_IDLE_TIMEOUT_MS_MAX);
    if (cfg->stall_timeout_ms > BUNRING_STALL_TIMEOUT_MS_MAX)
        return reject(err, "stallTimeoutMs %u is outside 0..%u", cfg->stall_timeout_ms, BUNRING_STALL_TIMEOUT_MS_MAX);
    if (cfg->flags & ~(uint32_t)BUNRING_FLAGS_ALL)
        return reject(err, "flags 0x%x has undefined bits (defined: 0x%x)", cfg->flags, (unsigned)BUNRING_FLAGS_ALL);
    if (cfg->cpu_count > BUNRING_MAX_CPUS)
        return reject(err, "cpus has %u entries, at most %u", cfg->cpu_count, BUNRING_MAX_CPUS);
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (cfg->cpu_count > 0 && sched_getaffinity(0, sizeof(allowed), &allowed) != 0)
        return reject(err, "cannot read this process's CPU affinity to check cpus: %s", strerror(errno));
    for (uint32_t i = 0; i < cfg->cpu_count; i++)
        if (cfg->cpus[i] < 0 || cfg->cpus[i] >= CPU_SETSIZE || !CPU_ISSET(cfg->cpus[i], &allowed))
            return reject(err, "cpus entry %u (%d) is not a CPU this process may run on", i + 1, cfg->cpus[i]);
    return 0;
}

/* Each connection is an fd: lift the soft RLIMIT_NOFILE toward the hard limit when it is too low. */
static void raise_fd_limit(uint32_t wanted)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= wanted)
        return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > wanted ? wanted : rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
}

uint32_t bunring_host_family(const char *host)
{
    struct in6_addr addr; /* room for either family */
    if (inet_pton(AF_INET, host, &addr) == 1)
        return 4;
    if (inet_pton(AF_INET6, host, &addr) == 1)
        return 6;
    return 0;
}

/* Binds host:port and listens. With reuseport several loops share the port; a plain bind (no
 * SO_REUSEPORT) is also how start() checks that nobody else already holds the port. When out_fd is
 * NULL the socket is only bound (to check or pick the port) and closed again. */
static int open_listener(const struct bunring_config *cfg, const char *host, uint32_t port, bool reuseport,
                         int *out_fd, uint32_t *out_port, struct bunring_error *err)
{
    struct sockaddr_storage ss;
    socklen_t len;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        len = sizeof(*v4);
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        len = sizeof(*v6);
    } else {
        set_error(err, -EINVAL, "host '%s' is not an IPv4 or IPv6 address", host);
        return -EINVAL;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int e = errno;
        set_error(err, -e, "socket() failed: %s", strerror(e));
        return -e;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (ss.ss_family == AF_INET6) {
        /* Dual stack, as Bun and Node listen: "::" takes IPv4 clients too (as ::ffff:a.b.c.d),
         * whatever net.ipv6.bindv6only says. */
        int zero = 0;
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    }
    /* Before listen(): accepted connections inherit it, including the first ones in the backlog. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, len) != 0) {
        int e = errno;
        if (e == EADDRINUSE && (cfg->flags & BUNRING_FLAG_REUSE_PORT))
            set_error(err, -e, "port %u on %s is already in use by a socket that does not share it: reusePort shares a port "
                               "only with servers that also set it (same user)",
                      port, host);
        else if (e == EADDRINUSE)
            set_error(err, -e, "port %u on %s is already in use: stop the other server, choose another port (0 picks a free "
                               "one), or give every server that should share it reusePort",
                      port, host);
        else if (e == EACCES)
            set_error(err, -e, "permission denied binding port %u on %s: ports below 1024 need root or CAP_NET_BIND_SERVICE; choose a port >= 1024",
                      port, host);
        else if (e == EADDRNOTAVAIL)
            set_error(err, -e, "address %s is not available on this machine: %s", host, strerror(e));
        else
            set_error(err, -e, "bind %s port %u failed: %s", host, port, strerror(e));
        close(fd);
        return -e;
    }
    if (out_fd && listen(fd, (int)cfg->backlog) != 0) {
        int e = errno;
        set_error(err, -e, "listen() on %s port %u failed: %s", host, port, strerror(e));
        close(fd);
        return -e;
    }
    if (out_port) {
        struct sockaddr_storage bound;
        socklen_t blen = sizeof(bound);
        getsockname(fd, (struct sockaddr *)&bound, &blen);
        *out_port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                      : ((struct sockaddr_in *)&bound)->sin_port);
    }
    if (out_fd)
        *out_fd = fd;
    else
        close(fd);
    return 0;
}

static int pin_thread(struct loop *l)
{
    const struct bunring_config *cfg = &l->srv->cfg;
    if (cfg->cpu_count == 0)
        return 0;
    int cpu = cfg->cpus[l->index % cfg->cpu_count];
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    int e = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    if (e != 0)
        set_error(&l->setup_err, -e, "could not pin loop %u to CPU %d: %s", l->index, cpu, strerror(e));
    return -e;
}

static void finish_setup(struct loop *l, int code)
{
    struct bunring_server *srv = l->srv;
    pthread_mutex_lock(&srv->setup_lock);
    l->setup_code = code;
    l->setup_finished = true;
    pthread_cond_broadcast(&srv->setup_cond);
    pthread_mutex_unlock(&srv->setup_lock);
}

static void *loop_thread(void *arg)
{
    struct loop *l = arg;
    bool uring = l->srv->cfg.backend == BUNRING_BACKEND_URING;
    int rc = pin_thread(l);
    if (rc == 0)
        rc = uring ? uring_setup(l, &l->setup_err) : epoll_setup(l, &l->setup_err);
    if (rc == 0) {
        l->started = true;
        /* Wait for the other loops: if one fails, start() asks everyone to stop before serving. */
        finish_setup(l, 0);
        if (uring)
            uring_run(l);
        else
            epoll_run(l);
    } else {
        finish_setup(l, rc);
    }
    if (uring)
        uring_teardown(l);
    else
        epoll_teardown(l);
    __atomic_add_fetch(&l->srv->loops_done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void wake_loops(struct bunring_server *srv)
{
    uint64_t one = 1;
    for (uint32_t i = 0; i < srv->nloops; i++)
        if (srv->loops[i].wake_fd >= 0 && write(srv->loops[i].wake_fd, &one, sizeof(one)) < 0) {
            /* An eventfd write only fails if the counter would overflow: the loop is awake anyway. */
        }
}

static void join_and_free(struct bunring_server *srv)
{
    for (uint32_t i = 0; i < srv->nloops; i++) {
        struct loop *l = &srv->loops[i];
        if (l->thread_started)
            pthread_join(l->thread, NULL);
        if (l->listen_fd >= 0)
            close(l->listen_fd);
        if (l->wake_fd >= 0)
            close(l->wake_fd);
        loop_free_tables(l);
        js_channel_free(l); /* after the join: JS reads the channel until it frees the server */
    }
    pthread_mutex_destroy(&srv->setup_lock);
    pthread_cond_destroy(&srv->setup_cond);
    free(srv->stats_mem);
    free(srv);
}

static bunring_server *start(const struct bunring_config *cfg, const char *host, bunring_js_doorbell doorbell,
                             struct bunring_error *err);

bunring_server *bunring_server_start(const struct bunring_config *cfg, const char *host, struct bunring_error *err)
{
    if (cfg && (cfg->flags & BUNRING_FLAG_HANDLER)) {
        set_error(err, -EINVAL, "handler mode needs bunring_server_start_handler (a doorbell)");
        return NULL;
    }
    return start(cfg, host, NULL, err);
}

bunring_server *bunring_server_start_handler(const struct bunring_config *cfg, const char *host,
                                             bunring_js_doorbell doorbell, struct bunring_error *err)
{
    if (!cfg || !doorbell || !(cfg->flags & BUNRING_FLAG_HANDLER)) {
        set_error(err, -EINVAL, "handler mode needs a config with BUNRING_FLAG_HANDLER and a doorbell");
        return NULL;
    }
    return start(cfg, host, doorbell, err);
}

struct bunring_js_channel *bunring_js_channel_of(bunring_server *srv, uint32_t loop)
{
    return loop < srv->nloops ? srv->loops[loop].js : NULL;
}

uint32_t *bunring_js_sent_of(bunring_server *srv, uint32_t loop)
{
    return loop < srv->nloops ? srv->loops[loop].js_sent : NULL;
}

void bunring_js_wake(bunring_server *srv, uint32_t loop)
{
    uint64_t one = 1;
    if (loop < srv->nloops && write(srv->loops[loop].wake_fd, &one, sizeof(one)) < 0) {
        /* Only fails if the counter would overflow: the loop is awake anyway. */
    }
}

static bunring_server *start(const struct bunring_config *cfg, const char *host, bunring_js_doorbell doorbell,
                             struct bunring_error *err)
{
    if (err)
        set_error(err, 0, "ok");
    if (!cfg || !host) {
        set_error(err, -EINVAL, "config and host are required");
        return NULL;
    }
    if (check_config(cfg, err) != 0)
        return NULL;
    if (cfg->backend == BUNRING_BACKEND_URING) {
        struct bunring_error perr;
        uint32_t feats = (cfg->flags & BUNRING_FLAG_FORCE_NO_URING) ? 0 : probe_kernel(&perr);
        if (cfg->flags & BUNRING_FLAG_FORCE_NO_URING)
            set_error(&perr, -ENOSYS, "io_uring is unavailable (disabled by BUNRING_DISABLE_URING=1)");
        if (!(feats & BUNRING_FEAT_MULTISHOT_RECV)) {
            set_error(err, perr.code ? perr.code : -ENOSYS, "%s; use backend 'epoll'", perr.message);
            return NULL;
        }
    }

    struct bunring_server *srv = calloc(1, sizeof(*srv) + sizeof(struct loop) * cfg->threads);
    if (!srv) {
        set_error(err, -ENOMEM, "out of memory");
        return NULL;
    }
    srv->cfg = *cfg;
    srv->nloops = cfg->threads;
    srv->doorbell = doorbell;
    pthread_mutex_init(&srv->setup_lock, NULL);
    pthread_cond_init(&srv->setup_cond, NULL);
    srv->stats_mem = calloc((size_t)cfg->threads * BUNRING_STATS_STRIDE, sizeof(uint64_t));
    for (uint32_t i = 0; i < srv->nloops; i++) {
        srv->loops[i].srv = srv;
        srv->loops[i].index = i;
        srv->loops[i].listen_fd = -1;
        srv->loops[i].wake_fd = -1;
        srv->loops[i].epfd = -1;
        srv->loops[i].stats = srv->stats_mem ? srv->stats_mem + (size_t)i * BUNRING_STATS_STRIDE : NULL;
    }
    if (!srv->stats_mem) {
        set_error(err, -ENOMEM, "out of memory");
        join_and_free(srv);
        return NULL;
    }
    raise_fd_limit(cfg->max_connections + 64u * cfg->threads + 256u);

    /* Listening sockets first: with port 0 the first bind picks the port the others share. Several
     * loops share the port through SO_REUSEPORT, after a plain bind has checked that nobody else
     * holds it. With BUNRING_FLAG_REUSE_PORT other servers may hold it (and join it later): no check,
     * and even a single loop's socket gets SO_REUSEPORT. With port 0, the kernel then picks a port
     * nobody holds: this server's loops share it, and other servers join by binding that port. */
    uint32_t port = cfg->port;
    bool shared = (cfg->flags & BUNRING_FLAG_REUSE_PORT) != 0;
    bool reuseport = shared || srv->nloops > 1;
    int rc = reuseport && !shared ? open_listener(cfg, host, port, false, NULL, &port, err) : 0;
    for (uint32_t i = 0; i < srv->nloops && rc == 0; i++) {
        struct loop *l = &srv->loops[i];
        rc = open_listener(cfg, host, port, reuseport, &l->listen_fd, i == 0 ? &port : NULL, err);
        if (rc == 0) {
            l->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
            if (l->wake_fd < 0) {
                rc = -errno;
                set_error(err, rc, "eventfd() failed: %s", strerror(errno));
            }
        }
        if (rc == 0)
            rc = loop_alloc_tables(l, err);
        if (rc == 0 && doorbell)
            rc = js_channel_alloc(l, err);
    }
    srv->port = port;

    for (uint32_t i = 0; i < srv->nloops && rc == 0; i++) {
        struct loop *l = &srv->loops[i];
        int e = pthread_create(&l->thread, NULL, loop_thread, l);
        if (e != 0) {
            rc = -e;
            set_error(err, rc, "could not start loop thread %u: %s", i, strerror(e));
            break;
        }
        l->thread_started = true;
    }

    /* Wait for every started loop to report its setup result. */
    pthread_mutex_lock(&srv->setup_lock);
    for (uint32_t i = 0; i < srv->nloops; i++) {
        struct loop *l = &srv->loops[i];
        if (!l->thread_started)
            continue;
        while (!l->setup_finished)
            pthread_cond_wait(&srv->setup_cond, &srv->setup_lock);
        if (l->setup_code != 0 && rc == 0) {
            rc = l->setup_code;
            if (err)
                *err = l->setup_err;
        }
    }
    pthread_mutex_unlock(&srv->setup_lock);

    if (rc != 0) {
        __atomic_store_n(&srv->stop_drain_ms, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&srv->stop_requested, 1, __ATOMIC_RELEASE);
        wake_loops(srv);
        join_and_free(srv);
        return NULL;
    }
    for (uint32_t i = 0; i < srv->nloops; i++)
        srv->features = srv->loops[i].features; /* identical per loop */
    return srv;
}

uint32_t bunring_server_port(const bunring_server *srv) { return srv->port; }
uint32_t bunring_server_features(const bunring_server *srv) { return srv->features; }
uint32_t bunring_server_threads(const bunring_server *srv) { return srv->nloops; }
uint64_t *bunring_server_stats(bunring_server *srv) { return srv->stats_mem; }

int32_t bunring_server_stop(bunring_server *srv, uint32_t drain_ms)
{
    if (drain_ms > BUNRING_DRAIN_MS_MAX)
        return -EINVAL;
    /* Only the JS thread calls this, so the check and the store below do not race each other. */
    if (__atomic_load_n(&srv->stop_requested, __ATOMIC_ACQUIRE) &&
        drain_ms >= __atomic_load_n(&srv->stop_drain_ms, __ATOMIC_ACQUIRE))
        return 0;
    __atomic_store_n(&srv->stop_drain_ms, drain_ms, __ATOMIC_RELEASE);
    __atomic_store_n(&srv->stop_requested, 1, __ATOMIC_RELEASE);
    wake_loops(srv);
    return 0;
}

int32_t bunring_server_close_listener(bunring_server *srv)
{
    __atomic_store_n(&srv->close_listener_requested, 1, __ATOMIC_RELEASE);
    wake_loops(srv);
    return 0;
}

uint32_t bunring_server_done(const bunring_server *srv)
{
    return __atomic_load_n(&srv->loops_done, __ATOMIC_ACQUIRE) == srv->nloops;
}

void bunring_server_free(bunring_server *srv)
{
    if (!srv)
        return;
    if (!__atomic_load_n(&srv->stop_requested, __ATOMIC_ACQUIRE))
        bunring_server_stop(srv, srv->cfg.drain_ms);
    join_and_free(srv);
}
