// The agent-api chat page: plain JavaScript, no build step; two vendored libraries (marked, DOMPurify).
//
// It lists the teams (GET agents), sends each message with fetch (POST chat/stream: EventSource
// cannot POST) and reads the Server-Sent Events as they arrive. Each turn is a run that goes on
// if the page goes away ("on_disconnect": "continue"); a reload re-attaches to it
// (GET runs/{id}/events) and Stop cancels it (POST runs/{id}/cancel), and a reload between turns
// redraws the conversation from its session (GET session/{id}). Text from the server or the model
// goes into the page as text nodes, with one exception: an agent's finished message is rendered
// from Markdown, with any HTML in it escaped (shown as text) and the result sanitized by DOMPurify
// (and the page's Content-Security-Policy runs no inline script and loads no outside image).
// A run may wait for a person (an `input_request` frame): the page shows the question, or the tool
// call to approve, in the conversation and sends the answer (POST runs/{id}/input).
"use strict";

(() => {
  const KEY_STORAGE = "agent-api.api-key";
  // The run in progress, so that a reload re-attaches to it (turns are runs that outlive requests).
  const RUN_STORAGE = "agent-api.run";
  // The conversation, so that a reload between turns shows it again and continues it.
  const SESSION_STORAGE = "agent-api.session";
  const HUES = 6; // agent colours in app.css: [data-hue="0"] … [data-hue="5"]

  const $ = (id) => document.getElementById(id);
  const ui = {
    app: $("app"),
    team: $("team"),
    teamInfo: $("team-info"),
    apiKey: $("api-key"),
    sessionId: $("session-id"),
    newSession: $("new-session"),
    log: $("log"),
    empty: $("empty"),
    form: $("composer"),
    message: $("message"),
    send: $("send"),
    stop: $("stop"),
    status: $("status"),
  };

  const state = {
    sessionId: null, // from the `session` frame; sent with the next message
    sessionTeam: null,
    teams: [],
    turn: null, // the request in flight
    pending: null, // the question (input request) the run waits on, shown in the log
  };
  const PLACEHOLDER = ui.message.placeholder;

  // --- small DOM helpers (text only) ---------------------------------------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "className") node.className = value;
      else if (name === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function hue(name) {
    let h = 0;
    for (const ch of String(name)) h = (h * 31 + ch.codePointAt(0)) >>> 0;
    return String(h % HUES);
  }

  function nearBottom() {
    const log = ui.log;
    return log.scrollHeight - log.scrollTop - log.clientHeight < 48;
  }

  function addToLog(node) {
    const stick = nearBottom();
    ui.empty.hidden = true;
    ui.log.append(node);
    if (stick) ui.log.scrollTop = ui.log.scrollHeight;
    return node;
  }

  function keepScrolled(wasNearBottom) {
    if (wasNearBottom) ui.log.scrollTop = ui.log.scrollHeight;
  }

  function setStatus(text, kind) {
    ui.status.textContent = text;
    ui.status.dataset.kind = kind || "info";
  }

  // --- API key and headers -------------------------------------------------------------------

  function apiKey() {
    return ui.apiKey.value.trim();
  }

  function headers(extra) {
    const h = Object.assign({ Accept: "application/json" }, extra || {});
    const key = apiKey();
    if (key) h["X-API-Key"] = key;
    return h;
  }

  function loadStoredKey() {
    try {
      ui.apiKey.value = sessionStorage.getItem(KEY_STORAGE) || "";
    } catch (_) {
      // storage disabled: the key lives in the input only
    }
  }

  function storeKey() {
    try {
      const key = apiKey();
      if (key) sessionStorage.setItem(KEY_STORAGE, key);
      else sessionStorage.removeItem(KEY_STORAGE);
    } catch (_) {
      // storage disabled
    }
  }

  function markKeyInvalid(invalid) {
    if (invalid) ui.apiKey.setAttribute("aria-invalid", "true");
    else ui.apiKey.removeAttribute("aria-invalid");
  }

  // --- errors ----------------------------------------------------------------------------------

  async function readDetail(response) {
    try {
      const body = await response.json();
      return formatDetail(body && body.detail);
    } catch (_) {
      return "";
    }
  }

  function formatDetail(detail) {
    if (detail === null || detail === undefined) return "";
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      return detail
        .map((item) => {
          if (!item || typeof item !== "object") return String(item);
          const where = (item.loc || []).filter((part) => part !== "body").join(".");
          return where ? `${where}: ${item.msg}` : String(item.msg || "");
        })
        .join("\n");
    }
    return JSON.stringify(detail);
  }

  function retryAfterSeconds(response) {
    const raw = response.headers.get("Retry-After");
    if (!raw) return null;
    const seconds = Number(raw);
    if (Number.isFinite(seconds)) return Math.max(0, Math.ceil(seconds));
    const date = Date.parse(raw);
    return Number.isNaN(date) ? null : Math.max(0, Math.ceil((date - Date.now()) / 1000));
  }

  function errorItem(title, detail, status, action) {
    const item = el(
      "div",
      { className: "item error", "data-testid": "error", dataset: { status: status === null ? "network" : String(status) } },
      el("strong", { className: "error-title" }, title),
    );
    if (detail) item.append(el("p", { className: "error-detail" }, detail));
    if (action) item.append(action);
    return addToLog(item);
  }

  function noticeItem(text, testid) {
    return addToLog(el("p", { className: "item notice", "data-testid": testid || "notice" }, text));
  }

  async function showHttpError(response) {
    const status = response.status;
    const detail = await readDetail(response);
    let title;
    let action = null;
    let focus = ui.message;
    if (status === 401 || status === 403) {
      title = apiKey()
        ? "The API key was not accepted. Enter a valid API key above, then send again."
        : "This server needs an API key. Enter it above, then send again.";
      markKeyInvalid(true);
      focus = ui.apiKey;
    } else if (status === 404) {
      title = "This session has expired or no longer exists.";
      action = el("button", { type: "button", className: "inline-action", "data-testid": "start-new-session" },
        "Start a new session");
      action.addEventListener("click", () => newSession("New session started. Send your message again."));
      focus = action;
    } else if (status === 409) {
      title = "The session cannot take this message right now (it is busy with another request, or belongs to another team).";
    } else if (status === 413) {
      title = "The message is too large.";
    } else if (status === 422) {
      title = "The server rejected the request:";
    } else if (status === 429) {
      const wait = retryAfterSeconds(response);
      title = wait === null ? "Rate limited: too many requests. Wait a moment, then try again."
        : `Rate limited: too many requests. Try again in ${wait} s.`;
    } else if (status >= 500) {
      title = `The server could not answer (HTTP ${status}). Try again shortly.`;
    } else {
      title = `The request failed (HTTP ${status}).`;
    }
    errorItem(title, detail, status, action);
    setStatus(`Error: HTTP ${status}`, "error");
    return focus;
  }

  // --- the run in progress (survives a reload) -------------------------------------------------

  function rememberRun(run) {
    try {
      sessionStorage.setItem(RUN_STORAGE, JSON.stringify(run));
    } catch (_) { /* storage unavailable: no re-attach after a reload */ }
  }

  function forgetRun() {
    try {
      sessionStorage.removeItem(RUN_STORAGE);
    } catch (_) { /* nothing to forget */ }
  }

  function storedRun() {
    try {
      const run = JSON.parse(sessionStorage.getItem(RUN_STORAGE) || "null");
      return run && typeof run.runId === "string" && typeof run.sessionId === "string" ? run : null;
    } catch (_) {
      return null;
    }
  }

  function cancelRun(runId) {
    return fetch(`runs/${encodeURIComponent(runId)}/cancel`, { method: "POST", headers: headers(), cache: "no-store" })
      .catch(() => null);
  }

  // --- the conversation ------------------------------------------------------------------------

  function setSession(id, team) {
    state.sessionId = id || null;
    state.sessionTeam = id ? team || state.sessionTeam : null;
    ui.sessionId.textContent = id || "new";
    ui.sessionId.dataset.empty = id ? "false" : "true";
    try {
      if (id) sessionStorage.setItem(SESSION_STORAGE, JSON.stringify({ sessionId: id, team: state.sessionTeam }));
      else sessionStorage.removeItem(SESSION_STORAGE);
    } catch (_) { /* storage unavailable: a reload starts afresh */ }
  }

  function storedSession() {
    try {
      const session = JSON.parse(sessionStorage.getItem(SESSION_STORAGE) || "null");
      return session && typeof session.sessionId === "string" ? session : null;
    } catch (_) {
      return null;
    }
  }

  // --- Markdown, safely ------------------------------------------------------------------------

  const markdown = window.marked && window.DOMPurify
    ? new window.marked.Marked({
      gfm: true,
      breaks: true,
      // HTML in a model's answer is shown as text, never parsed: agents quote markup all the time.
      renderer: { html: (token) => escapeHtml(token.text || token.raw || "") },
    })
    : null;
  const SANITIZE = {
    USE_PROFILES: { html: true },
    FORBID_TAGS: ["img", "style", "form", "input", "button", "textarea", "select", "iframe", "svg", "math"],
    FORBID_ATTR: ["style"],
  };

  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, (ch) => `&#${ch.codePointAt(0)};`);
  }

  // An agent's finished message: its Markdown as sanitized HTML (links open in a new tab).
  function renderMarkdown(box, text) {
    if (!markdown || !text) return;
    // trim: marked ends each block with a newline, which would stay as a stray text node.
    const html = window.DOMPurify.sanitize(markdown.parse(text, { async: false }).trim(), SANITIZE);
    box.innerHTML = html;
    for (const link of box.querySelectorAll("a[href]")) {
      link.setAttribute("target", "_blank");
      link.setAttribute("rel", "noopener noreferrer");
    }
    box.dataset.format = "markdown";
  }

  // Forget the session (the server keeps it until its TTL); `keepLog` leaves the conversation
  // on screen, with the notice as a divider.
  function newSession(notice, keepLog) {
    if (state.turn) return;
    setSession(null);
    if (!keepLog) {
      ui.log.querySelectorAll(".bubble, .item").forEach((node) => node.remove());
      ui.empty.hidden = false;
    }
    if (notice) noticeItem(notice);
    setStatus("New session: your next message starts a new conversation.");
    updateControls();
    ui.message.focus();
  }

  function userBubble(text) {
    return addToLog(
      el("article", { className: "bubble user", dataset: { role: "user" }, "aria-label": "You" },
        el("header", { className: "who" }, "You"),
        el("div", { className: "text" }, text)),
    );
  }

  function agentBubble(turn, agent) {
    const open = turn.bubble;
    if (open && open.agent === agent && !open.closed) return open;
    closeBubble(turn);
    const text = document.createTextNode("");
    const node = el("article", {
      className: "bubble agent",
      dataset: { agent, hue: hue(agent), role: "agent", state: "streaming" },
      "aria-label": agent,
    },
    el("header", { className: "who" }, agent),
    el("div", { className: "text", "data-testid": "bubble-text" }, text));
    addToLog(node);
    turn.bubble = { agent, node, text, closed: false };
    turn.bubbles += 1;
    if (turn.speaker !== agent) {
      turn.speaker = agent;
      setStatus(`${agent} is writing…`, "busy");
    }
    return turn.bubble;
  }

  function closeBubble(turn, finalState) {
    const open = turn.bubble;
    if (!open || open.closed) return;
    open.closed = true;
    open.text.data = open.text.data.replace(/\s+$/, "");
    open.node.dataset.state = finalState || "complete";
    const box = open.node.querySelector(".text");
    if (box) renderMarkdown(box, open.text.data);
  }

  function appendToken(turn, agent, text) {
    if (!text) return;
    const stick = nearBottom();
    const bubble = agentBubble(turn, agent);
    // A new message starts with the separator from the previous one ("\n\n"): not in a new bubble.
    const piece = bubble.text.length ? text : text.replace(/^\s+/, "");
    if (piece) bubble.text.appendData(piece);
    keepScrolled(stick);
  }

  function toolItem(kind, data) {
    let label;
    let body;
    if (kind === "tool_call") {
      const call = data.tool_call || {};
      label = `${data.agent || "agent"} called ${call.name || "a tool"}`;
      body = typeof call.arguments === "string" ? call.arguments : JSON.stringify(call.arguments || {});
    } else {
      const result = data.tool_result || {};
      label = "tool result";
      body = typeof result.content === "string" ? result.content : JSON.stringify(result.content);
    }
    addToLog(el("div", { className: `item tool ${kind.replace("_", "-")}`, "data-testid": kind.replace("_", "-") },
      el("span", { className: "tool-label" }, label),
      el("code", { className: "tool-body" }, body || "")));
  }

  function usageItem(data) {
    const usage = data.usage || {};
    const parts = [];
    if (typeof data.turns_used === "number") parts.push(`${data.turns_used} ${data.turns_used === 1 ? "reply" : "replies"}`);
    if (typeof usage.total_tokens === "number") {
      parts.push(`${usage.total_tokens} tokens (${usage.prompt_tokens ?? "?"} prompt + ${usage.completion_tokens ?? "?"} completion)`);
    }
    if (data.finished === false) parts.push("stopped at the reply limit");
    addToLog(el("p", { className: "item usage", "data-testid": "usage" }, `Done · ${parts.join(" · ") || "no usage reported"}`));
  }

  function handleFrame(turn, frame) {
    let data;
    try {
      data = JSON.parse(frame.data);
    } catch (_) {
      return; // not ours
    }
    if (!data || typeof data !== "object") return;
    turn.frames += 1;
    // A run stopped from this page ends with the server's own error and done frames: the page
    // says "Stopped" instead (see follow).
    if (turn.stopped && (frame.event === "error" || frame.event === "done")) return;
    switch (frame.event) {
      case "session":
        setSession(data.session_id, data.agent);
        if (data.run_id && !turn.runId) turn.runId = data.run_id;
        setStatus("The team is thinking…", "busy");
        break;
      case "token":
        turn.echo = false;
        turn.streaming.add(data.agent || "assistant");
        appendToken(turn, data.agent || "assistant", typeof data.text === "string" ? data.text : data.chunk);
        break;
      case "message": {
        const agent = data.agent || "assistant";
        const message = data.message || {};
        const echo = turn.echo;
        turn.echo = false;
        if (message.role === "user") {
          closeBubble(turn);
          // The words a person answered an input request with, as the team received them.
          if (echo && typeof message.content === "string" && message.content.trim()) userBubble(message.content);
          break;
        }
        const streamed = turn.streaming.delete(agent); // its tokens came before this frame
        if (!streamed && message.role === "assistant" && typeof message.content === "string" && message.content.trim()) {
          // A message that arrived whole (not token by token): show it all the same.
          appendToken(turn, agent, message.content.replace(/\s*TERMINATE\s*$/, ""));
        }
        closeBubble(turn);
        break;
      }
      case "tool_call":
      case "tool_result":
        closeBubble(turn);
        toolItem(frame.event, data);
        break;
      case "input_request":
        closeBubble(turn);
        showInputRequest(turn, data);
        break;
      case "input_response":
        inputAnswered(turn, data.input_response || {});
        break;
      case "error":
        closeBubble(turn, "failed");
        turn.failed = true;
        errorItem(`The run failed${data.status ? ` (HTTP ${data.status})` : ""}.`, data.detail || "", data.status ?? null);
        setStatus("Error: the run failed", "error");
        break;
      case "done":
        turn.done = true;
        forgetRun();
        closeBubble(turn);
        if (data.session_id) setSession(data.session_id, state.sessionTeam);
        if (!turn.failed) {
          if (!turn.bubbles && data.response) {
            // Nothing was streamed (a team that does not stream): show the answer whole.
            appendToken(turn, "answer", data.response);
            closeBubble(turn);
          }
          usageItem(data);
          setStatus("Done.", "ok");
        }
        break;
      default:
        break; // "usage" (repeated in "done") and anything newer
    }
  }

  // --- a run that waits for a person -----------------------------------------------------------

  // An input request shows as a form in the conversation: a question (kind "message") is answered
  // with words, "Continue" (no words: the team goes on by itself) or "End" ("exit"); a tool call
  // (kind "approval") is approved or denied, with an optional reason. The answer is POSTed to
  // runs/{id}/input; the stream's `input_response` frame (or the POST's success) replaces the form
  // with a line saying what was answered. A reload replays the run's frames: a request shows again
  // unless an `input_response` for it follows.

  let inputCount = 0;

  function prettyArguments(args) {
    if (args === null || args === undefined) return "";
    if (typeof args !== "string") return JSON.stringify(args, null, 2);
    try {
      return JSON.stringify(JSON.parse(args), null, 2);
    } catch (_) {
      return args; // not JSON: shown as it came
    }
  }

  // What was answered, kept with the run so that a reload can say it again.
  function rememberAnswer(runId, requestId, label) {
    const run = storedRun();
    if (!run || run.runId !== runId) return;
    run.answers = Object.assign({}, run.answers, { [requestId]: label });
    rememberRun(run);
  }

  function storedAnswer(runId, requestId) {
    const run = storedRun();
    const answers = run && run.runId === runId ? run.answers : null;
    return answers && typeof answers[requestId] === "string" ? answers[requestId] : null;
  }

  function showInputRequest(turn, data) {
    const request = data.input_request;
    if (!request || typeof request.request_id !== "string" || turn.stopped) return;
    if (state.pending && state.pending.requestId === request.request_id) return;
    dropInputRequest(); // an older one the run no longer waits on
    const id = `input-${++inputCount}`;
    const agent = request.agent || data.agent || "agent";
    const pending = {
      turn,
      runId: data.run_id || turn.runId,
      requestId: request.request_id,
      kind: request.kind === "approval" ? "approval" : "message",
      agent,
      tool: null,
      label: null, // what is being (or was) answered, for the line that replaces the form
      sending: false,
      node: null,
      first: null, // where the keyboard goes when the form appears
      buttons: [],
      error: null,
    };
    const node = el("div", {
      className: "item input-request",
      role: "group",
      "aria-labelledby": `${id}-title`,
      tabindex: "-1",
      "data-testid": "input-request",
      dataset: { kind: pending.kind, agent, hue: hue(agent), requestId: pending.requestId },
    });
    pending.node = node;
    if (pending.kind === "approval") approvalForm(pending, request, id);
    else messageForm(pending, request, id);

    const active = document.activeElement;
    const takeFocus = !active || active === document.body || active === ui.message || active === ui.send;
    state.pending = pending;
    addToLog(node);
    updateControls();
    if (takeFocus) pending.first.focus();
    setStatus(pending.kind === "approval"
      ? `${agent} is waiting for your approval to run ${pending.tool}.`
      : `${agent} is waiting for your answer.`, "wait");
  }

  function messageForm(pending, request, id) {
    const agent = pending.agent;
    const text = (request.prompt || "").replace(/\s*TERMINATE\s*$/, "");
    const prompt = el("div", { className: "text input-prompt", "data-testid": "input-prompt" }, text);
    renderMarkdown(prompt, text); // like the agent's other messages: Markdown, sanitized
    const answer = el("textarea", {
      id: `${id}-answer`,
      "data-testid": "input-answer",
      rows: "2",
      maxlength: "4000",
      placeholder: "Type your answer…",
      "aria-describedby": `${id}-help`,
    });
    const sendButton = el("button", { type: "submit", className: "primary", "data-testid": "input-send", disabled: true },
      "Send answer");
    const continueButton = el("button", { type: "button", "data-testid": "input-continue" }, "Continue");
    const endButton = el("button", { type: "button", className: "danger", "data-testid": "input-end" }, "End");
    const form = el("form", { className: "input-form", novalidate: true },
      el("label", { for: `${id}-answer`, className: "input-label" }, `Your answer to ${agent}`),
      answer,
      el("div", { className: "input-actions" }, sendButton, continueButton, endButton),
      el("p", { id: `${id}-help`, className: "input-help" },
        "Enter sends · Continue lets the team go on without your words (or accepts its final answer) · "
        + "End finishes the conversation here."));
    pending.node.append(
      el("h2", { className: "input-title", id: `${id}-title` }, `${agent} asks you`),
      prompt,
      form,
    );
    pending.first = answer;
    pending.buttons = [sendButton, continueButton, endButton];

    const sendAnswer = () => {
      const text = answer.value;
      if (!text.trim()) return;
      answerInputRequest(pending, { content: text }, `You answered ${agent}.`, answer);
    };
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      sendAnswer();
    });
    answer.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        sendAnswer();
      }
    });
    answer.addEventListener("input", () => {
      sendButton.disabled = !answer.value.trim();
    });
    continueButton.addEventListener("click", () =>
      answerInputRequest(pending, { content: "" }, "You let the team go on by itself.", continueButton));
    endButton.addEventListener("click", () =>
      answerInputRequest(pending, { content: "exit" }, "You ended the conversation.", endButton));
  }

  function approvalForm(pending, request, id) {
    const call = request.tool_call || {};
    const tool = call.name || "a tool";
    pending.tool = tool;
    const reason = el("input", {
      id: `${id}-reason`,
      type: "text",
      maxlength: "1000",
      autocomplete: "off",
      "data-testid": "input-reason",
      "aria-describedby": `${id}-help`,
    });
    const approveButton = el("button", { type: "button", className: "primary", "data-testid": "input-approve" }, "Approve");
    const denyButton = el("button", { type: "button", className: "danger", "data-testid": "input-deny" }, "Deny");
    const details = request.tool_call
      ? el("dl", { className: "input-call" },
        el("dt", null, "Tool"),
        el("dd", null, el("code", { className: "tool-body", "data-testid": "input-tool" }, tool)),
        el("dt", null, "Arguments"),
        el("dd", null, el("pre", { className: "tool-body input-arguments", "data-testid": "input-arguments" },
          prettyArguments(call.arguments) || "(none)")))
      : el("p", { className: "input-prompt", "data-testid": "input-prompt" }, request.prompt || "");
    pending.node.append(
      el("h2", { className: "input-title", id: `${id}-title` }, `${pending.agent} wants to run ${tool}`),
      details,
      el("div", { className: "input-form" },
        el("label", { for: `${id}-reason`, className: "input-label" }, "Reason, if you deny (optional)"),
        reason,
        el("div", { className: "input-actions" }, approveButton, denyButton),
        el("p", { id: `${id}-help`, className: "input-help" },
          `The call runs only if you approve it. ${pending.agent} reads your reason with a refusal; `
          + "Enter in the reason field denies.")),
    );
    pending.first = pending.node; // the question first, read out whole: no button pressed by accident
    pending.buttons = [approveButton, denyButton];

    const deny = (from) => {
      const why = reason.value.trim();
      const body = { approved: false };
      if (why) body.reason = why;
      answerInputRequest(pending, body, `You denied the ${tool} call${why ? `: ${why}` : "."}`, from);
    };
    approveButton.addEventListener("click", () =>
      answerInputRequest(pending, { approved: true }, `You approved the ${tool} call.`, approveButton));
    denyButton.addEventListener("click", () => deny(denyButton));
    reason.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.isComposing) {
        event.preventDefault();
        deny(reason);
      }
    });
  }

  function setInputSending(pending, sending) {
    pending.sending = sending;
    pending.node.setAttribute("aria-busy", sending ? "true" : "false");
    // aria-disabled, not disabled: the focused control keeps the focus while the answer goes out.
    for (const button of pending.buttons) {
      if (sending) button.setAttribute("aria-disabled", "true");
      else button.removeAttribute("aria-disabled");
    }
  }

  async function answerInputRequest(pending, body, label, from) {
    if (pending.sending || state.pending !== pending) return;
    setInputSending(pending, true);
    if (pending.error) pending.error.remove();
    pending.label = label;
    rememberAnswer(pending.runId, pending.requestId, label);
    setStatus("Sending your answer…", "busy");
    let response = null;
    try {
      response = await fetch(`runs/${encodeURIComponent(pending.runId)}/input`, {
        method: "POST",
        headers: headers({ "Content-Type": "application/json" }),
        body: JSON.stringify(Object.assign({ request_id: pending.requestId }, body)),
        cache: "no-store",
      });
    } catch (_) {
      response = null; // the network: said below
    }
    if (state.pending !== pending) return; // answered already (the stream said so), or the run ended
    if (response && response.ok) {
      markKeyInvalid(false);
      settleInputRequest(pending, label);
      setStatus("Answer sent: the team goes on…", "busy");
      return;
    }
    await showInputError(pending, response);
    setInputSending(pending, false);
    if (from && from.isConnected && document.activeElement === document.body) from.focus();
  }

  async function showInputError(pending, response) {
    const status = response ? response.status : null;
    const detail = response ? await readDetail(response) : "";
    let title;
    if (status === null) {
      title = "Could not reach the server to send your answer. Check your connection, then try again.";
    } else if (status === 401 || status === 403) {
      title = "The API key was not accepted, so your answer was not sent.";
    } else if (status === 404) {
      title = "This run no longer exists (it expired, or belongs to another API key).";
    } else if (status === 409) {
      title = "The team is not waiting for this answer any more:";
    } else if (status === 422) {
      title = "The server rejected the answer:";
    } else if (status === 429) {
      const wait = retryAfterSeconds(response);
      title = wait === null ? "Rate limited: too many requests. Wait a moment, then answer again."
        : `Rate limited: too many requests. Answer again in ${wait} s.`;
    } else if (status >= 500) {
      title = `The server could not take your answer (HTTP ${status}). Try again shortly.`;
    } else {
      title = `Your answer was not accepted (HTTP ${status}).`;
    }
    // A new alert each time, so that it is announced each time.
    const error = el("div", {
      className: "input-error",
      role: "alert",
      "data-testid": "input-error",
      dataset: { status: status === null ? "network" : String(status) },
    }, el("strong", { className: "error-title" }, title));
    if (detail) error.append(el("p", { className: "error-detail" }, detail));
    pending.error = error;
    pending.node.append(error);
    error.scrollIntoView({ block: "nearest" });
    setStatus(`Error: ${status === null ? "network" : `HTTP ${status}`}; your answer was not sent`, "error");
  }

  // The request is answered: its form gives way to a line saying how.
  function settleInputRequest(pending, label) {
    if (state.pending !== pending) return;
    state.pending = null;
    const hadFocus = pending.node.contains(document.activeElement);
    pending.node.replaceWith(el("p", { className: "item notice answered", "data-testid": "input-answered" }, label));
    updateControls();
    if (hadFocus || document.activeElement === document.body) ui.message.focus();
  }

  function inputAnswered(turn, response) {
    if (response.kind === "message") turn.echo = true;
    const pending = state.pending;
    if (!pending || pending.requestId !== response.request_id) return;
    let label = pending.label || storedAnswer(pending.runId, pending.requestId);
    if (!label && response.kind === "approval") {
      label = response.approved ? `You approved the ${pending.tool} call.` : `You denied the ${pending.tool} call.`;
    }
    settleInputRequest(pending, label || `You answered ${pending.agent}.`);
    setStatus("The team goes on…", "busy");
  }

  // The run ended, or this page stopped following it, while it waited: the form goes (a reload
  // shows it again if the run still waits).
  function dropInputRequest() {
    const pending = state.pending;
    if (!pending) return;
    state.pending = null;
    const hadFocus = pending.node.contains(document.activeElement);
    pending.node.remove();
    updateControls();
    if (hadFocus) ui.message.focus();
  }

  // --- Server-Sent Events ------------------------------------------------------------------

  // Parses text/event-stream as the HTML standard says: lines end with CRLF, LF or CR; a blank
  // line dispatches the frame; lines starting with ":" are comments (keep-alive pings).
  class EventStreamParser {
    constructor(onFrame) {
      this.onFrame = onFrame;
      this.buffer = "";
      this.event = "";
      this.data = [];
      this.id = null;
    }

    push(text) {
      this.buffer += text;
      const eol = /\r\n|\r|\n/g;
      let start = 0;
      let match;
      while ((match = eol.exec(this.buffer)) !== null) {
        // A CR at the very end may be the first half of a CRLF split across two chunks.
        if (match[0] === "\r" && match.index === this.buffer.length - 1) break;
        this.line(this.buffer.slice(start, match.index));
        start = eol.lastIndex;
      }
      this.buffer = this.buffer.slice(start);
    }

    end() {
      // An unterminated last frame is dropped, as the standard says.
      this.buffer = "";
      this.data = [];
    }

    line(line) {
      if (line === "") {
        this.dispatch();
        return;
      }
      if (line.startsWith(":")) return;
      const colon = line.indexOf(":");
      const field = colon === -1 ? line : line.slice(0, colon);
      let value = colon === -1 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") this.data.push(value);
      else if (field === "event") this.event = value;
      else if (field === "id" && !value.includes("\0")) this.id = value;
    }

    dispatch() {
      if (this.data.length) {
        this.onFrame({ id: this.id, event: this.event || "message", data: this.data.join("\n") });
      }
      this.event = "";
      this.data = [];
    }
  }

  async function readStream(turn, response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    const parser = new EventStreamParser((frame) => handleFrame(turn, frame));
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.push(decoder.decode(value, { stream: true }));
    }
    parser.push(decoder.decode());
    parser.end();
  }

  // --- sending -----------------------------------------------------------------------------------

  function setBusy(busy) {
    if (!busy) dropInputRequest(); // the run ended (or this page let go of it) while it waited
    ui.app.dataset.state = busy ? "busy" : "idle";
    ui.log.setAttribute("aria-busy", busy ? "true" : "false");
    updateControls();
  }

  function updateControls() {
    const busy = Boolean(state.turn);
    // While the run waits for an answer the message box is off: the question's own form answers it.
    const waiting = Boolean(state.pending);
    ui.app.dataset.waiting = waiting ? "true" : "false";
    ui.message.disabled = waiting;
    ui.message.placeholder = waiting ? "The team is waiting for your answer above…" : PLACEHOLDER;
    ui.send.disabled = busy || !ui.message.value.trim();
    ui.stop.disabled = !busy;
    ui.newSession.disabled = busy || (!state.sessionId && !ui.log.querySelector(".bubble, .item"));
    ui.team.disabled = busy || state.teams.length === 0;
    ui.apiKey.disabled = busy;
  }

  function restoreFocus(target) {
    const active = document.activeElement;
    const lost = !active || active === document.body || active.disabled || active === ui.stop || active === ui.send;
    if (target && target !== ui.message) target.focus();
    else if (lost) ui.message.focus();
  }

  function newTurn() {
    return {
      controller: new AbortController(),
      runId: null,
      bubble: null,
      bubbles: 0,
      streaming: new Set(), // agents whose current message came token by token
      speaker: null,
      frames: 0,
      done: false,
      failed: false,
      stopped: false,
      echo: false, // a message request was answered: the person's words come next, as a user message
    };
  }

  async function send() {
    const text = ui.message.value;
    if (state.turn || !text.trim()) return;
    const turn = newTurn();
    state.turn = turn;
    const mine = userBubble(text);
    ui.message.value = "";
    setBusy(true);
    ui.message.focus();
    setStatus("Sending…", "busy");

    // The run goes on if this page goes away (a reload re-attaches to it); Stop cancels it.
    const body = { message: text, on_disconnect: "continue" };
    if (state.sessionId) body.session_id = state.sessionId;
    if (ui.team.value) body.agent = ui.team.value;

    let focusAfter = null;
    let response = null;
    try {
      response = await fetch("chat/stream", {
        method: "POST",
        headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
        body: JSON.stringify(body),
        signal: turn.controller.signal,
        cache: "no-store",
      });
    } catch (err) {
      if (turn.stopped) {
        noticeItem("Stopped before the team answered.", "stopped");
        setStatus("Stopped.", "info");
      } else {
        errorItem("Could not reach the server. Check that it is running and your connection, then send again.",
          "", null);
        setStatus("Error: network", "error");
        failedToSend(mine, text);
      }
    }

    if (response && !response.ok) {
      focusAfter = await showHttpError(response);
      failedToSend(mine, text);
    } else if (response) {
      markKeyInvalid(false);
      turn.runId = response.headers.get("X-Run-ID");
      if (turn.runId) {
        rememberRun({
          runId: turn.runId,
          sessionId: response.headers.get("X-Session-ID") || state.sessionId,
          team: ui.team.value,
          message: text,
        });
      }
      if (turn.stopped) {
        // Stop was pressed before the run existed: cancel it now that it has an id.
        forgetRun();
        if (turn.runId) await cancelRun(turn.runId);
        turn.controller.abort();
      }
      await follow(turn, response);
    }

    state.turn = null;
    setBusy(false);
    restoreFocus(focusAfter);
  }

  // Reads a run's stream to its end, saying how it ended.
  async function follow(turn, response) {
    try {
      await readStream(turn, response);
    } catch (err) {
      if (!turn.stopped) {
        closeBubble(turn, "failed");
        errorItem("The connection was lost before the answer was complete.", "", null);
        setStatus("Error: connection lost", "error");
        return;
      }
    }
    if (turn.stopped) {
      closeBubble(turn, "stopped");
      noticeItem("Stopped. This unfinished turn was not saved; the session continues from before it.", "stopped");
      setStatus("Stopped.", "info");
    } else if (!turn.done) {
      closeBubble(turn, "failed");
      errorItem("The connection closed before the answer was complete.", "", null);
      setStatus("Error: the stream ended early", "error");
    }
  }

  function failedToSend(bubble, text) {
    bubble.dataset.state = "failed";
    bubble.querySelector(".who").append(el("span", { className: "tag" }, "not sent"));
    if (!ui.message.value) ui.message.value = text; // ready to send again
  }

  function stop() {
    const turn = state.turn;
    if (!turn || turn.stopped) return;
    turn.stopped = true;
    setStatus("Stopping…", "busy");
    if (!turn.runId) return; // not started yet: send() cancels it once it has an id
    forgetRun();
    // The run would go on without us: stop it on the server, and let go of the stream once it
    // has stopped (the cancel answers then), so that the session is free for the next message.
    cancelRun(turn.runId).finally(() => turn.controller.abort());
  }

  // After a reload: show the session as it was, then follow the run that was in progress from
  // its first event (its turn is saved only when it ends, so the history does not hold it yet).
  function drawHistory(messages) {
    for (const message of messages) {
      if (message.role === "user") userBubble(message.content);
      else if (message.role === "assistant" && message.content && message.content.trim()) {
        const shown = newTurn();
        appendToken(shown, message.name || "assistant", message.content.replace(/\s*TERMINATE\s*$/, ""));
        closeBubble(shown);
      }
    }
  }

  // After a reload between turns: the conversation of the remembered session, drawn again.
  async function restoreSession(remembered) {
    if (!remembered || storedRun()) return; // a run in progress restores its session itself
    let session;
    try {
      const response = await fetch(`session/${encodeURIComponent(remembered.sessionId)}`, {
        headers: headers(),
        cache: "no-store",
      });
      if (!response.ok) {
        if (response.status === 404) setSession(null); // expired, or another key's
        return;
      }
      session = await response.json();
    } catch (_) {
      return; // the server is unreachable: keep the session for the next load
    }
    if (state.turn || !session) return;
    if ([...ui.team.options].some((option) => option.value === session.agent)) {
      ui.team.value = session.agent;
      describeTeam("");
    }
    setSession(session.session_id, session.agent);
    drawHistory(session.messages || []);
    if ((session.messages || []).length) setStatus("Conversation restored: your next message continues it.");
  }

  async function resumeRun() {
    const run = storedRun();
    if (!run) return;
    let current;
    let history;
    try {
      const response = await fetch(`runs/${encodeURIComponent(run.runId)}`, { headers: headers(), cache: "no-store" });
      if (!response.ok) {
        if (response.status === 404) forgetRun(); // expired, or another key's
        return;
      }
      current = await response.json();
      const stored = await fetch(`session/${encodeURIComponent(run.sessionId)}`, { headers: headers(), cache: "no-store" });
      history = stored.ok ? (await stored.json()).messages || [] : [];
    } catch (_) {
      return; // the server is unreachable: the run stays remembered for the next load
    }
    if (state.turn) return;
    const team = run.team || current.team;
    if ([...ui.team.options].some((option) => option.value === team)) {
      ui.team.value = team; // the next message continues this session: with its team
      describeTeam("");
    }
    setSession(run.sessionId, team);
    // Earlier turns from the session; the run's own turn comes from its events.
    drawHistory(history.filter((m) => Date.parse(m.timestamp) < Date.parse(current.created_at)));
    const turn = newTurn();
    turn.runId = run.runId;
    state.turn = turn;
    userBubble(run.message || "");
    setBusy(true);
    setStatus("Re-attached to the answer in progress…", "busy");
    try {
      const response = await fetch(`runs/${encodeURIComponent(run.runId)}/events`, {
        headers: headers({ Accept: "text/event-stream" }),
        signal: turn.controller.signal,
        cache: "no-store",
      });
      if (response.ok) await follow(turn, response);
      else forgetRun();
    } catch (_) {
      if (!turn.stopped) setStatus("Error: could not re-attach to the answer in progress", "error");
    }
    state.turn = null;
    setBusy(false);
  }

  // --- teams -------------------------------------------------------------------------------------

  async function loadTeams() {
    const previous = ui.team.value;
    let response;
    try {
      response = await fetch("agents", { headers: headers(), cache: "no-store" });
    } catch (_) {
      showTeams([], "Could not reach the server to list the teams.");
      setStatus("Error: cannot reach the server", "error");
      return;
    }
    if (!response.ok) {
      const detail = await readDetail(response);
      if (response.status === 401 || response.status === 403) {
        markKeyInvalid(Boolean(apiKey()));
        showTeams([], apiKey() ? "The API key was not accepted: enter a valid one to list the teams."
          : "This server needs an API key: enter it to list the teams.");
        setStatus(apiKey() ? "The API key was not accepted." : "Enter an API key to start.", "error");
      } else {
        showTeams([], `Could not list the teams (HTTP ${response.status})${detail ? `: ${detail}` : "."}`);
        setStatus(`Error: HTTP ${response.status}`, "error");
      }
      return;
    }
    markKeyInvalid(false);
    const body = await response.json();
    showTeams(Array.isArray(body.teams) ? body.teams : [], "", previous);
    setStatus("Ready.", "ok");
  }

  function showTeams(teams, problem, previous) {
    state.teams = teams;
    ui.team.replaceChildren();
    if (!teams.length) {
      ui.team.append(el("option", { value: "" }, "Default team"));
    }
    for (const team of teams) {
      ui.team.append(el("option", { value: team.name }, team.name));
    }
    const chosen = teams.find((t) => t.name === (state.sessionTeam || previous))
      || teams.find((t) => t.default) || teams[0];
    if (chosen) ui.team.value = chosen.name;
    describeTeam(problem);
    updateControls();
  }

  function describeTeam(problem) {
    ui.teamInfo.dataset.kind = problem ? "error" : "info";
    if (problem) {
      ui.teamInfo.textContent = problem;
      return;
    }
    const team = state.teams.find((t) => t.name === ui.team.value);
    if (!team) {
      ui.teamInfo.textContent = "";
      return;
    }
    const agents = (team.agents || []).map((a) => a.name).join(", ");
    ui.teamInfo.textContent = `${team.description || ""}${agents ? ` Agents: ${agents}.` : ""}`.trim();
  }

  // --- wiring ----------------------------------------------------------------------------------

  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  ui.message.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    } else if (event.key === "Escape" && state.turn) {
      event.preventDefault();
      stop();
    }
  });
  ui.message.addEventListener("input", updateControls);
  ui.stop.addEventListener("click", () => {
    stop();
    ui.message.focus();
  });
  ui.newSession.addEventListener("click", () => newSession());
  ui.team.addEventListener("change", () => {
    describeTeam("");
    if (state.sessionId && state.sessionTeam && ui.team.value !== state.sessionTeam) {
      // A session belongs to its team: another team means another conversation.
      newSession(`Switched to ${ui.team.value}: a new session starts with your next message.`, true);
      ui.team.focus();
    }
  });
  ui.apiKey.addEventListener("input", () => {
    storeKey();
    markKeyInvalid(false);
  });
  ui.apiKey.addEventListener("change", loadTeams);

  loadStoredKey();
  const remembered = storedSession();
  setSession(null);
  updateControls();
  loadTeams()
    .then(() => restoreSession(remembered))
    .then(resumeRun);
})();
