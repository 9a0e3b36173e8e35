/*
 * loadgen_abi.c — what the load generator's library says about its own ABI: its version, and the
 * layout of every struct in loadgen.h (name, offset and size of each field, from offsetof/sizeof),
 * which ffi/loadgen.ts reads at load time through ffi/loader.ts so no offset is typed by hand in
 * TypeScript. Depends on loadgen.h only.
 */
#include "loadgen.h"

#include <stddef.h>

uint32_t bunring_loadgen_abi_version(void) { return BUNRING_LOADGEN_ABI_VERSION; }

/* One row per struct and per field; FIELD spells offsetof/sizeof once so a row cannot disagree with
 * the struct. Every field of every ABI struct is listed (ffi/ rejects a field it does not know). */
struct lg_layout_row {
    const char *name;
    uint32_t offset;
    uint32_t size;
};
#define STRUCT(type) {#type, 0, (uint32_t)sizeof(struct type)}
#define FIELD(type, member) {#type "." #member, (uint32_t)offsetof(struct type, member), (uint32_t)sizeof(((struct type *)0)->member)}

static const struct lg_layout_row layout_rows[] = {
    STRUCT(bunring_loadgen_config),
    FIELD(bunring_loadgen_config, port),
    FIELD(bunring_loadgen_config, connections),
    FIELD(bunring_loadgen_config, length),
    FIELD(bunring_loadgen_config, threads),
    FIELD(bunring_loadgen_config, warmup_ms),
    FIELD(bunring_loadgen_config, duration_ms),
    FIELD(bunring_loadgen_config, connect_timeout_ms),
    FIELD(bunring_loadgen_config, server_pid),
    FIELD(bunring_loadgen_config, flags),
    FIELD(bunring_loadgen_config, cpu_count),
    FIELD(bunring_loadgen_config, cpus),
    FIELD(bunring_loadgen_config, pipeline),
    FIELD(bunring_loadgen_config, request_len),
    FIELD(bunring_loadgen_config, request_count),
    FIELD(bunring_loadgen_config, reply_len),
    FIELD(bunring_loadgen_config, reply_count),
    FIELD(bunring_loadgen_config, requests),
    FIELD(bunring_loadgen_config, replies),

    STRUCT(bunring_loadgen_error),
    FIELD(bunring_loadgen_error, code),
    FIELD(bunring_loadgen_error, message),

    STRUCT(bunring_loadgen_progress),
    FIELD(bunring_loadgen_progress, phase),
    FIELD(bunring_loadgen_progress, done),
    FIELD(bunring_loadgen_progress, connections),
    FIELD(bunring_loadgen_progress, connect_errors),
    FIELD(bunring_loadgen_progress, errors),
    FIELD(bunring_loadgen_progress, responses_total),
    FIELD(bunring_loadgen_progress, responses),
    FIELD(bunring_loadgen_progress, now_ns),
    FIELD(bunring_loadgen_progress, start_ns),
    FIELD(bunring_loadgen_progress, end_ns),

    STRUCT(bunring_loadgen_result),
    FIELD(bunring_loadgen_result, status),
    FIELD(bunring_loadgen_result, connections),
    FIELD(bunring_loadgen_result, connect_errors),
    FIELD(bunring_loadgen_result, mismatches),
    FIELD(bunring_loadgen_result, short_reads),
    FIELD(bunring_loadgen_result, extras),
    FIELD(bunring_loadgen_result, io_errors),
    FIELD(bunring_loadgen_result, requests),
    FIELD(bunring_loadgen_result, responses),
    FIELD(bunring_loadgen_result, responses_total),
    FIELD(bunring_loadgen_result, bytes_verified),
    FIELD(bunring_loadgen_result, elapsed_ns),
    FIELD(bunring_loadgen_result, connect_ns),
    FIELD(bunring_loadgen_result, latency_min_ns),
    FIELD(bunring_loadgen_result, latency_mean_ns),
    FIELD(bunring_loadgen_result, latency_p50_ns),
    FIELD(bunring_loadgen_result, latency_p90_ns),
    FIELD(bunring_loadgen_result, latency_p99_ns),
    FIELD(bunring_loadgen_result, latency_p999_ns),
    FIELD(bunring_loadgen_result, latency_max_ns),
    FIELD(bunring_loadgen_result, server_cpu_ns),
    FIELD(bunring_loadgen_result, server_cpu_ticks),
    FIELD(bunring_loadgen_result, ticks_per_sec),
    FIELD(bunring_loadgen_result, client_cpu_ns),
    FIELD(bunring_loadgen_result, edge_skew_ns),
    FIELD(bunring_loadgen_result, uring_workers),
    FIELD(bunring_loadgen_result, workers),
    FIELD(bunring_loadgen_result, message),
};

const char *bunring_loadgen_layout_entry(uint32_t index, uint32_t out[2])
{
    if (index >= sizeof(layout_rows) / sizeof(layout_rows[0]))
        return NULL;
    out[0] = layout_rows[index].offset;
    out[1] = layout_rows[index].size;
    return layout_rows[index].name;
}
