/*
 * app_echo.c — echo, the application serve() runs: every byte a peer sends goes back to it, in order,
 * exactly once (the other side of the seam in app.h is the loop that does the socket I/O).
 *
 * epoll: read into the loop's scratch buffer only as much as could be queued if the socket took none
 * of it, and send it straight back (ep_send queues what the socket did not take). With the pool empty
 * and nothing queued, echo straight from the socket: peek, send, and consume only what was sent, so a
 * connection whose echo can go out is served even when every buffer is held by others.
 * io_uring: the received pool buffer itself is queued and sent (no copy); it returns to the receive
 * ring once all its bytes were sent.
 * Both: a connection holding too many unechoed bytes pauses until its peer reads; after the peer's
 * EOF the connection closes once everything is echoed; on stop, FIN after the echo, then input is
 * read and dropped until the peer closes (so closing never sends an RST over echoed bytes in flight).
 */
#include "app.h"

#include <errno.h>
#include <sys/socket.h>

static bool echo_opened(struct loop *l, struct conn *c)
{
    (void)l;
    (void)c;
    return true;
}

static void echo_closing(struct loop *l, struct conn *c, enum bunring_stat reason)
{
    (void)l;
    (void)c;
    (void)reason;
}

static void echo_sent(struct loop *l, struct conn *c, uint32_t n)
{
    (void)l;
    (void)c;
    (void)n;
}

static void echo_nothing(struct loop *l)
{
    (void)l;
}

static bool echo_never_busy(struct loop *l)
{
    (void)l;
    return false;
}

/* ---- epoll ---- */

/* The pool is empty and this connection has nothing queued: n bytes were peeked into scratch. Send
 * them and consume from the socket exactly what was sent; what the socket did not take stays in the
 * kernel and the connection waits for a buffer (starved list). false: connection closed. */
static bool echo_peeked(struct loop *l, struct conn *c, uint32_t n)
{
    ssize_t s = send(c->fd, l->scratch, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (s < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        ep_close(l, c, BUNRING_STAT_CONN_CLOSED_RESET);
        return false;
    }
    uint32_t sent = s < 0 ? 0 : (uint32_t)s;
    if (sent > 0) {
        ssize_t r = recv(c->fd, l->scratch, sent, 0); /* the same bytes: they were already in the socket */
        if (r != (ssize_t)sent) {
            stat_add(l, BUNRING_STAT_ERRORS, 1);
            ep_close(l, c, BUNRING_STAT_CONN_CLOSED_RESET);
            return false;
        }
        c->last_active = l->now_ms;
        stat_add(l, BUNRING_STAT_RECV_COMPLETIONS, 1);
        stat_add(l, BUNRING_STAT_BYTES_IN, sent);
        stat_add(l, BUNRING_STAT_SEND_COMPLETIONS, 1);
        stat_add(l, BUNRING_STAT_BYTES_OUT, sent);
    }
    if (sent < n) {
        stat_add(l, sent == 0 ? BUNRING_STAT_SEND_EAGAIN : BUNRING_STAT_SHORT_SENDS, 1);
        stat_add(l, BUNRING_STAT_ENOBUFS, 1);
        starved_push(l, c);
    }
    return true;
}

/* Reads until EAGAIN, echoing as it goes. false: connection closed. */
static bool echo_read(struct loop *l, struct conn *c)
{
    while (!(c->flags & (CONN_PEER_EOF | CONN_DRAINING))) {
        if (conn_over_limit(l, c)) {
            conn_pause(l, c);
            return true;
        }
        /* Whatever cannot be sent at once must fit in the pool: never read more than that. */
        uint32_t want = queue_room(l, c);
        if (want > l->scratch_size)
            want = l->scratch_size;
        if (want == 0 && c->q_head != NO_BUF) {
            stat_add(l, BUNRING_STAT_ENOBUFS, 1);
            starved_push(l, c);
            return true;
        }
        bool peek = want == 0;
        ssize_t n = recv(c->fd, l->scratch, peek ? l->scratch_size : want, peek ? MSG_PEEK : 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return true;
            if (errno == EINTR)
                continue;
            ep_close(l, c, BUNRING_STAT_CONN_CLOSED_RESET);
            return false;
        }
        if (n == 0) {
            c->flags |= CONN_PEER_EOF; /* echo_settle closes once the queue is empty */
            return true;
        }
        if (peek) {
            if (!echo_peeked(l, c, (uint32_t)n))
                return false;
            if (c->flags & CONN_STARVED)
                return true;
            continue;
        }
        c->last_active = l->now_ms;
        stat_add(l, BUNRING_STAT_RECV_COMPLETIONS, 1);
        stat_add(l, BUNRING_STAT_BYTES_IN, (uint64_t)n);
        uint32_t taken;
        if (!ep_send(l, c, l->scratch, (uint32_t)n, want, &taken)) /* takes all: n <= want */
            return false;
    }
    return true;
}

static bool echo_readable(struct loop *l, struct conn *c)
{
    if (c->flags & CONN_WR_SHUT)
        return ep_discard_input(l, c); /* stopping, FIN sent: input is only drained */
    if (c->flags & (CONN_PAUSED | CONN_STARVED))
        return true;
    return echo_read(l, c);
}

/* After bytes left the queue: close, linger, or disarm EPOLLOUT as the state asks. */
static void echo_settle_epoll(struct loop *l, struct conn *c)
{
    if (c->q_head != NO_BUF) {
        ep_want_write(l, c, true);
        return;
    }
    if (c->flags & CONN_PEER_EOF) {
        ep_close(l, c, (c->flags & CONN_DRAINING) ? BUNRING_STAT_CONN_CLOSED_STOP : BUNRING_STAT_CONN_CLOSED_EOF);
        return;
    }
    if ((c->flags & CONN_DRAINING) && !(c->flags & CONN_WR_SHUT)) {
        c->flags |= CONN_WR_SHUT;
        shutdown(c->fd, SHUT_WR);
        if (!ep_discard_input(l, c))
            return;
    }
    ep_want_write(l, c, false);
}

/* Lets connections that stopped for want of buffers read again, oldest first, while buffers last. */
static void echo_wake_starved_epoll(struct loop *l)
{
    struct conn *c;
    while (l->free_bufs > 0 && (c = starved_pop(l)) != NULL)
        ep_service(l, c, true, false);
}

const struct app app_echo_epoll = {
    .name = "echo",
    .opened = echo_opened,
    .closing = echo_closing,
    .sent = echo_sent,
    .settle = echo_settle_epoll,
    .wake_starved = echo_wake_starved_epoll,
    .poll = echo_nothing,
    .publish = echo_nothing,
    .sleep_begin = echo_never_busy,
    .sleep_end = echo_nothing,
    .readable = echo_readable,
};

/* ---- io_uring ---- */

/* The received buffer joins the connection's queue and is sent as it is. */
static void echo_received(struct loop *l, struct conn *c, uint16_t bid, uint32_t len, bool more)
{
    queue_push(l, c, bid, len);
    if (c->flags & CONN_CLOSING) {
        ur_try_finish_close(l, c);
        return;
    }
    if (!(c->flags & CONN_SEND_INFLIGHT))
        ur_start_send(l, c);
    if (conn_over_limit(l, c))
        conn_pause(l, c);
    if (c->flags & CONN_PAUSED)
        ur_cancel_recv(l, c);
    else if (!more) {
        stat_add(l, BUNRING_STAT_RECV_REARMS, 1);
        ur_arm_recv(l, c);
    }
}

/* Stop, once this connection's echo is all handed to the kernel: FIN after it, then keep receiving
 * and discarding until the peer closes. The drain deadline bounds the wait. */
static void start_lingering(struct loop *l, struct conn *c)
{
    ur_shutdown_write(l, c);
    if (c->flags & CONN_PEER_EOF) {
        ur_close(l, c, BUNRING_STAT_CONN_CLOSED_STOP);
        return;
    }
    if (!(c->flags & (CONN_RECV_ARMED | CONN_STARVED)))
        ur_arm_recv(l, c);
}

/* After the queue shrank: close if the peer is done, linger if we are stopping, else maybe resume. */
static void echo_settle_uring(struct loop *l, struct conn *c)
{
    if (c->q_head == NO_BUF && !(c->flags & CONN_SEND_INFLIGHT)) {
        if ((c->flags & CONN_DRAINING) && !(c->flags & CONN_WR_SHUT)) {
            start_lingering(l, c);
            return;
        }
        if (c->flags & CONN_PEER_EOF) {
            ur_close(l, c, (c->flags & CONN_DRAINING) ? BUNRING_STAT_CONN_CLOSED_STOP : BUNRING_STAT_CONN_CLOSED_EOF);
            return;
        }
    }
    if ((c->flags & CONN_PAUSED) && conn_below_resume(l, c)) {
        conn_unpause(l, c);
        if (!(c->flags & (CONN_RECV_ARMED | CONN_PEER_EOF | CONN_CLOSING | CONN_STARVED)))
            ur_arm_recv(l, c);
    }
}

/* Re-arms receiving for connections that hit ENOBUFS, oldest first, at most one per buffer the ring
 * should hold (buffers not queued on a connection): waking every starved connection for a single
 * buffer would only make the rest fail again. */
static void echo_wake_starved_uring(struct loop *l)
{
    struct conn *c;
    uint32_t budget = l->bufs_queued < l->buf_count ? l->buf_count - l->bufs_queued : 0;
    while (budget > 0 && (c = starved_pop(l)) != NULL) {
        if (!(c->flags & (CONN_RECV_ARMED | CONN_PAUSED | CONN_PEER_EOF | CONN_CLOSING))) {
            stat_add(l, BUNRING_STAT_RECV_REARMS, 1);
            ur_arm_recv(l, c);
            budget--;
        }
    }
}

static bool echo_may_receive(const struct conn *c)
{
    (void)c;
    return true;
}

const struct app app_echo_uring = {
    .name = "echo",
    .opened = echo_opened,
    .closing = echo_closing,
    .sent = echo_sent,
    .settle = echo_settle_uring,
    .wake_starved = echo_wake_starved_uring,
    .poll = echo_nothing,
    .publish = echo_nothing,
    .sleep_begin = echo_never_busy,
    .sleep_end = echo_nothing,
    .received = echo_received,
    .peer_eof = echo_settle_uring,
    .may_receive = echo_may_receive,
    .plain_fds = false,
};
