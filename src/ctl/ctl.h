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

/*
 * The line printed after a successful action, e.g.
 * "llm: offloaded in 0.31 s (20.0GiB)". Written into buf; returns buf.
 */
char *vram_ctl_action_line(const char *workload, const char *action, double seconds, uint64_t bytes,
			   const char *engine, char *buf, unsigned size);

#endif
