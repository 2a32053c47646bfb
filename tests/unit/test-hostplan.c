/* SPDX-License-Identifier: MIT */
/*
 * The host ledger: the budget (10 % of MemTotal kept back, at least 4 GiB;
 * a limit caps it, the smaller wins), the order in which room is made (kept
 * buffers least recently used first, then parking, then releasing, lower
 * priority first and never a higher one), the refusal's numbers, and a
 * randomized run of 8 workloads over 1,000 steps that applies every plan to
 * a model of the host and checks after each step that the budget and the
 * reserve hold, and that a refusal comes only when nothing could free enough.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/hostplan.h"

#define GiB VRAM_GiB

/* ---- hand-built ledgers ---- */

#define N_WL 8

struct fixture {
	struct vram_workload_config cfg[N_WL];
	struct vram_workload w[N_WL];
	struct vram_host_entry e[N_WL];
	struct vram_host_ledger l;
};

static const char *const names[N_WL] = { "chat", "embed", "tts", "rerank", "vision", "code",
					  "asr", "ocr" };

/* n workloads, all ready with nothing held; a 64 GiB host with room to spare. */
static void fx_init(struct fixture *f, size_t n)
{
	memset(f, 0, sizeof(*f));
	for (size_t i = 0; i < n; i++) {
		f->cfg[i].name = (char *)names[i];
		f->w[i].cfg = &f->cfg[i];
		f->e[i] = (struct vram_host_entry){ .w = &f->w[i], .name = names[i],
						    .state = VRAM_WL_READY, .last_used_ms = 1000 + i,
						    .can_park = true, .can_drop_kept = true };
	}
	f->l = (struct vram_host_ledger){ .total = 64 * GiB, .available = VRAM_HOST_UNKNOWN,
					  .reserve = 0, .budget = 56 * GiB, .park_usable = true,
					  .park_free = VRAM_HOST_UNKNOWN, .entries = f->e,
					  .n_entries = n };
}

static void offloaded(struct fixture *f, size_t i, uint64_t bytes, int priority, uint64_t used)
{
	f->e[i].state = VRAM_WL_OFFLOADED;
	f->e[i].held = bytes;
	f->e[i].kept = 0;
	f->e[i].priority = priority;
	f->cfg[i].priority = priority;
	f->e[i].last_used_ms = used;
}

static void kept(struct fixture *f, size_t i, uint64_t bytes, uint64_t used)
{
	f->e[i].state = VRAM_WL_READY;
	f->e[i].held = bytes;
	f->e[i].kept = bytes;
	f->e[i].last_used_ms = used;
}

static void assert_step(const struct vram_host_room *r, size_t k, const struct fixture *f,
			size_t who, enum vram_host_action action, uint64_t bytes)
{
	assert_true(k < r->n_steps);
	if (r->steps[k].w != &f->w[who] || r->steps[k].action != action || r->steps[k].bytes != bytes)
		fail_msg("step %zu: %s %s %llu, expected %s %s %llu", k,
			 vram_host_action_name(r->steps[k].action), r->steps[k].name,
			 (unsigned long long)r->steps[k].bytes, vram_host_action_name(action),
			 names[who], (unsigned long long)bytes);
	assert_string_equal(r->steps[k].name, names[who]);
}

static void test_budget(void **state)
{
	(void)state;
	/* 10 % of MemTotal, at least 4 GiB */
	assert_true(vram_host_reserve(64 * GiB, VRAM_CONFIG_HOST_RESERVE_DEFAULT) ==
		    64 * GiB / 10 + (64 * GiB % 10) * 10 / 100);
	assert_true(vram_host_reserve(16 * GiB, VRAM_CONFIG_HOST_RESERVE_DEFAULT) == 4 * GiB);
	assert_true(vram_host_reserve(0, VRAM_CONFIG_HOST_RESERVE_DEFAULT) == 4 * GiB);
	assert_true(vram_host_reserve(1000 * GiB, VRAM_CONFIG_HOST_RESERVE_DEFAULT) == 100 * GiB);
	/* a given reserve is itself, 0 included */
	assert_true(vram_host_reserve(64 * GiB, 8 * GiB) == 8 * GiB);
	assert_true(vram_host_reserve(64 * GiB, 0) == 0);
	/* the smaller budget wins */
	assert_true(vram_host_budget(64 * GiB, 8 * GiB, 0) == 56 * GiB);
	assert_true(vram_host_budget(64 * GiB, 8 * GiB, 40 * GiB) == 40 * GiB);
	assert_true(vram_host_budget(64 * GiB, 8 * GiB, 200 * GiB) == 56 * GiB);
	/* a reserve of all of it leaves nothing */
	assert_true(vram_host_budget(4 * GiB, 4 * GiB, 0) == 0);
	assert_true(vram_host_budget(2 * GiB, 4 * GiB, 1 * GiB) == 0);
	/* MemTotal not known: the limit, or no cap */
	assert_true(vram_host_budget(0, 4 * GiB, 10 * GiB) == 10 * GiB);
	assert_true(vram_host_budget(0, 4 * GiB, 0) == VRAM_HOST_UNKNOWN);
}

static void test_fits_as_it_is(void **state)
{
	(void)state;
	struct fixture f;
	struct vram_host_room r;
	fx_init(&f, 3);
	offloaded(&f, 1, 20 * GiB, 0, 5);
	assert_int_equal(vram_host_make_room(&f.l, &f.w[0], 36 * GiB, &r), 0);
	assert_int_equal(r.n_steps, 0);
	assert_true(r.shortfall == 0 && r.held == 20 * GiB && r.need == 36 * GiB);
	assert_string_equal(r.message, "");
	/* one byte more needs room: the offloaded embed goes to disk */
	assert_int_equal(vram_host_make_room(&f.l, &f.w[0], 36 * GiB + 1, &r), 0);
	assert_true(r.shortfall == 1);
	assert_int_equal(r.n_steps, 1);
	assert_step(&r, 0, &f, 1, VRAM_HOST_PARK, 20 * GiB);
	assert_string_equal(r.message, "room for 36.0GiB of host memory for chat's offload: park embed (20GiB)");
	/* no ledger or no one asking */
	assert_int_equal(vram_host_make_room(NULL, &f.w[0], 1, &r), -EINVAL);
	assert_int_equal(r.error, -EINVAL);
	assert_int_equal(vram_host_make_room(&f.l, NULL, 1, &r), -EINVAL);
}

/* Kept buffers go first, least recently used first; then parking, then releasing. */
static void test_order_of_steps(void **state)
{
	(void)state;
	struct fixture f;
	struct vram_host_room r;
	fx_init(&f, 6);
	kept(&f, 1, 2 * GiB, 300);          /* embed: ready, kept, used later */
	kept(&f, 2, 3 * GiB, 100);          /* tts: ready, kept, least recently used */
	offloaded(&f, 3, 20 * GiB, 0, 50);  /* rerank: offloaded long ago */
	offloaded(&f, 4, 24 * GiB, 0, 60);  /* vision */
	f.e[4].can_park = false;            /* its engine cannot park */
	offloaded(&f, 5, 4 * GiB, 0, 900);  /* code: offloaded, recently used */
	/* held 53 GiB of 56: 3 GiB free */
	assert_true(vram_host_held(&f.l) == 53 * GiB);

	/* 5 GiB: both kept buffers, the older first */
	assert_int_equal(vram_host_make_room(&f.l, &f.w[0], 8 * GiB, &r), 0);
	assert_int_equal(r.n_steps, 2);
	assert_step(&r, 0, &f, 2, VRAM_HOST_DROP_KEPT, 3 * GiB);
	assert_step(&r, 1, &f, 1, VRAM_HOST_DROP_KEPT, 2 * GiB);
	assert_true(r.freed == 5 * GiB && r.shortfall == 5 * GiB);

	/* 3 GiB short of 6: tts's kept buffers are enough; embed's stay */
	assert_int_equal(vram_host_make_room(&f.l, &f.w[0], 6 * GiB, &r), 0);
	assert_int_equal(r.n_steps, 1);
	assert_step(&r, 0, &f, 2, VRAM_HOST_DROP_KEPT, 3 * GiB);

	/*
	 * 10 GiB short: the kept buffers (5) are not enough; rerank, the least
	 * recently used that can park, is parked; once it is, the kept buffers
	 * are not needed any more and stay.
	 */
	assert_int_equal(vram_host_make_room(&f.l, &f.w[0], 13 * GiB, &r), 0);
	assert_int_equal(r.n_steps, 1);
	assert_step(&r, 0, &f, 3, VRAM_HOST_PARK, 20 * GiB);

	/* 40 GiB short: everything that can park is parked, vision is released */
	assert_int_equal(vram_host_make_room(&f.l, &f.w[0], 43 * GiB, &r), 0);
	assert_true(r.freed >= 40 * GiB);
	bool released_vision = false;
	for (size_t k = 0; k < r.n_steps; k++) {
		if (r.steps[k].w == &f.w[4]) {
			assert_int_equal(r.steps[k].action, VRAM_HOST_RELEASE);
			released_vision = true;
		} else if (r.steps[k].action != VRAM_HOST_DROP_KEPT) {
			assert_int_equal(r.steps[k].action, VRAM_HOST_PARK);
		}
	}
	assert_true(released_vision);

	/* no disk tier: the offloaded ones are released, in the same order */
	f.l.park_usable = false;
	assert_int_equal(vram_host_make_room(&f.l, &f.w[0], 13 * GiB, &r), 0);
	assert_int_equal(r.n_steps, 1);
	assert_step(&r, 0, &f, 3, VRAM_HOST_RELEASE, 20 * GiB);
}

/* A disk tier with room for some: what does not fit is released, what does is parked. */
static void test_disk_tier_full(void **state)
{
	(void)state;
	struct fixture f;
	struct vram_host_room r;
	fx_init(&f, 3);
	offloaded(&f, 1, 30 * GiB, 0, 10); /* embed: least recently used, too big for the disk */
	offloaded(&f, 2, 20 * GiB, 0, 20);
	f.l.park_free = 25 * GiB;
	/* held 50 of 56: 20 more needs 14 */
	assert_int_equal(vram_host_make_room(&f.l, &f.w[0], 20 * GiB, &r), 0);
	assert_int_equal(r.n_steps, 1);
	assert_step(&r, 0, &f, 2, VRAM_HOST_PARK, 20 * GiB);
	/* 50 more needs 44: tts parks, embed (no room on disk left) is released */
	assert_int_equal(vram_host_make_room(&f.l, &f.w[0], 50 * GiB, &r), 0);
	assert_int_equal(r.n_steps, 2);
	assert_step(&r, 0, &f, 2, VRAM_HOST_PARK, 20 * GiB);
	assert_step(&r, 1, &f, 1, VRAM_HOST_RELEASE, 30 * GiB);
	/* a full disk: released */
	f.l.park_free = 0;
	assert_int_equal(vram_host_make_room(&f.l, &f.w[0], 20 * GiB, &r), 0);
	assert_int_equal(r.n_steps, 1);
	assert_step(&r, 0, &f, 1, VRAM_HOST_RELEASE, 30 * GiB);
	/*
	 * Once a later step makes an earlier one unneeded, a release that was
	 * only a release because the disk was full becomes a park again.
	 */
	f.l.park_free = 30 * GiB;
	f.e[1].last_used_ms = 30; /* tts (20) first now, then embed (30) */
	/* 36 short: tts parks (10 left on disk), embed is released; tts alone is not enough */
	assert_int_equal(vram_host_make_room(&f.l, &f.w[0], 42 * GiB, &r), 0);
	assert_int_equal(r.n_steps, 2);
	assert_step(&r, 0, &f, 2, VRAM_HOST_PARK, 20 * GiB);
	assert_step(&r, 1, &f, 1, VRAM_HOST_RELEASE, 30 * GiB);
	/* 26 short: embed alone is enough, so tts's park is dropped and embed parks instead */
	assert_int_equal(vram_host_make_room(&f.l, &f.w[0], 32 * GiB, &r), 0);
	assert_int_equal(r.n_steps, 1);
	assert_step(&r, 0, &f, 1, VRAM_HOST_PARK, 30 * GiB);
}

/* Lower priority first, then equal; a higher priority is never touched; nor is a busy one. */
static void test_priority_and_busy(void **state)
{
	(void)state;
	struct fixture f;
	struct vram_host_room r;
	fx_init(&f, 5);
	f.cfg[0].priority = 5;
	f.e[0].priority = 5;
	offloaded(&f, 1, 10 * GiB, 5, 10);  /* embed: equal, least recently used */
	offloaded(&f, 2, 10 * GiB, 1, 500); /* tts: lower, used recently: goes first */
	offloaded(&f, 3, 20 * GiB, 9, 1);   /* rerank: higher */
	offloaded(&f, 4, 10 * GiB, 0, 2);   /* vision: lower, but busy */
	f.e[4].busy = true;
	/* held 50: 14 more needs 8 */
	assert_int_equal(vram_host_make_room(&f.l, &f.w[0], 14 * GiB, &r), 0);
	assert_int_equal(r.n_steps, 1);
	assert_step(&r, 0, &f, 2, VRAM_HOST_PARK, 10 * GiB);
	assert_int_equal(vram_host_make_room(&f.l, &f.w[0], 24 * GiB, &r), 0);
	assert_int_equal(r.n_steps, 2);
	assert_step(&r, 0, &f, 2, VRAM_HOST_PARK, 10 * GiB);
	assert_step(&r, 1, &f, 1, VRAM_HOST_PARK, 10 * GiB);
	/* 28 short: rerank (higher) and vision (busy) are out of reach: refused */
	assert_int_equal(vram_host_make_room(&f.l, &f.w[0], 34 * GiB, &r), -ENOSPC);
	assert_int_equal(r.n_steps, 0);
	assert_true(r.freeable == 20 * GiB && r.shortfall == 28 * GiB);
	assert_string_equal(r.message,
			    "needs 34GiB of host memory for chat's offload: budget 56GiB, "
			    "50GiB held by 4 offloaded workloads, 20GiB could be freed; "
			    "not touched: rerank (priority 9, above 5, 20GiB), "
			    "vision (busy, 10GiB)");
	/* the asker is never a step: its own kept buffers, the oldest, stay */
	kept(&f, 0, 5 * GiB, 0);
	assert_int_equal(vram_host_make_room(&f.l, &f.w[0], 5 * GiB, &r), 0);
	assert_int_equal(r.n_steps, 1);
	assert_step(&r, 0, &f, 2, VRAM_HOST_PARK, 10 * GiB);
}

/* The reserve of available memory counts even when the budget has room. */
static void test_available_reserve(void **state)
{
	(void)state;
	struct fixture f;
	struct vram_host_room r;
	fx_init(&f, 3);
	kept(&f, 1, 4 * GiB, 10);
	offloaded(&f, 2, 10 * GiB, 0, 20);
	f.l.park_usable = false;
	/* the workloads' processes took most of the rest: 12 GiB available, 6 of it reserved */
	f.l.available = 12 * GiB;
	f.l.reserve = 6 * GiB;
	/* 6 fits exactly */
	assert_int_equal(vram_host_make_room(&f.l, &f.w[0], 6 * GiB, &r), 0);
	assert_int_equal(r.n_steps, 0);
	/* 8: 2 short, the kept buffers do it */
	assert_int_equal(vram_host_make_room(&f.l, &f.w[0], 8 * GiB, &r), 0);
	assert_int_equal(r.n_steps, 1);
	assert_step(&r, 0, &f, 1, VRAM_HOST_DROP_KEPT, 4 * GiB);
	/* 21: 15 short, 14 could be freed: refused, with the available numbers */
	assert_int_equal(vram_host_make_room(&f.l, &f.w[0], 21 * GiB, &r), -ENOSPC);
	assert_string_equal(r.message,
			    "needs 21GiB of host memory for chat's offload: budget 56GiB, "
			    "10GiB held by 1 offloaded workload and 4GiB kept by 1 ready "
			    "workload, 14GiB could be freed; 12GiB available, of which "
			    "6GiB stays in reserve; no disk tier to park on");
	/* an engine that cannot drop kept buffers is named as such */
	f.e[1].can_drop_kept = false;
	assert_int_equal(vram_host_make_room(&f.l, &f.w[0], 17 * GiB, &r), -ENOSPC);
	assert_non_null(strstr(r.message, "not touched: embed (its engine cannot drop kept buffers, "
					  "4GiB)"));
}

/* ---- randomized: 8 workloads, 1,000 steps, every plan applied ---- */

enum world_state { W_READY, W_OFFLOADED, W_PARKED, W_STOPPED };

struct world {
	struct fixture f;
	uint64_t size[N_WL];   /* bytes: its GPU memory, what an offload puts in RAM */
	enum world_state st[N_WL];
	uint64_t held[N_WL], kept[N_WL], disk[N_WL];
	uint64_t total, other, reserve, budget, disk_cap;
	bool disk_tier;
	uint64_t clock;
	unsigned n_refused, n_drop, n_park, n_release, n_offload, n_restore;
};

static uint64_t rnd(uint64_t n)
{
	return n ? (uint64_t)rand() % n : 0;
}

static uint64_t sum(const uint64_t *v)
{
	uint64_t s = 0;
	for (size_t i = 0; i < N_WL; i++)
		s += v[i];
	return s;
}

/* The ledger the daemon would build from the world as it is. */
static void world_ledger(struct world *wd)
{
	struct fixture *f = &wd->f;
	for (size_t i = 0; i < N_WL; i++) {
		f->e[i].state = wd->st[i] == W_READY ? VRAM_WL_READY
				: wd->st[i] == W_OFFLOADED ? VRAM_WL_OFFLOADED
							    : VRAM_WL_STOPPED;
		f->e[i].held = wd->held[i];
		f->e[i].kept = wd->kept[i];
		f->e[i].on_disk = wd->disk[i];
	}
	uint64_t held = sum(wd->held);
	f->l.total = wd->total;
	f->l.available = wd->total - wd->other - held;
	f->l.reserve = wd->reserve;
	f->l.budget = wd->budget;
	f->l.park_usable = wd->disk_tier;
	f->l.park_free = wd->disk_cap - sum(wd->disk);
}

/* What the rules allow to be freed for asker, counted on the world itself. */
static uint64_t world_freeable(const struct world *wd, size_t asker)
{
	uint64_t s = 0;
	for (size_t i = 0; i < N_WL; i++) {
		if (i == asker)
			continue;
		if (wd->st[i] == W_READY && wd->f.e[i].can_drop_kept)
			s += wd->kept[i];
		if (wd->st[i] == W_OFFLOADED && wd->f.e[i].priority <= wd->f.e[asker].priority)
			s += wd->held[i];
	}
	return s;
}

static void world_check(const struct world *wd, unsigned seed, unsigned step)
{
	uint64_t held = sum(wd->held);
	if (held > wd->budget)
		fail_msg("seed %u step %u: %llu held, over the budget of %llu", seed, step,
			 (unsigned long long)held, (unsigned long long)wd->budget);
	if (wd->total - wd->other - held < wd->reserve)
		fail_msg("seed %u step %u: %llu available, under the reserve of %llu", seed, step,
			 (unsigned long long)(wd->total - wd->other - held),
			 (unsigned long long)wd->reserve);
	if (sum(wd->disk) > wd->disk_cap)
		fail_msg("seed %u step %u: the disk tier holds more than it has", seed, step);
}

/*
 * Asks for need bytes for asker; applies the plan's steps to the world.
 * Returns whether the ask may go ahead.
 */
static bool world_make_room(struct world *wd, size_t asker, uint64_t need, unsigned seed,
			    unsigned step)
{
	struct fixture *f = &wd->f;
	struct vram_host_room r;
	world_ledger(wd);
	uint64_t held = sum(wd->held);
	uint64_t avail = wd->total - wd->other - held;
	uint64_t over_budget = held + need > wd->budget ? held + need - wd->budget : 0;
	uint64_t over_avail = need + wd->reserve > avail ? need + wd->reserve - avail : 0;
	uint64_t shortfall = over_budget > over_avail ? over_budget : over_avail;
	int e = vram_host_make_room(&f->l, &f->w[asker], need, &r);
	assert_true(r.shortfall == shortfall);
	if (e == -ENOSPC) {
		/* only when nothing the rules allow could free enough */
		if (world_freeable(wd, asker) >= shortfall)
			fail_msg("seed %u step %u: refused although %llu could be freed for %llu: %s",
				 seed, step, (unsigned long long)world_freeable(wd, asker),
				 (unsigned long long)shortfall, r.message);
		assert_true(r.freeable == world_freeable(wd, asker));
		assert_non_null(strstr(r.message, "needs "));
		wd->n_refused++;
		return false;
	}
	assert_int_equal(e, 0);
	uint64_t freed = 0;
	for (size_t k = 0; k < r.n_steps; k++) {
		size_t i = (size_t)(r.steps[k].w - f->w);
		assert_true(i < N_WL && i != asker);
		switch (r.steps[k].action) {
		case VRAM_HOST_DROP_KEPT:
			assert_int_equal(wd->st[i], W_READY);
			assert_true(f->e[i].can_drop_kept && wd->kept[i] > 0);
			assert_true(r.steps[k].bytes == wd->kept[i]);
			wd->held[i] -= wd->kept[i];
			wd->kept[i] = 0;
			wd->n_drop++;
			break;
		case VRAM_HOST_PARK:
			assert_int_equal(wd->st[i], W_OFFLOADED);
			assert_true(wd->disk_tier && f->e[i].can_park);
			assert_true(f->e[i].priority <= f->e[asker].priority);
			assert_true(r.steps[k].bytes == wd->held[i]);
			wd->disk[i] = wd->held[i];
			wd->held[i] = 0;
			wd->st[i] = W_PARKED;
			wd->n_park++;
			break;
		case VRAM_HOST_RELEASE:
			assert_int_equal(wd->st[i], W_OFFLOADED);
			assert_true(f->e[i].priority <= f->e[asker].priority);
			/* released only where parking could not be */
			assert_false(wd->disk_tier && f->e[i].can_park &&
				     wd->held[i] <= wd->disk_cap - sum(wd->disk));
			assert_true(r.steps[k].bytes == wd->held[i]);
			wd->held[i] = 0;
			wd->st[i] = W_STOPPED;
			wd->n_release++;
			break;
		}
		freed += r.steps[k].bytes;
	}
	assert_true(freed == r.freed && freed >= shortfall);
	return true;
}

static void world_step(struct world *wd, unsigned seed, unsigned step)
{
	size_t i = (size_t)rnd(N_WL);
	wd->clock += 1 + rnd(100);
	switch (wd->st[i]) {
	case W_STOPPED: /* started: nothing in host memory */
		wd->st[i] = W_READY;
		wd->f.e[i].last_used_ms = wd->clock;
		break;
	case W_READY:
		if (wd->kept[i] && rnd(4) == 0) { /* the hook is told to drop its kept buffers */
			wd->held[i] -= wd->kept[i];
			wd->kept[i] = 0;
			break;
		}
		/* an offload: its kept buffers take the copy, the rest is new memory */
		if (world_make_room(wd, i, wd->size[i] - wd->kept[i], seed, step)) {
			wd->held[i] = wd->size[i];
			wd->kept[i] = 0;
			wd->st[i] = W_OFFLOADED;
			wd->n_offload++;
		}
		break;
	case W_OFFLOADED:
		if (rnd(3) == 0) { /* the idle timer parks it, when the disk takes it */
			if (wd->disk_tier && wd->f.e[i].can_park &&
			    wd->held[i] <= wd->disk_cap - sum(wd->disk)) {
				wd->disk[i] = wd->held[i];
				wd->held[i] = 0;
				wd->st[i] = W_PARKED;
			}
			break;
		}
		/* restored: keeps its buffers (no new memory), or frees them */
		wd->st[i] = W_READY;
		wd->kept[i] = rnd(2) ? wd->held[i] : 0;
		wd->held[i] = wd->kept[i];
		wd->f.e[i].last_used_ms = wd->clock;
		wd->n_restore++;
		break;
	case W_PARKED:
		/* restored from disk; keeping pinned buffers then is new memory and asks first */
		wd->disk[i] = 0;
		wd->st[i] = W_READY;
		wd->f.e[i].last_used_ms = wd->clock;
		if (rnd(2) && world_make_room(wd, i, wd->size[i], seed, step)) {
			wd->held[i] = wd->kept[i] = wd->size[i];
		}
		wd->n_restore++;
		break;
	}
}

static void run_world(unsigned seed, struct world *wd)
{
	srand(seed);
	fx_init(&wd->f, N_WL);
	memset(wd->size, 0, sizeof(wd->size));
	wd->total = 64 * GiB;
	wd->other = (4 + rnd(12)) * GiB; /* the workloads' own processes, vramd, the system */
	wd->reserve = vram_host_reserve(wd->total, VRAM_CONFIG_HOST_RESERVE_DEFAULT);
	wd->budget = vram_host_budget(wd->total, wd->reserve, rnd(2) ? (20 + rnd(30)) * GiB : 0);
	wd->disk_tier = rnd(4) != 0;
	wd->disk_cap = (10 + rnd(80)) * GiB;
	wd->clock = 1000;
	for (size_t i = 0; i < N_WL; i++) {
		wd->size[i] = (1 + rnd(24)) * GiB + rnd(GiB);
		wd->st[i] = W_READY;
		wd->held[i] = wd->kept[i] = wd->disk[i] = 0;
		int prio = (int)rnd(3);
		wd->f.e[i].priority = prio;
		wd->f.cfg[i].priority = prio;
		wd->f.e[i].can_park = rnd(5) != 0;
		wd->f.e[i].can_drop_kept = rnd(5) != 0;
	}
	for (unsigned step = 0; step < 1000; step++) {
		world_step(wd, seed, step);
		world_check(wd, seed, step);
	}
}

static void test_randomized(void **state)
{
	(void)state;
	static struct world wd;
	unsigned refused = 0, drop = 0, park = 0, release = 0, offload = 0;
	for (unsigned seed = 1; seed <= 40; seed++) {
		memset(&wd, 0, sizeof(wd));
		run_world(seed, &wd);
		refused += wd.n_refused;
		drop += wd.n_drop;
		park += wd.n_park;
		release += wd.n_release;
		offload += wd.n_offload;
	}
	/* every branch was taken, so that the checks above checked something */
	print_message("offloads %u, refusals %u, kept buffers dropped %u, parked %u, released %u\n",
		      offload, refused, drop, park, release);
	assert_true(offload > 1000 && refused > 10 && drop > 10 && park > 10 && release > 10);
}

/* ---- the host part of vramctl plan ---- */

static void test_plan_config(void **state)
{
	(void)state;
	static const char yaml[] =
		"host: {limit: 40GiB}\n"
		"workloads:\n"
		"  chat: {cmd: [x], memory: 30GiB, gpus: 2}\n"
		"  embed: {cmd: [x], memory: 4GiB, replicas: 2}\n"
		"  tts: {cmd: [x], memory: 2GiB, offload: restart}\n"
		"  cpu: {cmd: [x], gpus: 0}\n";
	struct vram_config *cfg = NULL;
	char *err = NULL;
	assert_int_equal(vram_config_parse(yaml, strlen(yaml), "t.yaml", NULL, &cfg, &err), 0);
	struct vram_plan_gpu gpus[2];
	memset(gpus, 0, sizeof(gpus));
	for (unsigned i = 0; i < 2; i++)
		gpus[i] = (struct vram_plan_gpu){ .index = i, .total = 80 * GiB, .name = "G" };
	struct vram_plan_table *t = NULL;
	assert_int_equal(vram_plan_config(cfg, gpus, 2, &t), 0);
	struct vram_host_plan *p = NULL;
	assert_int_equal(vram_host_plan_config(cfg, t, 64 * GiB, &p), 0);
	assert_int_equal(p->n_rows, 4);
	assert_true(p->rows[0].bytes == 60 * GiB); /* 2 GPUs x 30 */
	assert_true(p->rows[1].bytes == 8 * GiB);  /* 2 replicas x 4 */
	assert_true(p->rows[2].bytes == 0);        /* restart: nothing kept */
	assert_true(p->rows[3].bytes == 0);        /* CPU only */
	assert_true(p->offloaded == 68 * GiB && p->budget == 40 * GiB);
	char *text = vram_host_plan_format(p);
	assert_non_null(text);
	assert_string_equal(text,
			    "WORKLOAD  HOST WHEN OFFLOADED\n"
			    "chat      60GiB\n"
			    "embed     8GiB\n"
			    "tts       -\n"
			    "cpu       -\n"
			    "\n"
			    "host 64GiB: reserve 6.4GiB, limit 40GiB, budget 40GiB; all offloaded at "
			    "once: 68GiB, 28GiB over the budget: the least recently used are parked on "
			    "disk or released to make room\n");
	free(text);
	json_t *j = vram_host_plan_json(p);
	assert_non_null(j);
	assert_false(json_is_true(json_object_get(j, "fits")));
	assert_true(json_integer_value(json_object_get(j, "budget_bytes")) == (json_int_t)(40 * GiB));
	json_decref(j);
	vram_host_plan_free(p);
	vram_plan_table_free(t);
	vram_config_free(cfg);
}

/* --check-config's line: the budget on this host, the reserve and why, the limit, the park directory. */
static void test_describe(void **state)
{
	(void)state;
	static const char yaml[] = "daemon: { state_dir: /run/v }\nhost: { limit: 20GiB }\n";
	struct vram_config *cfg = NULL;
	char *err = NULL, buf[512];
	assert_int_equal(vram_config_parse(yaml, strlen(yaml), "t.yaml", NULL, &cfg, &err), 0);
	vram_host_describe(cfg, 64 * GiB, buf, sizeof(buf));
	assert_string_equal(buf, "host: budget 20GiB of 64GiB (reserve 6.4GiB: 10 % of MemTotal, at "
				 "least 4GiB; limit 20GiB); park_dir /run/v/park");
	vram_host_describe(cfg, 0, buf, sizeof(buf));
	assert_string_equal(buf, "host: budget 20GiB (MemTotal not known; reserve 10 % of MemTotal, "
				 "at least 4GiB; limit 20GiB); park_dir /run/v/park");
	vram_config_free(cfg);
	static const char yaml2[] = "host: { reserve: 2GiB, park_dir: /srv/park }\n";
	assert_int_equal(vram_config_parse(yaml2, strlen(yaml2), "t.yaml", NULL, &cfg, &err), 0);
	vram_host_describe(cfg, 64 * GiB, buf, sizeof(buf));
	assert_string_equal(buf, "host: budget 62GiB of 64GiB (reserve 2GiB; no limit); park_dir /srv/park");
	vram_host_describe(cfg, 0, buf, sizeof(buf));
	assert_string_equal(buf, "host: budget not known (MemTotal not known; reserve 2GiB; no limit); "
				 "park_dir /srv/park");
	vram_config_free(cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_budget),
		cmocka_unit_test(test_fits_as_it_is),
		cmocka_unit_test(test_order_of_steps),
		cmocka_unit_test(test_disk_tier_full),
		cmocka_unit_test(test_priority_and_busy),
		cmocka_unit_test(test_available_reserve),
		cmocka_unit_test(test_randomized),
		cmocka_unit_test(test_plan_config),
		cmocka_unit_test(test_describe),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
