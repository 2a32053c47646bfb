// SPDX-License-Identifier: MIT
// Calls every tool of vramd's MCP server as the TTS apps and other clients
// send them, through the official MCP TypeScript SDK client over streamable
// HTTP, whose callTool checks each result's structuredContent against the
// tool's outputSchema (a result that does not validate is an McpError
// here). --workload names the workload to act on.
// Prints one JSON object: {tools: [{name, annotations}], calls: [{tool, args,
// isError, text, structured} | {tool, args, error: {code, message}}]}.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { recorder } from './mcp-calls.mjs';

function argValue(name) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const url = argValue('--http');
const workload = argValue('--workload') || 'embed';
const transport = new StreamableHTTPClientTransport(new URL(url));
const client = new Client({ name: 'vramd-tools', version: '1.0.0' });
await client.connect(transport);

const out = { tools: [], calls: [] };
const listed = await client.listTools();
out.tools = listed.tools.map((t) => ({ name: t.name, annotations: t.annotations ?? null }));

// The SDK checks structuredContent against the tool's outputSchema.
const call = recorder(client, out.calls);

// Every tool, in the forms clients send: with and without a workload.
await call('get_gpu_status', {});
await call('list_workloads', {});
await call('plan', {});
await call('plan', { gpus: '2x24GiB' });
await call('update_gpu_timeout', { timeout_seconds: 300 });
await call('update_gpu_timeout', { timeout: 600 });
await call('update_gpu_timeout', { timeout_seconds: '10m', workload });
await call('update_gpu_timeout', { timeout_seconds: 0 });
await call('start_workload', { workload, timeout: 60 });
await call('offload_gpu', { workload });
await call('restore_workload', { workload });
await call('offload_gpu', {});
await call('restore_workload', { workload });
await call('park_workload', { workload });
await call('restore_workload', { workload });
await call('release_gpu', { workload });
await call('start_workload', { workload });
await call('release_gpu', {});
await call('start_workload', { workload });
await call('stop_workload', { workload });

await client.close();
console.log(JSON.stringify(out));
