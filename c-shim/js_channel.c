/*
 * js_channel.c — handler mode, the loop's side of the channel it shares with the JS thread (protocol
 * in bunring.h, "Handler mode"): allocating the channel and the sent[] counters, reserving room in
 * the rx area and writing event records, publishing them with one store per loop iteration (and
 * ringing the doorbell only when JS sleeps), taking commands and freeing their tx bytes, and the
 * sleeping flag JS reads before it wakes the loop, and the OPEN event with the peer's address. What
 * the commands do to connections is the handler-mode application's business (app_js.c).
 */
#include "internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>

#define RECORD_MASK (BUNRING_JS_RECORDS - 1u)
#define RX_MASK (BUNRING_JS_RX_BYTES - 1u)
#define TX_MASK (BUNRING_JS_TX_BYTES - 1u)
/* Records kept free for END, DRAIN and CLOSE, so a connection's close always reaches JS: OPEN and
 * DATA stop (connections wait) once only this many are left. */
#define EVENT_RESERVE (BUNRING_JS_RECORDS / 4u)
/* Commands that may wait behind a WRITE the pool cannot take yet, per loop (app_js.c); past this many
 * the ring's head waits instead. */
#define DEFERRED_MAX 4096u
/* Below this much contiguous room at the end of rx, a reservation skips to the start of the area; and
 * less room than this is no room: as rx fills, receives would otherwise shrink with it, cutting what
 * arrives into ever smaller DATA records (each one an event, and for an echo a WRITE). */
#define MIN_CONTIGUOUS 4096u

_Static_assert((BUNRING_JS_RECORDS & RECORD_MASK) == 0, "records: a power of two");
_Static_assert((BUNRING_JS_RX_BYTES & RX_MASK) == 0 && (BUNRING_JS_TX_BYTES & TX_MASK) == 0, "areas: powers of two");

int js_channel_alloc(struct loop *l, struct bunring_error *err)
{
    void *mem = loop_alloc_aligned(l, 4096, sizeof(struct bunring_js_channel));
    l->js_sent = loop_alloc(l, sizeof(uint32_t) * l->max_conns);
    l->js_guard = loop_alloc(l, sizeof(uint32_t) * l->max_conns);
    l->js_active = loop_alloc(l, sizeof(uint32_t) * l->max_conns);
    l->js_deferred = loop_alloc(l, sizeof(struct bunring_js_record) * DEFERRED_MAX);
    /* At most one per connection JS has open: no OPEN is written while CLOSEs wait (js_try_open). */
    l->js_closes = loop_alloc(l, sizeof(struct bunring_js_record) * l->max_conns);
    if (!mem || !l->js_sent || !l->js_guard || !l->js_active || !l->js_deferred || !l->js_closes) {
        free(mem);
        set_error(err, -ENOMEM, "out of memory for the handler channel (%zu bytes)", sizeof(struct bunring_js_channel));
        return -ENOMEM;
    }
    l->js = mem;
    /* The control words and records are zeroed; the byte areas stay untouched until used. */
    memset(l->js, 0, offsetof(struct bunring_js_channel, rx));
    return 0;
}

void js_channel_free(struct loop *l)
{
    free(l->js);
    free(l->js_sent);
    free(l->js_guard);
    free(l->js_active);
    free(l->js_deferred);
    free(l->js_closes);
    l->js_deferred = NULL;
    l->js_closes = NULL;
    l->js_closes_n = 0;
    l->js = NULL;
    l->js_sent = NULL;
    l->js_guard = NULL;
    l->js_active = NULL;
}

uint32_t js_rx_room(struct loop *l, uint32_t *offset)
{
    uint32_t head = __atomic_load_n(&l->js->rx_head, __ATOMIC_ACQUIRE);
    uint32_t free_bytes = BUNRING_JS_RX_BYTES - (l->js_rx_tail - head);
    uint32_t to_end = BUNRING_JS_RX_BYTES - (l->js_rx_tail & RX_MASK);
    if (to_end < MIN_CONTIGUOUS && free_bytes > to_end) {
        /* Skip the short end of the area: JS frees it with the next record it consumes. */
        l->js_rx_tail += to_end;
        free_bytes -= to_end;
        to_end = BUNRING_JS_RX_BYTES;
    }
    uint32_t room = free_bytes < to_end ? free_bytes : to_end;
    *offset = l->js_rx_tail;
    if (room < MIN_CONTIGUOUS)
        return 0;
    return room < BUNRING_JS_MAX_RECORD_BYTES ? room : BUNRING_JS_MAX_RECORD_BYTES;
}

bool js_event_room(const struct loop *l, bool reserved)
{
    uint32_t head = __atomic_load_n(&l->js->ev_head, __ATOMIC_ACQUIRE);
    uint32_t used = l->js_ev_tail - head;
    return used < (reserved ? BUNRING_JS_RECORDS : BUNRING_JS_RECORDS - EVENT_RESERVE);
}

/* DATA right behind the same connection's unpublished DATA, in the bytes that follow it: one record.
 * io_uring receives into buffers of bufferSize, so a stream would otherwise reach JS as one event
 * per buffer; JS cannot see a record before js_publish, so it may still grow. */
static bool js_extend_data(struct loop *l, const struct conn *c, uint32_t offset, uint32_t len)
{
    if (l->js_ev_tail == l->js->ev_tail)
        return false; /* the last record is published */
    struct bunring_js_record *last = &l->js->events[(l->js_ev_tail - 1u) & RECORD_MASK];
    /* Not across the end of the area: a record that ends exactly there is followed by one at its start. */
    if (last->type_gen != (BUNRING_JS_EV_DATA | (c->gen << 8)) || last->slot != conn_slot(l, c) ||
        last->offset + last->len != offset || (offset & RX_MASK) == 0 || last->len + len > BUNRING_JS_MAX_RECORD_BYTES)
        return false;
    last->len += len;
    l->js_rx_tail = offset + len;
    return true;
}

void js_event(struct loop *l, uint32_t type, const struct conn *c, uint32_t offset, uint32_t len)
{
    if (type == BUNRING_JS_EV_DATA && js_extend_data(l, c, offset, len))
        return;
    struct bunring_js_record *r = &l->js->events[l->js_ev_tail & RECORD_MASK];
    r->type_gen = type | (c->gen << 8);
    r->slot = conn_slot(l, c);
    r->offset = offset;
    r->len = len;
    l->js_ev_tail++;
    if (type == BUNRING_JS_EV_DATA || type == BUNRING_JS_EV_OPEN)
        l->js_rx_tail = offset + len;
    stat_add(l, BUNRING_STAT_JS_EVENTS, 1);
}

void js_close_event(struct loop *l, const struct conn *c, enum bunring_stat reason)
{
    if (l->js_closes_n == 0 && js_event_room(l, true)) {
        js_event(l, BUNRING_JS_EV_CLOSE, c, 0, (uint32_t)reason);
        return;
    }
    /* JS is behind with the reserve used up: the CLOSE waits, in order, and goes out as JS frees
     * records. The slot may meanwhile hold a new connection: its OPEN waits for these (js_try_open). */
    if (l->js_closes_n == l->max_conns) {
        stat_add(l, BUNRING_STAT_ERRORS, 1); /* cannot happen (one per connection JS has open) */
        return;
    }
    l->js_closes[l->js_closes_n++] = (struct bunring_js_record){
        .type_gen = BUNRING_JS_EV_CLOSE | (c->gen << 8), .slot = conn_slot(l, c), .offset = 0, .len = (uint32_t)reason};
}

void js_flush_closes(struct loop *l)
{
    uint32_t done = 0;
    while (done < l->js_closes_n && js_event_room(l, true)) {
        l->js->events[l->js_ev_tail & RECORD_MASK] = l->js_closes[done++];
        l->js_ev_tail++;
        stat_add(l, BUNRING_STAT_JS_EVENTS, 1);
    }
    if (done == 0)
        return;
    l->js_closes_n -= done;
    memmove(l->js_closes, l->js_closes + done, sizeof(*l->js_closes) * l->js_closes_n);
}

void js_publish(struct loop *l)
{
    struct bunring_js_channel *ch = l->js;
    if (ch->ev_tail == l->js_ev_tail)
        return;
    __atomic_store_n(&ch->rx_tail, l->js_rx_tail, __ATOMIC_RELAXED);
    /* Sequentially consistent with JS's store of js_sleeping and its re-read of ev_tail: either JS
     * sees these events, or this exchange sees that it sleeps. */
    __atomic_store_n(&ch->ev_tail, l->js_ev_tail, __ATOMIC_SEQ_CST);
    if (__atomic_exchange_n(&ch->js_sleeping, 0, __ATOMIC_SEQ_CST) == 1) {
        stat_add(l, BUNRING_STAT_JS_DOORBELLS, 1);
        l->srv->doorbell(l->index);
    }
}

bool js_commands_waiting(const struct loop *l)
{
    uint32_t tail = __atomic_load_n(&l->js->cmd_tail, __ATOMIC_SEQ_CST);
    if (tail == l->js_cmd_head)
        return false;
    return !(l->js_blocked && tail == l->js_blocked_tail); /* a blocked head is no reason to stay awake */
}

void js_command_blocked(struct loop *l)
{
    l->js_blocked = true;
    l->js_blocked_tail = __atomic_load_n(&l->js->cmd_tail, __ATOMIC_ACQUIRE);
}

struct bunring_js_record *js_command_peek(struct loop *l)
{
    l->js_blocked = false;
    if (__atomic_load_n(&l->js->cmd_tail, __ATOMIC_ACQUIRE) == l->js_cmd_head)
        return NULL;
    return &l->js->commands[l->js_cmd_head & RECORD_MASK];
}

void js_command_done(struct loop *l, const struct bunring_js_record *r)
{
    l->js_cmd_head++;
    stat_add(l, BUNRING_STAT_JS_COMMANDS, 1);
    if ((r->type_gen & 0xffu) == BUNRING_JS_CMD_WRITE) {
        l->js_tx_done = r->offset + r->len;
        js_tx_release(l);
    }
    __atomic_store_n(&l->js->cmd_head, l->js_cmd_head, __ATOMIC_RELEASE);
}

bool js_defer(struct loop *l, const struct bunring_js_record *r)
{
    if (l->js_deferred_n == DEFERRED_MAX)
        return false;
    l->js_deferred[l->js_deferred_n++] = *r;
    return true;
}

void js_tx_release(struct loop *l)
{
    uint32_t head = l->js_tx_done;
    /* The list keeps ring order, so its first WRITE holds the oldest bytes still needed. */
    for (uint32_t i = 0; i < l->js_deferred_n; i++)
        if ((l->js_deferred[i].type_gen & 0xffu) == BUNRING_JS_CMD_WRITE) {
            head = l->js_deferred[i].offset;
            break;
        }
    __atomic_store_n(&l->js->tx_head, head, __ATOMIC_RELEASE);
}

uint8_t *js_tx_bytes(const struct loop *l, uint32_t offset)
{
    return l->js->tx + (offset & TX_MASK);
}

void js_sleep_begin(struct loop *l)
{
    __atomic_store_n(&l->js->c_wants_room, l->starved_head != NO_SLOT || l->js_closes_n > 0 ? 1u : 0u, __ATOMIC_RELAXED);
    __atomic_store_n(&l->js->c_sleeping, 1, __ATOMIC_SEQ_CST);
    /* The re-checks that follow (command tail, ev_head, rx_head) must not be ordered before this
     * store, on any architecture: JS stores those words and then reads c_sleeping. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

bool js_room_waiting(struct loop *l)
{
    uint32_t at;
    if (l->js_closes_n > 0 && js_event_room(l, true))
        return true;
    return l->starved_head != NO_SLOT && js_event_room(l, false) && js_rx_room(l, &at) > 0;
}

void js_sleep_end(struct loop *l)
{
    __atomic_store_n(&l->js->c_sleeping, 0, __ATOMIC_RELAXED);
}

void js_count_sent(struct loop *l, struct conn *c, uint32_t n)
{
    uint32_t *sent = &l->js_sent[conn_slot(l, c)];
    __atomic_store_n(sent, *sent + n, __ATOMIC_RELEASE);
}

/* OPEN: the sent counter starts at 0 and JS gets the peer's address (BUNRING_JS_PEER_ADDRESS_BYTES in rx:
 * u16 family, u16 port, 16 address bytes). */
void js_open(struct loop *l, struct conn *c, uint32_t at)
{
    __atomic_store_n(&l->js_sent[conn_slot(l, c)], 0, __ATOMIC_RELEASE);
    __atomic_store_n(&l->js_active[conn_slot(l, c)], l->now_ms, __ATOMIC_RELAXED);
    uint8_t *out = l->js->rx + (at & RX_MASK);
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getpeername(c->fd, (struct sockaddr *)&ss, &len) == 0)
        js_address_bytes(&ss, out);
    else
        memset(out, 0, BUNRING_JS_PEER_ADDRESS_BYTES);
    js_event(l, BUNRING_JS_EV_OPEN, c, at, BUNRING_JS_PEER_ADDRESS_BYTES);
}

void js_address_bytes(const struct sockaddr_storage *ss, uint8_t *out)
{
    memset(out, 0, BUNRING_JS_PEER_ADDRESS_BYTES);
    uint16_t family = ss->ss_family == AF_INET6 ? 10 : 2;
    uint16_t port;
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        port = ntohs(a->sin6_port);
        memcpy(out + 4, &a->sin6_addr, 16);
    } else {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        port = ntohs(a->sin_port);
        memcpy(out + 4, &a->sin_addr, 4);
    }
    memcpy(out, &family, 2);
    memcpy(out + 2, &port, 2);
}

void js_linger_begin(struct loop *l, struct conn *c)
{
    if (!(c->flags & CONN_JS_END) || (c->flags & (CONN_LINGER | CONN_DRAINING | CONN_PEER_EOF | CONN_CLOSING)))
        return; /* not ended by JS, already lingering, stopping (its own deadline), or closing now */
    c->flags |= CONN_LINGER;
    c->linger_since = l->now_ms;
    l->js_lingering++;
}

bool js_linger_expired(const struct loop *l, const struct conn *c)
{
    return (c->flags & CONN_LINGER) && !(c->flags & CONN_CLOSING) && l->now_ms - c->linger_since >= l->srv->cfg.drain_ms;
}

uint32_t js_linger_period(const struct loop *l)
{
    uint32_t p = l->srv->cfg.drain_ms / 4;
    return p < 10 ? 10 : (p > 1000 ? 1000 : p);
}

bool js_try_open(struct loop *l, struct conn *c)
{
    uint32_t at = 0;
    js_flush_closes(l); /* a CLOSE still waiting may be for this slot's last connection */
    if (l->js_closes_n > 0 || !js_event_room(l, false) || js_rx_room(l, &at) < BUNRING_JS_PEER_ADDRESS_BYTES) {
        c->flags |= CONN_JS_UNOPENED;
        starved_push(l, c);
        return false;
    }
    c->flags &= ~(uint32_t)CONN_JS_UNOPENED;
    js_open(l, c, at);
    return true;
}
