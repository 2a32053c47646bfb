/* SPDX-License-Identifier: MIT */
/*
 * Port ownership: the parsers on fixture text of /proc/net/tcp, tcp6,
 * /proc/PID/stat and descriptor links; the verdicts on a fixture /proc tree
 * (the instance's child holds it, a foreign process holds it and is named,
 * an orphan of the instance's group holds it, nobody visible holds it,
 * nothing listens); and the real thing: a listener of this process found
 * through sock_diag and through /proc, owned by this process and foreign to
 * a child of it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/portowner.c" /* check_at and find_listeners, on a fixture tree */

/*
 * Real lines (x86-64, little-endian: the kernel prints each 32-bit word of an
 * address as the number it is in memory). Port 0x1FBB = 8123.
 */
static const char tcp_text[] =
	"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	/* 127.0.0.1:8123 LISTEN, uid 1000: counts */
	"   0: 0100007F:1FBB 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4001 1 0000000000000000 100 0 0 10 0\n"
	/* 0.0.0.0:8123 LISTEN: counts */
	"   1: 00000000:1FBB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4002 1 0000000000000000 100 0 0 10 0\n"
	/* 10.0.0.5:8123 LISTEN: a connection to 127.0.0.1 never reaches it */
	"   2: 0500000A:1FBB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4003 1 0000000000000000 100 0 0 10 0\n"
	/* 127.0.0.1:8123 ESTABLISHED: not a listener */
	"   3: 0100007F:1FBB 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 4004 1 0000000000000000 20 4 30 10 -1\n"
	/* 127.0.0.1:8124 LISTEN: another port */
	"   4: 0100007F:1FBC 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4005 1 0000000000000000 100 0 0 10 0\n"
	/* a line cut short, and one that is not a socket at all */
	"   5: 0100007F:1FBB 00000000:0000 0A\n"
	"garbage\n"
	/* the same inode again (it would be listed once) */
	"   6: 0100007F:1FBB 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4001 1 0000000000000000 100 0 0 10 0";

static const char tcp6_text[] =
	"  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	/* [::]:8123: counts (dual-stack unless IPV6_V6ONLY, which /proc does not show) */
	"   0: 00000000000000000000000000000000:1FBB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000   0        0 6001 1 0000000000000000 100 0 0 10 0\n"
	/* [::1]:8123: IPv6 loopback, not reached by 127.0.0.1 */
	"   1: 00000000000000000000000001000000:1FBB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000   0        0 6002 1 0000000000000000 100 0 0 10 0\n"
	/* [::ffff:127.0.0.1]:8123: counts */
	"   2: 0000000000000000FFFF00000100007F:1FBB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 6003 1 0000000000000000 100 0 0 10 0\n"
	/* [fe80::1]:8123: not */
	"   3: 000080FE000000000000000001000000:1FBB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000   0        0 6004 1 0000000000000000 100 0 0 10 0\n";

static void test_parse_net(void **state)
{
	struct vram_portowner_listener l[VRAM_PORTOWNER_LISTENERS_MAX];
	size_t n = 0;
	vram_portowner_parse_net(tcp_text, false, 8123, l, &n, VRAM_PORTOWNER_LISTENERS_MAX);
	assert_int_equal(n, 2);
	assert_int_equal(l[0].inode, 4001);
	assert_int_equal(l[0].uid, 1000);
	assert_int_equal(l[1].inode, 4002);
	assert_int_equal(l[1].uid, 0);
	vram_portowner_parse_net(tcp6_text, true, 8123, l, &n, VRAM_PORTOWNER_LISTENERS_MAX);
	assert_int_equal(n, 4);
	assert_int_equal(l[2].inode, 6001);
	assert_int_equal(l[3].inode, 6003);
	assert_int_equal(l[3].uid, 1001);
	/* the other port; and a full list takes no more */
	n = 0;
	vram_portowner_parse_net(tcp_text, false, 8124, l, &n, VRAM_PORTOWNER_LISTENERS_MAX);
	assert_int_equal(n, 1);
	assert_int_equal(l[0].inode, 4005);
	n = 0;
	vram_portowner_parse_net(tcp_text, false, 8123, l, &n, 1);
	assert_int_equal(n, 1);
	/* IPv4 text read as IPv6 (and the reverse) matches nothing */
	n = 0;
	vram_portowner_parse_net(tcp_text, true, 8123, l, &n, VRAM_PORTOWNER_LISTENERS_MAX);
	vram_portowner_parse_net(tcp6_text, false, 8123, l, &n, VRAM_PORTOWNER_LISTENERS_MAX);
	assert_int_equal(n, 0);
	vram_portowner_parse_net("", false, 8123, l, &n, VRAM_PORTOWNER_LISTENERS_MAX);
	assert_int_equal(n, 0);
}

static void test_parse_stat_and_socket(void **state)
{
	char comm[VRAM_PORTOWNER_COMM_MAX];
	pid_t pgrp = 0;
	assert_int_equal(vram_portowner_parse_stat("4242 (nginx) S 1 4240 4240 0 -1 4194560 ...",
						   comm, sizeof(comm), &pgrp), 0);
	assert_string_equal(comm, "nginx");
	assert_int_equal(pgrp, 4240);
	/* a name holding ") " and control characters: the last ')' ends it, and it is made printable */
	assert_int_equal(vram_portowner_parse_stat("7 (a) S 1 2 (\x1b[31m) R 1 77 77 0", comm,
						   sizeof(comm), &pgrp), 0);
	assert_string_equal(comm, "a) S 1 2 (?[31m");
	assert_int_equal(pgrp, 77);
	char small[4];
	assert_int_equal(vram_portowner_parse_stat("9 (python3) S 1 9 9", small, sizeof(small), &pgrp), 0);
	assert_string_equal(small, "pyt");
	assert_int_equal(vram_portowner_parse_stat("9 python3 S 1 9 9", comm, sizeof(comm), &pgrp),
			 -EINVAL);
	assert_int_equal(vram_portowner_parse_stat("9 (x) S", comm, sizeof(comm), &pgrp), -EINVAL);

	unsigned long inode = 0;
	assert_true(vram_portowner_parse_socket("socket:[123456]", &inode));
	assert_int_equal(inode, 123456);
	assert_false(vram_portowner_parse_socket("pipe:[123]", &inode));
	assert_false(vram_portowner_parse_socket("socket:[]", &inode));
	assert_false(vram_portowner_parse_socket("socket:[12x]", &inode));
	assert_false(vram_portowner_parse_socket("socket:[-1]", &inode));
	assert_false(vram_portowner_parse_socket("/dev/null", &inode));
}

/* ---- a fixture /proc ---- */

static void put(const char *root, const char *rel, const char *text)
{
	char path[512], cmd[600];
	snprintf(path, sizeof(path), "%s/%s", root, rel);
	snprintf(cmd, sizeof(cmd), "mkdir -p \"$(dirname '%s')\"", path);
	assert_int_equal(system(cmd), 0);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void fd_link(const char *root, int pid, int fd, const char *target)
{
	char dir[512], path[560];
	snprintf(dir, sizeof(dir), "%s/%d/fd", root, pid);
	mkdir(dir, 0755);
	snprintf(path, sizeof(path), "%s/%d", dir, fd);
	assert_int_equal(symlink(target, path), 0);
}

static void proc_entry(const char *root, int pid, int pgrp, const char *comm, const char *children)
{
	char rel[128], text[160];
	snprintf(rel, sizeof(rel), "%d/stat", pid);
	snprintf(text, sizeof(text), "%d (%s) S 1 %d %d 0 -1 0", pid, comm, pgrp, pgrp);
	put(root, rel, text);
	snprintf(rel, sizeof(rel), "%d/task/%d/children", pid, pid);
	put(root, rel, children);
	fd_link(root, pid, 0, "/dev/null");
}

static void test_verdicts_on_a_fixture_tree(void **state)
{
	char root[] = "/tmp/vram-test-portowner-XXXXXX";
	assert_non_null(mkdtemp(root));
	/* one listener per port: 9001 .. 9004; uid 1001 for 9004's */
	put(root, "net/tcp",
	    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	    "   0: 0100007F:2329 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 555 1 0 100 0 0 10 0\n"
	    "   1: 0100007F:232A 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 777 1 0 100 0 0 10 0\n"
	    "   2: 00000000:232B 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 888 1 0 100 0 0 10 0\n"
	    "   3: 0100007F:232C 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 999 1 0 100 0 0 10 0\n");
	/* no net/tcp6: IPv6 off */
	/* the instance: 100 (group leader) with child 101 (python worker) */
	proc_entry(root, 100, 100, "sh", "101 ");
	proc_entry(root, 101, 100, "python3", "");
	fd_link(root, 101, 5, "socket:[555]");
	fd_link(root, 101, 6, "socket:[12]");
	/* a squatter */
	proc_entry(root, 200, 200, "nginx", "");
	fd_link(root, 200, 4, "socket:[777]");
	/* an orphan of the instance's group (its parent died: not in the tree) */
	proc_entry(root, 300, 100, "worker", "");
	fd_link(root, 300, 3, "socket:[888]");

	struct vram_portowner r;
	char msg[256];
	assert_int_equal(check_at(root, false, 9001, 100, &r), 0);
	assert_int_equal(r.verdict, VRAM_PORTOWNER_OWNED);

	assert_int_equal(check_at(root, false, 9002, 100, &r), 0);
	assert_int_equal(r.verdict, VRAM_PORTOWNER_FOREIGN);
	assert_int_equal(r.pid, 200);
	assert_string_equal(r.comm, "nginx");
	assert_int_equal(r.inode, 777);
	vram_portowner_describe(&r, 9002, "chat", msg, sizeof(msg));
	assert_string_equal(msg, "port 9002 is held by nginx (pid 200, uid 1000), not by workload chat");

	assert_int_equal(check_at(root, false, 9003, 100, &r), 0);
	assert_int_equal(r.verdict, VRAM_PORTOWNER_OWNED);
	/* for another instance (pid 200), the same listener is foreign: the orphan is named */
	assert_int_equal(check_at(root, false, 9003, 200, &r), 0);
	assert_int_equal(r.verdict, VRAM_PORTOWNER_FOREIGN);
	assert_int_equal(r.pid, 300);
	assert_string_equal(r.comm, "worker");

	/* held by a process vramd cannot see: not the workload's */
	assert_int_equal(check_at(root, false, 9004, 100, &r), 0);
	assert_int_equal(r.verdict, VRAM_PORTOWNER_UNKNOWN);
	assert_int_equal(r.uid, 1001);
	vram_portowner_describe(&r, 9004, "chat", msg, sizeof(msg));
	assert_string_equal(msg, "port 9004 is held by a process of uid 1001 that vramd cannot "
				 "inspect (socket inode 999), not by workload chat");

	assert_int_equal(check_at(root, false, 9005, 100, &r), 0);
	assert_int_equal(r.verdict, VRAM_PORTOWNER_NONE);

	/* no socket table at all */
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s/net'", root);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(check_at(root, false, 9001, 100, &r), -ENOENT);

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	assert_int_equal(system(cmd), 0);
}

/* ---- the real thing ---- */

static int listen_on(int family, const char *addr, unsigned *ret_port)
{
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_storage ss = {0};
	socklen_t len;
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		sin->sin_family = AF_INET;
		inet_pton(AF_INET, addr, &sin->sin_addr);
		len = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		sin6->sin6_family = AF_INET6;
		inet_pton(AF_INET6, addr, &sin6->sin6_addr);
		len = sizeof(*sin6);
	}
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 4) < 0) {
		close(fd);
		return -1;
	}
	len = sizeof(ss);
	getsockname(fd, (struct sockaddr *)&ss, &len);
	*ret_port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
					    : ((struct sockaddr_in6 *)&ss)->sin6_port);
	return fd;
}

static pid_t the_child; /* killed by the teardown when a test failed before it did */

static int kill_child(void **state)
{
	if (the_child > 0) {
		kill(the_child, SIGKILL);
		waitpid(the_child, NULL, 0);
		the_child = 0;
	}
	return 0;
}

static void test_live_listener(void **state)
{
	unsigned port;
	int fd = listen_on(AF_INET, "127.0.0.1", &port);
	assert_true(fd >= 0);

	/* sock_diag and /proc/net find the same listener */
	struct vram_portowner_listener a[VRAM_PORTOWNER_LISTENERS_MAX], b[VRAM_PORTOWNER_LISTENERS_MAX];
	size_t na, nb;
	assert_int_equal(find_listeners("/proc", false, port, a, &na), 0);
	assert_int_equal(na, 1);
	assert_int_equal(a[0].uid, getuid());
	if (diag_listeners(AF_INET, port, b, &(size_t){0}, 0) == 0) {
		assert_int_equal(find_listeners("/proc", true, port, b, &nb), 0);
		assert_int_equal(nb, 1);
		assert_int_equal(b[0].inode, a[0].inode);
	} else {
		print_message("sock_diag is not available here: only /proc was tested\n");
	}

	/* ours */
	struct vram_portowner r;
	assert_int_equal(vram_portowner_check(port, getpid(), &r), 0);
	assert_int_equal(r.verdict, VRAM_PORTOWNER_OWNED);
	assert_int_equal(check_at("/proc", false, port, getpid(), &r), 0);
	assert_int_equal(r.verdict, VRAM_PORTOWNER_OWNED);

	/* a child of ours that does not hold it, in a group of its own: we are the squatter */
	int sync[2];
	assert_int_equal(pipe(sync), 0);
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		close(fd);
		setpgid(0, 0);
		close(sync[0]);
		close(sync[1]); /* it has let go of the listener */
		pause();
		_exit(0);
	}
	the_child = child;
	close(sync[1]);
	char c;
	assert_int_equal(read(sync[0], &c, 1), 0);
	close(sync[0]);
	setpgid(child, child);
	assert_int_equal(vram_portowner_check(port, child, &r), 0);
	assert_int_equal(r.verdict, VRAM_PORTOWNER_FOREIGN);
	assert_int_equal(r.pid, getpid());
	assert_int_equal(r.uid, getuid());
	char comm[VRAM_PORTOWNER_COMM_MAX] = "";
	FILE *f = fopen("/proc/self/comm", "r");
	assert_non_null(f);
	assert_non_null(fgets(comm, sizeof(comm), f));
	fclose(f);
	comm[strcspn(comm, "\n")] = '\0';
	assert_string_equal(r.comm, comm);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	the_child = 0;
	close(fd);

	/* gone: nothing listens */
	assert_int_equal(vram_portowner_check(port, getpid(), &r), 0);
	assert_int_equal(r.verdict, VRAM_PORTOWNER_NONE);

	/* IPv6: [::1] is not reached by 127.0.0.1 and does not count; [::] does */
	fd = listen_on(AF_INET6, "::1", &port);
	if (fd >= 0) {
		assert_int_equal(vram_portowner_check(port, getpid(), &r), 0);
		assert_int_equal(r.verdict, VRAM_PORTOWNER_NONE);
		close(fd);
		fd = listen_on(AF_INET6, "::", &port);
		assert_true(fd >= 0);
		assert_int_equal(vram_portowner_check(port, getpid(), &r), 0);
		assert_int_equal(r.verdict, VRAM_PORTOWNER_OWNED);
		close(fd);
	} else {
		print_message("no IPv6 here: the IPv6 cases were skipped\n");
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_net),
		cmocka_unit_test(test_parse_stat_and_socket),
		cmocka_unit_test(test_verdicts_on_a_fixture_tree),
		cmocka_unit_test_teardown(test_live_listener, kill_child),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
