/*
 * app.h — the seam between a loop's I/O and what is done with the bytes.
 *
 * A loop (loop_epoll.c, loop_uring.c) owns the sockets: it accepts, receives, sends a connection's
 * queue of pool buffers in order, closes, runs the timers, the stop/drain sequence and the pool
 * policy. What the received bytes become is an application's business, and there are two:
 *   - echo (app_echo.c): the bytes go back to the peer; the default of serve();
 *   - handler mode (app_js.c): the bytes go to the JS thread through the channel (js_channel.c) and
 *     what JS writes comes back as commands.
 * The loop calls an application through `struct app` (uSockets' on_open/on_data/on_writable/on_close
 * split), and the application acts on a connection through the loop's primitives declared below. The
 * two backends receive differently (epoll: the application reads when the socket is readable; io_uring:
 * the kernel fills a pool buffer and the application is handed it), so each application has one
 * `struct app` per backend; everything else is shared.
 */
#ifndef BUNRING_APP_H
#define BUNRING_APP_H

#include "internal.h"

struct app {
    const char *name;
    /* A connection was accepted. true: receive from it now; false: the application parked it on the
     * starved list and lets it receive later (from wake_starved). */
    bool (*opened)(struct loop *l, struct conn *c);
    /* The connection closes (called once, before its slot is released); reason: its close counter. */
    void (*closing)(struct loop *l, struct conn *c, enum bunring_stat reason);
    /* n bytes from the head of the connection's queue reached the kernel. */
    void (*sent)(struct loop *l, struct conn *c, uint32_t n);
    /* Something changed (bytes left the queue, stop began, a command arrived): FIN, close or resume
     * reading as the connection's state asks. May close the connection. */
    void (*settle)(struct loop *l, struct conn *c);
    /* Connections on the starved list may go on if the application has room again. */
    void (*wake_starved)(struct loop *l);
    /* Work from elsewhere (JS's commands), taken after every batch of events. */
    void (*poll)(struct loop *l);
    /* Before checking whether to stop: make what the batch produced visible (JS's events). */
    void (*publish)(struct loop *l);
    /* The loop is about to sleep. true: work arrived meanwhile, do not sleep. */
    bool (*sleep_begin)(struct loop *l);
    void (*sleep_end)(struct loop *l);

    /* epoll: the socket is readable (or a connection waiting for room may read again). The
     * application reads; false: the connection was closed. */
    bool (*readable)(struct loop *l, struct conn *c);

    /* io_uring: a receive filled pool buffer bid with len bytes (more: the multishot receive stays
     * armed). The application owns the buffer from here. */
    void (*received)(struct loop *l, struct conn *c, uint16_t bid, uint32_t len, bool more);
    /* io_uring: the peer's EOF arrived (CONN_PEER_EOF is set). */
    void (*peer_eof)(struct loop *l, struct conn *c);
    /* io_uring: whether a receive cancelled by a pause may be armed again now. */
    bool (*may_receive)(const struct conn *c);
    /* io_uring: connections need ordinary fds (not direct descriptors). */
    bool plain_fds;
};

extern const struct app app_echo_epoll, app_echo_uring; /* app_echo.c */
extern const struct app app_js_epoll, app_js_uring;     /* app_js.c */

/* ---- epoll loop primitives (loop_epoll.c) ---- */
void ep_close(struct loop *l, struct conn *c, enum bunring_stat reason);
void ep_want_write(struct loop *l, struct conn *c, bool on); /* EPOLLOUT armed while bytes are queued */
/* Sends what the socket takes at once (when nothing is queued before it) and queues in pool buffers
 * what it did not, at most `room` bytes (queue_room or queue_room_fair); *taken = bytes sent or
 * queued. false: the connection closed (a socket error). */
bool ep_send(struct loop *l, struct conn *c, const uint8_t *data, uint32_t n, uint32_t room, uint32_t *taken);
/* Stopping with our FIN sent: reads and drops input until EAGAIN or the peer's EOF. false: closed. */
bool ep_discard_input(struct loop *l, struct conn *c);
/* Flushes the queue when writable, resumes a pause below the limit, then the application's turn. */
void ep_service(struct loop *l, struct conn *c, bool readable, bool writable);

/* ---- io_uring loop primitives (loop_uring.c) ---- */
void ur_close(struct loop *l, struct conn *c, enum bunring_stat reason);
void ur_arm_recv(struct loop *l, struct conn *c);
void ur_cancel_recv(struct loop *l, struct conn *c);
/* While JS has a connection paused nothing is received from it, so its peer's reset would go
 * unnoticed: a poll (errors only) watches it, and the reset closes it as a failed receive would. */
void ur_watch_errors(struct loop *l, struct conn *c);
void ur_unwatch_errors(struct loop *l, struct conn *c);
void ur_start_send(struct loop *l, struct conn *c); /* sends the queue's head; one send in flight */
void ur_return_buffer(struct loop *l, uint16_t bid); /* back to the receive ring, or a send buffer to its list */
void ur_try_finish_close(struct loop *l, struct conn *c); /* frees a closing slot once nothing is outstanding */
void ur_shutdown_write(struct loop *l, struct conn *c); /* FIN after what was sent; sets CONN_WR_SHUT */

#endif
