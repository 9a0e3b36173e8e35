/*
 * conn.c — what both event loops share: the connection table (slots with generations, a free list),
 * each connection's queue of received-but-unechoed buffers (linked through per-buffer arrays, so a
 * queue costs no memory of its own), the pause limits, the starved list, and the loop's allocation
 * helper that counts any allocation made after the loop started.
 */
#include "internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
    /* Split exactly: the first (max % n) loops take one more, so the total is maxConnections. */
    l->max_conns = cfg->max_connections / n + (l->index < cfg->max_connections % n ? 1u : 0u);
    l->buf_size = cfg->buffer_size;
    l->buf_count = cfg->buffer_count;
    l->conns = loop_alloc(l, sizeof(struct conn) * l->max_conns);
    l->buf_next = loop_alloc(l, sizeof(uint16_t) * l->buf_count);
    l->buf_len = loop_alloc(l, sizeof(uint32_t) * l->buf_count);
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
    for (uint32_t i = 0; i < l->buf_count; i++)
        l->buf_next[i] = (uint16_t)(i + 1 < l->buf_count ? i + 1 : NO_BUF);
    l->free_buf_head = 0;
    l->free_bufs = l->buf_count;

    l->pause_bytes = cfg->max_pending_bytes;
    l->pause_buffers = conn_pause_buffers(cfg->max_pending_bytes, l->buf_size);
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
    if (l->free_head != NO_SLOT) {
        c = &l->conns[l->free_head];
        l->free_head = c->next;
    } else if (l->fresh_slots < l->max_conns) {
        c = &l->conns[l->fresh_slots++];
    } else {
        return NULL;
    }
    uint32_t gen = c->gen;
    memset(c, 0, sizeof(*c));
    c->gen = gen;
    c->fd = fd;
    c->flags = CONN_IN_USE;
    c->q_head = NO_BUF;
    c->q_tail = NO_BUF;
    c->next = NO_SLOT;
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
    if (c->flags & CONN_PAUSED)
        stat_sub(l, BUNRING_STAT_PAUSED_NOW, 1);
    stat_add(l, (enum bunring_stat)c->close_reason, 1);
    stat_sub(l, BUNRING_STAT_CONN_OPEN, 1);
    c->fd = -1;
    c->flags = 0;
    c->gen = (c->gen + 1) & BUNRING_UD_MAX_GEN;
    c->next = l->free_head;
    l->free_head = conn_slot(l, c);
    l->open_conns--;
    return fd;
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
    return bid;
}

uint16_t queue_consume(struct loop *l, struct conn *c, uint32_t *bytes)
{
    if (*bytes == 0 || c->q_head == NO_BUF)
        return NO_BUF;
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

bool conn_over_limit(const struct loop *l, const struct conn *c)
{
    return c->pending >= l->pause_bytes || c->held >= l->pause_buffers;
}

/* Resume receiving once the backlog is down to half the limit (hysteresis avoids flapping). */
bool conn_below_resume(const struct loop *l, const struct conn *c)
{
    return c->pending <= l->pause_bytes / 2 && c->held <= l->pause_buffers / 2;
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

uint32_t loop_drain_ms(const struct loop *l)
{
    return __atomic_load_n(&l->srv->stop_drain_ms, __ATOMIC_ACQUIRE);
}
