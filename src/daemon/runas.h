/* SPDX-License-Identifier: MIT */
/*
 * Who an ad-hoc workload runs as, and who may act on it.
 *
 * A command sent to the API (POST /api/workloads, vramctl run) runs as the
 * user who asked, never as vramd for anyone who can reach the API:
 *  - on the control socket, as the peer's uid, gid and groups, as the kernel
 *    reported them (peer.h); root asking gets root;
 *  - over TCP, only with the daemon's token, and then as daemon.run_as; a
 *    page in a browser or any local account that reaches the port gets a
 *    refusal that says what to configure.
 * A vramd that is not root can start processes only as itself, so it
 * refuses a command from another user rather than run it as itself.
 *
 * An ad-hoc workload belongs to the user it runs as: stopping, removing,
 * offloading it or reading its log is for that user, root (and vramd's own
 * user) on the control socket, and token holders over TCP.
 */
#ifndef VRAM_RUNAS_H
#define VRAM_RUNAS_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "config/config.h"
#include "daemon/peer.h"

#define VRAM_RUNAS_USER_MAX 64 /* bytes of a user name kept, NUL included */

struct vram_runas {
	bool as_daemon;    /* the same uid, gid and groups as vramd: nothing to switch */
	uid_t uid;
	gid_t gid;         /* primary group */
	gid_t groups[VRAM_PEER_GROUPS_MAX]; /* supplementary groups */
	size_t n_groups;
	char user[VRAM_RUNAS_USER_MAX];     /* the passwd name, or the uid in decimal */
	char home[PATH_MAX];                /* the passwd home, or "/" without an entry */
};

/*
 * Decides who a command that peer asked for runs as. self is vramd's own
 * identity (vram_peer_self; a parameter so that tests can be another
 * user), cfg gives daemon.run_as. Returns 0 with *ret, -EPERM with a
 * message in msg that says what would allow it (a TCP client without the
 * token, no daemon.run_as, a vramd that cannot switch users), or -ENOMEM.
 * Looks up the user database (getpwuid, getgrouplist): it may block.
 */
int vram_runas_for_peer(const struct vram_peer *peer, const struct vram_peer *self,
			const struct vram_config *cfg, struct vram_runas *ret, char *msg,
			size_t msg_size);

/*
 * The identity variables HOME, USER and LOGNAME of r, for those env (a
 * NULL-terminated list of "KEY=VALUE", may be NULL) does not set. Writes up
 * to VRAM_RUNAS_ENV_MAX new strings into out (caller frees each). Returns
 * how many, or -ENOMEM (then none are left allocated).
 */
#define VRAM_RUNAS_ENV_MAX 3
int vram_runas_identity_env(const struct vram_runas *r, char *const *env, char **out);

/*
 * Whether peer may stop, remove, offload, restore or read the log of an
 * ad-hoc workload that runs as owner: on the control socket the owner
 * itself, root and vramd's own user (self_uid); over TCP a client with the
 * daemon's token.
 */
bool vram_runas_may_manage(const struct vram_peer *peer, uid_t self_uid, uid_t owner);

/*
 * The refusal for a peer that may not act on workload (owned by owner,
 * owner_name): "run-3 runs as uid 1000 (alice): only that user, root or a
 * client with the daemon's token may stop it; this request came from uid
 * 1001 (pid 42) on the control socket". what is the verb.
 */
void vram_runas_refusal(const struct vram_peer *peer, const char *workload, uid_t owner,
			const char *owner_name, const char *what, char *msg, size_t msg_size);

#endif
