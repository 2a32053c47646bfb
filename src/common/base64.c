/* SPDX-License-Identifier: MIT */
/* Base64; see base64.h. */
#include "common/base64.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int vram_base64_encode(const void *src, size_t n, char *dst, size_t dst_size)
{
	const unsigned char *p = src;
	if (n > (SIZE_MAX - 3) / 4 * 3 || dst_size < VRAM_BASE64_ENCODED_LEN(n) + 1)
		return -ENOSPC;
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < n)
			v |= p[i + 2];
		dst[o++] = alphabet[(v >> 18) & 63];
		dst[o++] = alphabet[(v >> 12) & 63];
		dst[o++] = i + 1 < n ? alphabet[(v >> 6) & 63] : '=';
		dst[o++] = i + 2 < n ? alphabet[v & 63] : '=';
	}
	dst[o] = '\0';
	return 0;
}

/* The 6-bit value of c, or -1. */
static int sextet(char c)
{
	const char *at = c ? strchr(alphabet, c) : NULL;
	return at ? (int)(at - alphabet) : -1;
}

int vram_base64_decode(const char *text, size_t len, char *dst, size_t dst_size,
		       size_t *ret_len)
{
	if (len % 4 != 0)
		return -EINVAL;
	size_t pad = 0;
	if (len > 0 && text[len - 1] == '=')
		pad = len > 1 && text[len - 2] == '=' ? 2 : 1;
	size_t out_len = len / 4 * 3 - pad;
	if (out_len + 1 > dst_size)
		return -ENOSPC;
	/* Checked whole before any byte is written. */
	for (size_t i = 0; i < len - pad; i++)
		if (sextet(text[i]) < 0)
			return -EINVAL;
	size_t o = 0;
	for (size_t i = 0; i < len; i += 4) {
		uint32_t v = 0;
		for (size_t k = 0; k < 4; k++)
			v = v << 6 | (uint32_t)(i + k < len - pad ? sextet(text[i + k]) : 0);
		for (size_t k = 0; k < 3 && o < out_len; k++)
			dst[o++] = (char)((v >> (16 - 8 * k)) & 0xff);
	}
	dst[o] = '\0';
	*ret_len = out_len;
	return 0;
}
