/* SPDX-License-Identifier: MIT */
/*
 * Restart in place: the listeners' hand-over through VRAM_UPGRADE_ENV, the
 * new binary's check, the drain's clock and the execve; see upgrade.h.
 */
#include "daemon/upgrade.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/http.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/strutil.h"
#include "common/version.h"
#include "daemon/http.h"

extern char **environ;

#define UPGRADE_TICK_MS 10      /* ms between two looks at the check or the drain */
#define UPGRADE_REAP_WAIT_MS 2000 /* ms a killed check may take to be reaped before it is left */

/* ------------------------------------------------------- the variable */

static const char *const role_names[] = {
	[VRAM_LISTEN_TCP] = "tcp",
	[VRAM_LISTEN_CONTROL] = "control",
	[VRAM_LISTEN_API] = "api",
};

const char *vram_listen_role_name(enum vram_listen_role role)
{
	return (unsigned)role < sizeof(role_names) / sizeof(role_names[0]) ? role_names[role] : "?";
}

static bool role_is_unix(enum vram_listen_role role)
{
	return role != VRAM_LISTEN_TCP;
}

/* Appends s to buf at *off, ',' and '%' percent-encoded. Returns 0 or -ENOSPC. */
static int put_encoded(char *buf, size_t size, size_t *off, const char *s)
{
	for (; *s; s++) {
		char enc[4] = { *s, '\0' };
		if (*s == ',' || *s == '%')
			snprintf(enc, sizeof(enc), "%%%02X", (unsigned char)*s);
		size_t n = strlen(enc);
		if (*off + n >= size)
			return -ENOSPC;
		memcpy(buf + *off, enc, n);
		*off += n;
	}
	buf[*off] = '\0';
	return 0;
}

int vram_upgrade_format(const struct vram_listen_fds *l, char *buf, size_t size)
{
	int n = snprintf(buf, size, "restarts=%u", l->restarts);
	if (n < 0 || (size_t)n >= size)
		return -ENOSPC;
	size_t off = (size_t)n;
	for (size_t i = 0; i < l->n; i++) {
		const struct vram_listen_fd *e = &l->fds[i];
		if (e->fd < 0 || !e->addr[0])
			return -EINVAL;
		n = snprintf(buf + off, size - off, ",%s=%d:", vram_listen_role_name(e->role), e->fd);
		if (n < 0 || (size_t)n >= size - off)
			return -ENOSPC;
		off += (size_t)n;
		if (put_encoded(buf, size, &off, e->addr) < 0)
			return -ENOSPC;
	}
	return (int)off;
}

/*
 * Decodes n bytes at s (percent-encoded, every '%' followed by two hex
 * digits) into out (size bytes): printable, not empty. Returns 0 or -EINVAL.
 */
static int decode_addr(const char *s, size_t n, char *out, size_t size)
{
	char raw[VRAM_UPGRADE_ENV_MAX];
	if (n == 0 || n >= sizeof(raw))
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (s[i] == '%' && (i + 2 >= n || !isxdigit((unsigned char)s[i + 1]) ||
				    !isxdigit((unsigned char)s[i + 2])))
			return -EINVAL;
	memcpy(raw, s, n);
	raw[n] = '\0';
	size_t len = 0;
	char *dec = evhttp_uridecode(raw, 0, &len);
	int r = dec && len > 0 && len < size ? 0 : -EINVAL;
	for (size_t i = 0; r == 0 && i < len; i++)
		if ((unsigned char)dec[i] < 0x20 || dec[i] == 0x7f)
			r = -EINVAL;
	if (r == 0)
		memcpy(out, dec, len + 1);
	free(dec);
	return r;
}

/* A decimal number of at most 10 digits, nothing else, up to max. Returns 0 or -EINVAL. */
static int parse_uint(const char *s, size_t n, unsigned long max, unsigned long *ret)
{
	unsigned long v = 0;
	if (n == 0 || n > 10)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v > max)
		return -EINVAL;
	*ret = v;
	return 0;
}

int vram_upgrade_parse(const char *value, struct vram_listen_fds *ret, char *err, size_t err_size)
{
	struct vram_listen_fds l = { 0 };
	bool have_restarts = false, have_control = false, have_api = false;
	size_t len = strlen(value);
	if (len == 0 || len >= VRAM_UPGRADE_ENV_MAX) {
		snprintf(err, err_size, "expected 1 to %d bytes, got %zu", VRAM_UPGRADE_ENV_MAX - 1, len);
		return -EINVAL;
	}
	const char *p = value;
	for (size_t k = 1;; k++) {
		size_t n = strcspn(p, ",");
		const char *eq = memchr(p, '=', n);
		unsigned long num;
#define BAD(...)                                                                       \
	do {                                                                           \
		char why_[256];                                                        \
		snprintf(why_, sizeof(why_), __VA_ARGS__);                             \
		snprintf(err, err_size, "entry %zu (\"%.*s\"): %s", k, (int)(n > 80 ? 80 : n), p, \
			 why_);                                                        \
		return -EINVAL;                                                        \
	} while (0)
		if (!eq)
			BAD("expected restarts=N or ROLE=FD:ADDRESS");
		size_t klen = (size_t)(eq - p);
		const char *v = eq + 1;
		size_t vlen = n - klen - 1;
		if (klen == 8 && memcmp(p, "restarts", 8) == 0) {
			if (have_restarts)
				BAD("restarts given twice");
			if (parse_uint(v, vlen, VRAM_UPGRADE_RESTARTS_MAX, &num) < 0)
				BAD("expected a count of restarts up to %u", VRAM_UPGRADE_RESTARTS_MAX);
			have_restarts = true;
			l.restarts = (unsigned)num;
		} else {
			enum vram_listen_role role;
			if (klen == 3 && memcmp(p, "tcp", 3) == 0)
				role = VRAM_LISTEN_TCP;
			else if (klen == 7 && memcmp(p, "control", 7) == 0)
				role = VRAM_LISTEN_CONTROL;
			else if (klen == 3 && memcmp(p, "api", 3) == 0)
				role = VRAM_LISTEN_API;
			else
				BAD("unknown role, expected tcp, control or api");
			if ((role == VRAM_LISTEN_CONTROL && have_control) ||
			    (role == VRAM_LISTEN_API && have_api))
				BAD("a second %s socket", vram_listen_role_name(role));
			if (l.n == VRAM_UPGRADE_FDS_MAX)
				BAD("more than %d listeners", VRAM_UPGRADE_FDS_MAX);
			const char *colon = memchr(v, ':', vlen);
			if (!colon)
				BAD("expected FD:ADDRESS after %s=", vram_listen_role_name(role));
			if (parse_uint(v, (size_t)(colon - v), INT_MAX, &num) < 0 || num < 3)
				BAD("expected a descriptor number of 3 or more");
			struct vram_listen_fd *e = &l.fds[l.n];
			e->role = role;
			e->fd = (int)num;
			for (size_t i = 0; i < l.n; i++)
				if (l.fds[i].fd == e->fd)
					BAD("descriptor %d is named twice", e->fd);
			size_t alen = vlen - (size_t)(colon + 1 - v);
			if (decode_addr(colon + 1, alen, e->addr, sizeof(e->addr)) < 0)
				BAD("expected an address (printable, %%XX for ',' and '%%', at most %d "
				    "bytes)", VRAM_UPGRADE_ADDR_MAX - 1);
			if (role_is_unix(role) &&
			    strlen(e->addr) >= sizeof(((struct sockaddr_un *)0)->sun_path))
				BAD("a socket path of more than %zu bytes",
				    sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
			have_control |= role == VRAM_LISTEN_CONTROL;
			have_api |= role == VRAM_LISTEN_API;
			l.n++;
		}
#undef BAD
		if (!p[n])
			break;
		p += n + 1;
	}
	if (!have_restarts) {
		snprintf(err, err_size, "no restarts=N entry");
		return -EINVAL;
	}
	*ret = l;
	return 0;
}

/* ----------------------------------------------------- the descriptors */

/* "1.2.3.4:80" or "[::1]:80" for an IPv4 or IPv6 socket address. Returns 0 or -EAFNOSUPPORT. */
static int format_inet(const struct sockaddr *sa, char *buf, size_t size)
{
	char host[INET6_ADDRSTRLEN];
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		snprintf(buf, size, "%s:%u", host, ntohs(in->sin_port));
		return 0;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(buf, size, "[%s]:%u", host, ntohs(in6->sin6_port));
		return 0;
	}
	return -EAFNOSUPPORT;
}

/* Whether a and b are the same IP address (port aside). */
static bool same_host(const struct sockaddr *a, const struct sockaddr *b)
{
	if (a->sa_family != b->sa_family)
		return false;
	if (a->sa_family == AF_INET)
		return memcmp(&((const struct sockaddr_in *)a)->sin_addr,
			      &((const struct sockaddr_in *)b)->sin_addr, sizeof(struct in_addr)) == 0;
	if (a->sa_family == AF_INET6)
		return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
			      &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
	return false;
}

static unsigned port_of(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)sa)->sin_port);
	if (sa->sa_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
	return 0;
}

/* Parses a numeric "1.2.3.4:80" or "[v6]:80" into ss. Returns 0 or -EINVAL. */
static int parse_inet(const char *addr, struct sockaddr_storage *ss)
{
	char host[INET6_ADDRSTRLEN + 2];
	unsigned port;
	memset(ss, 0, sizeof(*ss));
	if (vram_http_split_hostport(addr, host, sizeof(host), &port) < 0 || port > 65535)
		return -EINVAL;
	struct sockaddr_in *in = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)port);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		return 0;
	}
	return -EINVAL;
}

static const char *file_kind(mode_t mode)
{
	if (S_ISREG(mode))
		return "regular file";
	if (S_ISDIR(mode))
		return "directory";
	if (S_ISCHR(mode))
		return "character device";
	if (S_ISFIFO(mode))
		return "pipe";
	if (S_ISBLK(mode))
		return "block device";
	return "file that is not a socket";
}

int vram_upgrade_check_fd(const struct vram_listen_fd *l, char *err, size_t err_size)
{
	struct stat st;
	int fd = l->fd;
	if (fcntl(fd, F_GETFD) < 0) {
		snprintf(err, err_size, "descriptor %d is not open", fd);
		return -EBADF;
	}
	if (fstat(fd, &st) < 0) {
		int e = errno;
		snprintf(err, err_size, "descriptor %d: %s", fd, strerror(e));
		return -e;
	}
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, err_size, "descriptor %d is a %s, not a socket", fd, file_kind(st.st_mode));
		return -ENOTSOCK;
	}
	int type = 0, domain = 0, listening = 0;
	socklen_t n = sizeof(int);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &n) < 0 || type != SOCK_STREAM) {
		snprintf(err, err_size, "descriptor %d is not a stream socket", fd);
		return -EPROTOTYPE;
	}
	n = sizeof(int);
	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &n) < 0)
		domain = -1;
	n = sizeof(int);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &n) < 0 || !listening) {
		snprintf(err, err_size, "descriptor %d is a socket that is not listening", fd);
		return -EINVAL;
	}
	bool want_unix = role_is_unix(l->role);
	if (want_unix != (domain == AF_UNIX) ||
	    (!want_unix && domain != AF_INET && domain != AF_INET6)) {
		snprintf(err, err_size, "descriptor %d is %s socket, expected %s", fd,
			 domain == AF_UNIX ? "a Unix" : domain == AF_INET ? "an IPv4"
			 : domain == AF_INET6 ? "an IPv6" : "a non-IP",
			 want_unix ? "a Unix socket" : "TCP (IPv4 or IPv6)");
		return -EAFNOSUPPORT;
	}
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
		int e = errno;
		snprintf(err, err_size, "descriptor %d: its address: %s", fd, strerror(e));
		return -e;
	}
	if (want_unix) {
		const struct sockaddr_un *un = (const struct sockaddr_un *)&ss;
		size_t plen = sl > offsetof(struct sockaddr_un, sun_path)
				      ? strnlen(un->sun_path, sl - offsetof(struct sockaddr_un, sun_path))
				      : 0;
		if (plen == 0 || strlen(l->addr) != plen || memcmp(un->sun_path, l->addr, plen) != 0) {
			snprintf(err, err_size, "descriptor %d is bound to \"%.*s\", not %s", fd,
				 (int)plen, plen ? un->sun_path : "", l->addr);
			return -EADDRNOTAVAIL;
		}
		return 0;
	}
	struct sockaddr_storage want;
	if (parse_inet(l->addr, &want) < 0) {
		snprintf(err, err_size, "\"%s\" is not a numeric HOST:PORT", l->addr);
		return -EINVAL;
	}
	if (!same_host((struct sockaddr *)&ss, (struct sockaddr *)&want) ||
	    port_of((struct sockaddr *)&ss) != port_of((struct sockaddr *)&want)) {
		char have[VRAM_UPGRADE_ADDR_MAX] = "?";
		format_inet((struct sockaddr *)&ss, have, sizeof(have));
		snprintf(err, err_size, "descriptor %d is bound to %s, not %s", fd, have, l->addr);
		return -EADDRNOTAVAIL;
	}
	return 0;
}

int vram_upgrade_describe_fd(int fd, enum vram_listen_role role, struct vram_listen_fd *ret)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct vram_listen_fd e = { .role = role, .fd = fd };
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
		return -errno;
	if (role_is_unix(role)) {
		const struct sockaddr_un *un = (const struct sockaddr_un *)&ss;
		if (ss.ss_family != AF_UNIX || sl <= offsetof(struct sockaddr_un, sun_path) ||
		    !un->sun_path[0])
			return -EAFNOSUPPORT;
		size_t plen = strnlen(un->sun_path, sl - offsetof(struct sockaddr_un, sun_path));
		if (plen >= sizeof(e.addr))
			return -ENAMETOOLONG;
		memcpy(e.addr, un->sun_path, plen);
		e.addr[plen] = '\0';
	} else if (format_inet((struct sockaddr *)&ss, e.addr, sizeof(e.addr)) < 0) {
		return -EAFNOSUPPORT;
	}
	*ret = e;
	return 0;
}

/* Closes fd if it is a listening socket (ours, from an image that meant to hand it over). */
static void close_if_listening(int fd)
{
	int listening = 0;
	socklen_t n = sizeof(listening);
	if (fd >= 3 && getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &n) == 0 && listening)
		close(fd);
}

/*
 * The descriptors a value names, read leniently (the value may not parse):
 * "=N:" after each comma. Each listening socket among them is closed.
 */
static void close_named_listeners(const char *value)
{
	for (const char *p = value; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL) {
		const char *eq = strchr(p, '=');
		const char *end = strchr(p, ',');
		if (!eq || (end && eq > end))
			continue;
		char *stop;
		errno = 0;
		long fd = strtol(eq + 1, &stop, 10);
		if (!errno && stop != eq + 1 && *stop == ':' && fd >= 3 && fd <= INT_MAX)
			close_if_listening((int)fd);
	}
}

int vram_upgrade_inherit(struct vram_listen_fds *ret, char *err, size_t err_size)
{
	*ret = (struct vram_listen_fds){ 0 };
	const char *env = getenv(VRAM_UPGRADE_ENV);
	if (!env)
		return 0;
	char value[VRAM_UPGRADE_ENV_MAX + 1];
	size_t len = strlen(env);
	snprintf(value, sizeof(value), "%s", env);
	/* before anything can start a process: workloads never see it */
	unsetenv(VRAM_UPGRADE_ENV);
	if (len >= VRAM_UPGRADE_ENV_MAX) {
		snprintf(err, err_size, "%s is %zu bytes long, expected less than %d", VRAM_UPGRADE_ENV,
			 len, VRAM_UPGRADE_ENV_MAX);
		close_named_listeners(value);
		return -EINVAL;
	}
	struct vram_listen_fds l;
	char why[512];
	if (vram_upgrade_parse(value, &l, why, sizeof(why)) < 0) {
		snprintf(err, err_size, "%s=\"%.200s\": %s", VRAM_UPGRADE_ENV, value, why);
		close_named_listeners(value);
		return -EINVAL;
	}
	for (size_t i = 0; i < l.n; i++) {
		int r = vram_upgrade_check_fd(&l.fds[i], why, sizeof(why));
		if (r < 0) {
			snprintf(err, err_size, "%s: the %s listener %s: %s", VRAM_UPGRADE_ENV,
				 vram_listen_role_name(l.fds[i].role), l.fds[i].addr, why);
			for (size_t k = 0; k < l.n; k++)
				close_if_listening(l.fds[k].fd);
			return r;
		}
	}
	for (size_t i = 0; i < l.n; i++)
		(void)fcntl(l.fds[i].fd, F_SETFD, FD_CLOEXEC);
	*ret = l;
	return 1;
}

/* Whether the numeric TCP address have is one that "HOST:PORT" want binds to. */
static bool tcp_matches(const char *have, const char *want)
{
	struct sockaddr_storage ss;
	char host[256];
	unsigned port;
	if (parse_inet(have, &ss) < 0 || vram_http_split_hostport(want, host, sizeof(host), &port) < 0)
		return false;
	if (port && port != port_of((struct sockaddr *)&ss))
		return false;
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE };
	struct addrinfo *ai = NULL;
	if (getaddrinfo(host[0] ? host : NULL, "0", &hints, &ai) != 0)
		return false;
	bool found = false;
	for (struct addrinfo *a = ai; a && !found; a = a->ai_next)
		found = same_host(a->ai_addr, (struct sockaddr *)&ss);
	freeaddrinfo(ai);
	return found;
}

int vram_upgrade_take(struct vram_listen_fds *l, enum vram_listen_role role, const char *addr)
{
	for (size_t i = 0; i < l->n; i++) {
		struct vram_listen_fd *e = &l->fds[i];
		if (e->role != role)
			continue;
		if (role_is_unix(role) ? strcmp(e->addr, addr) != 0 : !tcp_matches(e->addr, addr))
			continue;
		int fd = e->fd;
		memmove(e, e + 1, (l->n - i - 1) * sizeof(*e));
		l->n--;
		return fd;
	}
	return -ENOENT;
}

void vram_upgrade_close_rest(struct vram_listen_fds *l)
{
	for (size_t i = 0; i < l->n; i++) {
		struct vram_listen_fd *e = &l->fds[i];
		struct stat st;
		vram_info("Closing the inherited %s listener %s: the config no longer asks for it",
			  vram_listen_role_name(e->role), e->addr);
		close(e->fd);
		if (role_is_unix(e->role) && lstat(e->addr, &st) == 0 && S_ISSOCK(st.st_mode))
			unlink(e->addr);
	}
	l->n = 0;
}

void vram_upgrade_check_note(FILE *f)
{
	if (getenv(VRAM_UPGRADE_CHECK_ENV))
		fprintf(f, VRAM_UPGRADE_CHECK_NOTE "%s\n", VRAM_VERSION);
}

void vram_upgrade_signals(sigset_t *ret)
{
	sigemptyset(ret);
	sigaddset(ret, SIGTERM);
	sigaddset(ret, SIGINT);
	sigaddset(ret, SIGHUP);
	sigaddset(ret, SIGUSR2);
}

int vram_upgrade_self_exe(char *buf, size_t size)
{
	static const char deleted[] = " (deleted)";
	const size_t dl = sizeof(deleted) - 1;
	if (size < 2)
		return -ENAMETOOLONG;
	ssize_t n = readlink("/proc/self/exe", buf, size - 1);
	if (n < 0)
		return -errno;
	if ((size_t)n >= size - 1)
		return -ENAMETOOLONG;
	buf[n] = '\0';
	/* replaced on disk (unlinked, a new file put there): the path is the new binary's */
	if ((size_t)n > dl && strcmp(buf + n - dl, deleted) == 0)
		buf[n - dl] = '\0';
	return 0;
}

/* ------------------------------------------------------- the sequence */

enum phase {
	PHASE_IDLE = 0,
	PHASE_CHECK, /* the binary on disk runs --check-config */
	PHASE_DRAIN, /* listeners paused, requests in flight ending */
	PHASE_EXEC,  /* state written, execve under way (or just failed) */
};

static const char *const phase_names[] = { "idle", "check", "drain", "exec" };

/* The binary's --check-config run. */
struct check {
	pid_t pid;          /* 0: none, or reaped */
	int out_fd;         /* read end of its stdout and stderr; -1 once at its end */
	struct event *rev;  /* on out_fd */
	char out[VRAM_UPGRADE_CHECK_OUTPUT_MAX]; /* what it said, cut at the size */
	size_t out_len;
	bool out_cut;
	int wait_status;
	uint64_t deadline_ms; /* monotonic: killed after this */
	uint64_t killed_ms;   /* monotonic: when SIGKILL went; 0: not sent */
};

struct vram_upgrade {
	struct event_base *base; /* borrowed */
	struct vram_upgrade_host host;
	char *exe;               /* owned */
	char **argv;             /* owned, NULL-terminated */
	char **check_env;        /* owned array (strings borrowed from environ, but the last):
				  * the check's environment, built before each clone */
	char *config, *listen, *gpus, *state_dir; /* owned; the last three may be NULL */
	struct rlimit nofile;    /* the descriptor limit vramd started with */
	bool has_nofile;
	unsigned restarts;
	enum phase phase;
	char who[128];           /* who asked the restart under way */
	uint64_t drain_ms;
	uint64_t drain_deadline_ms; /* monotonic */
	uint64_t flush_deadline_ms; /* monotonic; 0 until the drain was cut */
	vram_upgrade_answer_cb answer; /* NULL once answered */
	void *answer_arg;
	struct check check;
	struct event *tick;      /* every UPGRADE_TICK_MS while checking or draining */
	bool failed;             /* the last restart failed: */
	char last_error[VRAM_UPGRADE_CHECK_OUTPUT_MAX + 512]; /*   why */
};

static void answer(struct vram_upgrade *up, int result, const char *message)
{
	vram_upgrade_answer_cb cb = up->answer;
	up->answer = NULL;
	if (cb)
		cb(result, message, up->answer_arg);
}

/* The restart ends without an exec: why goes to the log and to the status. */
static void give_up(struct vram_upgrade *up, int result, const char *why)
{
	bool drained = up->phase >= PHASE_DRAIN;
	up->phase = PHASE_IDLE;
	up->failed = true;
	snprintf(up->last_error, sizeof(up->last_error), "%s", why);
	event_del(up->tick);
	vram_err("Restart in place (asked by %s) failed: %s; vramd %s serves on", up->who, why,
		 VRAM_VERSION);
	if (drained)
		up->host.drain_end(up->host.arg);
	answer(up, result, why);
}

static void tick_again(struct vram_upgrade *up)
{
	struct timeval tv = { 0, UPGRADE_TICK_MS * 1000 };
	event_add(up->tick, &tv);
}

/* ---- the check ---- */

static void check_read(struct vram_upgrade *up)
{
	struct check *ck = &up->check;
	while (ck->out_fd >= 0) {
		char buf[4096];
		ssize_t n = read(ck->out_fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			event_free(ck->rev);
			ck->rev = NULL;
			close(ck->out_fd);
			ck->out_fd = -1;
			return;
		}
		size_t room = sizeof(ck->out) - 1 - ck->out_len;
		size_t take = (size_t)n < room ? (size_t)n : room;
		memcpy(ck->out + ck->out_len, buf, take);
		ck->out_len += take;
		ck->out[ck->out_len] = '\0';
		ck->out_cut |= take < (size_t)n;
	}
}

static void on_check_output(evutil_socket_t fd, short what, void *arg)
{
	check_read(arg);
}

static void check_done(struct check *ck)
{
	if (ck->rev)
		event_free(ck->rev);
	ck->rev = NULL;
	if (ck->out_fd >= 0)
		close(ck->out_fd);
	ck->out_fd = -1;
}

/* The check's output on one line for a log or an answer, trimmed. */
static const char *check_output(struct check *ck)
{
	while (ck->out_len && (ck->out[ck->out_len - 1] == '\n' || ck->out[ck->out_len - 1] == ' '))
		ck->out[--ck->out_len] = '\0';
	if (ck->out_cut && ck->out_len + 6 < sizeof(ck->out)) {
		memcpy(ck->out + ck->out_len, " [...]", 7);
		ck->out_len += 6;
		ck->out_cut = false;
	}
	return ck->out_len ? ck->out : "(no output)";
}

static void drain_begin(struct vram_upgrade *up);

/*
 * Finds the line of vram_upgrade_check_note in the check's output, copies
 * its version into version and takes the line out. Returns whether it was
 * there.
 */
static bool check_take_note(struct check *ck, char *version, size_t size)
{
	const size_t nl = strlen(VRAM_UPGRADE_CHECK_NOTE);
	for (char *line = ck->out; line && *line;) {
		char *end = strchr(line, '\n');
		size_t len = end ? (size_t)(end - line) : strlen(line);
		if (len > nl && strncmp(line, VRAM_UPGRADE_CHECK_NOTE, nl) == 0) {
			size_t vl = len - nl < size - 1 ? len - nl : size - 1;
			memcpy(version, line + nl, vl);
			version[vl] = '\0';
			size_t rest = ck->out_len - (size_t)(line - ck->out) - len - (end ? 1 : 0);
			memmove(line, line + len + (end ? 1 : 0), rest + 1);
			ck->out_len -= len + (end ? 1 : 0);
			return true;
		}
		line = end ? end + 1 : NULL;
	}
	return false;
}

/* The check ended (reaped, or left after SIGKILL): on to the drain, or the answer. */
static void check_finish(struct vram_upgrade *up, bool reaped)
{
	struct check *ck = &up->check;
	check_read(up);
	check_done(ck);
	char why[sizeof(up->last_error)];
	const char *out = check_output(ck);
	if (!reaped) {
		snprintf(why, sizeof(why), "%s --check-config %s did not finish within %d s; it was "
			 "killed (pid %ld is left unreaped): %s", up->exe, up->config,
			 VRAM_UPGRADE_CHECK_S, (long)ck->pid, out);
		ck->pid = 0;
		give_up(up, -ETIMEDOUT, why);
		return;
	}
	int st = ck->wait_status;
	if (ck->killed_ms) {
		snprintf(why, sizeof(why), "%s --check-config %s did not finish within %d s: %s",
			 up->exe, up->config, VRAM_UPGRADE_CHECK_S, out);
		give_up(up, -ETIMEDOUT, why);
		return;
	}
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
		char version[64];
		if (!check_take_note(ck, version, sizeof(version))) {
			snprintf(why, sizeof(why), "%s takes no listening sockets over (no \"%s...\" "
				 "line from its --check-config: a vramd older than this one?); it would "
				 "fail to listen where this one does: stop and start vramd instead",
				 up->exe, VRAM_UPGRADE_CHECK_NOTE);
			give_up(up, -EINVAL, why);
			return;
		}
		vram_info("Restart in place: the binary on disk, vramd %s, checked the config: %s",
			  version, check_output(ck));
		drain_begin(up);
		return;
	}
	if (WIFEXITED(st) && WEXITSTATUS(st) == 127 && strncmp(out, "vramd: cannot execute", 21) == 0)
		snprintf(why, sizeof(why), "%s", out);
	else if (WIFEXITED(st))
		snprintf(why, sizeof(why), "%s --check-config %s failed (exit status %d): %s", up->exe,
			 up->config, WEXITSTATUS(st), out);
	else
		snprintf(why, sizeof(why), "%s --check-config %s was killed by signal %d (%s): %s",
			 up->exe, up->config, WTERMSIG(st), strsignal(WTERMSIG(st)), out);
	give_up(up, -EINVAL, why);
}

/* Writes "vramd: cannot execute PATH: errno N\n" with async-signal-safe calls only. */
static void child_report(int fd, const char *path, int e)
{
	char num[16];
	size_t n = 0;
	char digits[16];
	do {
		digits[n++] = (char)('0' + e % 10);
		e /= 10;
	} while (e && n < sizeof(digits));
	for (size_t i = 0; i < n; i++)
		num[i] = digits[n - 1 - i];
	static const char head[] = "vramd: cannot execute ";
	static const char mid[] = ": errno ";
	ssize_t unused = write(fd, head, sizeof(head) - 1);
	unused = write(fd, path, strlen(path));
	unused = write(fd, mid, sizeof(mid) - 1);
	unused = write(fd, num, n);
	unused = write(fd, "\n", 1);
	(void)unused;
}

/*
 * The check runs two levels down. The daemon's child is a clone that sends
 * no signal when it exits (exit signal 0) and never executes anything: the
 * supervisor reaps with waitpid(-1), which waits only for children that
 * signal SIGCHLD, so this one is left to the tick (__WALL) and its status
 * is not lost. (A clone that executed the binary itself would not do: the
 * kernel gives every process that calls execve the exit signal SIGCHLD.)
 * That child leads a process group of its own, so that one kill reaches
 * both, starts the binary in a child of its own and ends as that one
 * ended: the same exit status, or the same signal.
 *
 * Both run in a copy of a process with threads: only async-signal-safe
 * calls, and raw clones rather than fork(), whose handlers take locks that
 * another thread may have held at the copy.
 */
static __attribute__((noreturn)) void check_child(const char *exe, char *const argv[],
						  char *const env[], int devnull, int out_fd)
{
	struct sigaction dfl = { .sa_handler = SIG_DFL };
	for (int s = 1; s < NSIG; s++)
		if (s != SIGKILL && s != SIGSTOP)
			(void)sigaction(s, &dfl, NULL);
	sigset_t none;
	sigemptyset(&none);
	(void)setpgid(0, 0);
	long pid = syscall(SYS_clone, (unsigned long)SIGCHLD, NULL, NULL, NULL, NULL);
	if (pid == 0) {
		if (dup2(devnull, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(out_fd, 2) < 0)
			_exit(127);
		(void)sigprocmask(SIG_SETMASK, &none, NULL);
		execve(exe, argv, env);
		child_report(2, exe, errno);
		_exit(127);
	}
	if (pid < 0) {
		child_report(out_fd, exe, errno);
		_exit(127);
	}
	close(out_fd); /* the binary's end of the pipe is the only one left: its end is EOF */
	int st;
	while (waitpid((pid_t)pid, &st, 0) < 0)
		if (errno != EINTR)
			_exit(127);
	if (WIFSIGNALED(st)) {
		(void)sigprocmask(SIG_SETMASK, &none, NULL);
		(void)syscall(SYS_kill, syscall(SYS_getpid), WTERMSIG(st));
		_exit(128 + WTERMSIG(st));
	}
	_exit(WIFEXITED(st) ? WEXITSTATUS(st) : 127);
}

/*
 * The check's environment: vramd's own and VRAM_UPGRADE_CHECK_ENV=1, in
 * up->check_env (the child may not allocate). Returns 0 or -ENOMEM.
 */
static int check_env_build(struct vram_upgrade *up)
{
	static char flag[] = VRAM_UPGRADE_CHECK_ENV "=1";
	size_t n = 0;
	while (environ && environ[n])
		n++;
	char **env = calloc(n + 2, sizeof(*env));
	if (!env)
		return -ENOMEM;
	size_t k = 0, nl = strlen(VRAM_UPGRADE_CHECK_ENV);
	for (size_t i = 0; i < n; i++)
		if (!(strncmp(environ[i], VRAM_UPGRADE_CHECK_ENV, nl) == 0 && environ[i][nl] == '='))
			env[k++] = environ[i];
	env[k++] = flag;
	free(up->check_env);
	up->check_env = env;
	return 0;
}

/* Starts the binary's --check-config. Returns 0 or -errno with err. */
static int check_start(struct vram_upgrade *up, char *err, size_t err_size)
{
	struct check *ck = &up->check;
	char *argv[10];
	size_t n = 0;
	argv[n++] = up->exe;
	argv[n++] = "--check-config";
	argv[n++] = up->config;
	if (up->listen) {
		argv[n++] = "--listen";
		argv[n++] = up->listen;
	}
	if (up->gpus) {
		argv[n++] = "--gpus";
		argv[n++] = up->gpus;
	}
	if (up->state_dir) {
		argv[n++] = "--state-dir";
		argv[n++] = up->state_dir;
	}
	argv[n] = NULL;
	if (access(up->exe, X_OK) < 0) {
		int e = errno;
		snprintf(err, err_size, "cannot execute %s: %s", up->exe, strerror(e));
		return -e;
	}
	if (check_env_build(up) < 0) {
		snprintf(err, err_size, "out of memory");
		return -ENOMEM;
	}
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0) {
		int e = errno;
		snprintf(err, err_size, "pipe: %s", strerror(e));
		return -e;
	}
	int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (devnull < 0) {
		int e = errno;
		snprintf(err, err_size, "/dev/null: %s", strerror(e));
		close(p[0]);
		close(p[1]);
		return -e;
	}
	/* no signal handler of the daemon's may run in the child before it resets them */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	/* exit signal 0: see check_child */
	long pid = syscall(SYS_clone, 0UL, NULL, NULL, NULL, NULL);
	if (pid == 0)
		check_child(up->exe, argv, up->check_env, devnull, p[1]);
	int e = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	close(devnull);
	close(p[1]);
	if (pid < 0) {
		snprintf(err, err_size, "cannot start %s: %s", up->exe, strerror(e));
		close(p[0]);
		return -e;
	}
	*ck = (struct check){ .pid = (pid_t)pid, .out_fd = p[0] };
	(void)fcntl(p[0], F_SETFL, O_NONBLOCK);
	ck->rev = event_new(up->base, p[0], EV_READ | EV_PERSIST, on_check_output, up);
	if (ck->rev)
		event_add(ck->rev, NULL); /* without it, the tick reads */
	ck->deadline_ms = vram_now_ms() + VRAM_UPGRADE_CHECK_S * 1000ull;
	return 0;
}

static void check_tick(struct vram_upgrade *up)
{
	struct check *ck = &up->check;
	check_read(up);
	int st;
	pid_t r = waitpid(ck->pid, &st, WNOHANG | __WALL);
	if (r == ck->pid) {
		ck->pid = 0;
		ck->wait_status = st;
		check_finish(up, true);
		return;
	}
	uint64_t now = vram_now_ms();
	if (!ck->killed_ms && now >= ck->deadline_ms) {
		kill(-ck->pid, SIGKILL); /* its group: the binary too */
		kill(ck->pid, SIGKILL);
		ck->killed_ms = now;
	} else if (ck->killed_ms && now - ck->killed_ms >= UPGRADE_REAP_WAIT_MS) {
		check_finish(up, false);
		return;
	}
	tick_again(up);
}

/* ---- drain and exec ---- */

static void drain_begin(struct vram_upgrade *up)
{
	up->phase = PHASE_DRAIN;
	uint64_t now = vram_now_ms();
	up->drain_deadline_ms = now + up->drain_ms;
	up->flush_deadline_ms = 0;
	vram_info("Restart in place (asked by %s): draining for up to %.1f s: no new connections, "
		  "the requests in flight finish", up->who, (double)up->drain_ms / 1000.0);
	up->host.drain_begin(up->host.arg);
	answer(up, 0, NULL);
	tick_again(up);
}

/* Returns only when execve failed: -errno with err. */
static int exec_self(struct vram_upgrade *up, char *err, size_t err_size)
{
	struct vram_listen_fds l = { 0 };
	int r = up->host.listeners(up->host.arg, &l);
	if (r < 0) {
		snprintf(err, err_size, "cannot list the listeners: %s", strerror(-r));
		return r;
	}
	l.restarts = up->restarts + 1;
	char value[VRAM_UPGRADE_ENV_MAX];
	r = vram_upgrade_format(&l, value, sizeof(value));
	if (r < 0) {
		snprintf(err, err_size, "cannot describe the listeners in %s: %s", VRAM_UPGRADE_ENV,
			 strerror(-r));
		return r;
	}
	size_t n_env = 0;
	while (environ && environ[n_env])
		n_env++;
	char **envp = calloc(n_env + 2, sizeof(*envp));
	char *entry = malloc(strlen(VRAM_UPGRADE_ENV) + 1 + (size_t)r + 1);
	if (!envp || !entry) {
		free(envp);
		free(entry);
		snprintf(err, err_size, "out of memory");
		return -ENOMEM;
	}
	size_t k = 0, nl = strlen(VRAM_UPGRADE_ENV);
	for (size_t i = 0; i < n_env; i++)
		if (!(strncmp(environ[i], VRAM_UPGRADE_ENV, nl) == 0 && environ[i][nl] == '='))
			envp[k++] = environ[i];
	sprintf(entry, "%s=%s", VRAM_UPGRADE_ENV, value);
	envp[k++] = entry;
	envp[k] = NULL;

	/* what survives execve and must not: close-on-exec, the signal mask, SIGPIPE ignored */
	int flags[VRAM_UPGRADE_FDS_MAX];
	for (size_t i = 0; i < l.n; i++) {
		flags[i] = fcntl(l.fds[i].fd, F_GETFD);
		if (flags[i] >= 0)
			(void)fcntl(l.fds[i].fd, F_SETFD, flags[i] & ~FD_CLOEXEC);
	}
	sigset_t handled, old_mask;
	vram_upgrade_signals(&handled);
	struct sigaction dfl = { .sa_handler = SIG_DFL }, old_pipe;
	sigaction(SIGPIPE, &dfl, &old_pipe);
	pthread_sigmask(SIG_SETMASK, &handled, &old_mask);
	/* the new image raises the descriptor limit itself, and hands the original on */
	struct rlimit raised;
	bool lowered = up->has_nofile && getrlimit(RLIMIT_NOFILE, &raised) == 0 &&
		       setrlimit(RLIMIT_NOFILE, &up->nofile) == 0;
	vram_info("Restart in place (asked by %s): executing %s with %s=%s", up->who, up->exe,
		  VRAM_UPGRADE_ENV, value);
	fflush(NULL);
	execve(up->exe, up->argv, envp);
	int e = errno;
	if (lowered)
		(void)setrlimit(RLIMIT_NOFILE, &raised);
	pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
	sigaction(SIGPIPE, &old_pipe, NULL);
	for (size_t i = 0; i < l.n; i++)
		if (flags[i] >= 0)
			(void)fcntl(l.fds[i].fd, F_SETFD, flags[i]);
	free(envp);
	free(entry);
	snprintf(err, err_size, "cannot execute %s: %s", up->exe, strerror(e));
	return -e;
}

static void run_exec(struct vram_upgrade *up)
{
	char err[1024], why[1100];
	up->phase = PHASE_EXEC;
	/* what is sure to fail is found before the manager is stopped for the exec */
	if (access(up->exe, X_OK) < 0) {
		int e = errno;
		snprintf(why, sizeof(why), "cannot execute %s: %s", up->exe, strerror(e));
		give_up(up, -e, why);
		return;
	}
	int r = up->host.prepare_exec(up->host.arg, err, sizeof(err));
	if (r < 0) {
		snprintf(why, sizeof(why), "the manager could not write its state: %s",
			 err[0] ? err : strerror(-r));
		give_up(up, r, why);
		return;
	}
	r = exec_self(up, err, sizeof(err));
	give_up(up, r, err);
}

static void drain_tick(struct vram_upgrade *up)
{
	uint64_t now = vram_now_ms();
	size_t left = up->host.drain_left(up->host.arg, VRAM_UPGRADE_IDLE_GRACE_MS);
	if (left == 0) {
		run_exec(up);
		return;
	}
	if (!up->flush_deadline_ms && now >= up->drain_deadline_ms) {
		vram_warn("Restart in place: %zu connection%s still busy after %.1f s "
			  "(daemon.upgrade_drain): what waits is answered 503, the rest cut", left,
			  left == 1 ? " is" : "s are", (double)up->drain_ms / 1000.0);
		up->host.drain_cut(up->host.arg);
		up->flush_deadline_ms = now + VRAM_UPGRADE_CUT_FLUSH_MS;
	} else if (up->flush_deadline_ms && now >= up->flush_deadline_ms) {
		run_exec(up);
		return;
	}
	tick_again(up);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct vram_upgrade *up = arg;
	if (up->phase == PHASE_CHECK)
		check_tick(up);
	else if (up->phase == PHASE_DRAIN)
		drain_tick(up);
}

/* ---- public ---- */

static char *dup_or_null(const char *s, bool *oom)
{
	char *d = s ? strdup(s) : NULL;
	*oom |= s && !d;
	return d;
}

int vram_upgrade_new(struct event_base *base, const struct vram_upgrade_options *opt,
		     const struct vram_upgrade_host *host, struct vram_upgrade **ret)
{
	struct vram_upgrade *up = calloc(1, sizeof(*up));
	if (!up)
		return -ENOMEM;
	bool oom = false;
	up->base = base;
	up->host = *host;
	up->restarts = opt->restarts;
	up->check.out_fd = -1;
	up->exe = dup_or_null(opt->exe, &oom);
	up->config = dup_or_null(opt->config, &oom);
	up->listen = dup_or_null(opt->listen, &oom);
	up->gpus = dup_or_null(opt->gpus, &oom);
	up->state_dir = dup_or_null(opt->state_dir, &oom);
	size_t argc = 0;
	while (opt->argv && opt->argv[argc])
		argc++;
	up->argv = calloc(argc + 1, sizeof(*up->argv));
	oom |= !up->argv;
	for (size_t i = 0; up->argv && i < argc; i++)
		up->argv[i] = dup_or_null(opt->argv[i], &oom);
	up->has_nofile = opt->nofile != NULL;
	if (opt->nofile)
		up->nofile = *opt->nofile;
	up->tick = evtimer_new(base, on_tick, up);
	if (oom || !up->tick || !up->exe || !up->config) {
		vram_upgrade_free(up);
		return -ENOMEM;
	}
	*ret = up;
	return 0;
}

void vram_upgrade_cancel(struct vram_upgrade *up)
{
	if (!up || up->phase == PHASE_IDLE)
		return;
	event_del(up->tick);
	if (up->phase == PHASE_CHECK && up->check.pid > 0) {
		int st;
		kill(-up->check.pid, SIGKILL);
		kill(up->check.pid, SIGKILL);
		/* a killed process is reaped at once unless it sits in the kernel */
		for (int i = 0; i < 100 && waitpid(up->check.pid, &st, WNOHANG | __WALL) == 0; i++)
			usleep(1000);
		up->check.pid = 0;
	}
	check_done(&up->check);
	up->phase = PHASE_IDLE;
	answer(up, -ECANCELED, "vramd is shutting down");
}

void vram_upgrade_free(struct vram_upgrade *up)
{
	if (!up)
		return;
	vram_upgrade_cancel(up);
	if (up->tick)
		event_free(up->tick);
	for (size_t i = 0; up->argv && up->argv[i]; i++)
		free(up->argv[i]);
	free(up->argv);
	free(up->check_env);
	free(up->exe);
	free(up->config);
	free(up->listen);
	free(up->gpus);
	free(up->state_dir);
	free(up);
}

int vram_upgrade_start(struct vram_upgrade *up, const char *who, uint64_t drain_ms,
		       vram_upgrade_answer_cb cb, void *arg, char *err, size_t err_size)
{
	if (up->phase != PHASE_IDLE) {
		snprintf(err, err_size, "a restart in place asked by %s is under way (%s)", up->who,
			 phase_names[up->phase]);
		return -EBUSY;
	}
	int r = check_start(up, err, err_size);
	if (r < 0) {
		up->failed = true;
		snprintf(up->last_error, sizeof(up->last_error), "%s", err);
		vram_err("Restart in place (asked by %s) failed: %s; vramd %s serves on", who, err,
			 VRAM_VERSION);
		return r;
	}
	snprintf(up->who, sizeof(up->who), "%s", who);
	vram_info("Restart in place asked by %s: checking %s with %s --check-config", who,
		  up->config, up->exe);
	up->phase = PHASE_CHECK;
	up->failed = false;
	up->last_error[0] = '\0';
	up->drain_ms = drain_ms;
	up->answer = cb;
	up->answer_arg = arg;
	tick_again(up);
	return 0;
}

unsigned vram_upgrade_restarts(const struct vram_upgrade *up)
{
	return up->restarts;
}

json_t *vram_upgrade_status_json(const struct vram_upgrade *up, bool with_error)
{
	json_t *o = json_pack("{s:b,s:s,s:I,s:s,s:I,s:s,s:b}", "restarting", up->phase != PHASE_IDLE,
			      "phase", phase_names[up->phase], "pid", (json_int_t)getpid(), "version",
			      VRAM_VERSION, "restarts", (json_int_t)up->restarts, "binary", up->exe,
			      "failed", up->failed);
	if (!o)
		return NULL;
	json_t *why = json_null();
	if (up->failed && with_error) {
		/* the check's output is the binary's own text: repaired to UTF-8 for JSON */
		char text[sizeof(up->last_error) * 3];
		vram_utf8_sanitize(text, sizeof(text), up->last_error, strlen(up->last_error));
		why = json_string(text);
	}
	if (!why || json_object_set_new(o, "last_error", why) < 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}
