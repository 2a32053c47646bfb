/* SPDX-License-Identifier: MIT */
/*
 * vramctl's commands: status, plan, start|stop|offload|restore|release,
 * timeout, logs. The binary's main() only calls vram_ctl_main.
 *
 * Exit codes: 0 ok, 1 failed (the daemon refused or could not be reached),
 * 2 usage. Results go to stdout, messages to stderr.
 */
#ifndef VRAM_CTL_H
#define VRAM_CTL_H

#include <stdint.h>

#define VRAM_CTL_EXIT_OK 0
#define VRAM_CTL_EXIT_FAILED 1
#define VRAM_CTL_EXIT_USAGE 2

int vram_ctl_main(int argc, char **argv);

struct vram_client_url;
/*
 * `vramctl top`, the live terminal view: it needs ncurses, so it lives in
 * the vramctl binary (ctl/bin/top.c) and is handed here by its main():
 * url is where the daemon is (borrowed), token may be NULL. Returns an
 * exit code.
 */
typedef int (*vram_ctl_top_fn)(const struct vram_client_url *url, const char *token);
void vram_ctl_set_top(vram_ctl_top_fn top);

/*
 * The line printed after a successful action, e.g.
 * "llm: offloaded in 0.31 s (20.0GiB)". Written into buf; returns buf.
 */
char *vram_ctl_action_line(const char *workload, const char *action, double seconds, uint64_t bytes,
			   const char *engine, char *buf, unsigned size);

#endif
