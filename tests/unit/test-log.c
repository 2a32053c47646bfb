/* SPDX-License-Identifier: MIT */
/*
 * The log sink: one call is one line whatever its arguments hold (a client's
 * newline cannot forge a second line), control characters and bytes that
 * are not UTF-8 are escaped, the threshold holds, and the log file is never
 * reached through a symbolic link.
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

#include "common/log.h"

struct dir {
	char path[64];
	char log[128];
};

static int setup(void **state)
{
	struct dir *d = calloc(1, sizeof(*d));
	snprintf(d->path, sizeof(d->path), "/tmp/vram-test-log-XXXXXX");
	if (!mkdtemp(d->path))
		return -1;
	snprintf(d->log, sizeof(d->log), "%s/vramd.log", d->path);
	*state = d;
	return 0;
}

static int teardown(void **state)
{
	struct dir *d = *state;
	char cmd[128];
	vram_log_done();
	snprintf(cmd, sizeof(cmd), "rm -rf %s", d->path);
	if (system(cmd) != 0)
		return -1;
	free(d);
	return 0;
}

/* The whole file (caller frees). */
static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	char *buf = calloc(1, 65536);
	size_t n = fread(buf, 1, 65535, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static size_t count_lines(const char *s)
{
	size_t n = 0;
	for (; *s; s++)
		n += *s == '\n';
	return n;
}

static void test_one_call_one_line(void **state)
{
	struct dir *d = *state;
	assert_int_equal(vram_log_init(VRAM_LOG_DEBUG, d->log), 0);
	/* what a client put in an MCP method name, logged at debug */
	vram_debug("MCP notification %s", "x\ninjected line");
	vram_info("tab\there, CR\rthere, ESC\x1b[2J, DEL\x7f, bell\a, cut \xe2\x82 end");
	vram_log_errno(VRAM_LOG_WARN, -ENOENT, "Failed to open %s", "a\nb");
	vram_log_done();

	char *text = slurp(d->log);
	assert_int_equal(count_lines(text), 3);
	assert_non_null(strstr(text, " debug MCP notification x\\ninjected line\n"));
	assert_non_null(strstr(text, "tab\\there, CR\\rthere, ESC\\x1b[2J, DEL\\x7f, bell\\x07, "
				     "cut \\xe2\\x82 end\n"));
	assert_non_null(strstr(text, " warn  Failed to open a\\nb: No such file or directory\n"));
	/* no byte below 0x20 but the newlines that end lines */
	for (const char *p = text; *p; p++)
		if ((unsigned char)*p < 0x20 && *p != '\n')
			fail_msg("control byte 0x%02x in the log", (unsigned char)*p);
	free(text);
}

static void test_long_message_stays_one_line(void **state)
{
	struct dir *d = *state;
	char msg[3000];
	for (size_t i = 0; i < sizeof(msg) - 1; i++)
		msg[i] = "\n\x01"[i % 2];
	msg[sizeof(msg) - 1] = '\0';
	assert_int_equal(vram_log_init(VRAM_LOG_INFO, d->log), 0);
	vram_info("%s", msg);
	vram_log_done();
	char *text = slurp(d->log);
	assert_int_equal(count_lines(text), 1);
	free(text);
}

static void test_threshold(void **state)
{
	struct dir *d = *state;
	assert_int_equal(vram_log_init(VRAM_LOG_WARN, d->log), 0);
	vram_info("not written");
	vram_debug("not written");
	vram_warn("written");
	vram_log_done();
	char *text = slurp(d->log);
	assert_int_equal(count_lines(text), 1);
	assert_null(strstr(text, "not written"));
	free(text);
	enum vram_log_level level;
	assert_int_equal(vram_log_level_parse("debug", &level), 0);
	assert_int_equal(level, VRAM_LOG_DEBUG);
	assert_int_equal(vram_log_level_parse("loud", &level), -EINVAL);
}

static void test_symlink_not_followed(void **state)
{
	struct dir *d = *state;
	char victim[128];
	snprintf(victim, sizeof(victim), "%s/victim", d->path);
	FILE *f = fopen(victim, "w");
	assert_non_null(f);
	fputs("precious\n", f);
	fclose(f);
	assert_int_equal(symlink(victim, d->log), 0);

	assert_int_equal(vram_log_init(VRAM_LOG_INFO, d->log), -ELOOP);
	vram_log_init(VRAM_LOG_ERROR, NULL); /* back to stderr */
	char *text = slurp(victim);
	assert_string_equal(text, "precious\n");
	free(text);

	/* and the file a log does get is not inherited by children */
	unlink(d->log);
	assert_int_equal(vram_log_init(VRAM_LOG_INFO, d->log), 0);
	int found = 0;
	for (int fd = 3; fd < 64; fd++) {
		char link[64], target[256];
		snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
		ssize_t n = readlink(link, target, sizeof(target) - 1);
		if (n <= 0)
			continue;
		target[n] = '\0';
		if (strcmp(target, d->log) == 0) {
			found = 1;
			assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
		}
	}
	assert_true(found);
	vram_log_done();
}

/*
 * With stderr the journal (JOURNAL_STREAM is its dev:ino), a line is the
 * syslog priority and the message: journald shows one timestamp, not two,
 * and filters by priority. Any other stderr keeps the timestamped format.
 */
static void test_journal_format(void **state)
{
	struct dir *d = *state;
	int saved = dup(STDERR_FILENO);
	int fd = open(d->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(saved >= 0 && fd >= 0);
	assert_true(dup2(fd, STDERR_FILENO) >= 0);
	struct stat st;
	assert_int_equal(fstat(STDERR_FILENO, &st), 0);
	char stream[64];
	snprintf(stream, sizeof(stream), "%llu:%llu", (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino);
	setenv("JOURNAL_STREAM", stream, 1);
	assert_true(vram_log_fd_is_journal(STDERR_FILENO));
	assert_int_equal(vram_log_init(VRAM_LOG_DEBUG, NULL), 0);
	vram_info("listening");
	vram_warn("slow");
	vram_err("failed");
	vram_debug("detail");
	/* another stream (the inode differs): the usual format */
	snprintf(stream, sizeof(stream), "%llu:%llu", (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino + 1);
	setenv("JOURNAL_STREAM", stream, 1);
	assert_false(vram_log_fd_is_journal(STDERR_FILENO));
	assert_int_equal(vram_log_init(VRAM_LOG_DEBUG, NULL), 0);
	vram_info("plain");
	setenv("JOURNAL_STREAM", "garbage", 1);
	assert_false(vram_log_fd_is_journal(STDERR_FILENO));
	unsetenv("JOURNAL_STREAM");
	fflush(stderr);
	assert_true(dup2(saved, STDERR_FILENO) >= 0);
	close(saved);
	close(fd);
	vram_log_done();

	char *text = slurp(d->log);
	const char *want = "<6>listening\n<4>slow\n<3>failed\n<7>detail\n";
	assert_memory_equal(text, want, strlen(want));
	const char *plain = text + strlen(want);
	/* "YYYY-MM-DD HH:MM:SS.mmm info  plain" */
	assert_true(plain[0] >= '0' && plain[0] <= '9' && plain[4] == '-');
	assert_non_null(strstr(plain, " info  plain\n"));
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_one_call_one_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_long_message_stays_one_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_threshold, setup, teardown),
		cmocka_unit_test_setup_teardown(test_symlink_not_followed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_journal_format, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
