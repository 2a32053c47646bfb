/* SPDX-License-Identifier: MIT */
/*
 * libcuda.so.1 through dlopen, the checkpoint API wrappers with their error
 * messages, the GPU-pair permutation for cross-GPU restores, and process
 * discovery from /proc. See cudadrv.h. Only libc and libdl are used here so
 * that test tools on GPU machines can compile this file alone.
 */
#include "gpu/cudadrv.h"

#include <ctype.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(sizeof(struct vram_cu_uuid) == 16, "CUuuid layout");
_Static_assert(sizeof(struct vram_cu_checkpoint_lock_args) == 64, "CUcheckpointLockArgs layout");
_Static_assert(sizeof(struct vram_cu_checkpoint_args) == 64, "CUcheckpointCheckpointArgs layout");
_Static_assert(sizeof(struct vram_cu_gpu_pair) == 32, "CUcheckpointGpuPair layout");
_Static_assert(sizeof(struct vram_cu_checkpoint_restore_args) == 64, "CUcheckpointRestoreArgs layout");

typedef int cu_result_t;
typedef int cu_device_t;

struct vram_cudadrv {
	void *lib;
	int driver_version;
	cu_result_t (*init)(unsigned int flags);
	cu_result_t (*driver_get_version)(int *version);
	cu_result_t (*device_get_count)(int *count);
	cu_result_t (*device_get)(cu_device_t *dev, int ordinal);
	cu_result_t (*device_get_uuid)(struct vram_cu_uuid *uuid, cu_device_t dev);
	cu_result_t (*device_get_name)(char *name, int len, cu_device_t dev);
	cu_result_t (*get_error_name)(cu_result_t r, const char **name);
	/* checkpoint API; all NULL on drivers older than 550 */
	cu_result_t (*ckpt_get_state)(int pid, int *state);
	cu_result_t (*ckpt_lock)(int pid, struct vram_cu_checkpoint_lock_args *args);
	cu_result_t (*ckpt_checkpoint)(int pid, struct vram_cu_checkpoint_args *args);
	cu_result_t (*ckpt_restore)(int pid, struct vram_cu_checkpoint_restore_args *args);
	cu_result_t (*ckpt_unlock)(int pid, struct vram_cu_checkpoint_args *args);
	cu_result_t (*ckpt_restore_tid)(int pid, int *tid);
};

static void set_msg(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void set_msg(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;

	if (!buf || size == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, size, fmt, ap);
	va_end(ap);
}

static void *sym(void *lib, const char *a, const char *b)
{
	void *p = dlsym(lib, a);

	if (!p && b)
		p = dlsym(lib, b);
	return p;
}

int vram_cudadrv_open(const char *path, struct vram_cudadrv **ret, char *why, size_t why_size)
{
	struct vram_cudadrv *d;
	const char *missing = NULL;
	cu_result_t r;
	int err;

	if (!path)
		path = getenv("VRAM_LIBCUDA");
	if (!path || !*path)
		path = "libcuda.so.1";

	d = calloc(1, sizeof(*d));
	if (!d) {
		set_msg(why, why_size, "out of memory");
		return -ENOMEM;
	}
	d->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!d->lib) {
		const char *e = dlerror();

		set_msg(why, why_size, "%s", e ? e : path);
		err = -ENOENT;
		goto out_free;
	}

#define REQUIRE(field, a, b)                                  \
	do {                                                  \
		*(void **)&d->field = sym(d->lib, a, b);      \
		if (!d->field && !missing)                    \
			missing = a;                          \
	} while (0)
	REQUIRE(init, "cuInit", NULL);
	REQUIRE(driver_get_version, "cuDriverGetVersion", NULL);
	REQUIRE(device_get_count, "cuDeviceGetCount", NULL);
	REQUIRE(device_get, "cuDeviceGet", NULL);
	REQUIRE(device_get_uuid, "cuDeviceGetUuid_v2", "cuDeviceGetUuid");
	REQUIRE(device_get_name, "cuDeviceGetName", NULL);
#undef REQUIRE
	if (missing) {
		set_msg(why, why_size, "%s: symbol %s not found (driver too old?)", path, missing);
		err = -ENOSYS;
		goto out_close;
	}
	*(void **)&d->get_error_name = dlsym(d->lib, "cuGetErrorName");
	*(void **)&d->ckpt_get_state = dlsym(d->lib, "cuCheckpointProcessGetState");
	*(void **)&d->ckpt_lock = dlsym(d->lib, "cuCheckpointProcessLock");
	*(void **)&d->ckpt_checkpoint = dlsym(d->lib, "cuCheckpointProcessCheckpoint");
	*(void **)&d->ckpt_restore = dlsym(d->lib, "cuCheckpointProcessRestore");
	*(void **)&d->ckpt_unlock = dlsym(d->lib, "cuCheckpointProcessUnlock");
	*(void **)&d->ckpt_restore_tid = dlsym(d->lib, "cuCheckpointProcessGetRestoreThreadId");

	/* Restore needs cuInit (or persistence mode) in the calling process. */
	r = d->init(0);
	if (r != VRAM_CU_SUCCESS) {
		char name[48];

		set_msg(why, why_size, "%s: cuInit failed: %s", path,
			vram_cudadrv_result_name(r, name, sizeof(name)));
		err = -ENODEV;
		goto out_close;
	}
	if (d->driver_get_version(&d->driver_version) != VRAM_CU_SUCCESS)
		d->driver_version = 0;
	*ret = d;
	return 0;

out_close:
	dlclose(d->lib);
out_free:
	free(d);
	return err;
}

void vram_cudadrv_close(struct vram_cudadrv *d)
{
	if (!d)
		return;
	if (d->lib)
		dlclose(d->lib);
	free(d);
}

int vram_cudadrv_driver_version(const struct vram_cudadrv *d)
{
	return d->driver_version;
}

bool vram_cudadrv_has_checkpoint(const struct vram_cudadrv *d)
{
	return d->ckpt_get_state && d->ckpt_lock && d->ckpt_checkpoint && d->ckpt_restore &&
	       d->ckpt_unlock;
}

const char *vram_cudadrv_result_name(int r, char *buf, size_t size)
{
	static const struct {
		int code;
		const char *name;
	} names[] = {
		{ VRAM_CU_SUCCESS, "CUDA_SUCCESS" },
		{ VRAM_CU_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE" },
		{ VRAM_CU_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY" },
		{ VRAM_CU_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED" },
		{ VRAM_CU_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE" },
		{ VRAM_CU_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE" },
		{ VRAM_CU_ERROR_OPERATING_SYSTEM, "CUDA_ERROR_OPERATING_SYSTEM" },
		{ VRAM_CU_ERROR_ILLEGAL_STATE, "CUDA_ERROR_ILLEGAL_STATE" },
		{ VRAM_CU_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND" },
		{ VRAM_CU_ERROR_NOT_READY, "CUDA_ERROR_NOT_READY" },
		{ VRAM_CU_ERROR_NOT_PERMITTED, "CUDA_ERROR_NOT_PERMITTED" },
		{ VRAM_CU_ERROR_NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED" },
		{ VRAM_CU_ERROR_TIMEOUT, "CUDA_ERROR_TIMEOUT" },
		{ VRAM_CU_ERROR_UNKNOWN, "CUDA_ERROR_UNKNOWN" },
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (names[i].code == r)
			return names[i].name;
	snprintf(buf, size, "CUDA error %d", r);
	return buf;
}

const char *vram_cuda_proc_state_name(enum vram_cuda_proc_state s)
{
	switch (s) {
	case VRAM_CUDA_PROC_RUNNING:
		return "running";
	case VRAM_CUDA_PROC_LOCKED:
		return "locked";
	case VRAM_CUDA_PROC_CHECKPOINTED:
		return "checkpointed";
	case VRAM_CUDA_PROC_FAILED:
		return "failed";
	}
	return "unknown";
}

static const char *op_verb(enum vram_cuda_op op)
{
	switch (op) {
	case VRAM_CUDA_OP_GET_STATE:
		return "read the checkpoint state of";
	case VRAM_CUDA_OP_LOCK:
		return "lock";
	case VRAM_CUDA_OP_CHECKPOINT:
		return "checkpoint";
	case VRAM_CUDA_OP_RESTORE:
		return "restore";
	case VRAM_CUDA_OP_UNLOCK:
		return "unlock";
	case VRAM_CUDA_OP_RESTORE_TID:
		return "read the restore thread of";
	case VRAM_CUDA_OP_DEVICES:
		return "list the devices for";
	}
	return "act on";
}

int vram_cudadrv_map_error(int r, enum vram_cuda_op op, pid_t pid, unsigned timeout_ms,
			   struct vram_cuda_error *err)
{
	char name[48];
	const char *rn = vram_cudadrv_result_name(r, name, sizeof(name));
	char *msg = err ? err->message : NULL;
	size_t msz = err ? sizeof(err->message) : 0;
	int ret;

	if (err)
		err->cu_result = r;
	if (r == VRAM_CU_SUCCESS) {
		if (msg)
			msg[0] = '\0';
		return 0;
	}

	switch (r) {
	case VRAM_CU_ERROR_NOT_SUPPORTED:
		set_msg(msg, msz,
			"cannot %s process %d (%s): the process is an MPS client or uses UVM/IPC memory: "
			"use the hook or the restart engine",
			op_verb(op), (int)pid, rn);
		ret = -EOPNOTSUPP;
		break;
	case VRAM_CU_ERROR_NOT_READY:
	case VRAM_CU_ERROR_TIMEOUT:
		if (op == VRAM_CUDA_OP_LOCK) {
			set_msg(msg, msz,
				"cannot lock process %d: its GPU work did not drain within %u ms (%s); "
				"the process was left running",
				(int)pid, timeout_ms, rn);
			ret = -ETIMEDOUT;
		} else {
			set_msg(msg, msz, "cannot %s process %d: %s", op_verb(op), (int)pid, rn);
			ret = -EAGAIN;
		}
		break;
	case VRAM_CU_ERROR_ILLEGAL_STATE:
		set_msg(msg, msz,
			"cannot %s process %d: it is not in the checkpoint state this step needs (%s)",
			op_verb(op), (int)pid, rn);
		ret = -EBUSY;
		break;
	case VRAM_CU_ERROR_INVALID_VALUE:
		if (op == VRAM_CUDA_OP_RESTORE)
			set_msg(msg, msz,
				"cannot restore process %d: the driver refused the arguments (%s): the GPU "
				"pairs must be a full permutation of the machine's GPUs, between GPUs of one "
				"model; the process stays checkpointed and can be restored in place",
				(int)pid, rn);
		else
			set_msg(msg, msz,
				"cannot %s process %d: not a CUDA process, or it has exited (%s)",
				op_verb(op), (int)pid, rn);
		ret = op == VRAM_CUDA_OP_RESTORE ? -EINVAL : -ESRCH;
		break;
	case VRAM_CU_ERROR_NOT_INITIALIZED:
		set_msg(msg, msz, "cannot %s process %d: the CUDA driver is not initialized (%s)",
			op_verb(op), (int)pid, rn);
		ret = -ENODEV;
		break;
	case VRAM_CU_ERROR_OUT_OF_MEMORY:
		set_msg(msg, msz, "cannot %s process %d: out of memory (%s)", op_verb(op), (int)pid, rn);
		ret = -ENOMEM;
		break;
	case VRAM_CU_ERROR_NOT_PERMITTED:
		set_msg(msg, msz, "cannot %s process %d: not permitted (%s); the daemon needs the same "
			"user as the process, or root",
			op_verb(op), (int)pid, rn);
		ret = -EPERM;
		break;
	default:
		set_msg(msg, msz, "cannot %s process %d: %s", op_verb(op), (int)pid, rn);
		ret = -EIO;
		break;
	}
	return ret;
}

static int no_checkpoint(const struct vram_cudadrv *d, pid_t pid, struct vram_cuda_error *err)
{
	if (vram_cudadrv_has_checkpoint(d))
		return 0;
	if (err) {
		err->cu_result = 0;
		set_msg(err->message, sizeof(err->message),
			"cannot checkpoint process %d: the CUDA driver (version %d) has no checkpoint API "
			"(driver 550 or newer needed): use the hook or the restart engine",
			(int)pid, d->driver_version);
	}
	return -EOPNOTSUPP;
}

int vram_cudadrv_get_state(const struct vram_cudadrv *d, pid_t pid, enum vram_cuda_proc_state *ret_state,
			   struct vram_cuda_error *err)
{
	int state = -1;
	int r = no_checkpoint(d, pid, err);

	if (r < 0)
		return r;
	r = vram_cudadrv_map_error(d->ckpt_get_state((int)pid, &state), VRAM_CUDA_OP_GET_STATE, pid, 0, err);
	if (r < 0)
		return r;
	*ret_state = (enum vram_cuda_proc_state)state;
	return 0;
}

int vram_cudadrv_lock(const struct vram_cudadrv *d, pid_t pid, unsigned timeout_ms, struct vram_cuda_error *err)
{
	struct vram_cu_checkpoint_lock_args args;
	int r = no_checkpoint(d, pid, err);

	if (r < 0)
		return r;
	memset(&args, 0, sizeof(args));
	args.timeout_ms = timeout_ms;
	return vram_cudadrv_map_error(d->ckpt_lock((int)pid, &args), VRAM_CUDA_OP_LOCK, pid, timeout_ms, err);
}

int vram_cudadrv_checkpoint(const struct vram_cudadrv *d, pid_t pid, struct vram_cuda_error *err)
{
	struct vram_cu_checkpoint_args args;
	int r = no_checkpoint(d, pid, err);

	if (r < 0)
		return r;
	memset(&args, 0, sizeof(args));
	return vram_cudadrv_map_error(d->ckpt_checkpoint((int)pid, &args), VRAM_CUDA_OP_CHECKPOINT, pid, 0, err);
}

int vram_cudadrv_restore(const struct vram_cudadrv *d, pid_t pid, const struct vram_cu_gpu_pair *pairs,
			 size_t n_pairs, struct vram_cuda_error *err)
{
	struct vram_cu_checkpoint_restore_args args;
	int r = no_checkpoint(d, pid, err);

	if (r < 0)
		return r;
	memset(&args, 0, sizeof(args));
	if (pairs && n_pairs > 0) {
		/* The driver does not write through the pointer. */
		args.gpu_pairs = (struct vram_cu_gpu_pair *)pairs;
		args.gpu_pairs_count = (unsigned int)n_pairs;
	}
	return vram_cudadrv_map_error(d->ckpt_restore((int)pid, &args), VRAM_CUDA_OP_RESTORE, pid, 0, err);
}

int vram_cudadrv_unlock(const struct vram_cudadrv *d, pid_t pid, struct vram_cuda_error *err)
{
	struct vram_cu_checkpoint_args args;
	int r = no_checkpoint(d, pid, err);

	if (r < 0)
		return r;
	memset(&args, 0, sizeof(args));
	return vram_cudadrv_map_error(d->ckpt_unlock((int)pid, &args), VRAM_CUDA_OP_UNLOCK, pid, 0, err);
}

int vram_cudadrv_restore_tid(const struct vram_cudadrv *d, pid_t pid, int *ret_tid, struct vram_cuda_error *err)
{
	int tid = 0;
	int r = no_checkpoint(d, pid, err);

	if (r < 0)
		return r;
	if (!d->ckpt_restore_tid)
		return vram_cudadrv_map_error(VRAM_CU_ERROR_NOT_SUPPORTED, VRAM_CUDA_OP_RESTORE_TID, pid, 0, err);
	r = vram_cudadrv_map_error(d->ckpt_restore_tid((int)pid, &tid), VRAM_CUDA_OP_RESTORE_TID, pid, 0, err);
	if (r < 0)
		return r;
	*ret_tid = tid;
	return 0;
}

void vram_cuda_uuid_format(const struct vram_cu_uuid *u, char *buf, size_t size)
{
	const unsigned char *b = u->bytes;

	snprintf(buf, size,
		 "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
		 b[14], b[15]);
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int vram_cuda_uuid_parse(const char *s, struct vram_cu_uuid *ret)
{
	struct vram_cu_uuid u;
	size_t n = 0;

	if (strncmp(s, "GPU-", 4) == 0)
		s += 4;
	for (; *s; s++) {
		int hi, lo;

		if (*s == '-')
			continue;
		if (n == 16)
			return -EINVAL;
		hi = hexval((unsigned char)s[0]);
		lo = s[1] ? hexval((unsigned char)s[1]) : -1;
		if (hi < 0 || lo < 0)
			return -EINVAL;
		u.bytes[n++] = (unsigned char)(hi << 4 | lo);
		s++;
	}
	if (n != 16)
		return -EINVAL;
	*ret = u;
	return 0;
}

int vram_cudadrv_devices(const struct vram_cudadrv *d, struct vram_cuda_device *ret_devs, size_t max,
			 size_t *ret_n, struct vram_cuda_error *err)
{
	int count = 0;
	size_t n = 0;
	cu_result_t r;

	r = d->device_get_count(&count);
	if (r != VRAM_CU_SUCCESS)
		return vram_cudadrv_map_error(r, VRAM_CUDA_OP_DEVICES, 0, 0, err);
	for (int i = 0; i < count && n < max; i++) {
		struct vram_cuda_device *dev = &ret_devs[n];
		cu_device_t h;

		memset(dev, 0, sizeof(*dev));
		r = d->device_get(&h, i);
		if (r == VRAM_CU_SUCCESS)
			r = d->device_get_uuid(&dev->uuid, h);
		if (r == VRAM_CU_SUCCESS)
			r = d->device_get_name(dev->name, (int)sizeof(dev->name), h);
		if (r != VRAM_CU_SUCCESS)
			return vram_cudadrv_map_error(r, VRAM_CUDA_OP_DEVICES, 0, 0, err);
		dev->name[sizeof(dev->name) - 1] = '\0';
		dev->ordinal = i;
		vram_cuda_uuid_format(&dev->uuid, dev->uuid_str, sizeof(dev->uuid_str));
		n++;
	}
	*ret_n = n;
	return 0;
}

int vram_cudadrv_move_pairs(const struct vram_cuda_device *devs, size_t n_devs, const unsigned *from,
			    const unsigned *to, size_t n_moves, struct vram_cu_gpu_pair *ret_pairs,
			    size_t max, size_t *ret_n, char *why, size_t why_size)
{
	long target[VRAM_CUDA_MAX_DEVICES]; /* target[src] = dst */
	bool taken[VRAM_CUDA_MAX_DEVICES];  /* dst already the image of some src */

	if (n_devs > VRAM_CUDA_MAX_DEVICES) {
		set_msg(why, why_size, "more than %d GPUs", VRAM_CUDA_MAX_DEVICES);
		return -E2BIG;
	}
	if (max < n_devs) {
		set_msg(why, why_size, "room for %zu pairs, %zu GPUs", max, n_devs);
		return -E2BIG;
	}
	for (size_t i = 0; i < n_devs; i++) {
		target[i] = -1;
		taken[i] = false;
	}
	for (size_t i = 0; i < n_moves; i++) {
		if (from[i] >= n_devs || to[i] >= n_devs) {
			set_msg(why, why_size, "GPU %u does not exist (the machine has %zu)",
				from[i] >= n_devs ? from[i] : to[i], n_devs);
			return -EINVAL;
		}
		if (target[from[i]] >= 0) {
			set_msg(why, why_size, "GPU %u is moved twice", from[i]);
			return -EINVAL;
		}
		if (taken[to[i]]) {
			set_msg(why, why_size, "two GPUs are moved onto GPU %u", to[i]);
			return -EINVAL;
		}
		if (strcmp(devs[from[i]].name, devs[to[i]].name) != 0) {
			set_msg(why, why_size, "GPU %u (%s) and GPU %u (%s) are different models", from[i],
				devs[from[i]].name, to[i], devs[to[i]].name);
			return -EINVAL;
		}
		target[from[i]] = to[i];
		taken[to[i]] = true;
	}
	/*
	 * GPUs not moved: one that is nobody's target stays where it is; one
	 * that was taken over goes to a vacated GPU (same model first), so the
	 * whole map stays a permutation.
	 */
	for (size_t g = 0; g < n_devs; g++)
		if (target[g] < 0 && !taken[g]) {
			target[g] = (long)g;
			taken[g] = true;
		}
	for (int pass = 0; pass < 2; pass++) {
		for (size_t g = 0; g < n_devs; g++) {
			if (target[g] >= 0)
				continue;
			for (size_t v = 0; v < n_devs; v++) {
				if (taken[v])
					continue;
				if (pass == 0 && strcmp(devs[g].name, devs[v].name) != 0)
					continue;
				target[g] = (long)v;
				taken[v] = true;
				break;
			}
		}
	}
	for (size_t g = 0; g < n_devs; g++) {
		ret_pairs[g].old_uuid = devs[g].uuid;
		ret_pairs[g].new_uuid = devs[target[g]].uuid;
	}
	*ret_n = n_devs;
	return 0;
}

/* Reads the parent pid from /proc/<pid>/stat; the comm field may hold spaces and ')'. */
static int read_ppid(pid_t pid, pid_t *ret_ppid)
{
	char path[64], buf[512];
	FILE *f;
	size_t n;
	char *p;
	int ppid;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 1, " %*c %d", &ppid) != 1)
		return -EINVAL;
	*ret_ppid = (pid_t)ppid;
	return 0;
}

int vram_proc_tree(pid_t root, pid_t *ret_pids, size_t max, size_t *ret_n)
{
	struct entry {
		pid_t pid, ppid;
	} *all = NULL;
	size_t n_all = 0, cap = 0, n = 0;
	struct dirent *de;
	pid_t dummy;
	DIR *dir;
	int r = 0;

	if (read_ppid(root, &dummy) < 0)
		return -ESRCH;
	dir = opendir("/proc");
	if (!dir)
		return -errno;
	while ((de = readdir(dir))) {
		char *end;
		long v = strtol(de->d_name, &end, 10);
		pid_t ppid;

		if (*end || v <= 0 || (pid_t)v == root)
			continue;
		if (read_ppid((pid_t)v, &ppid) < 0)
			continue; /* exited meanwhile */
		if (n_all == cap) {
			size_t ncap = cap ? cap * 2 : 256;
			struct entry *na = realloc(all, ncap * sizeof(*na));

			if (!na) {
				r = -ENOMEM;
				goto out;
			}
			all = na;
			cap = ncap;
		}
		all[n_all].pid = (pid_t)v;
		all[n_all].ppid = ppid;
		n_all++;
	}

	if (max == 0) {
		r = -E2BIG;
		goto out;
	}
	ret_pids[n++] = root;
	/* Breadth first: ret_pids itself is the queue. */
	for (size_t head = 0; head < n; head++) {
		for (size_t i = 0; i < n_all; i++) {
			if (all[i].ppid != ret_pids[head])
				continue;
			if (n == max) {
				r = -E2BIG;
				goto out;
			}
			ret_pids[n++] = all[i].pid;
		}
	}
out:
	closedir(dir);
	free(all);
	*ret_n = n;
	return r;
}

size_t vram_proc_filter(pid_t *pids, size_t n, const pid_t *gpu_pids, size_t n_gpu)
{
	size_t k = 0;

	for (size_t i = 0; i < n; i++) {
		bool found = false;

		for (size_t j = 0; j < n_gpu && !found; j++)
			found = gpu_pids[j] == pids[i];
		if (found)
			pids[k++] = pids[i];
	}
	return k;
}

size_t vram_cudadrv_filter_cuda(const struct vram_cudadrv *d, pid_t *pids, size_t n)
{
	size_t k = 0;

	if (!vram_cudadrv_has_checkpoint(d))
		return 0;
	for (size_t i = 0; i < n; i++) {
		int state;

		if (d->ckpt_get_state((int)pids[i], &state) == VRAM_CU_SUCCESS)
			pids[k++] = pids[i];
	}
	return k;
}
