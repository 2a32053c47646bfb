/* SPDX-License-Identifier: MIT */
/* What /proc says about a process (see proc.h). */
#include "common/proc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

uint64_t vram_proc_boot_ticks_now(void)
{
	struct timespec ts;
	long hz = sysconf(_SC_CLK_TCK);
	if (hz <= 0 || clock_gettime(CLOCK_BOOTTIME, &ts) < 0)
		return 0;
	return (uint64_t)ts.tv_sec * (uint64_t)hz + (uint64_t)ts.tv_nsec / (1000000000u / (uint64_t)hz);
}

/* Reads at most size bytes of /proc/<pid>/<name>; returns the length or -errno. */
static ssize_t read_proc_file(pid_t pid, const char *name, char *buf, size_t size)
{
	char path[64];
	if (pid <= 0)
		return -ESRCH;
	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, name);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t len = 0;
	while (len < size) {
		ssize_t n = read(fd, buf + len, size - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int r = -errno;
			close(fd);
			return r;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	return (ssize_t)len;
}

int vram_proc_start_ticks(pid_t pid, uint64_t *ret_ticks)
{
	char buf[VRAM_PROC_STAT_MAX];
	ssize_t n = read_proc_file(pid, "stat", buf, sizeof(buf) - 1);
	if (n < 0)
		return (int)n;
	buf[n] = '\0';
	/* the name in parentheses may hold anything: count fields after the last ')' */
	char *p = strrchr(buf, ')');
	if (!p)
		return -EINVAL;
	unsigned field = 2; /* the name */
	while (*p && field < 22) {
		if (*p++ == ' ')
			field++;
	}
	char *end;
	errno = 0;
	unsigned long long ticks = strtoull(p, &end, 10);
	if (field != 22 || end == p || errno)
		return -EINVAL;
	*ret_ticks = ticks;
	return 0;
}

ssize_t vram_proc_cmdline(pid_t pid, char *buf, size_t size)
{
	/* one byte more than fits tells a command line that does not fit */
	char probe;
	ssize_t n = read_proc_file(pid, "cmdline", buf, size);
	if (n < 0 || (size_t)n < size)
		return n;
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t more = pread(fd, &probe, 1, (off_t)size);
	close(fd);
	return more == 0 ? n : -E2BIG;
}

bool vram_proc_cmdline_is(pid_t pid, const char *const *argv, size_t n)
{
	size_t want = 0;
	for (size_t i = 0; i < n; i++) {
		want += strlen(argv[i]) + 1;
		if (want > VRAM_PROC_CMDLINE_MAX)
			return false;
	}
	/* room for one byte more: a longer command line reads as more than want */
	char *buf = malloc(want + 1);
	if (!buf)
		return false;
	ssize_t got = vram_proc_cmdline(pid, buf, want + 1);
	bool same = got == (ssize_t)want;
	for (size_t i = 0, off = 0; same && i < n; i++) {
		size_t len = strlen(argv[i]) + 1;
		same = memcmp(buf + off, argv[i], len) == 0;
		off += len;
	}
	free(buf);
	return same;
}

int vram_proc_inner_pid(pid_t pid, pid_t *ret)
{
	/* NSpid comes after Name..Tgid..Ngid..Pid..PPid..; a few KiB hold it whatever the name */
	char buf[4096];
	ssize_t n = read_proc_file(pid, "status", buf, sizeof(buf) - 1);
	if (n < 0)
		return (int)n;
	buf[n] = '\0';
	const char *line = strstr(buf, "\nNSpid:");
	if (!line)
		return -ENODATA;
	line += 7;
	long last = -1;
	for (;;) {
		while (*line == ' ' || *line == '\t')
			line++;
		if (*line < '0' || *line > '9')
			break;
		char *end;
		last = strtol(line, &end, 10);
		line = end;
	}
	if (last <= 0)
		return -EINVAL;
	*ret = (pid_t)last;
	return 0;
}

int vram_proc_rss(pid_t pid, uint64_t *ret_bytes)
{
	char buf[256];
	ssize_t n = read_proc_file(pid, "statm", buf, sizeof(buf) - 1);
	if (n < 0)
		return (int)n;
	buf[n] = '\0';
	unsigned long long size, resident;
	if (sscanf(buf, "%llu %llu", &size, &resident) != 2)
		return -EINVAL;
	long page = sysconf(_SC_PAGESIZE);
	*ret_bytes = (uint64_t)resident * (uint64_t)(page > 0 ? page : 4096);
	return 0;
}
