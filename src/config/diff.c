/* SPDX-License-Identifier: MIT */
/*
 * What a reload changes, driven by the loader's key tables: each key's row
 * in config.c says its reload class and how to tell a change, and this
 * walks the rows (vram_config_workload_key, vram_config_daemon_key), so a
 * new key is compared as soon as it has a row.
 */
#include "config/diff.h"

#include <stdio.h>
#include <string.h>

/* Appends ", key" (or "key" first) to keys; truncation keeps it terminated. */
static void add_key(char *keys, size_t size, const char *key)
{
	size_t n = strnlen(keys, size);
	if (size && n < size - 1)
		snprintf(keys + n, size - n, "%s%s", n ? ", " : "", key);
}

/*
 * The names a diff reported so far: several keys of one group (each of
 * health's) are reported under one name, once.
 */
struct reported {
	char names[64][VRAM_CONFIG_KEY_NAME_MAX];
	size_t n; /* past 64, names are no longer kept, only reported */
};

/* Appends name to keys unless it is there already. */
static void add_reported(char *keys, size_t size, struct reported *r, const char *name)
{
	size_t kept = r->n < 64 ? r->n : 64;
	for (size_t i = 0; i < kept; i++)
		if (strcmp(r->names[i], name) == 0)
			return;
	if (r->n < 64)
		snprintf(r->names[r->n], sizeof(r->names[0]), "%s", name);
	r->n++;
	add_key(keys, size, name);
}

bool vram_diff_fixed(const struct vram_config *a, const struct vram_config *b, char *keys,
		     size_t size)
{
	if (size)
		keys[0] = '\0';
	bool same = true;
	struct reported r = { .n = 0 };
	struct vram_config_key key;
	for (size_t i = 0; vram_config_daemon_key(i, &key); i++) {
		if (key.reload != VRAM_RELOAD_DAEMON || !key.same_config || key.same_config(a, b))
			continue;
		same = false;
		add_reported(keys, size, &r, key.reported);
	}
	return same;
}

enum vram_diff_kind vram_diff_workload(const struct vram_workload_config *a,
				       const struct vram_workload_config *b, char *keys,
				       size_t size)
{
	enum vram_diff_kind kind = VRAM_DIFF_SAME;
	if (size)
		keys[0] = '\0';
	/*
	 * What the process is made of first, then how vramd treats it, each
	 * in the order of the key table; a live change next to a process one
	 * is named too (the new process takes both).
	 */
	static const struct {
		enum vram_reload reload;
		enum vram_diff_kind kind;
	} passes[] = { { VRAM_RELOAD_PROCESS, VRAM_DIFF_PROCESS }, { VRAM_RELOAD_LIVE, VRAM_DIFF_LIVE } };
	struct reported r = { .n = 0 };
	for (size_t p = 0; p < sizeof(passes) / sizeof(passes[0]); p++) {
		struct vram_config_key key;
		for (size_t i = 0; vram_config_workload_key(i, &key); i++) {
			if (key.reload != passes[p].reload || !key.same_workload ||
			    key.same_workload(a, b))
				continue;
			if (kind < passes[p].kind)
				kind = passes[p].kind;
			add_reported(keys, size, &r, key.reported);
		}
	}
	return kind;
}

const char *vram_diff_kind_name(enum vram_diff_kind k)
{
	switch (k) {
	case VRAM_DIFF_SAME:
		return "same";
	case VRAM_DIFF_LIVE:
		return "live";
	case VRAM_DIFF_PROCESS:
		return "process";
	}
	return "?";
}
