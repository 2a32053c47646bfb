/* SPDX-License-Identifier: MIT */
/*
 * Output relay tests, with this binary run again as the relay (as vramd
 * is): output passes through while somebody reads it; once the reader is
 * gone the relay says so in the log file and appends there with the log's
 * rotation; a log it cannot open never blocks the writer; it holds no
 * descriptor but its three; a new vramd that asks (SIGUSR1, then its
 * socket) gets the output from then on, and the file is no longer written;
 * one that cannot be reached leaves the relay on the file; and the
 * argument checks.
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
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/relay.h"
#include "daemon/supervise.h"
#include "textfile.h"

#define NOTE "[vramd] vramd is gone; the output relay writes here directly\n"

struct ctx {
	char dir[64];
	char log_path[128];
	char sock_path[128];
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
	snprintf(c->sock_path, sizeof(c->sock_path), "%s/relay.sock", c->dir);
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

/*
 * Starts a relay with the log at c->log_path (max_bytes, keep) and sock as
 * where to hand it over (NULL: nowhere); keeps only the test's ends.
 */
static void start_with(struct ctx *c, uint64_t max_bytes, unsigned keep, const char *sock)
{
	struct vram_logfile *log;
	assert_int_equal(vram_logfile_open(c->log_path, max_bytes, keep, &log), 0);
	assert_int_equal(vram_relay_spawn(log, sock, c->in[0], c->out[1], &c->relay), 0);
	vram_logfile_close(log);
	close_fd(&c->in[0]);
	close_fd(&c->out[1]);
}

static void start(struct ctx *c, uint64_t max_bytes, unsigned keep)
{
	start_with(c, max_bytes, keep, NULL);
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

/* A listening socket at c->sock_path, as a new vramd's. */
static int listen_at(struct ctx *c)
{
	int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(l >= 0);
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	assert_true(strlen(c->sock_path) < sizeof(sun.sun_path));
	memcpy(sun.sun_path, c->sock_path, strlen(c->sock_path) + 1);
	assert_int_equal(bind(l, (struct sockaddr *)&sun, sizeof(sun)), 0);
	assert_int_equal(listen(l, 4), 0);
	return l;
}

/* Whether a connection comes to l within ms; if so it is accepted into *ret. */
static bool accept_within(int l, int ms, int *ret)
{
	struct pollfd p = {.fd = l, .events = POLLIN};
	if (poll(&p, 1, ms) != 1)
		return false;
	*ret = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	assert_true(*ret >= 0);
	return true;
}

/* What fd 1 of the relay is ("pipe:[...]", "socket:[...]", "/dev/null"). */
static void relay_stdout(struct ctx *c, char *buf, size_t size)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/fd/1", (int)c->relay);
	ssize_t n = readlink(path, buf, size - 1);
	assert_true(n > 0);
	buf[n] = '\0';
}

/*
 * A relay that writes the file since its vramd died hands it over to a new
 * vramd that asks: it connects, says so with one byte, and from then on
 * the output goes through the connection, the file untouched. When that
 * vramd dies too, the relay takes the file back.
 */
static void test_hands_over_to_a_new_vramd(void **state)
{
	struct ctx *c = *state;
	start_with(c, 1 << 20, 2, c->sock_path);
	write_str(c->in[1], "to the first vramd\n");
	expect_read(c->out[0], "to the first vramd\n");
	/* only the log's and the socket's file names are left on its command line */
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)c->relay);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	char cmdline[512], words[512] = "";
	size_t n = fread(cmdline, 1, sizeof(cmdline) - 1, f);
	fclose(f);
	cmdline[n] = '\0';
	/* the words, the padding left where the directories were dropped */
	for (size_t i = 0; i < n; i += strlen(cmdline + i) + 1) {
		if (cmdline[i])
			snprintf(words + strlen(words), sizeof(words) - strlen(words), "%s ",
				 cmdline + i);
	}
	assert_string_equal(words, VRAM_RELAY_NAME " " VRAM_RELAY_ARG " w.log 1048576 2 relay.sock ");

	/* asked while its vramd still reads: nothing changes */
	int l = listen_at(c), conn = -1;
	assert_int_equal(kill(c->relay, VRAM_RELAY_HANDOVER_SIGNAL), 0);
	assert_false(accept_within(l, 200, &conn));
	write_str(c->in[1], "still to the first\n");
	expect_read(c->out[0], "still to the first\n");

	close_fd(&c->out[0]);
	write_str(c->in[1], "after the daemon\n");
	wait_for_text(c->log_path, "after the daemon\n");
	assert_int_equal(kill(c->relay, VRAM_RELAY_HANDOVER_SIGNAL), 0);
	assert_true(accept_within(l, 5000, &conn));
	struct ucred cr;
	socklen_t len = sizeof(cr);
	assert_int_equal(getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cr, &len), 0);
	assert_int_equal(cr.pid, c->relay);
	expect_read(conn, "H"); /* VRAM_RELAY_HANDED_OVER */
	write_str(c->in[1], "to the new vramd\n");
	expect_read(conn, "to the new vramd\n");
	char *text = read_file(c->log_path);
	assert_string_equal(text, NOTE "after the daemon\n");
	free(text);
	/* the log is closed: 0, 1 (the connection) and 2 are all it holds */
	char out[64];
	relay_stdout(c, out, sizeof(out));
	assert_memory_equal(out, "socket:[", 8);
	snprintf(path, sizeof(path), "/proc/%d/fd/3", (int)c->relay);
	assert_int_equal(access(path, F_OK), -1);

	/* the new vramd dies too: the file again, with its note */
	close(conn);
	write_str(c->in[1], "after the second vramd\n");
	finish(c);
	text = read_file(c->log_path);
	assert_string_equal(text, NOTE "after the daemon\n" NOTE "after the second vramd\n");
	free(text);
	close(l);
}

/*
 * A relay asked while nobody listens at its socket stays on the file and
 * loses nothing; asked again once somebody listens, it hands over.
 */
static void test_handover_retried_after_a_failed_connect(void **state)
{
	struct ctx *c = *state;
	start_with(c, 1 << 20, 2, c->sock_path);
	close_fd(&c->out[0]);
	write_str(c->in[1], "one\n");
	wait_for_text(c->log_path, "one\n");
	assert_int_equal(kill(c->relay, VRAM_RELAY_HANDOVER_SIGNAL), 0);
	usleep(100 * 1000);
	write_str(c->in[1], "two\n");
	wait_for_text(c->log_path, "two\n");
	char out[64];
	relay_stdout(c, out, sizeof(out));
	assert_string_equal(out, "/dev/null");

	int l = listen_at(c), conn = -1;
	assert_int_equal(kill(c->relay, VRAM_RELAY_HANDOVER_SIGNAL), 0);
	assert_true(accept_within(l, 5000, &conn));
	expect_read(conn, "H");
	write_str(c->in[1], "three\n");
	expect_read(conn, "three\n");
	finish(c);
	char *text = read_file(c->log_path);
	assert_string_equal(text, NOTE "one\ntwo\n");
	free(text);
	close(conn);
	close(l);
}

static void test_arguments(void **state)
{
	char *none[] = {"vramd", NULL};
	char *relay[] = {"vramd", VRAM_RELAY_ARG, "/tmp/x.log", "100", "1", NULL};
	char *bad_size[] = {"vramd", VRAM_RELAY_ARG, "/tmp/x.log", "-1", "1", NULL};
	char *short_argv[] = {"vramd", VRAM_RELAY_ARG, "/tmp/x.log", NULL};
	char long_sock[200];
	memset(long_sock, 's', sizeof(long_sock) - 1);
	long_sock[sizeof(long_sock) - 1] = '\0';
	char *bad_sock[] = {"vramd", VRAM_RELAY_ARG, "/tmp/x.log", "100", "1", long_sock, NULL};
	assert_false(vram_relay_requested(1, none));
	assert_true(vram_relay_requested(5, relay));
	/* refused before it touches anything */
	assert_int_equal(vram_relay_main(5, bad_size), 2);
	assert_int_equal(vram_relay_main(3, short_argv), 2);
	assert_int_equal(vram_relay_main(6, bad_sock), 2);

	pid_t pid;
	assert_int_equal(vram_relay_spawn(NULL, NULL, 0, 9, &pid), -EBADF);
	assert_int_equal(vram_relay_spawn(NULL, long_sock, 8, 9, &pid), -ENAMETOOLONG);
	vram_relay_set_program(NULL);
	assert_int_equal(vram_relay_spawn(NULL, NULL, 8, 9, &pid), -ENOTSUP);
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
		cmocka_unit_test_setup_teardown(test_hands_over_to_a_new_vramd, setup, teardown),
		cmocka_unit_test_setup_teardown(test_handover_retried_after_a_failed_connect, setup,
						teardown),
		cmocka_unit_test(test_arguments),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
