/* SPDX-License-Identifier: MIT */
/*
 * The CUDA driver module without a GPU: the GPU pairs handed to a cross-GPU
 * restore form the full permutation the driver demands, every driver error
 * becomes a message that says what to do, a machine without libcuda is told
 * what is missing, and a workload's processes are found from /proc on a real
 * process tree.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/engine.h"
#include "gpu/cudadrv.h"

/* A machine of n GPUs of one model; GPU i has UUID bytes all equal to i+1. */
static void make_devs(struct vram_cuda_device *devs, size_t n, const char *model)
{
	for (size_t i = 0; i < n; i++) {
		memset(&devs[i], 0, sizeof(devs[i]));
		devs[i].ordinal = (int)i;
		snprintf(devs[i].name, sizeof(devs[i].name), "%s", model);
		memset(devs[i].uuid.bytes, (int)(i + 1), sizeof(devs[i].uuid.bytes));
	}
}

/* The GPU index a pair's new UUID names (UUID bytes are index+1). */
static unsigned dst_of(const struct vram_cu_gpu_pair *p)
{
	return (unsigned)p->new_uuid.bytes[0] - 1;
}

static unsigned src_of(const struct vram_cu_gpu_pair *p)
{
	return (unsigned)p->old_uuid.bytes[0] - 1;
}

/* Every GPU appears once as old and once as new. */
static void assert_permutation(const struct vram_cu_gpu_pair *pairs, size_t n)
{
	unsigned seen_old[VRAM_CUDA_MAX_DEVICES] = { 0 }, seen_new[VRAM_CUDA_MAX_DEVICES] = { 0 };

	for (size_t i = 0; i < n; i++) {
		seen_old[src_of(&pairs[i])]++;
		seen_new[dst_of(&pairs[i])]++;
	}
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(seen_old[i], 1);
		assert_int_equal(seen_new[i], 1);
	}
}

static unsigned target(const struct vram_cu_gpu_pair *pairs, size_t n, unsigned src)
{
	for (size_t i = 0; i < n; i++)
		if (src_of(&pairs[i]) == src)
			return dst_of(&pairs[i]);
	fail_msg("GPU %u missing from the pairs", src);
	return 0;
}

static void test_move_on_two_gpus_is_a_swap(void **state)
{
	struct vram_cuda_device devs[2];
	struct vram_cu_gpu_pair pairs[8];
	unsigned from[] = { 0 }, to[] = { 1 };
	size_t n = 0;
	char why[256] = "";

	make_devs(devs, 2, "NVIDIA H200");
	assert_int_equal(vram_cudadrv_move_pairs(devs, 2, from, to, 1, pairs, 8, &n, why, sizeof(why)), 0);
	/* One pair alone is refused by the driver: both GPUs must be listed. */
	assert_int_equal(n, 2);
	assert_permutation(pairs, n);
	assert_int_equal(target(pairs, n, 0), 1);
	assert_int_equal(target(pairs, n, 1), 0);
}

static void test_move_keeps_other_gpus_in_place(void **state)
{
	struct vram_cuda_device devs[4];
	struct vram_cu_gpu_pair pairs[4];
	unsigned from[] = { 1 }, to[] = { 3 };
	size_t n = 0;

	make_devs(devs, 4, "NVIDIA H100 80GB HBM3");
	assert_int_equal(vram_cudadrv_move_pairs(devs, 4, from, to, 1, pairs, 4, &n, NULL, 0), 0);
	assert_int_equal(n, 4);
	assert_permutation(pairs, n);
	assert_int_equal(target(pairs, n, 0), 0);
	assert_int_equal(target(pairs, n, 1), 3);
	assert_int_equal(target(pairs, n, 2), 2);
	assert_int_equal(target(pairs, n, 3), 1);
}

static void test_multi_gpu_moves(void **state)
{
	struct vram_cuda_device devs[4];
	struct vram_cu_gpu_pair pairs[4];
	size_t n = 0;

	make_devs(devs, 4, "NVIDIA H200");
	/* A TP=2 process on GPUs 0,1 moves to 2,3: both pairs swap. */
	{
		unsigned from[] = { 0, 1 }, to[] = { 2, 3 };

		assert_int_equal(vram_cudadrv_move_pairs(devs, 4, from, to, 2, pairs, 4, &n, NULL, 0), 0);
		assert_permutation(pairs, n);
		assert_int_equal(target(pairs, n, 0), 2);
		assert_int_equal(target(pairs, n, 1), 3);
		assert_int_equal(target(pairs, n, 2), 0);
		assert_int_equal(target(pairs, n, 3), 1);
	}
	/* Shifted by one, 0,1 → 1,2: the vacated GPU 0 takes the displaced GPU 2. */
	{
		unsigned from[] = { 0, 1 }, to[] = { 1, 2 };

		assert_int_equal(vram_cudadrv_move_pairs(devs, 4, from, to, 2, pairs, 4, &n, NULL, 0), 0);
		assert_permutation(pairs, n);
		assert_int_equal(target(pairs, n, 0), 1);
		assert_int_equal(target(pairs, n, 1), 2);
		assert_int_equal(target(pairs, n, 2), 0);
		assert_int_equal(target(pairs, n, 3), 3);
	}
	/* No move at all: the identity (a restore in place with explicit pairs). */
	assert_int_equal(vram_cudadrv_move_pairs(devs, 4, NULL, NULL, 0, pairs, 4, &n, NULL, 0), 0);
	for (unsigned g = 0; g < 4; g++)
		assert_int_equal(target(pairs, n, g), g);
}

static void test_move_refusals(void **state)
{
	struct vram_cuda_device devs[3];
	struct vram_cu_gpu_pair pairs[3];
	size_t n = 0;
	char why[256];

	make_devs(devs, 3, "NVIDIA H200");
	snprintf(devs[2].name, sizeof(devs[2].name), "NVIDIA H100 80GB HBM3");
	{
		unsigned from[] = { 0 }, to[] = { 2 };

		assert_int_equal(vram_cudadrv_move_pairs(devs, 3, from, to, 1, pairs, 3, &n, why, sizeof(why)),
				 -EINVAL);
		assert_non_null(strstr(why, "different models"));
		assert_non_null(strstr(why, "NVIDIA H100 80GB HBM3"));
	}
	{
		unsigned from[] = { 0 }, to[] = { 7 };

		assert_int_equal(vram_cudadrv_move_pairs(devs, 3, from, to, 1, pairs, 3, &n, why, sizeof(why)),
				 -EINVAL);
		assert_non_null(strstr(why, "GPU 7 does not exist"));
	}
	{
		unsigned from[] = { 0, 1 }, to[] = { 1, 1 };

		assert_int_equal(vram_cudadrv_move_pairs(devs, 3, from, to, 2, pairs, 3, &n, why, sizeof(why)),
				 -EINVAL);
		assert_non_null(strstr(why, "onto GPU 1"));
	}
	{
		unsigned from[] = { 0 }, to[] = { 1 };

		assert_int_equal(vram_cudadrv_move_pairs(devs, 3, from, to, 1, pairs, 2, &n, why, sizeof(why)),
				 -E2BIG);
	}
}

static void test_error_messages(void **state)
{
	struct vram_cuda_error e;

	assert_int_equal(vram_cudadrv_map_error(VRAM_CU_ERROR_NOT_SUPPORTED, VRAM_CUDA_OP_LOCK, 4242, 5000, &e),
			 -EOPNOTSUPP);
	assert_int_equal(e.cu_result, 801);
	assert_non_null(strstr(e.message, "process 4242"));
	assert_non_null(strstr(e.message, "the process is an MPS client or uses UVM/IPC memory: use the hook "
					  "or the restart engine"));

	assert_int_equal(vram_cudadrv_map_error(VRAM_CU_ERROR_NOT_READY, VRAM_CUDA_OP_LOCK, 7, 3000, &e),
			 -ETIMEDOUT);
	assert_non_null(strstr(e.message, "3000 ms"));
	assert_non_null(strstr(e.message, "left running"));
	assert_int_equal(vram_cudadrv_map_error(VRAM_CU_ERROR_TIMEOUT, VRAM_CUDA_OP_LOCK, 7, 10, &e), -ETIMEDOUT);

	assert_int_equal(vram_cudadrv_map_error(VRAM_CU_ERROR_INVALID_VALUE, VRAM_CUDA_OP_RESTORE, 7, 0, &e),
			 -EINVAL);
	assert_non_null(strstr(e.message, "full permutation"));
	assert_non_null(strstr(e.message, "restored in place"));

	assert_int_equal(vram_cudadrv_map_error(VRAM_CU_ERROR_INVALID_VALUE, VRAM_CUDA_OP_GET_STATE, 7, 0, &e),
			 -ESRCH);
	assert_non_null(strstr(e.message, "not a CUDA process"));

	assert_int_equal(vram_cudadrv_map_error(VRAM_CU_ERROR_ILLEGAL_STATE, VRAM_CUDA_OP_CHECKPOINT, 7, 0, &e),
			 -EBUSY);
	assert_non_null(strstr(e.message, "CUDA_ERROR_ILLEGAL_STATE"));

	assert_int_equal(vram_cudadrv_map_error(12345, VRAM_CUDA_OP_UNLOCK, 7, 0, &e), -EIO);
	assert_non_null(strstr(e.message, "cannot unlock process 7: CUDA error 12345"));

	assert_int_equal(vram_cudadrv_map_error(VRAM_CU_SUCCESS, VRAM_CUDA_OP_UNLOCK, 7, 0, &e), 0);
	assert_string_equal(e.message, "");
	/* err is optional. */
	assert_int_equal(vram_cudadrv_map_error(VRAM_CU_ERROR_NOT_SUPPORTED, VRAM_CUDA_OP_LOCK, 1, 0, NULL),
			 -EOPNOTSUPP);

	assert_string_equal(vram_cuda_proc_state_name(VRAM_CUDA_PROC_CHECKPOINTED), "checkpointed");
	assert_string_equal(vram_cuda_proc_state_name(VRAM_CUDA_PROC_FAILED), "failed");
}

static void test_open_without_driver(void **state)
{
	struct vram_cudadrv *d = NULL;
	char why[512] = "";

	assert_int_equal(vram_cudadrv_open("/nonexistent/libcuda.so.1", &d, why, sizeof(why)), -ENOENT);
	assert_null(d);
	assert_non_null(strstr(why, "/nonexistent/libcuda.so.1"));

	/* A library that loads but is not the driver: the missing symbol is named. */
	assert_int_equal(vram_cudadrv_open("libc.so.6", &d, why, sizeof(why)), -ENOSYS);
	assert_null(d);
	assert_non_null(strstr(why, "cuInit"));

	/* $VRAM_LIBCUDA is used when no path is given. */
	setenv("VRAM_LIBCUDA", "/nonexistent/other/libcuda.so", 1);
	assert_int_equal(vram_cudadrv_open(NULL, &d, why, sizeof(why)), -ENOENT);
	assert_non_null(strstr(why, "/nonexistent/other/libcuda.so"));
	unsetenv("VRAM_LIBCUDA");

	vram_cudadrv_close(NULL);
}

static void test_uuid_format_and_parse(void **state)
{
	struct vram_cu_uuid u, back;
	char s[VRAM_CUDA_UUID_STR_MAX];

	for (int i = 0; i < 16; i++)
		u.bytes[i] = (unsigned char)(0xf0 + i - 3 * i);
	vram_cuda_uuid_format(&u, s, sizeof(s));
	assert_int_equal(strlen(s), 40);
	assert_memory_equal(s, "GPU-", 4);
	assert_int_equal(vram_cuda_uuid_parse(s, &back), 0);
	assert_memory_equal(u.bytes, back.bytes, 16);
	assert_int_equal(vram_cuda_uuid_parse("GPU-1234", &back), -EINVAL);
	assert_int_equal(vram_cuda_uuid_parse("GPU-zz345678-1234-1234-1234-123456789abc", &back), -EINVAL);
	assert_int_equal(vram_cuda_uuid_parse("12345678-1234-1234-1234-123456789abc", &back), 0);
	assert_int_equal(back.bytes[0], 0x12);
	assert_int_equal(back.bytes[15], 0xbc);
}

/*
 * Builds  root ─┬─ a ── a1
 *               └─ b
 * and returns root's pid; the others are written to kids[0..2] (a, b, a1).
 */
static pid_t spawn_tree(pid_t kids[3])
{
	int fds[2];
	pid_t root;

	assert_int_equal(pipe(fds), 0);
	root = fork();
	assert_true(root >= 0);
	if (root == 0) {
		pid_t a, b, a1 = 0;
		int inner[2];

		if (pipe(inner) < 0)
			_exit(1);
		a = fork();
		if (a == 0) {
			a1 = fork();
			if (a1 == 0) {
				for (;;)
					pause();
			}
			if (write(inner[1], &a1, sizeof(a1)) < 0)
				_exit(1);
			for (;;)
				pause();
		}
		b = fork();
		if (b == 0) {
			for (;;)
				pause();
		}
		if (read(inner[0], &a1, sizeof(a1)) != sizeof(a1))
			_exit(1);
		pid_t out[3] = { a, b, a1 };
		if (write(fds[1], out, sizeof(out)) < 0)
			_exit(1);
		for (;;)
			pause();
	}
	close(fds[1]);
	assert_int_equal(read(fds[0], kids, 3 * sizeof(pid_t)), (ssize_t)(3 * sizeof(pid_t)));
	close(fds[0]);
	return root;
}

static bool contains(const pid_t *a, size_t n, pid_t x)
{
	for (size_t i = 0; i < n; i++)
		if (a[i] == x)
			return true;
	return false;
}

static void test_proc_tree_of_real_processes(void **state)
{
	pid_t kids[3], got[64], nvml[4];
	size_t n = 0;
	pid_t root = spawn_tree(kids);

	assert_int_equal(vram_proc_tree(root, got, 64, &n), 0);
	assert_int_equal(n, 4);
	assert_int_equal(got[0], root);
	for (int i = 0; i < 3; i++)
		assert_true(contains(got, n, kids[i]));
	/* Breadth first: the grandchild comes after both children. */
	assert_int_equal(got[3], kids[2]);
	/* Our own pid and our parent are not in it. */
	assert_false(contains(got, n, getpid()));

	/* The subtree under a. */
	assert_int_equal(vram_proc_tree(kids[0], got, 64, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(got[0], kids[0]);
	assert_int_equal(got[1], kids[2]);

	/* Too small a buffer: the first ones are filled. */
	assert_int_equal(vram_proc_tree(root, got, 2, &n), -E2BIG);
	assert_int_equal(n, 2);
	assert_int_equal(got[0], root);

	/* Narrowed to what NVML shows on the GPU (plus a pid of another tree). */
	assert_int_equal(vram_proc_tree(root, got, 64, &n), 0);
	nvml[0] = kids[2];
	nvml[1] = getppid();
	nvml[2] = kids[1];
	n = vram_proc_filter(got, n, nvml, 3);
	assert_int_equal(n, 2);
	assert_true(contains(got, n, kids[1]));
	assert_true(contains(got, n, kids[2]));

	kill(kids[2], SIGKILL);
	kill(kids[1], SIGKILL);
	kill(kids[0], SIGKILL);
	kill(root, SIGKILL);
	assert_int_equal(waitpid(root, NULL, 0), root);
	assert_int_equal(vram_proc_tree(root, got, 64, &n), -ESRCH);
}

/* The checkpoint engine says why it cannot take a workload. */
static void test_engine_refuses_with_reasons(void **state)
{
	struct vram_workload_config cfg = { .name = "llm" };
	struct vram_workload w = { .cfg = &cfg };
	struct vram_engine_host host = { 0 };
	char why[256];

	cfg.gpus.kind = VRAM_GPUS_COUNT;
	cfg.gpus.count = 1;
	cfg.share = VRAM_SHARE_MPS;
	assert_false(vram_engine_checkpoint.supports(&w, &host, why, sizeof(why)));
	assert_non_null(strstr(why, "MPS clients"));

	cfg.share = VRAM_SHARE_NONE;
	cfg.gpus.count = 0;
	assert_false(vram_engine_checkpoint.supports(&w, &host, why, sizeof(why)));
	assert_non_null(strstr(why, "no GPU"));

	/* No driver on this machine (forced, so that the test means the same on a GPU host). */
	cfg.gpus.count = 1;
	host.workers = (struct vram_workers *)&host; /* only tested for presence */
	setenv("VRAM_LIBCUDA", "/nonexistent/libcuda.so.1", 1);
	assert_false(vram_engine_checkpoint.supports(&w, &host, why, sizeof(why)));
	assert_non_null(strstr(why, "/nonexistent/libcuda.so.1"));
	unsetenv("VRAM_LIBCUDA");
	assert_string_equal(vram_engine_checkpoint.name, "checkpoint");
	assert_true(vram_engine_checkpoint.keeps_process);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_move_on_two_gpus_is_a_swap),
		cmocka_unit_test(test_move_keeps_other_gpus_in_place),
		cmocka_unit_test(test_multi_gpu_moves),
		cmocka_unit_test(test_move_refusals),
		cmocka_unit_test(test_error_messages),
		cmocka_unit_test(test_open_without_driver),
		cmocka_unit_test(test_uuid_format_and_parse),
		cmocka_unit_test(test_proc_tree_of_real_processes),
		cmocka_unit_test(test_engine_refuses_with_reasons),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
