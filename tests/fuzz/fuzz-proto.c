/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the hook protocol decoder: feeds the input as a byte
 * stream, decodes message after message like the channel does, and checks
 * that every decoded message encodes back to the same bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/hook_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0;
	while (off < size) {
		struct vram_hook_proto_msg m;
		size_t avail = size - off;
		if (avail > VRAM_HOOK_PROTO_MAX_MESSAGE)
			avail = VRAM_HOOK_PROTO_MAX_MESSAGE;
		long n = vram_hook_proto_decode(data + off, avail, &m);
		if (n <= 0)
			break;
		uint8_t again[VRAM_HOOK_PROTO_MAX_MESSAGE];
		long e = vram_hook_proto_encode(&m, again, sizeof(again));
		/* Strings decode with their NUL and bytes after it; the encoder
		 * zeroes those, so compare decoded values instead of bytes. */
		struct vram_hook_proto_msg m2;
		if (e != n || vram_hook_proto_decode(again, (size_t)e, &m2) != e || m2.type != m.type ||
		    m2.version != m.version || m2.seq != m.seq)
			abort();
		off += (size_t)n;
	}
	return 0;
}
