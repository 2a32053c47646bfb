/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the hook protocol (src/proto/hook_proto.h): every message
 * in every version, what an older version cannot carry, bad input; and of
 * the park file's header and checksums (src/proto/park_file.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proto/hook_proto.h"
#include "proto/park_file.h"

static struct vram_hook_proto_msg roundtrip(const struct vram_hook_proto_msg *in, long *ret_len)
{
	uint8_t buf[VRAM_HOOK_PROTO_MAX_MESSAGE];
	long n = vram_hook_proto_encode(in, buf, sizeof(buf));
	assert_true(n > 0);
	struct vram_hook_proto_msg out;
	assert_int_equal(vram_hook_proto_decode(buf, (size_t)n, &out), n);
	*ret_len = n;
	return out;
}

static void test_hello_roundtrip(void **state)
{
	(void)state;
	struct vram_hook_proto_msg m;
	memset(&m, 0, sizeof(m));
	m.type = VRAM_HOOK_MSG_HELLO;
	m.seq = 7;
	m.u.hello.pid = 4242;
	m.u.hello.ndev = 2;
	strcpy(m.u.hello.workload, "llm");
	m.u.hello.dev[1].index = 1;
	m.u.hello.dev[1].cap = 20ull << 30;
	m.u.hello.dev[1].physical = 80ull << 30;
	m.u.hello.dev[1].uuid[15] = 0xab;
	long n;
	struct vram_hook_proto_msg out = roundtrip(&m, &n);
	assert_int_equal(n, VRAM_HOOK_PROTO_HEADER_SIZE + VRAM_HOOK_PROTO_HELLO_SIZE);
	assert_int_equal(out.type, VRAM_HOOK_MSG_HELLO);
	assert_int_equal(out.seq, 7);
	assert_int_equal(out.u.hello.pid, 4242);
	assert_int_equal(out.u.hello.ndev, 2);
	assert_string_equal(out.u.hello.workload, "llm");
	assert_int_equal(out.u.hello.dev[1].cap, 20ull << 30);
	assert_int_equal(out.u.hello.dev[1].uuid[15], 0xab);
}

static void test_result_roundtrip(void **state)
{
	(void)state;
	struct vram_hook_proto_msg m;
	memset(&m, 0, sizeof(m));
	m.type = VRAM_HOOK_MSG_RESULT;
	m.u.result.request_id = 99;
	m.u.result.op = VRAM_HOOK_MSG_RESTORE;
	m.u.result.status = -ENOMEM;
	m.u.result.state = VRAM_HOOK_STATE_OFFLOADED;
	m.u.result.missing = 123456789;
	m.u.result.usec = 1500000;
	strcpy(m.u.result.text, "Failed to restore: 123456789 bytes missing");
	long n;
	struct vram_hook_proto_msg out = roundtrip(&m, &n);
	assert_int_equal(out.u.result.request_id, 99);
	assert_int_equal(out.u.result.status, -ENOMEM);
	assert_int_equal(out.u.result.missing, 123456789);
	assert_string_equal(out.u.result.text, m.u.result.text);
}

static void test_wire_layout_is_fixed(void **state)
{
	(void)state;
	struct vram_hook_proto_msg m;
	memset(&m, 0, sizeof(m));
	m.type = VRAM_HOOK_MSG_OFFLOAD;
	m.seq = 0x01020304;
	m.u.command.request_id = 0x0a0b0c0d;
	m.u.command.flags = VRAM_HOOK_OFFLOAD_DROP_HOST;
	uint8_t buf[64];
	assert_int_equal(vram_hook_proto_encode(&m, buf, sizeof(buf)), 24);
	static const uint8_t want[24] = { 'V', 'R', 'H', 'K', 4, 0, 3, 0, 8, 0, 0, 0, 4, 3, 2, 1,
					  0x0d, 0x0c, 0x0b, 0x0a, 1, 0, 0, 0 };
	assert_memory_equal(buf, want, sizeof(want));
}

/* Version 4: PROGRESS and GRANT round-trip with every device's bytes, the
 * new flags go only where they belong, and older versions cannot carry them. */
static void test_progress_and_grant(void **state)
{
	(void)state;
	struct vram_hook_proto_msg m, out;
	long n;
	memset(&m, 0, sizeof(m));
	m.type = VRAM_HOOK_MSG_GRANT;
	m.u.grant.request_id = 7;
	m.u.grant.flags = VRAM_HOOK_GRANT_CANCEL;
	for (int i = 0; i < VRAM_HOOK_PROTO_MAX_DEVICES; i++)
		m.u.grant.bytes[i] = ((uint64_t)i << 40) | 0x1234;
	out = roundtrip(&m, &n);
	assert_int_equal(n, VRAM_HOOK_PROTO_HEADER_SIZE + 8 + 8 * VRAM_HOOK_PROTO_MAX_DEVICES);
	assert_int_equal(out.u.grant.request_id, 7);
	assert_int_equal(out.u.grant.flags, VRAM_HOOK_GRANT_CANCEL);
	for (int i = 0; i < VRAM_HOOK_PROTO_MAX_DEVICES; i++)
		assert_true(out.u.grant.bytes[i] == (((uint64_t)i << 40) | 0x1234));

	uint8_t buf[VRAM_HOOK_PROTO_MAX_MESSAGE];
	m.type = VRAM_HOOK_MSG_PROGRESS; /* PROGRESS has no flags */
	assert_int_equal(vram_hook_proto_encode(&m, buf, sizeof(buf)), -EINVAL);
	m.u.grant.flags = 0;
	out = roundtrip(&m, &n);
	assert_int_equal(out.type, VRAM_HOOK_MSG_PROGRESS);
	assert_true(out.u.grant.bytes[3] == (((uint64_t)3 << 40) | 0x1234));
	/* a version-3 hook knows neither message nor the new command flags */
	m.version = 3;
	assert_int_equal(vram_hook_proto_encode(&m, buf, sizeof(buf)), -EINVAL);
	memset(&m, 0, sizeof(m));
	m.version = 3;
	m.type = VRAM_HOOK_MSG_RESTORE;
	m.u.command.flags = VRAM_HOOK_RESTORE_GRANTED;
	assert_int_equal(vram_hook_proto_encode(&m, buf, sizeof(buf)), -EINVAL);
	m.version = 0;
	out = roundtrip(&m, &n);
	assert_int_equal(out.u.command.flags, VRAM_HOOK_RESTORE_GRANTED);
	/* an unknown command flag is not a message of version 4 */
	long len = vram_hook_proto_encode(&m, buf, sizeof(buf));
	assert_true(len > 0);
	buf[VRAM_HOOK_PROTO_HEADER_SIZE + 4] = 0x80;
	assert_int_equal(vram_hook_proto_decode(buf, (size_t)len, &out), -EBADMSG);
}

static void test_partial_and_stream(void **state)
{
	(void)state;
	struct vram_hook_proto_msg a, b, out;
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	a.type = VRAM_HOOK_MSG_PING;
	b.type = VRAM_HOOK_MSG_USAGE;
	b.u.usage.ndev = 1;
	b.u.usage.state = VRAM_HOOK_STATE_RUNNING;
	b.u.usage.dev[0].used = 5;
	uint8_t buf[2 * VRAM_HOOK_PROTO_MAX_MESSAGE];
	long na = vram_hook_proto_encode(&a, buf, sizeof(buf));
	long nb = vram_hook_proto_encode(&b, buf + na, sizeof(buf) - (size_t)na);
	assert_int_equal(na, VRAM_HOOK_PROTO_HEADER_SIZE);
	/* Every prefix of a message asks for more. */
	for (long i = 0; i < nb; i++)
		assert_int_equal(vram_hook_proto_decode(buf + na, (size_t)i, &out), 0);
	assert_int_equal(vram_hook_proto_decode(buf, (size_t)(na + nb), &out), na);
	assert_int_equal(out.type, VRAM_HOOK_MSG_PING);
	assert_int_equal(vram_hook_proto_decode(buf + na, (size_t)nb, &out), nb);
	assert_int_equal(out.u.usage.dev[0].used, 5);
}

static void test_rejects_bad_input(void **state)
{
	(void)state;
	struct vram_hook_proto_msg m, out;
	memset(&m, 0, sizeof(m));
	m.type = VRAM_HOOK_MSG_RESULT;
	m.u.result.op = VRAM_HOOK_MSG_OFFLOAD;
	uint8_t buf[VRAM_HOOK_PROTO_MAX_MESSAGE], bad[VRAM_HOOK_PROTO_MAX_MESSAGE];
	long n = vram_hook_proto_encode(&m, buf, sizeof(buf));
	assert_true(n > 0);

	memcpy(bad, buf, (size_t)n);
	bad[0] = 'X'; /* magic */
	assert_int_equal(vram_hook_proto_decode(bad, (size_t)n, &out), -EBADMSG);
	assert_int_equal(vram_hook_proto_decode(bad, 1, &out), -EBADMSG);
	memcpy(bad, buf, (size_t)n);
	bad[4] = VRAM_HOOK_PROTO_VERSION + 1; /* a version from the future */
	assert_int_equal(vram_hook_proto_decode(bad, (size_t)n, &out), -EBADMSG);
	bad[4] = 0;
	assert_int_equal(vram_hook_proto_decode(bad, (size_t)n, &out), -EBADMSG);
	memcpy(bad, buf, (size_t)n);
	bad[6] = 77; /* type */
	assert_int_equal(vram_hook_proto_decode(bad, (size_t)n, &out), -EBADMSG);
	memcpy(bad, buf, (size_t)n);
	bad[8] ^= 1; /* length does not match the type */
	assert_int_equal(vram_hook_proto_decode(bad, (size_t)n, &out), -EBADMSG);
	memcpy(bad, buf, (size_t)n);
	memset(bad + n - VRAM_HOOK_PROTO_TEXT_MAX, 'a', VRAM_HOOK_PROTO_TEXT_MAX); /* no NUL */
	assert_int_equal(vram_hook_proto_decode(bad, (size_t)n, &out), -EBADMSG);
	memcpy(bad, buf, (size_t)n);
	bad[VRAM_HOOK_PROTO_HEADER_SIZE + 4] = 9; /* op */
	assert_int_equal(vram_hook_proto_decode(bad, (size_t)n, &out), -EBADMSG);

	/* Too many devices: refused on both sides. */
	memset(&m, 0, sizeof(m));
	m.type = VRAM_HOOK_MSG_USAGE;
	m.u.usage.ndev = VRAM_HOOK_PROTO_MAX_DEVICES + 1;
	assert_int_equal(vram_hook_proto_encode(&m, buf, sizeof(buf)), -EINVAL);
	m.u.usage.ndev = 1;
	n = vram_hook_proto_encode(&m, buf, sizeof(buf));
	buf[VRAM_HOOK_PROTO_HEADER_SIZE + 4] = VRAM_HOOK_PROTO_MAX_DEVICES + 1;
	assert_int_equal(vram_hook_proto_decode(buf, (size_t)n, &out), -EBADMSG);
	/* A buffer too small for the message. */
	assert_int_equal(vram_hook_proto_encode(&m, buf, 20), -ENOBUFS);
	m.type = 0;
	assert_int_equal(vram_hook_proto_encode(&m, buf, sizeof(buf)), -EINVAL);
}

static void test_hello_limit_invalid(void **state)
{
	(void)state;
	struct vram_hook_proto_msg m;
	memset(&m, 0, sizeof(m));
	m.type = VRAM_HOOK_MSG_HELLO;
	m.u.hello.pid = 1234;
	m.u.hello.ndev = 1;
	strcpy(m.u.hello.workload, "llm");
	m.u.hello.flags = VRAM_HOOK_HELLO_LIMIT_INVALID;
	strcpy(m.u.hello.limit_text, "lots");
	long n;
	struct vram_hook_proto_msg out = roundtrip(&m, &n);
	assert_int_equal(n, VRAM_HOOK_PROTO_HEADER_SIZE + VRAM_HOOK_PROTO_HELLO_SIZE);
	assert_int_equal(out.version, VRAM_HOOK_PROTO_VERSION);
	assert_int_equal(out.u.hello.flags, VRAM_HOOK_HELLO_LIMIT_INVALID);
	assert_string_equal(out.u.hello.limit_text, "lots");
	assert_string_equal(out.u.hello.workload, "llm");

	/* The text is cut to its field and stays terminated. */
	memset(m.u.hello.limit_text, 'x', sizeof(m.u.hello.limit_text));
	out = roundtrip(&m, &n);
	assert_int_equal(strlen(out.u.hello.limit_text), VRAM_HOOK_PROTO_LIMIT_TEXT_MAX - 1);

	/* An unknown flag or an unterminated text is refused. */
	uint8_t buf[VRAM_HOOK_PROTO_MAX_MESSAGE];
	strcpy(m.u.hello.limit_text, "lots");
	n = vram_hook_proto_encode(&m, buf, sizeof(buf));
	size_t flags_at = VRAM_HOOK_PROTO_HEADER_SIZE + VRAM_HOOK_PROTO_HELLO_V1_SIZE;
	buf[flags_at] |= 0x4;
	assert_int_equal(vram_hook_proto_decode(buf, (size_t)n, &out), -EBADMSG);
	buf[flags_at] &= (uint8_t)~0x4u;
	/* The group flag (a hook that moves with its workload's other processes) is known. */
	buf[flags_at] |= 0x2;
	assert_int_equal(vram_hook_proto_decode(buf, (size_t)n, &out), n);
	assert_int_equal(out.u.hello.flags, VRAM_HOOK_HELLO_LIMIT_INVALID | VRAM_HOOK_HELLO_GROUP);
	buf[flags_at] &= (uint8_t)~0x2u;
	memset(buf + flags_at + 4, 'a', VRAM_HOOK_PROTO_LIMIT_TEXT_MAX);
	assert_int_equal(vram_hook_proto_decode(buf, (size_t)n, &out), -EBADMSG);
}

/* A hook of version 1 (loaded before an upgrade) still speaks to vramd. */
static void test_hello_version_1(void **state)
{
	(void)state;
	struct vram_hook_proto_msg m;
	memset(&m, 0, sizeof(m));
	m.version = 1;
	m.type = VRAM_HOOK_MSG_HELLO;
	m.u.hello.pid = 77;
	m.u.hello.ndev = 1;
	strcpy(m.u.hello.workload, "old");
	m.u.hello.dev[0].cap = 1ull << 30;
	long n;
	struct vram_hook_proto_msg out = roundtrip(&m, &n);
	assert_int_equal(n, VRAM_HOOK_PROTO_HEADER_SIZE + VRAM_HOOK_PROTO_HELLO_V1_SIZE);
	assert_int_equal(out.version, 1);
	assert_int_equal(out.u.hello.pid, 77);
	assert_string_equal(out.u.hello.workload, "old");
	assert_int_equal(out.u.hello.dev[0].cap, 1ull << 30);
	assert_int_equal(out.u.hello.flags, 0);
	assert_string_equal(out.u.hello.limit_text, "");

	/* The bytes on the wire say version 1, and a version-2 length is refused for it. */
	uint8_t buf[VRAM_HOOK_PROTO_MAX_MESSAGE];
	n = vram_hook_proto_encode(&m, buf, sizeof(buf));
	assert_int_equal(buf[4], 1);
	assert_int_equal(buf[5], 0);
	vram_hook_proto_put32(buf + 8, VRAM_HOOK_PROTO_HELLO_SIZE);
	assert_int_equal(vram_hook_proto_decode(buf, sizeof(buf), &out), -EBADMSG);

	/* Version 1 cannot carry the flag: refused rather than dropped. */
	m.u.hello.flags = VRAM_HOOK_HELLO_LIMIT_INVALID;
	assert_int_equal(vram_hook_proto_encode(&m, buf, sizeof(buf)), -EINVAL);
	m.version = VRAM_HOOK_PROTO_VERSION + 1;
	m.u.hello.flags = 0;
	assert_int_equal(vram_hook_proto_encode(&m, buf, sizeof(buf)), -EINVAL);

	/* Other messages are the same in version 1, and encoded so on request. */
	memset(&m, 0, sizeof(m));
	m.version = 1;
	m.type = VRAM_HOOK_MSG_OFFLOAD;
	m.u.command.request_id = 5;
	n = vram_hook_proto_encode(&m, buf, sizeof(buf));
	assert_int_equal(n, VRAM_HOOK_PROTO_HEADER_SIZE + VRAM_HOOK_PROTO_COMMAND_SIZE);
	assert_int_equal(buf[4], 1);
	assert_int_equal(vram_hook_proto_decode(buf, (size_t)n, &out), n);
	assert_int_equal(out.version, 1);
	assert_int_equal(out.u.command.request_id, 5);
}

static void test_long_strings_are_cut(void **state)
{
	(void)state;
	struct vram_hook_proto_msg m;
	memset(&m, 0, sizeof(m));
	m.type = VRAM_HOOK_MSG_HELLO;
	memset(m.u.hello.workload, 'w', sizeof(m.u.hello.workload)); /* unterminated */
	long n;
	struct vram_hook_proto_msg out = roundtrip(&m, &n);
	assert_int_equal(strlen(out.u.hello.workload), VRAM_HOOK_PROTO_NAME_MAX - 1);
}


/* PARK carries its path; DROP_HOST is a plain command; both only from version 3. */
static void test_park_and_drop_host(void **state)
{
	(void)state;
	struct vram_hook_proto_msg m, out;
	memset(&m, 0, sizeof(m));
	m.type = VRAM_HOOK_MSG_PARK;
	m.seq = 0x01020304;
	m.u.command.request_id = 0x0a0b0c0d;
	strcpy(m.u.command.path, "/var/lib/vramd/park/llm-4242.park");
	long n;
	out = roundtrip(&m, &n);
	assert_int_equal(n, VRAM_HOOK_PROTO_HEADER_SIZE + 8 + VRAM_HOOK_PROTO_PATH_MAX);
	assert_int_equal(out.version, VRAM_HOOK_PROTO_VERSION);
	assert_int_equal(out.type, VRAM_HOOK_MSG_PARK);
	assert_int_equal(out.u.command.request_id, 0x0a0b0c0d);
	assert_string_equal(out.u.command.path, "/var/lib/vramd/park/llm-4242.park");

	/* the bytes: header, id, flags, then the path NUL-padded to 256 */
	uint8_t buf[VRAM_HOOK_PROTO_MAX_MESSAGE];
	n = vram_hook_proto_encode(&m, buf, sizeof(buf));
	static const uint8_t head[24] = { 'V', 'R', 'H', 'K', VRAM_HOOK_PROTO_VERSION, 0, 7, 0, 0x08, 0x01, 0, 0, 4, 3, 2, 1,
					  0x0d, 0x0c, 0x0b, 0x0a, 0, 0, 0, 0 };
	assert_memory_equal(buf, head, sizeof(head));
	assert_memory_equal(buf + 24, "/var/lib/vramd/park/llm-4242.park", 34);
	assert_int_equal(buf[n - 1], 0);

	/* a path with no NUL in its field: refused by the encoder (it would be cut), and the decoder */
	memset(m.u.command.path, 'p', sizeof(m.u.command.path));
	assert_int_equal(vram_hook_proto_encode(&m, buf, sizeof(buf)), -EINVAL);
	memset(buf + 24, 'p', VRAM_HOOK_PROTO_PATH_MAX);
	assert_int_equal(vram_hook_proto_decode(buf, (size_t)n, &out), -EBADMSG);

	/* the longest path that fits */
	memset(m.u.command.path, 'p', sizeof(m.u.command.path));
	m.u.command.path[VRAM_HOOK_PROTO_PATH_MAX - 1] = '\0';
	out = roundtrip(&m, &n);
	assert_int_equal(strlen(out.u.command.path), VRAM_HOOK_PROTO_PATH_MAX - 1);

	/* version 2 has neither command: not encoded, and not decoded when a peer labels it so */
	strcpy(m.u.command.path, "/p");
	m.version = 2;
	assert_int_equal(vram_hook_proto_encode(&m, buf, sizeof(buf)), -EINVAL);
	m.version = 0;
	n = vram_hook_proto_encode(&m, buf, sizeof(buf));
	buf[4] = 2;
	assert_int_equal(vram_hook_proto_decode(buf, (size_t)n, &out), -EBADMSG);

	memset(&m, 0, sizeof(m));
	m.type = VRAM_HOOK_MSG_DROP_HOST;
	m.u.command.request_id = 9;
	out = roundtrip(&m, &n);
	assert_int_equal(n, VRAM_HOOK_PROTO_HEADER_SIZE + VRAM_HOOK_PROTO_COMMAND_SIZE);
	assert_int_equal(out.type, VRAM_HOOK_MSG_DROP_HOST);
	assert_int_equal(out.u.command.request_id, 9);
	assert_string_equal(out.u.command.path, ""); /* not on the wire for DROP_HOST */
	m.version = 1;
	assert_int_equal(vram_hook_proto_encode(&m, buf, sizeof(buf)), -EINVAL);
}

/* USAGE of version 3 carries the host numbers and the park states; version 2 neither. */
static void test_usage_versions(void **state)
{
	(void)state;
	struct vram_hook_proto_msg m, out;
	memset(&m, 0, sizeof(m));
	m.type = VRAM_HOOK_MSG_USAGE;
	m.u.usage.state = VRAM_HOOK_STATE_PARKED;
	m.u.usage.ndev = 1;
	m.u.usage.dev[0].used = 3ull << 30;
	m.u.usage.host_pinned = 5ull << 30;
	m.u.usage.host_kept = 2ull << 30;
	m.u.usage.parked = 7ull << 30;
	long n;
	out = roundtrip(&m, &n);
	assert_int_equal(n, VRAM_HOOK_PROTO_HEADER_SIZE + VRAM_HOOK_PROTO_USAGE_SIZE);
	assert_int_equal(out.u.usage.state, VRAM_HOOK_STATE_PARKED);
	assert_int_equal(out.u.usage.host_pinned, 5ull << 30);
	assert_int_equal(out.u.usage.host_kept, 2ull << 30);
	assert_int_equal(out.u.usage.parked, 7ull << 30);
	assert_int_equal(out.u.usage.dev[0].used, 3ull << 30);
	/* the three come last, in this order */
	uint8_t buf[VRAM_HOOK_PROTO_MAX_MESSAGE];
	n = vram_hook_proto_encode(&m, buf, sizeof(buf));
	uint64_t v;
	vram_hook_proto_get64(buf + n - 24, &v);
	assert_int_equal(v, 5ull << 30);
	vram_hook_proto_get64(buf + n - 8, &v);
	assert_int_equal(v, 7ull << 30);

	/* version 2 cannot carry a park state nor host numbers */
	m.version = 2;
	assert_int_equal(vram_hook_proto_encode(&m, buf, sizeof(buf)), -EINVAL);
	m.u.usage.state = VRAM_HOOK_STATE_OFFLOADED;
	assert_int_equal(vram_hook_proto_encode(&m, buf, sizeof(buf)), -EINVAL);
	m.u.usage.host_pinned = m.u.usage.host_kept = m.u.usage.parked = 0;
	out = roundtrip(&m, &n);
	assert_int_equal(n, VRAM_HOOK_PROTO_HEADER_SIZE + VRAM_HOOK_PROTO_USAGE_V2_SIZE);
	assert_int_equal(out.version, 2);
	assert_int_equal(out.u.usage.dev[0].used, 3ull << 30);
	assert_int_equal(out.u.usage.host_pinned, 0);

	/* a version-2 usage claiming a park state, or with the version-3 length, is refused */
	n = vram_hook_proto_encode(&m, buf, sizeof(buf));
	buf[VRAM_HOOK_PROTO_HEADER_SIZE] = VRAM_HOOK_STATE_PARKING;
	assert_int_equal(vram_hook_proto_decode(buf, (size_t)n, &out), -EBADMSG);
	buf[VRAM_HOOK_PROTO_HEADER_SIZE] = VRAM_HOOK_STATE_OFFLOADED;
	assert_int_equal(vram_hook_proto_decode(buf, (size_t)n, &out), n);
	vram_hook_proto_put32(buf + 8, VRAM_HOOK_PROTO_USAGE_SIZE);
	assert_int_equal(vram_hook_proto_decode(buf, sizeof(buf), &out), -EBADMSG);
	/* and in version 3 a state past the last one */
	m.version = 0;
	n = vram_hook_proto_encode(&m, buf, sizeof(buf));
	buf[VRAM_HOOK_PROTO_HEADER_SIZE] = VRAM_HOOK_STATE_PARKED + 1;
	assert_int_equal(vram_hook_proto_decode(buf, (size_t)n, &out), -EBADMSG);
}

/* A RESULT may answer PARK and DROP_HOST, and say parked, only from version 3. */
static void test_result_of_park(void **state)
{
	(void)state;
	struct vram_hook_proto_msg m, out;
	memset(&m, 0, sizeof(m));
	m.type = VRAM_HOOK_MSG_RESULT;
	m.u.result.request_id = 3;
	m.u.result.op = VRAM_HOOK_MSG_PARK;
	m.u.result.status = -ENOSPC;
	m.u.result.state = VRAM_HOOK_STATE_OFFLOADED;
	strcpy(m.u.result.text, "Failed to park: no space on /park: wrote 1048576 of 67108864 bytes");
	long n;
	out = roundtrip(&m, &n);
	assert_int_equal(out.u.result.op, VRAM_HOOK_MSG_PARK);
	assert_int_equal(out.u.result.status, -ENOSPC);
	assert_string_equal(out.u.result.text, m.u.result.text);
	m.u.result.op = VRAM_HOOK_MSG_DROP_HOST;
	m.u.result.status = 0;
	m.u.result.state = VRAM_HOOK_STATE_RUNNING;
	m.u.result.bytes = 64ull << 20;
	out = roundtrip(&m, &n);
	assert_int_equal(out.u.result.bytes, 64ull << 20);
	m.u.result.op = VRAM_HOOK_MSG_RESTORE;
	m.u.result.state = VRAM_HOOK_STATE_PARKED;
	out = roundtrip(&m, &n);
	assert_int_equal(out.u.result.state, VRAM_HOOK_STATE_PARKED);

	uint8_t buf[VRAM_HOOK_PROTO_MAX_MESSAGE];
	m.version = 2;
	assert_int_equal(vram_hook_proto_encode(&m, buf, sizeof(buf)), -EINVAL); /* state parked */
	m.u.result.state = VRAM_HOOK_STATE_OFFLOADED;
	m.u.result.op = VRAM_HOOK_MSG_PARK;
	assert_int_equal(vram_hook_proto_encode(&m, buf, sizeof(buf)), -EINVAL); /* op park */
	m.u.result.op = VRAM_HOOK_MSG_RESTORE;
	n = vram_hook_proto_encode(&m, buf, sizeof(buf));
	assert_true(n > 0);
	buf[VRAM_HOOK_PROTO_HEADER_SIZE + 4] = VRAM_HOOK_MSG_PARK;
	assert_int_equal(vram_hook_proto_decode(buf, (size_t)n, &out), -EBADMSG);
	buf[VRAM_HOOK_PROTO_HEADER_SIZE + 4] = VRAM_HOOK_MSG_RESTORE;
	buf[VRAM_HOOK_PROTO_HEADER_SIZE + 12] = VRAM_HOOK_STATE_PARKED;
	assert_int_equal(vram_hook_proto_decode(buf, (size_t)n, &out), -EBADMSG);
	/* never an answer to PING or HELLO */
	m.version = 0;
	m.u.result.op = VRAM_HOOK_MSG_PING;
	assert_int_equal(vram_hook_proto_encode(&m, buf, sizeof(buf)), -EINVAL);
}

/* XXH64 as xxhsum -H64 computes it (the values from libxxhash 0.8). */
static void test_park_checksum(void **state)
{
	(void)state;
	assert_true(vram_park_xxh64("", 0, 0) == 0xef46db3751d8e999ull);
	assert_true(vram_park_xxh64("a", 1, 0) == 0xd24ec4f1a98c6e5bull);
	assert_true(vram_park_xxh64("abc", 3, 0) == 0x44bc2cf5ad770999ull);
	char xs[100];
	memset(xs, 'x', sizeof(xs));
	assert_true(vram_park_xxh64(xs, sizeof(xs), 0) == 0x92f0de5a88a3c094ull);
	uint8_t all[768];
	for (size_t i = 0; i < sizeof(all); i++)
		all[i] = (uint8_t)i;
	assert_true(vram_park_xxh64(all, sizeof(all), 0) == 0x8e03c838c596036full);
	/* one bit anywhere changes it */
	all[500] ^= 0x10;
	assert_true(vram_park_xxh64(all, sizeof(all), 0) != 0x8e03c838c596036full);
}

/* A header as the hook writes it: two allocations, three pieces. */
static void park_example(struct vram_park_header *h, uint64_t sizes[2], struct vram_park_piece pieces[3])
{
	memset(h, 0, sizeof(*h));
	h->pid = 4242;
	h->start_ticks = 123456789;
	h->piece_bytes = 1 << 20;
	h->alloc_count = 2;
	h->piece_count = 3;
	h->total_bytes = (1 << 20) + (1 << 20) + 100;
	h->header_bytes = (uint32_t)vram_park_header_size(2, 3);
	sizes[0] = 2 << 20;
	sizes[1] = 100;
	uint64_t at = h->header_bytes;
	pieces[0] = (struct vram_park_piece){ .alloc = 0, .offset = 0, .length = 1 << 20, .file_offset = at, .sum = 1 };
	at += 1 << 20;
	pieces[1] = (struct vram_park_piece){ .alloc = 0, .offset = 1 << 20, .length = 1 << 20, .file_offset = at,
					      .sum = 2 };
	at += 1 << 20;
	pieces[2] = (struct vram_park_piece){ .alloc = 1, .offset = 0, .length = 100, .file_offset = at, .sum = 3 };
}

static int park_decode(uint8_t *buf, struct vram_park_header *h, uint64_t *sizes, struct vram_park_piece *pieces,
		       const char **why)
{
	int r = vram_park_decode_fixed(buf, VRAM_PARK_FIXED_SIZE, h, why);
	return r < 0 ? r : vram_park_decode_tables(buf, h, sizes, pieces, why);
}

static void test_park_header(void **state)
{
	(void)state;
	struct vram_park_header h, got;
	uint64_t sizes[2], got_sizes[2];
	struct vram_park_piece pieces[3], got_pieces[3];
	park_example(&h, sizes, pieces);
	assert_int_equal(h.header_bytes, VRAM_PARK_ALIGN);
	static uint8_t buf[VRAM_PARK_ALIGN], copy[VRAM_PARK_ALIGN];
	assert_int_equal(vram_park_encode(buf, &h, sizes, pieces), 0);
	assert_memory_equal(buf, "VRAMPARK", 8);
	const char *why = NULL;
	assert_int_equal(park_decode(buf, &got, got_sizes, got_pieces, &why), 0);
	assert_int_equal(got.version, VRAM_PARK_VERSION);
	assert_int_equal(got.pid, 4242);
	assert_int_equal(got.start_ticks, 123456789);
	assert_int_equal(got.total_bytes, h.total_bytes);
	assert_int_equal(got_sizes[1], 100);
	assert_int_equal(got_pieces[2].file_offset, VRAM_PARK_ALIGN + (2 << 20));
	assert_int_equal(got_pieces[1].sum, 2);
	assert_int_equal(vram_park_file_size(&got, got_pieces), VRAM_PARK_ALIGN + (2 << 20) + VRAM_PARK_ALIGN);

	/* any changed byte of the header is caught: checksum, or a field that is out of bounds */
	for (size_t i = 0; i < VRAM_PARK_FIXED_SIZE + 16 + 3 * VRAM_PARK_PIECE_ENTRY + 8; i++) {
		memcpy(copy, buf, sizeof(buf));
		copy[i] ^= 0x01;
		assert_int_equal(park_decode(copy, &got, got_sizes, got_pieces, &why), -EBADMSG);
	}
	memcpy(copy, buf, sizeof(buf));
	copy[sizeof(copy) - 1] = 1; /* in the padding */
	assert_int_equal(park_decode(copy, &got, got_sizes, got_pieces, &why), -EBADMSG);
	assert_string_equal(why, "header checksum mismatch");
	memcpy(copy, buf, sizeof(buf));
	copy[0] = 'X';
	assert_int_equal(park_decode(copy, &got, got_sizes, got_pieces, &why), -EBADMSG);
	assert_string_equal(why, "not a park file (no VRAMPARK magic)");
	assert_int_equal(vram_park_decode_fixed(buf, 71, &got, &why), -EBADMSG);
}

/* Tables that are consistent with their checksum but not with themselves are refused. */
static void test_park_tables_bounded(void **state)
{
	(void)state;
	struct vram_park_header h, got;
	uint64_t sizes[2], got_sizes[2];
	struct vram_park_piece pieces[3], got_pieces[3];
	static uint8_t buf[VRAM_PARK_ALIGN];
	const char *why;

	/* a piece past its allocation's end */
	park_example(&h, sizes, pieces);
	pieces[2].length = 200;
	h.total_bytes += 100;
	assert_int_equal(vram_park_encode(buf, &h, sizes, pieces), 0);
	assert_int_equal(park_decode(buf, &got, got_sizes, got_pieces, &why), -EBADMSG);
	assert_string_equal(why, "piece table out of order or out of bounds");
	/* a piece longer than piece_bytes */
	park_example(&h, sizes, pieces);
	h.piece_bytes = 100;
	assert_int_equal(vram_park_encode(buf, &h, sizes, pieces), 0);
	assert_int_equal(park_decode(buf, &got, got_sizes, got_pieces, &why), -EBADMSG);
	/* a piece at an unaligned or overlapping file offset */
	park_example(&h, sizes, pieces);
	pieces[1].file_offset -= VRAM_PARK_ALIGN;
	assert_int_equal(vram_park_encode(buf, &h, sizes, pieces), 0);
	assert_int_equal(park_decode(buf, &got, got_sizes, got_pieces, &why), -EBADMSG);
	/* an allocation index beyond the table */
	park_example(&h, sizes, pieces);
	pieces[2].alloc = 2;
	assert_int_equal(vram_park_encode(buf, &h, sizes, pieces), 0);
	assert_int_equal(park_decode(buf, &got, got_sizes, got_pieces, &why), -EBADMSG);
	/* an allocation not covered to its end */
	park_example(&h, sizes, pieces);
	sizes[1] = 200;
	assert_int_equal(vram_park_encode(buf, &h, sizes, pieces), 0);
	assert_int_equal(park_decode(buf, &got, got_sizes, got_pieces, &why), -EBADMSG);
	assert_string_equal(why, "piece table does not cover every allocation");
	/* a total that is not the sum */
	park_example(&h, sizes, pieces);
	h.total_bytes++;
	assert_int_equal(vram_park_encode(buf, &h, sizes, pieces), 0);
	assert_int_equal(park_decode(buf, &got, got_sizes, got_pieces, &why), -EBADMSG);
	assert_string_equal(why, "pieces do not add up to the total");
	/* an allocation of size 0 */
	park_example(&h, sizes, pieces);
	sizes[0] = 0;
	assert_int_equal(vram_park_encode(buf, &h, sizes, pieces), 0);
	assert_int_equal(park_decode(buf, &got, got_sizes, got_pieces, &why), -EBADMSG);
	/* counts that do not give header_bytes, or beyond the bounds: refused on both sides */
	park_example(&h, sizes, pieces);
	h.piece_count = VRAM_PARK_MAX_PIECES + 1;
	assert_int_equal(vram_park_encode(buf, &h, sizes, pieces), -EINVAL);
	park_example(&h, sizes, pieces);
	assert_int_equal(vram_park_encode(buf, &h, sizes, pieces), 0);
	vram_hook_proto_put64(buf + 40, VRAM_PARK_MAX_PIECES + 1);
	assert_int_equal(vram_park_decode_fixed(buf, VRAM_PARK_FIXED_SIZE, &got, &why), -EBADMSG);
	assert_string_equal(why, "header fields out of bounds");
	vram_hook_proto_put64(buf + 40, 0); /* pieces but no allocation, or the reverse */
	assert_int_equal(vram_park_decode_fixed(buf, VRAM_PARK_FIXED_SIZE, &got, &why), -EBADMSG);
	vram_hook_proto_put64(buf + 40, 3);
	vram_hook_proto_put64(buf + 32, VRAM_PARK_MAX_PIECE_BYTES + 1);
	assert_int_equal(vram_park_decode_fixed(buf, VRAM_PARK_FIXED_SIZE, &got, &why), -EBADMSG);
	vram_hook_proto_put64(buf + 32, 1 << 20);
	vram_hook_proto_put32(buf + 8, 2); /* another format version */
	assert_int_equal(vram_park_decode_fixed(buf, VRAM_PARK_FIXED_SIZE, &got, &why), -EBADMSG);
	assert_string_equal(why, "a park file of another format version");

	/* nothing to park: a header alone */
	memset(&h, 0, sizeof(h));
	h.piece_bytes = 1 << 20;
	h.header_bytes = (uint32_t)vram_park_header_size(0, 0);
	assert_int_equal(vram_park_encode(buf, &h, NULL, NULL), 0);
	assert_int_equal(park_decode(buf, &got, got_sizes, got_pieces, &why), 0);
	assert_int_equal(vram_park_file_size(&got, got_pieces), VRAM_PARK_ALIGN);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hello_roundtrip),
		cmocka_unit_test(test_result_roundtrip),
		cmocka_unit_test(test_wire_layout_is_fixed),
		cmocka_unit_test(test_progress_and_grant),
		cmocka_unit_test(test_partial_and_stream),
		cmocka_unit_test(test_rejects_bad_input),
		cmocka_unit_test(test_long_strings_are_cut),
		cmocka_unit_test(test_hello_limit_invalid),
		cmocka_unit_test(test_hello_version_1),
		cmocka_unit_test(test_park_and_drop_host),
		cmocka_unit_test(test_usage_versions),
		cmocka_unit_test(test_result_of_park),
		cmocka_unit_test(test_park_checksum),
		cmocka_unit_test(test_park_header),
		cmocka_unit_test(test_park_tables_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
