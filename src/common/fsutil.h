/* SPDX-License-Identifier: MIT */
/*
 * Small file-system helpers shared by the daemon's modules: directories
 * created on the way to a path, the daemon's private state directory, and
 * files opened for writing that are never reached through a symbolic link.
 */
#ifndef VRAM_FSUTIL_H
#define VRAM_FSUTIL_H

#include <stddef.h>
#include <sys/types.h>

/*
 * Creates every missing parent directory of path with parents_mode and, if
 * mode is not 0, path itself with mode. An existing path must be a
 * directory. Returns 0 or -errno (-ENAMETOOLONG, -ENOTDIR, mkdir's error).
 */
int vram_mkdir_p(const char *path, mode_t parents_mode, mode_t mode);

/*
 * Makes path a directory private to this process's effective user: missing
 * parents are created with mode 0755 and path itself with 0700. Whether it
 * was there before or not, path must then be a directory (not a symbolic
 * link to one) owned by the effective uid and writable by nobody else, and
 * every directory above it must be owned by root or the effective uid and
 * writable by nobody else unless it has the sticky bit (as /tmp has), so
 * that no other user can put something in its place. Returns 0, or -errno
 * with why (why_size bytes) saying what is wrong in words that follow the
 * path, like "owned by uid 1000, expected 0 (vramd's user)": -EPERM (its
 * owner or mode), -EACCES (a directory above it is not safe), -ELOOP (a
 * symbolic link), -ENOTDIR, or mkdir's, lstat's or realpath's error.
 */
int vram_mkdir_private(const char *path, char *why, size_t why_size);

/*
 * Opens path (flags: O_RDONLY, O_WRONLY or O_RDWR, with O_CREAT, O_APPEND
 * or O_TRUNC as wanted; mode for O_CREAT) with O_NOFOLLOW and O_CLOEXEC
 * added, and
 * refuses anything but a regular file: a symbolic link planted in its place
 * is not followed, and a FIFO does not block the caller. Returns the
 * descriptor (blocking, close-on-exec), or -errno: -ELOOP when path is a
 * symbolic link, -ENXIO when it is not a regular file.
 */
int vram_open_file(const char *path, int flags, mode_t mode);

/*
 * Reads fd from where it is to its end, or to limit bytes, into a new
 * buffer: *ret_text (caller frees) gets the bytes, and a '\0' after them.
 * Reading to a limit rather than to fstat's size bounds pipes and files
 * that grow meanwhile: a caller with a bound of max passes max + 1 and
 * refuses a length over max. Returns the length, or -errno (-ENOMEM, or
 * read's error); *ret_text is untouched on failure.
 */
ssize_t vram_read_bounded(int fd, size_t limit, char **ret_text);

/*
 * The words for an error of vram_open_file ("is a symbolic link (not
 * followed)", "is not a regular file", else strerror). Static string.
 */
const char *vram_open_strerror(int err);

#endif
