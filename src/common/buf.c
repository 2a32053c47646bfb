/* SPDX-License-Identifier: MIT */
/* Bounded growable buffer; see buf.h. */
#include "common/buf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void vram_buf_init(struct vram_buf *b, size_t max_bytes)
{
	*b = (struct vram_buf){ .max = max_bytes };
}

void vram_buf_done(struct vram_buf *b)
{
	if (!b)
		return;
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

void vram_buf_reset(struct vram_buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

static int buf_reserve(struct vram_buf *b, size_t extra)
{
	if (extra > b->max || b->len > b->max - extra)
		return -E2BIG;
	size_t need = b->len + extra + 1;
	if (need <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 64;
	while (cap < need)
		cap *= 2;
	if (cap > b->max + 1)
		cap = b->max + 1;
	char *p = realloc(b->data, cap);
	if (!p)
		return -ENOMEM;
	b->data = p;
	b->cap = cap;
	return 0;
}

int vram_buf_space(struct vram_buf *b, size_t want, char **ret_p, size_t *ret_avail)
{
	if (b->len >= b->max)
		return -E2BIG;
	if (want > b->max - b->len)
		want = b->max - b->len;
	if (want == 0)
		want = 1;
	int r = buf_reserve(b, want);
	if (r < 0)
		return r;
	*ret_p = b->data + b->len;
	*ret_avail = b->cap - 1 - b->len;
	if (*ret_avail > b->max - b->len)
		*ret_avail = b->max - b->len;
	return 0;
}

void vram_buf_commit(struct vram_buf *b, size_t n)
{
	b->len += n;
	b->data[b->len] = '\0';
}

void vram_buf_consume(struct vram_buf *b, size_t n)
{
	if (n >= b->len) {
		vram_buf_reset(b);
		return;
	}
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
	b->data[b->len] = '\0';
}

int vram_buf_append(struct vram_buf *b, const void *data, size_t len)
{
	int r = buf_reserve(b, len);
	if (r < 0)
		return r;
	if (len)
		memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = '\0';
	return 0;
}

int vram_buf_puts(struct vram_buf *b, const char *s)
{
	return vram_buf_append(b, s, strlen(s));
}

int vram_buf_vprintf(struct vram_buf *b, const char *fmt, va_list ap)
{
	va_list ap2;
	va_copy(ap2, ap);
	int n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0)
		return -EINVAL;
	int r = buf_reserve(b, (size_t)n);
	if (r < 0)
		return r;
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
	return 0;
}

int vram_buf_printf(struct vram_buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = vram_buf_vprintf(b, fmt, ap);
	va_end(ap);
	return r;
}

void vram_buf_shrink(struct vram_buf *b, size_t cap_max)
{
	if (b->cap <= cap_max || b->len + 1 > cap_max)
		return;
	if (b->len == 0) {
		vram_buf_done(b);
		return;
	}
	char *p = malloc(cap_max);
	if (!p)
		return;
	memcpy(p, b->data, b->len + 1);
	free(b->data);
	b->data = p;
	b->cap = cap_max;
}

char *vram_buf_take(struct vram_buf *b)
{
	char *p = b->data;
	if (!p)
		p = strdup("");
	*b = (struct vram_buf){ .max = b->max };
	return p;
}
