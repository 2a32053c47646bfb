/* SPDX-License-Identifier: MIT */
/*
 * `vramctl top` (ctl/bin/top.c, linked into the vramctl binary with
 * ncurses; see vram_ctl_set_top in ctl.h).
 */
#ifndef VRAM_TOP_H
#define VRAM_TOP_H

struct vram_client_url;

/* Runs the live view until 'q'. url borrowed; token may be NULL. Returns an exit code. */
int vram_top_main(const struct vram_client_url *url, const char *token);

#endif
