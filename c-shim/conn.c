/*
 * conn.c — what both event loops share: the connection table (slots with generations, a free list),
 * each connection's queue of received-but-unechoed buffers (linked through per-buffer arrays, so a
 * queue costs no memory of its own), the pause limits, the starved list, the policy for peers that
 * stop reading (below, "Stalled peers"), and the loop's allocation helper that counts any allocation
 * made after the loop started.
 *
 * Stalled peers. A connection whose peer does not read pauses at maxPendingBytes, but keeps the pool
 * buffers it holds; enough such peers would hold the whole pool and nobody else could be served.
 * The policy, the same on both backends:
 *   1. A reserve: a quarter of the pool is kept for connections that are not paused. When the free
 *      buffers fall to the reserve ("pressure"), a connection pauses as soon as it holds
 *      PRESSURE_PAUSE_BUFFERS buffers, so every further paused peer costs at most that many.
 *   2. A grace: a connection that is paused and whose peer has read nothing of its echo for
 *      stallTimeoutMs (0 = no limit) while the pool is under pressure is closed, longest stall
 *      first, counted as connClosedStalled. Time paused before the pressure began does not count.
 *      A peer that starts reading again before then gets every byte back (any progress restarts
 *      its clock).
 *   3. Only when nothing else keeps the server serving — no buffer is free and a connection waits
 *      for one — the grace shrinks to EXHAUSTED_STALL_MS: the paused peer that has read nothing the
 *      longest, if that is at least this long, is closed, one at a time until buffers come back.
 *      Long enough that a reader held up by a busy machine is not mistaken for one that stopped.
 *   4. Handler mode: what JS writes is queued in the pool too (queue_room_fair): a connection that
 *      already holds PRESSURE_PAUSE_BUFFERS buffers may not take free buffers out of the reserve, so
 *      one whose peer does not read cannot take the buffers other connections need to answer.
 * Memory stays what the pool was at start: nothing is copied out of it.
 */
#include "internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PRESSURE_PAUSE_BUFFERS 2u /* per-connection buffer limit while the pool is under pressure */
#define EXHAUSTED_STALL_MS 250u   /* the grace when no buffer is free and a connection waits for one */

static void paused_progress(struct loop *l, struct conn *c);

void set_error(struct bunring_error *err, int code, const char *fmt, ...)
{
    if (!err)
        return;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
}

uint32_t loop_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

uint32_t loop_clock_tick_ms(void)
{
    struct timespec res;
    if (clock_getres(CLOCK_MONOTONIC_COARSE, &res) != 0)
        return 10;
    uint64_t ms = ((uint64_t)res.tv_sec * 1000000000u + (uint64_t)res.tv_nsec + 999999u) / 1000000u;
    return ms == 0 ? 1 : (uint32_t)ms;
}

void *loop_alloc(struct loop *l, size_t bytes)
{
    if (l->started)
        stat_add(l, BUNRING_STAT_ALLOCS_AFTER_START, 1);
    return calloc(1, bytes ? bytes : 1);
}

void *loop_alloc_aligned(struct loop *l, size_t align, size_t bytes)
{
    void *p = NULL;
    if (l->started)
        stat_add(l, BUNRING_STAT_ALLOCS_AFTER_START, 1);
    if (posix_memalign(&p, align, bytes ? bytes : 1) != 0)
        return NULL;
    return p; /* not zeroed: large buffers stay untouched (and cost no memory) until used */
}

int loop_alloc_tables(struct loop *l, struct bunring_error *err)
{
    const struct bunring_config *cfg = &l->srv->cfg;
    uint32_t n = l->srv->nloops;
    /* maxConnections is a total across loops (srv->open_total): any loop may hold all of them. The
     * table is only address space until slots are used (see conn_open). */
    (void)n;
    l->max_conns = cfg->max_connections < BUNRING_UD_MAX_SLOT ? cfg->max_connections : BUNRING_UD_MAX_SLOT;
    l->buf_size = cfg->buffer_size;
    l->buf_count = cfg->buffer_count;
    /* uring in handler mode sends what JS wrote from a second set of buffers, ids buf_count and up
     * (the receive buffers belong to the kernel's ring); NO_BUF (0xffff) is never an id. */
    bool tx_pool = (cfg->flags & BUNRING_FLAG_HANDLER) && cfg->backend == BUNRING_BACKEND_URING;
    uint32_t ids = tx_pool ? 2 * l->buf_count : l->buf_count;
    l->conns = loop_alloc(l, sizeof(struct conn) * l->max_conns);
    l->buf_next = loop_alloc(l, sizeof(uint16_t) * ids);
    l->buf_len = loop_alloc(l, sizeof(uint32_t) * ids);
    if (tx_pool) {
        l->tx_mem = loop_alloc_aligned(l, 4096, (size_t)l->buf_size * l->buf_count);
        if (!l->tx_mem) {
            set_error(err, -ENOMEM, "out of memory allocating %u send buffers of %u bytes", l->buf_count, l->buf_size);
            return -ENOMEM;
        }
    }
    /* Page-aligned so the kernel pins whole pages; untouched pages cost no memory until used. */
    l->buf_mem = loop_alloc_aligned(l, 4096, (size_t)l->buf_size * l->buf_count);
    if (!l->conns || !l->buf_next || !l->buf_len || !l->buf_mem) {
        set_error(err, -ENOMEM, "out of memory allocating %u connection slots and %u buffers of %u bytes",
                  l->max_conns, l->buf_count, l->buf_size);
        return -ENOMEM;
    }
    /* Slots are handed out fresh from the zeroed table first, then from the free list, so a large
     * maxConnections costs memory only for connections actually made. */
    l->free_head = NO_SLOT;
    l->fresh_slots = 0;
    l->starved_head = NO_SLOT;
    /* The buffers the loop fills itself: epoll's whole pool; on io_uring only handler mode's send
     * buffers (the receive buffers belong to the kernel's ring). */
    bool uring = cfg->backend == BUNRING_BACKEND_URING;
    uint32_t first = uring ? l->buf_count : 0;
    uint32_t end = uring ? (ids < NO_BUF ? ids : NO_BUF) : l->buf_count;
    l->free_buf_head = NO_BUF;
    l->free_bufs = 0;
    for (uint32_t id = end; id-- > first;)
        buf_give(l, (uint16_t)id);

    l->pause_bytes = cfg->max_pending_bytes;
    l->pause_buffers = conn_pause_buffers(cfg->max_pending_bytes, l->buf_size);
    l->paused_head = NO_SLOT;
    l->paused_tail = NO_SLOT;
    l->reserve_bufs = l->buf_count / 4;
    l->stall_ms = cfg->stall_timeout_ms;
    l->idle_ms = cfg->idle_timeout_ms;
    stat_add(l, BUNRING_STAT_BUFFERS_TOTAL, l->buf_count);
    return 0;
}

void loop_free_tables(struct loop *l)
{
    free(l->conns);
    free(l->buf_next);
    free(l->buf_len);
    free(l->buf_mem);
    free(l->tx_mem);
    l->tx_mem = NULL;
    l->conns = NULL;
    l->buf_next = NULL;
    l->buf_len = NULL;
    l->buf_mem = NULL;
}

/* Small receives each take a whole buffer: besides maxPendingBytes, a connection pauses once it holds
 * twice the buffers its bytes would fill (at least 4). */
uint32_t conn_pause_buffers(uint32_t max_pending_bytes, uint32_t buffer_size)
{
    uint32_t full = (uint32_t)(((uint64_t)max_pending_bytes + buffer_size - 1) / buffer_size);
    return full * 2 < 4 ? 4 : full * 2;
}

struct conn *conn_open(struct loop *l, int fd)
{
    struct conn *c;
    uint32_t *total = &l->srv->open_total;
    if (__atomic_add_fetch(total, 1, __ATOMIC_ACQ_REL) > l->srv->cfg.max_connections) {
        __atomic_sub_fetch(total, 1, __ATOMIC_ACQ_REL);
        return NULL;
    }
    if (l->free_head != NO_SLOT) {
        c = &l->conns[l->free_head];
        l->free_head = c->next;
    } else if (l->fresh_slots < l->max_conns) {
        c = &l->conns[l->fresh_slots++];
    } else {
        __atomic_sub_fetch(total, 1, __ATOMIC_ACQ_REL);
        return NULL;
    }
    uint32_t gen = c->gen;
    memset(c, 0, sizeof(*c));
    c->gen = gen;
    c->fd = fd;
    c->flags = CONN_IN_USE;
    c->q_head = NO_BUF;
    c->q_tail = NO_BUF;
    c->rx_head = NO_BUF;
    c->rx_tail = NO_BUF;
    c->next = NO_SLOT;
    c->paused_prev = NO_SLOT;
    c->paused_next = NO_SLOT;
    c->last_active = l->now_ms;
    l->open_conns++;
    stat_add(l, BUNRING_STAT_CONN_ACCEPTED, 1);
    stat_add(l, BUNRING_STAT_CONN_OPEN, 1);
    return c;
}

static void starved_unlink(struct loop *l, struct conn *c)
{
    uint32_t slot = conn_slot(l, c);
    uint32_t prev = NO_SLOT;
    uint32_t *link = &l->starved_head;
    while (*link != NO_SLOT && *link != slot) {
        prev = *link;
        link = &l->conns[*link].next;
    }
    if (*link == slot) {
        *link = c->next;
        if (l->starved_tail == slot)
            l->starved_tail = prev;
    }
    c->flags &= ~(uint32_t)CONN_STARVED;
}

/* Counts the close before the fd goes: whoever sees the peer's EOF and then reads the stats finds
 * the close already counted. Returns the fd for the caller to close. */
int conn_release(struct loop *l, struct conn *c)
{
    int fd = c->fd;
    if (c->flags & CONN_STARVED)
        starved_unlink(l, c); /* rare: a starved connection that closes */
    conn_unpause(l, c);
    if (c->close_reason == BUNRING_STAT_CONN_CLOSED_STALLED && l->stall_closing > 0)
        l->stall_closing--;
    if (c->flags & CONN_LINGER)
        l->js_lingering--;
    stat_add(l, (enum bunring_stat)c->close_reason, 1);
    stat_sub(l, BUNRING_STAT_CONN_OPEN, 1);
    __atomic_sub_fetch(&l->srv->open_total, 1, __ATOMIC_ACQ_REL);
    /* The new generation first, then (handler mode) wait out a JS-thread send on this fd: after
     * that, nobody but the caller uses the fd (js_direct.c). */
    __atomic_store_n(&c->gen, (c->gen + 1) & BUNRING_UD_MAX_GEN, __ATOMIC_SEQ_CST);
    if (l->js_guard)
        js_direct_fence(l, conn_slot(l, c));
    c->fd = -1;
    c->flags = 0;
    c->js_deferred = 0; /* its deferred commands are dropped: they no longer find it */
    c->next = l->free_head;
    l->free_head = conn_slot(l, c);
    l->open_conns--;
    return fd;
}

uint32_t conn_idle_for(const struct loop *l, const struct conn *c)
{
    uint32_t last = c->last_active;
    if (l->js_active) { /* the JS thread's sends count as activity too */
        uint32_t js = __atomic_load_n(&l->js_active[conn_slot(l, c)], __ATOMIC_RELAXED);
        if ((int32_t)(js - last) > 0)
            last = js;
    }
    return l->now_ms - last;
}

struct conn *conn_lookup(struct loop *l, uint32_t slot, uint32_t gen)
{
    if (slot >= l->max_conns)
        return NULL;
    struct conn *c = &l->conns[slot];
    if (!(c->flags & CONN_IN_USE) || c->gen != gen)
        return NULL;
    return c;
}

uint16_t buf_take(struct loop *l)
{
    uint16_t bid = l->free_buf_head;
    l->free_buf_head = l->buf_next[bid];
    l->free_bufs--;
    return bid;
}

void buf_give(struct loop *l, uint16_t bid)
{
    l->buf_next[bid] = l->free_buf_head;
    l->free_buf_head = bid;
    l->free_bufs++;
}

uint32_t queue_room(const struct loop *l, const struct conn *c)
{
    uint64_t room = (uint64_t)l->free_bufs * l->buf_size;
    if (c->q_tail != NO_BUF)
        room += l->buf_size - l->buf_len[c->q_tail];
    return room > UINT32_MAX ? UINT32_MAX : (uint32_t)room;
}

/* Appending to a buffer whose send is in flight is safe: that send carries the old length, and
 * queue_consume accounts by the new one. */
void queue_append(struct loop *l, struct conn *c, const uint8_t *data, uint32_t n)
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
        uint16_t bid = buf_take(l);
        uint32_t k = n < l->buf_size ? n : l->buf_size;
        memcpy(buf_addr(l, bid), data, k);
        queue_push(l, c, bid, k);
        data += k;
        n -= k;
    }
}

void queue_push(struct loop *l, struct conn *c, uint16_t bid, uint32_t len)
{
    l->buf_len[bid] = len;
    l->buf_next[bid] = NO_BUF;
    if (c->q_tail == NO_BUF)
        c->q_head = bid;
    else
        l->buf_next[c->q_tail] = bid;
    c->q_tail = bid;
    c->pending += len;
    c->held++;
    l->bufs_queued++;
    stat_add(l, BUNRING_STAT_BUFFERS_IN_USE, 1);
    if (c->flags & CONN_PAUSED) {
        l->paused_bufs++;
        stat_add(l, BUNRING_STAT_BUFFERS_PAUSED, 1);
    }
}

uint16_t queue_pop(struct loop *l, struct conn *c)
{
    uint16_t bid = c->q_head;
    c->q_head = l->buf_next[bid];
    if (c->q_head == NO_BUF)
        c->q_tail = NO_BUF;
    c->pending -= l->buf_len[bid] - c->head_off;
    c->head_off = 0;
    c->held--;
    l->bufs_queued--;
    stat_sub(l, BUNRING_STAT_BUFFERS_IN_USE, 1);
    if (c->flags & CONN_PAUSED) {
        l->paused_bufs--;
        stat_sub(l, BUNRING_STAT_BUFFERS_PAUSED, 1);
    }
    return bid;
}

uint16_t queue_consume(struct loop *l, struct conn *c, uint32_t *bytes)
{
    if (*bytes == 0 || c->q_head == NO_BUF)
        return NO_BUF;
    if (c->flags & CONN_PAUSED)
        paused_progress(l, c);
    uint32_t head_left = l->buf_len[c->q_head] - c->head_off;
    if (*bytes >= head_left) {
        *bytes -= head_left;
        return queue_pop(l, c);
    }
    c->head_off += *bytes;
    c->pending -= *bytes;
    *bytes = 0;
    return NO_BUF;
}

static uint32_t buffer_limit(const struct loop *l)
{
    return l->pressure ? PRESSURE_PAUSE_BUFFERS : l->pause_buffers;
}

bool conn_over_limit(const struct loop *l, const struct conn *c)
{
    return c->pending >= l->pause_bytes || c->held >= buffer_limit(l);
}

/* Resume receiving once the backlog is down to half the limit (hysteresis avoids flapping). */
bool conn_below_resume(const struct loop *l, const struct conn *c)
{
    return c->pending <= l->pause_bytes / 2 && c->held <= buffer_limit(l) / 2;
}

static void paused_link_tail(struct loop *l, struct conn *c)
{
    uint32_t slot = conn_slot(l, c);
    c->paused_next = NO_SLOT;
    c->paused_prev = l->paused_tail;
    if (l->paused_tail == NO_SLOT)
        l->paused_head = slot;
    else
        l->conns[l->paused_tail].paused_next = slot;
    l->paused_tail = slot;
}

static void paused_unlink(struct loop *l, struct conn *c)
{
    if (c->paused_prev == NO_SLOT)
        l->paused_head = c->paused_next;
    else
        l->conns[c->paused_prev].paused_next = c->paused_next;
    if (c->paused_next == NO_SLOT)
        l->paused_tail = c->paused_prev;
    else
        l->conns[c->paused_next].paused_prev = c->paused_prev;
    c->paused_prev = NO_SLOT;
    c->paused_next = NO_SLOT;
}

/* The peer read some of a paused connection's echo: its stall clock restarts, and the list stays
 * ordered by how long each peer has read nothing. */
static void paused_progress(struct loop *l, struct conn *c)
{
    c->paused_since = l->now_ms;
    if (l->paused_tail != conn_slot(l, c)) {
        paused_unlink(l, c);
        paused_link_tail(l, c);
    }
}

void conn_pause(struct loop *l, struct conn *c)
{
    if (c->flags & CONN_PAUSED)
        return;
    c->flags |= CONN_PAUSED;
    c->paused_since = l->now_ms;
    paused_link_tail(l, c);
    l->paused_bufs += c->held;
    stat_add(l, BUNRING_STAT_BUFFERS_PAUSED, c->held);
    stat_add(l, BUNRING_STAT_PAUSES, 1);
    stat_add(l, BUNRING_STAT_PAUSED_NOW, 1);
}

void conn_unpause(struct loop *l, struct conn *c)
{
    if (!(c->flags & CONN_PAUSED))
        return;
    c->flags &= ~(uint32_t)CONN_PAUSED;
    paused_unlink(l, c);
    l->paused_bufs -= c->held;
    stat_sub(l, BUNRING_STAT_BUFFERS_PAUSED, c->held);
    stat_sub(l, BUNRING_STAT_PAUSED_NOW, 1);
}

static uint32_t free_buffers(const struct loop *l)
{
    return l->buf_count - l->bufs_queued;
}

uint32_t queue_room_fair(const struct loop *l, const struct conn *c)
{
    uint32_t tail = c->q_tail != NO_BUF ? l->buf_size - l->buf_len[c->q_tail] : 0;
    /* Every free buffer above the reserve, and of the reserve only what brings the connection up to
     * PRESSURE_PAUSE_BUFFERS: past its first buffers, it leaves the reserve to others. */
    uint32_t above = l->free_bufs > l->reserve_bufs ? l->free_bufs - l->reserve_bufs : 0;
    uint32_t in_reserve = l->free_bufs - above;
    uint32_t share = c->held < PRESSURE_PAUSE_BUFFERS ? PRESSURE_PAUSE_BUFFERS - c->held : 0;
    uint64_t room = tail + (uint64_t)(above + (share < in_reserve ? share : in_reserve)) * l->buf_size;
    return room > UINT32_MAX ? UINT32_MAX : (uint32_t)room;
}

void pool_update_pressure(struct loop *l)
{
    bool pressure = free_buffers(l) <= l->reserve_bufs;
    if (pressure && !l->pressure) {
        stat_add(l, BUNRING_STAT_PRESSURE_EVENTS, 1);
        l->pressure_since = l->now_ms;
    }
    l->pressure = pressure;
}

/* How long the longest-stalled paused peer has read nothing while the pool was under pressure: a
 * pause that began before the pressure counts from the pressure's start. */
static uint32_t oldest_stall_ms(const struct loop *l)
{
    uint32_t since = l->conns[l->paused_head].paused_since;
    if ((int32_t)(l->pressure_since - since) > 0)
        since = l->pressure_since;
    return l->now_ms - since;
}

/* How long a paused peer may read nothing before it is closed, now: the configured grace (0 = no
 * limit), or at most EXHAUSTED_STALL_MS while no buffer is free and a connection waits for one. */
static uint32_t stall_grace(const struct loop *l)
{
    uint32_t grace = l->stall_ms ? l->stall_ms : UINT32_MAX;
    bool waiting = l->starved_head != NO_SLOT || l->js_blocked || l->js_deferred_n > 0;
    bool exhausted = free_buffers(l) == 0 && waiting;
    return exhausted && EXHAUSTED_STALL_MS < grace ? EXHAUSTED_STALL_MS : grace;
}

struct conn *pool_stall_victim(struct loop *l)
{
    if (!l->pressure || l->paused_head == NO_SLOT)
        return NULL;
    struct conn *oldest = &l->conns[l->paused_head];
    /* Exhausted: one at a time, the next only once the previous one's buffers are back. */
    if (l->stall_closing > 0 && free_buffers(l) == 0)
        return NULL;
    if (oldest_stall_ms(l) < stall_grace(l))
        return NULL;
    l->stall_closing++;
    return oldest;
}

uint32_t pool_stall_wait_ms(const struct loop *l)
{
    if (!l->pressure || l->paused_head == NO_SLOT)
        return UINT32_MAX;
    uint32_t waited = oldest_stall_ms(l);
    uint32_t wait = UINT32_MAX;
    if (l->stall_ms)
        wait = waited >= l->stall_ms ? 0 : l->stall_ms - waited;
    if (free_buffers(l) == 0 && (l->starved_head != NO_SLOT || l->js_blocked)) {
        uint32_t exhausted = waited >= EXHAUSTED_STALL_MS ? 0 : EXHAUSTED_STALL_MS - waited;
        wait = exhausted < wait ? exhausted : wait;
    }
    return wait;
}

/* The starved list is FIFO so that, as buffers come back, the longest-waiting connection goes first. */
void starved_push(struct loop *l, struct conn *c)
{
    if (c->flags & CONN_STARVED)
        return;
    c->flags |= CONN_STARVED;
    c->next = NO_SLOT;
    if (l->starved_head == NO_SLOT)
        l->starved_head = conn_slot(l, c);
    else
        l->conns[l->starved_tail].next = conn_slot(l, c);
    l->starved_tail = conn_slot(l, c);
}

struct conn *starved_pop(struct loop *l)
{
    if (l->starved_head == NO_SLOT)
        return NULL;
    struct conn *c = &l->conns[l->starved_head];
    l->starved_head = c->next;
    c->flags &= ~(uint32_t)CONN_STARVED;
    return c;
}

bool loop_stop_requested(const struct loop *l)
{
    return __atomic_load_n(&l->srv->stop_requested, __ATOMIC_ACQUIRE) != 0;
}

bool loop_close_listener_requested(const struct loop *l)
{
    return __atomic_load_n(&l->srv->close_listener_requested, __ATOMIC_ACQUIRE) != 0;
}

uint32_t loop_drain_ms(const struct loop *l)
{
    return __atomic_load_n(&l->srv->stop_drain_ms, __ATOMIC_ACQUIRE);
}

void rx_backlog_push(struct loop *l, struct conn *c, uint16_t bid, uint32_t len)
{
    l->buf_len[bid] = len;
    l->buf_next[bid] = NO_BUF;
    if (c->rx_tail == NO_BUF)
        c->rx_head = bid;
    else
        l->buf_next[c->rx_tail] = bid;
    c->rx_tail = bid;
}

uint16_t rx_backlog_pop(struct loop *l, struct conn *c)
{
    uint16_t bid = c->rx_head;
    c->rx_head = l->buf_next[bid];
    if (c->rx_head == NO_BUF)
        c->rx_tail = NO_BUF;
    c->rx_off = 0;
    return bid;
}
