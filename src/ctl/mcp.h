/* SPDX-License-Identifier: MIT */
/*
 * `vramctl mcp`: the MCP stdio transport, bridged to the daemon's /mcp.
 * An MCP client starts it as a subprocess and writes one JSON-RPC message a
 * line on its stdin; each goes to the daemon as a POST (over the Unix
 * socket or TCP), and each reply comes back as one line on stdout. The
 * session id the daemon gives on initialize, and the revision negotiated
 * there, go with every later message; the session ends at end of input.
 * Messages are handled one at a time, in order. Logs go to stderr only.
 */
#ifndef VRAM_CTL_MCP_H
#define VRAM_CTL_MCP_H

#include <stdio.h>

#include "ctl/client.h"

#define VRAM_CTL_MCP_LINE_MAX (1024 * 1024) /* bytes of one message */

/*
 * Runs until end of input. url is borrowed; token may be NULL; timeout_ms
 * bounds each exchange (0 = none). Returns a VRAM_CTL_EXIT_* code.
 */
int vram_ctl_mcp(const struct vram_client_url *url, const char *token, int timeout_ms, FILE *in,
		 FILE *out);

#endif
