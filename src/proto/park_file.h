/* SPDX-License-Identifier: MIT */
/*
 * The park file: one hooked process's host copy of its device memory on
 * disk (the disk tier). libvram.so writes it on PARK and reads it back on
 * RESTORE; vramd reads only the fixed part of the header (whose process a
 * file is, to remove those of processes that no longer exist). Header-only,
 * like hook_proto.h, so that the hook uses it without vramd's library.
 *
 * Layout, every integer little-endian, every offset a multiple of
 * VRAM_PARK_ALIGN so that the file can be written and read with O_DIRECT:
 *
 *   [0, header_bytes)  the header, zero-padded to a multiple of VRAM_PARK_ALIGN:
 *     0   magic "VRAMPARK"
 *     8   u32 version (VRAM_PARK_VERSION)
 *     12  u32 header_bytes
 *     16  u32 pid of the process
 *     20  u32 flags (0)
 *     24  u64 start time of the process (clock ticks since boot, /proc/PID/stat field 22)
 *     32  u64 piece_bytes: the longest piece
 *     40  u64 piece_count
 *     48  u64 total_bytes: the sum of the pieces' lengths (the host copy)
 *     56  u64 alloc_count
 *     64  u64 header checksum: XXH64 (seed 0) of [0, header_bytes) with these 8 bytes zero
 *     72  alloc_count x u64: each allocation's size in bytes, in the order of the hook's list
 *     ..  piece_count x 40 bytes: u32 allocation index, u32 zero, u64 offset in the
 *         allocation, u64 length, u64 file offset, u64 XXH64 (seed 0) of the piece's bytes
 *   then the pieces, each at its file offset (ascending, after the header),
 *   zero-padded to a multiple of VRAM_PARK_ALIGN.
 *
 * A piece never spans two allocations. Everything a reader takes from the
 * file is bounded here (counts, sizes, offsets) before it is used.
 */
#ifndef VRAM_PARK_FILE_H
#define VRAM_PARK_FILE_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "proto/hook_proto.h" /* the little-endian cursor helpers */

#define VRAM_PARK_MAGIC "VRAMPARK"
#define VRAM_PARK_VERSION 1
#define VRAM_PARK_ALIGN 4096u                 /* bytes: file offsets, header and piece padding */
#define VRAM_PARK_FIXED_SIZE 72               /* bytes before the allocation table */
#define VRAM_PARK_PIECE_ENTRY 40              /* bytes per piece table entry */
#define VRAM_PARK_MAX_ALLOCS (1u << 20)
#define VRAM_PARK_MAX_PIECES (1u << 20)
#define VRAM_PARK_MAX_PIECE_BYTES (1ull << 30) /* a piece is read into one staging buffer */
#define VRAM_PARK_MAX_HEADER (64u << 20)      /* bytes; the tables at their bounds fit */

_Static_assert(VRAM_PARK_FIXED_SIZE + 8ull * VRAM_PARK_MAX_ALLOCS +
	       (uint64_t)VRAM_PARK_PIECE_ENTRY * VRAM_PARK_MAX_PIECES <= VRAM_PARK_MAX_HEADER,
	       "the largest header fits its bound");

struct vram_park_header {
	uint32_t version;
	uint32_t header_bytes;    /* a multiple of VRAM_PARK_ALIGN */
	uint32_t pid;
	uint32_t flags;
	uint64_t start_ticks;     /* the process's start time, clock ticks since boot */
	uint64_t piece_bytes;     /* the longest piece */
	uint64_t piece_count;
	uint64_t total_bytes;
	uint64_t alloc_count;
};

struct vram_park_piece {
	uint32_t alloc;           /* index into the allocation table */
	uint64_t offset;          /* bytes into the allocation */
	uint64_t length;          /* bytes, > 0 */
	uint64_t file_offset;     /* bytes, a multiple of VRAM_PARK_ALIGN */
	uint64_t sum;             /* XXH64 of the piece's bytes */
};

/* ---- XXH64 (the published algorithm, seed given), for the checksums */

#define VRAM_XXH_P1 11400714785074694791ull
#define VRAM_XXH_P2 14029467366897019727ull
#define VRAM_XXH_P3 1609587929392839161ull
#define VRAM_XXH_P4 9650029242287828579ull
#define VRAM_XXH_P5 2870177450012600261ull

static inline uint64_t vram_xxh_rotl(uint64_t v, int r)
{
	return (v << r) | (v >> (64 - r));
}

static inline uint64_t vram_xxh_read64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	v = __builtin_bswap64(v);
#endif
	return v;
}

static inline uint32_t vram_xxh_read32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	v = __builtin_bswap32(v);
#endif
	return v;
}

static inline uint64_t vram_xxh_round(uint64_t acc, uint64_t input)
{
	acc += input * VRAM_XXH_P2;
	acc = vram_xxh_rotl(acc, 31);
	return acc * VRAM_XXH_P1;
}

static inline uint64_t vram_xxh_merge(uint64_t acc, uint64_t v)
{
	acc ^= vram_xxh_round(0, v);
	return acc * VRAM_XXH_P1 + VRAM_XXH_P4;
}

/* XXH64 of len bytes at data: the same value as xxhsum -H64 prints for them. */
static inline uint64_t vram_park_xxh64(const void *data, size_t len, uint64_t seed)
{
	const uint8_t *p = data, *end = p + len;
	uint64_t h;
	if (len >= 32) {
		uint64_t v1 = seed + VRAM_XXH_P1 + VRAM_XXH_P2, v2 = seed + VRAM_XXH_P2, v3 = seed,
			 v4 = seed - VRAM_XXH_P1;
		const uint8_t *limit = end - 32;
		do {
			v1 = vram_xxh_round(v1, vram_xxh_read64(p));
			v2 = vram_xxh_round(v2, vram_xxh_read64(p + 8));
			v3 = vram_xxh_round(v3, vram_xxh_read64(p + 16));
			v4 = vram_xxh_round(v4, vram_xxh_read64(p + 24));
			p += 32;
		} while (p <= limit);
		h = vram_xxh_rotl(v1, 1) + vram_xxh_rotl(v2, 7) + vram_xxh_rotl(v3, 12) + vram_xxh_rotl(v4, 18);
		h = vram_xxh_merge(h, v1);
		h = vram_xxh_merge(h, v2);
		h = vram_xxh_merge(h, v3);
		h = vram_xxh_merge(h, v4);
	} else {
		h = seed + VRAM_XXH_P5;
	}
	h += (uint64_t)len;
	while (end - p >= 8) {
		h ^= vram_xxh_round(0, vram_xxh_read64(p));
		h = vram_xxh_rotl(h, 27) * VRAM_XXH_P1 + VRAM_XXH_P4;
		p += 8;
	}
	if (end - p >= 4) {
		h ^= (uint64_t)vram_xxh_read32(p) * VRAM_XXH_P1;
		h = vram_xxh_rotl(h, 23) * VRAM_XXH_P2 + VRAM_XXH_P3;
		p += 4;
	}
	while (p < end) {
		h ^= (uint64_t)*p * VRAM_XXH_P5;
		h = vram_xxh_rotl(h, 11) * VRAM_XXH_P1;
		p++;
	}
	h ^= h >> 33;
	h *= VRAM_XXH_P2;
	h ^= h >> 29;
	h *= VRAM_XXH_P3;
	h ^= h >> 32;
	return h;
}

/* ---- layout */

static inline uint64_t vram_park_align_up(uint64_t v)
{
	return (v + VRAM_PARK_ALIGN - 1) & ~(uint64_t)(VRAM_PARK_ALIGN - 1);
}

/* Bytes of the header for these counts (a multiple of VRAM_PARK_ALIGN), or 0 beyond the bounds. */
static inline uint64_t vram_park_header_size(uint64_t alloc_count, uint64_t piece_count)
{
	if (alloc_count > VRAM_PARK_MAX_ALLOCS || piece_count > VRAM_PARK_MAX_PIECES)
		return 0;
	return vram_park_align_up(VRAM_PARK_FIXED_SIZE + 8 * alloc_count + VRAM_PARK_PIECE_ENTRY * piece_count);
}

/*
 * Writes the header of h (header_bytes set by the caller to
 * vram_park_header_size()), the allocation sizes and the piece table into
 * buf (h->header_bytes bytes, zeroed here first) with its checksum.
 * Returns 0, or -EINVAL when the counts are beyond the bounds or do not
 * give h->header_bytes.
 */
static inline int vram_park_encode(uint8_t *buf, const struct vram_park_header *h, const uint64_t *sizes,
				   const struct vram_park_piece *pieces)
{
	uint64_t want = vram_park_header_size(h->alloc_count, h->piece_count);
	if (!want || want != h->header_bytes)
		return -EINVAL;
	memset(buf, 0, h->header_bytes);
	memcpy(buf, VRAM_PARK_MAGIC, 8);
	uint8_t *p = buf + 8;
	p = vram_hook_proto_put32(p, h->version ? h->version : VRAM_PARK_VERSION);
	p = vram_hook_proto_put32(p, h->header_bytes);
	p = vram_hook_proto_put32(p, h->pid);
	p = vram_hook_proto_put32(p, h->flags);
	p = vram_hook_proto_put64(p, h->start_ticks);
	p = vram_hook_proto_put64(p, h->piece_bytes);
	p = vram_hook_proto_put64(p, h->piece_count);
	p = vram_hook_proto_put64(p, h->total_bytes);
	p = vram_hook_proto_put64(p, h->alloc_count);
	uint8_t *sum_at = p;
	p += 8;
	for (uint64_t i = 0; i < h->alloc_count; i++)
		p = vram_hook_proto_put64(p, sizes[i]);
	for (uint64_t i = 0; i < h->piece_count; i++) {
		p = vram_hook_proto_put32(p, pieces[i].alloc);
		p = vram_hook_proto_put32(p, 0);
		p = vram_hook_proto_put64(p, pieces[i].offset);
		p = vram_hook_proto_put64(p, pieces[i].length);
		p = vram_hook_proto_put64(p, pieces[i].file_offset);
		p = vram_hook_proto_put64(p, pieces[i].sum);
	}
	vram_hook_proto_put64(sum_at, vram_park_xxh64(buf, h->header_bytes, 0));
	return 0;
}

/*
 * Reads the fixed part of a header (len >= VRAM_PARK_FIXED_SIZE bytes at
 * buf) into ret. Returns 0, or -EBADMSG with *why (a static string) saying
 * what is wrong: not a park file, another version, counts or sizes beyond
 * the bounds or that do not give header_bytes. The checksum is not checked
 * here (it covers the tables too: vram_park_decode_tables).
 */
static inline int vram_park_decode_fixed(const uint8_t *buf, size_t len, struct vram_park_header *ret,
					 const char **why)
{
	struct vram_park_header h;
	if (len < VRAM_PARK_FIXED_SIZE || memcmp(buf, VRAM_PARK_MAGIC, 8) != 0) {
		*why = "not a park file (no VRAMPARK magic)";
		return -EBADMSG;
	}
	const uint8_t *p = buf + 8;
	p = vram_hook_proto_get32(p, &h.version);
	p = vram_hook_proto_get32(p, &h.header_bytes);
	p = vram_hook_proto_get32(p, &h.pid);
	p = vram_hook_proto_get32(p, &h.flags);
	p = vram_hook_proto_get64(p, &h.start_ticks);
	p = vram_hook_proto_get64(p, &h.piece_bytes);
	p = vram_hook_proto_get64(p, &h.piece_count);
	p = vram_hook_proto_get64(p, &h.total_bytes);
	vram_hook_proto_get64(p, &h.alloc_count);
	if (h.version != VRAM_PARK_VERSION) {
		*why = "a park file of another format version";
		return -EBADMSG;
	}
	if (h.flags || h.alloc_count > VRAM_PARK_MAX_ALLOCS || h.piece_count > VRAM_PARK_MAX_PIECES ||
	    h.piece_count < h.alloc_count || (h.alloc_count == 0) != (h.piece_count == 0) ||
	    h.piece_bytes == 0 || h.piece_bytes > VRAM_PARK_MAX_PIECE_BYTES ||
	    h.header_bytes != vram_park_header_size(h.alloc_count, h.piece_count)) {
		*why = "header fields out of bounds";
		return -EBADMSG;
	}
	*ret = h;
	return 0;
}

/*
 * Checks the whole header (h->header_bytes bytes at buf, h from
 * vram_park_decode_fixed) and reads its tables: sizes gets alloc_count
 * entries, pieces piece_count. The checksum must match; every allocation
 * must have a size and be covered by its pieces exactly, in order; every
 * piece must be at most piece_bytes long and sit at the aligned file offset
 * right after the previous piece's padded end (the first right after the
 * header); the lengths must add up to total_bytes. buf is written to (the
 * checksum field is zeroed to hash the header) and restored. Returns 0, or
 * -EBADMSG with *why (a static string).
 */
static inline int vram_park_decode_tables(uint8_t *buf, const struct vram_park_header *h, uint64_t *sizes,
					  struct vram_park_piece *pieces, const char **why)
{
	uint64_t stored;
	uint8_t saved[8];
	vram_hook_proto_get64(buf + 64, &stored);
	memcpy(saved, buf + 64, 8);
	memset(buf + 64, 0, 8);
	uint64_t sum = vram_park_xxh64(buf, h->header_bytes, 0);
	memcpy(buf + 64, saved, 8);
	if (sum != stored) {
		*why = "header checksum mismatch";
		return -EBADMSG;
	}
	const uint8_t *p = buf + VRAM_PARK_FIXED_SIZE;
	for (uint64_t i = 0; i < h->alloc_count; i++) {
		p = vram_hook_proto_get64(p, &sizes[i]);
		if (sizes[i] == 0) {
			*why = "an allocation of size 0";
			return -EBADMSG;
		}
	}
	uint64_t next_file = h->header_bytes, total = 0, in_alloc = 0; /* bytes of allocation alloc covered */
	uint32_t alloc = 0;
	for (uint64_t i = 0; i < h->piece_count; i++) {
		struct vram_park_piece *pc = &pieces[i];
		uint32_t reserved;
		p = vram_hook_proto_get32(p, &pc->alloc);
		p = vram_hook_proto_get32(p, &reserved);
		p = vram_hook_proto_get64(p, &pc->offset);
		p = vram_hook_proto_get64(p, &pc->length);
		p = vram_hook_proto_get64(p, &pc->file_offset);
		p = vram_hook_proto_get64(p, &pc->sum);
		if (in_alloc == sizes[alloc] && pc->alloc == alloc + 1 && pc->alloc < h->alloc_count) {
			alloc++; /* the previous allocation is complete: the next one starts */
			in_alloc = 0;
		}
		if (reserved || pc->alloc != alloc || pc->offset != in_alloc || pc->length == 0 ||
		    pc->length > h->piece_bytes || pc->length > sizes[alloc] - in_alloc ||
		    pc->file_offset != next_file) {
			*why = "piece table out of order or out of bounds";
			return -EBADMSG;
		}
		in_alloc += pc->length;
		total += pc->length;
		next_file = pc->file_offset + vram_park_align_up(pc->length);
	}
	if (h->alloc_count && (alloc + 1 != h->alloc_count || in_alloc != sizes[alloc])) {
		*why = "piece table does not cover every allocation";
		return -EBADMSG;
	}
	if (total != h->total_bytes) {
		*why = "pieces do not add up to the total";
		return -EBADMSG;
	}
	return 0;
}

/* Bytes a complete file of this header has: the last piece's padded end. */
static inline uint64_t vram_park_file_size(const struct vram_park_header *h, const struct vram_park_piece *pieces)
{
	if (!h->piece_count)
		return h->header_bytes;
	const struct vram_park_piece *last = &pieces[h->piece_count - 1];
	return last->file_offset + vram_park_align_up(last->length);
}

#endif
