/*
 * loop_epoll.c — the edge-triggered epoll loop: the I/O half of the seam in app.h. accept4 until
 * EAGAIN; on readable, the application reads (echo: app_echo.c, handler mode: app_js.c); what it
 * sends goes out at once when nothing is queued before it, and only bytes the socket did not take
 * are copied into the connection's queue of pool buffers, with EPOLLOUT armed only while that queue
 * is non-empty. While a queue is non-empty new bytes go behind it, so order is kept. Here too: the
 * close path, stop (drain, FIN, discard until the peer closes), idle and drain timers, the accept
 * retry after EMFILE, and the pool policy for peers that stop reading (conn.c).
 */
#include "app.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_EVENTS 256
#define SCRATCH_BYTES 65536u
#define DISCARD_CLOCK_READS 16u /* while discarding on stop, look at the clock this often */
#define ACCEPT_RETRY_MS 50u
#define IOV_MAX_BATCH 64
#define TAG_LISTEN UINT64_MAX
#define TAG_WAKE (UINT64_MAX - 1)

/* epoll data for a connection: slot and generation, so an event for a freed slot is recognised. */
static uint64_t conn_tag(const struct loop *l, const struct conn *c)
{
    return ((uint64_t)c->gen << 32) | conn_slot(l, c);
}

void ep_want_write(struct loop *l, struct conn *c, bool on)
{
    if (on == !!(c->flags & CONN_WANT_WRITE))
        return;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET | (on ? EPOLLOUT : 0u),
                             .data.u64 = conn_tag(l, c)};
    epoll_ctl(l->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    if (on)
        c->flags |= CONN_WANT_WRITE;
    else
        c->flags &= ~(uint32_t)CONN_WANT_WRITE;
}

void ep_close(struct loop *l, struct conn *c, enum bunring_stat reason)
{
    l->app->closing(l, c, reason);
    conn_unpause(l, c); /* before the queue empties, so the paused-buffer count stays exact */
    while (c->q_head != NO_BUF)
        buf_give(l, queue_pop(l, c));
    c->close_reason = (uint8_t)reason;
    close(conn_release(l, c)); /* close() also removes the fd from the epoll set */
}

/* Counts bytes that reached the kernel. */
static void count_sent(struct loop *l, struct conn *c, uint32_t n)
{
    stat_add(l, BUNRING_STAT_SEND_COMPLETIONS, 1);
    stat_add(l, BUNRING_STAT_BYTES_OUT, n);
    c->last_active = l->now_ms;
    l->app->sent(l, c, n);
}

bool ep_send(struct loop *l, struct conn *c, const uint8_t *data, uint32_t n, uint32_t room, uint32_t *taken)
{
    uint32_t done = 0;
    if (c->q_head == NO_BUF) {
        ssize_t s = send(c->fd, data, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (s < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            ep_close(l, c, BUNRING_STAT_CONN_CLOSED_RESET);
            *taken = 0;
            return false;
        }
        if (s > 0) {
            done = (uint32_t)s;
            count_sent(l, c, done);
        }
        if (done < n)
            stat_add(l, s < 0 ? BUNRING_STAT_SEND_EAGAIN : BUNRING_STAT_SHORT_SENDS, 1);
    }
    uint32_t rest = n - done;
    uint32_t k = rest < room ? rest : room;
    if (k > 0)
        queue_append(l, c, data + done, k);
    *taken = done + k;
    return true;
}

/* Sends queued buffers until the queue is empty or the socket is full. false: connection closed. */
static bool flush_queue(struct loop *l, struct conn *c)
{
    struct iovec iov[IOV_MAX_BATCH];
    while (c->q_head != NO_BUF) {
        int n = 0;
        uint32_t total = 0;
        for (uint16_t bid = c->q_head; bid != NO_BUF && n < IOV_MAX_BATCH; bid = l->buf_next[bid], n++) {
            uint32_t off = n == 0 ? c->head_off : 0;
            iov[n].iov_base = buf_addr(l, bid) + off;
            iov[n].iov_len = l->buf_len[bid] - off;
            total += (uint32_t)iov[n].iov_len;
        }
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t s = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (s < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                stat_add(l, BUNRING_STAT_SEND_EAGAIN, 1);
                return true;
            }
            if (errno == EINTR)
                continue;
            ep_close(l, c, BUNRING_STAT_CONN_CLOSED_RESET);
            return false;
        }
        count_sent(l, c, (uint32_t)s);
        if ((uint32_t)s < total)
            stat_add(l, BUNRING_STAT_SHORT_SENDS, 1);
        uint32_t left = (uint32_t)s;
        uint16_t bid;
        while ((bid = queue_consume(l, c, &left)) != NO_BUF)
            buf_give(l, bid);
        if ((uint32_t)s < total)
            return true; /* the socket is full; EPOLLOUT tells us when to go on */
    }
    return true;
}

/* Reads and drops until the peer's EOF (which closes the connection) or EAGAIN. A peer that keeps
 * sending would keep this going, so past the drain deadline it stops early: the loop then closes
 * every connection. */
bool ep_discard_input(struct loop *l, struct conn *c)
{
    for (uint32_t reads = 1;; reads++) {
        ssize_t n = recv(c->fd, l->scratch, l->scratch_size, 0);
        if (n > 0) {
            stat_add(l, BUNRING_STAT_BYTES_DISCARDED, (uint64_t)n);
            if (reads % DISCARD_CLOCK_READS == 0 && (int32_t)(loop_clock_ms() - l->drain_deadline) >= 0)
                return true;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
        ep_close(l, c, n == 0 ? BUNRING_STAT_CONN_CLOSED_STOP : BUNRING_STAT_CONN_CLOSED_RESET);
        return false;
    }
}

void ep_service(struct loop *l, struct conn *c, bool readable, bool writable)
{
    if (writable && c->q_head != NO_BUF && !flush_queue(l, c))
        return;
    if ((c->flags & CONN_PAUSED) && conn_below_resume(l, c)) {
        conn_unpause(l, c);
        readable = true; /* edge-triggered: bytes may be waiting that raised no new event */
    }
    if (readable && !l->app->readable(l, c))
        return;
    l->app->settle(l, c);
}

/* Whether the socket has a pending error (SO_ERROR, which reading it would have returned). */
static bool socket_failed(int fd)
{
    int err = 0;
    socklen_t len = sizeof(err);
    return getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0;
}

static void accept_all(struct loop *l)
{
    while (l->listen_fd >= 0) {
        int fd = accept4(l->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                /* EMFILE, ENFILE, ENOMEM...: edge-triggered, so retry on a timer instead of spinning. */
                stat_add(l, BUNRING_STAT_ACCEPT_ERRORS, 1);
                l->accept_retry_at = l->now_ms + ACCEPT_RETRY_MS;
            }
            return;
        }
        struct conn *c = conn_open(l, fd);
        if (!c) {
            stat_add(l, BUNRING_STAT_CONN_REJECTED, 1); /* counted before the peer can see the close */
            close(fd);
            continue;
        }
        l->app->opened(l, c); /* false (JS is behind): parked, its first read waits for room */
        /* TCP_NODELAY is inherited from the listener (set before listen). */
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.u64 = conn_tag(l, c)};
        if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            stat_add(l, BUNRING_STAT_ERRORS, 1);
            ep_close(l, c, BUNRING_STAT_CONN_CLOSED_RESET);
        }
    }
}

/* Stalled peers (policy in conn.c): close the connections it names; their buffers come back at once,
 * so connections waiting for buffers can read again. */
static void apply_stall_policy(struct loop *l)
{
    pool_update_pressure(l);
    struct conn *c;
    bool closed = false;
    while ((c = pool_stall_victim(l)) != NULL) {
        ep_close(l, c, BUNRING_STAT_CONN_CLOSED_STALLED);
        closed = true;
    }
    if (closed)
        l->app->poll(l); /* a WRITE that waited for that connection's buffers may go now */
    if (l->starved_head != NO_SLOT)
        l->app->wake_starved(l);
}

/* When a drain of loop_drain_ms() that starts now ends. The loop's clock is CLOCK_MONOTONIC_COARSE,
 * which may be a tick behind: a deadline from it alone could close connections up to a tick before
 * drainMs has passed, so a nonzero drain gets that tick on top. */
static uint32_t drain_deadline(const struct loop *l)
{
    uint32_t drain = loop_drain_ms(l);
    return drain == 0 ? l->now_ms : l->now_ms + drain + loop_clock_tick_ms();
}

static void close_listener(struct loop *l)
{
    if (l->listen_fd >= 0) {
        close(l->listen_fd);
        l->listen_fd = -1;
    }
    l->listener_closed = true;
}

static void begin_stop(struct loop *l)
{
    l->stopping = true;
    l->drain_deadline = drain_deadline(l);
    close_listener(l);
    for (uint32_t i = 0; i < l->fresh_slots; i++) {
        struct conn *c = &l->conns[i];
        if (!(c->flags & CONN_IN_USE))
            continue;
        c->flags |= CONN_DRAINING;
        l->app->settle(l, c); /* FIN once what is queued is out, then linger */
    }
}

static void close_all(struct loop *l, enum bunring_stat reason, bool idle_only)
{
    for (uint32_t i = 0; i < l->fresh_slots; i++) {
        struct conn *c = &l->conns[i];
        if (!(c->flags & CONN_IN_USE))
            continue;
        if (!idle_only || conn_idle_for(l, c) >= l->idle_ms)
            ep_close(l, c, reason);
    }
}

/* Handler mode: connections JS ended whose peer did not close within drainMs of our FIN. */
static void linger_sweep(struct loop *l)
{
    for (uint32_t i = 0; i < l->fresh_slots && l->js_lingering > 0; i++) {
        struct conn *c = &l->conns[i];
        if ((c->flags & CONN_IN_USE) && js_linger_expired(l, c))
            ep_close(l, c, BUNRING_STAT_CONN_CLOSED_IDLE);
    }
}

/* Milliseconds until the next timer (accept retry, drain deadline, idle and linger sweeps), or -1. */
static int next_timeout(const struct loop *l, uint32_t next_idle_sweep, uint32_t next_linger_sweep)
{
    int64_t t = -1;
    if (l->accept_retry_at)
        t = (int64_t)(int32_t)(l->accept_retry_at - l->now_ms);
    if (l->stopping) {
        int64_t d = (int64_t)(int32_t)(l->drain_deadline - l->now_ms);
        t = t < 0 || d < t ? d : t;
    }
    if (l->idle_ms && !l->stopping) {
        int64_t d = (int64_t)(int32_t)(next_idle_sweep - l->now_ms);
        t = t < 0 || d < t ? d : t;
    }
    if (l->js_lingering && !l->stopping) {
        int64_t d = (int64_t)(int32_t)(next_linger_sweep - l->now_ms);
        t = t < 0 || d < t ? d : t;
    }
    uint32_t stall = pool_stall_wait_ms(l);
    if (stall != UINT32_MAX && !l->stopping)
        t = t < 0 || stall < t ? stall : t;
    if (t != -1 && t < 0)
        t = 0;
    return (int)t;
}

int epoll_setup(struct loop *l, struct bunring_error *err)
{
    l->app = (l->srv->cfg.flags & BUNRING_FLAG_HANDLER) ? &app_js_epoll : &app_echo_epoll;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0) {
        int e = errno;
        set_error(err, -e, "epoll_create1 failed: %s", strerror(e));
        return -e;
    }
    l->scratch_size = SCRATCH_BYTES;
    l->scratch = loop_alloc(l, l->scratch_size);
    if (!l->scratch) {
        set_error(err, -ENOMEM, "out of memory for the receive scratch buffer");
        return -ENOMEM;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u64 = TAG_LISTEN};
    struct epoll_event wev = {.events = EPOLLIN, .data.u64 = TAG_WAKE};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->listen_fd, &ev) != 0 ||
        epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->wake_fd, &wev) != 0) {
        int e = errno;
        set_error(err, -e, "epoll_ctl failed: %s", strerror(e));
        return -e;
    }
    return 0;
}

void epoll_run(struct loop *l)
{
    struct epoll_event events[MAX_EVENTS];
    l->now_ms = loop_clock_ms();
    uint32_t sweep_period = l->idle_ms / 4 < 10 ? 10 : (l->idle_ms / 4 > 1000 ? 1000 : l->idle_ms / 4);
    uint32_t next_sweep = l->now_ms + sweep_period;
    uint32_t next_linger_sweep = l->now_ms;
    accept_all(l); /* connections that queued before the loop started */
    for (;;) {
        l->app->publish(l);
        if (l->listener_closed && l->open_conns == 0)
            break; /* stopped, or not accepting and the last connection closed */
        if (l->js_lingering == 0)
            next_linger_sweep = l->now_ms + js_linger_period(l); /* the first sweep a period after */
        int timeout = next_timeout(l, next_sweep, next_linger_sweep);
        if (timeout != 0 && l->app->sleep_begin(l))
            timeout = 0; /* work arrived while we said we sleep */
        int n = epoll_wait(l->epfd, events, MAX_EVENTS, timeout);
        l->app->sleep_end(l);
        stat_add(l, BUNRING_STAT_WAIT_CALLS, 1);
        stat_add(l, BUNRING_STAT_LOOP_ITERATIONS, 1);
        l->now_ms = loop_clock_ms();
        if (n < 0 && errno != EINTR) {
            stat_add(l, BUNRING_STAT_ERRORS, 1);
            continue;
        }
        for (int i = 0; i < n; i++) {
            uint64_t tag = events[i].data.u64;
            if (tag == TAG_LISTEN) {
                accept_all(l);
                continue;
            }
            if (tag == TAG_WAKE) {
                uint64_t v;
                if (read(l->wake_fd, &v, sizeof(v)) < 0) { /* drained; the value itself is unused */
                }
                if (!loop_stop_requested(l)) {
                    if (loop_close_listener_requested(l) && !l->listener_closed)
                        close_listener(l); /* stop(false): keep serving what is open */
                    else
                        stat_add(l, BUNRING_STAT_JS_WAKEUPS, 1); /* JS published commands while we slept */
                } else if (!l->stopping) {
                    begin_stop(l);
                } else {
                    /* A second stop() with a shorter drain: move the deadline closer, never further. */
                    uint32_t deadline = drain_deadline(l);
                    if ((int32_t)(deadline - l->drain_deadline) < 0)
                        l->drain_deadline = deadline;
                }
                continue;
            }
            struct conn *c = conn_lookup(l, (uint32_t)tag, (uint32_t)(tag >> 32));
            if (!c) {
                stat_add(l, BUNRING_STAT_STALE_COMPLETIONS, 1);
                continue;
            }
            uint32_t e = events[i].events;
            if ((e & EPOLLERR) && (c->flags & CONN_JS_PAUSED) && socket_failed(c->fd)) {
                /* JS paused it, so nothing reads it: its peer's reset would go unnoticed. */
                ep_close(l, c, BUNRING_STAT_CONN_CLOSED_RESET);
                continue;
            }
            ep_service(l, c, e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR), e & (EPOLLOUT | EPOLLERR));
        }
        l->app->poll(l);
        if (l->starved_head != NO_SLOT)
            l->app->wake_starved(l);
        apply_stall_policy(l);
        if (l->accept_retry_at && (int32_t)(l->now_ms - l->accept_retry_at) >= 0) {
            l->accept_retry_at = 0;
            accept_all(l);
        }
        if (l->stopping && (int32_t)(l->now_ms - l->drain_deadline) >= 0)
            close_all(l, BUNRING_STAT_CONN_CLOSED_STOP, false);
        if (l->idle_ms && !l->stopping && (int32_t)(l->now_ms - next_sweep) >= 0) {
            close_all(l, BUNRING_STAT_CONN_CLOSED_IDLE, true);
            next_sweep = l->now_ms + sweep_period;
        }
        if (l->js_lingering && !l->stopping && (int32_t)(l->now_ms - next_linger_sweep) >= 0) {
            linger_sweep(l);
            next_linger_sweep = l->now_ms + js_linger_period(l);
        }
    }
}

void epoll_teardown(struct loop *l)
{
    if (l->epfd >= 0)
        close(l->epfd);
    l->epfd = -1;
    free(l->scratch);
    l->scratch = NULL;
}
