/* SPDX-License-Identifier: MIT */
/*
 * vramctl: where the daemon is (URL parsing), reading replies (lengths,
 * chunks, truncation), the status table a person reads, and the outcome line
 * of an action.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/units.h"
#include "ctl/client.h"
#include "ctl/ctl.h"
#include "ctl/table.h"

static void test_parse_url(void **state)
{
	struct vram_client_url u;
	char err[256];
	assert_int_equal(vram_client_parse_url("http://127.0.0.1:8600", &u, err, sizeof(err)), 0);
	assert_false(u.is_unix);
	assert_string_equal(u.host, "127.0.0.1");
	assert_int_equal(u.port, 8600);
	assert_string_equal(u.prefix, "");

	assert_int_equal(vram_client_parse_url("http://localhost", &u, err, sizeof(err)), 0);
	assert_string_equal(u.host, "localhost");
	assert_int_equal(u.port, 80);

	assert_int_equal(vram_client_parse_url("http://[::1]:9000/vram/", &u, err, sizeof(err)), 0);
	assert_string_equal(u.host, "::1");
	assert_int_equal(u.port, 9000);
	assert_string_equal(u.prefix, "/vram");

	assert_int_equal(vram_client_parse_url("/run/vramd/vramd.sock", &u, err, sizeof(err)), 0);
	assert_true(u.is_unix);
	assert_string_equal(u.socket_path, "/run/vramd/vramd.sock");

	assert_int_equal(vram_client_parse_url("unix:/tmp/x.sock", &u, err, sizeof(err)), 0);
	assert_true(u.is_unix);
	assert_string_equal(u.socket_path, "/tmp/x.sock");

	char buf[128];
	assert_int_equal(vram_client_parse_url("http://[::1]:9000", &u, err, sizeof(err)), 0);
	assert_string_equal(vram_client_url_format(&u, buf, sizeof(buf)), "http://[::1]:9000");

	assert_int_equal(vram_client_parse_url("http://h:0", &u, err, sizeof(err)), -EINVAL);
	assert_int_equal(vram_client_parse_url("http://h:70000", &u, err, sizeof(err)), -EINVAL);
	assert_int_equal(vram_client_parse_url("http://h:80x", &u, err, sizeof(err)), -EINVAL);
	assert_int_equal(vram_client_parse_url("http://:80", &u, err, sizeof(err)), -EINVAL);
	assert_int_equal(vram_client_parse_url("http://[::1:80", &u, err, sizeof(err)), -EINVAL);
	assert_int_equal(vram_client_parse_url("https://h", &u, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "https"));
	assert_int_equal(vram_client_parse_url("", &u, err, sizeof(err)), -EINVAL);
	char longpath[200];
	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	assert_int_equal(vram_client_parse_url(longpath, &u, err, sizeof(err)), -EINVAL);
}

static void test_default_socket(void **state)
{
	char buf[128], want[128];
	const char *old = getenv("XDG_RUNTIME_DIR");
	char *saved = old ? strdup(old) : NULL;
	setenv("XDG_RUNTIME_DIR", "/run/user/1234", 1);
	vram_client_default_socket(buf, sizeof(buf));
	if (geteuid() == 0)
		assert_string_equal(buf, "/run/vramd/vramd.sock");
	else
		assert_string_equal(buf, "/run/user/1234/vramd/vramd.sock");
	unsetenv("XDG_RUNTIME_DIR");
	vram_client_default_socket(buf, sizeof(buf));
	if (geteuid() == 0)
		snprintf(want, sizeof(want), "/run/vramd/vramd.sock");
	else
		snprintf(want, sizeof(want), "/tmp/vramd-%u/vramd.sock", (unsigned)geteuid());
	assert_string_equal(buf, want);
	if (saved)
		setenv("XDG_RUNTIME_DIR", saved, 1);
	free(saved);
}

static void test_parse_response(void **state)
{
	struct vram_client_response r;
	char err[256];
	const char *plain = "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
			    "Content-Length: 5\r\n\r\nhelloEXTRA";
	assert_int_equal(vram_client_parse_response(plain, strlen(plain), &r, err, sizeof(err)), 0);
	assert_int_equal(r.status, 404);
	assert_string_equal(r.content_type, "application/json");
	assert_int_equal(r.body_len, 5);
	assert_string_equal(r.body, "hello");
	vram_client_response_done(&r);

	const char *chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
			      "5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n";
	assert_int_equal(vram_client_parse_response(chunked, strlen(chunked), &r, err, sizeof(err)), 0);
	assert_int_equal(r.status, 200);
	assert_null(r.content_type);
	assert_string_equal(r.body, "hello, world");
	vram_client_response_done(&r);

	const char *to_eof = "HTTP/1.0 200 OK\r\n\r\nall of it";
	assert_int_equal(vram_client_parse_response(to_eof, strlen(to_eof), &r, err, sizeof(err)), 0);
	assert_string_equal(r.body, "all of it");
	vram_client_response_done(&r);

	const char *empty = "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n";
	assert_int_equal(vram_client_parse_response(empty, strlen(empty), &r, err, sizeof(err)), 0);
	assert_int_equal(r.body_len, 0);
	assert_string_equal(r.body, "");
	vram_client_response_done(&r);

	const char *truncated = "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort";
	assert_int_equal(vram_client_parse_response(truncated, strlen(truncated), &r, err, sizeof(err)),
			 -EPROTO);
	assert_non_null(strstr(err, "truncated"));
	const char *bad_chunk = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
	assert_int_equal(vram_client_parse_response(bad_chunk, strlen(bad_chunk), &r, err, sizeof(err)),
			 -EPROTO);
	const char *short_chunk = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc";
	assert_int_equal(
		vram_client_parse_response(short_chunk, strlen(short_chunk), &r, err, sizeof(err)),
		-EPROTO);
	assert_int_equal(vram_client_parse_response("garbage", 7, &r, err, sizeof(err)), -EPROTO);
	const char *no_end = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n";
	assert_int_equal(vram_client_parse_response(no_end, strlen(no_end), &r, err, sizeof(err)),
			 -EPROTO);
}

#define FULL "\xe2\x96\x88"
#define EMPTY "\xe2\x96\x91"

static void test_bar(void **state)
{
	char buf[64];
	assert_string_equal(vram_table_bar(48, 80, 10, buf, sizeof(buf)),
			    FULL FULL FULL FULL FULL FULL EMPTY EMPTY EMPTY EMPTY);
	assert_string_equal(vram_table_bar(0, 80, 4, buf, sizeof(buf)), EMPTY EMPTY EMPTY EMPTY);
	/* Anything in use shows. */
	assert_string_equal(vram_table_bar(1, 1000, 4, buf, sizeof(buf)), FULL EMPTY EMPTY EMPTY);
	assert_string_equal(vram_table_bar(90, 80, 4, buf, sizeof(buf)), FULL FULL FULL FULL);
	assert_string_equal(vram_table_bar(5, 0, 2, buf, sizeof(buf)), EMPTY EMPTY);
	/* Never past the buffer. */
	char small[8];
	vram_table_bar(10, 10, 10, small, sizeof(small));
	assert_string_equal(small, FULL FULL);
}

static void test_seconds(void **state)
{
	char buf[32];
	assert_string_equal(vram_table_format_seconds(-1, buf, sizeof(buf)), "-");
	assert_string_equal(vram_table_format_seconds(45.2, buf, sizeof(buf)), "45s");
	assert_string_equal(vram_table_format_seconds(600, buf, sizeof(buf)), "10m");
	assert_string_equal(vram_table_format_seconds(3600 + 5 * 60, buf, sizeof(buf)), "1h05m");
	assert_string_equal(vram_table_format_seconds(2 * 86400 + 4 * 3600, buf, sizeof(buf)), "2d04h");
}

/* The shape of GET /api/status (trimmed to what the table reads). */
static const char status_json[] =
	"{\"gpus\": ["
	" {\"index\": 0, \"name\": \"Simulated GPU\", \"memory\": {\"total\": 85899345920, \"used\": 51539607552, \"free\": 34359738368},"
	"  \"utilization_percent\": null, \"processes\": [{\"pid\": 4242, \"workload\": \"llm\", \"used_bytes\": 51539607552}]},"
	" {\"index\": 1, \"name\": \"Simulated GPU\", \"memory\": {\"total\": 85899345920, \"used\": 0, \"free\": 85899345920},"
	"  \"utilization_percent\": 37, \"processes\": []}"
	"], \"workloads\": ["
	" {\"name\": \"llm\", \"state\": \"ready\", \"gpus\": [{\"index\": 0, \"uuid\": \"GPU-sim-0\"}], \"pid\": 4242,"
	"  \"memory\": {\"gpu_bytes\": 51539607552, \"offloaded_bytes\": 0},"
	"  \"idle_seconds\": 45.2, \"engine\": {\"name\": \"sim\"},"
	"  \"timeouts\": {\"offload_after_seconds\": 600, \"release_after_seconds\": 3600}},"
	" {\"name\": \"tts\", \"state\": \"offloaded\", \"gpus\": [], \"pid\": 77,"
	"  \"memory\": {\"gpu_bytes\": 0, \"offloaded_bytes\": 2147483648},"
	"  \"idle_seconds\": 700, \"engine\": {\"name\": \"sim\"},"
	"  \"timeouts\": {\"offload_after_seconds\": 0, \"release_after_seconds\": null}},"
	" {\"name\": \"asr\", \"state\": \"parked\", \"gpus\": [], \"pid\": 78,"
	"  \"memory\": {\"gpu_bytes\": 0, \"offloaded_bytes\": 0, \"parked_bytes\": 3221225472},"
	"  \"idle_seconds\": 7300, \"engine\": {\"name\": \"hook\"},"
	"  \"timeouts\": {\"offload_after_seconds\": 600, \"release_after_seconds\": null,"
	"                \"park_after_seconds\": 7200}},"
	" {\"name\": \"embed\", \"state\": \"failed\", \"gpus\": [], \"pid\": null, \"memory\": {\"gpu_bytes\": 0},"
	"  \"idle_seconds\": 12, \"engine\": {\"name\": null}, \"timeouts\": {},"
	"  \"last_error\": \"exited with status 3\"}"
	"]}";

static void test_status_table(void **state)
{
	json_t *j = json_loads(status_json, 0, NULL);
	assert_non_null(j);
	char *text = vram_table_status(j);
	json_decref(j);
	assert_non_null(text);
	if (getenv("VRAM_TEST_VERBOSE"))
		fputs(text, stderr);
	/* The GPU rows: bar, used/total in one unit, utilisation, processes. */
	assert_non_null(strstr(text, "[" FULL FULL FULL FULL FULL FULL EMPTY EMPTY EMPTY EMPTY "] 48.0/80.0GiB"));
	assert_non_null(strstr(text, "[" EMPTY EMPTY EMPTY EMPTY EMPTY EMPTY EMPTY EMPTY EMPTY EMPTY "] 0.0/80.0GiB"));
	assert_non_null(strstr(text, "llm(48GiB)"));
	assert_non_null(strstr(text, "37%"));
	/* Header rows. */
	assert_non_null(strstr(text, "GPU  NAME"));
	assert_non_null(strstr(text, "WORKLOAD  STATE"));
	/* The workload rows, columns aligned: find the llm row and check its cells in order. */
	const char *row = strstr(text, "\nllm ");
	assert_non_null(row);
	const char *eol = strchr(row + 1, '\n');
	char line[256];
	snprintf(line, sizeof(line), "%.*s", (int)(eol - row - 1), row + 1);
	const char *p = line;
	const char *want[] = { "llm", "ready", "0", "4242", "45s", "sim", "10m/1h00m" };
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		const char *q = strstr(p, want[i]);
		assert_non_null(q);
		p = q + strlen(want[i]);
	}
	/* Parked in host RAM. */
	row = strstr(text, "\ntts ");
	assert_non_null(row);
	assert_non_null(strstr(row, "2GiB host"));
	assert_non_null(strstr(row, "11m"));
	assert_non_null(strstr(row, "0s/never"));
	/* Parked on disk: its bytes are marked "disk", and park_after shows with the timeouts. */
	row = strstr(text, "\nasr ");
	assert_non_null(row);
	eol = strchr(row + 1, '\n');
	snprintf(line, sizeof(line), "%.*s", (int)(eol - row - 1), row + 1);
	assert_non_null(strstr(line, "3GiB disk"));
	assert_non_null(strstr(line, "2h01m"));
	assert_non_null(strstr(line, "10m/never, park 2h00m"));
	/* The failed one shows dashes for what it does not have, and its error below. */
	row = strstr(text, "\nembed ");
	assert_non_null(row);
	assert_non_null(strstr(row, "failed"));
	assert_non_null(strstr(text, "last errors:\nembed: exited with status 3\n"));
	/* No trailing spaces on any line. */
	assert_null(strstr(text, " \n"));
	/* Columns line up: "STATE" starts where "ready" starts. */
	const char *hdr = strstr(text, "WORKLOAD");
	const char *llm = strstr(text, "\nllm ") + 1;
	assert_int_equal(strstr(hdr, "STATE") - hdr, strstr(llm, "ready") - llm);
	free(text);

	/* Empty status. */
	j = json_loads("{\"gpus\": [], \"workloads\": []}", 0, NULL);
	text = vram_table_status(j);
	json_decref(j);
	assert_string_equal(text, "no GPUs\n\nno workloads\n");
	free(text);
}

/*
 * The HOST line: what workloads hold in RAM against the budget, the host's
 * total, parked, kept and on disk; a size the daemon does not know is "?"
 * or "no budget", never 0; an older daemon without "host" gets no line.
 */
static void test_status_host_line(void **state)
{
	json_t *j = json_loads("{\"gpus\": [], \"workloads\": [], \"host\": {"
			       "\"total\": 68719476736, \"available\": 42949672960, \"reserve\": 8589934592,"
			       " \"limit\": null, \"budget\": 42949672960, \"parked\": 21474836480,"
			       " \"kept\": 2147483648, \"on_disk\": 17179869184}}", 0, NULL);
	assert_non_null(j);
	char *text = vram_table_status(j);
	json_decref(j);
	assert_string_equal(text, "no GPUs\n"
				  "HOST  [" FULL FULL FULL FULL FULL FULL EMPTY EMPTY EMPTY EMPTY
				  "] 22.0/40.0GiB budget  total 64GiB  parked 20GiB  kept 2GiB  disk 16GiB\n"
				  "\nno workloads\n");
	free(text);

	j = json_loads("{\"gpus\": [], \"workloads\": [], \"host\": {\"total\": null,"
		       " \"budget\": null, \"parked\": 0, \"kept\": 0, \"on_disk\": 0}}", 0, NULL);
	text = vram_table_status(j);
	json_decref(j);
	assert_non_null(strstr(text, "HOST  no budget  total ?  parked 0B  kept 0B  disk 0B\n"));
	free(text);
}

static void test_action_line(void **state)
{
	char buf[256];
	assert_string_equal(vram_ctl_action_line("llm", "offload", 0.31, 20 * VRAM_GiB, "sim", buf,
						 sizeof(buf)),
			    "llm: offloaded in 0.31 s (20GiB) via sim");
	assert_string_equal(vram_ctl_action_line("llm", "start", 2.0, 0, "sim", buf, sizeof(buf)),
			    "llm: started in 2.00 s");
	assert_string_equal(vram_ctl_action_line("tts", "release", 0.05, 0, NULL, buf, sizeof(buf)),
			    "tts: released in 0.05 s");
	assert_string_equal(vram_ctl_action_line("asr", "park", 1.5, 3 * VRAM_GiB, "hook", buf,
						 sizeof(buf)),
			    "asr: parked in 1.50 s (3GiB) via hook");
}

static void test_usage_exit_codes(void **state)
{
	char *help[] = { "vramctl", "--help", NULL };
	assert_int_equal(vram_ctl_main(2, help), VRAM_CTL_EXIT_OK);
	char *none[] = { "vramctl", NULL };
	assert_int_equal(vram_ctl_main(1, none), VRAM_CTL_EXIT_USAGE);
	char *unknown[] = { "vramctl", "frobnicate", NULL };
	assert_int_equal(vram_ctl_main(2, unknown), VRAM_CTL_EXIT_USAGE);
	char *badopt[] = { "vramctl", "status", "--bogus", NULL };
	assert_int_equal(vram_ctl_main(3, badopt), VRAM_CTL_EXIT_USAGE);
	char *noname[] = { "vramctl", "start", NULL };
	assert_int_equal(vram_ctl_main(2, noname), VRAM_CTL_EXIT_USAGE);
	char *badname[] = { "vramctl", "start", "../etc", NULL };
	assert_int_equal(vram_ctl_main(3, badname), VRAM_CTL_EXIT_USAGE);
	char *baddur[] = { "vramctl", "timeout", "llm", "soon", NULL };
	assert_int_equal(vram_ctl_main(4, baddur), VRAM_CTL_EXIT_USAGE);
	/* No daemon there: failed, not usage. */
	char *nodaemon[] = { "vramctl", "--url", "/nonexistent/vramd.sock", "status", NULL };
	assert_int_equal(vram_ctl_main(4, nodaemon), VRAM_CTL_EXIT_FAILED);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_url),
		cmocka_unit_test(test_default_socket),
		cmocka_unit_test(test_parse_response),
		cmocka_unit_test(test_bar),
		cmocka_unit_test(test_seconds),
		cmocka_unit_test(test_status_table),
		cmocka_unit_test(test_status_host_line),
		cmocka_unit_test(test_action_line),
		cmocka_unit_test(test_usage_exit_codes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
