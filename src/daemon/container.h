/* SPDX-License-Identifier: MIT */
/*
 * Containers as workloads (container: in the config): the command line of
 * the runtime (podman or docker) that runs a workload's replica in the
 * foreground, and the runtime commands that stop and remove it.
 *
 * The runtime's foreground `run` process is the supervised child: its
 * output is the container's, it exits with the container's status, and
 * --rm removes the container when it does. A container does not end with
 * that process, though (the runtime's monitor keeps it), so stopping goes
 * through the runtime by the container's name, vramd-<workload>-<replica>:
 * `stop -t GRACE`, then `rm -f`. The name is fixed, so that a leftover of
 * a vramd that crashed is replaced at the next start (podman run --replace;
 * docker: rm -f first).
 *
 * Inside, the container runs on the host's network (the workload's port is
 * the host's), with libvram.so, the hook socket and the park directory
 * bind-mounted at their host paths and vramd's variables (PORT,
 * CUDA_VISIBLE_DEVICES, VRAM_*, LD_PRELOAD) set, so the hook connects from
 * inside as from a process; the hook channel lists it under its host pid.
 */
#ifndef VRAM_CONTAINER_H
#define VRAM_CONTAINER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

#define VRAM_CONTAINER_NAME_MAX 96 /* bytes of "vramd-<workload>-<replica>", NUL included */

/* What one replica's container is run with. Everything is borrowed for the call. */
struct vram_container_run {
	const struct vram_container_config *cfg;
	enum vram_container_runtime runtime; /* podman or docker (vram_container_resolve) */
	const char *name;           /* vram_container_name() */
	char *const *env;           /* "KEY=VALUE" set inside after cfg->env, so they win (vramd's
				       variables; LD_PRELOAD holds cfg->env's after the hook),
				       NULL-terminated; may be NULL */
	const char *hook_library;   /* libvram.so, mounted read-only at its path; NULL: none */
	const char *hook_socket;    /* the hook socket, mounted at its path; NULL: none */
	const char *hook_dir;       /* instead: the directory holding it, mounted read-only at its path */
	const char *park_dir;       /* the park directory, mounted read-write at its path; NULL: none */
	char *const *dirs;          /* more directories mounted read-write at their paths (the MPS
				       pipe directory), NULL-terminated; may be NULL */
	bool ipc_host;              /* the host's IPC namespace (an MPS client needs it) */
	char *const *devices;       /* GPUs passed in ("0", or a UUID), NULL-terminated; NULL or
				       empty: none (simulated GPUs) */
};

/* "vramd-<workload>-<replica>" into buf (VRAM_CONTAINER_NAME_MAX bytes). */
void vram_container_name(const char *workload, unsigned replica, char *buf, size_t size);

/*
 * The runtime rt stands for: itself, or for auto, podman if it is on PATH,
 * else docker if that is, else VRAM_CONTAINER_AUTO (none). Its program is
 * vram_container_runtime_name().
 */
enum vram_container_runtime vram_container_resolve(enum vram_container_runtime rt);

/*
 * The runtime's foreground command line for r: run --rm, --replace
 * (podman), --name, --network=host, the mounts, -e for each variable, the
 * GPUs (podman: --device nvidia.com/gpu=ID, CDI names; docker: --gpus
 * "device=ID,..."), the image and cfg->args. ${VAR} in it is left for the
 * supervisor to substitute. Sets *ret (NULL-terminated; caller frees each
 * string and the array). Returns 0, -E2BIG (more than
 * VRAM_CONTAINER_ARGV_MAX words) or -ENOMEM.
 */
#define VRAM_CONTAINER_ARGV_MAX 2048
int vram_container_argv(const struct vram_container_run *r, char ***ret);

/*
 * Starts "<runtime> stop -t <grace, whole seconds rounded up> <name>" in the
 * background (output discarded; the daemon's reaper collects it), so that
 * the runtime sends the container SIGTERM and SIGKILL after the grace.
 * Returns 0 or -errno.
 */
int vram_container_stop(const char *runtime, const char *name, uint64_t grace_ms);
/* Starts "<runtime> rm -f <name>" in the background: kills and removes it. Returns 0 or -errno. */
int vram_container_remove(const char *runtime, const char *name);

#endif
