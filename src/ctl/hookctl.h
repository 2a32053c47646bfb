/* SPDX-License-Identifier: MIT */
/*
 * `vramctl offload|restore|status --pid N`: talks to the control socket of one
 * process that runs with libvram.so, without vramd. The socket path is the
 * process's VRAM_CONTROL (read from /proc/N/environ, "%p" replaced by N).
 */
#ifndef VRAM_HOOKCTL_H
#define VRAM_HOOKCTL_H

#include <stddef.h>
#include <sys/types.h>

/*
 * The control socket path of pid into buf. Returns 0, -ENOENT (no such
 * process, or it has no VRAM_CONTROL), -EACCES, or -ENAMETOOLONG.
 */
int vram_hookctl_socket_path(pid_t pid, char *buf, size_t size);

/*
 * Sends op ("offload", "offload drop-host", "restore", "status") to pid's
 * control socket and reads the one answer line into line (without the
 * newline). Returns 0 (the line says ok or error) or -errno with why in err.
 */
int vram_hookctl_request(pid_t pid, const char *op, char *line, size_t size, char *err, size_t err_size);

/*
 * vramctl's side: runs op on pid, prints the answer's text= part (status:
 * the whole line) and returns the exit code (0 when the answer is "ok").
 */
int vram_hookctl_command(pid_t pid, const char *op);

#endif
