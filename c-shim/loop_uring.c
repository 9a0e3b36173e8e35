/*
 * loop_uring.c — the io_uring echo loop. One multishot accept on the loop's listening socket; one
 * multishot recv per connection selecting buffers from a provided-buffer ring registered at start;
 * each received buffer is queued on its connection and echoed by a send, at most one send in flight
 * per connection so bytes can never be reordered; a short send re-sends the remainder; a buffer goes
 * back to the ring only when all its bytes were sent. Context of every operation is packed into
 * user_data (layout in bunring.h). Nothing here allocates after setup.
 *
 * In handler mode (l->js set) each received buffer is copied into the channel's rx area and given
 * back to the ring at once, and what JS writes is copied into the loop's send buffers and sent the
 * same way echoes are (section "Handler mode" below; the channel itself is js_channel.c).
 */
#include "internal.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SQ_ENTRIES 2048u
#define CQ_ENTRIES 16384u
#define CQE_BATCH 256u
#define BUF_GROUP 0
#define ACCEPT_RETRY_MS 50u
#define IDLE_SWEEP_MAX_MS 1000u
#define SEND_IOV_MAX 8u
#define FIXED_SPARES 64u

/* Timer kinds, carried in the slot field of a BUNRING_OP_TIMEOUT user_data. */
enum uring_timer { TIMER_ACCEPT_RETRY = 0, TIMER_DRAIN = 1, TIMER_IDLE = 2, TIMER_STALL = 3, TIMER_KINDS };

/* Handler mode, defined in its section below. */
static void js_received(struct loop *l, struct conn *c, uint16_t bid, uint32_t len, bool more);
static void js_after_send(struct loop *l, struct conn *c);
static bool js_may_receive(const struct conn *c);
static void js_wake_starved(struct loop *l);
static void js_run_commands(struct loop *l);
static uint16_t rx_backlog_pop(struct loop *l, struct conn *c);

static struct io_uring_sqe *get_sqe(struct loop *l)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);
    while (!sqe) {
        /* SQ full: hand what we have to the kernel and take a fresh entry. The kernel may refuse for
         * a moment (-EAGAIN, -ENOMEM; -EBUSY while completions overflow): count it and back off a
         * millisecond instead of spinning. */
        int rc = io_uring_submit(&l->ring);
        stat_add(l, BUNRING_STAT_WAIT_CALLS, 1);
        if (rc < 0) {
            stat_add(l, BUNRING_STAT_ERRORS, 1);
            struct timespec pause = {.tv_sec = 0, .tv_nsec = 1000000};
            nanosleep(&pause, NULL);
        }
        sqe = io_uring_get_sqe(&l->ring);
    }
    return sqe;
}

/* With a registered file table, connections are direct descriptors: the kernel skips the fd table
 * lookup on every recv and send, and they do not count against RLIMIT_NOFILE. */
static void use_conn_fd(const struct loop *l, struct io_uring_sqe *sqe)
{
    if (l->fixed_files)
        sqe->flags |= IOSQE_FIXED_FILE;
}

static void close_fd(struct loop *l, int fd)
{
    if (!l->fixed_files) {
        close(fd);
        return;
    }
    struct io_uring_sqe *sqe = get_sqe(l);
    io_uring_prep_close_direct(sqe, (unsigned)fd);
    io_uring_sqe_set_data64(sqe, bunring_ud_pack(BUNRING_OP_CLOSE, 0, 0, 0));
}

static void arm_accept(struct loop *l)
{
    struct io_uring_sqe *sqe = get_sqe(l);
    if (l->fixed_files)
        io_uring_prep_multishot_accept_direct(sqe, l->listen_fd, NULL, NULL, 0);
    else
        io_uring_prep_multishot_accept(sqe, l->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, bunring_ud_pack(BUNRING_OP_ACCEPT, 0, 0, 0));
    l->accept_armed = true;
}

static void arm_timer(struct loop *l, enum uring_timer kind, uint32_t ms)
{
    struct __kernel_timespec *ts = &l->timer_ts[kind]; /* read by the kernel at submit time */
    ts->tv_sec = ms / 1000u;
    ts->tv_nsec = (long long)(ms % 1000u) * 1000000LL;
    struct io_uring_sqe *sqe = get_sqe(l);
    io_uring_prep_timeout(sqe, ts, 0, 0);
    io_uring_sqe_set_data64(sqe, bunring_ud_pack(BUNRING_OP_TIMEOUT, 0, kind, 0));
    l->timers_armed++;
}

static void arm_wake_read(struct loop *l)
{
    struct io_uring_sqe *sqe = get_sqe(l);
    io_uring_prep_read(sqe, l->wake_fd, &l->wake_value, sizeof(l->wake_value), 0);
    io_uring_sqe_set_data64(sqe, bunring_ud_pack(BUNRING_OP_WAKE, 0, 0, 0));
}

static void arm_recv(struct loop *l, struct conn *c)
{
    struct io_uring_sqe *sqe = get_sqe(l);
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    use_conn_fd(l, sqe);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BUF_GROUP;
    io_uring_sqe_set_data64(sqe, bunring_ud_pack(BUNRING_OP_RECV, 0, conn_slot(l, c), c->gen));
    c->flags |= CONN_RECV_ARMED;
}

static void cancel_recv(struct loop *l, struct conn *c)
{
    if (!(c->flags & CONN_RECV_ARMED) || (c->flags & CONN_CANCELLING))
        return;
    struct io_uring_sqe *sqe = get_sqe(l);
    io_uring_prep_cancel64(sqe, bunring_ud_pack(BUNRING_OP_RECV, 0, conn_slot(l, c), c->gen), 0);
    io_uring_sqe_set_data64(sqe, bunring_ud_pack(BUNRING_OP_CANCEL, 0, conn_slot(l, c), c->gen));
    c->flags |= CONN_CANCELLING;
}

/* Cancels everything outstanding on the connection's fd (used when closing). */
static void cancel_all(struct loop *l, struct conn *c)
{
    struct io_uring_sqe *sqe = get_sqe(l);
    io_uring_prep_cancel_fd(sqe, c->fd, IORING_ASYNC_CANCEL_ALL | (l->fixed_files ? IORING_ASYNC_CANCEL_FD_FIXED : 0));
    io_uring_sqe_set_data64(sqe, bunring_ud_pack(BUNRING_OP_CANCEL, 0, conn_slot(l, c), c->gen));
    c->flags |= CONN_CANCELLING;
}

/* Puts a buffer back on the provided-buffer ring; made visible to the kernel at the batch's end. */
static void return_buffer(struct loop *l, uint16_t bid)
{
    if (bid >= l->buf_count) { /* handler mode: a send buffer goes back to its own free list */
        l->buf_next[bid] = l->tx_free_head;
        l->tx_free_head = bid;
        l->tx_free++;
        return;
    }
    io_uring_buf_ring_add(l->buf_ring, buf_addr(l, bid), l->buf_size, bid, io_uring_buf_ring_mask(l->buf_count),
                          (int)l->returned_bufs);
    l->returned_bufs++;
}

/* Echoes the head of the queue: one buffer with send, several (up to SEND_IOV_MAX) with sendmsg so a
 * backlog of small buffers leaves in one operation. The msghdr and iovecs live in per-slot storage,
 * untouched until the completion arrives. */
static void start_send(struct loop *l, struct conn *c)
{
    uint16_t bid = c->q_head;
    uint32_t slot = conn_slot(l, c);
    struct io_uring_sqe *sqe = get_sqe(l);
    if (l->buf_next[bid] == NO_BUF) {
        c->send_bytes = l->buf_len[bid] - c->head_off;
        io_uring_prep_send(sqe, c->fd, buf_addr(l, bid) + c->head_off, c->send_bytes, MSG_NOSIGNAL);
        use_conn_fd(l, sqe);
    } else {
        struct iovec *iov = &l->send_iov[(size_t)slot * SEND_IOV_MAX];
        uint32_t n = 0;
        c->send_bytes = 0;
        for (uint16_t b = bid; b != NO_BUF && n < SEND_IOV_MAX; b = l->buf_next[b], n++) {
            uint32_t off = n == 0 ? c->head_off : 0;
            iov[n].iov_base = buf_addr(l, b) + off;
            iov[n].iov_len = l->buf_len[b] - off;
            c->send_bytes += (uint32_t)iov[n].iov_len;
        }
        struct msghdr *msg = &l->send_msg[slot];
        memset(msg, 0, sizeof(*msg));
        msg->msg_iov = iov;
        msg->msg_iovlen = n;
        io_uring_prep_sendmsg(sqe, c->fd, msg, MSG_NOSIGNAL);
        use_conn_fd(l, sqe);
    }
    io_uring_sqe_set_data64(sqe, bunring_ud_pack(BUNRING_OP_SEND, bid, slot, c->gen));
    c->flags |= CONN_SEND_INFLIGHT;
}

/* Frees the slot once nothing is outstanding on it; until then the close waits for completions. */
static void try_finish_close(struct loop *l, struct conn *c)
{
    if (c->flags & (CONN_RECV_ARMED | CONN_SEND_INFLIGHT))
        return;
    while (c->q_head != NO_BUF)
        return_buffer(l, queue_pop(l, c));
    while (c->rx_head != NO_BUF)
        return_buffer(l, rx_backlog_pop(l, c));
    close_fd(l, conn_release(l, c));
}

static void close_conn(struct loop *l, struct conn *c, enum bunring_stat reason)
{
    conn_unpause(l, c); /* no longer a candidate for the stall policy */
    if (c->flags & CONN_CLOSING)
        return;
    if (l->js && !(c->flags & CONN_JS_UNOPENED)) { /* JS never saw an unopened one */
        if (js_event_room(l, true))
            js_event(l, BUNRING_JS_EV_CLOSE, c, 0, (uint32_t)reason);
        else
            stat_add(l, BUNRING_STAT_ERRORS, 1); /* JS stopped consuming with the reserve full */
    }
    c->flags |= CONN_CLOSING;
    c->close_reason = (uint8_t)reason;
    if (c->flags & (CONN_RECV_ARMED | CONN_SEND_INFLIGHT))
        cancel_all(l, c);
    try_finish_close(l, c);
}

/* Stop, once this connection's echo is all handed to the kernel: send FIN after it (shutdown of our
 * write side), then keep receiving and discarding until the peer closes, so closing never sends an
 * RST that would destroy echoed bytes still in flight. The drain deadline bounds the wait. */
static void start_lingering(struct loop *l, struct conn *c)
{
    c->flags |= CONN_WR_SHUT;
    if (l->fixed_files) {
        struct io_uring_sqe *sqe = get_sqe(l);
        io_uring_prep_shutdown(sqe, c->fd, SHUT_WR);
        use_conn_fd(l, sqe);
        io_uring_sqe_set_data64(sqe, bunring_ud_pack(BUNRING_OP_CLOSE, 0, 0, 0));
    } else {
        shutdown(c->fd, SHUT_WR);
    }
    if (c->flags & CONN_PEER_EOF) {
        close_conn(l, c, BUNRING_STAT_CONN_CLOSED_STOP);
        return;
    }
    if (!(c->flags & (CONN_RECV_ARMED | CONN_STARVED)))
        arm_recv(l, c);
}

/* After the queue shrank: close if the peer is done, linger if we are stopping, else maybe resume. */
static void after_queue_change(struct loop *l, struct conn *c)
{
    if (l->js) {
        js_after_send(l, c);
        return;
    }
    if (c->q_head == NO_BUF && !(c->flags & CONN_SEND_INFLIGHT)) {
        if ((c->flags & CONN_DRAINING) && !(c->flags & CONN_WR_SHUT)) {
            start_lingering(l, c);
            return;
        }
        if (c->flags & CONN_PEER_EOF) {
            close_conn(l, c, (c->flags & CONN_DRAINING) ? BUNRING_STAT_CONN_CLOSED_STOP : BUNRING_STAT_CONN_CLOSED_EOF);
            return;
        }
    }
    if ((c->flags & CONN_PAUSED) && conn_below_resume(l, c)) {
        conn_unpause(l, c);
        if (!(c->flags & (CONN_RECV_ARMED | CONN_PEER_EOF | CONN_CLOSING | CONN_STARVED)))
            arm_recv(l, c);
    }
}

static void on_accept(struct loop *l, struct io_uring_cqe *cqe)
{
    if (!(cqe->flags & IORING_CQE_F_MORE))
        l->accept_armed = false;
    if (cqe->res >= 0) {
        int fd = cqe->res;
        struct conn *c = l->stopping ? NULL : conn_open(l, fd);
        if (!c) {
            stat_add(l, l->stopping ? BUNRING_STAT_CONN_REFUSED_STOPPING : BUNRING_STAT_CONN_REJECTED, 1);
            close_fd(l, fd);
        } else if (!l->js || js_try_open(l, c)) { /* when JS is behind, OPEN and receiving wait for room */
            arm_recv(l, c); /* TCP_NODELAY is inherited from the listener (set before listen) */
        }
    } else if (cqe->res == -ENFILE && l->fixed_files) {
        /* Every table slot is taken, which only happens past maxConnections with more than
         * FIXED_SPARES rejections still closing: the kernel closed the connection, as we would have. */
        stat_add(l, BUNRING_STAT_CONN_REJECTED, 1);
    } else if (cqe->res != -ECANCELED) {
        stat_add(l, BUNRING_STAT_ACCEPT_ERRORS, 1);
        if (!l->accept_armed && !l->stopping) {
            /* EMFILE, ENFILE, ENOMEM...: retry later instead of spinning on the error. */
            arm_timer(l, TIMER_ACCEPT_RETRY, ACCEPT_RETRY_MS);
            return;
        }
    }
    if (!l->accept_armed && !l->stopping) {
        stat_add(l, BUNRING_STAT_ACCEPT_REARMS, 1);
        arm_accept(l);
    }
}

static void on_recv(struct loop *l, struct io_uring_cqe *cqe, uint64_t ud)
{
    struct conn *c = conn_lookup(l, bunring_ud_slot(ud), bunring_ud_gen(ud));
    bool has_buf = cqe->flags & IORING_CQE_F_BUFFER;
    uint16_t bid = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
    if (!c) {
        stat_add(l, BUNRING_STAT_STALE_COMPLETIONS, 1);
        if (has_buf)
            return_buffer(l, bid);
        return;
    }
    bool more = cqe->flags & IORING_CQE_F_MORE;
    if (!more)
        c->flags &= ~(uint32_t)(CONN_RECV_ARMED | CONN_CANCELLING);
    int res = cqe->res;
    if (res > 0 && (c->flags & CONN_DRAINING)) {
        /* Stopping: bytes that arrive now are not echoed; they are counted and dropped. */
        return_buffer(l, bid);
        stat_add(l, BUNRING_STAT_BYTES_DISCARDED, (uint64_t)res);
        if (c->flags & CONN_CLOSING)
            try_finish_close(l, c);
        else if (!more)
            arm_recv(l, c);
        return;
    }
    if (res > 0 && l->js) {
        c->last_active = l->now_ms;
        stat_add(l, BUNRING_STAT_RECV_COMPLETIONS, 1);
        stat_add(l, BUNRING_STAT_BYTES_IN, (uint64_t)res);
        js_received(l, c, bid, (uint32_t)res, more);
        return;
    }
    if (res > 0) {
        c->last_active = l->now_ms;
        stat_add(l, BUNRING_STAT_RECV_COMPLETIONS, 1);
        stat_add(l, BUNRING_STAT_BYTES_IN, (uint64_t)res);
        queue_push(l, c, bid, (uint32_t)res);
        if (c->flags & CONN_CLOSING) {
            try_finish_close(l, c);
            return;
        }
        if (!(c->flags & CONN_SEND_INFLIGHT))
            start_send(l, c);
        if (conn_over_limit(l, c))
            conn_pause(l, c);
        if (c->flags & CONN_PAUSED)
            cancel_recv(l, c);
        else if (!more) {
            stat_add(l, BUNRING_STAT_RECV_REARMS, 1);
            arm_recv(l, c);
        }
        return;
    }
    if (has_buf)
        return_buffer(l, bid); /* a zero-length or failed receive that still took a buffer */
    if (c->flags & CONN_CLOSING) {
        try_finish_close(l, c);
        return;
    }
    if (res == 0) {
        c->flags |= CONN_PEER_EOF;
        if (l->js && c->rx_head == NO_BUF && js_event_room(l, true))
            js_event(l, BUNRING_JS_EV_END, c, 0, 0); /* else after the backlog reaches JS */
        after_queue_change(l, c);
    } else if (res == -ENOBUFS) {
        /* The ring is empty: wait for buffers to come back, then receive again. */
        stat_add(l, BUNRING_STAT_ENOBUFS, 1);
        if (!(c->flags & CONN_PAUSED))
            starved_push(l, c);
    } else if (res == -ECANCELED) {
        /* We paused; if the pause already ended, receive again (else after_queue_change will). A
         * connection that is lingering on stop must see its peer's FIN, paused or not. */
        if (!(c->flags & CONN_RECV_ARMED) && (!(c->flags & CONN_PAUSED) || (c->flags & CONN_WR_SHUT)) &&
            !(l->js && !js_may_receive(c)))
            arm_recv(l, c);
    } else {
        close_conn(l, c, BUNRING_STAT_CONN_CLOSED_RESET);
    }
}

static void on_send(struct loop *l, struct io_uring_cqe *cqe, uint64_t ud)
{
    struct conn *c = conn_lookup(l, bunring_ud_slot(ud), bunring_ud_gen(ud));
    if (!c) {
        stat_add(l, BUNRING_STAT_STALE_COMPLETIONS, 1); /* cannot happen: slots wait for their sends */
        return;
    }
    c->flags &= ~(uint32_t)CONN_SEND_INFLIGHT;
    int res = cqe->res;
    if (c->flags & CONN_CLOSING) {
        try_finish_close(l, c);
        return;
    }
    if (res < 0) {
        close_conn(l, c, BUNRING_STAT_CONN_CLOSED_RESET);
        return;
    }
    stat_add(l, BUNRING_STAT_SEND_COMPLETIONS, 1);
    stat_add(l, BUNRING_STAT_BYTES_OUT, (uint64_t)res);
    c->last_active = l->now_ms;
    if (l->js)
        js_count_sent(l, c, (uint32_t)res);
    if ((uint32_t)res < c->send_bytes)
        stat_add(l, BUNRING_STAT_SHORT_SENDS, 1); /* the rest goes out with the next send */
    uint32_t left = (uint32_t)res;
    uint16_t bid;
    while ((bid = queue_consume(l, c, &left)) != NO_BUF)
        return_buffer(l, bid);
    if (c->q_head != NO_BUF)
        start_send(l, c);
    after_queue_change(l, c);
}

static void begin_stop(struct loop *l)
{
    l->stopping = true;
    if (l->accept_armed) {
        struct io_uring_sqe *sqe = get_sqe(l);
        io_uring_prep_cancel64(sqe, bunring_ud_pack(BUNRING_OP_ACCEPT, 0, 0, 0), 0);
        io_uring_sqe_set_data64(sqe, bunring_ud_pack(BUNRING_OP_CANCEL, 0, 0, 0));
    }
    /* Stop accepting: the request keeps its own reference until the cancel completes. */
    close(l->listen_fd);
    l->listen_fd = -1;
    arm_timer(l, TIMER_DRAIN, loop_drain_ms(l));
    for (uint32_t i = 0; i < l->fresh_slots; i++) {
        struct conn *c = &l->conns[i];
        if (!(c->flags & CONN_IN_USE) || (c->flags & CONN_CLOSING))
            continue;
        c->flags |= CONN_DRAINING;
        after_queue_change(l, c); /* lingers at once when nothing is left to echo */
    }
}

static void force_close_all(struct loop *l)
{
    l->force_close_done = true;
    for (uint32_t i = 0; i < l->fresh_slots; i++) {
        struct conn *c = &l->conns[i];
        if (c->flags & CONN_IN_USE)
            close_conn(l, c, BUNRING_STAT_CONN_CLOSED_STOP);
    }
}

static void idle_sweep(struct loop *l)
{
    for (uint32_t i = 0; i < l->fresh_slots; i++) {
        struct conn *c = &l->conns[i];
        if ((c->flags & CONN_IN_USE) && !(c->flags & CONN_CLOSING) && l->now_ms - c->last_active >= l->idle_ms)
            close_conn(l, c, BUNRING_STAT_CONN_CLOSED_IDLE);
    }
}

static uint32_t idle_period(const struct loop *l)
{
    uint32_t p = l->idle_ms / 4;
    if (p < 10)
        p = 10;
    return p > IDLE_SWEEP_MAX_MS ? IDLE_SWEEP_MAX_MS : p;
}

static void on_timeout(struct loop *l, uint64_t ud)
{
    l->timers_armed--;
    switch (bunring_ud_slot(ud)) {
    case TIMER_ACCEPT_RETRY:
        if (!l->stopping && !l->accept_armed) {
            stat_add(l, BUNRING_STAT_ACCEPT_REARMS, 1);
            arm_accept(l);
        }
        break;
    case TIMER_DRAIN:
        force_close_all(l);
        break;
    case TIMER_IDLE:
        if (!l->stopping) {
            idle_sweep(l);
            arm_timer(l, TIMER_IDLE, idle_period(l));
        }
        break;
    case TIMER_STALL:
        l->stall_timer_armed = false; /* the loop applies the stall policy after every batch */
        break;
    }
}

/* Re-arms receiving for connections that hit ENOBUFS, oldest first, at most one per buffer the ring
 * should hold (buffers not queued on a connection): waking every starved connection for a single
 * buffer would only make the rest fail again. */
static void wake_starved(struct loop *l, uint32_t budget)
{
    struct conn *c;
    if (l->js) {
        js_wake_starved(l);
        return;
    }
    while (budget > 0 && (c = starved_pop(l)) != NULL) {
        if (!(c->flags & (CONN_RECV_ARMED | CONN_PAUSED | CONN_PEER_EOF | CONN_CLOSING))) {
            stat_add(l, BUNRING_STAT_RECV_REARMS, 1);
            arm_recv(l, c);
            budget--;
        }
    }
}

/* Stalled peers (policy in conn.c): close the connections it names, and make sure the loop wakes
 * when the oldest pause's grace ends even if nothing else happens. */
static void apply_stall_policy(struct loop *l)
{
    pool_update_pressure(l);
    struct conn *c;
    bool closed = false;
    while ((c = pool_stall_victim(l)) != NULL) {
        close_conn(l, c, BUNRING_STAT_CONN_CLOSED_STALLED);
        closed = true;
    }
    if (closed && l->js)
        js_run_commands(l); /* a WRITE that waited for that connection's buffers may go now */
    uint32_t wait = pool_stall_wait_ms(l);
    if (wait == UINT32_MAX || l->stopping)
        return;
    if (wait == 0)
        wait = 1;
    uint32_t due = l->now_ms + wait;
    if (!l->stall_timer_armed || (int32_t)(due - l->stall_timer_due) < 0) {
        l->stall_timer_armed = true;
        l->stall_timer_due = due;
        arm_timer(l, TIMER_STALL, wait);
    }
}

static void handle_cqe(struct loop *l, struct io_uring_cqe *cqe)
{
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    switch (bunring_ud_op(ud)) {
    case BUNRING_OP_ACCEPT:
        on_accept(l, cqe);
        break;
    case BUNRING_OP_RECV:
        on_recv(l, cqe, ud);
        break;
    case BUNRING_OP_SEND:
        on_send(l, cqe, ud);
        break;
    case BUNRING_OP_WAKE:
        /* stop(), a second stop() with a shorter drain, or JS's commands: keep listening. */
        arm_wake_read(l);
        if (!loop_stop_requested(l))
            stat_add(l, BUNRING_STAT_JS_WAKEUPS, 1); /* the loop takes commands after every batch */
        else if (!l->stopping)
            begin_stop(l);
        else if (loop_drain_ms(l) == 0)
            force_close_all(l);
        else
            arm_timer(l, TIMER_DRAIN, loop_drain_ms(l)); /* the earlier of the two drain timers closes */
        break;
    case BUNRING_OP_TIMEOUT:
        on_timeout(l, ud);
        break;
    default: /* cancel results carry nothing we need */
        break;
    }
}

/* ---- Handler mode ---- */

/* Received buffers that could not reach JS yet wait on the connection, linked through buf_next. */
static void rx_backlog_push(struct loop *l, struct conn *c, uint16_t bid, uint32_t len)
{
    l->buf_len[bid] = len;
    l->buf_next[bid] = NO_BUF;
    if (c->rx_tail == NO_BUF)
        c->rx_head = bid;
    else
        l->buf_next[c->rx_tail] = bid;
    c->rx_tail = bid;
}

static uint16_t rx_backlog_pop(struct loop *l, struct conn *c)
{
    uint16_t bid = c->rx_head;
    c->rx_head = l->buf_next[bid];
    if (c->rx_head == NO_BUF)
        c->rx_tail = NO_BUF;
    c->rx_off = 0;
    return bid;
}

/* Whether a receive may be armed: not paused by JS, not waiting for room, peer not done. */
static bool js_may_receive(const struct conn *c)
{
    return !(c->flags & (CONN_JS_PAUSED | CONN_PEER_EOF | CONN_CLOSING | CONN_PAUSED)) && c->rx_head == NO_BUF;
}

/* Copies len bytes from off into rx as DATA records (at most BUNRING_JS_MAX_RECORD_BYTES each) while
 * there is room; returns how many went. */
static uint32_t js_deliver(struct loop *l, struct conn *c, const uint8_t *data, uint32_t len)
{
    uint32_t done = 0;
    while (done < len) {
        uint32_t at = 0;
        uint32_t room = js_event_room(l, false) ? js_rx_room(l, &at) : 0;
        if (room == 0)
            break;
        uint32_t k = len - done < room ? len - done : room;
        memcpy(l->js->rx + (at & (BUNRING_JS_BYTES - 1u)), data + done, k);
        js_event(l, BUNRING_JS_EV_DATA, c, at, k);
        done += k;
    }
    return done;
}

/* Hands the backlog to JS while there is room; true once it is empty (END follows a peer's EOF). */
static bool js_flush_backlog(struct loop *l, struct conn *c)
{
    while (c->rx_head != NO_BUF) {
        uint16_t bid = c->rx_head;
        uint32_t left = l->buf_len[bid] - c->rx_off;
        uint32_t went = js_deliver(l, c, buf_addr(l, bid) + c->rx_off, left);
        if (went < left) {
            c->rx_off += went;
            return false;
        }
        return_buffer(l, rx_backlog_pop(l, c));
    }
    if ((c->flags & CONN_PEER_EOF) && js_event_room(l, true))
        js_event(l, BUNRING_JS_EV_END, c, 0, 0);
    return true;
}

/* A receive completed: straight to JS when nothing waits before it and there is room, else behind
 * the backlog, and the connection stops receiving until JS has consumed. */
static void js_received(struct loop *l, struct conn *c, uint16_t bid, uint32_t len, bool more)
{
    if (c->flags & CONN_CLOSING) {
        return_buffer(l, bid);
        try_finish_close(l, c);
        return;
    }
    uint32_t went = c->rx_head == NO_BUF ? js_deliver(l, c, buf_addr(l, bid), len) : 0;
    if (went == len) {
        return_buffer(l, bid);
        if (!more && js_may_receive(c)) {
            stat_add(l, BUNRING_STAT_RECV_REARMS, 1);
            arm_recv(l, c);
        }
        return;
    }
    bool was_empty = c->rx_head == NO_BUF;
    rx_backlog_push(l, c, bid, len);
    if (was_empty)
        c->rx_off = went;
    cancel_recv(l, c);
    starved_push(l, c);
}

/* Connections waiting for room in the channel (or for buffers): their backlog first, then receive. */
static void js_wake_starved(struct loop *l)
{
    struct conn *c;
    uint32_t at;
    while (js_event_room(l, false) && js_rx_room(l, &at) > 0 && (c = starved_pop(l)) != NULL) {
        if (c->flags & CONN_CLOSING)
            continue;
        if ((c->flags & CONN_JS_UNOPENED) && !js_try_open(l, c))
            return; /* back on the list: no room for OPEN yet */
        if (!js_flush_backlog(l, c)) {
            starved_push(l, c);
            return;
        }
        js_after_send(l, c); /* may close (EOF seen, our side done) */
        if (conn_lookup(l, conn_slot(l, c), c->gen) && !(c->flags & CONN_RECV_ARMED) && js_may_receive(c))
            arm_recv(l, c);
    }
}

/* After the send queue changed: DRAIN when JS waits for room, FIN when JS ended (or the server stops)
 * and everything is out, close once both sides are done, resume receiving below the limit. */
static void js_after_send(struct loop *l, struct conn *c)
{
    if (c->flags & CONN_CLOSING)
        return;
    if (c->q_head == NO_BUF && !(c->flags & CONN_SEND_INFLIGHT)) {
        if ((c->flags & CONN_JS_WANT_DRAIN) && js_event_room(l, true)) {
            c->flags &= ~(uint32_t)CONN_JS_WANT_DRAIN;
            js_event(l, BUNRING_JS_EV_DRAIN, c, 0, 0);
        }
        if ((c->flags & (CONN_JS_END | CONN_DRAINING)) && !(c->flags & CONN_WR_SHUT)) {
            c->flags |= CONN_WR_SHUT;
            shutdown(c->fd, SHUT_WR);
            if ((c->flags & CONN_DRAINING) && !(c->flags & (CONN_RECV_ARMED | CONN_PEER_EOF)))
                arm_recv(l, c); /* stopping: read (and drop) until the peer's EOF */
        }
        if ((c->flags & CONN_PEER_EOF) && (c->flags & CONN_WR_SHUT) && c->rx_head == NO_BUF) {
            close_conn(l, c, (c->flags & CONN_DRAINING) ? BUNRING_STAT_CONN_CLOSED_STOP : BUNRING_STAT_CONN_CLOSED_EOF);
            return;
        }
    }
    if ((c->flags & CONN_PAUSED) && conn_below_resume(l, c)) {
        conn_unpause(l, c);
        if (!(c->flags & (CONN_RECV_ARMED | CONN_STARVED)) && js_may_receive(c))
            arm_recv(l, c);
    }
}

/* Room for bytes in the send buffers: the tail buffer's free space plus the free ones. */
static uint32_t tx_room(const struct loop *l, const struct conn *c)
{
    uint64_t room = (uint64_t)l->tx_free * l->buf_size;
    if (c->q_tail != NO_BUF)
        room += l->buf_size - l->buf_len[c->q_tail];
    return room > UINT32_MAX ? UINT32_MAX : (uint32_t)room;
}

/* Appends bytes to the send queue, filling the tail buffer first (appending to a buffer whose send is
 * in flight is safe: that send carries the old length, queue_consume the new). */
static void tx_enqueue(struct loop *l, struct conn *c, const uint8_t *data, uint32_t n)
{
    if (c->q_tail != NO_BUF) {
        uint32_t used = l->buf_len[c->q_tail];
        uint32_t k = l->buf_size - used < n ? l->buf_size - used : n;
        memcpy(buf_addr(l, c->q_tail) + used, data, k);
        l->buf_len[c->q_tail] += k;
        c->pending += k;
        data += k;
        n -= k;
    }
    while (n > 0) {
        uint16_t bid = l->tx_free_head;
        l->tx_free_head = l->buf_next[bid];
        l->tx_free--;
        uint32_t k = n < l->buf_size ? n : l->buf_size;
        memcpy(buf_addr(l, bid), data, k);
        queue_push(l, c, bid, k);
        data += k;
        n -= k;
    }
}

/* A WRITE: copied into send buffers and sent like an echo. false: the buffers could not take it
 * all; what was taken is cut from the record, which waits at the ring's head for sends to finish. */
static bool js_write(struct loop *l, struct conn *c, struct bunring_js_record *r)
{
    uint32_t room = tx_room(l, c);
    uint32_t k = r->len < room ? r->len : room;
    if (k > 0)
        tx_enqueue(l, c, js_tx_bytes(l, r->offset), k);
    if (c->q_head != NO_BUF && !(c->flags & CONN_SEND_INFLIGHT))
        start_send(l, c);
    if (conn_over_limit(l, c) && !(c->flags & CONN_PAUSED)) {
        conn_pause(l, c); /* the peer reads slower than JS writes: stop reading it */
        cancel_recv(l, c);
    }
    if (k == r->len)
        return true;
    r->offset += k;
    r->len -= k;
    return false;
}

/* Takes JS's commands in order; one for a connection that is gone or closing is dropped. Stops early
 * only when a WRITE cannot be taken yet. */
static void js_run_commands(struct loop *l)
{
    struct bunring_js_record *r;
    while ((r = js_command_peek(l)) != NULL) {
        uint32_t type = r->type_gen & 0xffu;
        struct conn *c = conn_lookup(l, r->slot, r->type_gen >> 8);
        if (c && ((c->flags & CONN_CLOSING) || (type == BUNRING_JS_CMD_WRITE && (c->flags & CONN_WR_SHUT))))
            c = NULL;
        if (c) {
            switch (type) {
            case BUNRING_JS_CMD_WRITE:
                if (!js_write(l, c, r)) {
                    js_command_blocked(l);
                    if (!(c->flags & CONN_PAUSED))
                        conn_pause(l, c); /* its peer must read first: a candidate for the stall policy */
                    return;
                }
                break;
            case BUNRING_JS_CMD_END:
                c->flags |= CONN_JS_END;
                js_after_send(l, c);
                break;
            case BUNRING_JS_CMD_TERMINATE: {
                struct linger hard = {.l_onoff = 1, .l_linger = 0}; /* close sends RST */
                setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard));
                close_conn(l, c, BUNRING_STAT_CONN_CLOSED_RESET);
                break;
            }
            case BUNRING_JS_CMD_WANT_DRAIN:
                c->flags |= CONN_JS_WANT_DRAIN;
                js_after_send(l, c);
                break;
            case BUNRING_JS_CMD_PAUSE:
                c->flags |= CONN_JS_PAUSED;
                cancel_recv(l, c);
                break;
            case BUNRING_JS_CMD_RESUME:
                c->flags &= ~(uint32_t)CONN_JS_PAUSED;
                if (!(c->flags & (CONN_RECV_ARMED | CONN_STARVED)) && js_may_receive(c))
                    arm_recv(l, c);
                break;
            default:
                stat_add(l, BUNRING_STAT_ERRORS, 1);
                break;
            }
        }
        js_command_done(l, r);
    }
}

/* A sparse table of direct descriptors, one per connection slot plus spares so that a connection
 * over maxConnections can still be accepted and closed at once (counted as rejected).
 *
 * The kernel caps the table at RLIMIT_NOFILE, and a full table is worse than running out of ordinary
 * fds: multishot accept takes the connection off the listen backlog first and only then finds no
 * free slot, so the client is reset unserved. With ordinary fds EMFILE leaves it waiting in the
 * backlog until an fd frees up. So the table is used only when it can hold every connection this
 * loop admits plus the spares; under a lower RLIMIT_NOFILE (or if registering fails) the loop uses
 * ordinary fds. */
static void register_file_table(struct loop *l)
{
    /* Handler mode reads the peer's address (getpeername) and sets SO_LINGER for terminate(): it
     * needs ordinary fds. */
    if (l->srv->cfg.flags & (BUNRING_FLAG_NO_FIXED_FILES | BUNRING_FLAG_HANDLER))
        return;
    struct rlimit rl;
    uint32_t want = l->max_conns + FIXED_SPARES;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || (rl.rlim_cur != RLIM_INFINITY && want > rl.rlim_cur))
        return;
    if (io_uring_register_files_sparse(&l->ring, want) != 0)
        return;
    l->fixed_files = true;
    l->features |= BUNRING_FEAT_FIXED_FILES;
}

int uring_setup(struct loop *l, struct bunring_error *err)
{
    const struct bunring_config *cfg = &l->srv->cfg;
    struct io_uring_params p;
    unsigned base = IORING_SETUP_CQSIZE;
    unsigned tries[3] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
        IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
        0,
    };
    uint32_t try_feats[3] = {
        BUNRING_FEAT_SINGLE_ISSUER | BUNRING_FEAT_DEFER_TASKRUN,
        BUNRING_FEAT_COOP_TASKRUN,
        0,
    };
    int rc = -EINVAL;
    for (int i = (cfg->flags & BUNRING_FLAG_NO_DEFER) ? 1 : 0; i < 3 && rc != 0; i++) {
        memset(&p, 0, sizeof(p));
        p.flags = base | tries[i];
        p.cq_entries = CQ_ENTRIES;
        if (cfg->flags & BUNRING_FLAG_SQPOLL) {
            /* SQPOLL cannot be combined with DEFER_TASKRUN. */
            if (tries[i] & IORING_SETUP_DEFER_TASKRUN)
                continue;
            p.flags |= IORING_SETUP_SQPOLL;
            p.sq_thread_idle = 1000;
        }
        rc = io_uring_queue_init_params(SQ_ENTRIES, &l->ring, &p);
        if (rc == 0)
            l->features = try_feats[i] | ((cfg->flags & BUNRING_FLAG_SQPOLL) ? BUNRING_FEAT_SQPOLL : 0);
    }
    if (rc != 0) {
        set_error(err, rc, "io_uring_queue_init failed: %s; use backend 'epoll'", strerror(-rc));
        return rc;
    }
    l->ring_ready = true;
    if (io_uring_register_ring_fd(&l->ring) == 1)
        l->features |= BUNRING_FEAT_REGISTERED_RING_FD;
    register_file_table(l);

    l->send_iov = loop_alloc(l, sizeof(struct iovec) * SEND_IOV_MAX * l->max_conns);
    l->send_msg = loop_alloc(l, sizeof(struct msghdr) * l->max_conns);
    if (!l->send_iov || !l->send_msg) {
        set_error(err, -ENOMEM, "out of memory for send descriptors of %u connections", l->max_conns);
        return -ENOMEM;
    }
    l->buf_ring_bytes = sizeof(struct io_uring_buf) * l->buf_count;
    l->buf_ring = loop_alloc_aligned(l, 4096, l->buf_ring_bytes);
    if (!l->buf_ring) {
        set_error(err, -ENOMEM, "out of memory for the provided-buffer ring");
        return -ENOMEM;
    }
    memset(l->buf_ring, 0, l->buf_ring_bytes);
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uint64_t)(uintptr_t)l->buf_ring;
    reg.ring_entries = l->buf_count;
    reg.bgid = BUF_GROUP;
    rc = io_uring_register_buf_ring(&l->ring, &reg, 0);
    if (rc != 0) {
        set_error(err, rc, "registering the provided-buffer ring failed: %s (needs Linux 5.19+); use backend 'epoll'",
                  strerror(-rc));
        return rc;
    }
    io_uring_buf_ring_init(l->buf_ring);
    for (uint32_t i = 0; i < l->buf_count; i++)
        return_buffer(l, (uint16_t)i);
    io_uring_buf_ring_advance(l->buf_ring, (int)l->returned_bufs);
    l->returned_bufs = 0;
    l->features |= BUNRING_FEAT_MULTISHOT_ACCEPT | BUNRING_FEAT_MULTISHOT_RECV | BUNRING_FEAT_BUF_RING;

    arm_wake_read(l);
    arm_accept(l);
    if (l->idle_ms)
        arm_timer(l, TIMER_IDLE, idle_period(l));
    return 0;
}

void uring_run(struct loop *l)
{
    struct io_uring_cqe *cqe;
    l->now_ms = loop_clock_ms();
    for (;;) {
        /* Done when every connection is closed and the accept request has completed: until then it
         * holds the listening socket open (and its port bound) even though our fd is closed. */
        if (l->js)
            js_publish(l);
        if (l->stopping && l->open_conns == 0 && !l->accept_armed)
            break;
        if (l->js) {
            /* Say we sleep, then look once more: a command published before JS saw the flag. */
            js_sleep_begin(l);
            if (js_commands_waiting(l) || js_room_waiting(l))
                io_uring_submit(&l->ring);
            else
                io_uring_submit_and_wait(&l->ring, 1);
            js_sleep_end(l);
        } else {
            io_uring_submit_and_wait(&l->ring, 1);
        }
        stat_add(l, BUNRING_STAT_WAIT_CALLS, 1);
        stat_add(l, BUNRING_STAT_LOOP_ITERATIONS, 1);
        l->now_ms = loop_clock_ms();
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&l->ring, head, cqe)
        {
            handle_cqe(l, cqe);
            if (++seen == CQE_BATCH)
                break;
        }
        io_uring_cq_advance(&l->ring, seen);
        if (l->js)
            js_run_commands(l);
        if (l->returned_bufs) {
            io_uring_buf_ring_advance(l->buf_ring, (int)l->returned_bufs);
            l->returned_bufs = 0;
        }
        /* Checked every iteration, not only when buffers came back: an ENOBUFS can arrive after the
         * last buffer was already returned, and nothing else would wake that connection. */
        if (l->starved_head != NO_SLOT && (l->js || l->bufs_queued < l->buf_count))
            wake_starved(l, l->buf_count - l->bufs_queued);
        apply_stall_policy(l);
    }
}

void uring_teardown(struct loop *l)
{
    free(l->send_iov);
    free(l->send_msg);
    l->send_iov = NULL;
    l->send_msg = NULL;
    if (!l->ring_ready)
        return;
    /* Every connection is closed and its operations completed; what may remain (the cancelled accept,
     * a timer) touches no memory of ours, and exiting the ring cancels it. */
    io_uring_queue_exit(&l->ring);
    l->ring_ready = false;
    free(l->buf_ring);
    l->buf_ring = NULL;
}
