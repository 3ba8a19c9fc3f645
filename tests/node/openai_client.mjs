// The official `openai` Node SDK against the service: models, a completion, a stream and an error.
// Usage: BASE_URL=http://127.0.0.1:PORT/v1 API_KEY=... node openai_client.mjs
// Prints one JSON object with what the SDK received; the Python test checks it.
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.BASE_URL, apiKey: process.env.API_KEY, maxRetries: 0, timeout: 30000 });
const messages = [{ role: "user", content: "Hello from Node [[tokens:12]] [[latency:0:0.03]]" }];

const models = [];
for await (const model of client.models.list()) models.push(model.id);

const completion = await client.chat.completions.create({ model: "research", messages });

const stream = await client.chat.completions.create({
  model: "research",
  messages,
  stream: true,
  stream_options: { include_usage: true },
});
const deltas = [];
let finishReason = null;
let usage = null;
for await (const chunk of stream) {
  if (chunk.choices.length) {
    deltas.push(chunk.choices[0].delta.content ?? "");
    finishReason = chunk.choices[0].finish_reason ?? finishReason;
  }
  if (chunk.usage) usage = chunk.usage;
}

let notFound = null;
try {
  await client.chat.completions.create({ model: "no-such-team", messages });
} catch (error) {
  notFound = { isNotFound: error instanceof OpenAI.NotFoundError, status: error.status, code: error.code };
}

console.log(
  JSON.stringify({
    models,
    completion: { id: completion.id, content: completion.choices[0].message.content, usage: completion.usage },
    stream: { text: deltas.join(""), chunks: deltas.length, finishReason, usage },
    notFound,
  }),
);
