/* SPDX-License-Identifier: MIT */
/*
 * Legacy CUDA IPC between two hooked processes on the fake driver (whose
 * physical memory is a memfd, so the two really share bytes), the pattern
 * of vLLM's custom all-reduce and torch.multiprocessing:
 *  - the exporter's cuMemAlloc memory gets a handle of the hook's; an
 *    offload and restore between cuIpcGetMemHandle and the open moves it
 *    (nobody has it open yet) and the importer still opens it, contents
 *    intact;
 *  - the importer sees the exporter's bytes and the exporter the
 *    importer's; the importer is not charged for it;
 *  - while the importer has it open and runs, an offload of the exporter
 *    leaves it resident and says so (nonmovable), and sharing goes on after
 *    the restore;
 *  - with the importer offloaded too, it moves: the importer's mapping goes
 *    with its offload, and its restore (made first, waiting for the
 *    exporter's) maps the new memory at the same address, contents intact
 *    and shared again;
 *  - after cuIpcCloseMemHandle it is movable again and moves;
 *  - moved as vramd moves a group (gate, gate, offload, offload, restore
 *    hold, restore hold, restore, restore), the shared memory moves without
 *    waiting and both see each other's bytes after;
 *  - a handle of memory since freed, a forged id, and a handle naming a
 *    process that does not listen are refused with CUDA_ERROR_INVALID_HANDLE.
 * Usage: fc-ipc (the exporter; it starts itself as "fc-ipc import HEX").
 */
#include <spawn.h>
#include <sys/wait.h>

#include "fc-test.h"

#define CTX (64 * MiB)
#define SIZE (8 * MiB)

extern char **environ;

static void to_hex(const CUipcMemHandle *h, char *out)
{
	for (int i = 0; i < 64; i++)
		sprintf(out + 2 * i, "%02x", (unsigned char)h->reserved[i]);
}

static void from_hex(const char *in, CUipcMemHandle *h)
{
	CHECK(strlen(in) == 128);
	for (int i = 0; i < 64; i++) {
		unsigned v;
		CHECK(sscanf(in + 2 * i, "%2x", &v) == 1);
		h->reserved[i] = (char)v;
	}
}

static void read_line(FILE *f, const char *want)
{
	char line[256];
	CHECK(fgets(line, sizeof(line), f));
	line[strcspn(line, "\n")] = '\0';
	if (strcmp(line, want) != 0) {
		fprintf(stderr, "expected \"%s\" from the other process, got \"%s\"\n", want, line);
		abort();
	}
}

/* The importer: opens the handle, checks and writes, waits for "check", checks, closes. */
static int importer(const char *hex)
{
	fc_setup(0);
	CUipcMemHandle h;
	from_hex(hex, &h);
	CUdeviceptr q;
	CK(cuIpcOpenMemHandle_v2(&q, h, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS));
	CHECK(fc_has_pattern(q, SIZE / 2, 7, NULL));
	fc_put_pattern(q + SIZE / 2, SIZE / 2, 9, NULL);
	/* Opened twice: the same address, closed twice. */
	CUdeviceptr q2;
	CK(cuIpcOpenMemHandle_v2(&q2, h, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS));
	CHECK(q2 == q);
	CK(cuIpcCloseMemHandle(q2));
	/* The exporter pays for it. */
	CHECK_EQ_U64(fc_hook_used(0), CTX);

	/* A forged id is refused. */
	CUipcMemHandle bad = h;
	bad.reserved[24] ^= 0x40;
	CUdeviceptr r;
	CHECK(cuIpcOpenMemHandle_v2(&r, bad, 0) == CUDA_ERROR_INVALID_HANDLE);
	printf("opened\n");
	fflush(stdout);

	read_line(stdin, "check");
	CHECK(fc_has_pattern(q, SIZE / 4, 11, NULL)); /* written by the exporter after its offload */
	CHECK(fc_has_pattern(q + SIZE / 2, SIZE / 2, 9, NULL));
	printf("checked\n");
	fflush(stdout);

	/* Offloaded together: the mapping goes with the offload and comes back with the restore. */
	char out[1024];
	read_line(stdin, "offload");
	fc_ctl("offload", out, sizeof(out));
	CHECK(strncmp(out, "ok ", 3) == 0);
	CHECK(!fc_is_mapped(q));
	printf("offloaded\n");
	fflush(stdout);
	read_line(stdin, "restore");
	fc_ctl("restore", out, sizeof(out)); /* waits for the exporter to be back */
	if (strncmp(out, "ok ", 3) != 0) {
		fprintf(stderr, "restore: %s\n", out);
		abort();
	}
	CHECK(fc_is_mapped(q));
	CHECK(fc_has_pattern(q, SIZE / 4, 11, NULL));
	CHECK(fc_has_pattern(q + SIZE / 2, SIZE / 2, 9, NULL));
	fc_put_pattern(q + SIZE / 4, SIZE / 4, 15, NULL);
	printf("restored\n");
	fflush(stdout);

	/* As vramd moves a group: gates, copies, restores with the gates held, gates. */
	read_line(stdin, "gate");
	fc_ctl_ok("gate", out, sizeof(out));
	CHECK(strstr(out, "state=offloading"));
	printf("gated\n");
	fflush(stdout);
	read_line(stdin, "offload");
	fc_ctl_ok("offload", out, sizeof(out));
	CHECK(!fc_is_mapped(q));
	printf("offloaded\n");
	fflush(stdout);
	read_line(stdin, "restore hold");
	fc_ctl_ok("restore hold", out, sizeof(out));
	CHECK(strstr(out, "state=restoring"));
	CHECK(fc_is_mapped(q)); /* mapped again while both gates are held */
	printf("held\n");
	fflush(stdout);
	read_line(stdin, "restore");
	fc_ctl_ok("restore", out, sizeof(out));
	CHECK(strstr(out, "state=running"));
	CHECK(fc_has_pattern(q + SIZE / 4, SIZE / 4, 15, NULL));
	fc_put_pattern(q + SIZE / 4, SIZE / 4, 17, NULL);
	printf("running\n");
	fflush(stdout);

	read_line(stdin, "close");
	CK(cuIpcCloseMemHandle(q));
	CHECK(!fc_is_mapped(q));
	printf("closed\n");
	fflush(stdout);

	read_line(stdin, "freed");
	CHECK(cuIpcOpenMemHandle_v2(&r, h, 0) == CUDA_ERROR_INVALID_HANDLE);
	/* A handle naming a process that does not listen. */
	bad = h;
	uint32_t nobody = 0x3fffffff;
	memcpy(bad.reserved + 8, &nobody, sizeof(nobody));
	CHECK(cuIpcOpenMemHandle_v2(&r, bad, 0) == CUDA_ERROR_INVALID_HANDLE);
	printf("done\n");
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "import"))
		return importer(argv[2]);
	fc_setup(0);
	char out[1024];
	CUdeviceptr p;
	CK(cuMemAlloc_v2(&p, SIZE));
	fc_put_pattern(p, SIZE / 2, 7, NULL);
	CUipcMemHandle h;
	CK(cuIpcGetMemHandle(&h, p));

	/* Nobody has it open yet: it moves. */
	fc_ctl_ok("offload", out, sizeof(out));
	CHECK_EQ_U64(fc_field(out, "bytes="), SIZE);
	CHECK_EQ_U64(fc_field(out, "nonmovable="), CTX);
	CHECK(!fc_is_mapped(p));
	fc_ctl_ok("restore", out, sizeof(out));
	CHECK(fc_has_pattern(p, SIZE / 2, 7, NULL));

	char hex[129];
	to_hex(&h, hex);
	int to_child[2], from_child[2];
	CHECK(pipe(to_child) == 0 && pipe(from_child) == 0);
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, to_child[0], 0);
	posix_spawn_file_actions_adddup2(&fa, from_child[1], 1);
	posix_spawn_file_actions_addclose(&fa, to_child[1]);
	posix_spawn_file_actions_addclose(&fa, from_child[0]);
	char *child_argv[] = { argv[0], "import", hex, NULL };
	pid_t child;
	CHECK(posix_spawn(&child, "/proc/self/exe", &fa, NULL, child_argv, environ) == 0);
	close(to_child[0]);
	close(from_child[1]);
	FILE *in = fdopen(from_child[0], "r");
	FILE *cmd = fdopen(to_child[1], "w");
	CHECK(in && cmd);

	read_line(in, "opened");
	CHECK(fc_has_pattern(p + SIZE / 2, SIZE / 2, 9, NULL)); /* the importer's bytes */
	CHECK_EQ_U64(fc_hook_nonmovable(0), CTX + SIZE);

	/* Open in another process: it stays, and the offload says so. */
	fc_ctl_ok("offload", out, sizeof(out));
	CHECK_EQ_U64(fc_field(out, "bytes="), 0);
	CHECK_EQ_U64(fc_field(out, "nonmovable="), CTX + SIZE);
	CHECK(fc_is_mapped(p));
	fc_ctl_ok("restore", out, sizeof(out));
	fc_put_pattern(p, SIZE / 4, 11, NULL);
	fprintf(cmd, "check\n");
	fflush(cmd);
	read_line(in, "checked");

	/* Both gated: the shared memory moves, and comes back shared. */
	fprintf(cmd, "offload\n");
	fflush(cmd);
	read_line(in, "offloaded");
	fc_ctl_ok("offload", out, sizeof(out));
	CHECK_EQ_U64(fc_field(out, "bytes="), SIZE);
	CHECK_EQ_U64(fc_field(out, "nonmovable="), CTX);
	CHECK(!fc_is_mapped(p));
	fprintf(cmd, "restore\n"); /* the importer's restore waits for ours */
	fflush(cmd);
	usleep(200000);
	fc_ctl_ok("restore", out, sizeof(out));
	read_line(in, "restored");
	CHECK(fc_has_pattern(p + SIZE / 4, SIZE / 4, 15, NULL)); /* written into the new memory by the importer */
	CHECK_EQ_U64(fc_hook_nonmovable(0), CTX + SIZE);

	/* A group move, as vramd makes it for the processes of one workload:
	 * every gate closes, then every process copies; every process restores
	 * with its gate held, then every gate opens. */
	fprintf(cmd, "gate\n");
	fflush(cmd);
	read_line(in, "gated");
	fc_ctl_ok("gate", out, sizeof(out));
	CHECK(strstr(out, "state=offloading"));
	fc_ctl_ok("offload", out, sizeof(out));
	CHECK_EQ_U64(fc_field(out, "bytes="), SIZE); /* the importer is gated: shared memory moves */
	CHECK(!fc_is_mapped(p));
	fprintf(cmd, "offload\n");
	fflush(cmd);
	read_line(in, "offloaded");
	fc_ctl_ok("restore hold", out, sizeof(out));
	CHECK(strstr(out, "state=restoring"));
	CHECK(fc_is_mapped(p));
	fprintf(cmd, "restore hold\n");
	fflush(cmd);
	read_line(in, "held");
	fc_ctl_ok("restore", out, sizeof(out));
	CHECK(strstr(out, "state=running"));
	fprintf(cmd, "restore\n");
	fflush(cmd);
	read_line(in, "running");
	CHECK(fc_has_pattern(p + SIZE / 4, SIZE / 4, 17, NULL));
	CHECK(fc_has_pattern(p, SIZE / 4, 11, NULL));
	CHECK_EQ_U64(fc_hook_nonmovable(0), CTX + SIZE);
	/* A gate held already cannot be closed again; a restore opens it. */
	fc_ctl("gate", out, sizeof(out));
	CHECK(strncmp(out, "ok ", 3) == 0);
	fc_ctl("gate", out, sizeof(out));
	CHECK(strncmp(out, "error ", 6) == 0);
	fc_ctl_ok("restore", out, sizeof(out)); /* opens the gate */
	CHECK(strstr(out, "state=running"));

	fprintf(cmd, "close\n");
	fflush(cmd);
	read_line(in, "closed");

	/* Closed everywhere: movable again. */
	CHECK_EQ_U64(fc_hook_nonmovable(0), CTX);
	fc_ctl_ok("offload", out, sizeof(out));
	CHECK_EQ_U64(fc_field(out, "bytes="), SIZE);
	CHECK(!fc_is_mapped(p));
	fc_ctl_ok("restore", out, sizeof(out));
	CHECK(fc_has_pattern(p, SIZE / 4, 11, NULL));
	CHECK(fc_has_pattern(p + SIZE / 2, SIZE / 2, 9, NULL));

	CK(cuMemFree_v2(p));
	fprintf(cmd, "freed\n");
	fflush(cmd);
	read_line(in, "done");
	int status = 0;
	CHECK(waitpid(child, &status, 0) == child);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK_EQ_U64(fc_hook_used(0), CTX);
	return 0;
}
