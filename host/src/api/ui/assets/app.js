// rdev dashboard: sends the pages' forms to the JSON API with the session's CSRF token, and
// renders a command's live event stream. The session cookie (HttpOnly) authenticates both;
// this script never sees a token. Events are appended as DOM nodes, one per event (text
// deltas extend their block), never re-rendering the list; text goes in via textContent.
"use strict";

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

// --- forms -> JSON API --------------------------------------------------------------

// Fields marked data-path go into the route (`/credentials/{name}`), never the body.
function formBody(form) {
  const body = {};
  for (const field of form.querySelectorAll("input[name], select[name], textarea[name]")) {
    if (field.name === "_csrf" || field.value === "" || field.hasAttribute("data-path")) continue;
    if (field.hasAttribute("data-list")) {
      body[field.name] = field.value.split(",").map((v) => v.trim()).filter(Boolean);
      continue;
    }
    body[field.name] = field.hasAttribute("data-json") ? JSON.parse(field.value) : field.value;
  }
  return body;
}

function formPath(form) {
  return form.dataset.api.replace(/\{(\w+)\}/g, (_, key) =>
    encodeURIComponent(form.querySelector("[name=" + key + "]").value));
}

async function api(method, path, csrf, body) {
  const init = { method, credentials: "same-origin", headers: { "X-CSRF-Token": csrf } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!response.ok) {
    const detail = data && (data.detail || data.title) ? (data.detail || data.title) : text;
    throw new Error(response.status + ": " + detail);
  }
  return data;
}

function then(form, data) {
  const target = form.dataset.then || "reload";
  if (target === "reload") { location.reload(); return; }
  if (target === "none") return;
  if (target === "clear") { form.reset(); return; }
  if (target === "secret") {
    // The create call's answer is the only time a signing secret is shown.
    form.reset();
    const box = form.querySelector("[data-secret]");
    box.textContent = "Created " + data.id + ". Signing secret (shown once): ";
    box.appendChild(el("code", null, data.secret));
    const done = el("a", null, " Done");
    done.href = location.pathname;
    done.id = "secret-done";
    box.appendChild(done);
    box.hidden = false;
    return;
  }
  location.assign(target.replace(/\{(\w+)\}/g, (_, key) => encodeURIComponent(
    (data && data[key]) || (data && data.project && data.project[key]) || "")));
}

document.addEventListener("submit", async (event) => {
  const form = event.target;
  if (!form.dataset || !form.dataset.api) return;
  event.preventDefault();
  const error = form.querySelector("[data-error]");
  if (error) error.textContent = "";
  const csrf = form.querySelector("input[name=_csrf]").value;
  try {
    const method = form.dataset.method || "POST";
    const body = method === "DELETE" ? undefined : formBody(form);
    const data = await api(method, formPath(form), csrf, body);
    then(form, data);
  } catch (e) {
    if (error) error.textContent = e.message;
  }
});

// --- ANSI colours and minimal Markdown ------------------------------------------------

const ANSI = /\x1b\[([0-9;]*)m/g;

// Appends `text` to `parent` as spans, with `state` ({fg, bold}) carried across calls.
function appendAnsi(parent, text, state) {
  let last = 0;
  const push = (part) => {
    if (!part) return;
    const span = el("span", null, part);
    if (state.fg) span.classList.add("fg-" + state.fg);
    if (state.bold) span.classList.add("bold");
    parent.appendChild(span);
  };
  for (const match of text.matchAll(ANSI)) {
    push(text.slice(last, match.index));
    last = match.index + match[0].length;
    for (const code of (match[1] || "0").split(";").map(Number)) {
      if (code === 0) { state.fg = null; state.bold = false; }
      else if (code === 1) state.bold = true;
      else if (code === 22) state.bold = false;
      else if ((code >= 30 && code <= 37) || (code >= 90 && code <= 97)) state.fg = String(code);
      else if (code === 39) state.fg = null;
    }
  }
  push(text.slice(last));
}

function inline(parent, text) {
  const parts = text.split(/(`[^`]+`|\*\*[^*]+\*\*)/);
  for (const part of parts) {
    if (part.startsWith("`") && part.endsWith("`") && part.length > 1) {
      parent.appendChild(el("code", null, part.slice(1, -1)));
    } else if (part.startsWith("**") && part.endsWith("**") && part.length > 3) {
      parent.appendChild(el("strong", null, part.slice(2, -2)));
    } else if (part) {
      parent.appendChild(document.createTextNode(part));
    }
  }
}

function markdown(text) {
  const root = el("div", "md");
  const blocks = text.split(/```/);
  blocks.forEach((block, index) => {
    if (index % 2 === 1) {
      root.appendChild(el("pre", "code", block.replace(/^[^\n]*\n/, "")));
      return;
    }
    for (const para of block.split(/\n{2,}/)) {
      if (!para.trim()) continue;
      const heading = para.match(/^(#{1,4})\s+(.*)$/);
      if (heading) { root.appendChild(el("h" + (heading[1].length + 2), null, heading[2])); continue; }
      const lines = para.split("\n");
      if (lines.every((l) => /^\s*[-*]\s+/.test(l))) {
        const list = el("ul");
        for (const line of lines) inline(list.appendChild(el("li")), line.replace(/^\s*[-*]\s+/, ""));
        root.appendChild(list);
        continue;
      }
      const p = el("p");
      lines.forEach((line, i) => { if (i) p.appendChild(el("br")); inline(p, line); });
      root.appendChild(p);
    }
  });
  return root;
}

// --- the event stream -------------------------------------------------------------------

const TYPES = ["init", "message", "thinking", "tool_use", "tool_result", "output", "warning",
  "error", "usage", "raw", "status", "done", "approval_requested", "approval_resolved", "input",
  "input_delivered"];

class StreamView {
  constructor(root) {
    this.root = root;
    this.csrf = root.dataset.csrf;
    this.url = root.dataset.stream;
    this.last = 0;
    this.finished = false;
    this.partial = null;
    this.output = null;
    this.ansi = {};
    this.tools = new Map();
    this.approvals = new Map();
  }

  connect(resume) {
    const url = resume ? this.url + "?last_event_id=" + this.last : this.url;
    const source = new EventSource(url);
    this.source = source;
    for (const type of TYPES) {
      source.addEventListener(type, (e) => this.receive(type, e));
    }
    source.onerror = () => {
      // The browser retries by itself (sending Last-Event-ID) unless the server refused;
      // then open a new stream that resumes after the last event shown.
      if (source.readyState === EventSource.CLOSED && !this.finished) {
        setTimeout(() => this.connect(true), 1000);
      }
    };
  }

  receive(type, e) {
    const seq = Number(e.lastEventId);
    if (seq && seq <= this.last) return; // already shown: a replay after a reconnect
    if (seq) this.last = seq;
    this.root.dataset.lastSeq = String(this.last);
    let event;
    try { event = JSON.parse(e.data); } catch (_) { return; }
    this.render(type, event);
    if (type === "done") {
      this.finished = true;
      this.source.close();
    }
  }

  add(node) {
    this.root.appendChild(node);
    if (!node.classList.contains("output")) this.output = null;
    if (!node.classList.contains("partial")) this.partial = null;
    return node;
  }

  render(type, event) {
    const handler = this["on_" + type];
    if (handler) handler.call(this, event);
  }

  on_init(e) {
    const facts = [e.session_id && "session " + e.session_id, e.model && "model " + e.model]
      .filter(Boolean).join(", ");
    this.add(el("div", "ev init", "started" + (facts ? ": " + facts : "")));
    if (e.session_id) document.getElementById("session").textContent = e.session_id;
  }

  text(kind, e) {
    if (this.partial && this.partial.dataset.kind === kind) {
      if (e.partial) { this.partial.querySelector(".body").textContent += e.text; return; }
      const block = this.partial;
      this.partial = null;
      block.classList.remove("partial");
      block.querySelector(".body").replaceWith(this.body(kind, e.text));
      return;
    }
    const block = kind === "thinking" ? el("details", "ev thinking") : el("div", "ev message");
    block.dataset.kind = kind;
    if (kind === "thinking") block.appendChild(el("summary", null, "Thinking"));
    if (e.partial) {
      block.classList.add("partial");
      block.appendChild(el("div", "body", e.text));
      this.add(block);
      this.partial = block;
    } else {
      block.appendChild(this.body(kind, e.text));
      this.add(block);
    }
  }

  body(kind, text) {
    const node = kind === "thinking" ? el("pre", "body", text) : markdown(text);
    node.classList.add("body");
    return node;
  }

  on_message(e) { this.text("message", e); }
  on_thinking(e) { this.text("thinking", e); }

  on_tool_use(e) {
    const block = el("details", "ev tool");
    block.open = true;
    block.appendChild(el("summary", null, "Tool: " + e.name));
    block.appendChild(el("pre", "input", JSON.stringify(e.input, null, 2)));
    this.tools.set(e.id, block);
    this.add(block);
  }

  on_tool_result(e) {
    const result = el("pre", "result" + (e.is_error ? " is-error" : ""), e.content);
    const block = this.tools.get(e.id);
    if (block) { block.appendChild(result); return; }
    const orphan = el("div", "ev tool");
    orphan.appendChild(result);
    this.add(orphan);
  }

  on_output(e) {
    if (!this.output || this.output.dataset.stream !== e.stream) {
      const pre = el("pre", "ev output " + e.stream);
      pre.dataset.stream = e.stream;
      this.ansi = {};
      this.add(pre);
      this.output = pre;
    }
    appendAnsi(this.output, e.text, this.ansi);
  }

  on_warning(e) { this.add(el("div", "ev warning", "warning: " + e.message)); }
  on_error(e) { this.add(el("div", "ev error", "error: " + e.message)); }
  on_raw() {}

  on_usage(e) {
    const u = e.usage || {};
    const parts = [u.input_tokens != null && u.input_tokens + " in",
      u.output_tokens != null && u.output_tokens + " out",
      e.cost_usd != null && "$" + Number(e.cost_usd).toFixed(4)].filter(Boolean);
    this.add(el("div", "ev usage", "usage: " + parts.join(", ")));
  }

  setStatus(status) {
    const node = document.getElementById("status");
    node.textContent = status;
    node.className = "status " + status;
  }

  on_status(e) {
    this.setStatus(e.status);
    this.add(el("div", "ev status", "status: " + e.status));
  }

  on_done(e) {
    this.setStatus(e.status);
    const block = el("div", "ev done " + e.status);
    block.appendChild(el("strong", null, "Finished: " + e.status));
    const result = e.result || {};
    if (result.exit_code != null) block.appendChild(el("span", "exit", " (exit " + result.exit_code + ")"));
    if (result.final_text) block.appendChild(markdown(result.final_text));
    const error = e.error || result.error;
    if (error) block.appendChild(el("pre", "result is-error", error));
    this.add(block);
    const controls = document.getElementById("controls");
    if (controls) controls.hidden = true;
  }

  on_approval_requested(e) {
    const a = e.approval;
    const block = el("div", "ev approval");
    block.dataset.approval = a.id;
    block.appendChild(el("strong", null, "Approval needed: " + a.tool));
    block.appendChild(el("p", null, a.summary));
    block.appendChild(el("pre", "input", JSON.stringify(a.input, null, 2)));
    const state = el("div", "approval-state", a.status);
    block.appendChild(state);
    if (a.status === "pending") {
      const message = el("input");
      message.placeholder = "reason (told to the agent on deny)";
      const decide = (decision) => async () => {
        try {
          const body = { decision };
          if (message.value) body.message = message.value;
          await api("POST", "/approvals/" + encodeURIComponent(a.id), this.csrf, body);
        } catch (err) { state.textContent = err.message; }
      };
      const allow = el("button", "allow", "Allow");
      allow.onclick = decide("allow");
      const deny = el("button", "deny", "Deny");
      deny.onclick = decide("deny");
      const row = el("div", "decide");
      row.append(allow, deny, message);
      block.appendChild(row);
    }
    this.approvals.set(a.id, block);
    this.add(block);
  }

  on_approval_resolved(e) {
    const a = e.approval;
    const block = this.approvals.get(a.id);
    const text = a.status + (a.decided_by ? " by " + a.decided_by : "") + (a.message ? ": " + a.message : "");
    if (!block) { this.add(el("div", "ev approval", "Approval " + text)); return; }
    block.querySelector(".approval-state").textContent = text;
    const row = block.querySelector(".decide");
    if (row) row.remove();
  }

  on_input(e) {
    const block = el("div", "ev input", "you: " + ((e.input && e.input.text) || ""));
    if (e.input && e.input.id) block.dataset.input = e.input.id;
    this.add(block);
  }

  on_input_delivered(e) {
    const block = this.root.querySelector('[data-input="' + CSS.escape(e.input_id) + '"]');
    if (block) block.classList.add("delivered");
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("events");
  if (root && root.dataset.stream) {
    const view = new StreamView(root);
    window.rdevStream = view;
    view.connect(false);
  }
});
