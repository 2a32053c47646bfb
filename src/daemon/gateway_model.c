/* SPDX-License-Identifier: MIT */
/*
 * Where a request names its OpenAI model: a JSON body's "model", a form
 * field (urlencoded or multipart), or ?model= (vram_gateway_find_model in
 * gateway.h). Pure: no state, no I/O.
 */
#include "daemon/gateway.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

/* ----------------------------------------------------- model extraction */

static int copy_model(const char *s, size_t len, char *ret, size_t size)
{
	if (len == 0)
		return -ENOENT;
	if (len >= size || memchr(s, '\0', len))
		return -E2BIG;
	memcpy(ret, s, len);
	ret[len] = '\0';
	return 0;
}

static int model_from_json(const char *body, size_t len, char *ret, size_t size)
{
	json_t *obj = json_loadb(body, len, 0, NULL);
	if (!obj)
		return -ENOENT;
	json_t *v = json_object_get(obj, "model");
	int r = json_is_string(v) ? copy_model(json_string_value(v), json_string_length(v), ret, size)
				  : -ENOENT;
	json_decref(obj);
	return r;
}

static int model_from_query(const char *query, size_t len, char *ret, size_t size)
{
	char *q = strndup(query, len);
	if (!q)
		return -ENOMEM;
	struct evkeyvalq kv;
	TAILQ_INIT(&kv);
	int r = -ENOENT;
	if (evhttp_parse_query_str(q, &kv) == 0) {
		const char *v = evhttp_find_header(&kv, "model");
		if (v)
			r = copy_model(v, strlen(v), ret, size);
	}
	evhttp_clear_headers(&kv);
	free(q);
	return r;
}

/* The value of param (e.g. "boundary") in a header value like a Content-Type. */
static bool header_param(const char *value, const char *param, char *ret, size_t size)
{
	size_t plen = strlen(param);
	for (const char *p = strchr(value, ';'); p; p = strchr(p + 1, ';')) {
		const char *s = p + 1;
		while (*s == ' ' || *s == '\t')
			s++;
		if (strncasecmp(s, param, plen) != 0 || s[plen] != '=')
			continue;
		s += plen + 1;
		size_t n = 0;
		if (*s == '"') {
			s++;
			while (s[n] && s[n] != '"')
				n++;
		} else {
			while (s[n] && s[n] != ';' && s[n] != ' ' && s[n] != '\t')
				n++;
		}
		if (n == 0 || n >= size)
			return false;
		memcpy(ret, s, n);
		ret[n] = '\0';
		return true;
	}
	return false;
}

static const char *find_bytes(const char *hay, size_t hlen, const char *needle, size_t nlen)
{
	return memmem(hay, hlen, needle, nlen);
}

/* The "model" part of a multipart/form-data body (RFC 7578). */
static int model_from_multipart(const char *ctype, const char *body, size_t len, char *ret,
				size_t size)
{
	char boundary[80];
	char delim[84];
	if (!header_param(ctype, "boundary", boundary, sizeof(boundary)))
		return -ENOENT;
	int dlen = snprintf(delim, sizeof(delim), "--%s", boundary);
	const char *end = body + len;
	const char *p = find_bytes(body, len, delim, (size_t)dlen);
	while (p) {
		p += dlen;
		if (end - p >= 2 && p[0] == '-' && p[1] == '-')
			break; /* the closing delimiter */
		const char *hdr_end = find_bytes(p, (size_t)(end - p), "\r\n\r\n", 4);
		if (!hdr_end)
			break;
		const char *value = hdr_end + 4;
		const char *next = find_bytes(value, (size_t)(end - value), delim, (size_t)dlen);
		if (!next)
			break;
		/* Is this part's Content-Disposition name="model"? */
		bool is_model = false;
		for (const char *line = p; line < hdr_end;) {
			const char *eol = find_bytes(line, (size_t)(hdr_end + 2 - line), "\r\n", 2);
			if (!eol)
				break;
			size_t llen = (size_t)(eol - line);
			if (llen > 20 && strncasecmp(line, "Content-Disposition:", 20) == 0) {
				char hv[512], name[64];
				if (llen < sizeof(hv)) {
					memcpy(hv, line, llen);
					hv[llen] = '\0';
					is_model = header_param(hv, "name", name, sizeof(name)) &&
						   strcmp(name, "model") == 0;
				}
			}
			line = eol + 2;
		}
		if (is_model) {
			size_t vlen = (size_t)(next - value);
			if (vlen >= 2 && value[vlen - 2] == '\r' && value[vlen - 1] == '\n')
				vlen -= 2;
			return copy_model(value, vlen, ret, size);
		}
		p = next;
	}
	return -ENOENT;
}

int vram_gateway_find_model(const char *content_type, const char *body, size_t len,
			    const char *query, char *ret, size_t size)
{
	const char *ct = content_type ? content_type : "";
	int r = -ENOENT;
	if (len > 0) {
		if (strncasecmp(ct, "application/x-www-form-urlencoded", 33) == 0)
			r = model_from_query(body, len, ret, size);
		else if (strncasecmp(ct, "multipart/form-data", 19) == 0)
			r = model_from_multipart(ct, body, len, ret, size);
		else if (strncasecmp(ct, "application/json", 16) == 0 || strstr(ct, "+json"))
			r = model_from_json(body, len, ret, size);
		/* curl -d sends JSON as a form: a body that looks like JSON is read as JSON. */
		size_t lead = strspn(body, " \t\r\n");
		if (r == -ENOENT && lead < len && body[lead] == '{')
			r = model_from_json(body, len, ret, size);
	}
	if (r == -ENOENT && query && *query)
		r = model_from_query(query, strlen(query), ret, size);
	return r;
}

/* ------------------------------------------------------- alias rewrite */

/*
 * A scanner of just enough JSON to find the top-level keys of an object and
 * their values' extent, so that the rewrite changes the bytes of the model
 * name and nothing else (a re-encoding by jansson would reformat numbers
 * and whitespace). Each returns the index after what it skipped, or len
 * when the text ends first.
 */
static size_t json_ws(const char *p, size_t i, size_t len)
{
	while (i < len && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n'))
		i++;
	return i;
}

/* p[i] is the opening quote. */
static size_t json_string_end(const char *p, size_t i, size_t len)
{
	for (i++; i < len; i++) {
		if (p[i] == '\\')
			i++;
		else if (p[i] == '"')
			return i + 1;
	}
	return len;
}

static size_t json_value_end(const char *p, size_t i, size_t len)
{
	if (i < len && p[i] == '"')
		return json_string_end(p, i, len);
	if (i < len && (p[i] == '{' || p[i] == '[')) {
		size_t depth = 0;
		while (i < len) {
			if (p[i] == '"') {
				i = json_string_end(p, i, len);
				continue;
			}
			if (p[i] == '{' || p[i] == '[')
				depth++;
			else if ((p[i] == '}' || p[i] == ']') && --depth == 0)
				return i + 1;
			i++;
		}
		return len;
	}
	while (i < len && !strchr(",}] \t\r\n", p[i]))
		i++;
	return i;
}

/* True when the key (quotes included, n bytes at k) is "model", escaped or not. */
static bool json_key_is_model(const char *k, size_t n)
{
	if (n == 7 && memcmp(k, "\"model\"", 7) == 0)
		return true;
	if (n > 64 || !memchr(k, '\\', n))
		return false;
	json_t *s = json_loadb(k, n, JSON_DECODE_ANY, NULL);
	bool is = json_is_string(s) && strcmp(json_string_value(s), "model") == 0;
	json_decref(s);
	return is;
}

#define REWRITE_SPANS_MAX 8 /* top-level "model" keys rewritten in one body (duplicates) */

int vram_gateway_rewrite_model(const char *body, size_t len, const char *upstream, size_t max,
			       char **ret_body, size_t *ret_len)
{
	size_t start[REWRITE_SPANS_MAX], end[REWRITE_SPANS_MAX], n = 0;
	size_t i = json_ws(body, 0, len);
	if (i >= len || body[i] != '{')
		return -ENOENT;
	i = json_ws(body, i + 1, len);
	while (i < len && body[i] == '"') {
		size_t kend = json_string_end(body, i, len);
		bool model = json_key_is_model(body + i, kend - i);
		i = json_ws(body, kend, len);
		if (i >= len || body[i] != ':')
			return -ENOENT;
		i = json_ws(body, i + 1, len);
		size_t vend = json_value_end(body, i, len);
		if (model && i < len && body[i] == '"') {
			if (n == REWRITE_SPANS_MAX)
				return -E2BIG;
			start[n] = i;
			end[n++] = vend;
		}
		i = json_ws(body, vend, len);
		if (i < len && body[i] == ',')
			i = json_ws(body, i + 1, len);
	}
	if (n == 0)
		return -ENOENT;

	json_t *s = json_string(upstream); /* NULL for text that is not UTF-8 */
	if (!s)
		return -EINVAL;
	char *enc = json_dumps(s, JSON_ENCODE_ANY);
	json_decref(s);
	if (!enc)
		return -ENOMEM;
	size_t elen = strlen(enc), out_len = len;
	for (size_t k = 0; k < n; k++)
		out_len = out_len - (end[k] - start[k]) + elen;
	if (out_len > max) {
		free(enc);
		return -E2BIG;
	}
	char *out = malloc(out_len + 1);
	if (!out) {
		free(enc);
		return -ENOMEM;
	}
	size_t from = 0, at = 0;
	for (size_t k = 0; k < n; k++) {
		memcpy(out + at, body + from, start[k] - from);
		at += start[k] - from;
		memcpy(out + at, enc, elen);
		at += elen;
		from = end[k];
	}
	memcpy(out + at, body + from, len - from);
	out[out_len] = '\0';
	free(enc);
	*ret_body = out;
	*ret_len = out_len;
	return 0;
}
