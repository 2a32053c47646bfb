// SPDX-License-Identifier: MIT
// Streams a chat completion through vramd's gateway with the `openai` npm
// client: node openai-stream.mjs BASE_URL MODEL. Prints one JSON object:
// {chunks, text, firstChunkMs, totalMs, finishReason}.
import OpenAI from 'openai';

const [baseURL, model] = process.argv.slice(2);
if (!baseURL || !model) {
  console.error('usage: openai-stream.mjs BASE_URL MODEL');
  process.exit(2);
}
const client = new OpenAI({ baseURL, apiKey: 'unused', maxRetries: 0, timeout: 60000 });

const t0 = Date.now();
let firstChunkMs = null;
let chunks = 0;
let text = '';
let finishReason = null;
const stream = await client.chat.completions.create({
  model,
  messages: [{ role: 'user', content: 'Say hello.' }],
  stream: true,
});
for await (const chunk of stream) {
  if (firstChunkMs === null) firstChunkMs = Date.now() - t0;
  chunks++;
  const choice = chunk.choices?.[0];
  text += choice?.delta?.content ?? '';
  if (choice?.finish_reason) finishReason = choice.finish_reason;
}
console.log(JSON.stringify({ chunks, text, firstChunkMs, totalMs: Date.now() - t0, finishReason }));
