/* SPDX-License-Identifier: MIT */
/*
 * The state directory and the files vramd writes: a directory someone else
 * made first (another owner, group-writable, a symbolic link, under a
 * directory others can write) is refused with words that say why, a new one
 * is private, and a file is never opened through a symbolic link or as a
 * FIFO that would block.
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

#include "common/fsutil.h"

/* An owner other than us: nobody (65534), which exists in every test image. */
#define OTHER_UID 65534

struct dir {
	char path[64];
	char sub[128];
};

static int setup(void **state)
{
	struct dir *d = calloc(1, sizeof(*d));
	snprintf(d->path, sizeof(d->path), "/tmp/vram-test-fsutil-XXXXXX");
	if (!mkdtemp(d->path))
		return -1;
	snprintf(d->sub, sizeof(d->sub), "%s/state", d->path);
	*state = d;
	return 0;
}

static int teardown(void **state)
{
	struct dir *d = *state;
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", d->path);
	if (system(cmd) != 0)
		return -1;
	free(d);
	return 0;
}

static void test_new_state_dir_is_private(void **state)
{
	struct dir *d = *state;
	char why[256] = "";
	char deep[192];
	snprintf(deep, sizeof(deep), "%s/a/b/state", d->path);
	mode_t old = umask(0);
	assert_int_equal(vram_mkdir_private(deep, why, sizeof(why)), 0);
	umask(old);
	struct stat st;
	assert_int_equal(lstat(deep, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_int_equal(st.st_uid, geteuid());
	/* an existing one that is ours and private is used again, also 0755 */
	assert_int_equal(vram_mkdir_private(deep, why, sizeof(why)), 0);
	assert_int_equal(chmod(deep, 0755), 0);
	assert_int_equal(vram_mkdir_private(deep, why, sizeof(why)), 0);
}

static void test_foreign_owner_refused(void **state)
{
	struct dir *d = *state;
	if (geteuid() != 0)
		skip();
	char why[256] = "";
	assert_int_equal(mkdir(d->sub, 0700), 0);
	assert_int_equal(chown(d->sub, OTHER_UID, OTHER_UID), 0);
	assert_int_equal(vram_mkdir_private(d->sub, why, sizeof(why)), -EPERM);
	assert_string_equal(why, "owned by uid 65534, expected 0 (vramd's user)");
}

static void test_writable_by_others_refused(void **state)
{
	struct dir *d = *state;
	char why[256] = "";
	assert_int_equal(mkdir(d->sub, 0700), 0);
	assert_int_equal(chmod(d->sub, 0770), 0);
	assert_int_equal(vram_mkdir_private(d->sub, why, sizeof(why)), -EPERM);
	assert_string_equal(why, "writable by group or others (mode 0770), expected 0700");
	assert_int_equal(chmod(d->sub, 01777), 0); /* sticky does not help the directory itself */
	assert_int_equal(vram_mkdir_private(d->sub, why, sizeof(why)), -EPERM);
	assert_string_equal(why, "writable by group or others (mode 1777), expected 0700");
}

static void test_symlink_and_file_refused(void **state)
{
	struct dir *d = *state;
	char why[256] = "", target[128];
	snprintf(target, sizeof(target), "%s/elsewhere", d->path);
	assert_int_equal(mkdir(target, 0700), 0);
	assert_int_equal(symlink(target, d->sub), 0);
	assert_int_equal(vram_mkdir_private(d->sub, why, sizeof(why)), -ELOOP);
	assert_string_equal(why, "is a symbolic link");
	assert_int_equal(unlink(d->sub), 0);

	int fd = open(d->sub, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(vram_mkdir_private(d->sub, why, sizeof(why)), -ENOTDIR);
	assert_string_equal(why, "is not a directory");
}

static void test_unsafe_parent_refused(void **state)
{
	struct dir *d = *state;
	char why[512] = "", expect[512];
	/* a parent anyone may write, without the sticky bit: the state dir could be swapped */
	assert_int_equal(chmod(d->path, 0777), 0);
	assert_int_equal(vram_mkdir_private(d->sub, why, sizeof(why)), -EACCES);
	snprintf(expect, sizeof(expect),
		 "its parent %s is writable by group or others (mode 0777) without the sticky bit, "
		 "so they could put another directory in its place",
		 d->path);
	assert_string_equal(why, expect);
	/* with the sticky bit (as /tmp has) nobody else can rename or remove it */
	assert_int_equal(chmod(d->path, 01777), 0);
	assert_int_equal(vram_mkdir_private(d->sub, why, sizeof(why)), 0);
	assert_int_equal(chmod(d->path, 0700), 0);
	if (geteuid() != 0)
		return;
	assert_int_equal(chown(d->path, OTHER_UID, OTHER_UID), 0);
	assert_int_equal(vram_mkdir_private(d->sub, why, sizeof(why)), -EACCES);
	snprintf(expect, sizeof(expect),
		 "its parent %s is owned by uid 65534, expected 0 (vramd's user), so that user "
		 "could put another directory in its place",
		 d->path);
	assert_string_equal(why, expect);
	assert_int_equal(chown(d->path, 0, 0), 0);
}

static void test_open_file(void **state)
{
	struct dir *d = *state;
	char file[128], link[128], fifo[128];
	snprintf(file, sizeof(file), "%s/a.log", d->path);
	snprintf(link, sizeof(link), "%s/b.log", d->path);
	snprintf(fifo, sizeof(fifo), "%s/c.log", d->path);

	int fd = vram_open_file(file, O_WRONLY | O_CREAT | O_APPEND, 0644);
	assert_true(fd >= 0);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	assert_false(fcntl(fd, F_GETFL) & O_NONBLOCK);
	assert_int_equal(write(fd, "x\n", 2), 2);
	close(fd);

	assert_int_equal(symlink(file, link), 0);
	assert_int_equal(vram_open_file(link, O_WRONLY | O_CREAT | O_APPEND, 0644), -ELOOP);
	assert_int_equal(vram_open_file(link, O_WRONLY | O_CREAT | O_TRUNC, 0644), -ELOOP);
	assert_int_equal(vram_open_file(link, O_RDONLY, 0), -ELOOP);
	assert_string_equal(vram_open_strerror(-ELOOP), "is a symbolic link (not followed)");
	struct stat st;
	assert_int_equal(stat(file, &st), 0);
	assert_int_equal(st.st_size, 2); /* untouched through the link */

	/* a FIFO nobody reads: refused at once rather than blocking the daemon */
	assert_int_equal(mkfifo(fifo, 0600), 0);
	assert_int_equal(vram_open_file(fifo, O_WRONLY | O_APPEND, 0), -ENXIO);
	assert_int_equal(vram_open_file(fifo, O_RDONLY, 0), -ENXIO);
	assert_string_equal(vram_open_strerror(-ENXIO), "is not a regular file");
	assert_int_equal(vram_open_file(d->path, O_RDONLY, 0), -ENXIO);
	assert_string_equal(vram_open_strerror(-ENOENT), strerror(ENOENT));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_new_state_dir_is_private, setup, teardown),
		cmocka_unit_test_setup_teardown(test_foreign_owner_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writable_by_others_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_symlink_and_file_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unsafe_parent_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_file, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
