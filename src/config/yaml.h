/* SPDX-License-Identifier: MIT */
/*
 * Private to src/config: a small positioned YAML tree built from libfyaml's
 * event stream. libfyaml 0.7 gives marks for events but not for document
 * nodes, and the loader needs line:col for every value, so it keeps its own
 * tree. The builder bounds depth and node count, rejects aliases and several
 * documents, reports duplicate keys, and keeps libfyaml's diagnostics off
 * stderr: syntax errors come back as one message with a position.
 */
#ifndef VRAM_CONFIG_YAML_H
#define VRAM_CONFIG_YAML_H

#include <stdbool.h>
#include <stddef.h>

#define VRAM_YAML_MAX_DEPTH 32       /* nested collections */
#define VRAM_YAML_MAX_NODES 65536    /* scalars + collections in one file */
#define VRAM_YAML_MAX_ITEMS 4096     /* entries of one list, pairs of one mapping */

enum vram_ynode_type {
	VRAM_YNODE_NULL = 0, /* empty value, "~" or plain "null" */
	VRAM_YNODE_SCALAR,
	VRAM_YNODE_MAP,
	VRAM_YNODE_SEQ,
};

struct vram_ynode {
	enum vram_ynode_type type;
	unsigned line, col;        /* 1-based */
	char *text;                /* owned; SCALAR (and the text of a NULL) */
	bool quoted;               /* SCALAR: written in quotes or as a block */
	struct vram_ynode **items; /* owned; SEQ: items; MAP: key, value, key, value... */
	size_t n_items;            /* entries in items (MAP: twice the pairs) */
	size_t cap_items;
};

/* A syntax or structure error with its position (line 0 = unknown). */
struct vram_yaml_error {
	unsigned line, col;
	char path[256]; /* dotted key path of where it happened ("" at the top) */
	char msg[256];
};

/*
 * Parses text into a tree. Returns 0 and sets *ret_root (caller frees with
 * vram_ynode_free; NULL for an empty document), -EINVAL with *ret_error
 * filled, or -ENOMEM.
 */
int vram_yaml_parse(const char *text, size_t len, struct vram_ynode **ret_root,
		    struct vram_yaml_error *ret_error);

/* Accepts NULL. */
void vram_ynode_free(struct vram_ynode *n);

static inline size_t vram_ynode_pairs(const struct vram_ynode *map) { return map->n_items / 2; }
static inline struct vram_ynode *vram_ynode_key(const struct vram_ynode *map, size_t i) { return map->items[2 * i]; }
static inline struct vram_ynode *vram_ynode_value(const struct vram_ynode *map, size_t i) { return map->items[2 * i + 1]; }

#endif
