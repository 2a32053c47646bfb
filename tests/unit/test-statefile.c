/* SPDX-License-Identifier: MIT */
/*
 * The state file: what is written reads back the same; a missing,
 * empty, truncated, corrupt, over-large, foreign or other-version file, a
 * symbolic link and a value out of its bounds each give their one sentence
 * and no state; a write is atomic and private, and never follows a link.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/statefile.h"

static char dir[64];
static char path[128];

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/vram-statefile-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(path, sizeof(path), "%s/state.json", dir);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void put_file(const char *p, const char *text)
{
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static char **strv(const char *const *words, size_t n)
{
	char **v = calloc(n + 1, sizeof(*v));
	for (size_t i = 0; i < n; i++)
		v[i] = strdup(words[i]);
	return v;
}

/*
 * Three workloads (one of the config with runtime timers, one ad-hoc,
 * offloaded, one parked on disk with park_after set at runtime) and an MPS
 * daemon.
 */
static void fill(struct vram_statefile *sf)
{
	static const char *const uuids[] = { "GPU-0000-aaaa", "GPU-1111-bbbb" };
	static const char *const cmd[] = { "python3", "-m", "server", "--port", "${PORT}" };
	static const char *const env[] = { "A=1", "B=two words", "C=" };
	*sf = (struct vram_statefile){ 0 };
	sf->n_workloads = 3;
	sf->workloads = calloc(3, sizeof(*sf->workloads));
	struct vram_statefile_workload *w = &sf->workloads[0];
	w->name = strdup("chat");
	w->offload_after = (struct vram_statefile_ms){ .set = true, .ms = 90000 };
	w->release_after = (struct vram_statefile_ms){ .set = true, .ms = VRAM_DURATION_NEVER };
	w->n_instances = 2;
	w->instances = calloc(2, sizeof(*w->instances));
	w->instances[0] = (struct vram_statefile_instance){
		.pid = 4242, .start_ticks = 123456789, .pgid = 4242, .port = 8001,
		.gpu_uuids = strv(uuids, 2), .n_gpus = 2, .engine = strdup("hook"),
		.state = VRAM_STATEFILE_READY, .cmdline = strv(cmd, 5), .n_cmdline = 5,
		.relay_pid = 4241, .relay_start_ticks = 123456700, .mps = true,
	};
	w->instances[0].gpu_bytes = calloc(2, sizeof(uint64_t));
	w->instances[0].gpu_bytes[0] = 8ull << 30;
	w->instances[0].gpu_bytes[1] = 12ull << 30;
	w->instances[1] = (struct vram_statefile_instance){
		.replica = 1, .pid = 4300, .start_ticks = 1, .pgid = 4300, .port = 0,
		.gpu_uuids = strv(uuids, 0), .n_gpus = 0, .state = VRAM_STATEFILE_STARTING,
	};
	w = &sf->workloads[1];
	w->name = strdup("run-1");
	w->is_adhoc = true;
	w->adhoc = (struct vram_statefile_adhoc){
		.cmd = strv(cmd, 5), .n_cmd = 5, .env = strv(env, 3), .n_env = 3,
		.cwd = strdup("/home/alice/models"),
		.memory = { .bytes = 24ull << 30 }, .gpus = 1,
		.owner = { .uid = 1000, .gid = 1000, .n_groups = 2 },
	};
	w->adhoc.owner.groups = calloc(2, sizeof(uint32_t));
	w->adhoc.owner.groups[0] = 27;
	w->adhoc.owner.groups[1] = 44;
	w->n_instances = 1;
	w->instances = calloc(1, sizeof(*w->instances));
	w->instances[0] = (struct vram_statefile_instance){
		.pid = 5000, .start_ticks = 987654321, .pgid = 4999, .port = 8002,
		.gpu_uuids = strv(uuids + 1, 1), .n_gpus = 1, .engine = strdup("hook"),
		.state = VRAM_STATEFILE_OFFLOADED, .offloaded_bytes = 21474836480ull,
	};
	w = &sf->workloads[2];
	w->name = strdup("tts");
	w->park_after = (struct vram_statefile_ms){ .set = true, .ms = 3600000 };
	w->n_instances = 1;
	w->instances = calloc(1, sizeof(*w->instances));
	w->instances[0] = (struct vram_statefile_instance){
		.pid = 6000, .start_ticks = 42, .pgid = 6000, .port = 8003,
		.gpu_uuids = strv(uuids, 1), .n_gpus = 1, .engine = strdup("hook"),
		.state = VRAM_STATEFILE_PARKED, .parked_bytes = 14710262988ull,
	};
	sf->n_mps = 1;
	sf->mps = calloc(1, sizeof(*sf->mps));
	sf->mps[0] = (struct vram_statefile_mps){ .pipe_dir = strdup("/run/vramd/mps/0"),
						   .pid = 777, .start_ticks = 55 };
}

static void assert_same(const struct vram_statefile *a, const struct vram_statefile *b)
{
	assert_int_equal(a->n_workloads, b->n_workloads);
	for (size_t i = 0; i < a->n_workloads; i++) {
		const struct vram_statefile_workload *x = &a->workloads[i], *y = &b->workloads[i];
		assert_string_equal(x->name, y->name);
		assert_int_equal(x->offload_after.set, y->offload_after.set);
		assert_true(x->offload_after.ms == y->offload_after.ms);
		assert_int_equal(x->release_after.set, y->release_after.set);
		assert_true(x->release_after.ms == y->release_after.ms);
		assert_int_equal(x->park_after.set, y->park_after.set);
		assert_true(x->park_after.ms == y->park_after.ms);
		assert_int_equal(x->is_adhoc, y->is_adhoc);
		if (x->is_adhoc) {
			assert_int_equal(x->adhoc.n_cmd, y->adhoc.n_cmd);
			for (size_t k = 0; k < x->adhoc.n_cmd; k++)
				assert_string_equal(x->adhoc.cmd[k], y->adhoc.cmd[k]);
			assert_null(y->adhoc.cmd[y->adhoc.n_cmd]);
			assert_int_equal(x->adhoc.n_env, y->adhoc.n_env);
			for (size_t k = 0; k < x->adhoc.n_env; k++)
				assert_string_equal(x->adhoc.env[k], y->adhoc.env[k]);
			assert_string_equal(x->adhoc.cwd, y->adhoc.cwd);
			assert_true(x->adhoc.memory.bytes == y->adhoc.memory.bytes);
			assert_int_equal(x->adhoc.gpus, y->adhoc.gpus);
			assert_int_equal(x->adhoc.owner.uid, y->adhoc.owner.uid);
			assert_int_equal(x->adhoc.owner.gid, y->adhoc.owner.gid);
			assert_int_equal(x->adhoc.owner.n_groups, y->adhoc.owner.n_groups);
			for (size_t k = 0; k < x->adhoc.owner.n_groups; k++)
				assert_int_equal(x->adhoc.owner.groups[k], y->adhoc.owner.groups[k]);
		}
		assert_int_equal(x->n_instances, y->n_instances);
		for (size_t j = 0; j < x->n_instances; j++) {
			const struct vram_statefile_instance *p = &x->instances[j], *q = &y->instances[j];
			assert_int_equal(p->replica, q->replica);
			assert_int_equal(p->pid, q->pid);
			assert_true(p->start_ticks == q->start_ticks);
			assert_int_equal(p->n_cmdline, q->n_cmdline);
			for (size_t k = 0; k < p->n_cmdline; k++)
				assert_string_equal(p->cmdline[k], q->cmdline[k]);
			assert_int_equal(p->relay_pid, q->relay_pid);
			assert_true(p->relay_start_ticks == q->relay_start_ticks);
			assert_int_equal(p->mps, q->mps);
			assert_int_equal(p->gpu_bytes != NULL, q->gpu_bytes != NULL);
			for (size_t k = 0; p->gpu_bytes && k < p->n_gpus; k++)
				assert_true(p->gpu_bytes[k] == q->gpu_bytes[k]);
			assert_int_equal(p->pgid, q->pgid);
			assert_int_equal(p->port, q->port);
			assert_int_equal(p->n_gpus, q->n_gpus);
			for (size_t k = 0; k < p->n_gpus; k++)
				assert_string_equal(p->gpu_uuids[k], q->gpu_uuids[k]);
			if (p->engine)
				assert_string_equal(p->engine, q->engine);
			else
				assert_null(q->engine);
			assert_int_equal(p->state, q->state);
			assert_true(p->offloaded_bytes == q->offloaded_bytes);
			assert_true(p->parked_bytes == q->parked_bytes);
		}
	}
	assert_int_equal(a->n_mps, b->n_mps);
	for (size_t i = 0; i < a->n_mps; i++) {
		assert_string_equal(a->mps[i].pipe_dir, b->mps[i].pipe_dir);
		assert_int_equal(a->mps[i].pid, b->mps[i].pid);
		assert_true(a->mps[i].start_ticks == b->mps[i].start_ticks);
	}
}

static void test_round_trip(void **state)
{
	(void)state;
	struct vram_statefile a, b;
	char why[512] = "";
	fill(&a);
	assert_int_equal(vram_statefile_write(path, &a, why, sizeof(why)), 0);
	assert_int_equal(vram_statefile_read(path, &b, why, sizeof(why)), 0);
	assert_same(&a, &b);
	assert_true(b.written_at > 0);
	assert_true(b.written_by[0] != '\0');

	/* private, and no temporary file is left */
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	char tmp[160];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	assert_int_equal(access(tmp, F_OK), -1);

	/* a second write replaces the first: one workload fewer reads back as such */
	vram_statefile_done(&b);
	size_t n = a.n_workloads;
	a.n_workloads = 1;
	assert_int_equal(vram_statefile_write(path, &a, why, sizeof(why)), 0);
	assert_int_equal(vram_statefile_read(path, &b, why, sizeof(why)), 0);
	assert_int_equal(b.n_workloads, 1);
	assert_same(&a, &b);
	a.n_workloads = n;
	vram_statefile_done(&a);
	vram_statefile_done(&b);
	vram_statefile_done(&b); /* twice is harmless */

	/* an empty state is a valid state */
	struct vram_statefile empty = { 0 };
	assert_int_equal(vram_statefile_write(path, &empty, why, sizeof(why)), 0);
	assert_int_equal(vram_statefile_read(path, &b, why, sizeof(why)), 0);
	assert_int_equal(b.n_workloads, 0);
	assert_int_equal(b.n_mps, 0);
	vram_statefile_done(&b);
}

/* Reads path and expects r with exactly the sentence want (with %s for the path). */
static void expect_bad(const char *p, int want_r, const char *want_fmt)
{
	struct vram_statefile sf;
	char why[512] = "", want[512];
	memset(&sf, 0x5a, sizeof(sf));
	assert_int_equal(vram_statefile_read(p, &sf, why, sizeof(why)), want_r);
	/* want_fmt names the file as %s, once */
	const char *at = strstr(want_fmt, "%s");
	assert_non_null(at);
	snprintf(want, sizeof(want), "%.*s%s%s", (int)(at - want_fmt), want_fmt, p, at + 2);
	assert_string_equal(why, want);
	/* nothing half-read is handed back */
	assert_null(sf.workloads);
	assert_int_equal(sf.n_workloads, 0);
	assert_null(sf.mps);
}

static void test_bad_files(void **state)
{
	(void)state;
	char p[160];
	snprintf(p, sizeof(p), "%s/missing.json", dir);
	expect_bad(p, -ENOENT, "there is no state file %s");

	put_file(path, "");
	expect_bad(path, -EBADMSG, "%s is empty (truncated)");

	put_file(path, "{\"format\": \"vramd-state\", \"version\": 1, \"workloads\": [{\"na");
	expect_bad(path, -EBADMSG, "%s is not valid JSON (truncated or corrupt): premature end of "
				   "input near '\"na' at line 1, column 58");

	put_file(path, "\x7f" "ELF\x02\x01");
	expect_bad(path, -EBADMSG, "%s is not valid JSON (truncated or corrupt): '[' or '{' "
				   "expected near '\x7f' at line 1, column 1");

	put_file(path, "{\"workloads\": []}");
	expect_bad(path, -EPROTO, "%s is not a vramd state file (no \"format\": \"vramd-state\")");
	put_file(path, "[1, 2]");
	expect_bad(path, -EPROTO, "%s is not a vramd state file (no \"format\": \"vramd-state\")");

	put_file(path, "{\"format\": \"vramd-state\", \"version\": 2, \"workloads\": 7}");
	expect_bad(path, -EPROTO, "%s is a vramd state file of version 2; this vramd reads version 1");
	put_file(path, "{\"format\": \"vramd-state\"}");
	expect_bad(path, -EPROTO, "%s is a vramd state file of version none; this vramd reads "
				  "version 1");

	/* over the bound: refused before it is read */
	int fd = open(path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, VRAM_STATEFILE_MAX_BYTES + 1), 0);
	close(fd);
	expect_bad(path, -EFBIG, "%s is larger than 4194304 bytes (4194305 bytes)");

	/* a symbolic link is not followed, even to a good file */
	struct vram_statefile good;
	char why[512];
	fill(&good);
	snprintf(p, sizeof(p), "%s/real.json", dir);
	assert_int_equal(vram_statefile_write(p, &good, why, sizeof(why)), 0);
	vram_statefile_done(&good);
	unlink(path);
	assert_int_equal(symlink(p, path), 0);
	expect_bad(path, -ELOOP, "the state file %s is a symbolic link (not followed)");
	unlink(path);

	/* a directory is not a state file */
	assert_int_equal(mkdir(path, 0700), 0);
	expect_bad(path, -ENXIO, "the state file %s is not a regular file");
	rmdir(path);
}

#define HEAD "{\"format\": \"vramd-state\", \"version\": 1, "
#define INST "\"pid\": 10, \"start_ticks\": 5, \"pgid\": 10, \"port\": 0, \"gpus\": [], "

static void test_bad_values(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		const char *why; /* after "<path>: " */
	} cases[] = {
		{ HEAD "\"workloads\": [{\"name\": \"a\", \"instances\": [{\"pid\": 0}]}]}",
		  "workloads[0].instances[0].pid: expected a whole number from 1 to 4194304, got one "
		  "out of range" },
		{ HEAD "\"workloads\": [{\"name\": \"a\", \"instances\": [{\"pid\": \"12\"}]}]}",
		  "workloads[0].instances[0].pid: expected a whole number from 1 to 4194304, got a "
		  "string" },
		{ HEAD "\"workloads\": [{\"name\": \"a\", \"instances\": [{" INST "\"state\": \"x\"}]}]}",
		  "workloads[0].instances[0].state: expected \"ready\", \"offloaded\", \"starting\" or \"parked\"" },
		{ HEAD "\"workloads\": [{\"name\": \"a\", \"instances\": [{" INST
		       "\"gpu_bytes\": [1], \"state\": \"ready\"}]}]}",
		  "workloads[0].instances[0].gpu_bytes: expected an array of 0 byte counts, one per GPU, "
		  "got another count" },
		{ HEAD "\"workloads\": [{\"name\": \"a\", \"instances\": [{" INST
		       "\"replica\": 64, \"state\": \"ready\"}]}]}",
		  "workloads[0].instances[0].replica: expected a whole number from 0 to 63, got one out "
		  "of range" },
		{ HEAD "\"workloads\": [{\"name\": \"a\", \"instances\": [{" INST
		       "\"state\": \"offloaded\"}]}]}",
		  "workloads[0].instances[0].offloaded_bytes: missing" },
		{ HEAD "\"workloads\": [{\"name\": \"a\", \"instances\": [{" INST
		       "\"state\": \"parked\"}]}]}",
		  "workloads[0].instances[0].parked_bytes: missing" },
		{ HEAD "\"workloads\": [{\"name\": \"a\", \"runtime\": {\"park_after_ms\": -1}}]}",
		  "workloads[0].runtime.park_after_ms: expected a whole number from 0 to "
		  "9223372036854775807, got one out of range" },
		{ HEAD "\"workloads\": [{\"name\": \"a\", \"instances\": [{" INST
		       "\"port\": 70000, \"state\": \"ready\"}]}]}",
		  "!duplicate object key near '\"port\"'" },
		{ HEAD "\"workloads\": [{\"name\": \"../etc\"}]}",
		  "workloads[0].name: expected 1 to 63 of A-Z a-z 0-9 . _ -" },
		{ HEAD "\"workloads\": [{\"name\": \"a\"}, {\"name\": \"a\"}]}",
		  "workloads[1].name: \"a\" appears twice" },
		{ HEAD "\"workloads\": [{\"name\": \"a\", \"runtime\": {\"offload_after_ms\": true}}]}",
		  "workloads[0].runtime.offload_after_ms: expected ms or \"never\", got true or false" },
		{ HEAD "\"workloads\": [{\"name\": \"a\", \"adhoc\": {\"cmd\": [], \"gpus\": 0}}]}",
		  "workloads[0].adhoc.cmd: expected an array of 1 to 256 strings, got another count" },
		{ HEAD "\"workloads\": [{\"name\": \"a\", \"adhoc\": {\"cmd\": [\"x\"], \"gpus\": 0}}]}",
		  "workloads[0].adhoc.owner: missing" },
		{ HEAD "\"workloads\": [{\"name\": \"a\", \"adhoc\": {\"cmd\": [\"x\"], \"gpus\": 0, "
		       "\"owner\": {\"uid\": 4294967295, \"gid\": 0}}}]}",
		  "workloads[0].adhoc.owner.uid: expected a whole number from 0 to 4294967294, got one "
		  "out of range" },
		{ HEAD "\"workloads\": [{\"name\": \"a\", \"adhoc\": {\"cmd\": [\"x\\u0000y\"], "
		       "\"gpus\": 0}}]}",
		  "!\\u0000 is not allowed" },
		{ HEAD "\"workloads\": {}}", "workloads: expected an array of at most 1040 workloads" },
		{ HEAD "\"mps\": [{\"pipe_dir\": \"\", \"pid\": 1, \"start_ticks\": 1}]}",
		  "mps[0].pipe_dir: expected 1 to 4096 bytes without NUL, got 0 bytes" },
		{ HEAD "\"mps\": [7]}", "mps[0]: expected an object, got a number" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		put_file(path, cases[i].text);
		struct vram_statefile sf;
		char why[512] = "", want[768];
		int r = vram_statefile_read(path, &sf, why, sizeof(why));
		assert_int_equal(r, -EBADMSG);
		assert_null(sf.workloads);
		if (cases[i].why[0] == '!') {
			/* refused by the JSON parser already: its words, after ours */
			snprintf(want, sizeof(want), "%s is not valid JSON (truncated or corrupt): ", path);
			assert_true(strncmp(why, want, strlen(want)) == 0);
			assert_non_null(strstr(why, cases[i].why + 1));
			continue;
		}
		snprintf(want, sizeof(want), "%s: %s", path, cases[i].why);
		assert_string_equal(why, want);
	}
}

/* Every client-controlled count is bounded: one more than the bound is refused. */
static void test_bounds(void **state)
{
	(void)state;
	size_t cap = 64 * 1024;
	char *text = malloc(cap);
	size_t len = (size_t)snprintf(text, cap, HEAD "\"workloads\": [{\"name\": \"a\", "
						 "\"adhoc\": {\"gpus\": 0, \"cmd\": [");
	for (int i = 0; i <= VRAM_STATEFILE_MAX_ARGS; i++)
		len += (size_t)snprintf(text + len, cap - len, "%s\"w\"", i ? "," : "");
	len += (size_t)snprintf(text + len, cap - len, "]}}]}");
	struct vram_statefile sf;
	char why[512];
	assert_int_equal(vram_statefile_parse(text, len, "s", &sf, why, sizeof(why)), -EBADMSG);
	assert_string_equal(why, "s: workloads[0].adhoc.cmd: expected an array of 1 to 256 strings, "
				 "got another count");

	len = (size_t)snprintf(text, cap, HEAD "\"workloads\": [{\"name\": \"a\", \"instances\": [");
	for (int i = 0; i <= VRAM_STATEFILE_MAX_INSTANCES; i++)
		len += (size_t)snprintf(text + len, cap - len, "%s{}", i ? "," : "");
	len += (size_t)snprintf(text + len, cap - len, "]}]}");
	assert_int_equal(vram_statefile_parse(text, len, "s", &sf, why, sizeof(why)), -EBADMSG);
	assert_string_equal(why, "s: workloads[0].instances: expected an array of at most 64 "
				 "instances");

	/* a string one byte over the bound */
	len = (size_t)snprintf(text, cap, HEAD "\"mps\": [{\"pid\": 1, \"start_ticks\": 1, "
					       "\"pipe_dir\": \"");
	memset(text + len, 'd', VRAM_STATEFILE_STRING_MAX + 1);
	len += VRAM_STATEFILE_STRING_MAX + 1;
	len += (size_t)snprintf(text + len, cap - len, "\"}]}");
	assert_int_equal(vram_statefile_parse(text, len, "s", &sf, why, sizeof(why)), -EBADMSG);
	assert_string_equal(why, "s: mps[0].pipe_dir: expected 1 to 4096 bytes without NUL, got "
				 "4097 bytes");
	free(text);
}

/* A write never goes through a link planted at the temporary path, and leaves the old file. */
static void test_write_refuses_link(void **state)
{
	(void)state;
	struct vram_statefile a, b;
	char why[512], tmp[160], target[160];
	fill(&a);
	assert_int_equal(vram_statefile_write(path, &a, why, sizeof(why)), 0);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	snprintf(target, sizeof(target), "%s/victim", dir);
	put_file(target, "keep");
	assert_int_equal(symlink(target, tmp), 0);
	struct vram_statefile empty = { 0 };
	assert_int_equal(vram_statefile_write(path, &empty, why, sizeof(why)), -ELOOP);
	char want[512];
	snprintf(want, sizeof(want), "cannot create %s: is a symbolic link (not followed)", tmp);
	assert_string_equal(why, want);
	/* the victim is untouched and the old state still reads */
	FILE *f = fopen(target, "r");
	char buf[16] = "";
	assert_non_null(fgets(buf, sizeof(buf), f));
	fclose(f);
	assert_string_equal(buf, "keep");
	assert_int_equal(vram_statefile_read(path, &b, why, sizeof(why)), 0);
	assert_same(&a, &b);
	vram_statefile_done(&a);
	vram_statefile_done(&b);
	unlink(tmp);

	/* a directory that does not exist: the sentence names the file */
	snprintf(tmp, sizeof(tmp), "%s/nodir/state.json", dir);
	assert_int_equal(vram_statefile_write(tmp, &empty, why, sizeof(why)), -ENOENT);
	snprintf(want, sizeof(want), "cannot create %s.tmp: No such file or directory", tmp);
	assert_string_equal(why, want);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_files, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_values, setup, teardown),
		cmocka_unit_test(test_bounds),
		cmocka_unit_test_setup_teardown(test_write_refuses_link, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
