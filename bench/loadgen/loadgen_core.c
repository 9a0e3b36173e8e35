/*
 * loadgen_core.c — what the load generator's epoll and io_uring traffic loops share, so both measure
 * the same thing: the request contents, the send window (up to `pipeline` requests in flight), the
 * verification of replies as their bytes arrive, the accounting of a reply (inside or outside the
 * measured interval, latency histogram), the progress snapshot a worker publishes, and closing a
 * connection. It calls nothing in the other loadgen files.
 *
 * Echo workload: requests differ per connection and per request: a 16-byte header (connection index,
 * request number, a hash of both) and then a slice of the worker's random block at an offset taken
 * from that hash; the reply must be the same bytes. An echo of another connection's bytes, of another
 * request, or reordered bytes does not match. Table workloads: request s of a connection is a table
 * entry (see loadgen.h) and its reply must equal the reply table's entry, byte for byte.
 *
 * Replies are matched to requests in order and compared in place, chunk by chunk, as they arrive: a
 * chunk may end one reply and begin the next ones. Bytes that arrive when every started request has
 * its reply are "extras"; both they and a mismatch end the connection.
 */
#include "loadgen_internal.h"

#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

uint64_t lg_mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* ---- latency histogram (log-linear, see LG_HIST_*) ---- */

static uint32_t hist_index(uint64_t v)
{
    if (v >= (1ull << LG_HIST_MAX_EXP))
        v = (1ull << LG_HIST_MAX_EXP) - 1;
    if (v < 2u * LG_HIST_SUB)
        return (uint32_t)v;
    uint32_t e = 63u - (uint32_t)__builtin_clzll(v); /* floor(log2 v), >= LG_HIST_SUB_BITS + 1 */
    uint32_t shift = e - LG_HIST_SUB_BITS;
    return shift * LG_HIST_SUB + (uint32_t)(v >> shift);
}

/* The middle of a bucket (its values share the top 8 significant bits). */
static uint64_t hist_value(uint32_t idx)
{
    if (idx < 2u * LG_HIST_SUB)
        return idx;
    uint32_t shift = idx / LG_HIST_SUB - 1u;
    uint64_t lower = (uint64_t)(idx % LG_HIST_SUB + LG_HIST_SUB) << shift;
    return lower + ((1ull << shift) >> 1);
}

uint64_t lg_hist_quantile(const uint64_t *hist, uint64_t total, double q, uint64_t max)
{
    if (total == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)total + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > total)
        rank = total;
    uint64_t seen = 0;
    for (uint32_t i = 0; i < LG_HIST_BUCKETS; i++) {
        seen += hist[i];
        if (seen >= rank) {
            uint64_t v = hist_value(i);
            return v > max ? max : v;
        }
    }
    return max;
}

/* ---- worker and connection ---- */

void lg_publish(struct lg_worker *w)
{
    atomic_store_explicit(&w->pub.established, w->c.established, memory_order_relaxed);
    atomic_store_explicit(&w->pub.connect_errors, w->c.connect_errors, memory_order_relaxed);
    atomic_store_explicit(&w->pub.errors, w->c.mismatches + w->c.short_reads + w->c.extras + w->c.io_errors,
                          memory_order_relaxed);
    atomic_store_explicit(&w->pub.responses_total, w->c.responses_total, memory_order_relaxed);
    atomic_store_explicit(&w->pub.responses, w->c.responses, memory_order_relaxed);
}

void lg_conn_close(struct lg_worker *w, struct lg_conn *c)
{
    if (c->state == LG_CONN_CLOSED)
        return;
    close(c->fd);
    c->fd = -1;
    c->state = LG_CONN_CLOSED;
    w->live--;
}

/* ---- requests and replies ---- */

static inline uint32_t slot_of(const struct bunring_loadgen *lg, const struct lg_conn *c, uint32_t s)
{
    return c->slot0 + (lg->pipeline == 1 ? 0 : s % lg->pipeline);
}

/* Table workloads: the entry of request s. */
static inline uint32_t entry_of(const struct bunring_loadgen *lg, const struct lg_conn *c, uint32_t s)
{
    if (lg->request_count == 1)
        return 0;
    return (uint32_t)((c->entry0 + (uint64_t)(s % lg->request_count) * lg->entry_step) % lg->request_count);
}

void lg_conn_begin(struct lg_worker *w, struct lg_conn *c, uint32_t k)
{
    const struct bunring_loadgen *lg = w->lg;
    c->slot0 = k * lg->pipeline;
    c->entry0 = lg->echo ? 0 : c->index % lg->request_count;
    c->started = c->sent_seq = c->sent = c->done = c->received = 0;
    c->want_out = 0;
}

bool lg_conn_finished(const struct lg_worker *w, const struct lg_conn *c, uint64_t t)
{
    const struct bunring_loadgen *lg = w->lg;
    return c->done == c->started && (t >= atomic_load_explicit(&lg->end_ns, memory_order_relaxed) || lg_stopping(lg));
}

/* Echo: prepares request s (header bytes, body offset). */
static void echo_begin(struct lg_worker *w, const struct lg_conn *c, uint32_t s)
{
    struct lg_echo_slot *e = &w->echo[slot_of(w->lg, c, s)];
    uint64_t hash = lg_mix64(((uint64_t)c->index << 32) | s);
    memcpy(e->header, &c->index, 4);
    memcpy(e->header + 4, &s, 4);
    memcpy(e->header + 8, &hash, 8);
    e->body_off = (uint32_t)(hash >> 40) % LG_PATTERN_SPAN;
}

/* Iovecs for request s from byte `from` on (echo: header rest + body; table: one). */
static uint32_t request_iov(struct lg_worker *w, const struct lg_conn *c, uint32_t s, uint32_t from, struct iovec *iov)
{
    const struct bunring_loadgen *lg = w->lg;
    if (!lg->echo) {
        iov[0] = (struct iovec){.iov_base = lg->requests + (size_t)entry_of(lg, c, s) * lg->request_len + from,
                                .iov_len = lg->request_len - from};
        return 1;
    }
    struct lg_echo_slot *e = &w->echo[slot_of(lg, c, s)];
    uint32_t n = 0, hl = lg->hdr_len, len = lg->length;
    if (from < hl)
        iov[n++] = (struct iovec){.iov_base = e->header + from, .iov_len = hl - from};
    uint32_t body_at = from > hl ? from - hl : 0;
    if (len > hl)
        iov[n++] = (struct iovec){.iov_base = w->pattern + e->body_off + body_at, .iov_len = len - hl - body_at};
    return n;
}

uint32_t lg_send_iov(struct lg_worker *w, struct lg_conn *c, struct iovec *iov, uint32_t max, uint64_t t)
{
    const struct bunring_loadgen *lg = w->lg;
    uint32_t per = lg->echo ? 2u : 1u;
    bool open_window = t < atomic_load_explicit(&lg->end_ns, memory_order_relaxed) && !lg_stopping(lg);
    uint32_t limit = open_window ? c->done + lg->pipeline : c->started;
    uint32_t n = 0, from = c->sent;
    for (uint32_t s = c->sent_seq; s != limit && max - n >= per; s++, from = 0) {
        if (s == c->started) {
            w->starts[slot_of(lg, c, s)] = t;
            if (lg->echo)
                echo_begin(w, c, s);
            c->started++;
        }
        n += request_iov(w, c, s, from, iov + n);
    }
    return n;
}

void lg_sent(struct lg_worker *w, struct lg_conn *c, uint64_t n, uint64_t t)
{
    const struct bunring_loadgen *lg = w->lg;
    uint32_t len = lg->request_len;
    bool counted = lg_in_interval(lg, t);
    while (n > 0) {
        uint32_t left = len - c->sent;
        if (n < left) {
            c->sent += (uint32_t)n;
            return;
        }
        n -= left;
        c->sent = 0;
        c->sent_seq++;
        if (counted)
            w->c.requests++;
    }
}

/* Do n bytes received at offset `at` of reply s equal the expected reply there? */
static bool reply_matches(const struct lg_worker *w, const struct lg_conn *c, uint32_t s, uint32_t at, const uint8_t *got,
                          uint32_t n)
{
    const struct bunring_loadgen *lg = w->lg;
    if (!lg->echo) {
        uint32_t e = lg->reply_count == 1 ? 0 : entry_of(lg, c, s);
        return memcmp(got, lg->replies + (size_t)e * lg->reply_len + at, n) == 0;
    }
    const struct lg_echo_slot *e = &w->echo[slot_of(lg, c, s)];
    uint32_t hl = lg->hdr_len;
    if (at < hl) {
        uint32_t k = hl - at < n ? hl - at : n;
        if (memcmp(got, e->header + at, k) != 0)
            return false;
        got += k;
        at += k;
        n -= k;
    }
    return n == 0 || memcmp(got, w->pattern + e->body_off + (at - hl), n) == 0;
}

/* Reply `c->done` is complete at t: count it (latency from its request's start). */
static void reply_done(struct lg_worker *w, struct lg_conn *c, uint64_t t)
{
    struct bunring_loadgen *lg = w->lg;
    uint64_t lat = t - w->starts[slot_of(lg, c, c->done)];
    c->done++;
    c->received = 0;
    w->c.responses_total++;
    if (lg_in_interval(lg, t)) {
        w->c.responses++;
        w->hist[hist_index(lat)]++;
        w->c.lat_sum += lat;
        if (lat < w->c.lat_min)
            w->c.lat_min = lat;
        if (lat > w->c.lat_max)
            w->c.lat_max = lat;
    }
}

bool lg_take_reply(struct lg_worker *w, struct lg_conn *c, const uint8_t *data, uint32_t n, uint64_t t)
{
    uint32_t len = w->lg->reply_len;
    while (n > 0) {
        if (c->done == c->started) {
            w->c.extras++;
            return false;
        }
        uint32_t k = len - c->received < n ? len - c->received : n;
        if (!reply_matches(w, c, c->done, c->received, data, k)) {
            w->c.mismatches++;
            return false;
        }
        c->received += k;
        w->c.bytes_verified += k;
        data += k;
        n -= k;
        if (c->received == len)
            reply_done(w, c, t);
    }
    return true;
}
