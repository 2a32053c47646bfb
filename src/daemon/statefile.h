/* SPDX-License-Identifier: MIT */
/*
 * The state file: what vramd must not forget when it dies or is replaced,
 * so that the next vramd can adopt the processes that outlived it (issue
 * "vramd survives its own death"). Per workload, the runtime settings
 * changed through the API, CLI or MCP (idle timers) and its instances (pid
 * with its start time, so that a reused pid is never taken for ours,
 * process group, port, GPUs by UUID, engine, ready, offloaded or parked); ad-hoc
 * workloads with their spec and owner; the MPS control daemons.
 *
 * JSON with a "format": "vramd-state" marker and a "version". Written
 * atomically: a temporary file in the same directory (never through a
 * symbolic link, mode 0600), fsync, rename over the old one, fsync of the
 * directory, so that a crash leaves either the old file or the new one.
 * Read defensively: the file may be missing, truncated by a full disk,
 * corrupt, of another version, or made by someone else; every such file
 * gives an error with one sentence saying why, never a crash, and every
 * count and string length is bounded.
 *
 * Plain structs, filled by the caller (write) or by vram_statefile_read;
 * every pointer in them is owned by the struct that holds it and freed by
 * vram_statefile_done.
 */
#ifndef VRAM_STATEFILE_H
#define VRAM_STATEFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/units.h"

#define VRAM_STATEFILE_FORMAT "vramd-state"
#define VRAM_STATEFILE_VERSION 1
/* Bounds of what is read; a file beyond them is refused as a whole. */
#define VRAM_STATEFILE_MAX_BYTES (4 * 1024 * 1024) /* bytes of the file */
#define VRAM_STATEFILE_MAX_WORKLOADS 1040 /* the config's 1024 and the ad-hoc slots */
#define VRAM_STATEFILE_MAX_INSTANCES 64   /* per workload: the config's replicas */
#define VRAM_STATEFILE_MAX_GPUS 64        /* per instance */
#define VRAM_STATEFILE_MAX_ARGS 256       /* argv words of an ad-hoc workload */
#define VRAM_STATEFILE_MAX_ENV 4096       /* environment entries of an ad-hoc workload */
#define VRAM_STATEFILE_MAX_GROUPS 64      /* supplementary groups of an owner */
#define VRAM_STATEFILE_MAX_MPS 64         /* MPS control daemons */
#define VRAM_STATEFILE_STRING_MAX 4096    /* bytes of any string, paths and env entries */
#define VRAM_STATEFILE_NAME_MAX 63        /* bytes of a workload name: [A-Za-z0-9._-] */
#define VRAM_STATEFILE_PID_MAX 4194304    /* the kernel's PID_MAX_LIMIT */

enum vram_statefile_inst_state {
	VRAM_STATEFILE_READY,     /* serving from GPU memory */
	VRAM_STATEFILE_OFFLOADED, /* its GPU memory parked in host RAM, restorable */
	VRAM_STATEFILE_STARTING,  /* spawned, not healthy yet: adopted, then checked */
	VRAM_STATEFILE_PARKED,    /* its GPU memory in its park file on disk, restorable */
};

/* A runtime setting: not set (the config's value holds), or a value. */
struct vram_statefile_ms {
	bool set;
	uint64_t ms; /* ms; VRAM_DURATION_NEVER = off */
};

struct vram_statefile_instance {
	unsigned replica;      /* which of the workload's instances, < VRAM_STATEFILE_MAX_INSTANCES */
	pid_t pid;             /* 1..VRAM_STATEFILE_PID_MAX */
	uint64_t start_ticks;  /* clock ticks since boot: /proc/<pid>/stat field 22 */
	pid_t pgid;            /* its process group, 1..VRAM_STATEFILE_PID_MAX */
	char **cmdline;        /* owned, n_cmdline words of /proc/<pid>/cmdline when written,
				  NULL-terminated; none: not compared */
	size_t n_cmdline;      /* <= VRAM_STATEFILE_MAX_ARGS */
	pid_t relay_pid;       /* its output relay, 0: none */
	uint64_t relay_start_ticks; /* the relay's start time, as start_ticks */
	unsigned port;         /* 0: none */
	char **gpu_uuids;      /* owned, n_gpus strings ("GPU-..."), NULL-terminated */
	size_t n_gpus;
	uint64_t *gpu_bytes;   /* owned, n_gpus bytes charged on each GPU, or NULL: not recorded */
	bool mps;              /* it runs through an MPS control daemon */
	char *engine;          /* owned; the offload engine's name ("hook"), NULL: none chosen */
	enum vram_statefile_inst_state state;
	uint64_t offloaded_bytes; /* bytes held in host RAM, when offloaded */
	uint64_t parked_bytes;    /* bytes in its park file, when parked */
};

/* Whom an ad-hoc workload runs as: its owner. */
struct vram_statefile_owner {
	bool as_daemon;        /* vramd's own user: nothing to switch */
	uint32_t uid, gid;     /* < UINT32_MAX */
	uint32_t *groups;      /* owned, n_groups supplementary groups */
	size_t n_groups;       /* <= VRAM_STATEFILE_MAX_GROUPS */
};

/* An ad-hoc workload's spec (vramctl run), enough to know it again. */
struct vram_statefile_adhoc {
	char **cmd;            /* owned argv, n_cmd >= 1 words, NULL-terminated */
	size_t n_cmd;
	char **env;            /* owned "KEY=VALUE" entries, NULL-terminated (maybe empty) */
	size_t n_env;
	char *cwd;             /* owned; NULL: the daemon's working directory */
	struct vram_mem memory; /* per GPU; zero: not declared */
	unsigned gpus;         /* GPUs (0 = CPU only), <= VRAM_STATEFILE_MAX_GPUS */
	struct vram_statefile_owner owner;
};

struct vram_statefile_workload {
	char *name;            /* owned, 1..VRAM_STATEFILE_NAME_MAX of [A-Za-z0-9._-] */
	struct vram_statefile_ms offload_after; /* idle.offload_after set at runtime */
	struct vram_statefile_ms release_after; /* idle.release_after set at runtime */
	struct vram_statefile_ms park_after;    /* idle.park_after set at runtime */
	bool is_adhoc;         /* adhoc is filled: not a workload of the config */
	struct vram_statefile_adhoc adhoc;
	struct vram_statefile_instance *instances; /* owned array */
	size_t n_instances;    /* <= VRAM_STATEFILE_MAX_INSTANCES */
};

struct vram_statefile_mps {
	char *pipe_dir;        /* owned; the control daemon's CUDA_MPS_PIPE_DIRECTORY */
	pid_t pid;             /* 1..VRAM_STATEFILE_PID_MAX */
	uint64_t start_ticks;  /* clock ticks since boot, as for an instance */
};

struct vram_statefile {
	struct vram_statefile_workload *workloads; /* owned array */
	size_t n_workloads;    /* <= VRAM_STATEFILE_MAX_WORKLOADS */
	struct vram_statefile_mps *mps; /* owned array */
	size_t n_mps;          /* <= VRAM_STATEFILE_MAX_MPS */
	/* on read only: */
	int64_t written_at;    /* seconds since the epoch the writer wrote it; informational */
	char written_by[32];   /* the writer's vramd version; informational */
};

/* Frees everything sf owns (NULL and half-filled ones too) and zeroes it. */
void vram_statefile_done(struct vram_statefile *sf);

/*
 * Writes sf (borrowed) to path atomically: path.tmp in the same directory
 * (O_NOFOLLOW, mode 0600), fsync, rename over path, fsync of the directory.
 * Returns 0, or -errno with one sentence in why (why_size bytes); the old
 * file, if any, is then left as it was. Blocking (a few ms on a local disk):
 * never for a hot path.
 */
int vram_statefile_write(const char *path, const struct vram_statefile *sf, char *why,
			 size_t why_size);

/*
 * Reads path into *ret (zeroed first; on failure left zeroed). Returns 0, or
 * -errno with one sentence in why (why_size bytes) naming the file:
 * -ENOENT (missing), -ELOOP (a symbolic link, not followed), -ENXIO (not a
 * regular file), -EFBIG (over VRAM_STATEFILE_MAX_BYTES), -EBADMSG (not
 * JSON, truncated, or a value out of its bounds: the sentence names the
 * field), -EPROTO (not a vramd state file, or another version), -ENOMEM, or
 * the read's error.
 */
int vram_statefile_read(const char *path, struct vram_statefile *ret, char *why, size_t why_size);

/*
 * Parses the text of a state file (text: size bytes, borrowed, need not be
 * NUL-terminated); name is what the sentences call it. As vram_statefile_read
 * without the file: the fuzz target's entry.
 */
int vram_statefile_parse(const char *text, size_t size, const char *name,
			 struct vram_statefile *ret, char *why, size_t why_size);

/* The name of an instance state ("ready", "offloaded", "starting", "parked"). */
const char *vram_statefile_inst_state_name(enum vram_statefile_inst_state s);

#endif
