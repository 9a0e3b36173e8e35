/*
 * js_direct.c — what the JS thread does on a connection's descriptor itself: handler mode's low-load
 * shortcut, and the socket options and local address a handler asks for (socket.setNoDelay,
 * setKeepAlive, localAddress), which need no trip through the loop.
 *
 * The shortcut: the JS thread sends a reply itself, with one
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

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <string.h>
#include <sys/socket.h>

/* JS-thread counters live in the loop's stats block but are written only here, on the JS thread. */
static void js_stat_add(struct loop *l, enum bunring_stat s, uint64_t v)
{
    uint64_t now = __atomic_load_n(&l->stats[s], __ATOMIC_RELAXED);
    __atomic_store_n(&l->stats[s], now + v, __ATOMIC_RELAXED);
}

/* The loop of a JS-thread call on (loop, slot), or NULL for arguments that name none. */
static struct loop *js_loop_of(bunring_server *srv, uint32_t loop, uint32_t slot)
{
    if (!srv || loop >= srv->nloops)
        return NULL;
    struct loop *l = &srv->loops[loop];
    return l->js && slot < l->max_conns ? l : NULL;
}

/* The guard's JS side: the connection's fd while (slot, gen) is current (the loop then does not close
 * it until js_guard_leave), or -1 when it is gone (leave the guard all the same). */
static int js_guard_enter(struct loop *l, uint32_t slot, uint32_t gen)
{
    __atomic_store_n(&l->js_guard[slot], 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&l->conns[slot].gen, __ATOMIC_SEQ_CST) != gen)
        return -1; /* closed (and maybe reused): JS hears CLOSE soon */
    return __atomic_load_n(&l->conns[slot].fd, __ATOMIC_RELAXED);
}

static void js_guard_leave(struct loop *l, uint32_t slot)
{
    __atomic_store_n(&l->js_guard[slot], 0, __ATOMIC_SEQ_CST);
}

int32_t bunring_js_send(bunring_server *srv, uint32_t loop, uint32_t slot, uint32_t gen, const uint8_t *data,
                        uint32_t len)
{
    struct loop *l = js_loop_of(srv, loop, slot);
    if (!l || !data || len == 0 || len > INT32_MAX)
        return -EINVAL;
    int fd = js_guard_enter(l, slot, gen);
    int32_t rc;
    if (fd < 0) {
        rc = -ESTALE;
    } else {
        ssize_t s = send(fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
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
    js_guard_leave(l, slot);
    return rc;
}

static int set_int(int fd, int level, int name, int value)
{
    return setsockopt(fd, level, name, &value, sizeof(value)) == 0 ? 0 : -errno;
}

int32_t bunring_js_set_option(bunring_server *srv, uint32_t loop, uint32_t slot, uint32_t gen, uint32_t option,
                              uint32_t value)
{
    struct loop *l = js_loop_of(srv, loop, slot);
    if (!l || option < BUNRING_JS_OPT_NODELAY || option > BUNRING_JS_OPT_KEEPIDLE || value > INT32_MAX)
        return -EINVAL;
    int fd = js_guard_enter(l, slot, gen);
    int32_t rc = -ESTALE;
    if (fd >= 0) {
        switch (option) {
        case BUNRING_JS_OPT_NODELAY:
            rc = set_int(fd, IPPROTO_TCP, TCP_NODELAY, value ? 1 : 0);
            break;
        case BUNRING_JS_OPT_KEEPALIVE:
            rc = set_int(fd, SOL_SOCKET, SO_KEEPALIVE, value ? 1 : 0);
            break;
        default: /* BUNRING_JS_OPT_KEEPIDLE */
            rc = set_int(fd, IPPROTO_TCP, TCP_KEEPIDLE, (int)value);
            if (rc == 0)
                rc = set_int(fd, IPPROTO_TCP, TCP_KEEPCNT, 10);
            if (rc == 0)
                rc = set_int(fd, IPPROTO_TCP, TCP_KEEPINTVL, 1);
            break;
        }
    }
    js_guard_leave(l, slot);
    return rc;
}

int32_t bunring_js_local_address(bunring_server *srv, uint32_t loop, uint32_t slot, uint32_t gen, uint8_t *out)
{
    struct loop *l = js_loop_of(srv, loop, slot);
    if (!l || !out)
        return -EINVAL;
    int fd = js_guard_enter(l, slot, gen);
    int32_t rc = -ESTALE;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (fd >= 0)
        rc = getsockname(fd, (struct sockaddr *)&ss, &len) == 0 ? 0 : -errno;
    js_guard_leave(l, slot);
    if (rc == 0)
        js_address_bytes(&ss, out);
    return rc;
}

void js_direct_fence(struct loop *l, uint32_t slot)
{
    while (__atomic_load_n(&l->js_guard[slot], __ATOMIC_SEQ_CST) != 0)
        sched_yield(); /* JS is inside one send on this connection: it ends in microseconds */
}
