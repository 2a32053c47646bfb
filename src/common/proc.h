/* SPDX-License-Identifier: MIT */
/*
 * What /proc says about a process, for telling a process apart from another
 * that got the same pid later: its start time (clock ticks since boot,
 * field 22 of /proc/<pid>/stat; a pid is reused only by a process that
 * starts later) and its command line. The hook channel uses the start time
 * to tell processes this vramd cannot have spawned; the state file records
 * it so that a later vramd adopts only the very process it recorded.
 */
#ifndef VRAM_PROC_H
#define VRAM_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Bytes of /proc/<pid>/stat read: the name is at most 64 bytes, the rest numbers. */
#define VRAM_PROC_STAT_MAX 1024
/* Bytes of a command line vram_proc_cmdline_is compares; a longer argv never matches. */
#define VRAM_PROC_CMDLINE_MAX (128 * 1024)

/* Clock ticks since boot now, the clock of the start time. Returns 0 if unknown. */
uint64_t vram_proc_boot_ticks_now(void);

/* The start time of pid in clock ticks since boot. Returns 0 or -errno (-ENOENT: no such process). */
int vram_proc_start_ticks(pid_t pid, uint64_t *ret_ticks);

/*
 * Reads pid's command line: its argv words, each ending in '\0', into buf
 * (borrowed, size bytes). Returns the length in bytes, -E2BIG when it does
 * not fit, or -errno (a kernel thread or zombie has an empty one: 0).
 */
ssize_t vram_proc_cmdline(pid_t pid, char *buf, size_t size);

/*
 * Whether pid runs exactly argv (n words, borrowed): the "same command line"
 * check. False when it cannot be read or argv is longer than
 * VRAM_PROC_CMDLINE_MAX bytes.
 */
bool vram_proc_cmdline_is(pid_t pid, const char *const *argv, size_t n);

/*
 * pid (as this process's pid namespace numbers it) as the innermost pid
 * namespace it is in numbers it: the last field of NSpid in
 * /proc/<pid>/status, which is pid itself for a process of our own
 * namespace, 1 for a container's first process. Returns 0 or -errno
 * (-ENOENT: no such process; -ENODATA: the kernel has no NSpid, < 4.1).
 */
int vram_proc_inner_pid(pid_t pid, pid_t *ret);

/* Bytes of pid's memory resident in RAM now (/proc/<pid>/statm). 0 or -errno. */
int vram_proc_rss(pid_t pid, uint64_t *ret_bytes);

#endif
