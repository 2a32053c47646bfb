/* SPDX-License-Identifier: MIT */
/* Small file-system helpers shared by the daemon's modules. */
#ifndef VRAM_FSUTIL_H
#define VRAM_FSUTIL_H

#include <sys/types.h>

/*
 * Creates every missing parent directory of path with parents_mode and, if
 * mode is not 0, path itself with mode. An existing path must be a
 * directory. Returns 0 or -errno (-ENAMETOOLONG, -ENOTDIR, mkdir's error).
 */
int vram_mkdir_p(const char *path, mode_t parents_mode, mode_t mode);

#endif
