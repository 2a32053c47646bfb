/* SPDX-License-Identifier: MIT */
/*
 * task_vramd.so ("task/vramd"): a Slurm task plugin that gives a suspended
 * job's GPU memory to host RAM before its processes are stopped, and takes
 * it back when they resume. It does nothing else (every other task hook is
 * a no-op), so it stacks beside the cluster's task plugins:
 * TaskPlugin=task/affinity,task/vramd.
 *
 * Why a task plugin and not the SPANK plugin: on `scontrol suspend` (and
 * gang scheduling), slurmd's _rpc_suspend_job (src/slurmd/slurmd/req.c,
 * Slurm 22.05) answers slurmctld, then calls task_g_slurmd_suspend_job()
 * and waits for it, and only then asks each step's slurmstepd to stop its
 * tasks (_handle_suspend in src/slurmd/slurmstepd/req.c: SIGTSTP, 2 s,
 * SIGSTOP). SPANK has no callback there (step_fn_t in
 * src/common/plugstack.c). On resume, _rpc_suspend_job sends SIGCONT
 * through the steps first and calls task_g_slurmd_resume_job() after: the
 * tasks then run on the CPU while the restore runs, but every CUDA call
 * that touches device memory waits at the hook's gate until the restore is
 * done, so nothing runs on the GPU before its memory is back.
 *
 * On suspend: every workload slurm-JOBID.* of the node's vramd is offloaded
 * (POST /api/workloads/NAME/offload, waited for); on resume, restored. The
 * control socket is VRAM_SLURM_SOCKET in slurmd's environment (default
 * /run/vramd/vramd.sock; %n is the node's name, for several slurmd -N on
 * one host). An error is one line in slurmd's log; the suspend goes on.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <slurm/slurm.h>
#include <slurm/slurm_errno.h>

#include "spank/vramd_client.h"

const char plugin_name[] = "task vramd: a suspended job's GPU memory goes to host RAM";
const char plugin_type[] = "task/vramd";
const uint32_t plugin_version = SLURM_VERSION_NUMBER;

/* Slurm's logging, from the process that loads the plugin (slurmd). */
extern void slurm_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
extern void slurm_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define NAME_MAX_LEN 64  /* bytes of a workload name, as vramd's */
#define STEPS_MAX 256    /* steps of one job acted on, at most */

/*
 * This slurmd's node name: the value of its -N (several slurmd on one host),
 * else the short host name.
 */
static void node_name(char *out, size_t size)
{
	char cmd[4096];
	out[0] = '\0';
	FILE *f = fopen("/proc/self/cmdline", "re");
	size_t n = f ? fread(cmd, 1, sizeof(cmd) - 1, f) : 0;
	if (f)
		fclose(f);
	cmd[n] = '\0';
	for (const char *p = cmd; p < cmd + n; p += strlen(p) + 1) {
		if (strcmp(p, "-N") == 0 && p + strlen(p) + 1 < cmd + n) {
			snprintf(out, size, "%s", p + strlen(p) + 1);
			return;
		}
		if (strncmp(p, "-N", 2) == 0 && p[2]) {
			snprintf(out, size, "%s", p + 2);
			return;
		}
	}
	if (gethostname(out, size - 1) == 0) {
		out[size - 1] = '\0';
		out[strcspn(out, ".")] = '\0';
	}
}

/* Offloads ("offload") or restores ("restore") every step of job_id on this node. */
static void act(uint32_t job_id, const char *action)
{
	char node[256], sock[108];
	node_name(node, sizeof(node));
	const char *tmpl = getenv("VRAM_SLURM_SOCKET");
	if (vram_slurm_socket_path(tmpl && *tmpl ? tmpl : VRAM_SLURM_DEFAULT_SOCKET, node, sock,
				   sizeof(sock)) < 0) {
		slurm_error("task/vramd: VRAM_SLURM_SOCKET is too long");
		return;
	}
	char *status = NULL;
	int st = vram_slurm_request(sock, "GET", "/api/status", NULL, VRAM_SLURM_IO_TIMEOUT_S, &status);
	if (st != 200) {
		if (st != -ENOENT && st != -ECONNREFUSED)
			slurm_error("task/vramd: job %" PRIu32 ": vramd at %s: %s", job_id, sock,
				    st < 0 ? strerror(-st) : "status refused");
		free(status);
		return;
	}
	/* names are [A-Za-z0-9._-]: the quoted "slurm-JOBID." prefix finds each step once */
	char prefix[40], names[STEPS_MAX][NAME_MAX_LEN];
	size_t n_names = 0;
	int plen = snprintf(prefix, sizeof(prefix), "\"slurm-%" PRIu32 ".", job_id);
	for (const char *p = status; (p = strstr(p, prefix)) && n_names < STEPS_MAX; p += plen) {
		size_t len = strcspn(p + 1, "\"");
		if (len >= NAME_MAX_LEN || p[1 + len] != '"')
			continue;
		bool seen = false;
		for (size_t i = 0; i < n_names && !seen; i++)
			seen = strncmp(names[i], p + 1, len) == 0 && names[i][len] == '\0';
		if (seen)
			continue;
		memcpy(names[n_names], p + 1, len);
		names[n_names++][len] = '\0';
	}
	free(status);
	for (size_t i = 0; i < n_names; i++) {
		char path[128], *body = NULL;
		snprintf(path, sizeof(path), "/api/workloads/%.63s/%s", names[i], action);
		st = vram_slurm_request(sock, "POST", path, NULL, VRAM_SLURM_ACTION_TIMEOUT_S, &body);
		if (st >= 200 && st < 300)
			slurm_info("task/vramd: %s: %s done", names[i], action);
		else
			slurm_error("task/vramd: %s: %s: %d %.300s", names[i], action, st,
				    body ? body : strerror(-st));
		free(body);
	}
}

int init(void);
int fini(void);
int task_p_slurmd_suspend_job(uint32_t job_id);
int task_p_slurmd_resume_job(uint32_t job_id);

int init(void)
{
	return SLURM_SUCCESS;
}

int fini(void)
{
	return SLURM_SUCCESS;
}

/* slurmd, before its slurmstepds stop the job's tasks (SIGTSTP, SIGSTOP). */
int task_p_slurmd_suspend_job(uint32_t job_id)
{
	act(job_id, "offload");
	return SLURM_SUCCESS;
}

/* slurmd, after the job's tasks got SIGCONT; their CUDA calls wait for this. */
int task_p_slurmd_resume_job(uint32_t job_id)
{
	act(job_id, "restore");
	return SLURM_SUCCESS;
}

/* The rest of the task plugin interface: nothing to do (the arguments are Slurm's own types). */
int task_p_slurmd_batch_request(void *req);
int task_p_slurmd_launch_request(void *req, uint32_t node_id);
int task_p_pre_setuid(void *job);
int task_p_pre_launch(void *job);
int task_p_pre_set_affinity(void *job, uint32_t node_tid);
int task_p_set_affinity(void *job, uint32_t node_tid);
int task_p_post_set_affinity(void *job, uint32_t node_tid);
int task_p_post_term(void *job, void *task);
int task_p_post_step(void *job);
int task_p_add_pid(pid_t pid);

int task_p_slurmd_batch_request(void *req)
{
	return SLURM_SUCCESS;
}

int task_p_slurmd_launch_request(void *req, uint32_t node_id)
{
	return SLURM_SUCCESS;
}

int task_p_pre_setuid(void *job)
{
	return SLURM_SUCCESS;
}

int task_p_pre_launch(void *job)
{
	return SLURM_SUCCESS;
}

int task_p_pre_set_affinity(void *job, uint32_t node_tid)
{
	return SLURM_SUCCESS;
}

int task_p_set_affinity(void *job, uint32_t node_tid)
{
	return SLURM_SUCCESS;
}

int task_p_post_set_affinity(void *job, uint32_t node_tid)
{
	return SLURM_SUCCESS;
}

int task_p_post_term(void *job, void *task)
{
	return SLURM_SUCCESS;
}

int task_p_post_step(void *job)
{
	return SLURM_SUCCESS;
}

int task_p_add_pid(pid_t pid)
{
	return SLURM_SUCCESS;
}
