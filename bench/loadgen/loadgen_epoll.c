/*
 * loadgen_epoll.c — the load generator's connect phase and its epoll traffic loop. Every connection
 * is opened here, on the worker's epoll set (non-blocking connects, at most LG_CONNECT_WINDOW in
 * flight, bounded by the connect timeout), whichever loop then carries the traffic; the epoll loop
 * (level-triggered; a recv for whatever arrived, then one sendmsg for every request the window
 * allows) is the one used with BUNRING_LOADGEN_FLAG_EPOLL or where the kernel refuses io_uring.
 * Request contents, the window, verification and accounting come from loadgen_core.c, so both loops
 * measure the same thing; nothing here calls the io_uring loop or the runner.
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

static bool set_want_out(struct lg_worker *w, struct lg_conn *c, bool on)
{
    if (c->want_out == on)
        return true;
    if (lg_conn_watch(w, c, EPOLL_CTL_MOD, on ? EPOLLIN | EPOLLOUT : EPOLLIN) != 0) {
        w->c.io_errors++;
        lg_conn_close(w, c);
        return false;
    }
    c->want_out = on;
    return true;
}

/* At time t: closes the connection if it is finished, else writes what the window allows (arming
 * EPOLLOUT while the socket takes no more). */
static void pump(struct lg_worker *w, struct lg_conn *c, uint64_t t)
{
    if (lg_conn_finished(w, c, t)) {
        lg_conn_close(w, c);
        return;
    }
    struct iovec iov[LG_IOV_MAX];
    for (;;) {
        uint32_t n = lg_send_iov(w, c, iov, LG_IOV_MAX, t);
        if (n == 0)
            break;
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = n};
        ssize_t r = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r > 0) {
            lg_sent(w, c, (uint64_t)r, t);
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_want_out(w, c, true);
            return;
        }
        w->c.io_errors++;
        lg_conn_close(w, c);
        return;
    }
    set_want_out(w, c, false);
}

/* Reads what arrived, verifying replies as they come, then sends what the freed window allows. */
static void lg_conn_readable(struct lg_worker *w, struct lg_conn *c)
{
    uint64_t t = 0;
    for (;;) {
        ssize_t r = recv(c->fd, w->scratch, LG_SCRATCH_LEN, MSG_DONTWAIT);
        if (r > 0) {
            t = lg_now_ns();
            if (!lg_take_reply(w, c, w->scratch, (uint32_t)r, t)) {
                lg_conn_close(w, c);
                return;
            }
            if ((size_t)r < LG_SCRATCH_LEN)
                break; /* nothing more for now; level-triggered epoll reports the rest */
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
            break;
        w->c.io_errors++;
        lg_conn_close(w, c);
        return;
    }
    pump(w, c, t ? t : lg_now_ns());
}

/* Runs requests until the interval ends, then lets in-flight replies finish for up to LG_DRAIN_NS. */
void lg_epoll_traffic(struct lg_worker *w)
{
    struct bunring_loadgen *lg = w->lg;
    uint64_t end = atomic_load_explicit(&lg->end_ns, memory_order_relaxed);
    uint64_t t0 = lg_now_ns();
    for (uint32_t i = 0; i < w->nconns; i++) {
        struct lg_conn *c = &w->conns[i];
        if (c->state != LG_CONN_OPEN)
            continue;
        lg_conn_begin(w, c, i);
        pump(w, c, t0);
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
            else if (c->want_out && (ev & EPOLLOUT))
                pump(w, c, lg_now_ns());
        }
        lg_publish(w);
    }
}
