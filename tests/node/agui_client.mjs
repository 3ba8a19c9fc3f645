// The real `@ag-ui/client` (HttpAgent) against the service.
// Usage: BASE_URL=http://127.0.0.1:PORT TEAM=research_team API_KEY=... MESSAGE=... node agui_client.mjs
//   Two runs on one thread: MESSAGE, then a second question.
// With RESUME='[payload, ...]' (JSON): one run with MESSAGE, then, while the agent has pending
//   interrupts, one run per payload that resumes them (status "resolved" with that payload).
// Prints one JSON object with the events each run received; the Python test checks them.
import { randomUUID } from "node:crypto";
import { HttpAgent, buildResumeArray } from "@ag-ui/client";

const agent = new HttpAgent({
  url: `${process.env.BASE_URL}/ag-ui/${process.env.TEAM}`,
  headers: { "X-API-Key": process.env.API_KEY },
  threadId: randomUUID(),
});

async function run(parameters = {}) {
  const runId = randomUUID();
  const events = [];
  let finished = null;
  const { result, newMessages } = await agent.runAgent(
    { runId, ...parameters },
    {
      onEvent({ event }) {
        const { type, messageId, name, delta, stepName, toolCallId, toolCallName, content, threadId, runId, result, outcome } =
          event;
        events.push({ type, messageId, name, delta, stepName, toolCallId, toolCallName, content, threadId, runId, result, outcome });
      },
      onRunFinishedEvent({ outcome, interrupts }) {
        finished = { outcome, interrupts: interrupts ?? [] };
      },
    },
  );
  return { runId, result, events, finished, newMessages: newMessages.map(({ role, name, content }) => ({ role, name, content })) };
}

async function turn(content) {
  agent.addMessage({ id: randomUUID(), role: "user", content });
  return run();
}

if (process.env.RESUME) {
  const runs = [await turn(process.env.MESSAGE)];
  for (const payload of JSON.parse(process.env.RESUME)) {
    if (agent.pendingInterrupts.length === 0) break;
    const answers = Object.fromEntries(agent.pendingInterrupts.map(({ id }) => [id, { status: "resolved", payload }]));
    runs.push(await run({ resume: buildResumeArray(agent.pendingInterrupts, answers) }));
  }
  const messages = agent.messages.map(({ role, name, content, toolCalls, toolCallId }) => ({ role, name, content, toolCalls, toolCallId }));
  console.log(JSON.stringify({ threadId: agent.threadId, runs, pendingInterrupts: agent.pendingInterrupts, messages }));
} else {
  const first = await turn(process.env.MESSAGE);
  const second = await turn("And what did I ask first?");
  console.log(JSON.stringify({ threadId: agent.threadId, first, second, messages: agent.messages.length }));
}
