/* SPDX-License-Identifier: MIT */
/*
 * Small string helpers: an edit distance and a "did you mean" lookup for
 * misspelled keys and values; UTF-8 checks and repairs for client text on
 * its way into JSON (jansson refuses invalid UTF-8) or into a log line; and
 * the escaping of control characters in log lines.
 */
#ifndef VRAM_STRUTIL_H
#define VRAM_STRUTIL_H

#include <stdarg.h>
#include <stdbool.h>
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

/* vasprintf: a new string (caller frees), or NULL when out of memory. */
char *vram_str_vprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));

/*
 * The candidate closest to word, if it is close enough to be a likely typo
 * (distance at most 2, and less than a third of the longer word's length,
 * rounded up). Returns a borrowed pointer into candidates, or NULL. Ties go
 * to the first candidate.
 */
const char *vram_str_closest(const char *word, const char *const *candidates, size_t n);

/*
 * Bytes of the well-formed UTF-8 character at the start of s (len bytes
 * available): 1 to 4, or 0 when s does not start one (a stray continuation
 * byte, a character cut short, an overlong form, a UTF-16 surrogate, a code
 * point above U+10FFFF, or len 0). The same rules jansson applies.
 */
size_t vram_utf8_char_len(const char *s, size_t len);

/* Whether the len bytes at s are well-formed UTF-8 (NUL counts as a character). */
bool vram_utf8_valid(const char *s, size_t len);

/*
 * Copies the len bytes at in into out (size bytes, always NUL-terminated
 * when size > 0) as well-formed UTF-8: each byte that does not start a
 * well-formed character becomes U+FFFD, and a NUL ends the copy. When out is
 * too small the copy ends before the first character that does not fit, so
 * it is never cut inside one. Returns the bytes written, NUL not counted.
 */
size_t vram_utf8_sanitize(char *out, size_t size, const char *in, size_t len);

/*
 * Copies the len bytes at in into out (size bytes, always NUL-terminated
 * when size > 0) so that the result holds no control character and is
 * well-formed UTF-8: \n, \r and \t become those two-character escapes, a
 * backslash stays as it is, every other byte below 0x20, 0x7f and each byte
 * that does not start a well-formed character become \xNN. When out is too
 * small the copy ends before the first character or escape that does not
 * fit. Returns the bytes written, NUL not counted.
 */
size_t vram_str_escape_control(char *out, size_t size, const char *in, size_t len);

#endif
