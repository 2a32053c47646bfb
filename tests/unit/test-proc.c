/* SPDX-License-Identifier: MIT */
/*
 * What /proc says about a process: the start time survives a process name
 * made to look like more fields, a child started later has a later start
 * time, and the command line check matches the exact argv only.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/proc.h"

static int g_argc;
static char **g_argv;

static void test_start_ticks(void **state)
{
	(void)state;
	uint64_t t0 = 0, t1 = 0, now = vram_proc_boot_ticks_now();
	assert_int_equal(vram_proc_start_ticks(getpid(), &t0), 0);
	assert_true(t0 > 0 && t0 <= now);
	/* a name holding ") " and numbers must not shift the fields */
	char old[17] = "";
	prctl(PR_GET_NAME, old);
	assert_int_equal(prctl(PR_SET_NAME, "x) R 1 2 3 4 5"), 0);
	assert_int_equal(vram_proc_start_ticks(getpid(), &t1), 0);
	prctl(PR_SET_NAME, old);
	assert_true(t1 == t0);

	/* no such process: -ENOENT, output untouched */
	uint64_t untouched = 42;
	assert_int_equal(vram_proc_start_ticks(0x3fffffff, &untouched), -ENOENT);
	assert_int_equal(untouched, 42);
	assert_int_equal(vram_proc_start_ticks(-1, &untouched), -ESRCH);
}

static void test_cmdline(void **state)
{
	(void)state;
	assert_true(vram_proc_cmdline_is(getpid(), (const char *const *)g_argv, (size_t)g_argc));
	/* one word fewer, one more, or a changed word: not the same */
	const char *more[64] = { 0 };
	for (int i = 0; i < g_argc && i < 60; i++)
		more[i] = g_argv[i];
	more[g_argc] = "extra";
	assert_false(vram_proc_cmdline_is(getpid(), more, (size_t)g_argc + 1));
	if (g_argc > 1)
		assert_false(vram_proc_cmdline_is(getpid(), more, (size_t)g_argc - 1));
	const char *other[] = { "/bin/definitely-not-this" };
	assert_false(vram_proc_cmdline_is(getpid(), other, 1));
	/* a buffer too small says so */
	char small[2];
	assert_int_equal(vram_proc_cmdline(getpid(), small, sizeof(small)), -E2BIG);
	char buf[4096];
	ssize_t n = vram_proc_cmdline(getpid(), buf, sizeof(buf));
	assert_true(n > 0 && buf[n - 1] == '\0');
	assert_string_equal(buf, g_argv[0]);
	assert_false(vram_proc_cmdline_is(0x3fffffff, (const char *const *)g_argv, (size_t)g_argc));
}

/* A process started later has a start time not earlier than ours. */
static void test_child_later(void **state)
{
	(void)state;
	uint64_t mine = 0, child_ticks = 0;
	assert_int_equal(vram_proc_start_ticks(getpid(), &mine), 0);
	usleep(30000);
	pid_t pid = fork();
	if (pid == 0) {
		pause();
		_exit(0);
	}
	assert_true(pid > 0);
	assert_int_equal(vram_proc_start_ticks(pid, &child_ticks), 0);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	assert_true(child_ticks >= mine);
	assert_true(child_ticks > 0);
}

/*
 * A process's pid in its own pid namespace: ours is ours; the first process
 * of a new namespace (a container's) is 1 there. The hook channel takes a
 * container's hello by it.
 */
/* Resident memory: what the checkpoint engine measures an offload's host copy by. */
static void test_rss_grows_with_touched_memory(void **state)
{
	(void)state;
	uint64_t before = 0, after = 0;
	assert_int_equal(vram_proc_rss(getpid(), &before), 0);
	assert_true(before > 0);
	size_t len = 64u << 20;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(p != MAP_FAILED);
	memset(p, 1, len);
	assert_int_equal(vram_proc_rss(getpid(), &after), 0);
	assert_true(after >= before + len - (4u << 20));
	munmap(p, len);
	assert_int_equal(vram_proc_rss(999999999, &after), -ENOENT);
}

static void test_inner_pid(void **state)
{
	(void)state;
	pid_t inner = 0;
	assert_int_equal(vram_proc_inner_pid(getpid(), &inner), 0);
	assert_int_equal(inner, getpid());
	assert_int_equal(vram_proc_inner_pid(999999999, &inner), -ENOENT);

	int go[2];
	assert_int_equal(pipe(go), 0);
	pid_t outer = fork();
	assert_true(outer >= 0);
	if (outer == 0) {
		/* the child of one that unshared its pid namespace is that namespace's pid 1 */
		close(go[1]); /* the grandchild waits for the end of the pipe */
		if (unshare(CLONE_NEWPID) < 0)
			_exit(77);
		pid_t p = fork();
		if (p == 0) {
			char b;
			(void)!read(go[0], &b, 1);
			_exit(0);
		}
		int st;
		waitpid(p, &st, 0);
		_exit(0);
	}
	close(go[0]);
	/* find the grandchild: the child of outer */
	pid_t grandchild = 0;
	for (int i = 0; i < 500 && !grandchild; i++) {
		char path[64], buf[256] = "";
		snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)outer, (int)outer);
		FILE *f = fopen(path, "r");
		if (f) {
			if (fgets(buf, sizeof(buf), f))
				grandchild = (pid_t)atoi(buf);
			fclose(f);
		}
		if (!grandchild) {
			int st;
			if (waitpid(outer, &st, WNOHANG) == outer) {
				close(go[1]);
				if (WIFEXITED(st) && WEXITSTATUS(st) == 77)
					skip(); /* no right to a pid namespace here */
				fail_msg("the child ended early");
			}
			usleep(10000);
		}
	}
	assert_true(grandchild > 0);
	assert_int_equal(vram_proc_inner_pid(grandchild, &inner), 0);
	assert_int_equal(inner, 1);
	close(go[1]);
	int st;
	assert_int_equal(waitpid(outer, &st, 0), outer);
}

int main(int argc, char **argv)
{
	g_argc = argc;
	g_argv = argv;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_start_ticks),
		cmocka_unit_test(test_cmdline),
		cmocka_unit_test(test_child_later),
		cmocka_unit_test(test_inner_pid),
		cmocka_unit_test(test_rss_grows_with_touched_memory),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
