/* SPDX-License-Identifier: MIT */
/*
 * For the unit tests that read what processes wrote into files (logs, and
 * /proc files, whose size stat does not tell): a file's whole text, and a
 * wait until a file holds some text.
 */
#ifndef VRAM_TEST_TEXTFILE_H
#define VRAM_TEST_TEXTFILE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define TEXTFILE_MAX (16 << 20) /* bytes read at most */

/* The text of the file at path, NUL-terminated (caller frees), or NULL if it cannot be read. */
static inline char *read_file(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	while (buf) {
		len += fread(buf + len, 1, cap - 1 - len, f);
		if (len < cap - 1 || cap >= TEXTFILE_MAX)
			break;
		char *n = realloc(buf, cap * 2);
		if (!n) {
			free(buf);
			buf = NULL;
			break;
		}
		buf = n;
		cap *= 2;
	}
	fclose(f);
	if (buf)
		buf[len] = '\0';
	return buf;
}

/* Waits (5 s at most) until the file at path holds text; fails the test otherwise. */
static inline void wait_for_text(const char *path, const char *text)
{
	bool found = false;
	for (int i = 0; i < 500 && !found; i++) {
		char *t = read_file(path);
		found = t && strstr(t, text);
		free(t);
		if (!found)
			usleep(10 * 1000);
	}
	if (!found)
		fail_msg("%s does not hold \"%s\" after 5 s", path, text);
}

#endif
