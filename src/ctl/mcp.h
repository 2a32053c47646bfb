/* SPDX-License-Identifier: MIT */
/*
 * `vramctl mcp`: the MCP stdio transport, bridged to the daemon's /mcp.
 * An MCP client starts it as a subprocess and writes one JSON-RPC message a
 * line on its stdin; each goes to the daemon as its own POST (over the Unix
 * socket or TCP), and each reply comes back as one line on stdout as soon
 * as it is there. Messages are forwarded concurrently, so a quick request is
 * not held behind a slow tool call: replies may come out of order, and the
 * client matches them by id, as JSON-RPC has it.
 *
 * The session id the daemon gives on initialize, and the revision
 * negotiated there, go with every later message of the handshake revisions;
 * messages that arrive while initialize is being answered wait for it. A
 * 2026-07-28 message (its revision in params._meta) goes statelessly, with
 * the MCP-Protocol-Version, Mcp-Method and Mcp-Name headers that revision's
 * HTTP transport asks for. notifications/cancelled for a request in flight
 * drops that request (the daemon stops waiting for its action; the action
 * goes on) and no reply is written for it. The session ends at end of
 * input, once every reply is out. Logs go to stderr only.
 *
 * Bounded: a line is at most VRAM_CTL_MCP_LINE_MAX bytes (a longer one is
 * dropped and answered with an error of id null), and at most
 * VRAM_CTL_MCP_IN_FLIGHT_MAX messages are forwarded or waiting at once (a
 * request past that is answered VRAM_CTL_MCP_BUSY at once).
 */
#ifndef VRAM_CTL_MCP_H
#define VRAM_CTL_MCP_H

#include <stdio.h>

#include "ctl/client.h"

#define VRAM_CTL_MCP_LINE_MAX (1024 * 1024) /* bytes of one message */
#define VRAM_CTL_MCP_IN_FLIGHT_MAX 32       /* messages forwarded or waiting at once */
/*
 * The JSON-RPC error code of a request refused because too many are in
 * flight: application-defined, outside the range JSON-RPC reserves (MCP
 * 2026-07-28 asks new codes to stay out of it).
 */
#define VRAM_CTL_MCP_BUSY (-31000)

/*
 * Runs until end of input and every reply written (or until the output
 * closes). url is borrowed; token may be NULL; timeout_ms bounds each
 * exchange with the daemon (0 = none). in and out are borrowed; they are
 * read and written through their file descriptors. Returns a
 * VRAM_CTL_EXIT_* code.
 */
int vram_ctl_mcp(const struct vram_client_url *url, const char *token, int timeout_ms, FILE *in,
		 FILE *out);

#endif
