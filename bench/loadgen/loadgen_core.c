/*
 * loadgen_core.c — what the load generator's epoll and io_uring traffic loops share, so both measure
 * the same thing: the message contents and their verification, the accounting of a round trip
 * (inside or outside the measured interval, latency histogram), the progress snapshot a worker
 * publishes, and closing a connection. It calls nothing in the other loadgen files.
 *
 * Messages differ per connection and per round: a 16-byte header (connection index, round counter, a
 * hash of both) and then a slice of the worker's random block at an offset taken from that hash. An
 * echo of another connection's bytes, of an older round, or reordered bytes does not match.
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
    atomic_store_explicit(&w->pub.errors, w->c.mismatches + w->c.short_reads + w->c.io_errors,
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

/* ---- messages ---- */

void lg_message_begin(struct lg_conn *c, uint64_t t)
{
    uint64_t hash = lg_mix64(((uint64_t)c->index << 32) | c->counter);
    memcpy(c->header, &c->index, 4);
    memcpy(c->header + 4, &c->counter, 4);
    memcpy(c->header + 8, &hash, 8);
    c->body_off = (uint32_t)(hash >> 40) % LG_PATTERN_SPAN;
    c->sent = 0;
    c->received = 0;
    c->started_ns = t;
}

bool lg_chunk_matches(const struct lg_worker *w, const struct lg_conn *c, uint32_t at, const uint8_t *got, uint32_t n)
{
    uint32_t hl = w->lg->hdr_len;
    if (at < hl) {
        uint32_t k = hl - at < n ? hl - at : n;
        if (memcmp(got, c->header + at, k) != 0)
            return false;
        got += k;
        at += k;
        n -= k;
    }
    return n == 0 || memcmp(got, w->pattern + c->body_off + (at - hl), n) == 0;
}

bool lg_round_trip_next(struct lg_worker *w, struct lg_conn *c, uint64_t t)
{
    struct bunring_loadgen *lg = w->lg;
    uint64_t lat = t - c->started_ns;
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
    if (t >= atomic_load_explicit(&lg->end_ns, memory_order_relaxed) || lg_stopping(lg))
        return false;
    c->counter++;
    lg_message_begin(c, t);
    return true;
}
