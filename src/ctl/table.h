/* SPDX-License-Identifier: MIT */
/*
 * Text tables for vramctl: the status view (one row per GPU with a memory
 * bar, one row per workload) rendered from /api/status JSON. Pure functions,
 * so tests can check the exact text.
 */
#ifndef VRAM_TABLE_H
#define VRAM_TABLE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Writes a bar of width cells ("██████░░░░") for used of total into buf and
 * returns buf. total 0 gives an empty bar. buf needs 3*width+1 bytes.
 */
char *vram_table_bar(uint64_t used, uint64_t total, unsigned width, char *buf, size_t size);

/*
 * Formats seconds for a person: "-", "45s", "12m", "3h05m", "2d04h".
 * Negative means unknown ("-").
 */
char *vram_table_format_seconds(double seconds, char *buf, size_t size);

/*
 * Renders the status object of GET /api/status as the table vramctl status
 * prints. Returns a string the caller frees (NULL on out of memory).
 */
char *vram_table_status(json_t *status);

#endif
