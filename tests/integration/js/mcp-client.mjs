// SPDX-License-Identifier: MIT
// Drives vramd's MCP server with the official MCP TypeScript SDK client, over
// streamable HTTP (--http URL) or over stdio through `vramctl mcp`
// (--stdio VRAMCTL --url SOCKET). Lists the tools and calls every one of
// them, with good and bad arguments, on the workload named by --workload.
// Prints one JSON object: {transport, protocolVersion, server, tools, calls:
// [{tool, args, isError, text, structured} | {tool, args, error: {code, message}}]}.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { recorder } from './mcp-calls.mjs';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';

function argValue(name) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const httpUrl = argValue('--http');
const vramctl = argValue('--stdio');
const daemonUrl = argValue('--url');
const workload = argValue('--workload') || 'embed';

let transport;
if (httpUrl) {
  transport = new StreamableHTTPClientTransport(new URL(httpUrl));
} else if (vramctl) {
  transport = new StdioClientTransport({
    command: vramctl,
    args: ['--url', daemonUrl, 'mcp'],
    stderr: 'inherit',
  });
} else {
  console.error('usage: mcp-client.mjs --http URL | --stdio VRAMCTL --url DAEMON [--workload NAME]');
  process.exit(2);
}

const client = new Client({ name: 'vramd-integration', version: '1.0.0' });
await client.connect(transport);

const out = {
  transport: httpUrl ? 'http' : 'stdio',
  protocolVersion: transport.protocolVersion ?? null,
  sessionId: transport.sessionId ?? null,
  server: client.getServerVersion(),
  tools: [],
  calls: [],
};

const listed = await client.listTools();
out.tools = listed.tools.map((t) => ({
  name: t.name,
  required: t.inputSchema.required ?? [],
  properties: Object.keys(t.inputSchema.properties ?? {}),
  hasOutputSchema: Boolean(t.outputSchema),
}));

// The SDK checks structuredContent against the tool's outputSchema.
const call = recorder(client, out.calls);

await call('get_gpu_status', {});
await call('list_workloads', {});
await call('plan', {});
await call('plan', { gpus: '1x16GiB' });
await call('start_workload', { workload, timeout: 60 });
await call('update_gpu_timeout', { timeout: 600, workload });
await call('offload_gpu', { workload });
await call('restore_workload', { workload });
await call('release_gpu', { workload });
await call('start_workload', { workload });
await call('stop_workload', { workload });
// Bad arguments and refusals.
await call('start_workload', {});
await call('start_workload', { workload: 'no-such-model' });
await call('restore_workload', { workload });
await call('update_gpu_timeout', { timeout: 'soon' });
await call('offload_gpu', { workload: 42 });
await call('plan', { gpus: 'lots' });
await call('no_such_tool', {});

await client.close();
console.log(JSON.stringify(out));
