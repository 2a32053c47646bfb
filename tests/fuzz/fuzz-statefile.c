/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the state file parser: any bytes go to
 * vram_statefile_parse, which must return a state or an error with its
 * sentence, and never crash, leak or read out of bounds. A state that
 * parses is written back out and read again, which must give it back.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/statefile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vram_statefile sf;
	char why[512] = "";
	/* A copy without a terminator, so that reads past the end are caught. */
	char *text = malloc(size ? size : 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	int r = vram_statefile_parse(text, size, "fuzz.json", &sf, why, sizeof(why));
	if (r < 0) {
		if (!why[0] || sf.workloads || sf.n_workloads || sf.mps)
			abort(); /* an error always comes with its sentence, and nothing half-read */
		free(text);
		return 0;
	}
	/* Touch what consumers read: every bound the header promises holds. */
	if (sf.n_workloads > VRAM_STATEFILE_MAX_WORKLOADS || sf.n_mps > VRAM_STATEFILE_MAX_MPS)
		abort();
	for (size_t i = 0; i < sf.n_workloads; i++) {
		const struct vram_statefile_workload *w = &sf.workloads[i];
		if (!w->name || strlen(w->name) > VRAM_STATEFILE_NAME_MAX ||
		    w->n_instances > VRAM_STATEFILE_MAX_INSTANCES)
			abort();
		if (w->is_adhoc && (w->adhoc.n_cmd < 1 || w->adhoc.n_cmd > VRAM_STATEFILE_MAX_ARGS ||
				    w->adhoc.cmd[w->adhoc.n_cmd] || !w->adhoc.env ||
				    w->adhoc.env[w->adhoc.n_env]))
			abort();
		for (size_t j = 0; j < w->n_instances; j++)
			if (w->instances[j].pid < 1 || w->instances[j].n_gpus > VRAM_STATEFILE_MAX_GPUS)
				abort();
	}
	/* Written and read back: the same counts. */
	char path[64];
	snprintf(path, sizeof(path), "/tmp/vram-fuzz-state-%d.json", (int)getpid());
	struct vram_statefile again;
	if (vram_statefile_write(path, &sf, why, sizeof(why)) == 0) {
		if (vram_statefile_read(path, &again, why, sizeof(why)) < 0 ||
		    again.n_workloads != sf.n_workloads || again.n_mps != sf.n_mps)
			abort();
		vram_statefile_done(&again);
		unlink(path);
	}
	vram_statefile_done(&sf);
	free(text);
	return 0;
}
