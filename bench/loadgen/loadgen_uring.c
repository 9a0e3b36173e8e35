/*
 * loadgen_uring.c — the load generator's io_uring traffic loop: the same workload, verification and
 * accounting as the epoll loop (both take them from loadgen_core.c), with far fewer system calls.
 * One io_uring_enter per loop iteration submits every send and reaps every completion; with epoll
 * each round trip costs a send and a recv call of its own, and on a 2-core machine the client's
 * system calls, not the server, set the ceiling of what can be measured.
 *
 * Per connection: one multishot recv selecting buffers from a provided-buffer ring (each chunk of
 * replies is verified in place and its buffer goes back to the ring at once), and at most one sendmsg
 * in flight, carrying every request the window allows (echo: header + pattern slice per request;
 * table: one entry per request; a short send re-sends the rest). When a send completes, or replies
 * free the window while no send is in flight, the next sendmsg goes out. Connections were opened by the
 * connect phase (loadgen_epoll.c) and are taken off its epoll set here; closing shuts the socket
 * down first, because the armed recv holds a reference that would otherwise keep it open.
 *
 * The ring is created on the worker thread (SINGLE_ISSUER | DEFER_TASKRUN tie it to the task that
 * submits); every buffer is allocated in start(). If the ring or the buffer ring cannot be set up,
 * the worker runs on epoll instead and the result says how many workers used io_uring. Nothing here
 * calls the epoll loop or the runner.
 */
#include "loadgen_internal.h"

#include <errno.h>
#include <liburing.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define LG_BUF_GROUP 0
#define LG_SQ_ENTRIES 1024u
#define LG_CQE_BATCH 512u
#define LG_BUF_SIZE_MAX (64u << 10)
#define LG_BUF_COUNT_MIN 64u
#define LG_BUF_COUNT_MAX 32768u       /* the kernel's limit for one buffer ring */
#define LG_POOL_BYTES_MAX (64u << 20) /* receive buffers per worker, at most */

/*
 * user_data of the load generator's operations: bits 0..7 the operation, bits 8..39 the connection's
 * index in its worker. Connections are never reopened, so no generation is needed: a completion for
 * a connection that was closed meanwhile only gives its buffer back.
 */
enum lg_op { LG_OP_SEND = 1, LG_OP_RECV = 2 };

static uint64_t ud_pack(enum lg_op op, uint32_t conn) { return (uint64_t)op | ((uint64_t)conn << 8); }
static enum lg_op ud_op(uint64_t ud) { return (enum lg_op)(ud & 0xffu); }
static uint32_t ud_conn(uint64_t ud) { return (uint32_t)(ud >> 8); }

struct lg_uconn {
    struct msghdr msg;    /* read by the kernel while the send is in flight, with its iovecs */
    bool recv_armed;
    bool send_inflight;
    bool starved;         /* its recv ended with ENOBUFS: re-armed once buffers are back */
};

struct lg_uring {
    struct io_uring ring;
    bool ring_ready;
    struct io_uring_buf_ring *br;
    uint8_t *bufs;
    uint32_t buf_size, buf_count;
    uint32_t returned;    /* buffers added to the ring since the last advance */
    uint64_t batch_ns;    /* when the completions being handled were reaped: their timestamp */
    struct lg_uconn *uc;  /* one per connection of the worker */
    struct iovec *iovs;   /* iov_cap per connection */
    uint32_t iov_cap;
    uint32_t *starved;    /* indices of starved connections */
    uint32_t nstarved;
};

static uint32_t pow2_at_least(uint32_t v)
{
    uint32_t p = 1;
    while (p < v)
        p <<= 1;
    return p;
}

int lg_uring_alloc(struct lg_worker *w)
{
    struct lg_uring *u = calloc(1, sizeof *u);
    if (!u)
        return -ENOMEM;
    w->uring = u;
    /* One buffer holds a whole window of replies when it can; two per connection keep ENOBUFS rare. */
    const struct bunring_loadgen *lg = w->lg;
    uint64_t window = (uint64_t)lg->reply_len * lg->pipeline;
    uint32_t size = window >= LG_BUF_SIZE_MAX ? LG_BUF_SIZE_MAX : ((uint32_t)window + 63u) & ~63u;
    u->buf_size = size < 64u ? 64u : size;
    uint64_t cap = (uint64_t)lg->pipeline * (lg->echo ? 2u : 1u);
    u->iov_cap = cap > LG_IOV_MAX ? LG_IOV_MAX : (uint32_t)cap;
    uint32_t count = pow2_at_least(2u * w->nconns);
    count = count < LG_BUF_COUNT_MIN ? LG_BUF_COUNT_MIN : (count > LG_BUF_COUNT_MAX ? LG_BUF_COUNT_MAX : count);
    while (count > LG_BUF_COUNT_MIN && (uint64_t)count * u->buf_size > LG_POOL_BYTES_MAX)
        count >>= 1;
    u->buf_count = count;
    if (posix_memalign((void **)&u->br, 4096, (size_t)count * sizeof(struct io_uring_buf)) != 0)
        u->br = NULL;
    u->bufs = malloc((size_t)count * u->buf_size);
    u->uc = calloc(w->nconns, sizeof *u->uc);
    u->iovs = malloc((size_t)w->nconns * u->iov_cap * sizeof *u->iovs);
    u->starved = malloc((size_t)w->nconns * sizeof *u->starved);
    return u->br && u->bufs && u->uc && u->iovs && u->starved ? 0 : -ENOMEM;
}

void lg_uring_free(struct lg_worker *w)
{
    struct lg_uring *u = w->uring;
    if (!u)
        return;
    free(u->br);
    free(u->bufs);
    free(u->uc);
    free(u->iovs);
    free(u->starved);
    free(u);
    w->uring = NULL;
}

static void give_buffer(struct lg_uring *u, uint16_t bid)
{
    io_uring_buf_ring_add(u->br, u->bufs + (size_t)bid * u->buf_size, u->buf_size, bid,
                          io_uring_buf_ring_mask(u->buf_count), (int)u->returned);
    u->returned++;
}

int lg_uring_setup(struct lg_worker *w)
{
    struct lg_uring *u = w->uring;
    uint32_t cq = pow2_at_least(4u * w->nconns);
    const unsigned tries[3] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
        IORING_SETUP_COOP_TASKRUN,
        0,
    };
    int rc = -ENOSYS;
    for (int i = 0; i < 3 && !u->ring_ready; i++) {
        struct io_uring_params p;
        memset(&p, 0, sizeof p);
        p.flags = tries[i] | IORING_SETUP_CQSIZE;
        p.cq_entries = cq < 4096u ? 4096u : (cq > 65536u ? 65536u : cq);
        rc = io_uring_queue_init_params(LG_SQ_ENTRIES, &u->ring, &p);
        u->ring_ready = rc == 0;
    }
    if (!u->ring_ready)
        return rc;
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof reg);
    reg.ring_addr = (uint64_t)(uintptr_t)u->br;
    reg.ring_entries = u->buf_count;
    reg.bgid = LG_BUF_GROUP;
    rc = io_uring_register_buf_ring(&u->ring, &reg, 0);
    if (rc != 0) {
        io_uring_queue_exit(&u->ring);
        u->ring_ready = false;
        return rc;
    }
    io_uring_buf_ring_init(u->br);
    for (uint32_t i = 0; i < u->buf_count; i++)
        give_buffer(u, (uint16_t)i);
    io_uring_buf_ring_advance(u->br, (int)u->returned);
    u->returned = 0;
    return 0;
}

static struct io_uring_sqe *get_sqe(struct lg_uring *u)
{
    struct io_uring_sqe *sqe;
    while (!(sqe = io_uring_get_sqe(&u->ring)))
        io_uring_submit(&u->ring); /* the SQ is full: hand it to the kernel and take a fresh entry */
    return sqe;
}

static void arm_recv(struct lg_worker *w, uint32_t idx)
{
    struct lg_uring *u = w->uring;
    struct io_uring_sqe *sqe = get_sqe(u);
    io_uring_prep_recv_multishot(sqe, w->conns[idx].fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = LG_BUF_GROUP;
    io_uring_sqe_set_data64(sqe, ud_pack(LG_OP_RECV, idx));
    u->uc[idx].recv_armed = true;
}

/* Sends what is left of the started requests and what the window allows; false if nothing. */
static bool send_more(struct lg_worker *w, uint32_t idx)
{
    struct lg_uring *u = w->uring;
    struct lg_conn *c = &w->conns[idx];
    struct lg_uconn *uc = &u->uc[idx];
    struct iovec *iov = u->iovs + (size_t)idx * u->iov_cap;
    uint32_t n = lg_send_iov(w, c, iov, u->iov_cap, u->batch_ns);
    if (n == 0)
        return false;
    memset(&uc->msg, 0, sizeof uc->msg);
    uc->msg.msg_iov = iov;
    uc->msg.msg_iovlen = n;
    struct io_uring_sqe *sqe = get_sqe(u);
    io_uring_prep_sendmsg(sqe, c->fd, &uc->msg, MSG_NOSIGNAL | MSG_WAITALL);
    io_uring_sqe_set_data64(sqe, ud_pack(LG_OP_SEND, idx));
    uc->send_inflight = true;
    return true;
}

static void close_conn(struct lg_worker *w, struct lg_conn *c)
{
    if (c->state == LG_CONN_CLOSED)
        return;
    shutdown(c->fd, SHUT_RDWR); /* ends the armed recv, which holds the socket open past close() */
    lg_conn_close(w, c);
}

/* With no send in flight: a clean close when the connection is finished, else the next send. */
static void pump(struct lg_worker *w, uint32_t idx)
{
    struct lg_conn *c = &w->conns[idx];
    if (c->state != LG_CONN_OPEN || w->uring->uc[idx].send_inflight)
        return;
    if (lg_conn_finished(w, c, w->uring->batch_ns))
        close_conn(w, c);
    else
        send_more(w, idx);
}

static void on_send(struct lg_worker *w, uint32_t idx, int res)
{
    struct lg_conn *c = &w->conns[idx];
    w->uring->uc[idx].send_inflight = false;
    if (c->state != LG_CONN_OPEN)
        return;
    if (res < 0) {
        w->c.io_errors++;
        close_conn(w, c);
        return;
    }
    lg_sent(w, c, (uint64_t)res, w->uring->batch_ns);
    pump(w, idx);
}

/* n bytes of replies: verified in place, then the window they freed is used. */
static void on_data(struct lg_worker *w, uint32_t idx, const uint8_t *data, uint32_t n)
{
    struct lg_conn *c = &w->conns[idx];
    if (!lg_take_reply(w, c, data, n, w->uring->batch_ns)) {
        close_conn(w, c);
        return;
    }
    pump(w, idx);
}

static void on_recv(struct lg_worker *w, uint32_t idx, const struct io_uring_cqe *cqe)
{
    struct lg_uring *u = w->uring;
    struct lg_conn *c = &w->conns[idx];
    struct lg_uconn *uc = &u->uc[idx];
    if (!(cqe->flags & IORING_CQE_F_MORE))
        uc->recv_armed = false;
    if (cqe->flags & IORING_CQE_F_BUFFER) {
        uint16_t bid = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        if (cqe->res > 0 && c->state == LG_CONN_OPEN)
            on_data(w, idx, u->bufs + (size_t)bid * u->buf_size, (uint32_t)cqe->res);
        give_buffer(u, bid);
    } else if (c->state == LG_CONN_OPEN) {
        if (cqe->res == 0) {
            w->c.short_reads++; /* EOF from the server while the run still needed the connection */
            close_conn(w, c);
        } else if (cqe->res == -ENOBUFS) {
            if (!uc->starved) {
                uc->starved = true;
                u->starved[u->nstarved++] = idx;
            }
        } else if (cqe->res < 0) {
            w->c.io_errors++;
            close_conn(w, c);
        }
    }
    if (c->state == LG_CONN_OPEN && !uc->recv_armed && !uc->starved)
        arm_recv(w, idx); /* a multishot recv that ended for another reason (e.g. CQ overflow) */
}

static void handle(struct lg_worker *w, const struct io_uring_cqe *cqe)
{
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    uint32_t idx = ud_conn(ud);
    if (idx >= w->nconns)
        return;
    if (ud_op(ud) == LG_OP_SEND)
        on_send(w, idx, cqe->res);
    else if (ud_op(ud) == LG_OP_RECV)
        on_recv(w, idx, cqe);
}

static void rearm_starved(struct lg_worker *w)
{
    struct lg_uring *u = w->uring;
    for (uint32_t i = 0; i < u->nstarved; i++) {
        uint32_t idx = u->starved[i];
        u->uc[idx].starved = false;
        if (w->conns[idx].state == LG_CONN_OPEN && !u->uc[idx].recv_armed)
            arm_recv(w, idx);
    }
    u->nstarved = 0;
}

/* Runs requests until the interval ends, then lets in-flight replies finish for up to LG_DRAIN_NS. */
void lg_uring_traffic(struct lg_worker *w)
{
    struct bunring_loadgen *lg = w->lg;
    struct lg_uring *u = w->uring;
    uint64_t end = atomic_load_explicit(&lg->end_ns, memory_order_relaxed);
    u->batch_ns = lg_now_ns();
    for (uint32_t i = 0; i < w->nconns; i++) {
        struct lg_conn *c = &w->conns[i];
        if (c->state != LG_CONN_OPEN)
            continue;
        /* Off the epoll set used to connect: its wake-up callback would run on every arrival. */
        epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        lg_conn_begin(w, c, i);
        arm_recv(w, i);
        pump(w, i);
    }
    while (!lg_stopping(lg) && w->live > 0) {
        uint64_t t = lg_now_ns();
        uint64_t until = t < end ? end : end + LG_DRAIN_NS;
        if (t >= until)
            break;
        uint64_t left = until - t, slice = (uint64_t)LG_WAIT_SLICE_MS * LG_NS_PER_MS;
        if (left > slice)
            left = slice;
        struct __kernel_timespec ts = {.tv_sec = (long long)(left / LG_NS_PER_S), .tv_nsec = (long long)(left % LG_NS_PER_S)};
        struct io_uring_cqe *cqe;
        int rc = io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL);
        if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EBUSY && rc != -EAGAIN) {
            w->fatal_errno = -rc;
            break;
        }
        /* One clock read per batch, not per completion: every completion in it had happened by now,
         * and this is the earliest moment the loop sees any of them. */
        u->batch_ns = lg_now_ns();
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&u->ring, head, cqe)
        {
            handle(w, cqe);
            if (++seen == LG_CQE_BATCH)
                break;
        }
        io_uring_cq_advance(&u->ring, seen);
        if (u->returned) {
            io_uring_buf_ring_advance(u->br, (int)u->returned);
            u->returned = 0;
        }
        if (u->nstarved)
            rearm_starved(w);
        lg_publish(w);
    }
}

void lg_uring_finish(struct lg_worker *w)
{
    struct lg_uring *u = w->uring;
    for (uint32_t i = 0; i < w->nconns; i++)
        close_conn(w, &w->conns[i]);
    if (u->ring_ready) {
        io_uring_queue_exit(&u->ring); /* cancels what is still armed; no buffer is read after this */
        u->ring_ready = false;
    }
}
