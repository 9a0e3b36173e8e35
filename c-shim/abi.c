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
    [BUNRING_STAT_CONN_CLOSED_STALLED] = "connClosedStalled",
    [BUNRING_STAT_CONN_REFUSED_STOPPING] = "connRefusedStopping",
    [BUNRING_STAT_BUFFERS_PAUSED] = "buffersPaused",
    [BUNRING_STAT_PRESSURE_EVENTS] = "pressureEvents",
    [BUNRING_STAT_JS_EVENTS] = "jsEvents",
    [BUNRING_STAT_JS_COMMANDS] = "jsCommands",
    [BUNRING_STAT_JS_DOORBELLS] = "jsDoorbells",
    [BUNRING_STAT_JS_WAKEUPS] = "jsWakeups",
    [BUNRING_STAT_JS_DIRECT_SENDS] = "jsDirectSends",
    [BUNRING_STAT_JS_DIRECT_BYTES] = "jsDirectBytes",
    [BUNRING_STAT_JS_DIRECT_SHORT] = "jsDirectShort",
    [BUNRING_STAT_JS_DIRECT_EAGAIN] = "jsDirectEagain",
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

/* One row per struct and per field; FIELD spells offsetof/sizeof once so a row cannot disagree with
 * the struct. Every field of every ABI struct is listed (ffi/ rejects a field it does not know). */
struct layout_row {
    const char *name;
    uint32_t offset;
    uint32_t size;
};
#define STRUCT(type) {#type, 0, (uint32_t)sizeof(struct type)}
#define FIELD(type, member) {#type "." #member, (uint32_t)offsetof(struct type, member), (uint32_t)sizeof(((struct type *)0)->member)}

static const struct layout_row layout_rows[] = {
    STRUCT(bunring_config),
    FIELD(bunring_config, backend),
    FIELD(bunring_config, port),
    FIELD(bunring_config, threads),
    FIELD(bunring_config, buffer_size),
    FIELD(bunring_config, buffer_count),
    FIELD(bunring_config, max_connections),
    FIELD(bunring_config, max_pending_bytes),
    FIELD(bunring_config, backlog),
    FIELD(bunring_config, drain_ms),
    FIELD(bunring_config, idle_timeout_ms),
    FIELD(bunring_config, stall_timeout_ms),
    FIELD(bunring_config, flags),
    FIELD(bunring_config, cpu_count),
    FIELD(bunring_config, cpus),
    STRUCT(bunring_js_record),
    FIELD(bunring_js_record, type_gen),
    FIELD(bunring_js_record, slot),
    FIELD(bunring_js_record, offset),
    FIELD(bunring_js_record, len),
    STRUCT(bunring_js_channel),
    FIELD(bunring_js_channel, ev_tail),
    FIELD(bunring_js_channel, rx_tail),
    FIELD(bunring_js_channel, cmd_head),
    FIELD(bunring_js_channel, tx_head),
    FIELD(bunring_js_channel, c_sleeping),
    FIELD(bunring_js_channel, c_wants_room),
    FIELD(bunring_js_channel, loop_pad),
    FIELD(bunring_js_channel, ev_head),
    FIELD(bunring_js_channel, rx_head),
    FIELD(bunring_js_channel, cmd_tail),
    FIELD(bunring_js_channel, tx_tail),
    FIELD(bunring_js_channel, js_sleeping),
    FIELD(bunring_js_channel, js_pad),
    FIELD(bunring_js_channel, events),
    FIELD(bunring_js_channel, commands),
    FIELD(bunring_js_channel, rx),
    FIELD(bunring_js_channel, tx),
    STRUCT(bunring_error),
    FIELD(bunring_error, code),
    FIELD(bunring_error, message),
};

struct limit_row {
    const char *field;
    uint32_t min;
    uint32_t max;
};

static const struct limit_row limit_rows[] = {
    {"port", 0, BUNRING_PORT_MAX},
    {"threads", 1, BUNRING_MAX_THREADS},
    {"buffer_size", BUNRING_BUFFER_SIZE_MIN, BUNRING_BUFFER_SIZE_MAX},
    {"buffer_count", BUNRING_BUFFER_COUNT_MIN, BUNRING_BUFFER_COUNT_MAX},
    {"max_connections", 1, BUNRING_MAX_CONNECTIONS_MAX},
    {"max_pending_bytes", BUNRING_MAX_PENDING_MIN, BUNRING_MAX_PENDING_MAX},
    {"backlog", 1, BUNRING_BACKLOG_MAX},
    {"drain_ms", 0, BUNRING_DRAIN_MS_MAX},
    {"idle_timeout_ms", 0, BUNRING_IDLE_TIMEOUT_MS_MAX},
    {"stall_timeout_ms", 0, BUNRING_STALL_TIMEOUT_MS_MAX},
    {"cpu_count", 0, BUNRING_MAX_CPUS},
};

const char *bunring_limit_entry(uint32_t index, uint32_t out[2])
{
    if (index >= sizeof(limit_rows) / sizeof(limit_rows[0]))
        return NULL;
    out[0] = limit_rows[index].min;
    out[1] = limit_rows[index].max;
    return limit_rows[index].field;
}

const char *bunring_layout_entry(uint32_t index, uint32_t out[2])
{
    if (index >= sizeof(layout_rows) / sizeof(layout_rows[0]))
        return NULL;
    out[0] = layout_rows[index].offset;
    out[1] = layout_rows[index].size;
    return layout_rows[index].name;
}

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
