/* SPDX-License-Identifier: MIT */
/*
 * vramctl slurm-gres: the gres.conf and slurm.conf lines an admin pastes
 * for a node are computed from the GPUs vramd reports: one gpu and one
 * shard line per GPU, shards in whole units of the shard size after vramd's
 * reserve, their sum in the node's Gres=; no GPU or a GPU smaller than a
 * shard is refused with a sentence.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "ctl/slurmgres.h"

#define GiB (1ull << 30)

static json_t *status_of(const char *text)
{
	json_t *j = json_loads(text, 0, NULL);
	assert_non_null(j);
	return j;
}

static void test_two_gpus(void **state)
{
	/* 80 GiB, the second with 8 GiB kept back by vramd: 80 and 72 shards of 1 GiB */
	json_t *st = status_of("{\"gpus\": ["
			       "{\"index\": 0, \"memory\": {\"total\": 85899345920, \"reserve\": 0}},"
			       "{\"index\": 1, \"memory\": {\"total\": 85899345920, \"reserve\": 8589934592}}]}");
	char err[256] = "";
	char *text = vram_slurm_gres_lines(st, GiB, "gpu01", "/dev", err, sizeof(err));
	assert_non_null(text);
	assert_non_null(strstr(text, "NodeName=gpu01 Name=gpu File=/dev/nvidia0\n"));
	assert_non_null(strstr(text, "NodeName=gpu01 Name=shard Count=80 File=/dev/nvidia0\n"));
	assert_non_null(strstr(text, "NodeName=gpu01 Name=gpu File=/dev/nvidia1\n"));
	assert_non_null(strstr(text, "NodeName=gpu01 Name=shard Count=72 File=/dev/nvidia1\n"));
	assert_non_null(strstr(text, "GresTypes=gpu,shard\n"));
	assert_non_null(strstr(text, "NodeName=gpu01 Gres=gpu:2,shard:152\n"));
	assert_non_null(strstr(text, "shard_size=1073741824\n"));
	free(text);
	json_decref(st);
}

static void test_refused(void **state)
{
	char err[256] = "";
	json_t *none = status_of("{\"gpus\": []}");
	assert_null(vram_slurm_gres_lines(none, GiB, "n1", "/dev", err, sizeof(err)));
	assert_non_null(strstr(err, "no GPU"));
	json_decref(none);
	json_t *small = status_of("{\"gpus\": [{\"index\": 0, \"memory\": {\"total\": 536870912, \"reserve\": 0}}]}");
	assert_null(vram_slurm_gres_lines(small, GiB, "n1", "/dev", err, sizeof(err)));
	assert_non_null(strstr(err, "less than one shard"));
	json_decref(small);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_two_gpus),
		cmocka_unit_test(test_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
