/* SPDX-License-Identifier: MIT */
/*
 * YAML text → positioned tree (see yaml.h). Built from libfyaml's event
 * stream with an explicit stack, so nesting is bounded by VRAM_YAML_MAX_DEPTH
 * rather than by the C stack, and parsing stops at the first problem.
 */
#include "config/yaml.h"

#include <errno.h>
#include <libfyaml.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct builder {
	struct vram_ynode *stack[VRAM_YAML_MAX_DEPTH]; /* open collections, borrowed from root */
	size_t depth;
	struct vram_ynode *root; /* owned until handed out */
	size_t n_nodes;
	unsigned documents;
	struct vram_yaml_error *err;
	bool failed;
};

void vram_ynode_free(struct vram_ynode *n)
{
	if (!n)
		return;
	for (size_t i = 0; i < n->n_items; i++)
		vram_ynode_free(n->items[i]);
	free(n->items);
	free(n->text);
	free(n);
}

/* The dotted path of the collection being built, for error messages. */
static void builder_path(const struct builder *b, char *buf, size_t size)
{
	size_t len = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < b->depth && len < size; i++) {
		const struct vram_ynode *c = b->stack[i];
		bool innermost = i + 1 == b->depth;
		int n = 0;
		if (c->type == VRAM_YNODE_MAP) {
			const struct vram_ynode *key = NULL;
			if (!innermost && c->n_items >= 2)
				key = c->items[c->n_items - 2];
			else if (innermost && c->n_items % 2 == 1)
				key = c->items[c->n_items - 1];
			if (key)
				n = snprintf(buf + len, size - len, "%s%s", len ? "." : "", key->text);
		} else if (!innermost && c->n_items >= 1) {
			n = snprintf(buf + len, size - len, "[%zu]", c->n_items - 1);
		}
		if (n > 0)
			len += (size_t)n;
	}
}

static void builder_fail(struct builder *b, unsigned line, unsigned col, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void builder_fail(struct builder *b, unsigned line, unsigned col, const char *fmt, ...)
{
	if (b->failed)
		return;
	b->failed = true;
	b->err->line = line;
	b->err->col = col;
	builder_path(b, b->err->path, sizeof(b->err->path));
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(b->err->msg, sizeof(b->err->msg), fmt, ap);
	va_end(ap);
}

static bool is_null_text(const char *s)
{
	return !*s || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 ||
	       strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

/* A new node at the event's mark; an empty value has no mark and takes the
 * position of its key (or of its parent). */
static struct vram_ynode *node_new(struct builder *b, enum vram_ynode_type type,
				   struct fy_event *ev)
{
	if (b->n_nodes >= VRAM_YAML_MAX_NODES) {
		const struct fy_mark *m = fy_event_start_mark(ev);
		builder_fail(b, m ? (unsigned)m->line + 1 : 0, m ? (unsigned)m->column + 1 : 0,
			     "too many YAML nodes, expected at most %d", VRAM_YAML_MAX_NODES);
		return NULL;
	}
	struct vram_ynode *n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	b->n_nodes++;
	n->type = type;
	const struct fy_mark *m = fy_event_start_mark(ev);
	if (m && m->line >= 0 && m->column >= 0) {
		n->line = (unsigned)m->line + 1;
		n->col = (unsigned)m->column + 1;
	} else if (b->depth > 0) {
		const struct vram_ynode *parent = b->stack[b->depth - 1];
		const struct vram_ynode *near = parent->n_items ? parent->items[parent->n_items - 1] : parent;
		n->line = near->line;
		n->col = near->col;
	} else {
		n->line = n->col = 1;
	}
	return n;
}

/* Appends n to the open collection (or makes it the root). Takes ownership
 * of n in every case. Returns 0, -EINVAL (error recorded) or -ENOMEM. */
static int attach(struct builder *b, struct vram_ynode *n)
{
	if (b->depth == 0) {
		b->root = n;
		return 0;
	}
	struct vram_ynode *parent = b->stack[b->depth - 1];
	if (parent->type == VRAM_YNODE_MAP && parent->n_items % 2 == 0) {
		if (n->type != VRAM_YNODE_SCALAR && n->type != VRAM_YNODE_NULL) {
			builder_fail(b, n->line, n->col,
				     "a key must be a plain string, got a %s",
				     n->type == VRAM_YNODE_MAP ? "mapping" : "list");
			goto out_free;
		}
		for (size_t i = 0; i < parent->n_items; i += 2) {
			const struct vram_ynode *k = parent->items[i];
			if (strcmp(k->text, n->text) == 0) {
				builder_fail(b, n->line, n->col,
					     "duplicate key, first set at line %u, expected each key once",
					     k->line);
				size_t len = strlen(b->err->path);
				snprintf(b->err->path + len, sizeof(b->err->path) - len, "%s%s",
					 len ? "." : "", n->text);
				goto out_free;
			}
		}
	}
	size_t limit = parent->type == VRAM_YNODE_MAP ? 2 * VRAM_YAML_MAX_ITEMS : VRAM_YAML_MAX_ITEMS;
	if (parent->n_items >= limit) {
		builder_fail(b, n->line, n->col, "too many entries, expected at most %d",
			     VRAM_YAML_MAX_ITEMS);
		goto out_free;
	}
	if (parent->n_items == parent->cap_items) {
		size_t cap = parent->cap_items ? parent->cap_items * 2 : 8;
		struct vram_ynode **items = realloc(parent->items, cap * sizeof(*items));
		if (!items) {
			vram_ynode_free(n);
			return -ENOMEM;
		}
		parent->items = items;
		parent->cap_items = cap;
	}
	parent->items[parent->n_items++] = n;
	return 0;

out_free:
	vram_ynode_free(n);
	return -EINVAL;
}

static int on_scalar(struct builder *b, struct fy_event *ev)
{
	size_t len = 0;
	const char *text = fy_token_get_text(ev->scalar.value, &len);
	if (!text) {
		text = "";
		len = 0;
	}
	enum fy_scalar_style style = fy_token_scalar_style(ev->scalar.value);
	bool plain = style == FYSS_PLAIN;
	struct vram_ynode *n = node_new(b, VRAM_YNODE_SCALAR, ev);
	if (!n)
		return b->failed ? -EINVAL : -ENOMEM;
	/* libfyaml marks a quoted scalar at its first character; point at the
	 * opening quote, where the value starts for the reader. */
	if ((style == FYSS_SINGLE_QUOTED || style == FYSS_DOUBLE_QUOTED) && n->col > 1)
		n->col--;
	if (memchr(text, '\0', len)) {
		builder_fail(b, n->line, n->col, "a value contains a NUL character");
		vram_ynode_free(n);
		return -EINVAL;
	}
	n->text = malloc(len + 1);
	if (!n->text) {
		vram_ynode_free(n);
		return -ENOMEM;
	}
	memcpy(n->text, text, len);
	n->text[len] = '\0';
	n->quoted = !plain;
	if (plain && is_null_text(n->text))
		n->type = VRAM_YNODE_NULL;
	return attach(b, n);
}

static int on_collection_start(struct builder *b, struct fy_event *ev, enum vram_ynode_type type)
{
	struct vram_ynode *n = node_new(b, type, ev);
	if (!n)
		return b->failed ? -EINVAL : -ENOMEM;
	if (b->depth >= VRAM_YAML_MAX_DEPTH) {
		builder_fail(b, n->line, n->col, "nested too deeply, expected at most %d levels",
			     VRAM_YAML_MAX_DEPTH);
		vram_ynode_free(n);
		return -EINVAL;
	}
	n->text = strdup("");
	if (!n->text) {
		vram_ynode_free(n);
		return -ENOMEM;
	}
	int r = attach(b, n);
	if (r < 0)
		return r;
	b->stack[b->depth++] = n;
	return 0;
}

static int on_event(struct builder *b, struct fy_event *ev)
{
	const struct fy_mark *m = fy_event_start_mark(ev);
	unsigned line = m && m->line >= 0 ? (unsigned)m->line + 1 : 0;
	unsigned col = m && m->column >= 0 ? (unsigned)m->column + 1 : 0;

	switch (ev->type) {
	case FYET_DOCUMENT_START:
		if (++b->documents > 1) {
			builder_fail(b, line, col,
				     "a second YAML document, expected one document per file");
			return -EINVAL;
		}
		return 0;
	case FYET_SCALAR:
		return on_scalar(b, ev);
	case FYET_MAPPING_START:
		return on_collection_start(b, ev, VRAM_YNODE_MAP);
	case FYET_SEQUENCE_START:
		return on_collection_start(b, ev, VRAM_YNODE_SEQ);
	case FYET_MAPPING_END:
	case FYET_SEQUENCE_END:
		if (b->depth > 0)
			b->depth--;
		return 0;
	case FYET_ALIAS:
		/* The mark is on the name; the alias starts at the '*' before it. */
		builder_fail(b, line, col > 1 ? col - 1 : col,
			     "aliases (*name) are not supported, expected the value written out");
		return -EINVAL;
	default:
		return 0;
	}
}

/* Length of the valid UTF-8 sequence at p (n bytes left), or 0. Overlong
 * forms, surrogates and code points past U+10FFFF are invalid. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
	unsigned char c = p[0];
	size_t len;
	uint32_t cp;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/*
 * The text must be UTF-8 without NUL bytes. Checked before libfyaml sees it:
 * besides giving a clear message, this keeps malformed bytes away from the
 * scanner (libfyaml 0.7.12 loops forever on "%" followed by a stray byte).
 */
static bool check_text(struct builder *b, const char *text, size_t len)
{
	const unsigned char *p = (const unsigned char *)text;
	unsigned line = 1, col = 1;
	for (size_t i = 0; i < len;) {
		if (p[i] == '\0') {
			builder_fail(b, line, col, "a NUL byte, expected a UTF-8 text file");
			return false;
		}
		size_t n = utf8_len(p + i, len - i);
		if (n == 0) {
			builder_fail(b, line, col, "invalid UTF-8 byte 0x%02x, expected a UTF-8 "
				     "text file", p[i]);
			return false;
		}
		if (p[i] == '\n') {
			line++;
			col = 1;
		} else {
			col++;
		}
		i += n;
	}
	return true;
}

/* Diagnostics are collected, never printed; this sink only exists because
 * libfyaml wants one when fp is NULL. */
static void diag_discard(struct fy_diag *diag, void *user, const char *buf, size_t len)
{
}

/* Copies libfyaml's first error (with its position) into the builder. */
static void take_parser_error(struct builder *b, struct fy_diag *diag)
{
	void *iter = NULL;
	struct fy_diag_error *e;
	while ((e = fy_diag_errors_iterate(diag, &iter))) {
		if (e->type < FYET_ERROR)
			continue;
		/* libfyaml's collected positions are 1-based already. */
		builder_fail(b, e->line > 0 ? (unsigned)e->line : 0,
			     e->column > 0 ? (unsigned)e->column : 0,
			     "invalid YAML: %s", e->msg ? e->msg : "syntax error");
		return;
	}
	builder_fail(b, 0, 0, "invalid YAML");
}

int vram_yaml_parse(const char *text, size_t len, struct vram_ynode **ret_root,
		    struct vram_yaml_error *ret_error)
{
	struct builder b = { .err = ret_error };
	struct fy_diag *diag = NULL;
	struct fy_parser *parser = NULL;
	int r;

	*ret_error = (struct vram_yaml_error){ 0 };
	if (!check_text(&b, text, len))
		return -EINVAL;

	struct fy_diag_cfg dcfg;
	fy_diag_cfg_default(&dcfg);
	dcfg.fp = NULL;
	dcfg.output_fn = diag_discard;
	dcfg.colorize = false;
	diag = fy_diag_create(&dcfg);
	if (!diag)
		return -ENOMEM;
	fy_diag_set_collect_errors(diag, true);

	struct fy_parse_cfg pcfg = {
		.flags = FYPCF_QUIET | FYPCF_DISABLE_RECYCLING,
		.diag = diag,
	};
	parser = fy_parser_create(&pcfg);
	if (!parser) {
		r = -ENOMEM;
		goto out_diag;
	}
	if (fy_parser_set_string(parser, text, len) != 0) {
		r = -ENOMEM;
		goto out_parser;
	}

	r = 0;
	struct fy_event *ev;
	while ((ev = fy_parser_parse(parser))) {
		r = on_event(&b, ev);
		fy_parser_event_free(parser, ev);
		if (r < 0)
			break;
	}
	if (r == 0 && fy_parser_get_stream_error(parser)) {
		take_parser_error(&b, diag);
		r = -EINVAL;
	}
	if (r < 0)
		goto out_parser;

	*ret_root = b.root;
	b.root = NULL;

out_parser:
	fy_parser_destroy(parser);
out_diag:
	fy_diag_destroy(diag);
	vram_ynode_free(b.root);
	return r;
}
