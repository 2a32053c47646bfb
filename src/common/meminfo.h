/* SPDX-License-Identifier: MIT */
/*
 * The host's memory as the kernel reports it in /proc/meminfo: its total
 * and what is available to new allocations without swapping (MemAvailable),
 * the two numbers the host ledger (core/hostplan.h) starts from. Reading is
 * bounded (VRAM_MEMINFO_MAX_BYTES) and the file can be another one, so that
 * tests give the daemon a host of any size.
 */
#ifndef VRAM_MEMINFO_H
#define VRAM_MEMINFO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VRAM_MEMINFO_PATH "/proc/meminfo"
/*
 * For tests only: a file read in place of /proc/meminfo, in its format
 * ("MemTotal:  65536000 kB"), so that a test host has the memory it wants.
 */
#define VRAM_MEMINFO_ENV "VRAM_MEMINFO"
/* Bytes read at most; the real file is about 1.5 KiB. Lines past it are not read. */
#define VRAM_MEMINFO_MAX_BYTES (64 * 1024)

struct vram_meminfo {
	uint64_t total;     /* bytes: MemTotal */
	uint64_t available; /* bytes: MemAvailable, when has_available */
	bool has_available; /* kernels before 3.14 do not report it */
};

/*
 * Parses the text of /proc/meminfo (len bytes, NUL not needed). Only whole
 * lines count: a last line without its newline is ignored when cut is true
 * (the read stopped at its limit). Returns 0 and fills *ret, or -EINVAL
 * (no MemTotal, or a value of the two that does not parse), -ERANGE (a
 * value too large for bytes); *ret is untouched on failure.
 */
int vram_meminfo_parse(const char *text, size_t len, bool cut, struct vram_meminfo *ret);

/*
 * Reads and parses path; NULL means $VRAM_MEMINFO when set, else
 * /proc/meminfo. At most VRAM_MEMINFO_MAX_BYTES are read. Returns 0, or
 * -errno: the open's or read's error (-ENXIO: not a regular file), or
 * vram_meminfo_parse's.
 */
int vram_meminfo_read(const char *path, struct vram_meminfo *ret);

#endif
