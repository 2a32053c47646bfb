/* SPDX-License-Identifier: MIT */
/*
 * The client identity header: what the gateway writes, the API reads back
 * exactly; anything else is refused rather than read as some default
 * identity; the kernel's credentials of a socketpair are our own.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/peer.h"

static void test_round_trip(void **state)
{
	struct vram_peer u = { .transport = VRAM_PEER_UNIX, .pid = 4242, .uid = 1000, .gid = 100,
			       .groups = { 100, 27, 4294967294u }, .n_groups = 3 };
	char text[VRAM_PEER_TEXT_MAX];
	assert_true(vram_peer_format(&u, text, sizeof(text)) > 0);
	assert_string_equal(text, "unix pid=4242 uid=1000 gid=100 groups=100,27,4294967294");
	struct vram_peer back;
	assert_int_equal(vram_peer_parse(text, &back), 0);
	assert_int_equal(back.transport, VRAM_PEER_UNIX);
	assert_int_equal(back.pid, 4242);
	assert_int_equal(back.uid, 1000);
	assert_int_equal(back.gid, 100);
	assert_int_equal(back.n_groups, 3);
	assert_int_equal(back.groups[2], 4294967294u);

	struct vram_peer t = { .transport = VRAM_PEER_TCP, .token = true };
	strcpy(t.addr, "::1");
	assert_true(vram_peer_format(&t, text, sizeof(text)) > 0);
	assert_string_equal(text, "tcp addr=::1 token=1");
	assert_int_equal(vram_peer_parse(text, &back), 0);
	assert_int_equal(back.transport, VRAM_PEER_TCP);
	assert_true(back.token);
	assert_string_equal(back.addr, "::1");

	struct vram_peer none = { .transport = VRAM_PEER_UNIX, .uid = 0 };
	assert_true(vram_peer_format(&none, text, sizeof(text)) > 0);
	assert_int_equal(vram_peer_parse(text, &back), 0);
	assert_int_equal(back.n_groups, 0);
	assert_int_equal(vram_peer_format(&u, text, 10), -ENOSPC);
}

static void test_refused(void **state)
{
	static const char *const bad[] = {
		NULL, "", "unix", "unix pid=1 uid=0 gid=0", "unix pid=1 uid=-1 gid=0 groups=",
		"unix pid=1 uid=4294967296 gid=0 groups=", "unix pid=1 uid=0 gid=0 groups=1,",
		"unix pid=1 uid=0 gid=0 groups=1 ", "unix pid=1 uid=0 gid=0 groups=,1",
		"tcp addr= token=1", "tcp addr=1.2.3.4 token=2", "tcp addr=1.2.3.4 token=1 x",
		"tcp addr=1.2.3.4", "TCP addr=1.2.3.4 token=1", "root",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct vram_peer p = { .uid = 77 };
		assert_int_equal(vram_peer_parse(bad[i], &p), -EINVAL);
		assert_int_equal(p.uid, 77);
	}
}

static void test_socket_credentials(void **state)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	struct vram_peer p;
	assert_int_equal(vram_peer_from_unix_socket(sv[0], &p), 0);
	assert_int_equal(p.transport, VRAM_PEER_UNIX);
	assert_int_equal(p.uid, geteuid());
	assert_int_equal(p.gid, getegid());
	assert_int_equal(p.pid, getpid());
	struct vram_peer self;
	vram_peer_self(&self);
	assert_int_equal(self.uid, p.uid);
	close(sv[0]);
	close(sv[1]);
	assert_true(vram_peer_from_unix_socket(-1, &p) < 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_refused),
		cmocka_unit_test(test_socket_credentials),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
