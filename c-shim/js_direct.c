/*
 * js_direct.c — handler mode's low-load shortcut: the JS thread sends a reply itself, with one
 * send(2), instead of handing a WRITE to a loop that sleeps and waking it for that. At one
 * connection this saves a thread wakeup and a context switch per request; under load JS uses the
 * command ring (the loop is awake and takes commands in batches) and does not come here.
 *
 * JS calls it only when nothing of that connection waits in the loop (every byte it handed over has
 * been sent: sent[slot] says so), so the loop has nothing to send on it and order holds. What the
 * socket does not take, JS hands over as an ordinary WRITE behind it.
 *
 * The one hazard is the descriptor: the loop may close the connection at any moment, and the fd
 * number could then belong to a new connection. A per-slot guard and the slot's generation settle it
 * (Dekker's handshake, every access sequentially consistent): JS stores guard = 1, then checks the
 * generation; the loop, releasing a slot, stores the new generation, then waits while guard is 1
 * before it closes the fd (conn_release). Either JS sees the new generation and does not send, or the
 * loop sees the guard and closes only after the send. The loop never waits longer than one send.
 */
#include "internal.h"

#include <errno.h>
#include <sched.h>
#include <sys/socket.h>

/* JS-thread counters live in the loop's stats block but are written only here, on the JS thread. */
static void js_stat_add(struct loop *l, enum bunring_stat s, uint64_t v)
{
    uint64_t now = __atomic_load_n(&l->stats[s], __ATOMIC_RELAXED);
    __atomic_store_n(&l->stats[s], now + v, __ATOMIC_RELAXED);
}

int32_t bunring_js_send(bunring_server *srv, uint32_t loop, uint32_t slot, uint32_t gen, const uint8_t *data,
                        uint32_t len)
{
    if (!srv || loop >= srv->nloops || !data || len == 0 || len > INT32_MAX)
        return -EINVAL;
    struct loop *l = &srv->loops[loop];
    if (!l->js || slot >= l->max_conns)
        return -EINVAL;
    struct conn *c = &l->conns[slot];
    __atomic_store_n(&l->js_guard[slot], 1, __ATOMIC_SEQ_CST);
    int32_t rc;
    if (__atomic_load_n(&c->gen, __ATOMIC_SEQ_CST) != gen) {
        rc = -ESTALE; /* closed (and maybe reused): JS hears CLOSE soon */
    } else {
        ssize_t s = send(__atomic_load_n(&c->fd, __ATOMIC_RELAXED), data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        int e = errno;
        if (s > 0) {
            __atomic_store_n(&l->js_active[slot], loop_clock_ms(), __ATOMIC_RELAXED);
            js_stat_add(l, BUNRING_STAT_JS_DIRECT_SENDS, 1);
            js_stat_add(l, BUNRING_STAT_JS_DIRECT_BYTES, (uint64_t)s);
            if ((uint32_t)s < len)
                js_stat_add(l, BUNRING_STAT_JS_DIRECT_SHORT, 1);
            rc = (int32_t)s;
        } else if (s == 0 || e == EAGAIN || e == EWOULDBLOCK || e == EINTR) {
            js_stat_add(l, BUNRING_STAT_JS_DIRECT_EAGAIN, 1);
            rc = 0;
        } else {
            rc = -e;
        }
    }
    __atomic_store_n(&l->js_guard[slot], 0, __ATOMIC_SEQ_CST);
    return rc;
}

void js_direct_fence(struct loop *l, uint32_t slot)
{
    while (__atomic_load_n(&l->js_guard[slot], __ATOMIC_SEQ_CST) != 0)
        sched_yield(); /* JS is inside one send on this connection: it ends in microseconds */
}
