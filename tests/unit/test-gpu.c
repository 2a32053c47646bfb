/* SPDX-License-Identifier: MIT */
/*
 * GPU layer tests: the simulated backend's inventory and charges, the nvml
 * backend loaded for real through dlopen from the fake libnvidia-ml in
 * tests/fakenvml (both the current and the first-version entry points), and
 * the `auto` choice with its one-line note.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "gpu/gpu.h"

#define GiB VRAM_GiB
#define MiB VRAM_MiB
#define FAKE_DIR VRAM_BUILD_ROOT "/tests/fakenvml"
#define FAKE_LIB FAKE_DIR "/libnvidia-ml.so.1"
#define FAKE_V1_LIB FAKE_DIR "/libnvidia-ml-v1.so.1"

static int reset_env(void **state)
{
	unsetenv(VRAM_NVML_LIBRARY_ENV);
	unsetenv("FAKENVML_GPUS");
	unsetenv("FAKENVML_INIT_FAIL");
	unsetenv("FAKENVML_PROCS");
	return 0;
}

static struct vram_config config_for(enum vram_gpu_backend_kind backend)
{
	struct vram_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.gpus.backend = backend;
	return cfg;
}

static struct vram_gpus *open_ok(const struct vram_config *cfg, char *note, size_t note_size)
{
	struct vram_gpus *g = NULL;
	int r = vram_gpu_open(cfg, &g, note, note_size);
	if (r < 0)
		fail_msg("vram_gpu_open: %d: %s", r, note);
	assert_non_null(g);
	return g;
}

static void test_sim_default(void **state)
{
	struct vram_config cfg = config_for(VRAM_GPU_BACKEND_SIM);
	char note[256];
	struct vram_gpus *g = open_ok(&cfg, note, sizeof(note));
	assert_string_equal(note, "using 2 simulated GPUs (2x80GiB)");
	assert_string_equal(vram_gpu_backend_name_of(g), "sim");
	assert_true(vram_gpu_is_sim(g));
	assert_int_equal(vram_gpu_count(g), 2);
	struct vram_gpu_info info;
	assert_int_equal(vram_gpu_query(g, 1, &info), 0);
	assert_int_equal(info.index, 1);
	assert_string_equal(info.name, "Simulated GPU");
	assert_string_equal(info.uuid, "GPU-sim-0001-0000-0000-000000000000");
	assert_string_equal(info.pci_bus_id, "00000000:02:00.0");
	assert_int_equal(info.mem_total, 80 * GiB);
	assert_int_equal(info.mem_used, 0);
	assert_int_equal(info.mem_free, 80 * GiB);
	assert_int_equal(info.util_percent, -1);
	assert_int_equal(info.mig_mode, 0);
	assert_true(info.procs_valid);
	assert_int_equal(info.n_procs, 0);
	assert_int_equal(vram_gpu_query(g, 2, &info), -ENODEV);
	vram_gpu_close(g);
	vram_gpu_close(NULL);
}

static void test_sim_charge(void **state)
{
	struct vram_sim_gpu_config sims[] = {
		{ .name = "Small", .memory = 24 * GiB },
		{ .name = "Big", .memory = 80 * GiB },
	};
	struct vram_config cfg = config_for(VRAM_GPU_BACKEND_SIM);
	cfg.gpus.sim = sims;
	cfg.gpus.n_sim = 2;
	char note[256];
	struct vram_gpus *g = open_ok(&cfg, note, sizeof(note));
	assert_string_equal(note, "using 2 simulated GPUs (1x24GiB,1x80GiB)");

	assert_int_equal(vram_gpu_sim_charge(g, 1, 100, 10 * GiB), 0);
	assert_int_equal(vram_gpu_sim_charge(g, 1, 200, 30 * GiB), 0);
	assert_int_equal(vram_gpu_sim_charge(g, 1, 100, 5 * GiB), 0); /* sets, not adds */
	struct vram_gpu_info info;
	assert_int_equal(vram_gpu_query(g, 1, &info), 0);
	assert_string_equal(info.name, "Big");
	assert_int_equal(info.mem_used, 35 * GiB);
	assert_int_equal(info.mem_free, 45 * GiB);
	assert_int_equal(info.n_procs, 2);
	assert_int_equal(info.procs[0].pid, 100);
	assert_int_equal(info.procs[0].used_bytes, 5 * GiB);
	assert_int_equal(info.procs[1].pid, 200);
	assert_int_equal(info.procs[1].used_bytes, 30 * GiB);

	/* more than the GPU holds: refused, nothing changes */
	assert_int_equal(vram_gpu_sim_charge(g, 1, 300, 46 * GiB), -ENOSPC);
	assert_int_equal(vram_gpu_sim_charge(g, 1, 100, 51 * GiB), -ENOSPC);
	assert_int_equal(vram_gpu_query(g, 1, &info), 0);
	assert_int_equal(info.mem_used, 35 * GiB);
	assert_int_equal(vram_gpu_sim_charge(g, 1, 300, 45 * GiB), 0); /* exactly full */
	assert_int_equal(vram_gpu_query(g, 1, &info), 0);
	assert_int_equal(info.mem_free, 0);

	/* 0 removes; removing an unknown pid is fine */
	assert_int_equal(vram_gpu_sim_charge(g, 1, 100, 0), 0);
	assert_int_equal(vram_gpu_sim_charge(g, 1, 999, 0), 0);
	assert_int_equal(vram_gpu_query(g, 1, &info), 0);
	assert_int_equal(info.mem_used, 75 * GiB);
	assert_int_equal(info.n_procs, 2);

	/* the other GPU is untouched; bad index */
	assert_int_equal(vram_gpu_query(g, 0, &info), 0);
	assert_int_equal(info.mem_used, 0);
	assert_int_equal(vram_gpu_sim_charge(g, 2, 1, 1), -ENODEV);

	/* the process table is bounded */
	for (pid_t pid = 1; pid <= VRAM_GPU_MAX_PROCS; pid++)
		assert_int_equal(vram_gpu_sim_charge(g, 0, pid, MiB), 0);
	assert_int_equal(vram_gpu_sim_charge(g, 0, 5000, MiB), -E2BIG);
	assert_int_equal(vram_gpu_query(g, 0, &info), 0);
	assert_int_equal(info.n_procs, VRAM_GPU_MAX_PROCS);
	assert_int_equal(info.mem_used, VRAM_GPU_MAX_PROCS * MiB);
	vram_gpu_close(g);
}

static void check_fake_gpu0(const struct vram_gpu_info *info)
{
	assert_int_equal(info->index, 0);
	assert_string_equal(info->name, "Fake GPU 80GB");
	assert_string_equal(info->uuid, "GPU-fa4e0000-0000-0000-0000-000000000000");
	assert_string_equal(info->pci_bus_id, "00000000:17:00.0");
	assert_int_equal(info->mem_total, 80 * GiB);
	assert_int_equal(info->mem_used, 3 * GiB + 512 * MiB);
	assert_int_equal(info->mem_free, 76 * GiB + 512 * MiB);
	assert_true(info->procs_valid);
	assert_int_equal(info->n_procs, 2);
	assert_int_equal(info->procs[0].pid, 1234);
	assert_int_equal(info->procs[0].used_bytes, 1 * GiB);
	assert_int_equal(info->procs[1].pid, 5678);
	assert_int_equal(info->procs[1].used_bytes, 2 * GiB);
}

static void test_nvml_fake(void **state)
{
	setenv(VRAM_NVML_LIBRARY_ENV, FAKE_LIB, 1);
	struct vram_config cfg = config_for(VRAM_GPU_BACKEND_NVML);
	char note[512];
	struct vram_gpus *g = open_ok(&cfg, note, sizeof(note));
	assert_string_equal(note, "using 2 NVIDIA GPUs through NVML (GPU0: Fake GPU 80GB)");
	assert_string_equal(vram_gpu_backend_name_of(g), "nvml");
	assert_false(vram_gpu_is_sim(g));
	assert_int_equal(vram_gpu_count(g), 2);

	struct vram_gpu_info info;
	assert_int_equal(vram_gpu_query(g, 0, &info), 0);
	check_fake_gpu0(&info);
	assert_int_equal(info.util_percent, 37);
	assert_int_equal(info.mig_mode, 0);

	assert_int_equal(vram_gpu_query(g, 1, &info), 0);
	assert_string_equal(info.name, "Fake GPU 40GB");
	assert_string_equal(info.pci_bus_id, "00000000:65:00.0");
	assert_int_equal(info.mem_total, 40 * GiB);
	assert_int_equal(info.util_percent, -1); /* not supported: invalid, not 0 */
	assert_int_equal(info.mig_mode, 1);
	assert_int_equal(info.n_procs, 1);
	assert_int_equal(info.procs[0].pid, 4321);
	assert_int_equal(info.procs[0].used_bytes, UINT64_MAX);

	assert_int_equal(vram_gpu_query(g, 2, &info), -ENODEV);
	assert_int_equal(vram_gpu_sim_charge(g, 0, 1, GiB), -EOPNOTSUPP);
	vram_gpu_close(g);
}

/* An old driver: nvmlInit, nvmlDeviceGetCount, ..._ComputeRunningProcesses
 * with the 16-byte struct, the first PCI struct, no MIG, no utilization. */
static void test_nvml_fake_first_versions(void **state)
{
	setenv(VRAM_NVML_LIBRARY_ENV, FAKE_V1_LIB, 1);
	struct vram_config cfg = config_for(VRAM_GPU_BACKEND_NVML);
	char note[512];
	struct vram_gpus *g = open_ok(&cfg, note, sizeof(note));
	struct vram_gpu_info info;
	assert_int_equal(vram_gpu_query(g, 0, &info), 0);
	check_fake_gpu0(&info);
	assert_int_equal(info.util_percent, -1);
	assert_int_equal(info.mig_mode, -1);
	vram_gpu_close(g);

	/* without nvmlErrorString the code is given instead */
	setenv("FAKENVML_INIT_FAIL", "1", 1);
	g = NULL;
	assert_int_equal(vram_gpu_open(&cfg, &g, note, sizeof(note)), -EIO);
	assert_null(g);
	assert_string_equal(note, "NVML not available: nvmlInit: NVML error 9");
}

/* More processes than the first buffer holds: NVML's INSUFFICIENT_SIZE
 * answer is followed, and what is kept is bounded. */
static void test_nvml_many_processes(void **state)
{
	setenv(VRAM_NVML_LIBRARY_ENV, FAKE_LIB, 1);
	setenv("FAKENVML_PROCS", "100", 1);
	struct vram_config cfg = config_for(VRAM_GPU_BACKEND_NVML);
	char note[512];
	struct vram_gpus *g = open_ok(&cfg, note, sizeof(note));
	struct vram_gpu_info info;
	assert_int_equal(vram_gpu_query(g, 0, &info), 0);
	assert_true(info.procs_valid);
	assert_int_equal(info.n_procs, VRAM_GPU_MAX_PROCS);
	assert_int_equal(info.procs[63].pid, 1063);
	assert_int_equal(info.procs[63].used_bytes, 63 * MiB);
	vram_gpu_close(g);
}

static void test_nvml_unavailable(void **state)
{
	struct vram_config cfg = config_for(VRAM_GPU_BACKEND_NVML);
	char note[512];
	struct vram_gpus *g = NULL;

	setenv(VRAM_NVML_LIBRARY_ENV, "/nonexistent/libnvidia-ml.so.1", 1);
	assert_int_equal(vram_gpu_open(&cfg, &g, note, sizeof(note)), -ENOENT);
	assert_null(g);
	assert_string_equal(note, "NVML not available: /nonexistent/libnvidia-ml.so.1: "
				  "cannot open shared object file: No such file or directory");

	setenv(VRAM_NVML_LIBRARY_ENV, FAKE_LIB, 1);
	setenv("FAKENVML_INIT_FAIL", "1", 1);
	assert_int_equal(vram_gpu_open(&cfg, &g, note, sizeof(note)), -EIO);
	assert_string_equal(note, "NVML not available: nvmlInit: Driver Not Loaded");

	unsetenv("FAKENVML_INIT_FAIL");
	setenv("FAKENVML_GPUS", "0", 1);
	assert_int_equal(vram_gpu_open(&cfg, &g, note, sizeof(note)), -ENODEV);
	assert_string_equal(note, "NVML not available: the NVIDIA driver shows no GPU");
	assert_null(g);
}

static void test_auto(void **state)
{
	struct vram_config cfg = config_for(VRAM_GPU_BACKEND_AUTO);
	char note[512];

	/* the driver loads: nvml */
	setenv(VRAM_NVML_LIBRARY_ENV, FAKE_LIB, 1);
	struct vram_gpus *g = open_ok(&cfg, note, sizeof(note));
	assert_string_equal(vram_gpu_backend_name_of(g), "nvml");
	vram_gpu_close(g);

	/* no driver: sim, saying why */
	setenv(VRAM_NVML_LIBRARY_ENV, "/nonexistent/libnvidia-ml.so.1", 1);
	g = open_ok(&cfg, note, sizeof(note));
	assert_true(vram_gpu_is_sim(g));
	assert_string_equal(note, "no NVIDIA driver (/nonexistent/libnvidia-ml.so.1: cannot open shared "
				  "object file: No such file or directory): using 2 simulated GPUs (2x80GiB)");
	vram_gpu_close(g);

	/* the driver loads but shows no GPU */
	setenv(VRAM_NVML_LIBRARY_ENV, FAKE_LIB, 1);
	setenv("FAKENVML_GPUS", "0", 1);
	g = open_ok(&cfg, note, sizeof(note));
	assert_true(vram_gpu_is_sim(g));
	assert_string_equal(note, "the NVIDIA driver loads but shows no GPU: using 2 simulated GPUs (2x80GiB)");
	vram_gpu_close(g);

	/* a NULL note and a NULL config are fine */
	g = NULL;
	assert_int_equal(vram_gpu_open(NULL, &g, NULL, 0), 0);
	assert_true(vram_gpu_is_sim(g));
	vram_gpu_close(g);
}

static void test_backend_find(void **state)
{
	assert_ptr_equal(vram_gpu_backend_find("nvml"), &vram_gpu_backend_nvml);
	assert_ptr_equal(vram_gpu_backend_find("sim"), &vram_gpu_backend_sim);
	assert_null(vram_gpu_backend_find("cuda"));
	assert_null(vram_gpu_backend_nvml.sim_charge);
	assert_non_null(vram_gpu_backend_sim.sim_charge);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_sim_default, reset_env),
		cmocka_unit_test_setup(test_sim_charge, reset_env),
		cmocka_unit_test_setup(test_nvml_fake, reset_env),
		cmocka_unit_test_setup(test_nvml_fake_first_versions, reset_env),
		cmocka_unit_test_setup(test_nvml_many_processes, reset_env),
		cmocka_unit_test_setup(test_nvml_unavailable, reset_env),
		cmocka_unit_test_setup(test_auto, reset_env),
		cmocka_unit_test_setup(test_backend_find, reset_env),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
