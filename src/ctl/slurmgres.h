/* SPDX-License-Identifier: MIT */
/*
 * `vramctl slurm-gres`: the gres.conf and slurm.conf lines of a node, from
 * the GPUs its vramd sees, so that Slurm's gres/gpu and gres/shard match
 * what vramd enforces (one shard = a fixed amount of GPU memory).
 */
#ifndef VRAM_CTL_SLURMGRES_H
#define VRAM_CTL_SLURMGRES_H

#include <jansson.h>
#include <stdint.h>

#define VRAM_SLURM_GRES_DEFAULT_SHARD (1ull << 30) /* bytes: 1 GiB a shard */

/*
 * The lines for status (GET /api/status, borrowed): per GPU, File=
 * <devdir>/nvidia<index> and Count= of its memory (total less vramd's
 * reserve) in whole shards of shard_bytes. node is the NodeName (any
 * Slurm host list). Returns the text (caller frees), or NULL with a
 * sentence in err (no GPUs, a GPU smaller than one shard, out of memory).
 */
char *vram_slurm_gres_lines(json_t *status, uint64_t shard_bytes, const char *node,
			    const char *devdir, char *err, size_t err_size);

#endif
