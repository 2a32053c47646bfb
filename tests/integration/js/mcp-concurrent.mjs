// SPDX-License-Identifier: MIT
// Two tool calls at once through `vramctl mcp` with the official MCP
// TypeScript SDK client over stdio: a slow start_workload and a quick
// list_workloads sent right after it. Prints one JSON object:
// {order: [tool names in the order their results came], ms: {tool: ms after sending},
//  results: {tool: {isError, structured}}}.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';

function argValue(name) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const vramctl = argValue('--stdio');
const daemonUrl = argValue('--url');
const workload = argValue('--workload') || 'embed';
if (!vramctl || !daemonUrl) {
  console.error('usage: mcp-concurrent.mjs --stdio VRAMCTL --url DAEMON [--workload NAME]');
  process.exit(2);
}

const transport = new StdioClientTransport({
  command: vramctl,
  args: ['--url', daemonUrl, 'mcp'],
  stderr: 'inherit',
});
const client = new Client({ name: 'vramd-integration', version: '1.0.0' });
await client.connect(transport);

const out = { order: [], ms: {}, results: {} };
const t0 = Date.now();
function call(tool, args) {
  return client.callTool({ name: tool, arguments: args }, undefined, { timeout: 120000 })
    .then((r) => {
      out.order.push(tool);
      out.ms[tool] = Date.now() - t0;
      out.results[tool] = { isError: Boolean(r.isError), structured: r.structuredContent ?? null };
    });
}
// Both in flight at once: the second is written while the first waits.
await Promise.all([
  call('start_workload', { workload, timeout: 60 }),
  call('list_workloads', {}),
]);

await client.close();
console.log(JSON.stringify(out));
