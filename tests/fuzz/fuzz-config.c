/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the config loader: any bytes go to vram_config_parse,
 * which must return a config or an error message and never crash, leak or
 * read out of bounds. Half the inputs also carry command-line overrides.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vram_config *cfg = NULL;
	char *err = NULL;
	const struct vram_config_overrides ov = {
		.listen = "127.0.0.1:9000",
		.sim_gpus = "2x80GiB",
		.state_dir = "/tmp/vramd-fuzz",
	};
	/* A copy without a terminator, so that reads past the end are caught. */
	char *text = malloc(size ? size : 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	int r = vram_config_parse(text, size, "fuzz.yaml", size % 2 ? &ov : NULL, &cfg, &err);
	if (r == 0) {
		/* Touch what consumers read. */
		for (size_t i = 0; i < cfg->n_workloads; i++) {
			const struct vram_workload_config *w = &cfg->workloads[i];
			if (vram_config_find(cfg, w->name) == NULL)
				abort();
			for (size_t j = 0; j < w->n_cmd; j++)
				if (!w->cmd[j])
					abort();
		}
	} else if (r == -22 && (!err || !*err)) {
		abort(); /* a content error always comes with a message */
	}
	vram_config_free(cfg);
	free(err);
	free(text);
	return 0;
}
