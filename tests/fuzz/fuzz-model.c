/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the gateway's model lookup and an alias's rewrite of a
 * request body: any bytes, read as JSON, a form or a query, find a model
 * or say there is none, and the rewrite splices the upstream name into a
 * JSON object's top-level "model" strings without a read out of bounds.
 * When the body is a JSON object whose "model" jansson reads as a string,
 * the rewritten body is JSON again and names the upstream model.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "daemon/gateway.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define UPSTREAM "up/stream \"ü\""
#define OUT_MAX 65536

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* NUL-terminated, as the gateway hands bodies on */
	char *body = malloc(size + 1);
	if (!body)
		return 0;
	memcpy(body, data, size);
	body[size] = '\0';
	char model[VRAM_GATEWAY_MODEL_MAX];
	int r = vram_gateway_find_model(size % 3 == 0	? "application/json"
					: size % 3 == 1 ? "application/x-www-form-urlencoded"
							: "multipart/form-data; boundary=b",
					body, size, size % 2 ? body : NULL, model, sizeof(model));
	if (r != 0 && r != -ENOENT && r != -E2BIG && r != -ENOMEM)
		abort();
	if (r == 0 && strlen(model) >= sizeof(model))
		abort();

	char *out = NULL;
	size_t out_len = 0;
	r = vram_gateway_rewrite_model(body, size, UPSTREAM, OUT_MAX, &out, &out_len);
	if (r != 0 && r != -ENOENT && r != -E2BIG && r != -ENOMEM)
		abort();
	if (r == 0 && (out_len > OUT_MAX || out[out_len] != '\0'))
		abort();
	json_t *in = json_loadb(body, size, 0, NULL);
	if (r == 0 && in && json_is_string(json_object_get(in, "model"))) {
		json_t *o = json_loadb(out, out_len, 0, NULL);
		const char *got = json_string_value(json_object_get(o, "model"));
		if (!got || strcmp(got, UPSTREAM) != 0)
			abort();
		json_decref(o);
	}
	json_decref(in);
	free(out);
	free(body);
	return 0;
}
