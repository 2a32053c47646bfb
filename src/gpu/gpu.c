/* SPDX-License-Identifier: MIT */
/*
 * The GPU layer's front: the list of backends, the choice between them
 * (`gpus.backend: auto | nvml | sim`) and thin wrappers that route calls to
 * the backend that was opened. The choice is explained in one line that the
 * caller logs, because "why are my GPUs simulated?" is the first question on
 * a machine whose driver does not load.
 */
#include "gpu/gpu.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/units.h"

/* Every backend, in the order `auto` tries them. */
static const struct vram_gpu_backend *const backends[] = {
	&vram_gpu_backend_nvml,
	&vram_gpu_backend_sim,
};

struct vram_gpus {
	const struct vram_gpu_backend *backend; /* one of backends[] */
	void *ctx;                              /* owned by the backend */
	/* UUIDs read once: they do not change while the driver is loaded, and a
	 * full query (several NVML calls) per lookup would make status slow. */
	char uuid[VRAM_GPU_MAX][VRAM_GPU_UUID_MAX]; /* "" until first asked */
};

const struct vram_gpu_backend *vram_gpu_backend_find(const char *name)
{
	for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++)
		if (strcmp(backends[i]->name, name) == 0)
			return backends[i];
	return NULL;
}

static int open_one(const struct vram_gpu_backend *b, const struct vram_config *cfg,
		    struct vram_gpus **ret, char *why, size_t why_size)
{
	void *ctx = NULL;
	why[0] = '\0';
	int r = b->open(cfg, &ctx, why, why_size);
	if (r < 0)
		return r;
	if (b->count(ctx) == 0) {
		snprintf(why, why_size, "%s", b == &vram_gpu_backend_sim ? "no simulated GPU" :
			 "the NVIDIA driver shows no GPU");
		b->close(ctx);
		return -ENODEV;
	}
	struct vram_gpus *g = calloc(1, sizeof(*g));
	if (!g) {
		b->close(ctx);
		snprintf(why, why_size, "out of memory");
		return -ENOMEM;
	}
	g->backend = b;
	g->ctx = ctx;
	*ret = g;
	return 0;
}

/* "2x80GiB" or "1x24GiB,1x80GiB": the GPUs as --gpus would write them. */
static void describe_sizes(struct vram_gpus *g, char *buf, size_t size)
{
	size_t len = 0;
	unsigned n = vram_gpu_count(g);
	buf[0] = '\0';
	for (unsigned i = 0; i < n;) {
		struct vram_gpu_info a, b;
		if (vram_gpu_query(g, i, &a) < 0)
			break;
		unsigned same = 1;
		while (i + same < n && vram_gpu_query(g, i + same, &b) == 0 && b.mem_total == a.mem_total)
			same++;
		char s[32];
		int w = snprintf(buf + len, len < size ? size - len : 0, "%s%ux%s", len ? "," : "", same,
				 vram_units_format_bytes(a.mem_total, s, sizeof(s)));
		if (w < 0 || (size_t)w >= size - len)
			break;
		len += (size_t)w;
		i += same;
	}
}

static void note_sim(struct vram_gpus *g, const char *prefix, char *note, size_t note_size)
{
	char sizes[256];
	describe_sizes(g, sizes, sizeof(sizes));
	unsigned n = vram_gpu_count(g);
	snprintf(note, note_size, "%susing %u simulated GPU%s (%s)", prefix, n, n == 1 ? "" : "s", sizes);
}

static void note_nvml(struct vram_gpus *g, char *note, size_t note_size)
{
	struct vram_gpu_info info;
	unsigned n = vram_gpu_count(g);
	if (vram_gpu_query(g, 0, &info) < 0)
		snprintf(info.name, sizeof(info.name), "unknown model");
	snprintf(note, note_size, "using %u NVIDIA GPU%s through NVML (GPU0: %s)", n, n == 1 ? "" : "s",
		 info.name);
}

int vram_gpu_open(const struct vram_config *cfg, struct vram_gpus **ret, char *note, size_t note_size)
{
	char why[512];
	char scratch[8];
	if (!note) {
		note = scratch;
		note_size = sizeof(scratch);
	}
	note[0] = '\0';
	enum vram_gpu_backend_kind kind = cfg ? cfg->gpus.backend : VRAM_GPU_BACKEND_AUTO;
	/* --gpus 2x80GiB means simulated GPUs whatever the file says; the config
	 * loader turns it into the sim list with backend sim. */
	struct vram_gpus *g = NULL;
	int r;
	switch (kind) {
	case VRAM_GPU_BACKEND_NVML:
		r = open_one(&vram_gpu_backend_nvml, cfg, &g, why, sizeof(why));
		if (r < 0) {
			snprintf(note, note_size, "NVML not available: %s", why);
			return r;
		}
		note_nvml(g, note, note_size);
		break;
	case VRAM_GPU_BACKEND_SIM:
		r = open_one(&vram_gpu_backend_sim, cfg, &g, why, sizeof(why));
		if (r < 0) {
			snprintf(note, note_size, "simulated GPUs not available: %s", why);
			return r;
		}
		note_sim(g, "", note, note_size);
		break;
	case VRAM_GPU_BACKEND_AUTO:
	default:
		r = open_one(&vram_gpu_backend_nvml, cfg, &g, why, sizeof(why));
		if (r == 0) {
			note_nvml(g, note, note_size);
			break;
		}
		char prefix[600];
		if (r == -ENODEV)
			snprintf(prefix, sizeof(prefix), "the NVIDIA driver loads but shows no GPU: ");
		else
			snprintf(prefix, sizeof(prefix), "no NVIDIA driver (%s): ", why);
		r = open_one(&vram_gpu_backend_sim, cfg, &g, why, sizeof(why));
		if (r < 0) {
			snprintf(note, note_size, "%ssimulated GPUs not available either: %s", prefix, why);
			return r;
		}
		note_sim(g, prefix, note, note_size);
		break;
	}
	*ret = g;
	return 0;
}

void vram_gpu_close(struct vram_gpus *g)
{
	if (!g)
		return;
	if (g->backend && g->ctx)
		g->backend->close(g->ctx);
	free(g);
}

const char *vram_gpu_backend_name_of(const struct vram_gpus *g)
{
	return g->backend->name;
}

bool vram_gpu_is_sim(const struct vram_gpus *g)
{
	return g->backend == &vram_gpu_backend_sim;
}

unsigned vram_gpu_count(const struct vram_gpus *g)
{
	return g->backend->count(g->ctx);
}

int vram_gpu_query(struct vram_gpus *g, unsigned index, struct vram_gpu_info *ret_info)
{
	return g->backend->query(g->ctx, index, ret_info);
}

const char *vram_gpu_uuid(struct vram_gpus *g, unsigned index)
{
	if (index >= VRAM_GPU_MAX || index >= vram_gpu_count(g))
		return NULL;
	if (!g->uuid[index][0]) {
		struct vram_gpu_info info;
		if (vram_gpu_query(g, index, &info) < 0 || !info.uuid[0])
			return NULL;
		snprintf(g->uuid[index], sizeof(g->uuid[index]), "%s", info.uuid);
	}
	return g->uuid[index];
}

int vram_gpu_sim_charge(struct vram_gpus *g, unsigned index, pid_t pid, uint64_t bytes)
{
	if (!g->backend->sim_charge)
		return -EOPNOTSUPP;
	return g->backend->sim_charge(g->ctx, index, pid, bytes);
}
