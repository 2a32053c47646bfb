/* SPDX-License-Identifier: MIT */
/*
 * What `vramctl top` shows, apart from the drawing (ctl/bin/top.c): the
 * GPUs and workloads of the last /api/status, the state changes the event
 * stream brought since, request rates from /metrics, the workloads sorted
 * by the GPU memory they hold, and which one is selected (followed by name
 * when the order changes).
 */
#ifndef VRAM_TOPMODEL_H
#define VRAM_TOPMODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define VRAM_TOP_GPUS_MAX 64
#define VRAM_TOP_WORKLOADS_MAX 1024

struct vram_top_gpu {
	unsigned index;
	char name[64];
	uint64_t total, used, reserve; /* bytes */
	bool used_known;               /* the backend reports used memory */
};

struct vram_top_wl {
	char name[64];
	char state[24];
	char gpus[48];        /* "0,1", "" for none */
	uint64_t gpu_bytes;   /* bytes held on GPUs now */
	uint64_t host_bytes;  /* bytes held in host RAM */
	char declared[24];    /* memory as configured ("20GiB"), "" when none */
	double idle_s;
	char engine[16];
	uint64_t requests;    /* gateway requests so far, every status */
	double req_rate;      /* requests per second over the last two /metrics reads; < 0: not yet */
	bool seen;            /* in the last status (a reload may remove one) */
};

struct vram_top {
	struct vram_top_gpu gpus[VRAM_TOP_GPUS_MAX];
	size_t n_gpus;
	struct vram_top_wl *wls; /* owned, sorted (vram_top_sort) */
	size_t n_wls;
	uint64_t host_budget, host_parked; /* bytes; 0 when not known */
	char selected[64];   /* the selected workload's name, "" for none */
	long long metrics_ms; /* ms (monotonic) of the last /metrics read; 0: none yet */
	char version[32];
};

void vram_top_init(struct vram_top *t);
void vram_top_done(struct vram_top *t);
/* Takes GPUs and workloads from a /api/status reply (borrowed). Returns 0 or -ENOMEM / -EINVAL. */
int vram_top_set_status(struct vram_top *t, json_t *status);
/* Counts each workload's requests in a /metrics text; rates against the last read at now_ms. */
void vram_top_set_metrics(struct vram_top *t, const char *text, size_t len, long long now_ms);
/* A state event: workload is now in state to. Returns whether it named a known workload. */
bool vram_top_event(struct vram_top *t, const char *workload, const char *to);
/* Sorts by GPU memory held (most first), then host memory, then name. */
void vram_top_sort(struct vram_top *t);
/* The selected row (0 when none selected yet); moves the selection by delta rows. */
size_t vram_top_selected_row(struct vram_top *t);
void vram_top_move(struct vram_top *t, int delta);

#endif
