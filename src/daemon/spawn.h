/* SPDX-License-Identifier: MIT */
/*
 * Starting processes: what every module that starts one shares (the
 * supervisor's workloads, the output relays, the MPS control commands), so
 * that none of them calls another for it. Spawn attributes that leave
 * nothing of the daemon's signal handling to the child; posix_spawn with
 * the descriptor limit the daemon started with; the program's lookup; a
 * program run through a descriptor opened once; and the fork of a child
 * that runs as another user.
 */
#ifndef VRAM_SPAWN_H
#define VRAM_SPAWN_H

#include <spawn.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>

/*
 * A user a child runs as instead of the daemon's own. posix_spawn cannot
 * change a child's user, so such a child is forked: it takes the groups,
 * then the group, then the user (all three of real, effective and saved),
 * and only then enters its working directory and looks up its program, so
 * that the user's own permissions apply to both.
 */
struct vram_creds {
	uid_t uid;
	gid_t gid;           /* primary group */
	const gid_t *groups; /* borrowed; supplementary groups */
	size_t n_groups;
};

/* Where a child of another user looks for a bare program when its env sets no PATH. */
#define VRAM_SPAWN_DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin"

/*
 * Initializes attr for a child with an empty signal mask and every signal at
 * its default disposition (nothing of the daemon's handling carries over),
 * plus flags (POSIX_SPAWN_SETPGROUP: a new group; POSIX_SPAWN_SETSID: a new
 * session). Caller destroys attr once this returned 0. Returns 0 or -ENOMEM.
 */
int vram_spawn_attr_init(posix_spawnattr_t *attr, short flags);

/*
 * Raises the daemon's soft RLIMIT_NOFILE to want, or to the hard limit when
 * that is lower (a gateway with thousands of clients needs more than the
 * usual 1024). Returns the soft limit now in force.
 */
rlim_t vram_spawn_nofile_raise(rlim_t want);
/*
 * posix_spawn (search: posix_spawnp) with the soft RLIMIT_NOFILE the daemon
 * started with, not the raised one. Returns 0 or an errno value, as they do.
 */
int vram_spawn_posix(pid_t *pid, const char *path, bool search, const posix_spawn_file_actions_t *fa,
		     const posix_spawnattr_t *attr, char *const argv[], char *const envp[]);

/*
 * Whether file names an executable, the way posix_spawnp will look for it
 * (relative paths from cwd, the child's working directory; bare names on
 * the daemon's PATH). Checked up front so that a missing program is an
 * error of the spawn, not a child that exits 127, whatever the C library
 * does. Returns 0 or -errno.
 */
int vram_spawn_check_executable(const char *file, const char *cwd);

/*
 * Opens the program at path (close-on-exec, so no child keeps it) and
 * writes "/proc/self/fd/N" into ret_path, to spawn it through the open
 * file: what runs is then the file opened now, whatever later happens to
 * path (an upgrade on disk; "/proc/self/exe" resolved by a child is
 * valgrind's tool under valgrind). Returns the descriptor (caller closes
 * it when the path is no longer used) or -errno.
 */
int vram_spawn_open_program(const char *path, char *ret_path, size_t size);

/*
 * Forks a child that runs argv (argv[0] looked up on env's PATH, else
 * VRAM_SPAWN_DEFAULT_PATH) with env only, as cr, in cwd (NULL: the
 * daemon's), in a process group of its own, stdin on /dev/null, stdout and
 * stderr on out_fd, with the descriptor limit the daemon started with.
 * Waits at most wait_ms for the child to run its program (0: not at all):
 * the user's own file systems (a FUSE mount that never answers) could hold
 * its chdir or exec for ever. Returns 0 with *ret_pid once the program
 * runs, or -errno with the step that failed, and as whom, in err ("cwd
 * /root: Permission denied (as uid 1000)"). When the child has neither run
 * its program nor failed in time, returns 0 too, with the read end of its
 * report pipe in *ret_late_fd (non-blocking; caller closes), else -1 there;
 * read it with vram_spawn_as_late.
 */
int vram_spawn_as(const struct vram_creds *cr, const char *cwd, char *const argv[], char *const env[],
		  int out_fd, uint64_t wait_ms, pid_t *ret_pid, int *ret_late_fd, char *err,
		  size_t err_size);
/*
 * What the child of vram_spawn_as (cr, cwd, prog as given to it) reported
 * on fd, its late report pipe. Returns -EAGAIN (nothing yet), 1 with the
 * failed step in text, or 0 (its program runs, or the report was cut short).
 */
int vram_spawn_as_late(int fd, const struct vram_creds *cr, const char *cwd, const char *prog,
		       char *text, size_t size);

#endif
