/* SPDX-License-Identifier: MIT */
/*
 * Planning benchmark: a config of 256 workloads (single-GPU services of
 * 1-3GiB, some tensor-parallel pairs, anti-affinity, four priorities, all
 * lazy so that a full machine evicts) planned on 8 x 64GiB GPUs with
 * vram_plan_config, as `vramctl plan` does. Prints the time of one whole
 * plan (256 placements) and of one placement; the target is <= 1 ms per plan.
 *
 *   bench-plan [ITERATIONS]    (default 200)
 * Exit status 0 when the median plan takes <= 1 ms, 1 otherwise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config/config.h"
#include "core/plan.h"

#define N_WORKLOADS 256
#define N_GPUS 8
#define GPU_GiB 64 /* 640GiB asked for 504GiB free: the last ones evict */
#define TARGET_MS 1.0

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	int iterations = argc > 1 ? atoi(argv[1]) : 200;
	if (iterations < 1)
		iterations = 1;

	static struct vram_workload_config wl[N_WORKLOADS];
	static char names[N_WORKLOADS][16];
	static char *avoid_llm[] = { "w000", NULL };
	for (int i = 0; i < N_WORKLOADS; i++) {
		struct vram_workload_config *w = &wl[i];
		snprintf(names[i], sizeof(names[i]), "w%03d", i);
		w->name = names[i];
		w->replicas = 1;
		w->gpus.kind = VRAM_GPUS_COUNT;
		w->gpus.count = 1;
		w->memory.bytes = (uint64_t)(1 + i % 3) * VRAM_GiB;
		w->priority = i % 4;
		w->placement = (enum vram_placement)(i % 3);
		w->start = VRAM_START_LAZY;
		if (i % 32 == 0) {        /* a tensor-parallel pair, placed first */
			w->gpus.count = 2;
			w->memory.bytes = 8 * VRAM_GiB;
			w->priority = 4;
		}
		if (i % 16 == 5) {        /* keeps off the first pair's GPUs */
			w->avoid = avoid_llm;
			w->n_avoid = 1;
		}
		if (i % 64 == 7)
			w->fallback = VRAM_FALLBACK_SHARE;
	}
	struct vram_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.workloads = wl;
	cfg.n_workloads = N_WORKLOADS;
	cfg.gpus.reserve = VRAM_GiB;

	struct vram_plan_gpu gpus[N_GPUS];
	memset(gpus, 0, sizeof(gpus));
	for (unsigned i = 0; i < N_GPUS; i++) {
		gpus[i].index = i;
		gpus[i].total = GPU_GiB * VRAM_GiB;
		snprintf(gpus[i].name, sizeof(gpus[i].name), "Simulated GPU");
	}

	/* one plan to report what it decided, and to warm up */
	struct vram_plan_table *t = NULL;
	if (vram_plan_config(&cfg, gpus, N_GPUS, &t) < 0) {
		fprintf(stderr, "bench-plan: vram_plan_config failed\n");
		return 1;
	}
	size_t count[VRAM_PLAN_REFUSED + 1] = { 0 };
	for (size_t i = 0; i < t->n_rows; i++)
		count[t->rows[i].result.outcome]++;
	vram_plan_table_free(t);

	double *ms = calloc((size_t)iterations, sizeof(*ms));
	if (!ms)
		return 1;
	for (int it = 0; it < iterations; it++) {
		double t0 = now_ms();
		if (vram_plan_config(&cfg, gpus, N_GPUS, &t) < 0)
			return 1;
		ms[it] = now_ms() - t0;
		vram_plan_table_free(t);
	}
	qsort(ms, (size_t)iterations, sizeof(*ms), cmp_double);
	double median = ms[iterations / 2];
	double p99 = ms[(size_t)((iterations - 1) * 0.99)];
	printf("bench-plan: %d workloads on %d x %dGiB GPUs, %d plans: outcomes fits=%zu evict=%zu "
	       "shared=%zu cpu=%zu refused=%zu\n", N_WORKLOADS, N_GPUS, GPU_GiB, iterations,
	       count[VRAM_PLAN_FITS], count[VRAM_PLAN_EVICT], count[VRAM_PLAN_SHARED],
	       count[VRAM_PLAN_CPU], count[VRAM_PLAN_REFUSED]);
	printf("bench-plan: per plan: min %.3f ms, median %.3f ms, p99 %.3f ms; per placement: "
	       "median %.2f us\n", ms[0], median, p99, median * 1000.0 / N_WORKLOADS);
	bool ok = median <= TARGET_MS;
	printf("RESULT plan-256-workloads-8-gpus median_ms=%.3f target_ms=%.1f %s\n", median, TARGET_MS,
	       ok ? "PASS" : "FAIL");
	free(ms);
	return ok ? 0 : 1;
}
