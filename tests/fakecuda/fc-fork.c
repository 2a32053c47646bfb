/* SPDX-License-Identifier: MIT */
/*
 * fork() in a process with the hook: the child (which must not use CUDA)
 * runs and exits normally, even with the control thread busy, and the parent
 * keeps its control socket, its accounting and its offload/restore.
 */
#include <sys/wait.h>

#include "fc-test.h"

int main(void)
{
	char out[1024];
	fc_setup(0);
	CUdeviceptr p;
	CK(cuMemAlloc_v2(&p, 2 * MiB));
	CK(cuMemsetD32_v2(p, 42, MiB / 2));
	fc_ctl("status", out, sizeof(out));
	for (int i = 0; i < 20; i++) {
		pid_t pid = fork();
		CHECK(pid >= 0);
		if (pid == 0) {
			/* dlsym goes through the hook in the child too */
			void *f = dlsym(RTLD_DEFAULT, "cuMemAlloc_v2");
			_exit(f ? 0 : 3);
		}
		int st;
		CHECK(waitpid(pid, &st, 0) == pid);
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	fc_ctl("offload", out, sizeof(out));
	CHECK(strncmp(out, "ok offload", 10) == 0);
	fc_ctl("restore", out, sizeof(out));
	CHECK(strncmp(out, "ok restore", 10) == 0);
	uint32_t v;
	CK(cuMemcpyDtoH_v2(&v, p + 4096, 4));
	CHECK(v == 42);
	CK(cuMemFree_v2(p));
	printf("fork: ok\n");
	return 0;
}
