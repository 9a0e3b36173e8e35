/*
 * abi.c — the small exported functions that describe the ABI itself: version, struct sizes, stat and
 * feature names (so ffi/ can check its copy of the order at load time) and the user_data
 * encode/decode wrappers tests use to check round-trips through the real code.
 */
#include "bunring.h"

#include <stddef.h>

static const char *const stat_names[BUNRING_STAT_COUNT] = {
    [BUNRING_STAT_CONN_ACCEPTED] = "connAccepted",
    [BUNRING_STAT_CONN_OPEN] = "connOpen",
    [BUNRING_STAT_CONN_CLOSED_EOF] = "connClosedEof",
    [BUNRING_STAT_CONN_CLOSED_RESET] = "connClosedReset",
    [BUNRING_STAT_CONN_CLOSED_STOP] = "connClosedStop",
    [BUNRING_STAT_CONN_CLOSED_IDLE] = "connClosedIdle",
    [BUNRING_STAT_CONN_REJECTED] = "connRejected",
    [BUNRING_STAT_ACCEPT_ERRORS] = "acceptErrors",
    [BUNRING_STAT_BYTES_IN] = "bytesIn",
    [BUNRING_STAT_BYTES_OUT] = "bytesOut",
    [BUNRING_STAT_BYTES_DISCARDED] = "bytesDiscarded",
    [BUNRING_STAT_RECV_COMPLETIONS] = "recvCompletions",
    [BUNRING_STAT_SEND_COMPLETIONS] = "sendCompletions",
    [BUNRING_STAT_SHORT_SENDS] = "shortSends",
    [BUNRING_STAT_SEND_EAGAIN] = "sendEagain",
    [BUNRING_STAT_ENOBUFS] = "enobufs",
    [BUNRING_STAT_PAUSES] = "pauses",
    [BUNRING_STAT_PAUSED_NOW] = "pausedNow",
    [BUNRING_STAT_RECV_REARMS] = "recvRearms",
    [BUNRING_STAT_ACCEPT_REARMS] = "acceptRearms",
    [BUNRING_STAT_STALE_COMPLETIONS] = "staleCompletions",
    [BUNRING_STAT_LOOP_ITERATIONS] = "loopIterations",
    [BUNRING_STAT_WAIT_CALLS] = "waitCalls",
    [BUNRING_STAT_ALLOCS_AFTER_START] = "allocsAfterStart",
    [BUNRING_STAT_BUFFERS_TOTAL] = "buffersTotal",
    [BUNRING_STAT_BUFFERS_IN_USE] = "buffersInUse",
    [BUNRING_STAT_ERRORS] = "errors",
};

_Static_assert(BUNRING_STAT_COUNT <= BUNRING_STATS_STRIDE, "stats stride too small");
_Static_assert(BUNRING_STATS_STRIDE % 8 == 0, "stats stride must fill whole cache lines");

static const char *const feature_names[BUNRING_FEAT_COUNT] = {
    "single_issuer", "defer_taskrun", "coop_taskrun", "sqpoll",       "registered_ring_fd",
    "multishot_accept", "multishot_recv", "buf_ring", "recv_bundle", "buf_ring_inc",
    "fixed_files", "no_sqarray", "send_bundle",
};

uint32_t bunring_abi_version(void) { return BUNRING_ABI_VERSION; }
uint32_t bunring_stat_count(void) { return BUNRING_STAT_COUNT; }
uint32_t bunring_config_size(void) { return (uint32_t)sizeof(struct bunring_config); }

const char *bunring_stat_name(uint32_t index)
{
    return index < BUNRING_STAT_COUNT ? stat_names[index] : NULL;
}

const char *bunring_feature_name(uint32_t bit)
{
    return bit < BUNRING_FEAT_COUNT ? feature_names[bit] : NULL;
}

uint64_t bunring_ud_encode(uint32_t op, uint32_t bid, uint32_t slot, uint32_t gen)
{
    return bunring_ud_pack(op, bid, slot, gen);
}
uint32_t bunring_ud_decode_op(uint64_t ud) { return bunring_ud_op(ud); }
uint32_t bunring_ud_decode_bid(uint64_t ud) { return bunring_ud_bid(ud); }
uint32_t bunring_ud_decode_slot(uint64_t ud) { return bunring_ud_slot(ud); }
uint32_t bunring_ud_decode_gen(uint64_t ud) { return bunring_ud_gen(ud); }
