/*
 * loop_epoll.c — the edge-triggered epoll echo loop. accept4 until EAGAIN; on readable, recv into a
 * scratch buffer and send it straight back; only bytes that could not be sent (EAGAIN or a partial
 * send) are copied into the connection's queue of pool buffers, and EPOLLOUT is armed only while that
 * queue is non-empty. While a queue is non-empty new bytes go behind it, so order is kept. Nothing is
 * ever dropped: a connection that would need a buffer when the pool is empty stops reading until
 * buffers come back, and one that holds too many unechoed bytes pauses until its peer reads.
 *
 * In handler mode (l->js set) the same loop receives into the channel's rx area and publishes DATA
 * events instead of echoing, and sends what JS's WRITE commands carry, queueing in pool buffers only
 * what the socket did not take (section "Handler mode" below; the channel itself is js_channel.c).
 */
#include "internal.h"

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

/* Handler mode, defined in its section below. */
static bool js_read(struct loop *l, struct conn *c);
static void js_after_flush(struct loop *l, struct conn *c);
static void js_run_commands(struct loop *l);

/* epoll data for a connection: slot and generation, so an event for a freed slot is recognised. */
static uint64_t conn_tag(const struct loop *l, const struct conn *c)
{
    return ((uint64_t)c->gen << 32) | conn_slot(l, c);
}

static void set_events(struct loop *l, struct conn *c, bool want_write)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET | (want_write ? EPOLLOUT : 0u),
                             .data.u64 = conn_tag(l, c)};
    epoll_ctl(l->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    if (want_write)
        c->flags |= CONN_WANT_WRITE;
    else
        c->flags &= ~(uint32_t)CONN_WANT_WRITE;
}

static uint16_t take_buffer(struct loop *l)
{
    uint16_t bid = l->free_buf_head;
    l->free_buf_head = l->buf_next[bid];
    l->free_bufs--;
    return bid;
}

static void give_buffer(struct loop *l, uint16_t bid)
{
    l->buf_next[bid] = l->free_buf_head;
    l->free_buf_head = bid;
    l->free_bufs++;
}

static void close_conn(struct loop *l, struct conn *c, enum bunring_stat reason)
{
    if (l->js && !(c->flags & CONN_JS_UNOPENED)) { /* JS never saw an unopened one */
        if (js_event_room(l, true))
            js_event(l, BUNRING_JS_EV_CLOSE, c, 0, (uint32_t)reason);
        else
            stat_add(l, BUNRING_STAT_ERRORS, 1); /* JS stopped consuming with the reserve full */
    }
    conn_unpause(l, c); /* before the queue empties, so the paused-buffer count stays exact */
    while (c->q_head != NO_BUF)
        give_buffer(l, queue_pop(l, c));
    c->close_reason = (uint8_t)reason;
    close(conn_release(l, c)); /* close() also removes the fd from the epoll set */
}

/* Appends bytes to the queue, filling the tail buffer first. The caller made sure they fit. */
static void enqueue_bytes(struct loop *l, struct conn *c, const uint8_t *data, uint32_t n)
{
    if (c->q_tail != NO_BUF) {
        uint32_t used = l->buf_len[c->q_tail];
        uint32_t room = l->buf_size - used;
        uint32_t k = n < room ? n : room;
        memcpy(buf_addr(l, c->q_tail) + used, data, k);
        l->buf_len[c->q_tail] += k;
        c->pending += k;
        data += k;
        n -= k;
    }
    while (n > 0) {
        uint16_t bid = take_buffer(l);
        uint32_t k = n < l->buf_size ? n : l->buf_size;
        memcpy(buf_addr(l, bid), data, k);
        queue_push(l, c, bid, k);
        data += k;
        n -= k;
    }
}

/* Room for newly received bytes: the tail buffer's free space plus the free pool. */
static uint32_t queue_room(const struct loop *l, const struct conn *c)
{
    uint64_t room = (uint64_t)l->free_bufs * l->buf_size;
    if (c->q_tail != NO_BUF)
        room += l->buf_size - l->buf_len[c->q_tail];
    return room > l->scratch_size ? l->scratch_size : (uint32_t)room;
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
            close_conn(l, c, BUNRING_STAT_CONN_CLOSED_RESET);
            return false;
        }
        stat_add(l, BUNRING_STAT_SEND_COMPLETIONS, 1);
        stat_add(l, BUNRING_STAT_BYTES_OUT, (uint64_t)s);
        c->last_active = l->now_ms;
        if (l->js)
            js_count_sent(l, c, (uint32_t)s);
        if ((uint32_t)s < total)
            stat_add(l, BUNRING_STAT_SHORT_SENDS, 1);
        uint32_t left = (uint32_t)s;
        uint16_t bid;
        while ((bid = queue_consume(l, c, &left)) != NO_BUF)
            give_buffer(l, bid);
        if ((uint32_t)s < total)
            return true; /* the socket is full; EPOLLOUT tells us when to go on */
    }
    return true;
}

/* Stopping, after the echo was handed to the kernel: read and drop input until the peer's EOF (which
 * closes the connection) or EAGAIN. A peer that keeps sending would keep this going, so past the
 * drain deadline it stops early: the loop then closes every connection. false: connection closed. */
static bool discard_input(struct loop *l, struct conn *c)
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
        close_conn(l, c, n == 0 ? BUNRING_STAT_CONN_CLOSED_STOP : BUNRING_STAT_CONN_CLOSED_RESET);
        return false;
    }
}

/* The pool is empty and this connection has nothing queued: n bytes were peeked into scratch. Send
 * them and consume from the socket exactly what was sent; what the socket did not take stays in the
 * kernel and the connection waits for a buffer (starved list). false: connection closed. */
static bool echo_peeked(struct loop *l, struct conn *c, uint32_t n)
{
    ssize_t s = send(c->fd, l->scratch, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (s < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        close_conn(l, c, BUNRING_STAT_CONN_CLOSED_RESET);
        return false;
    }
    uint32_t sent = s < 0 ? 0 : (uint32_t)s;
    if (sent > 0) {
        ssize_t r = recv(c->fd, l->scratch, sent, 0); /* the same bytes: they were already in the socket */
        if (r != (ssize_t)sent) {
            stat_add(l, BUNRING_STAT_ERRORS, 1);
            close_conn(l, c, BUNRING_STAT_CONN_CLOSED_RESET);
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
static bool read_and_echo(struct loop *l, struct conn *c)
{
    if (c->flags & CONN_WR_SHUT)
        return discard_input(l, c);
    while (!(c->flags & (CONN_PEER_EOF | CONN_DRAINING))) {
        if (conn_over_limit(l, c)) {
            conn_pause(l, c);
            return true;
        }
        /* Whatever cannot be sent at once must fit in the pool: never read more than that. With no
         * room and nothing queued, echo straight from the socket: peek, send, and consume only what
         * was sent, so a connection whose echo can go out is served even when the pool is empty. */
        uint32_t want = queue_room(l, c);
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
            close_conn(l, c, BUNRING_STAT_CONN_CLOSED_RESET);
            return false;
        }
        if (n == 0) {
            c->flags |= CONN_PEER_EOF;
            if (c->q_head == NO_BUF) {
                close_conn(l, c, BUNRING_STAT_CONN_CLOSED_EOF);
                return false;
            }
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
        uint32_t sent = 0;
        if (c->q_head == NO_BUF) {
            ssize_t s = send(c->fd, l->scratch, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (s < 0) {
                if (errno != EAGAIN && errno != EWOULDBLOCK) {
                    close_conn(l, c, BUNRING_STAT_CONN_CLOSED_RESET);
                    return false;
                }
                stat_add(l, BUNRING_STAT_SEND_EAGAIN, 1);
            } else {
                sent = (uint32_t)s;
                stat_add(l, BUNRING_STAT_SEND_COMPLETIONS, 1);
                stat_add(l, BUNRING_STAT_BYTES_OUT, (uint64_t)s);
                if (sent < (uint32_t)n)
                    stat_add(l, BUNRING_STAT_SHORT_SENDS, 1);
            }
        }
        if (sent < (uint32_t)n)
            enqueue_bytes(l, c, l->scratch + sent, (uint32_t)n - sent);
    }
    return true;
}

/* After bytes left the queue: close, resume reading, or disarm EPOLLOUT as the state asks. */
static void after_flush(struct loop *l, struct conn *c)
{
    if (c->q_head != NO_BUF) {
        if (!(c->flags & CONN_WANT_WRITE))
            set_events(l, c, true);
        return;
    }
    if (c->flags & CONN_PEER_EOF) {
        close_conn(l, c, (c->flags & CONN_DRAINING) ? BUNRING_STAT_CONN_CLOSED_STOP : BUNRING_STAT_CONN_CLOSED_EOF);
        return;
    }
    if ((c->flags & CONN_DRAINING) && !(c->flags & CONN_WR_SHUT)) {
        /* Stopping and all echoed: FIN after the echo, then drop input until the peer closes, so that
         * closing never sends an RST that would destroy echoed bytes still in flight. */
        c->flags |= CONN_WR_SHUT;
        shutdown(c->fd, SHUT_WR);
        if (!discard_input(l, c))
            return;
    }
    if (c->flags & CONN_WANT_WRITE)
        set_events(l, c, false);
}


static void service_conn(struct loop *l, struct conn *c, bool readable, bool writable)
{
    if (writable && c->q_head != NO_BUF && !flush_queue(l, c))
        return;
    if ((c->flags & CONN_PAUSED) && conn_below_resume(l, c)) {
        conn_unpause(l, c);
        readable = true; /* edge-triggered: bytes may be waiting that raised no new event */
    }
    if (l->js) {
        /* Stopping with our FIN sent, input is read only to be discarded, paused or not. */
        bool lingering = (c->flags & CONN_WR_SHUT) && (c->flags & CONN_DRAINING);
        bool blocked = (c->flags & (CONN_PAUSED | CONN_STARVED | CONN_JS_PAUSED)) && !lingering;
        if (readable && !blocked && !js_read(l, c))
            return;
        js_after_flush(l, c);
        return;
    }
    if (readable && (!(c->flags & (CONN_PAUSED | CONN_STARVED)) || (c->flags & CONN_WR_SHUT)) && !read_and_echo(l, c))
        return;
    after_flush(l, c);
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
        if (l->js)
            js_try_open(l, c); /* when JS is behind, OPEN (and reading) waits for room */
        /* TCP_NODELAY is inherited from the listener (set before listen). */
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.u64 = conn_tag(l, c)};
        if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            stat_add(l, BUNRING_STAT_ERRORS, 1);
            close_conn(l, c, BUNRING_STAT_CONN_CLOSED_RESET);
        }
    }
}

/* Lets connections that stopped for want of buffers read again, oldest first, while buffers last. */
static void wake_starved(struct loop *l)
{
    struct conn *c;
    uint32_t at;
    while ((l->js ? js_event_room(l, false) && js_rx_room(l, &at) > 0 : l->free_bufs > 0) && (c = starved_pop(l)) != NULL)
        service_conn(l, c, true, false);
}

/* Stalled peers (policy in conn.c): close the connections it names; their buffers come back at once,
 * so connections waiting for buffers can read again. */
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
    if (l->starved_head != NO_SLOT)
        wake_starved(l);
}

static void begin_stop(struct loop *l)
{
    l->stopping = true;
    l->drain_deadline = l->now_ms + loop_drain_ms(l);
    if (l->listen_fd >= 0) {
        close(l->listen_fd);
        l->listen_fd = -1;
    }
    for (uint32_t i = 0; i < l->fresh_slots; i++) {
        struct conn *c = &l->conns[i];
        if (!(c->flags & CONN_IN_USE))
            continue;
        c->flags |= CONN_DRAINING;
        if (l->js)
            js_after_flush(l, c); /* FIN once what JS wrote is out */
        else
            after_flush(l, c); /* lingers at once when nothing is left to echo */
    }
}

static void close_all(struct loop *l, enum bunring_stat reason, bool idle_only)
{
    for (uint32_t i = 0; i < l->fresh_slots; i++) {
        struct conn *c = &l->conns[i];
        if (!(c->flags & CONN_IN_USE))
            continue;
        if (!idle_only || l->now_ms - c->last_active >= l->idle_ms)
            close_conn(l, c, reason);
    }
}

/* Milliseconds until the next timer (accept retry, drain deadline, idle sweep), or -1 for none. */
static int next_timeout(const struct loop *l, uint32_t next_idle_sweep)
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
    uint32_t stall = pool_stall_wait_ms(l);
    if (stall != UINT32_MAX && !l->stopping)
        t = t < 0 || stall < t ? stall : t;
    if (t != -1 && t < 0)
        t = 0;
    return (int)t;
}

/* ---- Handler mode ---- */

/* Receives straight into the channel's rx area and publishes DATA, until EAGAIN, the peer's EOF, a
 * pause, or no room (then the connection waits on the starved list). false: connection closed. */
static bool js_read(struct loop *l, struct conn *c)
{
    if ((c->flags & CONN_WR_SHUT) && (c->flags & CONN_DRAINING))
        return discard_input(l, c);
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
        ssize_t n = recv(c->fd, l->js->rx + (at & (BUNRING_JS_BYTES - 1u)), room, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return true;
            if (errno == EINTR)
                continue;
            close_conn(l, c, BUNRING_STAT_CONN_CLOSED_RESET);
            return false;
        }
        if (n == 0) {
            c->flags |= CONN_PEER_EOF;
            if (js_event_room(l, true))
                js_event(l, BUNRING_JS_EV_END, c, 0, 0);
            return true; /* js_after_flush closes once our side is done too */
        }
        c->last_active = l->now_ms;
        stat_add(l, BUNRING_STAT_RECV_COMPLETIONS, 1);
        stat_add(l, BUNRING_STAT_BYTES_IN, (uint64_t)n);
        js_event(l, BUNRING_JS_EV_DATA, c, at, (uint32_t)n);
    }
    return true;
}

/* After the queue changed in handler mode: DRAIN when JS waits for room, FIN when JS ended (or the
 * server stops) and everything is out, close once both sides are done. */
static void js_after_flush(struct loop *l, struct conn *c)
{
    if (c->q_head != NO_BUF) {
        if (!(c->flags & CONN_WANT_WRITE))
            set_events(l, c, true);
        return;
    }
    if ((c->flags & CONN_JS_WANT_DRAIN) && js_event_room(l, true)) {
        c->flags &= ~(uint32_t)CONN_JS_WANT_DRAIN;
        js_event(l, BUNRING_JS_EV_DRAIN, c, 0, 0);
    }
    if ((c->flags & (CONN_JS_END | CONN_DRAINING)) && !(c->flags & CONN_WR_SHUT)) {
        c->flags |= CONN_WR_SHUT;
        shutdown(c->fd, SHUT_WR);
    }
    if ((c->flags & CONN_PEER_EOF) && (c->flags & CONN_WR_SHUT)) {
        close_conn(l, c, (c->flags & CONN_DRAINING) ? BUNRING_STAT_CONN_CLOSED_STOP : BUNRING_STAT_CONN_CLOSED_EOF);
        return;
    }
    if ((c->flags & CONN_DRAINING) && (c->flags & CONN_WR_SHUT) && !discard_input(l, c))
        return;
    if (c->flags & CONN_WANT_WRITE)
        set_events(l, c, false);
}

/* Room for bytes in the pool: the tail buffer's free space plus the free buffers. */
static uint32_t pool_room(const struct loop *l, const struct conn *c)
{
    uint64_t room = (uint64_t)l->free_bufs * l->buf_size;
    if (c->q_tail != NO_BUF)
        room += l->buf_size - l->buf_len[c->q_tail];
    return room > UINT32_MAX ? UINT32_MAX : (uint32_t)room;
}

/* A WRITE: send what the socket takes at once (when nothing is queued before it), queue the rest in
 * pool buffers. false: the pool could not take it all; what was taken is cut from the record, which
 * stays at the head of the ring until the pool has room (EPOLLOUT progress or a close frees it). */
static bool js_write(struct loop *l, struct conn *c, struct bunring_js_record *r)
{
    const uint8_t *data = js_tx_bytes(l, r->offset);
    uint32_t done = 0;
    if (c->q_head == NO_BUF) {
        ssize_t s = send(c->fd, data, r->len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (s < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            close_conn(l, c, BUNRING_STAT_CONN_CLOSED_RESET);
            return true;
        }
        if (s > 0) {
            done = (uint32_t)s;
            stat_add(l, BUNRING_STAT_SEND_COMPLETIONS, 1);
            stat_add(l, BUNRING_STAT_BYTES_OUT, done);
            c->last_active = l->now_ms;
            js_count_sent(l, c, done);
        }
        if (done < r->len)
            stat_add(l, s < 0 ? BUNRING_STAT_SEND_EAGAIN : BUNRING_STAT_SHORT_SENDS, 1);
    }
    uint32_t rest = r->len - done;
    uint32_t room = pool_room(l, c);
    uint32_t k = rest < room ? rest : room;
    if (k > 0)
        enqueue_bytes(l, c, data + done, k);
    done += k;
    bool all = done == r->len;
    if (!all) {
        r->offset += done;
        r->len -= done;
    }
    js_after_flush(l, c);
    return all;
}

/* Takes JS's commands in order. A command for a connection that is gone (generation mismatch) is
 * dropped. Stops early only when a WRITE cannot be queued yet (the pool is full). */
static void js_run_commands(struct loop *l)
{
    struct bunring_js_record *r;
    while ((r = js_command_peek(l)) != NULL) {
        uint32_t type = r->type_gen & 0xffu;
        struct conn *c = conn_lookup(l, r->slot, r->type_gen >> 8);
        if (c && (c->flags & CONN_WR_SHUT) && type == BUNRING_JS_CMD_WRITE)
            c = NULL; /* a write after end(): nothing can carry it */
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
                js_after_flush(l, c);
                break;
            case BUNRING_JS_CMD_TERMINATE: {
                struct linger hard = {.l_onoff = 1, .l_linger = 0}; /* close sends RST */
                setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard));
                close_conn(l, c, BUNRING_STAT_CONN_CLOSED_RESET);
                break;
            }
            case BUNRING_JS_CMD_WANT_DRAIN:
                c->flags |= CONN_JS_WANT_DRAIN;
                js_after_flush(l, c);
                break;
            case BUNRING_JS_CMD_PAUSE:
                c->flags |= CONN_JS_PAUSED;
                break;
            case BUNRING_JS_CMD_RESUME:
                c->flags &= ~(uint32_t)CONN_JS_PAUSED;
                service_conn(l, c, true, false); /* edge-triggered: bytes may be waiting */
                break;
            default:
                stat_add(l, BUNRING_STAT_ERRORS, 1);
                break;
            }
        }
        js_command_done(l, r);
    }
}

int epoll_setup(struct loop *l, struct bunring_error *err)
{
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
    accept_all(l); /* connections that queued before the loop started */
    for (;;) {
        if (l->js)
            js_publish(l);
        if (l->stopping && l->open_conns == 0)
            break;
        int timeout = next_timeout(l, next_sweep);
        if (l->js && timeout != 0) {
            /* Say we sleep, then look once more: a command published before JS saw the flag. */
            js_sleep_begin(l);
            if (js_commands_waiting(l) || js_room_waiting(l))
                timeout = 0;
        }
        int n = epoll_wait(l->epfd, events, MAX_EVENTS, timeout);
        if (l->js)
            js_sleep_end(l);
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
                    stat_add(l, BUNRING_STAT_JS_WAKEUPS, 1); /* JS published commands while we slept */
                } else if (!l->stopping) {
                    begin_stop(l);
                } else {
                    /* A second stop() with a shorter drain: move the deadline closer, never further. */
                    uint32_t deadline = l->now_ms + loop_drain_ms(l);
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
            service_conn(l, c, e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR), e & (EPOLLOUT | EPOLLERR));
        }
        if (l->js)
            js_run_commands(l);
        if (l->starved_head != NO_SLOT)
            wake_starved(l);
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
