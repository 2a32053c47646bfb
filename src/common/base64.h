/* SPDX-License-Identifier: MIT */
/*
 * Base64 (RFC 4648 section 4: the standard alphabet, '=' padding), for
 * header values that must stay plain ASCII: MCP's "=?base64?...?=" form of
 * Mcp-Name, which vramctl mcp writes and vramd reads. Both directions work
 * in caller buffers of a given size, so a value from a client is bounded by
 * the buffer it is decoded into.
 */
#ifndef VRAM_BASE64_H
#define VRAM_BASE64_H

#include <stddef.h>

/* Characters that n bytes encode to (without the NUL). */
#define VRAM_BASE64_ENCODED_LEN(n) ((((n) + 2) / 3) * 4)

/*
 * Encodes src[0..n) into dst, NUL-terminated. Returns 0, or -ENOSPC when
 * dst_size is under VRAM_BASE64_ENCODED_LEN(n) + 1 (dst untouched).
 */
int vram_base64_encode(const void *src, size_t n, char *dst, size_t dst_size);

/*
 * Decodes text[0..len) (padded, no whitespace) into dst and NUL-terminates
 * it; *ret_len gets the decoded bytes (without the NUL). Returns 0,
 * -EINVAL when text is not base64, or -ENOSPC when the bytes and the NUL do
 * not fit in dst_size. dst and *ret_len are untouched on failure.
 */
int vram_base64_decode(const char *text, size_t len, char *dst, size_t dst_size,
		       size_t *ret_len);

#endif
