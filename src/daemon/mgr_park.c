/* SPDX-License-Identifier: MIT */
/*
 * Park files, beside the manager's instances floor: where the disk tier
 * keeps a parked process's GPU memory, one file per process,
 * <park_dir>/<workload>-<pid>.park, written and read back by the process's
 * hook (the hook engine asks for the path through struct vram_engine_host).
 * The directory is the config's host.park_dir, by default
 * <state_dir>/park, made private to vramd's user (0700) on first use, so
 * that no other user can read a model's weights or plant a link where a
 * hook will write.
 *
 * vramd removes a process's file when the process exits (a release stops
 * it), once a restore has read it back, and at start for every pid that no
 * longer runs, so that neither a crash of a workload nor a SIGKILL of vramd
 * leaves the disk holding models that nothing can restore. A file of a pid
 * that runs is kept at start: its process may be one the next vramd takes
 * back parked. Calls nothing above it.
 */
#include "daemon/manager_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fsutil.h"
#include "common/log.h"

#define PARK_SUFFIX ".park"
#define PARK_PATH_MAX 255 /* bytes of a path the hook takes (protocol version 3) */
#define PID_DIGITS_MAX 7  /* the kernel's PID_MAX_LIMIT, 4194304 */

const char *mgr_park_dir(const struct vram_manager *m)
{
	/* host: {park_dir} of the config, else <state_dir>/park */
	if (m->cfg->host.park_dir && m->cfg->host.park_dir[0])
		return m->cfg->host.park_dir;
	return m->park_dir;
}

int mgr_park_path(struct vram_manager *m, const char *workload, pid_t pid, bool make_dir, char *buf,
		  size_t size)
{
	const char *dir = mgr_park_dir(m);
	if (make_dir) {
		char why[256];
		int r = vram_mkdir_private(dir, why, sizeof(why));
		if (r < 0) {
			snprintf(buf, size, "the park directory %s: %s", dir, why);
			return r;
		}
	}
	int n = snprintf(buf, size, "%s/%s-%d" PARK_SUFFIX, dir, workload, (int)pid);
	if (n < 0 || (size_t)n >= size || n > PARK_PATH_MAX) {
		snprintf(buf, size, "the park file's path under %.120s is longer than the hook's %d "
			 "bytes: set host.park_dir to a shorter directory", dir, PARK_PATH_MAX);
		return -ENAMETOOLONG;
	}
	return 0;
}

void mgr_park_remove(struct vram_manager *m, const char *workload, pid_t pid)
{
	char path[PARK_PATH_MAX + 1];
	if (pid <= 0 || mgr_park_path(m, workload, pid, false, path, sizeof(path)) < 0)
		return;
	if (unlink(path) == 0)
		vram_debug("removed the park file %s", path);
	else if (errno != ENOENT)
		vram_warn("Could not remove the park file %s: %s", path, strerror(errno));
}

/* The pid of a park file's name "<workload>-<pid>.park", or 0 when it is not one. */
static pid_t pid_of_name(const char *name)
{
	size_t len = strlen(name), sfx = strlen(PARK_SUFFIX);
	if (len <= sfx || strcmp(name + len - sfx, PARK_SUFFIX) != 0)
		return 0;
	size_t end = len - sfx, start = end;
	while (start > 0 && name[start - 1] >= '0' && name[start - 1] <= '9')
		start--;
	/* digits, after a '-' that follows a workload name of at least one character */
	if (start == end || end - start > PID_DIGITS_MAX || start < 2 || name[start - 1] != '-')
		return 0;
	long pid = strtol(name + start, NULL, 10);
	return pid > 0 ? (pid_t)pid : 0;
}

void mgr_park_sweep(struct vram_manager *m)
{
	const char *dir = mgr_park_dir(m);
	DIR *d = opendir(dir);
	if (!d) {
		if (errno != ENOENT)
			vram_warn("Could not read the park directory %s: %s", dir, strerror(errno));
		return;
	}
	size_t removed = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		pid_t pid = pid_of_name(e->d_name);
		if (pid <= 0 || kill(pid, 0) == 0 || errno != ESRCH)
			continue; /* not a park file, or its process runs (EPERM: another user's) */
		struct stat st;
		if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
			continue;
		if (unlinkat(dirfd(d), e->d_name, 0) == 0)
			removed++;
		else
			vram_warn("Could not remove the park file %s/%s: %s", dir, e->d_name,
				  strerror(errno));
	}
	closedir(d);
	if (removed)
		vram_info("removed %zu park file(s) in %s of processes that no longer run", removed, dir);
}
