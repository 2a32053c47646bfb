/* SPDX-License-Identifier: MIT */
/* /proc/meminfo, bounded; see meminfo.h. */
#include "common/meminfo.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fsutil.h"

/*
 * The value of a line "Key:   123 kB" after its colon (rest, n bytes) in
 * bytes: "kB" is the kernel's word for KiB; no unit means a count or bytes.
 */
static int parse_value(const char *rest, size_t n, uint64_t *ret)
{
	size_t i = 0;
	while (i < n && (rest[i] == ' ' || rest[i] == '\t'))
		i++;
	if (i == n || rest[i] < '0' || rest[i] > '9')
		return -EINVAL;
	uint64_t v = 0;
	for (; i < n && rest[i] >= '0' && rest[i] <= '9'; i++) {
		unsigned d = (unsigned)(rest[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	while (i < n && rest[i] == ' ')
		i++;
	uint64_t mult = 1;
	if (n - i >= 2 && memcmp(rest + i, "kB", 2) == 0) {
		mult = 1024;
		i += 2;
	}
	while (i < n && (rest[i] == ' ' || rest[i] == '\t' || rest[i] == '\r'))
		i++;
	if (i != n)
		return -EINVAL;
	if (v > UINT64_MAX / mult)
		return -ERANGE;
	*ret = v * mult;
	return 0;
}

int vram_meminfo_parse(const char *text, size_t len, bool cut, struct vram_meminfo *ret)
{
	struct vram_meminfo mi = { 0 };
	bool has_total = false;
	size_t pos = 0;
	while (pos < len) {
		const char *line = text + pos;
		const char *nl = memchr(line, '\n', len - pos);
		if (!nl && cut)
			break; /* the read stopped inside this line */
		size_t n = nl ? (size_t)(nl - line) : len - pos;
		pos += n + (nl ? 1 : 0);
		const char *colon = memchr(line, ':', n);
		if (!colon)
			continue;
		size_t key_len = (size_t)(colon - line), rest_len = n - key_len - 1;
		uint64_t *slot = NULL;
		bool *seen = NULL;
		if (key_len == 8 && memcmp(line, "MemTotal", 8) == 0) {
			slot = &mi.total;
			seen = &has_total;
		} else if (key_len == 12 && memcmp(line, "MemAvailable", 12) == 0) {
			slot = &mi.available;
			seen = &mi.has_available;
		} else {
			continue;
		}
		int r = parse_value(colon + 1, rest_len, slot);
		if (r < 0)
			return r;
		*seen = true;
	}
	if (!has_total)
		return -EINVAL;
	*ret = mi;
	return 0;
}

int vram_meminfo_read(const char *path, struct vram_meminfo *ret)
{
	if (!path) {
		path = secure_getenv(VRAM_MEMINFO_ENV);
		if (!path || !*path)
			path = VRAM_MEMINFO_PATH;
	}
	int fd = vram_open_file(path, O_RDONLY, 0);
	if (fd < 0)
		return fd;
	char *text = NULL;
	/* one byte past the limit tells a file that was cut from one that ends there */
	ssize_t n = vram_read_bounded(fd, VRAM_MEMINFO_MAX_BYTES + 1, &text);
	close(fd);
	if (n < 0)
		return (int)n;
	bool cut = (size_t)n > VRAM_MEMINFO_MAX_BYTES;
	int r = vram_meminfo_parse(text, cut ? VRAM_MEMINFO_MAX_BYTES : (size_t)n, cut, ret);
	free(text);
	return r;
}
