/* SPDX-License-Identifier: MIT */
/*
 * Containers as workloads; see container.h. The command line is built here
 * and run by the supervisor like any workload's; the stop and remove
 * commands are fire-and-forget children of the daemon, reaped by its
 * SIGCHLD loop (they are no workload's, so it drops them).
 */
#include "daemon/container.h"

#include "common/strutil.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/spawn.h"

extern char **environ;

void vram_container_name(const char *workload, unsigned replica, char *buf, size_t size)
{
	snprintf(buf, size, "vramd-%s-%u", workload, replica);
}

enum vram_container_runtime vram_container_resolve(enum vram_container_runtime rt)
{
	if (rt != VRAM_CONTAINER_AUTO)
		return rt;
	if (vram_spawn_check_executable(vram_container_runtime_name(VRAM_CONTAINER_PODMAN), NULL) == 0)
		return VRAM_CONTAINER_PODMAN;
	if (vram_spawn_check_executable(vram_container_runtime_name(VRAM_CONTAINER_DOCKER), NULL) == 0)
		return VRAM_CONTAINER_DOCKER;
	return VRAM_CONTAINER_AUTO;
}

/* A growing argv; a failed push leaves it marked failed, checked once at the end. */
struct argv_builder {
	char **v;
	size_t n, cap;
	int error; /* 0, -ENOMEM or -E2BIG */
};

static void push_owned(struct argv_builder *b, char *s)
{
	if (!s && !b->error)
		b->error = -ENOMEM;
	if (b->error) {
		free(s);
		return;
	}
	if (b->n + 2 > VRAM_CONTAINER_ARGV_MAX) {
		b->error = -E2BIG;
		free(s);
		return;
	}
	if (b->n + 2 > b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 64;
		char **v = realloc(b->v, cap * sizeof(*v));
		if (!v) {
			b->error = -ENOMEM;
			free(s);
			return;
		}
		b->v = v;
		b->cap = cap;
	}
	b->v[b->n++] = s;
	b->v[b->n] = NULL;
}

static void push(struct argv_builder *b, const char *s)
{
	push_owned(b, strdup(s));
}

static void pushf(struct argv_builder *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void pushf(struct argv_builder *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = vram_str_vprintf(fmt, ap);
	va_end(ap);
	push_owned(b, s);
}

static void builder_free(struct argv_builder *b)
{
	for (size_t i = 0; i < b->n; i++)
		free(b->v[i]);
	free(b->v);
}

int vram_container_argv(const struct vram_container_run *r, char ***ret)
{
	struct argv_builder b = {0};
	bool podman = r->runtime != VRAM_CONTAINER_DOCKER;
	push(&b, vram_container_runtime_name(r->runtime));
	push(&b, "run");
	push(&b, "--rm");
	if (podman)
		push(&b, "--replace"); /* a leftover of a vramd that crashed goes */
	pushf(&b, "--name=%s", r->name);
	push(&b, "--network=host");
	if (r->ipc_host)
		push(&b, "--ipc=host");
	if (r->hook_library)
		pushf(&b, "--volume=%s:%s:ro", r->hook_library, r->hook_library);
	if (r->hook_dir) /* read-only: a container cannot put a socket of its own there for others */
		pushf(&b, "--volume=%s:%s:ro", r->hook_dir, r->hook_dir);
	else if (r->hook_socket)
		pushf(&b, "--volume=%s:%s", r->hook_socket, r->hook_socket);
	if (r->park_dir)
		pushf(&b, "--volume=%s:%s", r->park_dir, r->park_dir);
	for (size_t i = 0; r->dirs && r->dirs[i]; i++)
		pushf(&b, "--volume=%s:%s", r->dirs[i], r->dirs[i]);
	for (size_t i = 0; i < r->cfg->n_volumes; i++)
		pushf(&b, "--volume=%s", r->cfg->volumes[i]);
	/* the container's own first: the runtime keeps the last of a name, and vramd's win, as for a process */
	for (size_t i = 0; i < r->cfg->n_env; i++)
		pushf(&b, "--env=%s", r->cfg->env[i]);
	for (size_t i = 0; r->env && r->env[i]; i++)
		pushf(&b, "--env=%s", r->env[i]);
	if (r->devices && r->devices[0]) {
		if (podman) {
			/* CDI names, as nvidia-ctk cdi generate writes them (index and UUID both) */
			for (size_t i = 0; r->devices[i]; i++)
				pushf(&b, "--device=nvidia.com/gpu=%s", r->devices[i]);
		} else {
			/* one CSV field holding a comma: quoted, as docker's --gpus parser wants it */
			size_t len = 0;
			char list[4096];
			list[0] = '\0';
			for (size_t i = 0; r->devices[i] && len < sizeof(list); i++)
				len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s", i ? "," : "",
							r->devices[i]);
			if (len >= sizeof(list) && !b.error)
				b.error = -E2BIG;
			push(&b, "--gpus");
			pushf(&b, "\"device=%s\"", list);
		}
	}
	push(&b, r->cfg->image);
	for (size_t i = 0; i < r->cfg->n_args; i++)
		push(&b, r->cfg->args[i]);
	if (b.error) {
		builder_free(&b);
		return b.error;
	}
	*ret = b.v;
	return 0;
}

/* Runs argv (argv[0] on PATH) in the background, in a group of its own, with no stdio. */
static int run_detached(char *const argv[])
{
	posix_spawnattr_t attr;
	posix_spawn_file_actions_t fa;
	int r = vram_spawn_attr_init(&attr, POSIX_SPAWN_SETPGROUP);
	if (r < 0)
		return r;
	if (posix_spawn_file_actions_init(&fa) != 0) {
		posix_spawnattr_destroy(&attr);
		return -ENOMEM;
	}
	if (posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0) ||
	    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0) ||
	    posix_spawn_file_actions_adddup2(&fa, 1, 2)) {
		r = -ENOMEM;
		goto out;
	}
	pid_t pid;
	int e = vram_spawn_posix(&pid, argv[0], true, &fa, &attr, argv, environ);
	r = e ? -e : 0;
out:
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	return r;
}

int vram_container_stop(const char *runtime, const char *name, uint64_t grace_ms)
{
	char secs[24];
	snprintf(secs, sizeof(secs), "%" PRIu64, (grace_ms + 999) / 1000);
	char *argv[] = {(char *)runtime, "stop", "-t", secs, (char *)name, NULL};
	return run_detached(argv);
}

int vram_container_remove(const char *runtime, const char *name)
{
	char *argv[] = {(char *)runtime, "rm", "-f", (char *)name, NULL};
	return run_detached(argv);
}
