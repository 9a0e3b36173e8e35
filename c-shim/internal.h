/*
 * internal.h — structures shared by the shim's files but not part of the ABI: the server, its loops,
 * the connection table and the per-loop receive buffers. One loop = one native thread with its own
 * listening socket (SO_REUSEPORT), its own io_uring or epoll instance, its own connections and
 * buffers; loops share nothing but the server's stop request.
 */
#ifndef BUNRING_INTERNAL_H
#define BUNRING_INTERNAL_H

#include "bunring.h"

#include <liburing.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define NO_BUF 0xffffu /* end of a buffer chain (buffer ids are < 32768) */
#define NO_SLOT UINT32_MAX

/* Connection state bits. */
enum conn_flag {
    CONN_IN_USE = 1u << 0,
    CONN_RECV_ARMED = 1u << 1,    /* uring: a multishot recv is outstanding */
    CONN_SEND_INFLIGHT = 1u << 2, /* uring: a send is outstanding (at most one: keeps bytes in order) */
    CONN_PAUSED = 1u << 3,        /* too many unechoed bytes: not receiving until the queue drains */
    CONN_PEER_EOF = 1u << 4,      /* peer shut down its write side: close once everything is echoed */
    CONN_CLOSING = 1u << 5,       /* closing: waiting for outstanding operations to finish */
    CONN_STARVED = 1u << 6,       /* waiting for a free buffer before receiving again */
    CONN_CANCELLING = 1u << 7,    /* uring: a cancel for the recv has been submitted */
    CONN_WANT_WRITE = 1u << 8,    /* epoll: EPOLLOUT is armed */
    CONN_DRAINING = 1u << 9,      /* stop(): echo what is queued, then linger (FIN, discard input) */
    CONN_WR_SHUT = 1u << 10,      /* our write side is shut down (stop(), or JS ended it) */
    CONN_JS_END = 1u << 11,       /* handler mode: JS asked for FIN once its bytes are out */
    CONN_JS_WANT_DRAIN = 1u << 12, /* handler mode: send a DRAIN event once nothing is queued */
    CONN_JS_PAUSED = 1u << 13,    /* handler mode: JS paused reading */
    CONN_JS_UNOPENED = 1u << 14,  /* handler mode: accepted, OPEN not yet published (JS is behind) */
    CONN_JS_HELD = 1u << 15,      /* handler mode: a deferred command of it waits (one pass over them) */
    CONN_POLL_ARMED = 1u << 16,   /* uring, handler mode: a poll watches the paused connection for errors */
    CONN_POLL_CANCELLING = 1u << 17, /* uring: a removal of that poll has been submitted */
    CONN_LINGER = 1u << 18,       /* handler mode: JS ended it and our FIN is out: waiting for the peer's */
    CONN_JS_EOF_SENT = 1u << 19,  /* handler mode: the END event for the peer's FIN is written */
};

struct conn {
    int fd;
    uint32_t gen;         /* bumped when the slot is freed; part of every user_data / epoll tag */
    uint32_t flags;       /* enum conn_flag */
    uint32_t pending;     /* received bytes not yet echoed */
    uint32_t held;        /* buffers in the queue */
    uint32_t head_off;    /* bytes of the head buffer already sent */
    uint16_t q_head;      /* queue of buffers to echo, linked through loop->buf_next */
    uint16_t q_tail;
    uint8_t close_reason; /* enum bunring_stat of the close counter to bump */
    uint8_t pad[3];
    uint16_t rx_head;     /* received buffers the application has not taken yet (rx_backlog_*) */
    uint16_t rx_tail;
    uint32_t rx_off;      /* ... bytes of the head one already delivered */
    uint32_t next;        /* free-list / starved-list link (slot index) */
    uint32_t paused_prev; /* paused-list links (slot indices), oldest pause first */
    uint32_t paused_next;
    uint32_t paused_since; /* loop clock (ms) when the current pause began */
    uint32_t send_bytes;  /* uring: bytes asked of the send in flight */
    uint32_t last_active; /* loop clock (ms) of the last byte in or out */
    uint32_t js_deferred; /* handler mode: its commands waiting in the loop's deferred list */
    uint32_t linger_since; /* handler mode, CONN_LINGER: loop clock (ms) when our FIN went out */
};

struct bunring_server;
struct app;

struct loop {
    struct bunring_server *srv;
    const struct app *app; /* what is done with the bytes (app.h): echo or handler mode */
    uint32_t index;
    pthread_t thread;
    bool thread_started;
    int listen_fd;
    int wake_fd; /* eventfd: stop requests */
    uint64_t *stats;

    /* connections */
    struct conn *conns;
    uint32_t max_conns;
    uint32_t free_head;    /* free slot list */
    uint32_t fresh_slots;  /* slots below this index have been used at least once */
    uint32_t open_conns;
    uint32_t starved_head; /* FIFO of connections waiting for buffers */
    uint32_t starved_tail;

    /* receive buffers: buffer_count * buffer_size bytes, plus per-buffer queue links */
    uint8_t *buf_mem;
    uint32_t buf_size;
    uint32_t buf_count;
    uint16_t *buf_next;
    uint32_t *buf_len;
    uint8_t *tx_mem;        /* uring handler mode: buffers (ids buf_count..) holding what JS wrote */
    uint16_t free_buf_head; /* free buffers the loop fills itself (buf_take): epoll's pool, uring's tx_mem */
    uint32_t free_bufs;     /* ... how many */
    uint32_t bufs_queued;   /* buffers holding unechoed bytes, across all connections */
    uint32_t pause_bytes;   /* pause receiving at this many pending bytes */
    uint32_t pause_buffers; /* ... or this many held buffers */

    /* What paused connections hold together, and the pool policy (conn.c, "Stalled peers") */
    uint32_t paused_head;   /* paused connections, oldest pause first */
    uint32_t paused_tail;
    uint32_t paused_bufs;   /* buffers held by paused connections */
    uint32_t reserve_bufs;  /* free buffers kept for connections that are not paused */
    bool pressure;          /* free buffers <= reserve_bufs: per-connection limit shrinks, grace runs */
    uint32_t pressure_since; /* loop clock (ms) when the current pressure began */
    uint32_t stall_ms;      /* grace of a paused connection under pressure */
    uint32_t stall_closing; /* connections closed as stalled whose buffers are not back yet */

    /* clock and timers */
    uint32_t now_ms;
    uint32_t idle_ms;
    bool stopping;
    bool listener_closed; /* not accepting any more (stopping, or bunring_server_close_listener) */
    bool force_close_done;
    uint32_t drain_deadline;
    uint32_t accept_retry_at; /* epoll: retry accept after EMFILE at this time (0 = not waiting) */

    /* io_uring state */
    struct io_uring ring;
    bool ring_ready;
    struct io_uring_buf_ring *buf_ring;
    uint32_t ring_bufs;     /* receive buffers on buf_ring (ids 0..ring_bufs-1): see uring_setup */
    size_t buf_ring_bytes;
    uint32_t returned_bufs; /* buffers added to the ring since the last advance */
    bool accept_armed;
    bool fixed_files; /* connections are direct descriptors (registered file table) */
    uint32_t timers_armed;
    struct __kernel_timespec timer_ts[5]; /* one per timer kind (enum uring_timer) */
    bool linger_timer_armed;
    bool stall_timer_armed;
    uint32_t stall_timer_due; /* loop clock (ms) the earliest armed stall timer fires */
    uint64_t wake_value;
    struct iovec *send_iov;  /* SEND_IOV_MAX per slot: iovecs of the sendmsg in flight */
    struct msghdr *send_msg; /* one per slot */
    uint32_t features;

    /* handler mode (js_channel.c) */
    struct bunring_js_channel *js; /* NULL in echo mode */
    uint32_t *js_sent;             /* bytes sent per slot, read by JS */
    uint32_t *js_guard;            /* per slot: 1 while the JS thread sends on it (js_direct.c) */
    uint32_t *js_active;           /* per slot: loop clock (ms) of the JS thread's last send on it */
    uint32_t js_ev_tail;           /* events written, not all published yet */
    uint32_t js_cmd_head;
    uint32_t js_rx_tail;
    bool js_blocked;          /* a command waits at the ring's head (the deferred list is full) */
    uint32_t js_blocked_tail; /* the command tail seen then: only newer commands are news */
    struct bunring_js_record *js_deferred; /* commands waiting for their connection's earlier WRITE */
    uint32_t js_deferred_n;
    uint32_t js_tx_done; /* end of the last WRITE taken: tx_head, unless a deferred WRITE holds it back */
    struct bunring_js_record *js_closes; /* CLOSE events that found no room yet, oldest first */
    uint32_t js_closes_n;
    uint32_t js_lingering; /* connections with CONN_LINGER */

    /* epoll state */
    int epfd;
    uint8_t *scratch;
    uint32_t scratch_size;

    /* start-up handshake with bunring_server_start */
    int setup_code;
    struct bunring_error setup_err;
    bool setup_finished;
    bool started; /* set once the loop runs: allocations after this are counted */
};

struct bunring_server {
    struct bunring_config cfg;
    uint32_t nloops;
    uint32_t port;
    uint32_t features;
    uint64_t *stats_mem;
    uint32_t open_total;   /* atomic: connections open across all loops (maxConnections is a total) */
    int stop_requested;    /* atomic */
    int close_listener_requested; /* atomic: stop accepting, keep serving (bunring_server_close_listener) */
    uint32_t stop_drain_ms; /* atomic */
    uint32_t loops_done;   /* atomic */
    bool joined;
    bunring_js_doorbell doorbell; /* handler mode */
    pthread_mutex_t setup_lock;
    pthread_cond_t setup_cond;
    struct loop loops[];
};

/* ---- helpers shared by both loops (conn.c) ---- */
void set_error(struct bunring_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
uint32_t loop_clock_ms(void);
uint32_t loop_clock_tick_ms(void); /* the resolution of loop_clock_ms, rounded up (at least 1) */

static inline void stat_add(struct loop *l, enum bunring_stat s, uint64_t v)
{
    __atomic_store_n(&l->stats[s], l->stats[s] + v, __ATOMIC_RELAXED);
}
static inline void stat_sub(struct loop *l, enum bunring_stat s, uint64_t v)
{
    __atomic_store_n(&l->stats[s], l->stats[s] - v, __ATOMIC_RELAXED);
}

void *loop_alloc(struct loop *l, size_t bytes); /* zeroed; counts allocations made after start */
void *loop_alloc_aligned(struct loop *l, size_t align, size_t bytes); /* not zeroed */
int loop_alloc_tables(struct loop *l, struct bunring_error *err);
void loop_free_tables(struct loop *l);

struct conn *conn_open(struct loop *l, int fd); /* NULL when the table is full */
int conn_release(struct loop *l, struct conn *c); /* counts, bumps gen, frees slot; returns the fd to close */
static inline uint32_t conn_slot(const struct loop *l, const struct conn *c)
{
    return (uint32_t)(c - l->conns);
}
struct conn *conn_lookup(struct loop *l, uint32_t slot, uint32_t gen); /* NULL if stale */

/* Buffer queue of a connection. */
static inline uint8_t *buf_addr(const struct loop *l, uint32_t bid)
{
    if (bid >= l->buf_count) /* uring handler mode's send buffers */
        return l->tx_mem + (size_t)(bid - l->buf_count) * l->buf_size;
    return l->buf_mem + (size_t)bid * l->buf_size;
}
void queue_push(struct loop *l, struct conn *c, uint16_t bid, uint32_t len);
uint16_t buf_take(struct loop *l); /* from the free list; the caller checked free_bufs */
void buf_give(struct loop *l, uint16_t bid);
uint32_t queue_room(const struct loop *l, const struct conn *c); /* tail buffer's space + free buffers */
/* queue_room, but a connection holding a few buffers already may not dig into the reserve (conn.c). */
uint32_t queue_room_fair(const struct loop *l, const struct conn *c);
/* Appends bytes to the queue, filling the tail buffer first; the caller made sure they fit. */
void queue_append(struct loop *l, struct conn *c, const uint8_t *data, uint32_t n);
uint16_t queue_pop(struct loop *l, struct conn *c); /* returns the head buffer id */
/* Accounts *bytes sent from the head of the queue: pops (and returns) a buffer once all of it was
 * sent, else advances the head offset; returns NO_BUF when *bytes is used up. Call until NO_BUF. */
uint16_t queue_consume(struct loop *l, struct conn *c, uint32_t *bytes);
/* Received buffers the application has not taken yet (handler mode on io_uring: no room in the
 * channel) wait on the connection, linked through buf_next; rx_off = bytes of the head one taken. */
void rx_backlog_push(struct loop *l, struct conn *c, uint16_t bid, uint32_t len);
uint16_t rx_backlog_pop(struct loop *l, struct conn *c); /* returns the head buffer id */
uint32_t conn_pause_buffers(uint32_t max_pending_bytes, uint32_t buffer_size);
bool conn_over_limit(const struct loop *l, const struct conn *c);
bool conn_below_resume(const struct loop *l, const struct conn *c);
void conn_pause(struct loop *l, struct conn *c);   /* stop receiving until the queue drains */
void conn_unpause(struct loop *l, struct conn *c); /* no-op unless paused */

/* Stalled peers: the pool policy both loops apply once per iteration (see conn.c). */
void pool_update_pressure(struct loop *l);
struct conn *pool_stall_victim(struct loop *l); /* the paused connection to close now, or NULL */
uint32_t pool_stall_wait_ms(const struct loop *l); /* ms until the oldest pause's grace ends; UINT32_MAX = none */

void starved_push(struct loop *l, struct conn *c);
struct conn *starved_pop(struct loop *l); /* oldest starved connection, or NULL */

bool loop_stop_requested(const struct loop *l);
bool loop_close_listener_requested(const struct loop *l);
uint32_t loop_drain_ms(const struct loop *l);

/* ---- handler mode (js_channel.c): the loop's side of the channel shared with JS ---- */
int js_channel_alloc(struct loop *l, struct bunring_error *err);
void js_channel_free(struct loop *l);
/* Contiguous room in rx for up to BUNRING_JS_MAX_RECORD_BYTES (0 = none; *offset = where). */
uint32_t js_rx_room(struct loop *l, uint32_t *offset);
bool js_event_room(const struct loop *l, bool reserved); /* reserved: END/DRAIN/CLOSE may use the reserve */
void js_event(struct loop *l, uint32_t type, const struct conn *c, uint32_t offset, uint32_t len);
void js_publish(struct loop *l); /* make written events visible; ring the doorbell if JS sleeps */
/* CLOSE for a connection JS knows, now or (no room) once JS has consumed: never dropped. */
void js_close_event(struct loop *l, const struct conn *c, enum bunring_stat reason);
void js_flush_closes(struct loop *l); /* CLOSEs that waited for room, while there is room */
bool js_commands_waiting(const struct loop *l);
/* The next command, or NULL; js_command_done releases it (and its tx bytes). */
struct bunring_js_record *js_command_peek(struct loop *l);
void js_command_done(struct loop *l, const struct bunring_js_record *r);
/* The deferred list: a command set aside until its connection's earlier WRITE is taken (false: the
 * list is full), and after the list changed, handing JS the tx bytes it may reuse: up to the oldest
 * deferred WRITE's bytes. */
bool js_defer(struct loop *l, const struct bunring_js_record *r);
void js_tx_release(struct loop *l);
uint8_t *js_tx_bytes(const struct loop *l, uint32_t offset);
void js_sleep_begin(struct loop *l); /* store c_wants_room and c_sleeping = 1 (then re-check for work) */
void js_command_blocked(struct loop *l); /* the head command must wait: do not spin on it */
bool js_room_waiting(struct loop *l);    /* connections or CLOSEs wait for room, and there is some now */
void js_sleep_end(struct loop *l);
void js_count_sent(struct loop *l, struct conn *c, uint32_t n); /* sent[slot] += n, for JS */
void js_open(struct loop *l, struct conn *c, uint32_t at);       /* OPEN, peer address at rx offset `at` */
/* An address as OPEN carries it: u16 family (2 IPv4, 10 IPv6), u16 port, 16 address bytes. */
void js_address_bytes(const struct sockaddr_storage *ss, uint8_t *out);
/* After our FIN went out on a connection JS ended: it waits for the peer's FIN for drainMs at most
 * (CONN_LINGER; the loops sweep with js_linger_expired and close it as idle), so a peer that never
 * closes cannot hold it. */
void js_linger_begin(struct loop *l, struct conn *c);
bool js_linger_expired(const struct loop *l, const struct conn *c);
uint32_t js_linger_period(const struct loop *l); /* how often to sweep while some connection lingers */
/* OPEN when the channel has room; else the connection is marked unopened and waits (starved list,
 * nothing read from it) until JS has consumed. true: opened. */
bool js_try_open(struct loop *l, struct conn *c);

/* JS-thread sends (js_direct.c): a slot being released waits until no such send is using its fd. */
void js_direct_fence(struct loop *l, uint32_t slot);
/* Milliseconds since anything moved on the connection (the loop's I/O or the JS thread's sends). */
uint32_t conn_idle_for(const struct loop *l, const struct conn *c);

/* ---- backends ---- */
int uring_setup(struct loop *l, struct bunring_error *err); /* on the loop thread */
void uring_run(struct loop *l);
void uring_teardown(struct loop *l);
int epoll_setup(struct loop *l, struct bunring_error *err);
void epoll_run(struct loop *l);
void epoll_teardown(struct loop *l);

uint32_t probe_kernel(struct bunring_error *err); /* probe.c: BUNRING_FEAT_* the kernel supports */

#endif
