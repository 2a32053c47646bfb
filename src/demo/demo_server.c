/* SPDX-License-Identifier: MIT */
/*
 * vram-demo-server: behaves like a small model server so that vramd can be
 * tried and tested on a machine without a GPU. It "loads" for --load-time
 * before /health answers 200, reports --memory as the memory it holds (and
 * touches a small real buffer), and answers the OpenAI-style routes, with
 * "stream": true as server-sent events sent over time.
 *
 *   vram-demo-server --port 8001 --model demo-a --memory 4GiB --load-time 2s
 *                    [--chunks 5] [--chunk-delay 200ms] [--fail-after 0s] [--busy-health]
 *
 * --busy-health: /health answers 503 while a streamed answer is being sent,
 * as a model server busy generating may fail its health route.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "common/units.h"

#define DEMO_BODY_MAX (1u << 20)  /* bytes of request body accepted */
#define DEMO_REAL_BUFFER (8u << 20) /* bytes actually allocated and touched */
#define DEMO_CHUNKS_MAX 1000

struct demo {
	struct event_base *base;
	struct evhttp *http;
	const char *model;
	uint64_t memory;          /* bytes reported as held */
	uint64_t load_ms;         /* ms before healthy */
	unsigned chunks;          /* SSE chunks per streamed answer */
	uint64_t chunk_delay_ms;  /* ms between chunks */
	bool loaded;
	bool busy_health;         /* /health fails while streaming */
	unsigned streaming;       /* streamed answers being sent */
	time_t created;
	unsigned long requests;
	char *buffer;             /* the small real allocation */
};

struct stream {
	struct demo *d;
	struct evhttp_request *req;
	struct event *timer;
	unsigned sent;
	bool chat;
	char id[32];
};

static void send_json(struct evhttp_request *req, int code, const char *reason, json_t *body)
{
	struct evbuffer *out = evbuffer_new();
	char *text = json_dumps(body, JSON_COMPACT);
	if (out && text) {
		evbuffer_add_printf(out, "%s\n", text);
		evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
				  "application/json");
		evhttp_send_reply(req, code, reason, out);
	} else {
		evhttp_send_error(req, 500, "out of memory");
	}
	free(text);
	if (out)
		evbuffer_free(out);
	json_decref(body);
}

static void send_error(struct evhttp_request *req, int code, const char *reason, const char *msg)
{
	send_json(req, code, reason,
		  json_pack("{s:{s:s,s:s}}", "error", "message", msg, "type", "invalid_request_error"));
}

static void on_health(struct evhttp_request *req, void *arg)
{
	struct demo *d = arg;
	if (!d->loaded) {
		send_json(req, 503, "Loading", json_pack("{s:s}", "status", "loading"));
		return;
	}
	if (d->busy_health && d->streaming) {
		send_json(req, 503, "Busy", json_pack("{s:s}", "status", "busy"));
		return;
	}
	send_json(req, 200, "OK",
		  json_pack("{s:s,s:s,s:I}", "status", "ok", "model", d->model, "memory_bytes",
			    (json_int_t)d->memory));
}

static void on_models(struct evhttp_request *req, void *arg)
{
	struct demo *d = arg;
	send_json(req, 200, "OK",
		  json_pack("{s:s,s:[{s:s,s:s,s:I,s:s}]}", "object", "list", "data", "id", d->model,
			    "object", "model", "created", (json_int_t)d->created, "owned_by",
			    "vram-demo"));
}

/* The words of the canned answer; chunk i is word i % N. */
static const char *const words[] = {"Hello", " from", " the", " vramd", " demo", " server", "."};
#define N_WORDS (sizeof(words) / sizeof(words[0]))

static json_t *completion_body(struct demo *d, bool chat, const char *id, const char *text,
			       bool chunk, bool last)
{
	json_t *choice;
	if (chat) {
		json_t *msg = json_pack("{s:s,s:s}", "role", "assistant", "content", text);
		choice = json_pack("{s:i,s:o,s:o}", "index", 0, chunk ? "delta" : "message", msg,
				   "finish_reason", last ? json_string("stop") : json_null());
	} else {
		choice = json_pack("{s:i,s:s,s:o}", "index", 0, "text", text, "finish_reason",
				   last ? json_string("stop") : json_null());
	}
	const char *object = chat ? (chunk ? "chat.completion.chunk" : "chat.completion")
				  : "text_completion";
	json_t *body = json_pack("{s:s,s:s,s:I,s:s,s:[o]}", "id", id, "object", object, "created",
				 (json_int_t)time(NULL), "model", d->model, "choices", choice);
	if (body && !chunk)
		json_object_set_new(body, "usage",
				    json_pack("{s:i,s:i,s:i}", "prompt_tokens", 1, "completion_tokens",
					      (int)N_WORDS, "total_tokens", (int)N_WORDS + 1));
	return body;
}

static void stream_free(struct stream *s)
{
	s->d->streaming--;
	if (s->timer)
		event_free(s->timer);
	free(s);
}

static void on_stream_closed(struct evhttp_connection *conn, void *arg)
{
	/* evhttp frees the request with the connection: drop the stream now */
	struct stream *s = arg;
	stream_free(s);
}

static void on_stream_tick(evutil_socket_t fd, short what, void *arg)
{
	struct stream *s = arg;
	struct evhttp_connection *conn = evhttp_request_get_connection(s->req);
	struct evbuffer *out = evbuffer_new();
	if (!out)
		return;
	if (s->sent < s->d->chunks) {
		bool last = s->sent + 1 == s->d->chunks;
		json_t *body = completion_body(s->d, s->chat, s->id, words[s->sent % N_WORDS], true,
					       last);
		char *text = json_dumps(body, JSON_COMPACT);
		json_decref(body);
		evbuffer_add_printf(out, "data: %s\n\n", text ? text : "{}");
		free(text);
		evhttp_send_reply_chunk(s->req, out);
		s->sent++;
		struct timeval tv = {.tv_sec = (time_t)(s->d->chunk_delay_ms / 1000),
				     .tv_usec = (suseconds_t)(s->d->chunk_delay_ms % 1000) * 1000};
		evtimer_add(s->timer, &tv);
	} else {
		evbuffer_add_printf(out, "data: [DONE]\n\n");
		evhttp_send_reply_chunk(s->req, out);
		if (conn)
			evhttp_connection_set_closecb(conn, NULL, NULL);
		evhttp_send_reply_end(s->req);
		stream_free(s);
	}
	evbuffer_free(out);
}

static void on_completion(struct evhttp_request *req, struct demo *d, bool chat)
{
	if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
		send_error(req, 405, "Method Not Allowed", "use POST");
		return;
	}
	if (!d->loaded) {
		send_error(req, 503, "Loading", "the model is still loading");
		return;
	}
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	if (len > DEMO_BODY_MAX) {
		send_error(req, 413, "Payload Too Large", "request body too large");
		return;
	}
	json_error_t jerr;
	json_t *body = json_loadb((const char *)evbuffer_pullup(in, -1), len, 0, &jerr);
	if (!json_is_object(body)) {
		json_decref(body);
		send_error(req, 400, "Bad Request", "body must be a JSON object");
		return;
	}
	bool stream = json_is_true(json_object_get(body, "stream"));
	json_decref(body);
	d->requests++;

	char id[32];
	snprintf(id, sizeof(id), "%s-%lu", chat ? "chatcmpl" : "cmpl", d->requests);
	if (!stream) {
		char text[128] = "";
		for (size_t i = 0; i < N_WORDS; i++)
			strncat(text, words[i], sizeof(text) - strlen(text) - 1);
		send_json(req, 200, "OK", completion_body(d, chat, id, text, false, true));
		return;
	}

	struct stream *s = calloc(1, sizeof(*s));
	if (!s) {
		send_error(req, 500, "Internal Server Error", "out of memory");
		return;
	}
	s->d = d;
	d->streaming++;
	s->req = req;
	s->chat = chat;
	memcpy(s->id, id, sizeof(s->id));
	s->timer = evtimer_new(d->base, on_stream_tick, s);
	if (!s->timer) {
		stream_free(s);
		send_error(req, 500, "Internal Server Error", "out of memory");
		return;
	}
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Content-Type", "text/event-stream");
	evhttp_add_header(h, "Cache-Control", "no-cache");
	evhttp_send_reply_start(req, 200, "OK");
	struct evhttp_connection *conn = evhttp_request_get_connection(req);
	if (conn)
		evhttp_connection_set_closecb(conn, on_stream_closed, s);
	struct timeval zero = {0, 0};
	evtimer_add(s->timer, &zero);
}

static void on_completions(struct evhttp_request *req, void *arg)
{
	on_completion(req, arg, false);
}

static void on_chat(struct evhttp_request *req, void *arg)
{
	on_completion(req, arg, true);
}

static void on_other(struct evhttp_request *req, void *arg)
{
	send_error(req, 404, "Not Found", "no such route");
}

static void on_loaded(evutil_socket_t fd, short what, void *arg)
{
	struct demo *d = arg;
	d->loaded = true;
	printf("model %s loaded, holding %" PRIu64 " bytes\n", d->model, d->memory);
	fflush(stdout);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct demo *d = arg;
	printf("signal %d: shutting down\n", (int)sig);
	fflush(stdout);
	event_base_loopexit(d->base, NULL);
}

static void on_fail(evutil_socket_t fd, short what, void *arg)
{
	printf("--fail-after reached: exiting with status 3\n");
	fflush(stdout);
	exit(3);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: vram-demo-server --port N [--model NAME] [--memory 4GiB] [--load-time 2s]\n"
		   "                        [--chunks N] [--chunk-delay 200ms] [--fail-after 10s]\n"
		   "                        [--busy-health]\n");
}

static struct timeval ms_to_tv(uint64_t ms)
{
	struct timeval tv = {.tv_sec = (time_t)(ms / 1000),
			     .tv_usec = (suseconds_t)(ms % 1000) * 1000};
	return tv;
}

int main(int argc, char **argv)
{
	struct demo d = {.model = "demo", .chunks = 5, .chunk_delay_ms = 200};
	long port = -1;
	uint64_t fail_ms = 0;
	static const struct option opts[] = {
		{"port", required_argument, NULL, 'p'},
		{"model", required_argument, NULL, 'm'},
		{"memory", required_argument, NULL, 'M'},
		{"load-time", required_argument, NULL, 'l'},
		{"chunks", required_argument, NULL, 'c'},
		{"chunk-delay", required_argument, NULL, 'd'},
		{"fail-after", required_argument, NULL, 'f'},
		{"busy-health", no_argument, NULL, 'b'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int opt;
	while ((opt = getopt_long(argc, argv, "p:m:M:l:c:d:f:bh", opts, NULL)) != -1) {
		char *end;
		switch (opt) {
		case 'p':
			port = strtol(optarg, &end, 10);
			if (*end || port < 0 || port > 65535) {
				fprintf(stderr, "--port: expected 0..65535, got \"%s\"\n", optarg);
				return 2;
			}
			break;
		case 'm':
			d.model = optarg;
			break;
		case 'M':
			if (vram_units_parse_bytes(optarg, &d.memory) < 0) {
				fprintf(stderr, "--memory: expected a size like 4GiB, got \"%s\"\n", optarg);
				return 2;
			}
			break;
		case 'l':
		case 'd':
		case 'f': {
			uint64_t ms;
			if (vram_units_parse_duration_ms(optarg, &ms) < 0 || ms == VRAM_DURATION_NEVER) {
				fprintf(stderr, "%s: expected a duration like 2s or 250ms, got \"%s\"\n",
					argv[optind - 1], optarg);
				return 2;
			}
			if (opt == 'l')
				d.load_ms = ms;
			else if (opt == 'd')
				d.chunk_delay_ms = ms;
			else
				fail_ms = ms;
			break;
		}
		case 'c':
			d.chunks = (unsigned)strtoul(optarg, &end, 10);
			if (*end || d.chunks == 0 || d.chunks > DEMO_CHUNKS_MAX) {
				fprintf(stderr, "--chunks: expected 1..%d\n", DEMO_CHUNKS_MAX);
				return 2;
			}
			break;
		case 'b':
			d.busy_health = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (port < 0) {
		const char *env = getenv("PORT");
		port = env ? strtol(env, NULL, 10) : -1;
	}
	if (port <= 0 || port > 65535) {
		usage(stderr);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);

	int rc = 1;
	d.created = time(NULL);
	d.buffer = malloc(DEMO_REAL_BUFFER);
	if (d.buffer)
		memset(d.buffer, 0x5a, DEMO_REAL_BUFFER);
	d.base = event_base_new();
	d.http = d.base ? evhttp_new(d.base) : NULL;
	if (!d.http) {
		fprintf(stderr, "Failed to set up the HTTP server: out of memory\n");
		goto out;
	}
	evhttp_set_max_body_size(d.http, DEMO_BODY_MAX);
	evhttp_set_cb(d.http, "/health", on_health, &d);
	evhttp_set_cb(d.http, "/v1/models", on_models, &d);
	evhttp_set_cb(d.http, "/v1/completions", on_completions, &d);
	evhttp_set_cb(d.http, "/v1/chat/completions", on_chat, &d);
	evhttp_set_gencb(d.http, on_other, &d);
	if (!evhttp_bind_socket_with_handle(d.http, "127.0.0.1", (uint16_t)port)) {
		fprintf(stderr, "Failed to listen on 127.0.0.1:%ld: %s\n", port, strerror(errno));
		goto out;
	}
	const char *visible = getenv("CUDA_VISIBLE_DEVICES");
	printf("vram-demo-server: model %s on 127.0.0.1:%ld, GPUs [%s], loading for %" PRIu64 " ms\n",
	       d.model, port, visible ? visible : "unset", d.load_ms);

	struct event *loaded = evtimer_new(d.base, on_loaded, &d);
	struct event *sigterm = evsignal_new(d.base, SIGTERM, on_signal, &d);
	struct event *sigint = evsignal_new(d.base, SIGINT, on_signal, &d);
	struct event *fail = fail_ms ? evtimer_new(d.base, on_fail, &d) : NULL;
	if (!loaded || !sigterm || !sigint || (fail_ms && !fail)) {
		fprintf(stderr, "Failed to set up timers: out of memory\n");
	} else {
		struct timeval tv = ms_to_tv(d.load_ms);
		evtimer_add(loaded, &tv);
		evsignal_add(sigterm, NULL);
		evsignal_add(sigint, NULL);
		if (fail) {
			tv = ms_to_tv(fail_ms);
			evtimer_add(fail, &tv);
		}
		event_base_dispatch(d.base);
		rc = 0;
	}
	if (loaded)
		event_free(loaded);
	if (sigterm)
		event_free(sigterm);
	if (sigint)
		event_free(sigint);
	if (fail)
		event_free(fail);
out:
	if (d.http)
		evhttp_free(d.http);
	if (d.base)
		event_base_free(d.base);
	free(d.buffer);
	return rc;
}
