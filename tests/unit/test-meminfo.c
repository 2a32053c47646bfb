/* SPDX-License-Identifier: MIT */
/*
 * /proc/meminfo: MemTotal and MemAvailable come out in bytes (the kernel's
 * "kB" is KiB), a file without MemTotal or with a value that does not parse
 * is refused rather than read as 0, a value too large for bytes is out of
 * range, the read stops at 64 KiB (a line cut there does not count) and
 * never blocks on a FIFO, and $VRAM_MEMINFO puts another file in its place.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/meminfo.h"

static const char sample[] = "MemTotal:       65536000 kB\n"
			     "MemFree:         1200000 kB\n"
			     "MemAvailable:   40000000 kB\n"
			     "Buffers:           12345 kB\n"
			     "HugePages_Total:       0\n";

static int parse(const char *text, struct vram_meminfo *mi)
{
	return vram_meminfo_parse(text, strlen(text), false, mi);
}

static void test_parse(void **state)
{
	(void)state;
	struct vram_meminfo mi;
	assert_int_equal(parse(sample, &mi), 0);
	assert_true(mi.total == UINT64_C(65536000) * 1024);
	assert_true(mi.has_available);
	assert_true(mi.available == UINT64_C(40000000) * 1024);

	/* an old kernel without MemAvailable: known not to be there, not 0 */
	assert_int_equal(parse("MemTotal: 1000 kB\nMemFree: 10 kB\n", &mi), 0);
	assert_true(mi.total == 1024000);
	assert_false(mi.has_available);

	/* the last line without its newline still counts when the file ended there */
	assert_int_equal(parse("MemFree: 1 kB\nMemTotal: 2 kB", &mi), 0);
	assert_true(mi.total == 2048);
}

static void test_parse_refuses(void **state)
{
	(void)state;
	struct vram_meminfo mi = { .total = 7 };
	/* no MemTotal: refused, and the output is untouched */
	assert_int_equal(parse("MemFree: 1 kB\nMemAvailable: 5 kB\n", &mi), -EINVAL);
	assert_int_equal(parse("", &mi), -EINVAL);
	assert_int_equal(parse("MemTotalx: 5 kB\nMemTota: 5 kB\n", &mi), -EINVAL);
	assert_int_equal(parse("MemTotal: lots\n", &mi), -EINVAL);
	assert_int_equal(parse("MemTotal: 12 kB trailing\n", &mi), -EINVAL);
	assert_int_equal(parse("MemTotal: -5 kB\n", &mi), -EINVAL);
	assert_int_equal(parse("MemTotal: 5 kB\nMemAvailable:\n", &mi), -EINVAL);
	/* too large for bytes: as a number, and once multiplied by 1024 */
	assert_int_equal(parse("MemTotal: 99999999999999999999 kB\n", &mi), -ERANGE);
	assert_int_equal(parse("MemTotal: 18014398509481984 kB\n", &mi), -ERANGE);
	assert_true(mi.total == 7);
	/* a line cut by the read's limit is not read as a smaller number */
	const char cut[] = "MemFree: 1 kB\nMemTotal: 123";
	assert_int_equal(vram_meminfo_parse(cut, strlen(cut), true, &mi), -EINVAL);
	assert_int_equal(vram_meminfo_parse(cut, strlen(cut), false, &mi), 0);
	assert_true(mi.total == 123);
}

static char dir[64];

static const char *write_file(const char *name, const char *text, size_t len)
{
	static char path[128];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, len, f), len);
	fclose(f);
	return path;
}

static void test_read_file_and_env(void **state)
{
	(void)state;
	struct vram_meminfo mi;
	const char *path = write_file("meminfo", sample, strlen(sample));
	assert_int_equal(vram_meminfo_read(path, &mi), 0);
	assert_true(mi.total == UINT64_C(65536000) * 1024);

	/* NULL reads $VRAM_MEMINFO when it is set ... */
	setenv(VRAM_MEMINFO_ENV, path, 1);
	memset(&mi, 0, sizeof(mi));
	assert_int_equal(vram_meminfo_read(NULL, &mi), 0);
	assert_true(mi.available == UINT64_C(40000000) * 1024);
	setenv(VRAM_MEMINFO_ENV, "/nonexistent/meminfo", 1);
	assert_int_equal(vram_meminfo_read(NULL, &mi), -ENOENT);
	/* ... and the host's own file otherwise, whose total is not 0 */
	unsetenv(VRAM_MEMINFO_ENV);
	memset(&mi, 0, sizeof(mi));
	assert_int_equal(vram_meminfo_read(NULL, &mi), 0);
	assert_true(mi.total > 0);
}

/* At most 64 KiB are read: MemTotal past them is not found, however large the file. */
static void test_read_is_bounded(void **state)
{
	(void)state;
	size_t pad = VRAM_MEMINFO_MAX_BYTES + 100;
	char *big = malloc(pad + 64);
	assert_non_null(big);
	memset(big, 'x', pad);
	for (size_t i = 79; i < pad; i += 80)
		big[i] = '\n';
	int n = snprintf(big + pad, 64, "\nMemTotal: 5 kB\n");
	struct vram_meminfo mi;
	assert_int_equal(vram_meminfo_read(write_file("big", big, pad + (size_t)n), &mi), -EINVAL);
	/* the same line before the limit is found */
	memcpy(big, "MemTotal: 5 kB\n", 15);
	assert_int_equal(vram_meminfo_read(write_file("big2", big, pad + (size_t)n), &mi), 0);
	assert_true(mi.total == 5120);
	free(big);

	/* a FIFO in its place is refused at once, not waited on */
	char fifo[128];
	snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	assert_int_equal(vram_meminfo_read(fifo, &mi), -ENXIO);
	unlink(fifo);
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/test-meminfo-XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	const char *names[] = { "meminfo", "big", "big2" };
	char path[128];
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		unlink(path);
	}
	rmdir(dir);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_parse_refuses),
		cmocka_unit_test(test_read_file_and_env),
		cmocka_unit_test(test_read_is_bounded),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
