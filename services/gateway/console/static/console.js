// The console's one script: what a page cannot do without one. Everything else is a plain
// form or link, drawn on the server. No framework, no build step, nothing from elsewhere.
//
// - form[data-stream]: POSTs the form and reads the reply as it streams (OpenAI chunks over
//   server-sent events); Stop aborts the fetch, which closes the connection: the gateway then
//   cancels the request, and what it generated is charged.
// - [data-live-budgets]: the budget table, redrawn by the server on each budget event.
// - form[data-swap]: a filter form whose result is swapped in, not a whole page.
// - tr[data-href]: a row whose detail opens below the table.

const $ = (selector, root = document) => root.querySelector(selector);

function show(element, text) {
  element.hidden = false;
  element.textContent = text;
}

// The events of a server-sent event stream, as they come: {event, data} objects.
async function* events(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffered += value;
    let end;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const block = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      const data = block.split("\n").filter((line) => line.startsWith("data: "))
        .map((line) => line.slice(6)).join("\n");
      if (data) yield data;
    }
  }
}

async function failure(response) {
  try {
    const body = await response.json();
    return body.error?.message || response.statusText;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

function usageLine(usage) {
  const cost = usage.cost_usd === undefined ? "" : ` · cost $${Number(usage.cost_usd).toPrecision(3)}`;
  return `${usage.prompt_tokens} prompt + ${usage.completion_tokens} reply tokens${cost}`;
}

// Stream one submission of `form` into its output; resolves once the stream has ended.
async function stream(form, fields) {
  const output = document.getElementById(form.dataset.output);
  const text = $("[data-text]", output);
  const usage = $("[data-usage]", output);
  const stop = $("[data-stop]", form);
  const run = $("[data-run]", form);
  const retry = $("[data-retry-last]", output);
  const controller = new AbortController();
  const sent = $("[data-sent]", output);
  if (sent) sent.textContent = fields.get("content");
  output.hidden = false;
  output.dataset.state = "streaming";
  text.textContent = "";
  usage.textContent = "";
  if (retry) retry.hidden = true;
  stop.hidden = false;
  run.disabled = true;
  stop.onclick = () => controller.abort();
  let state = "failed";
  try {
    const response = await fetch(form.dataset.stream, {
      method: "POST", body: new URLSearchParams(fields), signal: controller.signal,
      headers: { Accept: "text/event-stream" },
    });
    output.dataset.requestId = response.headers.get("X-Llmbus-Request-Id") || "";
    if (!response.ok) {
      usage.textContent = await failure(response);
      return;
    }
    for await (const data of events(response.body)) {
      if (data === "[DONE]") { state = "done"; break; }
      const chunk = JSON.parse(data);
      if (chunk.error) { usage.textContent = chunk.error.message; break; }
      const delta = chunk.choices?.[0]?.delta?.content;
      if (delta) text.textContent += delta;
      if (chunk.usage) usage.textContent = usageLine(chunk.usage);
    }
  } catch (error) {
    if (error.name !== "AbortError") throw error;
    state = "stopped";
    usage.textContent = "Stopped: the request was cancelled; what was generated is charged.";
  } finally {
    output.dataset.state = state;
    stop.hidden = true;
    run.disabled = false;
    if (retry && state !== "done") {
      retry.hidden = false;
      retry.onclick = () => stream(form, fields);
    }
  }
  if (state === "done" && form.dataset.refresh) await refresh(form.dataset.refresh, output);
}

// Redraw a fragment of the page (the conversation, with the turn now recorded).
async function refresh(id, output) {
  const url = new URL(location.href);
  url.searchParams.set("partial", id);
  const response = await fetch(url);
  if (!response.ok) return;
  document.getElementById(id).innerHTML = await response.text();
  output.hidden = true;
  bindRetries();
}

function bindStreams() {
  for (const form of document.querySelectorAll("form[data-stream]")) {
    form.addEventListener("submit", (event) => {
      if (!event.submitter?.hasAttribute("data-run")) return; // another button: a plain POST
      event.preventDefault();
      const fields = new FormData(form);
      if (form.id === "chat-form") form.elements.content.value = "";
      stream(form, fields);
    });
  }
}

// A failed turn's Retry streams the message again, as a new turn.
function bindRetries() {
  const form = document.getElementById("chat-form");
  if (!form) return;
  for (const retry of document.querySelectorAll("form.retry")) {
    retry.addEventListener("submit", (event) => {
      event.preventDefault();
      const fields = new FormData(form);
      fields.set("content", new FormData(retry).get("content"));
      stream(form, fields);
    });
  }
}

function bindBudgets() {
  const table = $("[data-live-budgets]");
  if (!table) return;
  const notices = document.getElementById("budget-notices");
  const problem = document.getElementById("budget-problem");
  const source = new EventSource(table.dataset.liveBudgets);
  source.addEventListener("budgets", (event) => {
    table.innerHTML = event.data;
    table.dataset.updated = String(Date.now());
    problem.hidden = true;
  });
  source.addEventListener("notice", (event) => {
    const item = document.createElement("li");
    item.textContent = event.data;
    notices.prepend(item);
  });
  source.addEventListener("problem", (event) => show(problem, event.data));
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      show(problem, "Live updates stopped: reload the page, or log in again.");
    }
  });
  addEventListener("pagehide", () => source.close());
}

function bindSwaps() {
  for (const form of document.querySelectorAll("form[data-swap]")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const url = new URL(form.action);
      for (const [name, value] of new FormData(form)) url.searchParams.set(name, value);
      const partial = new URL(url);
      partial.searchParams.set("partial", form.dataset.swap);
      const response = await fetch(partial);
      if (!response.ok) { form.submit(); return; } // the page says what went wrong
      document.getElementById(form.dataset.swap).innerHTML = await response.text();
      history.replaceState(null, "", url);
    });
  }
}

function bindRows() {
  const detail = document.getElementById("request-detail");
  if (!detail) return;
  for (const row of document.querySelectorAll("tr[data-href]")) {
    row.addEventListener("click", async (event) => {
      if (event.target.closest("a")) return; // the link itself opens the request's page
      const response = await fetch(`${row.dataset.href}?partial=1`);
      detail.innerHTML = await response.text();
      detail.scrollIntoView({ block: "nearest" });
    });
  }
}

bindStreams();
bindRetries();
bindBudgets();
bindSwaps();
bindRows();
