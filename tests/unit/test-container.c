/* SPDX-License-Identifier: MIT */
/*
 * The container runtime's command line (container.c): what a replica's
 * container is run with, for podman and docker.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/container.h"

/* The words of argv joined by single spaces (static buffer). */
static const char *joined(char **argv)
{
	static char buf[4096];
	size_t len = 0;
	buf[0] = '\0';
	for (size_t i = 0; argv[i]; i++)
		len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%s", i ? " " : "", argv[i]);
	return buf;
}

static void free_argv(char **argv)
{
	for (size_t i = 0; argv && argv[i]; i++)
		free(argv[i]);
	free(argv);
}

static char *args[] = {"--port", "${PORT}", NULL};
static char *volumes[] = {"/data/hf:/root/.cache/hf:ro", NULL};
static char *cenv[] = {"HF_HOME=/root/.cache/hf", "LD_PRELOAD=", NULL};
static const struct vram_container_config cfg = {
	.image = "localhost/tts:1", .args = args, .n_args = 2,
	.volumes = volumes, .n_volumes = 1, .env = cenv, .n_env = 2,
};

static void test_podman(void **state)
{
	(void)state;
	char *env[] = {"PORT=8123", "LD_PRELOAD=/lib/vramd/libvram.so", NULL};
	char *devices[] = {"0", "2", NULL};
	char *dirs[] = {"/run/vramd/mps/pipe", NULL};
	struct vram_container_run r = {
		.cfg = &cfg, .runtime = VRAM_CONTAINER_PODMAN, .name = "vramd-tts-0", .env = env,
		.hook_library = "/lib/vramd/libvram.so", .hook_socket = "/run/vramd/hook.sock",
		.hook_dir = "/run/vramd/ct", .park_dir = "/run/vramd/park", .dirs = dirs, .ipc_host = true,
		.devices = devices,
	};
	char **argv = NULL;
	assert_int_equal(vram_container_argv(&r, &argv), 0);
	/* the container's env first, vramd's after: the runtime keeps the last, so vramd's LD_PRELOAD wins */
	assert_string_equal(joined(argv),
		"podman run --rm --replace --name=vramd-tts-0 --network=host --ipc=host "
		"--volume=/lib/vramd/libvram.so:/lib/vramd/libvram.so:ro --volume=/run/vramd/ct:/run/vramd/ct:ro "
		"--volume=/run/vramd/park:/run/vramd/park --volume=/run/vramd/mps/pipe:/run/vramd/mps/pipe "
		"--volume=/data/hf:/root/.cache/hf:ro --env=HF_HOME=/root/.cache/hf --env=LD_PRELOAD= "
		"--env=PORT=8123 --env=LD_PRELOAD=/lib/vramd/libvram.so "
		"--device=nvidia.com/gpu=0 --device=nvidia.com/gpu=2 localhost/tts:1 --port ${PORT}");
	free_argv(argv);
}

static void test_docker_and_no_devices(void **state)
{
	(void)state;
	char *devices[] = {"GPU-aaaa", "GPU-bbbb", NULL};
	struct vram_container_run r = {
		.cfg = &cfg, .runtime = VRAM_CONTAINER_DOCKER, .name = "vramd-tts-1",
		.hook_socket = "/run/vramd/hook.sock", .devices = devices,
	};
	char **argv = NULL;
	assert_int_equal(vram_container_argv(&r, &argv), 0);
	/* no --replace in docker; --gpus takes one CSV field, quoted because it holds a comma */
	assert_string_equal(joined(argv),
		"docker run --rm --name=vramd-tts-1 --network=host "
		"--volume=/run/vramd/hook.sock:/run/vramd/hook.sock --volume=/data/hf:/root/.cache/hf:ro "
		"--env=HF_HOME=/root/.cache/hf --env=LD_PRELOAD= --gpus \"device=GPU-aaaa,GPU-bbbb\" "
		"localhost/tts:1 --port ${PORT}");
	free_argv(argv);
	/* simulated GPUs: no device at all, no CDI name asked for */
	char *none[] = {NULL};
	r.runtime = VRAM_CONTAINER_PODMAN;
	r.devices = none;
	assert_int_equal(vram_container_argv(&r, &argv), 0);
	assert_null(strstr(joined(argv), "--device"));
	assert_null(strstr(joined(argv), "--gpus"));
	free_argv(argv);
}

static void test_name_and_bounds(void **state)
{
	(void)state;
	char name[VRAM_CONTAINER_NAME_MAX];
	char wl[64];
	memset(wl, 'w', 63);
	wl[63] = '\0';
	vram_container_name(wl, 63, name, sizeof(name));
	assert_int_equal(strlen(name), strlen("vramd-") + 63 + strlen("-63"));
	/* a command line past the bound is refused, not cut short */
	static char *many[VRAM_CONTAINER_ARGV_MAX];
	for (size_t i = 0; i < VRAM_CONTAINER_ARGV_MAX - 1; i++)
		many[i] = "x";
	struct vram_container_config big = cfg;
	big.args = many;
	big.n_args = VRAM_CONTAINER_ARGV_MAX - 1;
	struct vram_container_run r = {.cfg = &big, .runtime = VRAM_CONTAINER_PODMAN, .name = "n"};
	char **argv = NULL;
	assert_int_equal(vram_container_argv(&r, &argv), -E2BIG);
	assert_null(argv);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_podman),
		cmocka_unit_test(test_docker_and_no_devices),
		cmocka_unit_test(test_name_and_bounds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
