/* SPDX-License-Identifier: MIT */
/*
 * Starting processes; see spawn.h. Two ways: posix_spawn for a child that
 * runs as the daemon (the supervisor's workloads, output relays, MPS control
 * commands), and fork for one that runs as another user, since posix_spawn
 * cannot change a child's user. That child calls only async-signal-safe
 * functions (the daemon has worker threads) and tells the parent through a
 * close-on-exec pipe which step failed, so that "cannot enter cwd as that
 * user" is an error of the spawn, as a missing program is, not an exit
 * status 127.
 */
#include "daemon/spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void free_strv(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

/* ---- the program ---- */

int vram_spawn_check_executable(const char *file, const char *cwd)
{
	char full[4096];
	if (strchr(file, '/')) {
		if (file[0] != '/' && cwd)
			snprintf(full, sizeof(full), "%s/%s", cwd, file);
		else
			snprintf(full, sizeof(full), "%s", file);
		return access(full, X_OK) == 0 ? 0 : -errno;
	}
	const char *path = getenv("PATH");
	if (!path || !path[0])
		path = "/usr/local/bin:/usr/bin:/bin";
	int r = -ENOENT;
	for (const char *p = path; *p;) {
		const char *end = strchr(p, ':');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		snprintf(full, sizeof(full), "%.*s/%s", (int)len, len ? p : ".", file);
		if (access(full, X_OK) == 0)
			return 0;
		if (errno == EACCES)
			r = -EACCES;
		p += len + (end ? 1 : 0);
	}
	return r;
}

int vram_spawn_open_program(const char *path, char *ret_path, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	snprintf(ret_path, size, "/proc/self/fd/%d", fd);
	return fd;
}

/* ---- the descriptor limit ---- */

static struct rlimit child_nofile; /* what the daemon started with; valid once raised */
static bool nofile_raised;

rlim_t vram_spawn_nofile_raise(rlim_t want)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 0;
	rlim_t target = rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want ? rl.rlim_max : want;
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= target)
		return rl.rlim_cur;
	if (!nofile_raised)
		child_nofile = rl;
	struct rlimit up = { .rlim_cur = target, .rlim_max = rl.rlim_max };
	if (setrlimit(RLIMIT_NOFILE, &up) < 0)
		return rl.rlim_cur;
	nofile_raised = true;
	return target;
}

int vram_spawn_posix(pid_t *pid, const char *path, bool search, const posix_spawn_file_actions_t *fa,
		     const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
	/*
	 * The child gets the limit the daemon started with: a program may size
	 * tables by it, or use select(). The daemon's own descriptors above it
	 * stay valid while it is lowered; only new ones above it would fail.
	 */
	struct rlimit mine;
	bool lowered = nofile_raised && getrlimit(RLIMIT_NOFILE, &mine) == 0 &&
		       setrlimit(RLIMIT_NOFILE, &child_nofile) == 0;
	int e = search ? posix_spawnp(pid, path, fa, attr, argv, envp)
		       : posix_spawn(pid, path, fa, attr, argv, envp);
	if (lowered)
		(void)setrlimit(RLIMIT_NOFILE, &mine);
	return e;
}

int vram_spawn_attr_init(posix_spawnattr_t *attr, short flags)
{
	if (posix_spawnattr_init(attr) != 0)
		return -ENOMEM;
	sigset_t none, all;
	sigemptyset(&none);
	sigfillset(&all);
	sigdelset(&all, SIGKILL);
	sigdelset(&all, SIGSTOP);
	if (posix_spawnattr_setflags(attr, flags | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF) ||
	    ((flags & POSIX_SPAWN_SETPGROUP) && posix_spawnattr_setpgroup(attr, 0)) ||
	    posix_spawnattr_setsigmask(attr, &none) || posix_spawnattr_setsigdefault(attr, &all)) {
		posix_spawnattr_destroy(attr);
		return -ENOMEM;
	}
	return 0;
}

/* ---- a child that runs as another user ---- */

/* The step a forked child failed at, sent to the parent before it exits. */
enum spawn_step {
	STEP_SETUP = 1, /* process group, descriptors, limits */
	STEP_CREDS,     /* groups, group, user */
	STEP_CWD,
	STEP_EXEC,
};

struct spawn_failure {
	int step;  /* enum spawn_step */
	int error; /* errno */
};

/*
 * Where a forked child looks for file, as execvp does but from the child's
 * own PATH (env's): file itself when it holds a '/', else each directory of
 * PATH in turn (an empty entry is the working directory). NULL-terminated;
 * caller frees (free_argv). NULL on out of memory.
 */
static char **exec_candidates(const char *file, char *const *env)
{
	const char *path = NULL;
	for (size_t i = 0; env && env[i]; i++)
		if (strncmp(env[i], "PATH=", 5) == 0)
			path = env[i] + 5;
	if (!path)
		path = VRAM_SPAWN_DEFAULT_PATH;
	size_t n = 1;
	for (const char *p = path; *p; p++)
		n += *p == ':';
	char **out = calloc(n + 1, sizeof(*out));
	if (!out)
		return NULL;
	if (strchr(file, '/')) {
		out[0] = strdup(file);
		if (!out[0]) {
			free(out);
			return NULL;
		}
		return out;
	}
	size_t k = 0;
	for (const char *p = path;; p++) {
		const char *end = strchr(p, ':');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (asprintf(&out[k], "%.*s/%s", (int)len, len ? p : ".", file) < 0) {
			out[k] = NULL;
			free_strv(out);
			return NULL;
		}
		k++;
		if (!end)
			break;
		p = end;
	}
	return out;
}

/*
 * The forked child: its own group, stdin on /dev/null, stdout and stderr on
 * out_fd, the limits it started with, then the user, the working directory
 * and the program. Only async-signal-safe calls. Never returns; on failure
 * it writes a struct spawn_failure to report_fd and exits 127.
 */
static _Noreturn void child_as(int report_fd, int out_fd, const struct vram_creds *cr,
			       const char *cwd, char *const *paths, char *const argv[],
			       char *const env[])
{
	struct spawn_failure f = {.step = STEP_SETUP};
	struct sigaction dfl = {.sa_handler = SIG_DFL};
	sigset_t none;
	sigemptyset(&none);
	/* nothing of the daemon's handling carries over (SIGKILL, SIGSTOP: EINVAL, fine) */
	for (int sig = 1; sig < NSIG; sig++)
		(void)sigaction(sig, &dfl, NULL);
	if (setpgid(0, 0) < 0)
		goto fail;
	int null_fd = open("/dev/null", O_RDONLY);
	if (null_fd < 0 || (null_fd != 0 && dup2(null_fd, 0) < 0) || dup2(out_fd, 1) < 0 ||
	    dup2(out_fd, 2) < 0)
		goto fail;
	if (null_fd > 2)
		close(null_fd);
	if (nofile_raised && setrlimit(RLIMIT_NOFILE, &child_nofile) < 0)
		goto fail;
	/*
	 * The system calls, not the libc wrappers: those make every thread of a
	 * process change with it, through signals, which is not for a child of
	 * fork. Groups first, the user last: after it, nothing can be changed.
	 */
	f.step = STEP_CREDS;
	if (syscall(SYS_setgroups, cr->n_groups, cr->groups) < 0 ||
	    syscall(SYS_setresgid, cr->gid, cr->gid, cr->gid) < 0 ||
	    syscall(SYS_setresuid, cr->uid, cr->uid, cr->uid) < 0)
		goto fail;
	f.step = STEP_CWD;
	if (cwd && chdir(cwd) < 0)
		goto fail;
	if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
		goto fail;
	f.step = STEP_EXEC;
	int error = ENOENT;
	bool denied = false;
	for (char *const *p = paths; *p; p++) {
		execve(*p, argv, env);
		if (errno == EACCES) {
			denied = true;
		} else if (errno != ENOENT && errno != ENOTDIR) {
			error = errno;
			break;
		}
	}
	errno = error == ENOENT && denied ? EACCES : error;
fail:
	f.error = errno;
	(void)!write(report_fd, &f, sizeof(f));
	_exit(127);
}

/* What a failed step means, for err or the log: "cwd /root: Permission denied (as uid 1000)". */
static void failure_text(const struct spawn_failure *f, const struct vram_creds *cr, const char *cwd,
			 const char *prog, char *buf, size_t size)
{
	switch (f->step) {
	case STEP_CREDS:
		snprintf(buf, size, "cannot run as uid %u, gid %u and %zu group(s): %s",
			 (unsigned)cr->uid, (unsigned)cr->gid, cr->n_groups, strerror(f->error));
		break;
	case STEP_CWD:
		snprintf(buf, size, "cwd %s: %s (as uid %u)", cwd, strerror(f->error),
			 (unsigned)cr->uid);
		break;
	case STEP_EXEC:
		snprintf(buf, size, "cmd[0] %s: %s (as uid %u)", prog, strerror(f->error),
			 (unsigned)cr->uid);
		break;
	default:
		snprintf(buf, size, "setting up the process: %s", strerror(f->error));
		break;
	}
}

int vram_spawn_as(const struct vram_creds *cr, const char *cwd, char *const argv[], char *const env[],
		  int out_fd, uint64_t wait_ms, pid_t *ret_pid, int *ret_late_fd, char *err,
		  size_t err_size)
{
	char **paths = exec_candidates(argv[0], env);
	int report[2] = {-1, -1};
	int r = -ENOMEM;
	if (!paths)
		goto out;
	if (pipe2(report, O_CLOEXEC) < 0) {
		r = -errno;
		snprintf(err, err_size, "pipe: %s", strerror(errno));
		goto out;
	}
	/* no signal handler of the daemon's runs in the child before it resets them */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pid_t pid = fork();
	if (pid == 0)
		child_as(report[1], out_fd, cr, cwd, paths, argv, env);
	int fork_errno = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	close(report[1]);
	report[1] = -1;
	if (pid < 0) {
		r = -fork_errno;
		snprintf(err, err_size, "fork: %s", strerror(fork_errno));
		goto out;
	}
	*ret_pid = pid;
	*ret_late_fd = -1;
	r = 0;
	struct pollfd pfd = {.fd = report[0], .events = POLLIN};
	int ready = 0;
	while (wait_ms && (ready = poll(&pfd, 1, (int)wait_ms)) < 0 && errno == EINTR)
		;
	if (ready == 0) {
		(void)fcntl(report[0], F_SETFL, O_NONBLOCK);
		*ret_late_fd = report[0];
		report[0] = -1;
		goto out;
	}
	/* end of file: the program runs (the pipe closed on exec) */
	struct spawn_failure f;
	ssize_t n;
	while ((n = read(report[0], &f, sizeof(f))) < 0 && errno == EINTR)
		;
	if (n != (ssize_t)sizeof(f))
		goto out;
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
	r = f.error > 0 ? -f.error : -EIO;
	failure_text(&f, cr, cwd, argv[0], err, err_size);
out:
	if (report[0] >= 0)
		close(report[0]);
	if (report[1] >= 0)
		close(report[1]);
	free_strv(paths);
	return r;
}

int vram_spawn_as_late(int fd, const struct vram_creds *cr, const char *cwd, const char *prog,
		       char *text, size_t size)
{
	struct spawn_failure f;
	ssize_t n = read(fd, &f, sizeof(f));
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return -EAGAIN;
	if (n != (ssize_t)sizeof(f))
		return 0;
	failure_text(&f, cr, cwd, prog, text, size);
	return 1;
}
