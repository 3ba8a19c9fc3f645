// The real `@ag-ui/client` (HttpAgent) against the service: two runs on one thread.
// Usage: BASE_URL=http://127.0.0.1:PORT TEAM=research_team API_KEY=... MESSAGE=... node agui_client.mjs
// Prints one JSON object with the events each run received; the Python test checks them.
import { randomUUID } from "node:crypto";
import { HttpAgent } from "@ag-ui/client";

const agent = new HttpAgent({
  url: `${process.env.BASE_URL}/ag-ui/${process.env.TEAM}`,
  headers: { "X-API-Key": process.env.API_KEY },
  threadId: randomUUID(),
});

async function turn(content) {
  agent.addMessage({ id: randomUUID(), role: "user", content });
  const runId = randomUUID();
  const events = [];
  const { result, newMessages } = await agent.runAgent(
    { runId },
    {
      onEvent({ event }) {
        const { type, messageId, name, delta, stepName, toolCallId, toolCallName, content, threadId, runId, result } = event;
        events.push({ type, messageId, name, delta, stepName, toolCallId, toolCallName, content, threadId, runId, result });
      },
    },
  );
  return { runId, result, events, newMessages: newMessages.map(({ role, name, content }) => ({ role, name, content })) };
}

const first = await turn(process.env.MESSAGE);
const second = await turn("And what did I ask first?");
console.log(JSON.stringify({ threadId: agent.threadId, first, second, messages: agent.messages.length }));
