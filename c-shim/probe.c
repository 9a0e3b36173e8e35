/*
 * probe.c — what the running kernel's io_uring supports, found at run time (the distro's liburing
 * headers may be older than the kernel: constants they lack are defined here). Used by probe() in TS,
 * and by server start to refuse io_uring with a clear message when it cannot work.
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>

#ifndef IORING_FEAT_RECVSEND_BUNDLE
#define IORING_FEAT_RECVSEND_BUNDLE (1U << 14)
#endif
#ifndef IORING_SETUP_NO_SQARRAY
#define IORING_SETUP_NO_SQARRAY (1U << 16)
#endif
#ifndef IOU_PBUF_RING_INC
#define IOU_PBUF_RING_INC 2
#endif

static int read_disabled_sysctl(void)
{
    FILE *f = fopen("/proc/sys/kernel/io_uring_disabled", "r");
    int v = 0;
    if (!f)
        return 0;
    if (fscanf(f, "%d", &v) != 1)
        v = 0;
    fclose(f);
    return v;
}

static int try_ring(unsigned flags, struct io_uring *ring, struct io_uring_params *p)
{
    memset(p, 0, sizeof(*p));
    p->flags = flags;
    return io_uring_queue_init_params(8, ring, p);
}

/* Registers (then drops) a small provided-buffer ring with the given flags: 0 when supported. */
static int try_buf_ring(struct io_uring *ring, uint16_t flags)
{
    static _Alignas(4096) struct io_uring_buf probe_ring[8];
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uint64_t)(uintptr_t)probe_ring;
    reg.ring_entries = 8;
    reg.bgid = 7;
    reg.pad = flags; /* named 'flags' in newer headers */
    int rc = io_uring_register_buf_ring(ring, &reg, 0);
    if (rc == 0)
        io_uring_unregister_buf_ring(ring, 7);
    return rc;
}

uint32_t probe_kernel(struct bunring_error *err)
{
    set_error(err, 0, "ok");
    if (read_disabled_sysctl() == 2) {
        set_error(err, -EPERM, "io_uring is disabled on this machine (sysctl kernel.io_uring_disabled=2); "
                               "set it to 0 to use io_uring");
        return 0;
    }
    struct io_uring ring;
    struct io_uring_params p;
    uint32_t feats = 0;
    int rc = try_ring(IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN, &ring, &p);
    if (rc == 0) {
        feats |= BUNRING_FEAT_SINGLE_ISSUER | BUNRING_FEAT_DEFER_TASKRUN | BUNRING_FEAT_COOP_TASKRUN;
    } else {
        rc = try_ring(IORING_SETUP_COOP_TASKRUN, &ring, &p);
        if (rc == 0)
            feats |= BUNRING_FEAT_COOP_TASKRUN;
        else
            rc = try_ring(0, &ring, &p);
    }
    if (rc < 0) {
        if (rc == -ENOSYS)
            set_error(err, rc, "this kernel has no io_uring (io_uring_setup: %s)", strerror(-rc));
        else if (rc == -EPERM || rc == -EACCES)
            set_error(err, rc, "io_uring is not permitted here (io_uring_setup: %s; blocked by seccomp, a "
                               "container policy or kernel.io_uring_disabled)", strerror(-rc));
        else
            set_error(err, rc, "io_uring could not be set up (io_uring_setup: %s)", strerror(-rc));
        return 0;
    }
    struct io_uring_probe *probe = io_uring_get_probe_ring(&ring);
    bool has_recv = probe && io_uring_opcode_supported(probe, IORING_OP_RECV);
    /* SEND_ZC arrived in 6.0 together with multishot recv: its presence dates the kernel. */
    bool is_6_0 = probe && io_uring_opcode_supported(probe, IORING_OP_SEND_ZC);
    if (probe)
        io_uring_free_probe(probe);
    if (has_recv && try_buf_ring(&ring, 0) == 0) {
        feats |= BUNRING_FEAT_BUF_RING | BUNRING_FEAT_MULTISHOT_ACCEPT;
        if (is_6_0)
            feats |= BUNRING_FEAT_MULTISHOT_RECV;
        if (try_buf_ring(&ring, IOU_PBUF_RING_INC) == 0)
            feats |= BUNRING_FEAT_BUF_RING_INC;
    }
    if (p.features & IORING_FEAT_RECVSEND_BUNDLE)
        feats |= BUNRING_FEAT_RECV_BUNDLE | BUNRING_FEAT_SEND_BUNDLE;
    feats |= BUNRING_FEAT_REGISTERED_RING_FD | BUNRING_FEAT_FIXED_FILES | BUNRING_FEAT_SQPOLL;
    io_uring_queue_exit(&ring);

    struct io_uring_params q;
    if (try_ring(IORING_SETUP_NO_SQARRAY, &ring, &q) == 0) {
        feats |= BUNRING_FEAT_NO_SQARRAY;
        io_uring_queue_exit(&ring);
    }
    if (!(feats & BUNRING_FEAT_MULTISHOT_RECV))
        set_error(err, -ENOTSUP, "this kernel's io_uring lacks multishot receive with provided buffers "
                                 "(needs Linux 6.0 or later)");
    return feats;
}

uint32_t bunring_probe(struct bunring_error *err, char *kernel_release, uint32_t release_len)
{
    if (kernel_release && release_len > 0) {
        struct utsname u;
        if (uname(&u) == 0)
            snprintf(kernel_release, release_len, "%s", u.release);
        else
            kernel_release[0] = '\0';
    }
    return probe_kernel(err);
}
