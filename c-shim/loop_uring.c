/*
 * loop_uring.c — the io_uring loop: the I/O half of the seam in app.h. One multishot accept on the
 * loop's listening socket; one multishot recv per connection selecting buffers from a provided-buffer
 * ring registered at start, each filled buffer handed to the application (echo: app_echo.c, handler
 * mode: app_js.c); a connection's queue of buffers is sent with at most one send in flight per
 * connection so bytes can never be reordered; a short send re-sends the remainder; a buffer goes back
 * to the ring only when all its bytes were sent. Context of every operation is packed into user_data
 * (layout in bunring.h). Here too: the close path, stop, timers (accept retry, drain, idle sweep,
 * stall grace) and the pool policy for peers that stop reading (conn.c). Nothing here allocates
 * after setup.
 */
#include "app.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SQ_ENTRIES 2048u
#define CQ_ENTRIES 16384u
#define CQE_BATCH 256u
/* Handler mode's receive buffers on the provided-buffer ring, at most (uring_setup). */
#define HANDLER_RECV_BUFS 1024u
#define BUF_GROUP 0
#define ACCEPT_RETRY_MS 50u
#define IDLE_SWEEP_MAX_MS 1000u
#define SEND_IOV_MAX 8u
#define FIXED_SPARES 64u

/* Timer kinds, carried in the slot field of a BUNRING_OP_TIMEOUT user_data. */
enum uring_timer { TIMER_ACCEPT_RETRY = 0, TIMER_DRAIN = 1, TIMER_IDLE = 2, TIMER_STALL = 3, TIMER_LINGER = 4, TIMER_KINDS };
_Static_assert(TIMER_KINDS == sizeof(((struct loop *)0)->timer_ts) / sizeof(struct __kernel_timespec), "a timespec per timer kind");

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

void ur_arm_recv(struct loop *l, struct conn *c)
{
    struct io_uring_sqe *sqe = get_sqe(l);
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    use_conn_fd(l, sqe);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BUF_GROUP;
    io_uring_sqe_set_data64(sqe, bunring_ud_pack(BUNRING_OP_RECV, 0, conn_slot(l, c), c->gen));
    c->flags |= CONN_RECV_ARMED;
}

void ur_cancel_recv(struct loop *l, struct conn *c)
{
    if (!(c->flags & CONN_RECV_ARMED) || (c->flags & CONN_CANCELLING))
        return;
    struct io_uring_sqe *sqe = get_sqe(l);
    io_uring_prep_cancel64(sqe, bunring_ud_pack(BUNRING_OP_RECV, 0, conn_slot(l, c), c->gen), 0);
    io_uring_sqe_set_data64(sqe, bunring_ud_pack(BUNRING_OP_CANCEL, 0, conn_slot(l, c), c->gen));
    c->flags |= CONN_CANCELLING;
}

void ur_watch_errors(struct loop *l, struct conn *c)
{
    if (c->flags & (CONN_POLL_ARMED | CONN_CLOSING))
        return;
    struct io_uring_sqe *sqe = get_sqe(l);
    io_uring_prep_poll_add(sqe, c->fd, POLLERR); /* the kernel adds POLLHUP */
    use_conn_fd(l, sqe);
    io_uring_sqe_set_data64(sqe, bunring_ud_pack(BUNRING_OP_POLL, 0, conn_slot(l, c), c->gen));
    c->flags |= CONN_POLL_ARMED;
}

void ur_unwatch_errors(struct loop *l, struct conn *c)
{
    if (!(c->flags & CONN_POLL_ARMED) || (c->flags & CONN_POLL_CANCELLING))
        return;
    struct io_uring_sqe *sqe = get_sqe(l);
    io_uring_prep_poll_remove(sqe, bunring_ud_pack(BUNRING_OP_POLL, 0, conn_slot(l, c), c->gen));
    io_uring_sqe_set_data64(sqe, bunring_ud_pack(BUNRING_OP_CANCEL, 0, conn_slot(l, c), c->gen));
    c->flags |= CONN_POLL_CANCELLING;
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
void ur_return_buffer(struct loop *l, uint16_t bid)
{
    if (bid >= l->buf_count) { /* handler mode: a send buffer goes back to the loop's free list */
        buf_give(l, bid);
        return;
    }
    io_uring_buf_ring_add(l->buf_ring, buf_addr(l, bid), l->buf_size, bid, io_uring_buf_ring_mask(l->ring_bufs),
                          (int)l->returned_bufs);
    l->returned_bufs++;
}

/* Echoes the head of the queue: one buffer with send, several (up to SEND_IOV_MAX) with sendmsg so a
 * backlog of small buffers leaves in one operation. The msghdr and iovecs live in per-slot storage,
 * untouched until the completion arrives. */
void ur_start_send(struct loop *l, struct conn *c)
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
void ur_try_finish_close(struct loop *l, struct conn *c)
{
    if (c->flags & (CONN_RECV_ARMED | CONN_SEND_INFLIGHT | CONN_POLL_ARMED))
        return;
    while (c->q_head != NO_BUF)
        ur_return_buffer(l, queue_pop(l, c));
    while (c->rx_head != NO_BUF)
        ur_return_buffer(l, rx_backlog_pop(l, c));
    close_fd(l, conn_release(l, c));
}

void ur_close(struct loop *l, struct conn *c, enum bunring_stat reason)
{
    conn_unpause(l, c); /* no longer a candidate for the stall policy */
    if (c->flags & CONN_CLOSING)
        return;
    l->app->closing(l, c, reason);
    c->flags |= CONN_CLOSING;
    c->close_reason = (uint8_t)reason;
    if (c->flags & (CONN_RECV_ARMED | CONN_SEND_INFLIGHT | CONN_POLL_ARMED))
        cancel_all(l, c);
    ur_try_finish_close(l, c);
}

void ur_shutdown_write(struct loop *l, struct conn *c)
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
}

static void on_accept(struct loop *l, struct io_uring_cqe *cqe)
{
    if (!(cqe->flags & IORING_CQE_F_MORE))
        l->accept_armed = false;
    if (cqe->res >= 0) {
        int fd = cqe->res;
        struct conn *c = l->listener_closed ? NULL : conn_open(l, fd);
        if (!c) {
            stat_add(l, l->listener_closed ? BUNRING_STAT_CONN_REFUSED_STOPPING : BUNRING_STAT_CONN_REJECTED, 1);
            close_fd(l, fd);
        } else if (l->app->opened(l, c)) { /* false (JS is behind): receiving waits for room */
            ur_arm_recv(l, c); /* TCP_NODELAY is inherited from the listener (set before listen) */
        }
    } else if (cqe->res == -ENFILE && l->fixed_files) {
        /* Every table slot is taken, which only happens past maxConnections with more than
         * FIXED_SPARES rejections still closing: the kernel closed the connection, as we would have. */
        stat_add(l, BUNRING_STAT_CONN_REJECTED, 1);
    } else if (cqe->res != -ECANCELED) {
        stat_add(l, BUNRING_STAT_ACCEPT_ERRORS, 1);
        if (!l->accept_armed && !l->listener_closed) {
            /* EMFILE, ENFILE, ENOMEM...: retry later instead of spinning on the error. */
            arm_timer(l, TIMER_ACCEPT_RETRY, ACCEPT_RETRY_MS);
            return;
        }
    }
    if (!l->accept_armed && !l->listener_closed) {
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
            ur_return_buffer(l, bid);
        return;
    }
    bool more = cqe->flags & IORING_CQE_F_MORE;
    if (!more)
        c->flags &= ~(uint32_t)(CONN_RECV_ARMED | CONN_CANCELLING);
    int res = cqe->res;
    if (res > 0 && (c->flags & CONN_DRAINING)) {
        /* Stopping: bytes that arrive now are not echoed; they are counted and dropped. */
        ur_return_buffer(l, bid);
        stat_add(l, BUNRING_STAT_BYTES_DISCARDED, (uint64_t)res);
        if (c->flags & CONN_CLOSING)
            ur_try_finish_close(l, c);
        else if (!more)
            ur_arm_recv(l, c);
        return;
    }
    if (res > 0) {
        c->last_active = l->now_ms;
        stat_add(l, BUNRING_STAT_RECV_COMPLETIONS, 1);
        stat_add(l, BUNRING_STAT_BYTES_IN, (uint64_t)res);
        l->app->received(l, c, bid, (uint32_t)res, more);
        return;
    }
    if (has_buf)
        ur_return_buffer(l, bid); /* a zero-length or failed receive that still took a buffer */
    if (c->flags & CONN_CLOSING) {
        ur_try_finish_close(l, c);
        return;
    }
    if (res == 0) {
        c->flags |= CONN_PEER_EOF;
        l->app->peer_eof(l, c);
    } else if (res == -ENOBUFS) {
        /* The ring is empty: wait for buffers to come back, then receive again. */
        stat_add(l, BUNRING_STAT_ENOBUFS, 1);
        if (!(c->flags & CONN_PAUSED))
            starved_push(l, c);
    } else if (res == -ECANCELED) {
        /* We paused; if the pause already ended, receive again (else settling the queue will). A
         * connection that is lingering on stop must see its peer's FIN, paused or not. */
        if (!(c->flags & CONN_RECV_ARMED) && (!(c->flags & CONN_PAUSED) || (c->flags & CONN_WR_SHUT)) &&
            l->app->may_receive(c))
            ur_arm_recv(l, c);
    } else {
        ur_close(l, c, BUNRING_STAT_CONN_CLOSED_RESET);
    }
}

/* The error watch of a paused connection: a reset closes it; a removal (resumed) or a hangup without
 * an error (both sides shut down: what is unread waits for the resume) ends the watch. */
static void on_poll(struct loop *l, struct io_uring_cqe *cqe, uint64_t ud)
{
    struct conn *c = conn_lookup(l, bunring_ud_slot(ud), bunring_ud_gen(ud));
    if (!c) {
        stat_add(l, BUNRING_STAT_STALE_COMPLETIONS, 1);
        return;
    }
    c->flags &= ~(uint32_t)(CONN_POLL_ARMED | CONN_POLL_CANCELLING);
    if (c->flags & CONN_CLOSING)
        ur_try_finish_close(l, c);
    else if (cqe->res > 0 && (cqe->res & POLLERR) && (c->flags & CONN_JS_PAUSED))
        ur_close(l, c, BUNRING_STAT_CONN_CLOSED_RESET);
    else if (cqe->res == -ECANCELED && (c->flags & CONN_JS_PAUSED))
        ur_watch_errors(l, c); /* removed on a resume, and paused again since */
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
        ur_try_finish_close(l, c);
        return;
    }
    if (res < 0) {
        ur_close(l, c, BUNRING_STAT_CONN_CLOSED_RESET);
        return;
    }
    stat_add(l, BUNRING_STAT_SEND_COMPLETIONS, 1);
    stat_add(l, BUNRING_STAT_BYTES_OUT, (uint64_t)res);
    c->last_active = l->now_ms;
    l->app->sent(l, c, (uint32_t)res);
    if ((uint32_t)res < c->send_bytes)
        stat_add(l, BUNRING_STAT_SHORT_SENDS, 1); /* the rest goes out with the next send */
    uint32_t left = (uint32_t)res;
    uint16_t bid;
    while ((bid = queue_consume(l, c, &left)) != NO_BUF)
        ur_return_buffer(l, bid);
    if (c->q_head != NO_BUF)
        ur_start_send(l, c);
    l->app->settle(l, c);
}

/* Stop accepting: the request keeps its own reference until the cancel completes. */
static void close_listener(struct loop *l)
{
    if (l->listener_closed)
        return;
    if (l->accept_armed) {
        struct io_uring_sqe *sqe = get_sqe(l);
        io_uring_prep_cancel64(sqe, bunring_ud_pack(BUNRING_OP_ACCEPT, 0, 0, 0), 0);
        io_uring_sqe_set_data64(sqe, bunring_ud_pack(BUNRING_OP_CANCEL, 0, 0, 0));
    }
    close(l->listen_fd);
    l->listen_fd = -1;
    l->listener_closed = true;
}

static void begin_stop(struct loop *l)
{
    l->stopping = true;
    close_listener(l);
    arm_timer(l, TIMER_DRAIN, loop_drain_ms(l));
    for (uint32_t i = 0; i < l->fresh_slots; i++) {
        struct conn *c = &l->conns[i];
        if (!(c->flags & CONN_IN_USE) || (c->flags & CONN_CLOSING))
            continue;
        c->flags |= CONN_DRAINING;
        l->app->settle(l, c); /* FIN once what is queued is out, then linger */
    }
}

static void force_close_all(struct loop *l)
{
    l->force_close_done = true;
    for (uint32_t i = 0; i < l->fresh_slots; i++) {
        struct conn *c = &l->conns[i];
        if (c->flags & CONN_IN_USE)
            ur_close(l, c, BUNRING_STAT_CONN_CLOSED_STOP);
    }
}

static void idle_sweep(struct loop *l)
{
    for (uint32_t i = 0; i < l->fresh_slots; i++) {
        struct conn *c = &l->conns[i];
        if ((c->flags & CONN_IN_USE) && !(c->flags & CONN_CLOSING) && conn_idle_for(l, c) >= l->idle_ms)
            ur_close(l, c, BUNRING_STAT_CONN_CLOSED_IDLE);
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
        if (!l->listener_closed && !l->accept_armed) {
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
    case TIMER_LINGER:
        l->linger_timer_armed = false; /* re-armed after the batch while some connection lingers */
        for (uint32_t i = 0; i < l->fresh_slots && l->js_lingering > 0 && !l->stopping; i++) {
            struct conn *c = &l->conns[i];
            if ((c->flags & CONN_IN_USE) && js_linger_expired(l, c))
                ur_close(l, c, BUNRING_STAT_CONN_CLOSED_IDLE);
        }
        break;
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
        ur_close(l, c, BUNRING_STAT_CONN_CLOSED_STALLED);
        closed = true;
    }
    if (closed)
        l->app->poll(l); /* a WRITE that waited for that connection's buffers may go now */
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
        if (!loop_stop_requested(l)) {
            if (loop_close_listener_requested(l) && !l->listener_closed)
                close_listener(l); /* stop(false): keep serving what is open */
            else
                stat_add(l, BUNRING_STAT_JS_WAKEUPS, 1); /* the loop takes commands after every batch */
        } else if (!l->stopping)
            begin_stop(l);
        else if (loop_drain_ms(l) == 0)
            force_close_all(l);
        else
            arm_timer(l, TIMER_DRAIN, loop_drain_ms(l)); /* the earlier of the two drain timers closes */
        break;
    case BUNRING_OP_TIMEOUT:
        on_timeout(l, ud);
        break;
    case BUNRING_OP_POLL:
        on_poll(l, cqe, ud);
        break;
    default: /* cancel results carry nothing we need */
        break;
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
     * asks for ordinary fds (plain_fds). */
    if ((l->srv->cfg.flags & BUNRING_FLAG_NO_FIXED_FILES) || l->app->plain_fds)
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
    l->app = (l->srv->cfg.flags & BUNRING_FLAG_HANDLER) ? &app_js_uring : &app_echo_uring;
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
    /* Echo sends from the buffer it received into, so the ring holds the whole pool. Handler mode
     * copies what arrives into the channel at once (or, while JS is behind, holds it until there is
     * room): a few CQE batches' worth of buffers is enough, and since the kernel takes them in ring
     * order, every buffer on the ring becomes resident; ids ring_bufs..buf_count-1 stay untouched. */
    bool handler = l->srv->cfg.flags & BUNRING_FLAG_HANDLER;
    l->ring_bufs = handler && l->buf_count > HANDLER_RECV_BUFS ? HANDLER_RECV_BUFS : l->buf_count;
    l->buf_ring_bytes = sizeof(struct io_uring_buf) * l->ring_bufs;
    l->buf_ring = loop_alloc_aligned(l, 4096, l->buf_ring_bytes);
    if (!l->buf_ring) {
        set_error(err, -ENOMEM, "out of memory for the provided-buffer ring");
        return -ENOMEM;
    }
    memset(l->buf_ring, 0, l->buf_ring_bytes);
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uint64_t)(uintptr_t)l->buf_ring;
    reg.ring_entries = l->ring_bufs;
    reg.bgid = BUF_GROUP;
    rc = io_uring_register_buf_ring(&l->ring, &reg, 0);
    if (rc != 0) {
        set_error(err, rc, "registering the provided-buffer ring failed: %s (needs Linux 5.19+); use backend 'epoll'",
                  strerror(-rc));
        return rc;
    }
    io_uring_buf_ring_init(l->buf_ring);
    for (uint32_t i = 0; i < l->ring_bufs; i++)
        ur_return_buffer(l, (uint16_t)i);
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
        l->app->publish(l);
        if (l->listener_closed && l->open_conns == 0 && !l->accept_armed)
            break; /* stopped, or not accepting and the last connection closed */
        if (l->app->sleep_begin(l))
            io_uring_submit(&l->ring); /* work arrived while we said we sleep */
        else
            io_uring_submit_and_wait(&l->ring, 1);
        l->app->sleep_end(l);
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
        l->app->poll(l);
        if (l->returned_bufs) {
            io_uring_buf_ring_advance(l->buf_ring, (int)l->returned_bufs);
            l->returned_bufs = 0;
        }
        /* Checked every iteration, not only when buffers came back: an ENOBUFS can arrive after the
         * last buffer was already returned, and nothing else would wake that connection. */
        if (l->starved_head != NO_SLOT)
            l->app->wake_starved(l);
        apply_stall_policy(l);
        if (l->js_lingering && !l->linger_timer_armed && !l->stopping) {
            l->linger_timer_armed = true;
            arm_timer(l, TIMER_LINGER, js_linger_period(l));
        }
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
