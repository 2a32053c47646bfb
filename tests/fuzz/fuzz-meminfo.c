/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the /proc/meminfo parser: any bytes, read whole or as if
 * cut at the read's limit, give the two sizes or an error, and never a
 * crash or a read out of bounds.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/meminfo.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* A copy without a terminator, so that reads past the end are caught. */
	char *text = malloc(size ? size : 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	struct vram_meminfo mi = { .total = 1 };
	int r = vram_meminfo_parse(text, size, size % 2, &mi);
	if (r != 0 && r != -EINVAL && r != -ERANGE)
		abort();
	if (r != 0 && mi.total != 1) /* untouched on failure */
		abort();
	free(text);
	return 0;
}
