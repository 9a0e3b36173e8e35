/*
 * loadgen_epoll.c — the load generator's connect phase and its epoll traffic loop. Every connection
 * is opened here, on the worker's epoll set (non-blocking connects, at most LG_CONNECT_WINDOW in
 * flight, bounded by the connect timeout), whichever loop then carries the traffic; the epoll loop
 * (level-triggered, a sendmsg and a recv per round trip) is the one used with
 * BUNRING_LOADGEN_FLAG_EPOLL or where the kernel refuses io_uring. Message contents, verification
 * and accounting come from loadgen_core.c, so both loops measure the same thing; nothing here calls
 * the io_uring loop or the runner.
 */
#include "loadgen_internal.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

static int lg_conn_watch(struct lg_worker *w, struct lg_conn *c, int op, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.u64 = (uint64_t)(c - w->conns)};
    return epoll_ctl(w->epfd, op, c->fd, &ev);
}

/* ---- connect phase ---- */

static void connect_failed(struct lg_worker *w, struct lg_conn *c, int e)
{
    if (c->state != LG_CONN_CLOSED)
        lg_conn_close(w, c);
    w->c.connect_errors++;
    if (!w->first_connect_errno)
        w->first_connect_errno = e;
}

/* Starts a non-blocking connect. Returns 1 if it completed at once, 0 if in progress, or -errno. */
static int lg_conn_connect(struct lg_worker *w, struct lg_conn *c)
{
    const struct bunring_loadgen *lg = w->lg;
    int fd = socket(lg->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc = connect(fd, (const struct sockaddr *)&lg->addr, lg->addrlen);
    if (rc != 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        return -e;
    }
    c->fd = fd;
    c->state = rc == 0 ? LG_CONN_OPEN : LG_CONN_CONNECTING;
    w->live++;
    if (lg_conn_watch(w, c, EPOLL_CTL_ADD, rc == 0 ? EPOLLIN : EPOLLOUT) != 0) {
        int e = errno;
        lg_conn_close(w, c);
        return -e;
    }
    return rc == 0 ? 1 : 0;
}

static void connect_completed(struct lg_worker *w, struct lg_conn *c, uint32_t events)
{
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0)
        soerr = errno;
    if (soerr == 0 && (events & (EPOLLERR | EPOLLHUP)))
        soerr = ECONNREFUSED;
    if (soerr != 0 || lg_conn_watch(w, c, EPOLL_CTL_MOD, EPOLLIN) != 0) {
        connect_failed(w, c, soerr ? soerr : errno);
        return;
    }
    c->state = LG_CONN_OPEN;
    w->c.established++;
}

/* Opens this worker's connections, at most LG_CONNECT_WINDOW in flight, until all are open or failed
 * or the timeout passes (the rest then count as connect errors). */
void lg_epoll_connect(struct lg_worker *w)
{
    struct bunring_loadgen *lg = w->lg;
    uint64_t deadline = lg->begin_ns + (uint64_t)lg->connect_timeout_ms * LG_NS_PER_MS;
    uint32_t next = 0, inflight = 0;
    while (!lg_stopping(lg)) {
        while (inflight < LG_CONNECT_WINDOW && next < w->nconns) {
            struct lg_conn *c = &w->conns[next++];
            int rc = lg_conn_connect(w, c);
            if (rc < 0)
                connect_failed(w, c, -rc);
            else if (rc == 1)
                w->c.established++;
            else
                inflight++;
        }
        lg_publish(w);
        if (inflight == 0 && next == w->nconns)
            return;
        uint64_t t = lg_now_ns();
        if (t >= deadline)
            break;
        uint64_t left_ms = (deadline - t + LG_NS_PER_MS - 1) / LG_NS_PER_MS;
        int n = epoll_wait(w->epfd, w->events, LG_EVENTS_MAX, left_ms < LG_WAIT_SLICE_MS ? (int)left_ms : LG_WAIT_SLICE_MS);
        if (n < 0 && errno != EINTR) {
            w->fatal_errno = errno;
            break;
        }
        for (int i = 0; i < n; i++) {
            struct lg_conn *c = &w->conns[w->events[i].data.u64];
            if (c->state != LG_CONN_CONNECTING)
                continue;
            connect_completed(w, c, w->events[i].events);
            inflight--;
        }
    }
    /* Timed out, stopped or failed: whatever is still connecting or unopened failed. */
    for (uint32_t i = 0; i < w->nconns; i++) {
        struct lg_conn *c = &w->conns[i];
        if (c->state == LG_CONN_CONNECTING || (i >= next && c->state == LG_CONN_CLOSED))
            connect_failed(w, c, ETIMEDOUT);
    }
    lg_publish(w);
}

/* ---- epoll traffic loop ---- */

/* Writes what is left of the current message. t: a timestamp to count the request by, or 0 to read
 * the clock if the message completes. Returns false if the connection was closed. */
static bool lg_conn_send(struct lg_worker *w, struct lg_conn *c, uint64_t t)
{
    const struct bunring_loadgen *lg = w->lg;
    uint32_t len = lg->length, hl = lg->hdr_len;
    while (c->sent < len) {
        struct iovec iov[2];
        size_t n = 0;
        if (c->sent < hl)
            iov[n++] = (struct iovec){.iov_base = c->header + c->sent, .iov_len = hl - c->sent};
        uint32_t body_at = c->sent > hl ? c->sent - hl : 0;
        if (len > hl)
            iov[n++] = (struct iovec){.iov_base = w->pattern + c->body_off + body_at, .iov_len = len - hl - body_at};
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = n};
        ssize_t r = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r > 0) {
            c->sent += (uint32_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->want_out) {
                if (lg_conn_watch(w, c, EPOLL_CTL_MOD, EPOLLIN | EPOLLOUT) != 0) {
                    w->c.io_errors++;
                    lg_conn_close(w, c);
                    return false;
                }
                c->want_out = 1;
            }
            return true;
        }
        w->c.io_errors++;
        lg_conn_close(w, c);
        return false;
    }
    if (c->want_out) {
        if (lg_conn_watch(w, c, EPOLL_CTL_MOD, EPOLLIN) != 0) {
            w->c.io_errors++;
            lg_conn_close(w, c);
            return false;
        }
        c->want_out = 0;
    }
    if (lg_in_interval(lg, t ? t : lg_now_ns()))
        w->c.requests++;
    return true;
}

static void round_trip_done(struct lg_worker *w, struct lg_conn *c)
{
    uint64_t t = lg_now_ns();
    if (lg_round_trip_next(w, c, t))
        lg_conn_send(w, c, t);
    else
        lg_conn_close(w, c);
}

static void lg_conn_readable(struct lg_worker *w, struct lg_conn *c)
{
    uint32_t len = w->lg->length;
    for (;;) {
        uint32_t want = len - c->received;
        uint32_t ask = want < LG_SCRATCH_LEN ? want : LG_SCRATCH_LEN;
        ssize_t r = recv(c->fd, w->scratch, ask, MSG_DONTWAIT);
        if (r > 0) {
            uint32_t n = (uint32_t)r;
            if (c->received + n > c->sent || !lg_chunk_matches(w, c, c->received, w->scratch, n)) {
                w->c.mismatches++;
                lg_conn_close(w, c);
                return;
            }
            c->received += n;
            w->c.bytes_verified += n;
            if (c->received == len) {
                round_trip_done(w, c);
                return;
            }
            if (n < ask)
                return; /* nothing more for now; level-triggered epoll reports the rest */
            continue;
        }
        if (r == 0) {
            w->c.short_reads++;
            lg_conn_close(w, c);
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        w->c.io_errors++;
        lg_conn_close(w, c);
        return;
    }
}

/* Runs round trips until the interval ends, then lets in-flight echoes finish for up to LG_DRAIN_NS. */
void lg_epoll_traffic(struct lg_worker *w)
{
    struct bunring_loadgen *lg = w->lg;
    uint64_t end = atomic_load_explicit(&lg->end_ns, memory_order_relaxed);
    uint64_t t0 = lg_now_ns();
    for (uint32_t i = 0; i < w->nconns; i++) {
        struct lg_conn *c = &w->conns[i];
        if (c->state != LG_CONN_OPEN)
            continue;
        lg_message_begin(c, t0);
        lg_conn_send(w, c, t0);
    }
    while (!lg_stopping(lg) && w->live > 0) {
        uint64_t t = lg_now_ns();
        uint64_t until = t < end ? end : end + LG_DRAIN_NS;
        if (t >= until)
            break;
        uint64_t left_ms = (until - t + LG_NS_PER_MS - 1) / LG_NS_PER_MS;
        int n = epoll_wait(w->epfd, w->events, LG_EVENTS_MAX, left_ms < LG_WAIT_SLICE_MS ? (int)left_ms : LG_WAIT_SLICE_MS);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            w->fatal_errno = errno;
            break;
        }
        for (int i = 0; i < n; i++) {
            struct lg_conn *c = &w->conns[w->events[i].data.u64];
            uint32_t ev = w->events[i].events;
            if (c->state != LG_CONN_OPEN)
                continue;
            if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP))
                lg_conn_readable(w, c);
            if (c->state == LG_CONN_OPEN && c->want_out && (ev & EPOLLOUT))
                lg_conn_send(w, c, 0);
        }
        lg_publish(w);
    }
}
