/* SPDX-License-Identifier: MIT */
/*
 * Who an ad-hoc workload runs as, and who may act on it; see runas.h.
 */
#include "daemon/runas.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* bytes of the buffer for one passwd entry; getpwuid_r says ERANGE when it needs more */
#define PW_BUF_START 4096
#define PW_BUF_MAX (1024 * 1024)

/*
 * Fills r's user and home from the passwd entry of r->uid, and, when groups
 * is set, its groups as initgroups would (getgrouplist), cut to what a peer
 * carries. Without an entry: the uid as the name, "/" as home, and the
 * primary group alone. Returns 0 or -ENOMEM.
 */
static int lookup_user(struct vram_runas *r, bool groups)
{
	snprintf(r->user, sizeof(r->user), "%lu", (unsigned long)r->uid);
	snprintf(r->home, sizeof(r->home), "/");
	if (groups) {
		r->groups[0] = r->gid;
		r->n_groups = 1;
	}
	size_t size = PW_BUF_START;
	for (;;) {
		char *buf = malloc(size);
		if (!buf)
			return -ENOMEM;
		struct passwd pw, *found = NULL;
		int e = getpwuid_r(r->uid, &pw, buf, size, &found);
		if (e == ERANGE && size < PW_BUF_MAX) {
			free(buf);
			size *= 2;
			continue;
		}
		if (e == 0 && found) {
			snprintf(r->user, sizeof(r->user), "%s", pw.pw_name);
			if (pw.pw_dir && pw.pw_dir[0])
				snprintf(r->home, sizeof(r->home), "%s", pw.pw_dir);
			if (groups) {
				int n = VRAM_PEER_GROUPS_MAX;
				if (getgrouplist(pw.pw_name, r->gid, r->groups, &n) < 0)
					n = VRAM_PEER_GROUPS_MAX; /* more than we carry: the first ones */
				r->n_groups = n > 0 ? (size_t)n : 0;
			}
		}
		free(buf);
		return 0;
	}
}

/* Whether every group of a is in b. */
static bool groups_within(const gid_t *a, size_t na, const gid_t *b, size_t nb)
{
	for (size_t i = 0; i < na; i++) {
		bool found = false;
		for (size_t j = 0; j < nb && !found; j++)
			found = a[i] == b[j];
		if (!found)
			return false;
	}
	return true;
}

/* Whether a and b hold the same groups, in any order. */
static bool same_groups(const gid_t *a, size_t na, const gid_t *b, size_t nb)
{
	return groups_within(a, na, b, nb) && groups_within(b, nb, a, na);
}

int vram_runas_for_peer(const struct vram_peer *peer, const struct vram_peer *self,
			const struct vram_config *cfg, struct vram_runas *ret, char *msg,
			size_t msg_size)
{
	struct vram_runas r = { 0 };
	bool groups_from_db = false;
	if (peer->transport == VRAM_PEER_TCP) {
		if (!peer->token) {
			snprintf(msg, msg_size,
				 "running a command over TCP needs the daemon's token and a user to run "
				 "it as: set daemon.token and daemon.run_as in the config and send "
				 "\"Authorization: Bearer <token>\", or use the control socket "
				 "(vramctl run without --url), where a command runs as the user who asks");
			return -EPERM;
		}
		if (!cfg->daemon.has_run_as) {
			snprintf(msg, msg_size,
				 "running a command over TCP needs daemon.run_as in the config (the user "
				 "that commands sent with the token run as), or use the control socket "
				 "(vramctl run without --url), where a command runs as the user who asks");
			return -EPERM;
		}
		r.uid = cfg->daemon.run_as_uid;
		r.gid = cfg->daemon.run_as_gid;
		groups_from_db = true;
	} else {
		r.uid = peer->uid;
		r.gid = peer->gid;
		r.n_groups = peer->n_groups;
		memcpy(r.groups, peer->groups, peer->n_groups * sizeof(gid_t));
	}
	if (self->uid != 0 && r.uid != self->uid) {
		if (peer->transport == VRAM_PEER_TCP)
			snprintf(msg, msg_size,
				 "daemon.run_as is uid %lu, but vramd runs as uid %lu and can start "
				 "commands only as that user: run vramd as root, or set daemon.run_as "
				 "to uid %lu", (unsigned long)r.uid, (unsigned long)self->uid,
				 (unsigned long)self->uid);
		else
			snprintf(msg, msg_size,
				 "vramd runs as uid %lu and can start commands only as that user, not as "
				 "uid %lu who asked: run vramd as root to let other users run commands, "
				 "or ask as uid %lu", (unsigned long)self->uid, (unsigned long)r.uid,
				 (unsigned long)self->uid);
		return -EPERM;
	}
	if (lookup_user(&r, groups_from_db) < 0) {
		snprintf(msg, msg_size, "out of memory");
		return -ENOMEM;
	}
	/* a vramd that is not root runs its own user's commands as itself: it cannot set groups */
	r.as_daemon = r.uid == self->uid &&
		      (self->uid != 0 || (r.gid == self->gid &&
					  same_groups(r.groups, r.n_groups, self->groups, self->n_groups)));
	*ret = r;
	return 0;
}

/* Whether env sets key (as "key=..."). */
static bool env_has(char *const *env, const char *key)
{
	size_t n = strlen(key);
	for (size_t i = 0; env && env[i]; i++)
		if (strncmp(env[i], key, n) == 0 && env[i][n] == '=')
			return true;
	return false;
}

int vram_runas_identity_env(const struct vram_runas *r, char *const *env, char **out)
{
	const struct {
		const char *key, *value;
	} vars[VRAM_RUNAS_ENV_MAX] = { { "HOME", r->home }, { "USER", r->user }, { "LOGNAME", r->user } };
	int n = 0;
	for (size_t i = 0; i < VRAM_RUNAS_ENV_MAX; i++) {
		if (env_has(env, vars[i].key))
			continue;
		if (asprintf(&out[n], "%s=%s", vars[i].key, vars[i].value) < 0) {
			while (n > 0)
				free(out[--n]);
			return -ENOMEM;
		}
		n++;
	}
	return n;
}

bool vram_runas_may_manage(const struct vram_peer *peer, uid_t self_uid, uid_t owner)
{
	if (peer->transport == VRAM_PEER_TCP)
		return peer->token;
	return peer->uid == owner || peer->uid == 0 || peer->uid == self_uid;
}

void vram_runas_refusal(const struct vram_peer *peer, const char *workload, uid_t owner,
			const char *owner_name, const char *what, char *msg, size_t msg_size)
{
	char who[128];
	vram_peer_describe(peer, who, sizeof(who));
	snprintf(msg, msg_size,
		 "%s runs as uid %lu (%s): only that user or root on the control socket, or a "
		 "client with the daemon's token, may %s it; this request came from %s",
		 workload, (unsigned long)owner, owner_name, what, who);
}
