/* SPDX-License-Identifier: MIT */
/*
 * vram_hookchan_send_path until the hook channel speaks protocol version 3
 * (PARK with the park file's path): every send is refused, so that a park
 * through the hook engine fails with a clear reason and the workload stays
 * offloaded. The channel's own implementation replaces this file.
 */
#include "daemon/hookchan.h"

#include <errno.h>

int vram_hookchan_send_path(struct vram_hookchan *hc, pid_t pid, enum vram_hookchan_op op,
			    unsigned flags, const char *path, vram_hookchan_done_cb cb, void *arg,
			    struct vram_hookchan_req **ret_req)
{
	(void)hc, (void)pid, (void)op, (void)flags, (void)path, (void)cb, (void)arg, (void)ret_req;
	return -EOPNOTSUPP;
}
