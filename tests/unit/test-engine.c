/* SPDX-License-Identifier: MIT */
/*
 * Engine tests: `offload: auto` selection and the reason recorded for it;
 * the sim engine moving simulated GPU memory out and back at its rate, with
 * completion always from a later loop turn, and parking at its disk's rate;
 * cancellation; the hook engines' rollback, and their park (no rollback
 * from disk) and restore from disk; and the worker pool that asynchronous
 * engines use for blocking work.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/workers.h"
#include "core/engine.h"
#include "gpu/gpu.h"
#include "proto/hook_proto.h"

#define GiB VRAM_GiB

struct fixture {
	struct event_base *base;
	struct vram_config *cfg;
	struct vram_gpus *gpus;
	struct vram_engine_host host;
	struct vram_workload w;
	struct vram_instance in;
	int done_calls;
	struct vram_job *done_job;
};

static const char cfg_text[] =
	"gpus: { backend: sim, reserve: 0, sim: 2x24GiB }\n"
	"workloads:\n"
	"  w: { cmd: [w], memory: 4GiB }\n"
	"  r: { cmd: [r], memory: 4GiB, offload: restart }\n"
	"  h: { cmd: [h], memory: 4GiB, offload: hook }\n"
	"  c: { cmd: [c], memory: 4GiB, offload: checkpoint }\n"
	"  m: { cmd: [m], memory: 4GiB, share: mps }\n";

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char *err = NULL, note[256];
	if (vram_config_parse(cfg_text, strlen(cfg_text), "engine.yaml", NULL, &f->cfg, &err) < 0)
		fail_msg("%s", err);
	assert_int_equal(vram_gpu_open(f->cfg, &f->gpus, note, sizeof(note)), 0);
	f->base = event_base_new();
	f->host = (struct vram_engine_host){.base = f->base, .gpus = f->gpus};
	f->w.cfg = &f->cfg->workloads[0];
	f->w.instances = &f->in;
	f->w.n_instances = 1;
	f->in.owner = &f->w;
	f->in.pid = 4242;
	f->in.n_gpus = 1;
	f->in.gpus[0] = 1;
	f->in.bytes_per_gpu = 4 * GiB;
	f->in.resident = true;
	assert_int_equal(vram_gpu_sim_charge(f->gpus, 1, 4242, 4 * GiB), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	vram_gpu_close(f->gpus);
	vram_config_free(f->cfg);
	event_base_free(f->base);
	free(f);
	return 0;
}

static uint64_t used(struct fixture *f, unsigned i)
{
	struct vram_gpu_info info;
	assert_int_equal(vram_gpu_query(f->gpus, i, &info), 0);
	return info.mem_used;
}

static void test_select(void **state)
{
	struct fixture *f = *state;
	char why[160];
	/* auto on simulated GPUs: sim */
	assert_ptr_equal(vram_engine_select(&f->w, &f->host, why, sizeof(why)), &vram_engine_sim);
	assert_string_equal(why, "auto: simulated GPUs");
	/* asked for restart: restart, even on sim */
	struct vram_workload r = f->w;
	r.cfg = &f->cfg->workloads[1];
	assert_ptr_equal(vram_engine_select(&r, &f->host, why, sizeof(why)), &vram_engine_restart);
	assert_non_null(strstr(why, "configured"));
	/* asked for hook, which this build lacks: sim stands in on simulated GPUs */
	struct vram_workload h = f->w;
	h.cfg = &f->cfg->workloads[2];
	const struct vram_engine *e = vram_engine_select(&h, &f->host, why, sizeof(why));
	if (vram_engine_find(VRAM_ENGINE_HOOK) == NULL) {
		assert_ptr_equal(e, &vram_engine_sim);
		assert_non_null(strstr(why, "hook"));
	}
	/* no simulated GPUs: auto falls through to restart and says why */
	struct vram_engine_host real = f->host;
	real.gpus = NULL;
	e = vram_engine_select(&f->w, &real, why, sizeof(why));
	if (vram_engine_find(VRAM_ENGINE_HOOK) == NULL &&
	    vram_engine_find(VRAM_ENGINE_CHECKPOINT) == NULL) {
		assert_ptr_equal(e, &vram_engine_restart);
		assert_non_null(strstr(why, "auto: restart"));
		assert_non_null(strstr(why, "hook"));
		assert_non_null(strstr(why, "checkpoint"));
	}
	assert_ptr_equal(vram_engine_find(VRAM_ENGINE_RESTART), &vram_engine_restart);
	bool listed = false;
	for (size_t i = 0; vram_engines[i]; i++)
		listed |= vram_engines[i] == &vram_engine_sim;
	assert_true(listed);
}

static void on_done(struct vram_job *job, void *arg)
{
	struct fixture *f = arg;
	f->done_calls++;
	f->done_job = job;
}

static void run_until_done(struct fixture *f, int calls)
{
	for (int i = 0; i < 1000 && f->done_calls < calls; i++)
		event_base_loop(f->base, EVLOOP_ONCE);
	assert_int_equal(f->done_calls, calls);
}

static void test_sim_offload_restore(void **state)
{
	struct fixture *f = *state;
	vram_engine_sim_set_rate(16 * GiB, 8 * GiB); /* 0.25 s out, 0.5 s in */
	assert_int_equal(used(f, 1), 4 * GiB);

	struct vram_job *job = vram_job_new(VRAM_JOB_OFFLOAD, &vram_engine_sim, &f->w, &f->host,
					    on_done, f);
	assert_non_null(job);
	assert_int_equal(vram_job_start(job), 0);
	assert_int_equal(f->done_calls, 0);
	assert_int_equal(used(f, 1), 4 * GiB); /* freed when the copy is done */
	run_until_done(f, 1);
	assert_ptr_equal(f->done_job, job);
	assert_int_equal(job->error, 0);
	assert_int_equal(job->bytes, 4 * GiB);
	assert_true(job->seconds >= 0.2 && job->seconds < 1.0);
	assert_int_equal(used(f, 1), 0);
	assert_false(f->in.resident);
	vram_job_free(job);

	/* restore onto another GPU: the planner moved it to GPU 0 */
	f->in.gpus[0] = 0;
	job = vram_job_new(VRAM_JOB_RESTORE, &vram_engine_sim, &f->w, &f->host, on_done, f);
	assert_int_equal(vram_job_start(job), 0);
	assert_int_equal(used(f, 0), 4 * GiB); /* claimed when the copy begins */
	run_until_done(f, 2);
	assert_int_equal(job->bytes, 4 * GiB);
	assert_true(job->seconds >= 0.45);
	assert_true(f->in.resident);
	assert_int_equal(used(f, 1), 0);
	vram_job_free(job);
}

/*
 * Park at the simulated disk's rate, a restore from parked at that rate
 * too, and a restore from parked made to fail: the process is lost.
 */
static void test_sim_park(void **state)
{
	struct fixture *f = *state;
	vram_engine_sim_set_rate(64 * GiB, 64 * GiB);
	vram_engine_sim_set_disk(8 * GiB, false); /* 4 GiB: half a second */
	struct vram_job *job = vram_job_new(VRAM_JOB_OFFLOAD, &vram_engine_sim, &f->w, &f->host,
					    on_done, f);
	assert_int_equal(vram_job_start(job), 0);
	run_until_done(f, 1);
	vram_job_free(job);

	job = vram_job_new(VRAM_JOB_PARK, &vram_engine_sim, &f->w, &f->host, on_done, f);
	assert_int_equal(vram_job_start(job), 0);
	run_until_done(f, 2);
	assert_int_equal(job->error, 0);
	assert_int_equal(job->bytes, 4 * GiB);
	assert_true(job->seconds >= 0.45);
	assert_string_equal(job->message, "parked 4294967296 bytes to disk (simulated)");
	assert_int_equal(used(f, 1), 0);
	vram_job_free(job);

	job = vram_job_new(VRAM_JOB_RESTORE, &vram_engine_sim, &f->w, &f->host, on_done, f);
	job->from_disk = true;
	assert_int_equal(vram_job_start(job), 0);
	run_until_done(f, 3);
	assert_int_equal(job->error, 0);
	assert_true(job->seconds >= 0.45); /* the disk's rate, not the link's */
	assert_string_equal(job->message, "restored 4294967296 bytes from disk (simulated)");
	assert_int_equal(used(f, 1), 4 * GiB);
	vram_job_free(job);

	/* a bad park file: the restore fails and the process cannot be trusted */
	vram_engine_sim_set_disk(0, true);
	job = vram_job_new(VRAM_JOB_RESTORE, &vram_engine_sim, &f->w, &f->host, on_done, f);
	job->from_disk = true;
	assert_int_equal(vram_job_start(job), 0);
	run_until_done(f, 4);
	assert_int_equal(job->error, -EBADMSG);
	assert_true(job->process_lost);
	assert_non_null(strstr(job->message, "checksum mismatch in the park file"));
	vram_job_free(job);
	vram_engine_sim_set_disk(2000000000, false);
	vram_engine_sim_set_rate(UINT64_C(50000000000), UINT64_C(50000000000));
	/* an engine without park: the job cannot begin */
	job = vram_job_new(VRAM_JOB_PARK, &vram_engine_restart, &f->w, &f->host, on_done, f);
	assert_int_equal(vram_job_start(job), -EOPNOTSUPP);
	vram_job_free(job);
}

static void test_cancel(void **state)
{
	struct fixture *f = *state;
	vram_engine_sim_set_rate(GiB, GiB); /* 4 s: cancelled long before */
	struct vram_job *job = vram_job_new(VRAM_JOB_OFFLOAD, &vram_engine_sim, &f->w, &f->host,
					    on_done, f);
	assert_int_equal(vram_job_start(job), 0);
	vram_job_cancel(job);
	event_base_loop(f->base, EVLOOP_NONBLOCK);
	assert_int_equal(f->done_calls, 0);
	assert_int_equal(used(f, 1), 4 * GiB);
}

static void test_complete_once_and_deferred(void **state)
{
	struct fixture *f = *state;
	struct vram_job *job = vram_job_new(VRAM_JOB_OFFLOAD, &vram_engine_restart, &f->w, &f->host,
					    on_done, f);
	vram_job_complete(job, -EIO, 0, "broke: %d", 7);
	vram_job_complete(job, 0, 99, "ignored");
	assert_int_equal(f->done_calls, 0);
	run_until_done(f, 1);
	assert_int_equal(job->error, -EIO);
	assert_string_equal(job->message, "broke: 7");
	/* restart without a host to stop processes cannot begin */
	assert_int_equal(vram_engine_restart.offload(&f->w, job), -EOPNOTSUPP);
	vram_job_free(job);
}

struct work_item {
	pthread_t thread;
	bool ran;
	bool done_on_loop;
	pthread_t loop_thread;
};

static void work_fn(void *arg)
{
	struct work_item *it = arg;
	it->thread = pthread_self();
	usleep(10000);
	it->ran = true;
}

static void work_done(void *arg)
{
	struct work_item *it = arg;
	it->done_on_loop = pthread_equal(pthread_self(), it->loop_thread) && it->ran;
}

static void test_workers(void **state)
{
	struct fixture *f = *state;
	struct vram_workers *w;
	assert_int_equal(vram_workers_new(f->base, 2, &w), 0);
	struct work_item items[5];
	memset(items, 0, sizeof(items));
	for (int i = 0; i < 5; i++) {
		items[i].loop_thread = pthread_self();
		assert_int_equal(vram_workers_submit(w, work_fn, work_done, &items[i]), 0);
	}
	for (int n = 0; n < 500; n++) {
		bool all = true;
		for (int i = 0; i < 5; i++)
			all &= items[i].done_on_loop;
		if (all)
			break;
		event_base_loop(f->base, EVLOOP_ONCE);
	}
	for (int i = 0; i < 5; i++) {
		assert_true(items[i].done_on_loop);
		assert_false(pthread_equal(items[i].thread, pthread_self()));
	}
	vram_workers_free(w);
	vram_workers_free(NULL);
}

/*
 * The hook engines through a channel of the test's own, lent the way the
 * daemon lends its hook channel (struct vram_engine_host).
 */
struct fake_cmd {
	pid_t pid;
	enum vram_hookchan_op op;
	unsigned flags;
	vram_hookchan_done_cb cb;
	void *arg;
	bool live; /* sent, neither answered nor cancelled */
};

struct fake_chan {
	pid_t pids[2];
	struct fake_cmd sent[8];
	size_t n_sent;
	char paths[8][64]; /* of sent[i], for PARK */
};

static size_t fake_pids(struct vram_hookchan *hc, const char *workload, pid_t *pids, size_t max)
{
	struct fake_chan *fc = (struct fake_chan *)(void *)hc;
	for (size_t i = 0; i < 2 && i < max; i++)
		pids[i] = fc->pids[i];
	return strcmp(workload, "h") == 0 ? 2 : 0;
}

static int fake_send(struct vram_hookchan *hc, pid_t pid, enum vram_hookchan_op op, unsigned flags,
		     vram_hookchan_done_cb cb, void *arg, struct vram_hookchan_req **ret_req)
{
	struct fake_chan *fc = (struct fake_chan *)(void *)hc;
	assert_true(fc->n_sent < 8);
	struct fake_cmd *c = &fc->sent[fc->n_sent++];
	*c = (struct fake_cmd){.pid = pid, .op = op, .flags = flags, .cb = cb, .arg = arg, .live = true};
	if (ret_req)
		*ret_req = (struct vram_hookchan_req *)(void *)c;
	return 0;
}

static int fake_send_path(struct vram_hookchan *hc, pid_t pid, enum vram_hookchan_op op,
			  unsigned flags, const char *path, vram_hookchan_done_cb cb, void *arg,
			  struct vram_hookchan_req **ret_req)
{
	struct fake_chan *fc = (struct fake_chan *)(void *)hc;
	snprintf(fc->paths[fc->n_sent], sizeof(fc->paths[0]), "%s", path ? path : "");
	return fake_send(hc, pid, op, flags, cb, arg, ret_req);
}

static int fake_park_path(void *ctx, const struct vram_workload *w, pid_t pid, char *buf, size_t size)
{
	snprintf(buf, size, "/park/%s-%d.park", w->cfg->name, (int)pid);
	return 0;
}

static void fake_cancel(struct vram_hookchan_req *req)
{
	if (req)
		((struct fake_cmd *)(void *)req)->live = false;
}

/* Answers the i-th command sent. */
static void fake_answer(struct fake_chan *fc, size_t i, int status, unsigned state, uint64_t bytes,
			const char *text)
{
	struct fake_cmd *c = &fc->sent[i];
	assert_true(c->live);
	c->live = false;
	struct vram_hookchan_result res = {.pid = c->pid, .status = status, .state = state, .bytes = bytes};
	snprintf(res.text, sizeof(res.text), "%s", text);
	c->cb(&res, c->arg);
}

/*
 * A restore that fails in one process of two: the other is offloaded
 * again, so the workload is never half parked, and the job says whether
 * the failed process is still offloaded (the hook's own state), which
 * decides whether the workload stays offloaded or must be restarted.
 */
static void test_hook_restore_rolls_back(void **state)
{
	struct fixture *f = *state;
	const unsigned after[] = {VRAM_HOOK_STATE_OFFLOADED, VRAM_HOOK_STATE_RUNNING};
	for (size_t k = 0; k < 2; k++) {
		struct fake_chan fc = {.pids = {101, 102}};
		struct vram_engine_host host = f->host;
		host.hookchan = (struct vram_hookchan *)(void *)&fc;
		host.hook_pids = fake_pids;
		host.hook_send = fake_send;
		host.hook_cancel = fake_cancel;
		struct vram_workload w = f->w;
		w.cfg = &f->cfg->workloads[2];
		char why[160];
		assert_true(vram_engine_hook.supports(&w, &host, why, sizeof(why)));

		f->done_calls = 0;
		struct vram_job *job = vram_job_new(VRAM_JOB_RESTORE, &vram_engine_hook, &w, &host,
						    on_done, f);
		assert_int_equal(vram_job_start(job), 0);
		assert_int_equal(fc.n_sent, 2);
		assert_int_equal(fc.sent[0].op, VRAM_HOOKCHAN_RESTORE);
		assert_int_equal(fc.sent[1].op, VRAM_HOOKCHAN_RESTORE);
		fake_answer(&fc, 0, 0, VRAM_HOOK_STATE_RUNNING, GiB, "1 GiB restored");
		fake_answer(&fc, 1, -ENOMEM, after[k], 0, "out of memory on device 0");
		/* the process that came back goes out again */
		assert_int_equal(fc.n_sent, 3);
		assert_int_equal(fc.sent[2].pid, 101);
		assert_int_equal(fc.sent[2].op, VRAM_HOOKCHAN_OFFLOAD);
		assert_int_equal(f->done_calls, 0);
		fake_answer(&fc, 2, 0, VRAM_HOOK_STATE_OFFLOADED, GiB, "1 GiB offloaded");
		run_until_done(f, 1);
		assert_int_equal(job->error, -ENOMEM);
		assert_false(job->process_lost);
		assert_int_equal(job->still_offloaded, after[k] == VRAM_HOOK_STATE_OFFLOADED);
		assert_non_null(strstr(job->message, "pid 102: out of memory on device 0"));
		vram_job_free(job);
	}

	/* no channel lent: the engine says so instead of calling anything */
	struct vram_workload w = f->w;
	w.cfg = &f->cfg->workloads[2];
	char why[160];
	assert_false(vram_engine_hook.supports(&w, &f->host, why, sizeof(why)));
	assert_string_equal(why, "the hook channel is not open");
}

/* The hook engine over fc, for the workload "h" (two processes). */
static struct vram_engine_host fake_host(struct fixture *f, struct fake_chan *fc)
{
	struct vram_engine_host host = f->host;
	host.hookchan = (struct vram_hookchan *)(void *)fc;
	host.hook_pids = fake_pids;
	host.hook_send = fake_send;
	host.hook_send_path = fake_send_path;
	host.hook_cancel = fake_cancel;
	host.park_path = fake_park_path;
	return host;
}

static bool fake_group(struct vram_hookchan *hc, pid_t pid)
{
	(void)hc;
	return pid != 0;
}

static bool fake_group_not_102(struct vram_hookchan *hc, pid_t pid)
{
	(void)hc;
	return pid != 102;
}

/* Asserts that commands [from, from+2) went to both processes as op with flags. */
static void assert_phase(const struct fake_chan *fc, size_t from, enum vram_hookchan_op op, unsigned flags)
{
	assert_true(fc->n_sent >= from + 2);
	for (size_t i = from; i < from + 2; i++) {
		assert_int_equal(fc->sent[i].op, op);
		assert_int_equal(fc->sent[i].flags, flags);
	}
	assert_int_not_equal(fc->sent[from].pid, fc->sent[from + 1].pid);
}

/*
 * A group (two processes whose hooks take part): the offload closes both
 * gates before either copies, and the restore opens both gates only after
 * both restored. A gate that does not close opens the other and moves
 * nothing; a restore that fails in one rank sends the other (restored, its
 * gate held) out again, and no gate opens. A process whose hook does not
 * know groups makes it the one-phase way.
 */
/* Starts a job of kind on the workload "h" over a fresh fc. */
static struct vram_job *group_job(struct fixture *f, struct fake_chan *fc, struct vram_workload *w,
				  struct vram_engine_host *host, enum vram_job_kind kind)
{
	*fc = (struct fake_chan){.pids = {101, 102}};
	f->done_calls = 0;
	struct vram_job *job = vram_job_new(kind, &vram_engine_hook, w, host, on_done, f);
	assert_int_equal(vram_job_start(job), 0);
	return job;
}

static void test_hook_group(void **state)
{
	struct fixture *f = *state;
	struct vram_workload w = f->w;
	w.cfg = &f->cfg->workloads[2];

	/* offload: gate, gate, then copy, copy */
	struct fake_chan fc;
	struct vram_engine_host host = fake_host(f, &fc);
	host.hook_group = fake_group;
	struct vram_job *job = group_job(f, &fc, &w, &host, VRAM_JOB_OFFLOAD);
	assert_int_equal(fc.n_sent, 2);
	assert_phase(&fc, 0, VRAM_HOOKCHAN_OFFLOAD, VRAM_HOOK_OFFLOAD_GATE_ONLY);
	fake_answer(&fc, 0, 0, VRAM_HOOK_STATE_OFFLOADING, 0, "gate closed");
	assert_int_equal(fc.n_sent, 2); /* no copy while a gate is still open */
	fake_answer(&fc, 1, 0, VRAM_HOOK_STATE_OFFLOADING, 0, "gate closed");
	assert_phase(&fc, 2, VRAM_HOOKCHAN_OFFLOAD, 0);
	fake_answer(&fc, 2, 0, VRAM_HOOK_STATE_OFFLOADED, GiB, "1 GiB offloaded");
	fake_answer(&fc, 3, 0, VRAM_HOOK_STATE_OFFLOADED, 2 * GiB, "2 GiB offloaded");
	run_until_done(f, 1);
	assert_int_equal(job->error, 0);
	assert_int_equal(job->bytes, 3 * GiB);
	vram_job_free(job);

	/* restore: both with the gate held, then both gates open */
	job = group_job(f, &fc, &w, &host, VRAM_JOB_RESTORE);
	assert_phase(&fc, 0, VRAM_HOOKCHAN_RESTORE, VRAM_HOOK_RESTORE_HOLD_GATE);
	fake_answer(&fc, 0, 0, VRAM_HOOK_STATE_RESTORING, GiB, "1 GiB restored");
	assert_int_equal(fc.n_sent, 2); /* no gate opens while a rank is still offloaded */
	fake_answer(&fc, 1, 0, VRAM_HOOK_STATE_RESTORING, 2 * GiB, "2 GiB restored");
	assert_phase(&fc, 2, VRAM_HOOKCHAN_RESTORE, 0);
	assert_int_equal(f->done_calls, 0);
	fake_answer(&fc, 2, 0, VRAM_HOOK_STATE_RUNNING, 0, "gate opened");
	fake_answer(&fc, 3, 0, VRAM_HOOK_STATE_RUNNING, 0, "gate opened");
	run_until_done(f, 1);
	assert_int_equal(job->error, 0);
	assert_int_equal(job->bytes, 3 * GiB);
	vram_job_free(job);

	/* a gate that does not close: the other opens again, nothing is copied */
	job = group_job(f, &fc, &w, &host, VRAM_JOB_OFFLOAD);
	fake_answer(&fc, 0, 0, VRAM_HOOK_STATE_OFFLOADING, 0, "gate closed");
	fake_answer(&fc, 1, -EBUSY, VRAM_HOOK_STATE_RUNNING, 0, "CUDA calls of the program did not finish");
	assert_int_equal(fc.n_sent, 3);
	assert_int_equal(fc.sent[2].pid, 101);
	assert_int_equal(fc.sent[2].op, VRAM_HOOKCHAN_RESTORE);
	assert_int_equal(fc.sent[2].flags, 0);
	fake_answer(&fc, 2, 0, VRAM_HOOK_STATE_RUNNING, 0, "gate opened");
	run_until_done(f, 1);
	assert_int_equal(job->error, -EBUSY);
	assert_non_null(strstr(job->message, "pid 102 (closing its gate): CUDA calls"));
	vram_job_free(job);

	/* a restore that fails in one rank: the other goes out again, no gate opens */
	job = group_job(f, &fc, &w, &host, VRAM_JOB_RESTORE);
	fake_answer(&fc, 0, 0, VRAM_HOOK_STATE_RESTORING, GiB, "1 GiB restored");
	fake_answer(&fc, 1, -ENOMEM, VRAM_HOOK_STATE_OFFLOADED, 0, "out of memory on device 1");
	assert_int_equal(fc.n_sent, 3);
	assert_int_equal(fc.sent[2].pid, 101);
	assert_int_equal(fc.sent[2].op, VRAM_HOOKCHAN_OFFLOAD);
	fake_answer(&fc, 2, 0, VRAM_HOOK_STATE_OFFLOADED, GiB, "1 GiB offloaded");
	run_until_done(f, 1);
	assert_int_equal(job->error, -ENOMEM);
	assert_true(job->still_offloaded);
	for (size_t i = 0; i < fc.n_sent; i++)
		assert_false(fc.sent[i].op == VRAM_HOOKCHAN_RESTORE && fc.sent[i].flags == 0);
	vram_job_free(job);

	/* one hook without groups: one phase, as before */
	host.hook_group = fake_group_not_102;
	job = group_job(f, &fc, &w, &host, VRAM_JOB_OFFLOAD);
	assert_phase(&fc, 0, VRAM_HOOKCHAN_OFFLOAD, 0);
	fake_answer(&fc, 0, 0, VRAM_HOOK_STATE_OFFLOADED, GiB, "1 GiB offloaded");
	fake_answer(&fc, 1, 0, VRAM_HOOK_STATE_OFFLOADED, GiB, "1 GiB offloaded");
	run_until_done(f, 1);
	assert_int_equal(job->error, 0);
	vram_job_free(job);
}

/*
 * Park sends PARK with each process's own file; one that fails leaves the
 * others on disk (there is no way back to RAM but a restore) and the job
 * counts what reached disk. A restore from disk that fails in one process
 * of two is not rolled back: the workload is lost. One that fails for lack
 * of memory in every process, which are still parked, leaves it parked.
 */
static void test_hook_park(void **state)
{
	struct fixture *f = *state;
	const unsigned parked = 5; /* VRAM_HOOK_STATE_PARKED, protocol version 3 */
	struct vram_workload w = f->w;
	w.cfg = &f->cfg->workloads[2];

	/* both park */
	struct fake_chan fc = {.pids = {101, 102}};
	struct vram_engine_host host = fake_host(f, &fc);
	f->done_calls = 0;
	struct vram_job *job = vram_job_new(VRAM_JOB_PARK, &vram_engine_hook, &w, &host, on_done, f);
	assert_int_equal(vram_job_start(job), 0);
	assert_int_equal(fc.n_sent, 2);
	assert_int_equal(fc.sent[0].op, VRAM_HOOKCHAN_PARK);
	assert_string_equal(fc.paths[0], "/park/h-101.park");
	assert_string_equal(fc.paths[1], "/park/h-102.park");
	fake_answer(&fc, 0, 0, parked, GiB, "parked");
	fake_answer(&fc, 1, 0, parked, GiB, "parked");
	run_until_done(f, 1);
	assert_int_equal(job->error, 0);
	assert_int_equal(job->bytes, 2 * GiB);
	assert_string_equal(job->message, "2GiB parked to disk from 2 processes");
	vram_job_free(job);

	/* one fails (a full disk): nothing is sent back, what parked is counted */
	fc = (struct fake_chan){.pids = {101, 102}};
	job = vram_job_new(VRAM_JOB_PARK, &vram_engine_hook, &w, &host, on_done, f);
	assert_int_equal(vram_job_start(job), 0);
	fake_answer(&fc, 0, 0, parked, GiB, "parked");
	fake_answer(&fc, 1, -ENOSPC, VRAM_HOOK_STATE_OFFLOADED, 0, "No space left on device");
	run_until_done(f, 2);
	assert_int_equal(fc.n_sent, 2);
	assert_int_equal(job->error, -ENOSPC);
	assert_false(job->process_lost);
	assert_int_equal(job->bytes, GiB);
	assert_string_equal(job->message, "pid 102: No space left on device; 1GiB parked by the other "
					  "processes stay on disk until the restore");
	vram_job_free(job);

	/* restore from disk: one back, one with a bad file: lost, no rollback */
	fc = (struct fake_chan){.pids = {101, 102}};
	job = vram_job_new(VRAM_JOB_RESTORE, &vram_engine_hook, &w, &host, on_done, f);
	job->from_disk = true;
	assert_int_equal(vram_job_start(job), 0);
	assert_int_equal(fc.sent[0].op, VRAM_HOOKCHAN_RESTORE);
	fake_answer(&fc, 0, 0, VRAM_HOOK_STATE_RUNNING, GiB, "restored");
	fake_answer(&fc, 1, -EBADMSG, parked, 0, "checksum mismatch in piece 3");
	run_until_done(f, 3);
	assert_int_equal(fc.n_sent, 2);
	assert_true(job->process_lost);
	assert_non_null(strstr(job->message, "pid 102: checksum mismatch in piece 3"));
	vram_job_free(job);

	/* every process short of GPU memory and still parked: it stays parked */
	const int status[] = {-ENOMEM, -EBADMSG};
	for (size_t k = 0; k < 2; k++) {
		fc = (struct fake_chan){.pids = {101, 102}};
		job = vram_job_new(VRAM_JOB_RESTORE, &vram_engine_hook, &w, &host, on_done, f);
		job->from_disk = true;
		assert_int_equal(vram_job_start(job), 0);
		fake_answer(&fc, 0, status[k], parked, 0, "no");
		fake_answer(&fc, 1, -ENOMEM, parked, 0, "out of memory on device 0");
		run_until_done(f, 4 + (int)k);
		assert_false(job->process_lost);
		/* a bad file is never "intact": the workload starts cold */
		assert_int_equal(job->still_offloaded, status[k] == -ENOMEM);
		vram_job_free(job);
	}

	/* a channel that cannot send a path: every process says why */
	fc = (struct fake_chan){.pids = {101, 102}};
	host.hook_send_path = NULL;
	job = vram_job_new(VRAM_JOB_PARK, &vram_engine_hook, &w, &host, on_done, f);
	assert_int_equal(vram_job_start(job), 0);
	run_until_done(f, 6);
	assert_int_equal(job->error, -EOPNOTSUPP);
	assert_non_null(strstr(job->message, "pid 101: this vramd's hook channel cannot send PARK"));
	vram_job_free(job);
	/* hook+checkpoint cannot park */
	assert_null(vram_engine_hook_checkpoint.park);
}

/*
 * Real GPUs without a driver that has the checkpoint API (VRAM_LIBCUDA points
 * nowhere, see main): auto and `offload: checkpoint` fall back to restart and
 * say why; share: mps is refused by checkpoint for its own reason.
 */
static void test_select_without_checkpoint_driver(void **state)
{
	struct fixture *f = *state;
	char why[160];
	struct vram_workers *workers;
	assert_int_equal(vram_workers_new(f->base, 1, &workers), 0);
	struct vram_engine_host real = {.base = f->base, .gpus = NULL, .workers = workers};

	assert_ptr_equal(vram_engine_find(VRAM_ENGINE_CHECKPOINT), &vram_engine_checkpoint);
	const struct vram_engine *e = vram_engine_select(&f->w, &real, why, sizeof(why));
	assert_ptr_equal(e, &vram_engine_restart);
	assert_non_null(strstr(why, "auto: restart"));
	assert_non_null(strstr(why, "checkpoint: "));
	assert_non_null(strstr(why, "no-such-dir")); /* the loader's reason names the library */

	struct vram_workload c = f->w;
	c.cfg = &f->cfg->workloads[3];
	e = vram_engine_select(&c, &real, why, sizeof(why));
	assert_ptr_equal(e, &vram_engine_restart);
	assert_non_null(strstr(why, "restart (configured checkpoint: "));

	struct vram_workload m = f->w;
	m.cfg = &f->cfg->workloads[4];
	e = vram_engine_select(&m, &real, why, sizeof(why));
	assert_ptr_equal(e, &vram_engine_restart);
	assert_non_null(strstr(why, "MPS clients cannot be checkpointed"));

	/* on simulated GPUs, sim stands in for checkpoint */
	e = vram_engine_select(&c, &f->host, why, sizeof(why));
	assert_ptr_equal(e, &vram_engine_sim);
	assert_non_null(strstr(why, "checkpoint"));
	assert_true(vram_engine_checkpoint.keeps_process && vram_engine_checkpoint.can_move);
	assert_false(vram_engine_restart.keeps_process);
	vram_workers_free(workers);
}

int main(void)
{
	/* before the checkpoint engine first looks for the driver */
	setenv("VRAM_LIBCUDA", "/no-such-dir/libcuda.so.1", 1);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_select, setup, teardown),
		cmocka_unit_test_setup_teardown(test_select_without_checkpoint_driver, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sim_offload_restore, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_complete_once_and_deferred, setup, teardown),
		cmocka_unit_test_setup_teardown(test_workers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hook_restore_rolls_back, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sim_park, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hook_park, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hook_group, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
