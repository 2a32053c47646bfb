/* SPDX-License-Identifier: MIT */
/* String helpers; see strutil.h. */
#include "common/strutil.h"

#include <stdio.h>

#include <stdint.h>
#include <string.h>

static size_t min3(size_t a, size_t b, size_t c)
{
	size_t m = a < b ? a : b;
	return m < c ? m : c;
}

size_t vram_str_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	if (la > VRAM_STR_DISTANCE_MAX_LEN || lb > VRAM_STR_DISTANCE_MAX_LEN)
		return SIZE_MAX;

	/* Three rows are enough: transpositions look two rows back. */
	size_t rows[3][VRAM_STR_DISTANCE_MAX_LEN + 1];
	size_t *prev2 = rows[0], *prev = rows[1], *cur = rows[2];
	for (size_t j = 0; j <= lb; j++)
		prev[j] = j;
	for (size_t i = 1; i <= la; i++) {
		cur[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
			cur[j] = min3(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost);
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
			    prev2[j - 2] + 1 < cur[j])
				cur[j] = prev2[j - 2] + 1;
		}
		size_t *t = prev2;
		prev2 = prev;
		prev = cur;
		cur = t;
	}
	return prev[lb];
}

const char *vram_str_closest(const char *word, const char *const *candidates, size_t n)
{
	const char *best = NULL;
	size_t best_d = SIZE_MAX;
	for (size_t i = 0; i < n; i++) {
		size_t d = vram_str_distance(word, candidates[i]);
		if (d < best_d) {
			best_d = d;
			best = candidates[i];
		}
	}
	if (!best)
		return NULL;
	size_t lw = strlen(word), lc = strlen(best);
	size_t longer = lw > lc ? lw : lc;
	if (best_d > 2 || best_d * 3 > longer + 2)
		return NULL;
	return best;
}

/* ---- UTF-8 ---- */

size_t vram_utf8_char_len(const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *)s;
	if (len == 0)
		return 0;
	unsigned char c = u[0];
	size_t n;
	uint32_t cp;
	if (c < 0x80)
		return 1;
	if (c < 0xc2) /* a continuation byte, or the overlong 0xc0/0xc1 */
		return 0;
	if (c < 0xe0) {
		n = 2;
		cp = c & 0x1f;
	} else if (c < 0xf0) {
		n = 3;
		cp = c & 0x0f;
	} else if (c < 0xf5) {
		n = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	if (len < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((u[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (u[i] & 0x3f);
	}
	/* overlong forms, surrogates, beyond Unicode */
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || (cp >= 0xd800 && cp <= 0xdfff) ||
	    cp > 0x10ffff)
		return 0;
	return n;
}

bool vram_utf8_valid(const char *s, size_t len)
{
	size_t i = 0;
	while (i < len) {
		size_t n = vram_utf8_char_len(s + i, len - i);
		if (n == 0)
			return false;
		i += n;
	}
	return true;
}

/* Appends n bytes if they fit with a NUL after them. Returns false when they do not. */
static bool put(char *out, size_t size, size_t *off, const char *p, size_t n)
{
	if (*off + n + 1 > size)
		return false;
	memcpy(out + *off, p, n);
	*off += n;
	return true;
}

size_t vram_utf8_sanitize(char *out, size_t size, const char *in, size_t len)
{
	static const char replacement[] = "\xef\xbf\xbd"; /* U+FFFD */
	size_t off = 0, i = 0;
	if (size == 0)
		return 0;
	while (i < len && in[i]) {
		size_t n = vram_utf8_char_len(in + i, len - i);
		bool ok = n ? put(out, size, &off, in + i, n)
			    : put(out, size, &off, replacement, sizeof(replacement) - 1);
		if (!ok)
			break;
		i += n ? n : 1;
	}
	out[off] = '\0';
	return off;
}

size_t vram_str_escape_control(char *out, size_t size, const char *in, size_t len)
{
	size_t off = 0, i = 0;
	if (size == 0)
		return 0;
	while (i < len) {
		unsigned char c = (unsigned char)in[i];
		size_t n = vram_utf8_char_len(in + i, len - i);
		char esc[5];
		bool ok;
		if (n > 0 && c >= 0x20 && c != 0x7f) {
			ok = put(out, size, &off, in + i, n);
		} else {
			n = 1;
			if (c == '\n' || c == '\r' || c == '\t') {
				esc[0] = '\\';
				esc[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
				ok = put(out, size, &off, esc, 2);
			} else {
				static const char hex[] = "0123456789abcdef";
				esc[0] = '\\';
				esc[1] = 'x';
				esc[2] = hex[c >> 4];
				esc[3] = hex[c & 0xf];
				ok = put(out, size, &off, esc, 4);
			}
		}
		if (!ok)
			break;
		i += n;
	}
	out[off] = '\0';
	return off;
}

char *vram_str_vprintf(const char *fmt, va_list ap)
{
	char *s = NULL;
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	return s;
}
