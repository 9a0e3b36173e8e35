/*
 * app_js.c — handler mode, the application listen() runs: received bytes go to the JS thread as
 * events through the channel it shares with this loop (js_channel.c; protocol in bunring.h), and
 * JS's commands (WRITE, END, TERMINATE, WANT_DRAIN, PAUSE, RESUME) come back and act on connections
 * through the loop's primitives (app.h).
 *
 * epoll: bytes are received straight into the channel's rx area, at most as much as it has room for;
 * a WRITE is sent at once when nothing is queued before it and only what the socket did not take is
 * copied into pool buffers.
 * io_uring: each received pool buffer is copied into the rx area and given back to the ring at once;
 * what does not fit waits on the connection (its rx backlog) and the connection stops receiving until
 * JS has consumed. A WRITE is copied into the loop's send buffers (ids from buf_count up) and sent
 * the way echoes are.
 * Both: when JS is behind, connections wait on the starved list (nothing is read from them) instead
 * of growing memory; a connection whose peer does not read what JS wrote pauses; DRAIN is sent once
 * nothing is queued when JS asked for it; FIN once JS ended and its bytes are out; close once both
 * sides are done. Every connection JS heard OPEN of gets exactly one CLOSE.
 */
#include "app.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

/* io_uring: commands taken per loop iteration at most; the rest wait for the next one (the loop does
 * not sleep while commands wait). A WRITE holds send buffers until its completion is reaped, and the
 * free list hands out the most recently returned first, so this bounds the send buffers in use (and
 * resident) to about this many, instead of a whole JS batch's worth. epoll sends from tx at once and
 * takes every command: capped, at 10,000 connections it fell 10,000 commands behind, tx filled, and
 * write() took less (then drain) for most requests. */
#define URING_COMMANDS_PER_RUN 512u

/* ---- both backends ---- */

/* DRAIN for a connection whose WANT_DRAIN is met; with the event ring's reserve full (JS far behind)
 * the connection waits on the starved list, whose wake settles it again once JS has made room. */
static void js_drain_event(struct loop *l, struct conn *c)
{
    if (js_event_room(l, true)) {
        c->flags &= ~(uint32_t)CONN_JS_WANT_DRAIN;
        js_event(l, BUNRING_JS_EV_DRAIN, c, 0, 0);
    } else {
        starved_push(l, c);
    }
}

/* END for the peer's FIN, once; with the reserve full, the connection waits as for DRAIN (io_uring:
 * js_wake_starved_uring writes it through js_flush_backlog). */
static void js_eof_event(struct loop *l, struct conn *c)
{
    if (c->flags & (CONN_JS_EOF_SENT | CONN_DRAINING))
        return; /* stopping, the peer's FIN only ends the drain (epoll reads it while discarding) */
    if (js_event_room(l, true)) {
        c->flags |= CONN_JS_EOF_SENT;
        js_event(l, BUNRING_JS_EV_END, c, 0, 0);
    } else {
        starved_push(l, c);
    }
}

/* OPEN when the channel has room, else the connection waits unread until JS has consumed. */
static bool js_opened(struct loop *l, struct conn *c)
{
    return js_try_open(l, c);
}

static void js_closing(struct loop *l, struct conn *c, enum bunring_stat reason)
{
    if (c->flags & CONN_JS_UNOPENED)
        return; /* JS never heard of it */
    js_close_event(l, c, reason);
}

static void js_sent(struct loop *l, struct conn *c, uint32_t n)
{
    js_count_sent(l, c, n);
}

static void js_publish_events(struct loop *l)
{
    js_flush_closes(l);
    js_publish(l);
}

/* Say we sleep, then look once more: a command published before JS saw the flag. */
static bool js_before_sleep(struct loop *l)
{
    js_sleep_begin(l);
    return js_commands_waiting(l) || js_room_waiting(l);
}

static void js_after_sleep(struct loop *l)
{
    js_sleep_end(l);
}

/* What the commands need from a backend. */
struct js_backend {
    /* A WRITE: true once all of it was taken (or the connection closed); false: what was taken is
     * cut from the record, which waits at the ring's head for room. */
    bool (*write)(struct loop *l, struct conn *c, struct bunring_js_record *r);
    void (*settle)(struct loop *l, struct conn *c);
    void (*close)(struct loop *l, struct conn *c, enum bunring_stat reason);
    void (*paused)(struct loop *l, struct conn *c);  /* JS paused reading: stop receiving */
    void (*resumed)(struct loop *l, struct conn *c); /* JS resumed: receive again */
    uint32_t commands_per_run;                        /* commands taken per loop iteration at most */
};

/* Runs one command on a live connection. false: a WRITE could not be taken whole (the record is cut
 * to the rest, and the connection pauses: its peer must read first). */
static bool js_apply(struct loop *l, const struct js_backend *b, struct conn *c, struct bunring_js_record *r)
{
    switch (r->type_gen & 0xffu) {
    case BUNRING_JS_CMD_WRITE:
        if (!b->write(l, c, r)) {
            if (!(c->flags & CONN_PAUSED))
                conn_pause(l, c); /* a candidate for the stall policy until its peer reads */
            return false;
        }
        break;
    case BUNRING_JS_CMD_END:
        c->flags |= CONN_JS_END;
        b->settle(l, c);
        break;
    case BUNRING_JS_CMD_TERMINATE: {
        struct linger hard = {.l_onoff = 1, .l_linger = 0}; /* close sends RST */
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard));
        b->close(l, c, BUNRING_STAT_CONN_CLOSED_RESET);
        break;
    }
    case BUNRING_JS_CMD_WANT_DRAIN:
        c->flags |= CONN_JS_WANT_DRAIN;
        b->settle(l, c);
        break;
    case BUNRING_JS_CMD_PAUSE:
        c->flags |= CONN_JS_PAUSED;
        b->paused(l, c);
        break;
    case BUNRING_JS_CMD_RESUME:
        c->flags &= ~(uint32_t)CONN_JS_PAUSED;
        b->resumed(l, c);
        break;
    default:
        stat_add(l, BUNRING_STAT_ERRORS, 1);
        break;
    }
    return true;
}

/* The connection a command is for, or NULL when it is gone (generation mismatch) or closing, or the
 * command is a WRITE after our FIN: then the command is dropped. */
static struct conn *js_target(struct loop *l, const struct bunring_js_record *r)
{
    struct conn *c = conn_lookup(l, r->slot, r->type_gen >> 8);
    if (c && ((c->flags & CONN_CLOSING) || ((r->type_gen & 0xffu) == BUNRING_JS_CMD_WRITE && (c->flags & CONN_WR_SHUT))))
        return NULL;
    return c;
}

/* Retries the deferred commands in order; a connection whose command still cannot run keeps its
 * later ones waiting too (CONN_JS_HELD, for this pass). */
static void js_run_deferred(struct loop *l, const struct js_backend *b)
{
    uint32_t n = l->js_deferred_n, keep = 0;
    for (uint32_t i = 0; i < n; i++) {
        struct bunring_js_record *r = &l->js_deferred[i];
        struct conn *c = js_target(l, r);
        if (c && (c->flags & CONN_JS_HELD)) {
            l->js_deferred[keep++] = *r;
            continue;
        }
        if (!c)
            continue;
        c->js_deferred--;
        if (!js_apply(l, b, c, r)) { /* r was cut to the rest: still the connection's next command */
            c->js_deferred++;
            c->flags |= CONN_JS_HELD;
            l->js_deferred[keep++] = *r;
        } else if (c->js_deferred == 0 && conn_lookup(l, r->slot, r->type_gen >> 8)) {
            b->settle(l, c); /* its last deferred command ran: DRAIN, FIN or close may be due now */
        }
    }
    l->js_deferred_n = keep;
    for (uint32_t i = 0; i < keep; i++) {
        struct conn *c = conn_lookup(l, l->js_deferred[i].slot, l->js_deferred[i].type_gen >> 8);
        if (c)
            c->flags &= ~(uint32_t)CONN_JS_HELD;
    }
    if (keep != n)
        js_tx_release(l);
}

/* Takes JS's commands in order. Per connection, order holds: a WRITE the pool cannot take whole
 * (its peer does not read) is set aside on the deferred list with every later command of that
 * connection (but TERMINATE, PAUSE and RESUME, which act at once), and the ring moves on, so other
 * connections are not held up. Only when that list is full does the ring's head wait. */
static void js_run_commands(struct loop *l, const struct js_backend *b)
{
    if (l->js_deferred_n > 0)
        js_run_deferred(l, b);
    struct bunring_js_record *r;
    uint32_t budget = b->commands_per_run;
    while (budget-- > 0 && (r = js_command_peek(l)) != NULL) {
        struct conn *c = js_target(l, r);
        uint32_t type = r->type_gen & 0xffu;
        bool now = type == BUNRING_JS_CMD_TERMINATE || type == BUNRING_JS_CMD_PAUSE || type == BUNRING_JS_CMD_RESUME;
        if (c && (c->js_deferred == 0 || now) && js_apply(l, b, c, r))
            c = NULL; /* done */
        if (c) {
            if (!js_defer(l, r)) {
                js_command_blocked(l);
                return;
            }
            c->js_deferred++;
        }
        js_command_done(l, r);
    }
}

/* ---- epoll ---- */

/* Receives straight into the channel's rx area and publishes DATA, until EAGAIN, the peer's EOF, a
 * pause, or no room (then the connection waits on the starved list). false: connection closed. */
static bool js_read_epoll(struct loop *l, struct conn *c)
{
    if ((c->flags & CONN_WR_SHUT) && (c->flags & CONN_DRAINING))
        return ep_discard_input(l, c); /* stopping with our FIN sent: input is only drained */
    if ((c->flags & CONN_JS_UNOPENED) && !js_try_open(l, c))
        return true; /* still no room for OPEN: waits on the starved list */
    while (!(c->flags & (CONN_PEER_EOF | CONN_DRAINING | CONN_JS_PAUSED))) {
        if (conn_over_limit(l, c)) { /* JS wrote more than the peer reads: stop reading it */
            conn_pause(l, c);
            return true;
        }
        uint32_t at = 0;
        uint32_t room = js_event_room(l, false) ? js_rx_room(l, &at) : 0;
        if (room == 0) {
            starved_push(l, c); /* JS is behind: read again once it consumed */
            return true;
        }
        ssize_t n = recv(c->fd, l->js->rx + (at & (BUNRING_JS_RX_BYTES - 1u)), room, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return true;
            if (errno == EINTR)
                continue;
            ep_close(l, c, BUNRING_STAT_CONN_CLOSED_RESET);
            return false;
        }
        if (n == 0) {
            c->flags |= CONN_PEER_EOF;
            js_eof_event(l, c);
            return true; /* settling closes once our side is done too */
        }
        c->last_active = l->now_ms;
        stat_add(l, BUNRING_STAT_RECV_COMPLETIONS, 1);
        stat_add(l, BUNRING_STAT_BYTES_IN, (uint64_t)n);
        js_event(l, BUNRING_JS_EV_DATA, c, at, (uint32_t)n);
    }
    return true;
}

static bool js_readable_epoll(struct loop *l, struct conn *c)
{
    /* Stopping with our FIN sent, input is read only to be discarded, paused or not. */
    bool lingering = (c->flags & CONN_WR_SHUT) && (c->flags & CONN_DRAINING);
    if ((c->flags & (CONN_PAUSED | CONN_STARVED | CONN_JS_PAUSED)) && !lingering)
        return true;
    return js_read_epoll(l, c);
}

/* After the queue changed: DRAIN when JS waits for room, FIN when JS ended (or the server stops) and
 * everything is out, close once both sides are done. */
static void js_settle_epoll(struct loop *l, struct conn *c)
{
    if (c->q_head != NO_BUF) {
        ep_want_write(l, c, true);
        return;
    }
    if (c->js_deferred > 0) {
        /* JS's later bytes wait on the deferred list (retried after every batch): the socket turning
         * writable is what lets them go, so EPOLLOUT stays armed; nothing else is due yet. */
        ep_want_write(l, c, true);
        return;
    }
    if (c->flags & CONN_JS_WANT_DRAIN)
        js_drain_event(l, c);
    if ((c->flags & (CONN_JS_END | CONN_DRAINING)) && !(c->flags & CONN_WR_SHUT)) {
        c->flags |= CONN_WR_SHUT;
        shutdown(c->fd, SHUT_WR);
        js_linger_begin(l, c);
    }
    if ((c->flags & CONN_PEER_EOF) && (c->flags & CONN_WR_SHUT)) {
        ep_close(l, c, (c->flags & CONN_DRAINING) ? BUNRING_STAT_CONN_CLOSED_STOP : BUNRING_STAT_CONN_CLOSED_EOF);
        return;
    }
    if ((c->flags & CONN_DRAINING) && (c->flags & CONN_WR_SHUT) && !ep_discard_input(l, c))
        return;
    ep_want_write(l, c, false);
}

/* Sent at once when nothing is queued before it; the rest queued in pool buffers as far as they go. */
static bool js_write_epoll(struct loop *l, struct conn *c, struct bunring_js_record *r)
{
    uint32_t taken;
    if (!ep_send(l, c, js_tx_bytes(l, r->offset), r->len, queue_room_fair(l, c), &taken))
        return true; /* the connection closed: nothing more to do with this WRITE */
    bool all = taken == r->len;
    if (!all) {
        r->offset += taken;
        r->len -= taken;
    }
    js_settle_epoll(l, c);
    return all;
}

static void js_paused_epoll(struct loop *l, struct conn *c)
{
    (void)l;
    (void)c; /* edge-triggered: reading simply stops at the flag */
}

static void js_resumed_epoll(struct loop *l, struct conn *c)
{
    ep_service(l, c, true, false); /* edge-triggered: bytes may be waiting */
}

static const struct js_backend js_epoll = {
    .write = js_write_epoll,
    .settle = js_settle_epoll,
    .close = ep_close,
    .paused = js_paused_epoll,
    .resumed = js_resumed_epoll,
    .commands_per_run = UINT32_MAX,
};

static void js_poll_epoll(struct loop *l)
{
    js_run_commands(l, &js_epoll);
}

/* Connections that waited for room in the channel read again, oldest first, while there is room. */
static void js_wake_starved_epoll(struct loop *l)
{
    struct conn *c;
    uint32_t at;
    while (js_event_room(l, false) && js_rx_room(l, &at) > 0 && (c = starved_pop(l)) != NULL)
        ep_service(l, c, true, false);
}

const struct app app_js_epoll = {
    .name = "js",
    .opened = js_opened,
    .closing = js_closing,
    .sent = js_sent,
    .settle = js_settle_epoll,
    .wake_starved = js_wake_starved_epoll,
    .poll = js_poll_epoll,
    .publish = js_publish_events,
    .sleep_begin = js_before_sleep,
    .sleep_end = js_after_sleep,
    .readable = js_readable_epoll,
};

/* ---- io_uring ---- */

/* Whether a receive may be armed: not paused (by JS or the pool policy), not waiting for room, peer
 * not done. */
static bool js_may_receive(const struct conn *c)
{
    return !(c->flags & (CONN_JS_PAUSED | CONN_PEER_EOF | CONN_CLOSING | CONN_PAUSED)) && c->rx_head == NO_BUF;
}

/* Copies len bytes into rx as DATA records (at most BUNRING_JS_MAX_RECORD_BYTES each) while there is
 * room; returns how many went. */
static uint32_t js_deliver(struct loop *l, struct conn *c, const uint8_t *data, uint32_t len)
{
    uint32_t done = 0;
    while (done < len) {
        uint32_t at = 0;
        uint32_t room = js_event_room(l, false) ? js_rx_room(l, &at) : 0;
        if (room == 0)
            break;
        uint32_t k = len - done < room ? len - done : room;
        memcpy(l->js->rx + (at & (BUNRING_JS_RX_BYTES - 1u)), data + done, k);
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
        ur_return_buffer(l, rx_backlog_pop(l, c));
    }
    if (c->flags & CONN_PEER_EOF)
        js_eof_event(l, c);
    return true;
}

/* A receive completed: straight to JS when nothing waits before it and there is room, else behind
 * the backlog, and the connection stops receiving until JS has consumed. */
static void js_received(struct loop *l, struct conn *c, uint16_t bid, uint32_t len, bool more)
{
    if (c->flags & CONN_CLOSING) {
        ur_return_buffer(l, bid);
        ur_try_finish_close(l, c);
        return;
    }
    uint32_t went = c->rx_head == NO_BUF ? js_deliver(l, c, buf_addr(l, bid), len) : 0;
    if (went == len) {
        ur_return_buffer(l, bid);
        if (!more && js_may_receive(c)) {
            stat_add(l, BUNRING_STAT_RECV_REARMS, 1);
            ur_arm_recv(l, c);
        }
        return;
    }
    bool was_empty = c->rx_head == NO_BUF;
    rx_backlog_push(l, c, bid, len);
    if (was_empty)
        c->rx_off = went;
    ur_cancel_recv(l, c);
    starved_push(l, c);
}

/* After the send queue changed: DRAIN when JS waits for room, FIN when JS ended (or the server stops)
 * and everything is out, close once both sides are done, resume receiving below the limit. */
static void js_settle_uring(struct loop *l, struct conn *c)
{
    if (c->flags & CONN_CLOSING)
        return;
    if (c->q_head == NO_BUF && !(c->flags & CONN_SEND_INFLIGHT) && c->js_deferred == 0) {
        if (c->flags & CONN_JS_WANT_DRAIN)
            js_drain_event(l, c);
        if ((c->flags & (CONN_JS_END | CONN_DRAINING)) && !(c->flags & CONN_WR_SHUT)) {
            ur_shutdown_write(l, c);
            js_linger_begin(l, c);
            if ((c->flags & CONN_DRAINING) && !(c->flags & (CONN_RECV_ARMED | CONN_PEER_EOF)))
                ur_arm_recv(l, c); /* stopping: read (and drop) until the peer's EOF */
        }
        if ((c->flags & CONN_PEER_EOF) && (c->flags & CONN_WR_SHUT) && c->rx_head == NO_BUF) {
            ur_close(l, c, (c->flags & CONN_DRAINING) ? BUNRING_STAT_CONN_CLOSED_STOP : BUNRING_STAT_CONN_CLOSED_EOF);
            return;
        }
    }
    if ((c->flags & CONN_PAUSED) && conn_below_resume(l, c)) {
        conn_unpause(l, c);
        if (!(c->flags & (CONN_RECV_ARMED | CONN_STARVED)) && js_may_receive(c))
            ur_arm_recv(l, c);
    }
}

static void js_peer_eof(struct loop *l, struct conn *c)
{
    if (c->rx_head == NO_BUF)
        js_eof_event(l, c); /* else after the backlog reaches JS (js_flush_backlog) */
    js_settle_uring(l, c);
}

/* Connections waiting for room in the channel (or for buffers): their backlog first, then receive. */
static void js_wake_starved_uring(struct loop *l)
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
        js_settle_uring(l, c); /* may close (EOF seen, our side done) */
        if (conn_lookup(l, conn_slot(l, c), c->gen) && !(c->flags & CONN_RECV_ARMED) && js_may_receive(c))
            ur_arm_recv(l, c);
    }
}

/* Copied into send buffers and sent like an echo. */
static bool js_write_uring(struct loop *l, struct conn *c, struct bunring_js_record *r)
{
    uint32_t room = queue_room_fair(l, c);
    uint32_t k = r->len < room ? r->len : room;
    if (k > 0)
        queue_append(l, c, js_tx_bytes(l, r->offset), k);
    if (c->q_head != NO_BUF && !(c->flags & CONN_SEND_INFLIGHT))
        ur_start_send(l, c);
    if (conn_over_limit(l, c) && !(c->flags & CONN_PAUSED)) {
        conn_pause(l, c); /* the peer reads slower than JS writes: stop reading it */
        ur_cancel_recv(l, c);
    }
    if (k == r->len)
        return true;
    r->offset += k;
    r->len -= k;
    return false;
}

static void js_paused_uring(struct loop *l, struct conn *c)
{
    ur_cancel_recv(l, c);
    ur_watch_errors(l, c);
}

static void js_resumed_uring(struct loop *l, struct conn *c)
{
    ur_unwatch_errors(l, c);
    if (!(c->flags & (CONN_RECV_ARMED | CONN_STARVED)) && js_may_receive(c))
        ur_arm_recv(l, c);
}

static const struct js_backend js_uring = {
    .write = js_write_uring,
    .settle = js_settle_uring,
    .close = ur_close,
    .paused = js_paused_uring,
    .resumed = js_resumed_uring,
    .commands_per_run = URING_COMMANDS_PER_RUN,
};

static void js_poll_uring(struct loop *l)
{
    js_run_commands(l, &js_uring);
}

const struct app app_js_uring = {
    .name = "js",
    .opened = js_opened,
    .closing = js_closing,
    .sent = js_sent,
    .settle = js_settle_uring,
    .wake_starved = js_wake_starved_uring,
    .poll = js_poll_uring,
    .publish = js_publish_events,
    .sleep_begin = js_before_sleep,
    .sleep_end = js_after_sleep,
    .received = js_received,
    .peer_eof = js_peer_eof,
    .may_receive = js_may_receive,
    .plain_fds = true,
};
