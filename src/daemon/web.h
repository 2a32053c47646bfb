/* SPDX-License-Identifier: MIT */
/*
 * The dashboard's static files (web/), embedded into vramd at build time
 * (web/embed.py writes them into a C array; see web/meson.build), served at
 * GET / (index.html) and GET /ui/<file>.
 *
 * The files hold no secret and carry no data: the page asks the API for
 * everything with the token the user typed in (docs/dashboard.md). So they
 * are served without the token, like a login page, while the Host and Origin
 * rules of the front door (access.h) apply to them as to every route. Each
 * reply carries a strict Content-Security-Policy (scripts and styles from
 * vramd only, no inline code, connections to vramd only, no framing), a
 * strong ETag (a hash of the bytes) and Cache-Control: no-cache, so that a
 * browser revalidates and gets the new page after an upgrade.
 */
#ifndef VRAM_WEB_H
#define VRAM_WEB_H

#include <stdbool.h>
#include <stddef.h>

struct evhttp_request;

/* One embedded file (the generated web_assets.c defines the table). */
struct vram_web_asset {
	const char *name;           /* "index.html", "app.js": a file of web/ */
	const char *content_type;   /* "text/html; charset=utf-8" */
	const char *etag;           /* "\"<hex>\"": the quoted hash of the bytes */
	const unsigned char *data;  /* static */
	size_t len;                 /* bytes */
};

extern const struct vram_web_asset vram_web_assets[];
extern const size_t vram_web_n_assets;

#define VRAM_WEB_PREFIX "/ui/"
/* The page's policy: everything from vramd itself, nothing inline, no frames. */
#define VRAM_WEB_CSP                                                                       \
	"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "  \
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

/* The asset for a file name ("" or NULL: index.html); NULL if there is none. */
const struct vram_web_asset *vram_web_find(const char *name);

/*
 * True for a GET or HEAD of a path the dashboard's files are served at
 * ("/", "/ui/<file>"), with or without a query: what the front door lets
 * through without the token. method and path are n bytes each (no NUL
 * needed); path may carry "?query".
 */
bool vram_web_is_public(const char *method, size_t method_len, const char *path, size_t path_len);

/*
 * Replies to req with the file name ("" for "/"): 200 with its bytes, 304
 * when If-None-Match names its ETag, 404 (JSON) when there is none. Always
 * replies.
 */
void vram_web_reply(struct evhttp_request *req, const char *name);

#endif
