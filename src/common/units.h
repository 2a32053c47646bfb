/* SPDX-License-Identifier: MIT */
/*
 * Units as people write them in configs and on command lines:
 *   sizes      "512MiB", "24GiB", "1.5GB", "4096" (bytes); KiB/MiB/GiB/TiB are
 *              powers of 1024, kB/KB/MB/GB/TB powers of 1000; K/M/G/T alone
 *              are taken as binary (as nvidia-smi and docker do);
 *   memory     a size, or a fraction of a device in (0, 1] ("0.8");
 *   durations  "90s", "10m", "1h", "1h30m", "250ms", a bare number is seconds;
 *              "never" / "off" is VRAM_DURATION_NEVER.
 * Parsers return 0 or -EINVAL (not this unit) / -ERANGE (out of range: above
 * VRAM_BYTES_MAX or VRAM_DURATION_MAX_MS) and leave the output untouched on
 * failure. Whole numbers are exact however large; fractions go through a
 * double.
 */
#ifndef VRAM_UNITS_H
#define VRAM_UNITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VRAM_DURATION_NEVER UINT64_MAX
/*
 * The longest duration a config or a client may give: 100 years (of 365
 * days), in ms. Far beyond any timer's use, and small enough that a
 * duration added to a clock in ms, or turned into ns, cannot overflow.
 */
#define VRAM_DURATION_MAX_MS (UINT64_C(100) * 365 * 86400000)
#define VRAM_DURATION_MAX_TEXT "100 years (36500d)" /* VRAM_DURATION_MAX_MS in words */
/* The largest size in bytes; UINT64_MAX stands for "unknown" where sizes are measured. */
#define VRAM_BYTES_MAX (UINT64_MAX - 1)

#define VRAM_KiB (UINT64_C(1) << 10)
#define VRAM_MiB (UINT64_C(1) << 20)
#define VRAM_GiB (UINT64_C(1) << 30)
#define VRAM_TiB (UINT64_C(1) << 40)

/* A memory amount: absolute bytes, or a fraction of the device's total. */
struct vram_mem {
	bool is_fraction;
	uint64_t bytes;  /* bytes, when !is_fraction */
	double fraction; /* (0, 1], when is_fraction */
};

int vram_units_parse_bytes(const char *s, uint64_t *ret_bytes);
int vram_units_parse_mem(const char *s, struct vram_mem *ret_mem);
int vram_units_parse_duration_ms(const char *s, uint64_t *ret_ms);

/* Resolves a memory amount against a device total (bytes). */
uint64_t vram_mem_resolve(const struct vram_mem *mem, uint64_t total_bytes);

/*
 * Formats into buf (always NUL-terminated) and returns buf:
 * bytes as "23.5GiB" / "512MiB" / "100B"; durations as "90s", "10m", "1h30m",
 * "never"; a memory amount as a size or "0.8".
 */
char *vram_units_format_bytes(uint64_t bytes, char *buf, size_t size);
char *vram_units_format_duration_ms(uint64_t ms, char *buf, size_t size);
char *vram_units_format_mem(const struct vram_mem *mem, char *buf, size_t size);

/*
 * Parses "2x80GiB" or "1x24GiB,1x80GiB" (a list of COUNTxSIZE, COUNT may be
 * omitted for 1). Each size needs a unit: "2x80" is not two 80-byte GPUs
 * but a mistake (-EDOM). Fills up to max entries of ret_sizes (bytes) and
 * returns the number of GPUs, or -EINVAL, -EDOM (a size without a unit) or
 * -E2BIG (more than max).
 */
int vram_units_parse_gpu_list(const char *s, uint64_t *ret_sizes, size_t max);
/*
 * For a list vram_units_parse_gpu_list refused with -EDOM: s with "GiB"
 * after each size that has no unit ("2x80" -> "2x80GiB"), into buf.
 * Returns buf.
 */
char *vram_units_gpu_list_hint(const char *s, char *buf, size_t size);

#endif
