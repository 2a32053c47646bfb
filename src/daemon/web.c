/* SPDX-License-Identifier: MIT */
/* The dashboard's embedded files: lookup and replies. See web.h. */
#include "daemon/web.h"

#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "daemon/http.h"

const struct vram_web_asset *vram_web_find(const char *name)
{
	if (!name || !*name)
		name = "index.html";
	for (size_t i = 0; i < vram_web_n_assets; i++)
		if (strcmp(vram_web_assets[i].name, name) == 0)
			return &vram_web_assets[i];
	return NULL;
}

static bool span_is(const char *p, size_t n, const char *s)
{
	return strlen(s) == n && memcmp(p, s, n) == 0;
}

bool vram_web_is_public(const char *method, size_t method_len, const char *path, size_t path_len)
{
	if (!span_is(method, method_len, "GET") && !span_is(method, method_len, "HEAD"))
		return false;
	size_t n = 0;
	while (n < path_len && path[n] != '?' && path[n] != '#')
		n++;
	if (n == 1 && path[0] == '/')
		return true;
	size_t plen = strlen(VRAM_WEB_PREFIX);
	if (n <= plen || memcmp(path, VRAM_WEB_PREFIX, plen) != 0)
		return false;
	/* one segment of a file name: no "/", no "..", no escapes */
	for (size_t i = plen; i < n; i++) {
		char c = path[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '-' || c == '_'))
			return false;
	}
	return path[plen] != '.';
}

void vram_web_reply(struct evhttp_request *req, const char *name)
{
	const struct vram_web_asset *a = vram_web_find(name);
	if (!a) {
		vram_http_reply_error(req, 404, NULL, "no file %s%.200s in the dashboard",
				      VRAM_WEB_PREFIX, name);
		return;
	}
	struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
	evhttp_add_header(oh, "ETag", a->etag);
	evhttp_add_header(oh, "Cache-Control", "no-cache");
	evhttp_add_header(oh, "Content-Security-Policy", VRAM_WEB_CSP);
	evhttp_add_header(oh, "X-Content-Type-Options", "nosniff");
	evhttp_add_header(oh, "X-Frame-Options", "DENY");
	evhttp_add_header(oh, "Referrer-Policy", "no-referrer");
	const char *inm = evhttp_find_header(evhttp_request_get_input_headers(req), "If-None-Match");
	if (inm && strstr(inm, a->etag)) {
		evhttp_send_reply(req, 304, "Not Modified", NULL);
		return;
	}
	evhttp_add_header(oh, "Content-Type", a->content_type);
	/* static bytes: referenced, not copied */
	evbuffer_add_reference(evhttp_request_get_output_buffer(req), a->data, a->len, NULL, NULL);
	evhttp_send_reply(req, 200, "OK", NULL);
}
