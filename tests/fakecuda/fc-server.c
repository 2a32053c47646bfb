/* SPDX-License-Identifier: MIT */
/*
 * A tiny model server on the fake driver, for vramd's integration tests of
 * the hook engine: it allocates FC_SERVER_MIB MiB of device memory (default
 * 64) with cuMemAlloc, in FC_SERVER_PIECES allocations of equal size
 * (default 1; at most 64), fills it with a pattern, and answers on 127.0.0.1:PORT
 *   GET /health  200 "ok"
 *   GET /check   200 "ok <bytes>" when the device memory still holds the
 *                pattern, 500 "mismatch at <offset>" otherwise
 *   GET /alloc/N 200 "ok <bytes>" when cuMemAlloc gives N MiB more (freed at
 *                once), 507 "cuMemAlloc: error <CUresult>" when it refuses
 *                (over the hook's cap)
 * and anything else with 404. Without PORT it exits at once with status
 * FC_SERVER_EXIT (default 0) after the check: for `vramctl run`.
 */
#include "fc-test.h"

#include <netinet/in.h>
#include <signal.h>

#define MAX_PIECES 64

static CUdeviceptr dev_mem[MAX_PIECES];
static size_t dev_bytes;  /* in all */
static size_t n_pieces = 1;

static unsigned char pattern(size_t i)
{
	return (unsigned char)((i * 131u + (i >> 12)) & 0xff);
}

static void fill(void)
{
	unsigned char *buf = malloc(dev_bytes);
	CHECK(buf);
	for (size_t i = 0; i < dev_bytes; i++)
		buf[i] = pattern(i);
	size_t piece = dev_bytes / n_pieces;
	for (size_t k = 0; k < n_pieces; k++)
		CK(cuMemcpyHtoD_v2(dev_mem[k], buf + k * piece, piece));
	free(buf);
}

/* Returns -1 when the memory holds the pattern, else the first offset that differs. */
static long check(void)
{
	unsigned char *buf = malloc(dev_bytes);
	CHECK(buf);
	size_t piece = dev_bytes / n_pieces;
	for (size_t k = 0; k < n_pieces; k++)
		CK(cuMemcpyDtoH_v2(buf + k * piece, dev_mem[k], piece));
	long bad = -1;
	for (size_t i = 0; i < dev_bytes && bad < 0; i++)
		if (buf[i] != pattern(i))
			bad = (long)i;
	free(buf);
	return bad;
}

static void answer(int fd, int status, const char *body)
{
	char out[256];
	int n = snprintf(out, sizeof(out),
			 "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
			 "Connection: close\r\n\r\n%s",
			 status, status == 200 ? "OK" : status == 404 ? "Not Found" : "Error", strlen(body), body);
	if (n > 0)
		(void)!write(fd, out, (size_t)n);
}

static void serve(int fd)
{
	char req[2048];
	size_t len = 0;
	while (len < sizeof(req) - 1) {
		ssize_t r = read(fd, req + len, sizeof(req) - 1 - len);
		if (r <= 0)
			break;
		len += (size_t)r;
		req[len] = '\0';
		if (strstr(req, "\r\n\r\n"))
			break;
	}
	req[len] = '\0';
	char body[128];
	if (strncmp(req, "GET /health", 11) == 0) {
		answer(fd, 200, "ok");
	} else if (strncmp(req, "GET /check", 10) == 0) {
		long bad = check();
		if (bad < 0) {
			snprintf(body, sizeof(body), "ok %zu", dev_bytes);
			answer(fd, 200, body);
		} else {
			snprintf(body, sizeof(body), "mismatch at %ld", bad);
			answer(fd, 500, body);
		}
	} else if (strncmp(req, "GET /alloc/", 11) == 0) {
		size_t bytes = (size_t)strtoul(req + 11, NULL, 10) * MiB;
		CUdeviceptr extra;
		CUresult r = cuMemAlloc_v2(&extra, bytes);
		if (r == CUDA_SUCCESS) {
			CK(cuMemFree_v2(extra));
			snprintf(body, sizeof(body), "ok %zu", bytes);
			answer(fd, 200, body);
		} else {
			snprintf(body, sizeof(body), "cuMemAlloc: error %d", (int)r);
			answer(fd, 507, body);
		}
	} else {
		answer(fd, 404, "not found");
	}
}

int main(void)
{
	const char *mib = getenv("FC_SERVER_MIB");
	dev_bytes = (size_t)(mib ? strtoul(mib, NULL, 10) : 64) * MiB;
	const char *pieces = getenv("FC_SERVER_PIECES");
	if (pieces && atoi(pieces) >= 1)
		n_pieces = atoi(pieces) > MAX_PIECES ? MAX_PIECES : (size_t)atoi(pieces);
	dev_bytes -= dev_bytes % n_pieces;
	CHECK(dev_bytes > 0);
	fc_setup(0);
	for (size_t k = 0; k < n_pieces; k++)
		CK(cuMemAlloc_v2(&dev_mem[k], dev_bytes / n_pieces));
	fill();

	const char *port = getenv("PORT");
	if (!port || !*port) {
		long bad = check();
		printf("fc-server: %zu bytes %s\n", dev_bytes, bad < 0 ? "ok" : "mismatch");
		const char *code = getenv("FC_SERVER_EXIT");
		return bad >= 0 ? 3 : code ? atoi(code) : 0;
	}
	signal(SIGPIPE, SIG_IGN);
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(lfd >= 0);
	int one = 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port)),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	CHECK(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	CHECK(listen(lfd, 16) == 0);
	printf("fc-server: %zu bytes on the device, listening on %s\n", dev_bytes, port);
	fflush(stdout);
	for (;;) {
		int fd = accept(lfd, NULL, NULL);
		if (fd < 0)
			continue;
		serve(fd);
		close(fd);
	}
}
