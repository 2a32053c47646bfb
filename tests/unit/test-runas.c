/* SPDX-License-Identifier: MIT */
/*
 * Who a command runs as: the peer on the control socket with its own groups,
 * root as root, nobody over TCP without the token and daemon.run_as (the
 * refusal says what to set), run_as over TCP with the user's groups from the
 * user database; a vramd that is not root refuses other users rather than
 * run their commands as itself. Who may act on an ad-hoc workload, and the
 * identity variables a command gets.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/runas.h"

static const struct vram_peer root_self = { .transport = VRAM_PEER_UNIX, .uid = 0, .gid = 0,
					    .groups = { 0 }, .n_groups = 1 };

static struct vram_peer unix_peer(uid_t uid, gid_t gid)
{
	struct vram_peer p = { .transport = VRAM_PEER_UNIX, .pid = 77, .uid = uid, .gid = gid,
			       .groups = { gid, 4242 }, .n_groups = 2 };
	return p;
}

static void test_unix_peer_runs_as_itself(void **state)
{
	struct vram_config cfg = { 0 };
	struct vram_runas r;
	char msg[512] = "";
	struct vram_peer nobody = unix_peer(65534, 65534);
	assert_int_equal(vram_runas_for_peer(&nobody, &root_self, &cfg, &r, msg, sizeof(msg)), 0);
	assert_false(r.as_daemon);
	assert_int_equal(r.uid, 65534);
	assert_int_equal(r.gid, 65534);
	/* the peer's own groups, as the kernel gave them, not the user database's */
	assert_int_equal(r.n_groups, 2);
	assert_int_equal(r.groups[1], 4242);
	assert_string_equal(r.user, "nobody");
	assert_string_equal(r.home, "/nonexistent");

	/* a uid without a passwd entry still runs, with a home that exists */
	struct vram_peer ghost = unix_peer(54321, 54321);
	assert_int_equal(vram_runas_for_peer(&ghost, &root_self, &cfg, &r, msg, sizeof(msg)), 0);
	assert_string_equal(r.user, "54321");
	assert_string_equal(r.home, "/");

	/* root asking a root vramd gets root: as the daemon when the groups match too */
	struct vram_peer root = root_self;
	assert_int_equal(vram_runas_for_peer(&root, &root_self, &cfg, &r, msg, sizeof(msg)), 0);
	assert_true(r.as_daemon);
	assert_int_equal(r.uid, 0);
	root.groups[root.n_groups++] = 4242;
	assert_int_equal(vram_runas_for_peer(&root, &root_self, &cfg, &r, msg, sizeof(msg)), 0);
	assert_false(r.as_daemon);
	assert_int_equal(r.uid, 0);
	assert_int_equal(r.n_groups, 2);
}

static void test_vramd_not_root_refuses_others(void **state)
{
	struct vram_config cfg = { 0 };
	struct vram_runas r = { 0 };
	char msg[512] = "";
	struct vram_peer self = unix_peer(1000, 1000);
	self.n_groups = 1;
	/* its own user, even from another group, runs as vramd: it cannot set groups */
	struct vram_peer same = unix_peer(1000, 27);
	assert_int_equal(vram_runas_for_peer(&same, &self, &cfg, &r, msg, sizeof(msg)), 0);
	assert_true(r.as_daemon);
	struct vram_peer other = unix_peer(1001, 1001);
	r.uid = 4;
	assert_int_equal(vram_runas_for_peer(&other, &self, &cfg, &r, msg, sizeof(msg)), -EPERM);
	assert_int_equal(r.uid, 4); /* untouched */
	assert_string_equal(msg, "vramd runs as uid 1000 and can start commands only as that user, "
				 "not as uid 1001 who asked: run vramd as root to let other users "
				 "run commands, or ask as uid 1000");
	struct vram_peer root = root_self;
	assert_int_equal(vram_runas_for_peer(&root, &self, &cfg, &r, msg, sizeof(msg)), -EPERM);
	cfg.daemon.has_run_as = true;
	cfg.daemon.run_as_uid = 65534;
	struct vram_peer tcp = { .transport = VRAM_PEER_TCP, .token = true };
	assert_int_equal(vram_runas_for_peer(&tcp, &self, &cfg, &r, msg, sizeof(msg)), -EPERM);
	assert_non_null(strstr(msg, "daemon.run_as is uid 65534, but vramd runs as uid 1000"));
}

static void test_tcp_needs_token_and_run_as(void **state)
{
	struct vram_config cfg = { 0 };
	struct vram_runas r;
	char msg[512] = "";
	struct vram_peer tcp = { .transport = VRAM_PEER_TCP, .addr = "127.0.0.1" };
	assert_int_equal(vram_runas_for_peer(&tcp, &root_self, &cfg, &r, msg, sizeof(msg)), -EPERM);
	assert_non_null(strstr(msg, "set daemon.token and daemon.run_as in the config"));
	assert_non_null(strstr(msg, "vramctl run without --url"));
	/* run_as alone is not enough: any local account reaches a loopback port */
	cfg.daemon.has_run_as = true;
	cfg.daemon.run_as_uid = 65534;
	cfg.daemon.run_as_gid = 65534;
	assert_int_equal(vram_runas_for_peer(&tcp, &root_self, &cfg, &r, msg, sizeof(msg)), -EPERM);
	tcp.token = true;
	cfg.daemon.has_run_as = false;
	assert_int_equal(vram_runas_for_peer(&tcp, &root_self, &cfg, &r, msg, sizeof(msg)), -EPERM);
	assert_non_null(strstr(msg, "needs daemon.run_as in the config"));
	cfg.daemon.has_run_as = true;
	assert_int_equal(vram_runas_for_peer(&tcp, &root_self, &cfg, &r, msg, sizeof(msg)), 0);
	assert_false(r.as_daemon);
	assert_int_equal(r.uid, 65534);
	assert_int_equal(r.gid, 65534);
	assert_string_equal(r.user, "nobody");
	/* the groups initgroups would give: at least the primary one */
	assert_true(r.n_groups >= 1);
	assert_int_equal(r.groups[0], 65534);
}

static void test_may_manage(void **state)
{
	struct vram_peer owner = unix_peer(1000, 1000), other = unix_peer(1001, 1001);
	struct vram_peer root = root_self, self = unix_peer(999, 999);
	assert_true(vram_runas_may_manage(&owner, 999, 1000));
	assert_false(vram_runas_may_manage(&other, 999, 1000));
	assert_true(vram_runas_may_manage(&root, 999, 1000));
	assert_true(vram_runas_may_manage(&self, 999, 1000));
	struct vram_peer tcp = { .transport = VRAM_PEER_TCP };
	assert_false(vram_runas_may_manage(&tcp, 0, 1000));
	tcp.token = true;
	assert_true(vram_runas_may_manage(&tcp, 0, 1000));
	char msg[512];
	vram_runas_refusal(&other, "run-3", 1000, "alice", "stop", msg, sizeof(msg));
	assert_string_equal(msg, "run-3 runs as uid 1000 (alice): only that user or root on the "
				 "control socket, or a client with the daemon's token, may stop it; "
				 "this request came from uid 1001 (pid 77) on the control socket");
}

static void test_identity_env(void **state)
{
	struct vram_runas r = { .uid = 65534 };
	strcpy(r.user, "nobody");
	strcpy(r.home, "/nonexistent");
	char *out[VRAM_RUNAS_ENV_MAX];
	assert_int_equal(vram_runas_identity_env(&r, NULL, out), 3);
	assert_string_equal(out[0], "HOME=/nonexistent");
	assert_string_equal(out[1], "USER=nobody");
	assert_string_equal(out[2], "LOGNAME=nobody");
	for (int i = 0; i < 3; i++)
		free(out[i]);
	/* what the command's own environment sets stays (vramctl run sends the caller's) */
	char *env[] = { "HOME=/home/mine", "USERNAME=x", NULL };
	assert_int_equal(vram_runas_identity_env(&r, env, out), 2);
	assert_string_equal(out[0], "USER=nobody");
	assert_string_equal(out[1], "LOGNAME=nobody");
	free(out[0]);
	free(out[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unix_peer_runs_as_itself),
		cmocka_unit_test(test_vramd_not_root_refuses_others),
		cmocka_unit_test(test_tcp_needs_token_and_run_as),
		cmocka_unit_test(test_may_manage),
		cmocka_unit_test(test_identity_env),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
