/* SPDX-License-Identifier: MIT */
/*
 * vram-ckpt: the checkpoint engine's driver calls from the command line, for
 * the GPU checks (tests/gpu/run-checkpoint.sh). Built on the GPU host with
 * only libc and libdl:
 *   gcc -O2 -std=c11 -D_GNU_SOURCE -Isrc tests/gpu/vram-ckpt.c src/gpu/cudadrv.c -ldl -o vram-ckpt
 *
 *   vram-ckpt devices                    GPUs as the driver sees them
 *   vram-ckpt state PID                  running | locked | checkpointed | failed
 *   vram-ckpt tree PID                   PID and its descendants
 *   vram-ckpt offload PID [TIMEOUT_MS]   lock + checkpoint
 *   vram-ckpt restore PID [A:B ...]      restore (moving GPU A to B, full permutation) + unlock
 *
 * Each action prints one line "ok <action> pid=<pid> seconds=<s>" or
 * "error <action> pid=<pid> errno=<e>: <message>" and exits 0 / 1.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpu/cudadrv.h"

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int fail(const char *action, pid_t pid, int r, const char *msg)
{
	printf("error %s pid=%d errno=%d: %s\n", action, (int)pid, -r, msg);
	return 1;
}

int main(int argc, char **argv)
{
	struct vram_cuda_device devs[VRAM_CUDA_MAX_DEVICES];
	struct vram_cuda_error e = { 0 };
	struct vram_cudadrv *d = NULL;
	size_t n_devs = 0;
	char why[512];
	pid_t pid = 0;
	double t0;
	int r;

	if (argc < 2) {
		fprintf(stderr, "usage: vram-ckpt devices|state|tree|offload|restore [PID] [...]\n");
		return 2;
	}
	if (argc >= 3)
		pid = (pid_t)atoi(argv[2]);

	if (!strcmp(argv[1], "tree")) {
		pid_t pids[256];
		size_t n = 0;

		r = vram_proc_tree(pid, pids, 256, &n);
		if (r < 0 && r != -E2BIG)
			return fail("tree", pid, r, strerror(-r));
		for (size_t i = 0; i < n; i++)
			printf("%d%s", (int)pids[i], i + 1 < n ? " " : "\n");
		return 0;
	}

	r = vram_cudadrv_open(NULL, &d, why, sizeof(why));
	if (r < 0)
		return fail(argv[1], pid, r, why);
	r = vram_cudadrv_devices(d, devs, VRAM_CUDA_MAX_DEVICES, &n_devs, &e);
	if (r < 0)
		return fail(argv[1], pid, r, e.message);

	if (!strcmp(argv[1], "devices")) {
		printf("driver %d checkpoint-api %s\n", vram_cudadrv_driver_version(d),
		       vram_cudadrv_has_checkpoint(d) ? "yes" : "no");
		for (size_t i = 0; i < n_devs; i++)
			printf("%zu %s %s\n", i, devs[i].uuid_str, devs[i].name);
		r = 0;
	} else if (!strcmp(argv[1], "state") && pid > 0) {
		enum vram_cuda_proc_state st;

		r = vram_cudadrv_get_state(d, pid, &st, &e);
		if (r < 0) {
			vram_cudadrv_close(d);
			return fail("state", pid, r, e.message);
		}
		printf("%s\n", vram_cuda_proc_state_name(st));
	} else if (!strcmp(argv[1], "offload") && pid > 0) {
		unsigned timeout = argc >= 4 ? (unsigned)atoi(argv[3]) : 15000;
		double t_lock;

		t0 = now_s();
		r = vram_cudadrv_lock(d, pid, timeout, &e);
		if (r < 0) {
			vram_cudadrv_close(d);
			return fail("offload", pid, r, e.message);
		}
		t_lock = now_s() - t0;
		r = vram_cudadrv_checkpoint(d, pid, &e);
		if (r < 0) {
			struct vram_cuda_error e2;

			vram_cudadrv_unlock(d, pid, &e2);
			vram_cudadrv_close(d);
			return fail("offload", pid, r, e.message);
		}
		printf("ok offload pid=%d seconds=%.3f lock_seconds=%.3f\n", (int)pid, now_s() - t0, t_lock);
	} else if (!strcmp(argv[1], "restore") && pid > 0) {
		struct vram_cu_gpu_pair pairs[VRAM_CUDA_MAX_DEVICES];
		unsigned from[VRAM_CUDA_MAX_DEVICES], to[VRAM_CUDA_MAX_DEVICES];
		size_t n_moves = 0, n_pairs = 0;

		for (int i = 3; i < argc && n_moves < VRAM_CUDA_MAX_DEVICES; i++) {
			if (sscanf(argv[i], "%u:%u", &from[n_moves], &to[n_moves]) != 2) {
				fprintf(stderr, "bad move %s (want A:B)\n", argv[i]);
				return 2;
			}
			n_moves++;
		}
		if (n_moves) {
			r = vram_cudadrv_move_pairs(devs, n_devs, from, to, n_moves, pairs, VRAM_CUDA_MAX_DEVICES,
						    &n_pairs, why, sizeof(why));
			if (r < 0) {
				vram_cudadrv_close(d);
				return fail("restore", pid, r, why);
			}
			for (size_t i = 0; i < n_pairs; i++) {
				char a[VRAM_CUDA_UUID_STR_MAX], b[VRAM_CUDA_UUID_STR_MAX];

				vram_cuda_uuid_format(&pairs[i].old_uuid, a, sizeof(a));
				vram_cuda_uuid_format(&pairs[i].new_uuid, b, sizeof(b));
				printf("pair %s -> %s\n", a, b);
			}
		}
		t0 = now_s();
		r = vram_cudadrv_restore(d, pid, n_pairs ? pairs : NULL, n_pairs, &e);
		if (r < 0) {
			vram_cudadrv_close(d);
			return fail("restore", pid, r, e.message);
		}
		r = vram_cudadrv_unlock(d, pid, &e);
		if (r < 0) {
			vram_cudadrv_close(d);
			return fail("restore", pid, r, e.message);
		}
		printf("ok restore pid=%d seconds=%.3f moved=%zu\n", (int)pid, now_s() - t0, n_moves);
	} else {
		fprintf(stderr, "unknown action or missing pid\n");
		r = 2;
	}
	vram_cudadrv_close(d);
	return r == 0 ? 0 : 1;
}
