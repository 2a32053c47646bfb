/* SPDX-License-Identifier: MIT */
/* The gres.conf and slurm.conf lines of a node: see slurmgres.h. */
#include "ctl/slurmgres.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/buf.h"
#include "common/units.h"

char *vram_slurm_gres_lines(json_t *status, uint64_t shard_bytes, const char *node,
			    const char *devdir, char *err, size_t err_size)
{
	json_t *gpus = json_object_get(status, "gpus");
	size_t n = json_array_size(gpus);
	if (n == 0) {
		snprintf(err, err_size, "vramd sees no GPU: there is nothing to give Slurm");
		return NULL;
	}
	if (shard_bytes == 0) {
		snprintf(err, err_size, "a shard of 0 bytes");
		return NULL;
	}
	struct vram_buf b;
	vram_buf_init(&b, 1 << 20);
	char size[32];
	uint64_t total_shards = 0;
	int ok = 1;
	ok &= vram_buf_printf(&b, "# gres.conf (vramd sees %zu GPU(s); one shard = %s of GPU memory)\n", n,
			      vram_units_format_bytes(shard_bytes, size, sizeof(size))) == 0;
	for (size_t i = 0; i < n; i++) {
		json_t *g = json_array_get(gpus, i);
		json_t *mem = json_object_get(g, "memory");
		json_int_t index = json_integer_value(json_object_get(g, "index"));
		json_int_t total = json_integer_value(json_object_get(mem, "total"));
		json_int_t reserve = json_integer_value(json_object_get(mem, "reserve"));
		uint64_t usable = total > reserve ? (uint64_t)(total - reserve) : 0;
		uint64_t shards = usable / shard_bytes;
		if (shards == 0) {
			snprintf(err, err_size, "GPU %lld has %s for jobs, less than one shard",
				 (long long)index, vram_units_format_bytes(usable, size, sizeof(size)));
			vram_buf_done(&b);
			return NULL;
		}
		total_shards += shards;
		ok &= vram_buf_printf(&b, "NodeName=%s Name=gpu File=%s/nvidia%lld\n", node, devdir,
				      (long long)index) == 0;
		ok &= vram_buf_printf(&b, "NodeName=%s Name=shard Count=%" PRIu64 " File=%s/nvidia%lld\n",
				      node, shards, devdir, (long long)index) == 0;
	}
	ok &= vram_buf_printf(&b, "# slurm.conf (add Gres= to the node's line)\nGresTypes=gpu,shard\n"
			      "NodeName=%s Gres=gpu:%zu,shard:%" PRIu64 "\n"
			      "# plugstack.conf\noptional spank_vramd.so shard_size=%" PRIu64 "\n",
			      node, n, total_shards, shard_bytes) == 0;
	if (!ok) {
		snprintf(err, err_size, "out of memory");
		vram_buf_done(&b);
		return NULL;
	}
	return vram_buf_take(&b);
}
