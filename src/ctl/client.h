/* SPDX-License-Identifier: MIT */
/*
 * vramctl's HTTP/1.1 client: blocking, one request per connection, over a
 * Unix socket or TCP. Small on purpose: vramctl talks to one daemon, whose
 * replies are bounded.
 */
#ifndef VRAM_CLIENT_H
#define VRAM_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#define VRAM_CLIENT_RESPONSE_MAX (64u * 1024 * 1024) /* bytes of a response accepted */
#define VRAM_CLIENT_PATH_MAX 108 /* sun_path */
#define VRAM_CLIENT_HEAD_MAX (64u * 1024) /* bytes of a request's line and headers */

struct vram_buf;

struct vram_client_url {
	bool is_unix;
	char socket_path[VRAM_CLIENT_PATH_MAX]; /* when is_unix */
	char host[256];                         /* when !is_unix; IPv6 without brackets */
	unsigned port;
	char prefix[256]; /* path before /api/..., "" normally; no trailing '/' */
};

/*
 * Parses where the daemon is: "http://HOST[:PORT][/prefix]" (port 80 if
 * omitted; "[::1]" for IPv6), "unix:PATH", or a socket path (anything that
 * is not http://). Returns 0, or -EINVAL with a reason in err.
 */
int vram_client_parse_url(const char *s, struct vram_client_url *ret, char *err, size_t err_size);

/*
 * The daemon's default control socket, as the config's state_dir default
 * has it: /run/vramd/vramd.sock for root, else $XDG_RUNTIME_DIR/vramd/vramd.sock,
 * else /tmp/vramd-$UID/vramd.sock. Written into buf; returns buf.
 */
char *vram_client_default_socket(char *buf, size_t size);

/* Describes a URL for messages ("/run/vramd/vramd.sock", "http://127.0.0.1:8600"). */
char *vram_client_url_format(const struct vram_client_url *url, char *buf, size_t size);

struct vram_client_response {
	int status;          /* HTTP status */
	char *content_type;  /* owned; NULL if none */
	char *body;          /* owned; NUL-terminated */
	size_t body_len;     /* bytes */
	char *headers;       /* owned; the header lines as received ("Name: value\r\n"…) */
};

void vram_client_response_done(struct vram_client_response *r);
/*
 * The value of header name (case-insensitive) copied into buf, or NULL when
 * the response has none or it does not fit.
 */
const char *vram_client_response_header(const struct vram_client_response *r, const char *name,
					char *buf, size_t size);

/*
 * Parses a complete HTTP/1.1 response (status line, headers, then a body by
 * Content-Length, chunked, or up to the end). Returns 0 and fills *ret
 * (release with vram_client_response_done), or -EPROTO with a reason in err.
 */
int vram_client_parse_response(const char *raw, size_t len, struct vram_client_response *ret,
			       char *err, size_t err_size);

/*
 * Sends method path (path begins with '/', may carry a query) with an
 * optional JSON body, and a bearer token when token is not NULL/empty.
 * timeout_ms bounds the whole exchange (0 = none). Returns 0 and fills *ret,
 * or -errno with a reason in err (cannot connect, timed out, bad reply).
 */
int vram_client_request(const struct vram_client_url *url, const char *method, const char *path,
			const char *json_body, const char *token, int timeout_ms,
			struct vram_client_response *ret, char *err, size_t err_size);
/* The same with extra header lines ("Name: value\r\n"…, or NULL). */
int vram_client_request_headers(const struct vram_client_url *url, const char *method,
				const char *path, const char *headers, const char *json_body,
				const char *token, int timeout_ms, struct vram_client_response *ret,
				char *err, size_t err_size);
/*
 * Appends the HTTP/1.1 request that vram_client_request_headers sends
 * (Connection: close, so the reply ends at end of stream) to out. Returns 0,
 * or -E2BIG / -ENOMEM from the buffer.
 */
int vram_client_format_request(struct vram_buf *out, const struct vram_client_url *url,
			       const char *method, const char *path, const char *headers,
			       const char *json_body, const char *token);

/*
 * Connects to the daemon (blocking). Returns the socket (close-on-exec;
 * caller closes), or -errno with a reason in err.
 */
int vram_client_connect(const struct vram_client_url *url, char *err, size_t err_size);
/*
 * Waits for fd to be ready for events (POLLIN, POLLOUT) until deadline_ms
 * (CLOCK_MONOTONIC ms, vram_client_now_ms; 0 = no deadline). Returns 0,
 * -ETIMEDOUT or -errno.
 */
int vram_client_wait_fd(int fd, short events, long long deadline_ms);
long long vram_client_now_ms(void); /* ms, CLOCK_MONOTONIC */
/* The words for a failed exchange (r: -errno; -ETIMEDOUT after timeout_ms) into err. */
void vram_client_io_error(const struct vram_client_url *url, int r, int timeout_ms, char *err,
			  size_t err_size);

#endif
