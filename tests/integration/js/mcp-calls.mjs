// SPDX-License-Identifier: MIT
// What the MCP client scripts share: a tool call recorded as
// {tool, args, isError, text, structured} or {tool, args, error: {code, message}}.
// The SDK's callTool checks structuredContent against the tool's outputSchema
// (listTools first), so a result that does not validate is an error here.
export function recorder(client, calls) {
  return async function call(tool, args) {
    const rec = { tool, args };
    try {
      const r = await client.callTool({ name: tool, arguments: args });
      rec.isError = Boolean(r.isError);
      rec.text = r.content?.[0]?.text ?? '';
      rec.structured = r.structuredContent ?? null;
    } catch (e) {
      rec.error = { code: e.code ?? null, message: String(e.message ?? e) };
    }
    calls.push(rec);
    return rec;
  };
}
