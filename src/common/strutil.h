/* SPDX-License-Identifier: MIT */
/*
 * Small string helpers shared by the parsers: an edit distance and a
 * "did you mean" lookup for misspelled keys and values.
 */
#ifndef VRAM_STRUTIL_H
#define VRAM_STRUTIL_H

#include <stddef.h>

/* Longest word the edit distance looks at; longer words get SIZE_MAX. */
#define VRAM_STR_DISTANCE_MAX_LEN 64

/*
 * Optimal string alignment distance between a and b: insertions, deletions,
 * substitutions and transpositions of neighbours each cost 1, so "memroy" is
 * 1 away from "memory". Case-sensitive. Returns SIZE_MAX when either word is
 * longer than VRAM_STR_DISTANCE_MAX_LEN.
 */
size_t vram_str_distance(const char *a, const char *b);

/*
 * The candidate closest to word, if it is close enough to be a likely typo
 * (distance at most 2, and less than a third of the longer word's length,
 * rounded up). Returns a borrowed pointer into candidates, or NULL. Ties go
 * to the first candidate.
 */
const char *vram_str_closest(const char *word, const char *const *candidates, size_t n);

#endif
