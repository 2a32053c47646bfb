/* SPDX-License-Identifier: MIT */
/*
 * A workload's log file: appended to, rotated past a size, its last bytes
 * kept in memory for the `failed` state's tail. Written by the supervisor
 * (what a workload prints) and by an output relay once the daemon is gone
 * (relay.h), with the same code and limits; never through a symbolic link.
 * While another process writes the file (an output relay handing the file
 * back to a new vramd), the daemon's writes are held in memory.
 */
#ifndef VRAM_LOGFILE_H
#define VRAM_LOGFILE_H

#include <stddef.h>
#include <stdint.h>

struct vram_logfile;

#define VRAM_LOGFILE_TAIL_MAX 4096  /* bytes of recent output kept in memory */
#define VRAM_LOGFILE_HOLD_MAX 65536 /* bytes kept while held; more is dropped and counted */

/*
 * Opens (appends to) path, creating missing parent directories. Once the file
 * would grow past max_bytes it is rotated: path → path.1 → … → path.keep
 * (keep 0: truncated in place). Caller frees with vram_logfile_close.
 * Returns 0 or -errno.
 */
int vram_logfile_open(const char *path, uint64_t max_bytes, unsigned keep,
		      struct vram_logfile **ret);
/*
 * Appends bytes. Returns 0 or -errno (the data is then still kept in the
 * tail). While held, keeps them in memory instead (up to
 * VRAM_LOGFILE_HOLD_MAX bytes; more are counted and dropped) and returns 0.
 */
int vram_logfile_write(struct vram_logfile *l, const void *data, size_t len);
/* Writes a line "[vramd] <text>\n" (for start/exit notes). */
int vram_logfile_note(struct vram_logfile *l, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/*
 * Copies up to size-1 of the most recent bytes (starting at a line boundary
 * when it can) into buf, NUL-terminated. Returns the length.
 */
size_t vram_logfile_tail(const struct vram_logfile *l, char *buf, size_t size);
/*
 * Holds the file: nothing is written to it until every hold is released
 * (holds are counted: one per process that writes the file meanwhile).
 * The last release reopens the file, since the other writer appended and
 * may have rotated it (the size counted so far is stale), and writes what
 * was held, then a line saying how many bytes were dropped, if any. A
 * release without a hold does nothing.
 */
void vram_logfile_hold(struct vram_logfile *l);
void vram_logfile_release(struct vram_logfile *l);
const char *vram_logfile_path(const struct vram_logfile *l); /* borrowed */
uint64_t vram_logfile_size(const struct vram_logfile *l);   /* bytes in the current file */
uint64_t vram_logfile_max_bytes(const struct vram_logfile *l); /* bytes per file */
unsigned vram_logfile_keep(const struct vram_logfile *l);      /* rotated files kept */
void vram_logfile_close(struct vram_logfile *l);             /* accepts NULL */

#endif
