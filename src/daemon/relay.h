/* SPDX-License-Identifier: MIT */
/*
 * The output relay: one small process per workload process that sits
 * between the workload's stdout/stderr and the daemon. A pipe the daemon
 * reads itself would close when the daemon dies, and the workload's next
 * write would then fail with EPIPE or kill it with SIGPIPE. The relay holds
 * the read end of the workload's pipe instead and copies everything into a
 * second pipe that the daemon reads. When the daemon is gone (a write to
 * that pipe fails), the relay appends to the workload's log file itself,
 * with the same rotation, until the last writer closes the workload's pipe.
 *
 * The relay is the daemon's own program run again with a hidden argument:
 * `vramd --output-relay PATH MAX_BYTES KEEP [SOCKET]` (PATH empty: no log
 * file; what the daemon does not take is dropped). A program's main() that
 * handles the argument (vram_relay_requested, vram_relay_main) declares
 * itself with vram_relay_set_program; until then no relay is started and
 * output goes through a pipe the daemon reads, as before.
 *
 * SOCKET, when given, is where a new vramd listens (its relay.sock) once
 * the one that started the relay is gone. A new vramd that adopts the
 * workload holds the log and sends the relay SIGUSR1; a relay that writes
 * the log itself then connects there, closes the log, sends
 * VRAM_RELAY_HANDED_OVER and copies its input into that connection from
 * then on, so that the log has one writer again: the new vramd. If that
 * vramd dies too, the relay writes the file again, as after the first
 * daemon's death. A relay started without SOCKET does not catch SIGUSR1
 * (which would end it), so vramd signals only relays that catch it.
 */
#ifndef VRAM_RELAY_H
#define VRAM_RELAY_H

#include <signal.h>
#include <stdbool.h>
#include <sys/types.h>

struct vram_logfile;

#define VRAM_RELAY_ARG "--output-relay"
#define VRAM_RELAY_NAME "vram-relay" /* argv[0] and process name of a relay */
#define VRAM_RELAY_BUF_MAX 65536     /* bytes read from the workload at a time */
/*
 * The one byte a relay sends on its socket connection: it has closed the
 * log file and sends everything from now on through this connection.
 */
#define VRAM_RELAY_HANDED_OVER 'H'
/* Signal that asks a relay writing the log itself to hand it over. */
#define VRAM_RELAY_HANDOVER_SIGNAL SIGUSR1

/* Whether argv asks for the relay mode (argv[1] is VRAM_RELAY_ARG). */
bool vram_relay_requested(int argc, char *const *argv);

/*
 * Runs the relay on fd 0 (the workload's output) and fd 1 (the daemon) until
 * fd 0 ends. Closes every other inherited descriptor, ignores SIGPIPE,
 * SIGINT, SIGHUP and SIGTERM, and never writes anywhere but fd 1, the log
 * file and its socket (see above). Returns the process's exit status: 0 at
 * end of input, 1 on a read error, 2 for bad arguments.
 */
int vram_relay_main(int argc, char *const *argv);

/*
 * Declares the program that runs vram_relay_main when given VRAM_RELAY_ARG
 * ("/proc/self/exe" in vramd). exe is borrowed and must stay valid; NULL
 * (the default) turns relays off. Process-wide: only main() knows whether
 * the program it belongs to handles the argument.
 */
void vram_relay_set_program(const char *exe);
/* The program set above, or NULL. Borrowed. */
const char *vram_relay_program(void);

/*
 * Starts a relay with in_fd as its fd 0 and out_fd as its fd 1, stderr on
 * /dev/null, in a session of its own, with log's path and limits for when
 * out_fd has no reader (log NULL: nothing is written then) and sock_path
 * (borrowed; NULL: none) as where to hand the log over to a new vramd. The
 * caller keeps its descriptors (close them once this returns) and reaps the
 * relay. Sets *ret_pid. Returns 0, -ENOTSUP (no program set), -EBADF (in_fd
 * or out_fd is one of 0..2), -ENAMETOOLONG (sock_path does not fit a Unix
 * socket address) or posix_spawn's error.
 */
int vram_relay_spawn(const struct vram_logfile *log, const char *sock_path, int in_fd, int out_fd,
		     pid_t *ret_pid);

#endif
