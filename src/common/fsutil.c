/* SPDX-License-Identifier: MIT */
/* File-system helpers; see fsutil.h. */
#include "common/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int vram_mkdir_p(const char *path, mode_t parents_mode, mode_t mode)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);
	if (len == 0 || len >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, len + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, parents_mode) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (!mode)
		return 0;
	if (mkdir(buf, mode) < 0) {
		if (errno != EEXIST)
			return -errno;
		struct stat st;
		if (stat(buf, &st) < 0)
			return -errno;
		if (!S_ISDIR(st.st_mode))
			return -ENOTDIR;
	}
	return 0;
}

/* Bits that let someone other than the owner create, remove or rename entries. */
#define WRITABLE_BY_OTHERS (S_IWGRP | S_IWOTH)

/* Checks one directory above the state directory. Returns 0 or -errno with why. */
static int check_parent(const char *dir, uid_t euid, char *why, size_t why_size)
{
	struct stat st;
	if (lstat(dir, &st) < 0) {
		int r = -errno;
		snprintf(why, why_size, "cannot check its parent %s: %s", dir, strerror(-r));
		return r;
	}
	if (st.st_uid != 0 && st.st_uid != euid) {
		char expected[64] = "0 (vramd's user)";
		if (euid != 0)
			snprintf(expected, sizeof(expected), "0 (root) or %lu (vramd's user)",
				 (unsigned long)euid);
		snprintf(why, why_size,
			 "its parent %s is owned by uid %lu, expected %s, so that user could put "
			 "another directory in its place",
			 dir, (unsigned long)st.st_uid, expected);
		return -EACCES;
	}
	if ((st.st_mode & WRITABLE_BY_OTHERS) && !(st.st_mode & S_ISVTX)) {
		snprintf(why, why_size,
			 "its parent %s is writable by group or others (mode %04o) without the sticky "
			 "bit, so they could put another directory in its place",
			 dir, (unsigned)(st.st_mode & 07777));
		return -EACCES;
	}
	return 0;
}

/*
 * Checks every directory from "/" down to dir (resolved to its canonical
 * path first, so that each one checked is a real directory, not a link).
 * Returns 0 or -errno with why.
 */
static int check_parents(const char *dir, uid_t euid, char *why, size_t why_size)
{
	char real[PATH_MAX];
	if (!realpath(dir, real)) {
		int r = -errno;
		snprintf(why, why_size, "cannot resolve its parent %s: %s", dir, strerror(-r));
		return r;
	}
	int r = check_parent("/", euid, why, why_size);
	size_t len = strlen(real);
	for (size_t end = 2; r == 0 && end <= len; end++) {
		if (end < len && real[end] != '/')
			continue;
		char saved = real[end];
		real[end] = '\0';
		r = check_parent(real, euid, why, why_size);
		real[end] = saved;
	}
	return r;
}

/* The state directory itself: a directory of euid's that nobody else may write. */
static int check_own_dir(const struct stat *st, uid_t euid, char *why, size_t why_size)
{
	if (S_ISLNK(st->st_mode)) {
		snprintf(why, why_size, "is a symbolic link");
		return -ELOOP;
	}
	if (!S_ISDIR(st->st_mode)) {
		snprintf(why, why_size, "is not a directory");
		return -ENOTDIR;
	}
	if (st->st_uid != euid) {
		snprintf(why, why_size, "owned by uid %lu, expected %lu (vramd's user)",
			 (unsigned long)st->st_uid, (unsigned long)euid);
		return -EPERM;
	}
	if (st->st_mode & WRITABLE_BY_OTHERS) {
		snprintf(why, why_size, "writable by group or others (mode %04o), expected 0700",
			 (unsigned)(st->st_mode & 07777));
		return -EPERM;
	}
	return 0;
}

int vram_mkdir_private(const char *path, char *why, size_t why_size)
{
	char dir[PATH_MAX], parent[PATH_MAX];
	size_t len = strlen(path);
	uid_t euid = geteuid();
	if (len == 0 || len >= sizeof(dir)) {
		snprintf(why, why_size, "the path is empty or longer than %d bytes", PATH_MAX - 1);
		return -ENAMETOOLONG;
	}
	/* without trailing slashes, which would make lstat follow a link */
	memcpy(dir, path, len + 1);
	while (len > 1 && dir[len - 1] == '/')
		dir[--len] = '\0';
	path = dir;
	int r = vram_mkdir_p(path, 0755, 0);
	if (r < 0) {
		snprintf(why, why_size, "cannot create its parent directories: %s", strerror(-r));
		return r;
	}
	if (mkdir(path, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		snprintf(why, why_size, "cannot create it: %s", strerror(-r));
		return r;
	}
	/*
	 * Checked by name first, so that one that vramd may not even open
	 * (another user's, mode 0700) is named for what it is; then again on
	 * what was opened, which no rename can swap any more.
	 */
	struct stat st;
	if (lstat(path, &st) < 0) {
		r = -errno;
		snprintf(why, why_size, "cannot check it: %s", strerror(-r));
		return r;
	}
	r = check_own_dir(&st, euid, why, why_size);
	if (r < 0)
		return r;
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		snprintf(why, why_size, "cannot open it: %s", strerror(-r));
		return r;
	}
	if (fstat(fd, &st) < 0) {
		r = -errno;
		snprintf(why, why_size, "cannot check it: %s", strerror(-r));
	} else {
		r = check_own_dir(&st, euid, why, why_size);
	}
	close(fd);
	if (r < 0)
		return r;

	/* the directory it is in: "." for a bare name, "/" for a top-level one */
	memcpy(parent, path, len + 1);
	char *slash = strrchr(parent, '/');
	if (!slash)
		snprintf(parent, sizeof(parent), ".");
	else if (slash == parent)
		parent[1] = '\0';
	else
		*slash = '\0';
	return check_parents(parent, euid, why, why_size);
}

int vram_open_file(const char *path, int flags, mode_t mode)
{
	int fd = open(path, flags | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, mode);
	if (fd < 0)
		return -errno; /* -ENXIO for a FIFO nobody reads */
	struct stat st;
	int r = 0;
	if (fstat(fd, &st) < 0)
		r = -errno;
	else if (!S_ISREG(st.st_mode))
		r = -ENXIO;
	else if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0)
		r = -errno;
	if (r < 0) {
		close(fd);
		return r;
	}
	return fd;
}

const char *vram_open_strerror(int err)
{
	switch (err < 0 ? -err : err) {
	case ELOOP: return "is a symbolic link (not followed)";
	case ENXIO: return "is not a regular file";
	default: return strerror(err < 0 ? -err : err);
	}
}

ssize_t vram_read_bounded(int fd, size_t limit, char **ret_text)
{
	char *text = malloc(limit + 1);
	size_t len = 0;
	if (!text)
		return -ENOMEM;
	while (len < limit) {
		ssize_t n = read(fd, text + len, limit - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int r = -errno;
			free(text);
			return r;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	text[len] = '\0';
	*ret_text = text;
	return (ssize_t)len;
}
