/* SPDX-License-Identifier: MIT */
/*
 * Helpers for the programs that run on the fake driver with libvram.so
 * preloaded: checks that abort with the failing line, a client for the
 * hook's control socket (VRAM_CONTROL), and access to the fake's testing
 * interface (fakecuda_*), found with dlsym so that the programs also run
 * against another driver build.
 */
#ifndef VRAM_FC_TEST_H
#define VRAM_FC_TEST_H

#include <dlfcn.h>
#include <errno.h>
#include <stdbool.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "hook/cuda_api.h"

#define MiB (1ull << 20)

#define CHECK(cond)                                                                   \
	do {                                                                          \
		if (!(cond)) {                                                        \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                      \
		}                                                                     \
	} while (0)

#define CK(call)                                                                      \
	do {                                                                          \
		CUresult r_ = (call);                                                 \
		if (r_ != CUDA_SUCCESS) {                                             \
			fprintf(stderr, "%s:%d: %s returned %d\n", __FILE__, __LINE__, #call, r_); \
			abort();                                                      \
		}                                                                     \
	} while (0)

#define CHECK_EQ_U64(a, b)                                                            \
	do {                                                                          \
		unsigned long long a_ = (unsigned long long)(a), b_ = (unsigned long long)(b); \
		if (a_ != b_) {                                                       \
			fprintf(stderr, "%s:%d: %s == %llu, expected %s == %llu\n", __FILE__, __LINE__, \
				#a, a_, #b, b_);                                      \
			abort();                                                      \
		}                                                                     \
	} while (0)

static inline void *fc_sym(const char *name)
{
	void *p = dlsym(RTLD_DEFAULT, name);
	if (!p) {
		/* A program that dlopened the driver privately. */
		void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
		p = lib ? dlsym(lib, name) : NULL;
	}
	if (!p) {
		fprintf(stderr, "missing %s: is the fake driver loaded?\n", name);
		abort();
	}
	return p;
}

static inline size_t fc_used(int dev)
{
	return ((size_t (*)(int))fc_sym("fakecuda_used"))(dev);
}

static inline void fc_set_available(int dev, size_t bytes)
{
	((void (*)(int, size_t))fc_sym("fakecuda_set_available"))(dev, bytes);
}

static inline int fc_live_phys(void)
{
	return ((int (*)(void))fc_sym("fakecuda_live_phys"))();
}

static inline int fc_unknown_frees(void)
{
	return ((int (*)(void))fc_sym("fakecuda_unknown_frees"))();
}

static inline int fc_is_mapped(CUdeviceptr p)
{
	return ((int (*)(CUdeviceptr))fc_sym("fakecuda_is_mapped"))(p);
}

static inline int fc_host_registered(void)
{
	return ((int (*)(void))fc_sym("fakecuda_host_registered"))();
}

static inline long fc_unpinned_copies(void)
{
	return ((long (*)(void))fc_sym("fakecuda_unpinned_copies"))();
}

static inline void fc_set_register_limit(int live)
{
	((void (*)(int))fc_sym("fakecuda_set_register_limit"))(live);
}

static inline void fc_set_copy_delay(unsigned usec)
{
	((void (*)(unsigned))fc_sym("fakecuda_set_copy_delay"))(usec);
}

static inline void fc_fail_copy(long nth)
{
	((void (*)(long))fc_sym("fakecuda_fail_copy"))(nth);
}

static inline void fc_fail_map(long nth)
{
	((void (*)(long))fc_sym("fakecuda_fail_map"))(nth);
}

static inline long fc_calls_during_copies(const char *call)
{
	return ((long (*)(const char *))fc_sym("fakecuda_calls_during_copies"))(call);
}

static inline void *fc_self_sym(const char *exact)
{
	return ((void *(*)(const char *))fc_sym("fakecuda_self_sym"))(exact);
}

/* Sends one line to the control socket and reads the answer line into out.
 * Keeps one connection open across calls. */
static inline void fc_ctl(const char *cmd, char *out, size_t cap)
{
	static int fd = -1;
	if (fd < 0) {
		const char *path = getenv("VRAM_CONTROL");
		CHECK(path);
		char buf[108];
		/* %p in the path is the pid, as the hook expands it */
		const char *pp = strstr(path, "%p");
		if (pp)
			snprintf(buf, sizeof(buf), "%.*s%d%s", (int)(pp - path), path, (int)getpid(), pp + 2);
		else
			snprintf(buf, sizeof(buf), "%s", path);
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", buf);
		fd = socket(AF_UNIX, SOCK_STREAM, 0);
		CHECK(fd >= 0);
		int tries = 0;
		while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			CHECK(++tries < 200);
			usleep(10000);
		}
	}
	char line[300];
	snprintf(line, sizeof(line), "%s\n", cmd);
	CHECK(write(fd, line, strlen(line)) == (ssize_t)strlen(line));
	size_t n = 0;
	while (n < cap - 1) {
		ssize_t r = read(fd, out + n, 1);
		CHECK(r == 1);
		if (out[n] == '\n')
			break;
		n++;
	}
	out[n] = '\0';
}

/* Sends cmd and aborts unless the answer starts with "ok ". */
static inline void fc_ctl_ok(const char *cmd, char *out, size_t cap)
{
	fc_ctl(cmd, out, cap);
	if (strncmp(out, "ok ", 3) != 0) {
		fprintf(stderr, "%s: %s\n", cmd, out);
		abort();
	}
}

/* Writes a pattern of seed to bytes at p through the host (on stream s, synchronized). */
static inline void fc_put_pattern(CUdeviceptr p, size_t bytes, uint32_t seed, CUstream s)
{
	uint32_t *h = malloc(bytes);
	CHECK(h);
	for (size_t i = 0; i < bytes / 4; i++)
		h[i] = seed * 2654435761u + (uint32_t)i;
	CHECK(cuMemcpyHtoDAsync_v2(p, h, bytes, s) == CUDA_SUCCESS);
	CHECK(cuStreamSynchronize(s) == CUDA_SUCCESS);
	free(h);
}

/* true when bytes at p hold fc_put_pattern's pattern of seed. */
static inline bool fc_has_pattern(CUdeviceptr p, size_t bytes, uint32_t seed, CUstream s)
{
	uint32_t *h = malloc(bytes);
	CHECK(h);
	CHECK(cuMemcpyDtoHAsync_v2(h, p, bytes, s) == CUDA_SUCCESS);
	CHECK(cuStreamSynchronize(s) == CUDA_SUCCESS);
	bool ok = true;
	for (size_t i = 0; i < bytes / 4 && ok; i++)
		ok = h[i] == seed * 2654435761u + (uint32_t)i;
	free(h);
	return ok;
}

/* A numeric field "key=value" or "key:value" of an answer line. */
static inline unsigned long long fc_field(const char *line, const char *key)
{
	char pat[64];
	snprintf(pat, sizeof(pat), "%s", key);
	const char *p = strstr(line, pat);
	CHECK(p);
	p += strlen(pat);
	return strtoull(p, NULL, 10);
}

/* Bytes the hook charges to device dev (from "status"). */
static inline unsigned long long fc_hook_used(int dev)
{
	char out[1024], key[32];
	fc_ctl("status", out, sizeof(out));
	snprintf(key, sizeof(key), "dev%d=used:", dev);
	return fc_field(out, key);
}

static inline unsigned long long fc_hook_nonmovable(int dev)
{
	char out[1024], key[32];
	fc_ctl("status", out, sizeof(out));
	snprintf(key, sizeof(key), "dev%d=", dev);
	const char *p = strstr(out, key);
	CHECK(p);
	return fc_field(p, "nonmovable:");
}

static inline CUcontext fc_setup(int dev)
{
	CUdevice d;
	CUcontext ctx;
	CK(cuInit(0));
	CK(cuDeviceGet(&d, dev));
	CK(cuDevicePrimaryCtxRetain(&ctx, d));
	CK(cuCtxSetCurrent(ctx));
	return ctx;
}

#endif
