/* SPDX-License-Identifier: MIT */
/* Unit tests of the hook protocol (src/proto/hook_proto.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proto/hook_proto.h"

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
	static const uint8_t want[24] = { 'V', 'R', 'H', 'K', 2, 0, 3, 0, 8, 0, 0, 0, 4, 3, 2, 1,
					  0x0d, 0x0c, 0x0b, 0x0a, 1, 0, 0, 0 };
	assert_memory_equal(buf, want, sizeof(want));
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
	buf[flags_at] |= 0x2;
	assert_int_equal(vram_hook_proto_decode(buf, (size_t)n, &out), -EBADMSG);
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hello_roundtrip),
		cmocka_unit_test(test_result_roundtrip),
		cmocka_unit_test(test_wire_layout_is_fixed),
		cmocka_unit_test(test_partial_and_stream),
		cmocka_unit_test(test_rejects_bad_input),
		cmocka_unit_test(test_long_strings_are_cut),
		cmocka_unit_test(test_hello_limit_invalid),
		cmocka_unit_test(test_hello_version_1),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
