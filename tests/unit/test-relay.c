/* SPDX-License-Identifier: MIT */
/*
 * Output relay tests, with this binary run again as the relay (as vramd
 * is): output passes through while somebody reads it; once the reader is
 * gone the relay says so in the log file and appends there with the log's
 * rotation; a log it cannot open never blocks the writer; it holds no
 * descriptor but its three; and the argument checks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/relay.h"
#include "daemon/supervise.h"

#define NOTE "[vramd] vramd is gone; the output relay writes here directly\n"

struct ctx {
	char dir[64];
	char log_path[128];
	int in[2];   /* the workload's pipe: in[1] is what the workload would write to */
	int out[2];  /* the daemon's pipe: out[0] is what the daemon would read */
	pid_t relay;
};

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof(*c));
	assert_non_null(c);
	snprintf(c->dir, sizeof(c->dir), "/tmp/vram-test-relay-XXXXXX");
	assert_non_null(mkdtemp(c->dir));
	snprintf(c->log_path, sizeof(c->log_path), "%s/logs/w.log", c->dir);
	assert_int_equal(pipe2(c->in, O_CLOEXEC), 0);
	assert_int_equal(pipe2(c->out, O_CLOEXEC), 0);
	*state = c;
	return 0;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static int teardown(void **state)
{
	struct ctx *c = *state;
	close_fd(&c->in[0]);
	close_fd(&c->in[1]);
	close_fd(&c->out[0]);
	close_fd(&c->out[1]);
	if (c->relay > 0) {
		(void)kill(c->relay, SIGKILL);
		(void)waitpid(c->relay, NULL, 0);
	}
	char cmd[160];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", c->dir);
	if (system(cmd) != 0)
		return -1;
	free(c);
	return 0;
}

/* Starts a relay with the log at c->log_path (max_bytes, keep); keeps only the test's ends. */
static void start(struct ctx *c, uint64_t max_bytes, unsigned keep)
{
	struct vram_logfile *log;
	assert_int_equal(vram_logfile_open(c->log_path, max_bytes, keep, &log), 0);
	assert_int_equal(vram_relay_spawn(log, c->in[0], c->out[1], &c->relay), 0);
	vram_logfile_close(log);
	close_fd(&c->in[0]);
	close_fd(&c->out[1]);
}

static void write_str(int fd, const char *s)
{
	assert_int_equal(write(fd, s, strlen(s)), (ssize_t)strlen(s));
}

/* Reads from fd until want has arrived (5 s at most). */
static void expect_read(int fd, const char *want)
{
	char buf[256];
	size_t len = 0, n = strlen(want);
	assert_true(n < sizeof(buf));
	while (len < n) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		assert_int_equal(poll(&p, 1, 5000), 1);
		ssize_t r = read(fd, buf + len, n - len);
		assert_true(r > 0);
		len += (size_t)r;
	}
	buf[len] = '\0';
	assert_string_equal(buf, want);
}

/* Closes the writer's end and waits for the relay: it must exit 0 within 5 s. */
static void finish(struct ctx *c)
{
	close_fd(&c->in[1]);
	int status = 0;
	pid_t r = 0;
	for (int i = 0; i < 500 && (r = waitpid(c->relay, &status, WNOHANG)) == 0; i++)
		usleep(10 * 1000);
	assert_int_equal(r, c->relay);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	c->relay = 0;
}

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	char *buf = calloc(1, 65536);
	size_t n = fread(buf, 1, 65535, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static void test_through_then_into_the_file(void **state)
{
	struct ctx *c = *state;
	/* a descriptor the spawner left open without O_CLOEXEC */
	int leak = open("/dev/null", O_RDONLY);
	assert_true(leak >= 3);
	start(c, 1 << 20, 2);
	close(leak);
	write_str(c->in[1], "while the daemon reads\n");
	expect_read(c->out[0], "while the daemon reads\n");

	/* it has run its loop by now: only 0, 1 and 2 are open, and its name is its own */
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)c->relay);
	DIR *d = opendir(path);
	assert_non_null(d);
	int fds = 0;
	for (struct dirent *e; (e = readdir(d));) {
		if (e->d_name[0] == '.')
			continue;
		assert_true(atoi(e->d_name) <= 2);
		fds++;
	}
	closedir(d);
	assert_int_equal(fds, 3);
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)c->relay);
	char *comm = read_file(path);
	assert_string_equal(comm, VRAM_RELAY_NAME "\n");
	free(comm);
	assert_int_equal(getsid(c->relay), c->relay);

	/* the daemon dies; the writer goes on without noticing */
	close_fd(&c->out[0]);
	write_str(c->in[1], "after the daemon\n");
	write_str(c->in[1], "and more\n");
	finish(c);
	char *text = read_file(c->log_path);
	assert_non_null(text);
	assert_string_equal(text, NOTE "after the daemon\nand more\n");
	free(text);
}

static void test_file_is_rotated(void **state)
{
	struct ctx *c = *state;
	start(c, 100, 1);
	close_fd(&c->out[0]); /* nobody reads from the start */
	char line[40];
	for (int i = 0; i < 20; i++) {
		snprintf(line, sizeof(line), "line %02d ...........\n", i); /* 20 bytes */
		write_str(c->in[1], line);
	}
	finish(c);
	/* the same limits as the daemon's writes: no file over 100 bytes, one rotated kept */
	char rotated[160];
	snprintf(rotated, sizeof(rotated), "%s.1", c->log_path);
	struct stat st;
	assert_int_equal(stat(c->log_path, &st), 0);
	assert_true(st.st_size <= 100);
	assert_int_equal(stat(rotated, &st), 0);
	assert_true(st.st_size <= 100);
	snprintf(rotated, sizeof(rotated), "%s.2", c->log_path);
	assert_int_equal(stat(rotated, &st), -1);
	char *text = read_file(c->log_path);
	assert_non_null(strstr(text, "line 19 ...........\n"));
	free(text);
}

static void test_unwritable_log_never_blocks(void **state)
{
	struct ctx *c = *state;
	start(c, 1 << 20, 2);
	/* the log's directory becomes a file: the relay cannot open the log */
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s/logs' && touch '%s/logs'", c->dir, c->dir);
	assert_int_equal(system(cmd), 0);
	close_fd(&c->out[0]);
	/* 4 MiB, far more than a pipe holds: it all goes, dropped */
	(void)fcntl(c->in[1], F_SETFL, O_NONBLOCK);
	static char chunk[65536];
	memset(chunk, 'y', sizeof(chunk));
	size_t left = 64 * sizeof(chunk);
	while (left > 0) {
		ssize_t w = write(c->in[1], chunk, left < sizeof(chunk) ? left : sizeof(chunk));
		if (w < 0) {
			assert_int_equal(errno, EAGAIN);
			struct pollfd p = {.fd = c->in[1], .events = POLLOUT};
			assert_int_equal(poll(&p, 1, 5000), 1); /* the relay keeps reading */
			continue;
		}
		left -= (size_t)w;
	}
	finish(c);
}

static void test_arguments(void **state)
{
	char *none[] = {"vramd", NULL};
	char *relay[] = {"vramd", VRAM_RELAY_ARG, "/tmp/x.log", "100", "1", NULL};
	char *bad_size[] = {"vramd", VRAM_RELAY_ARG, "/tmp/x.log", "-1", "1", NULL};
	char *short_argv[] = {"vramd", VRAM_RELAY_ARG, "/tmp/x.log", NULL};
	assert_false(vram_relay_requested(1, none));
	assert_true(vram_relay_requested(5, relay));
	/* refused before it touches anything */
	assert_int_equal(vram_relay_main(5, bad_size), 2);
	assert_int_equal(vram_relay_main(3, short_argv), 2);

	pid_t pid;
	assert_int_equal(vram_relay_spawn(NULL, 0, 9, &pid), -EBADF);
	vram_relay_set_program(NULL);
	assert_int_equal(vram_relay_spawn(NULL, 8, 9, &pid), -ENOTSUP);
	vram_relay_set_program("/proc/self/exe");
}

int main(int argc, char **argv)
{
	if (vram_relay_requested(argc, argv))
		return vram_relay_main(argc, argv);
	vram_relay_set_program("/proc/self/exe");
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_through_then_into_the_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_is_rotated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unwritable_log_never_blocks, setup, teardown),
		cmocka_unit_test(test_arguments),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
