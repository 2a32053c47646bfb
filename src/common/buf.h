/* SPDX-License-Identifier: MIT */
/*
 * A growable byte buffer with a hard maximum, for everything whose size a
 * client controls (request bodies, log tails, protocol frames). Appending
 * past the maximum fails with -E2BIG and leaves the buffer as it was.
 * The data is always NUL-terminated (the NUL is not counted in len).
 */
#ifndef VRAM_BUF_H
#define VRAM_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct vram_buf {
	char *data; /* owned; NULL until the first append */
	size_t len; /* bytes, without the trailing NUL */
	size_t cap; /* bytes allocated */
	size_t max; /* bytes; appends beyond this fail */
};

void vram_buf_init(struct vram_buf *b, size_t max_bytes);
void vram_buf_done(struct vram_buf *b);
void vram_buf_reset(struct vram_buf *b);

/* Return 0, -E2BIG (would exceed max) or -ENOMEM. */
int vram_buf_append(struct vram_buf *b, const void *data, size_t len);
int vram_buf_puts(struct vram_buf *b, const char *s);
int vram_buf_printf(struct vram_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int vram_buf_vprintf(struct vram_buf *b, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

/*
 * For reading straight into the buffer: makes room for up to want more bytes
 * (fewer when the maximum leaves fewer, never 0) and returns where they go
 * in *ret_p and how many fit in *ret_avail. Write there, then call
 * vram_buf_commit with the count written. Returns 0, -E2BIG (full) or
 * -ENOMEM.
 */
int vram_buf_space(struct vram_buf *b, size_t want, char **ret_p, size_t *ret_avail);
/* Counts n bytes written after vram_buf_space (n <= the space given). */
void vram_buf_commit(struct vram_buf *b, size_t n);
/* Drops the first n bytes (n <= len), moving the rest to the front. */
void vram_buf_consume(struct vram_buf *b, size_t n);

/*
 * Gives memory back: when more than cap_max bytes are allocated and the data
 * (with its NUL) fits in cap_max, the data moves to a fresh allocation of
 * cap_max bytes (none when it is empty) and the large one is freed whole, so
 * that a buffer a large message once grew does not stay large. Moving rather
 * than shrinking in place leaves no small block pinning the middle of a large
 * freed area. Out of memory, it keeps what it has.
 */
void vram_buf_shrink(struct vram_buf *b, size_t cap_max);

/* Hands the data to the caller (caller frees; never NULL unless out of
 * memory) and resets the buffer. */
char *vram_buf_take(struct vram_buf *b);

#endif
