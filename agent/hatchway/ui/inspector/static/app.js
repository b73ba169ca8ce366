// The Hatchway inspector page: a live list (Server-Sent Events), filters, a detail view and
// replay. Captured data is untrusted: it reaches the page only as text (textContent, append of
// strings, input values), never as HTML.
"use strict";

const STATUS_POLL_MS = 5000; // how often the header's session status is refreshed
const FILTER_DELAY_MS = 200; // typing pause before the list is fetched again
const DEFAULT_MAX_ROWS = 200; // until /api/status says how many the agent keeps
const STATUS_AFTER_EVENT_MS = 500; // new requests refresh the counts, at most this often

const $ = (id) => document.getElementById(id);
const rows = new Map(); // id -> summary, for the rows shown
let maxRows = DEFAULT_MAX_ROWS;
let selectedId = null;
let shown = null; // the detail currently shown
let filterTimer = null;
let statusTimer = null;
let session = {}; // the agent's status: public URLs for "copy as curl"
let rawView = false; // the detail as it went over the wire, instead of pretty

function el(tag, className, ...children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  node.append(...children.map((child) => (child instanceof Node ? child : String(child))));
  return node;
}

// --- Formatting -------------------------------------------------------------------------------

function formatTime(iso) {
  const d = new Date(iso);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

function formatDuration(ms) {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

function statusClass(status) {
  return `status s${String(status)[0]}xx`;
}

// --- The list ---------------------------------------------------------------------------------

function currentFilters() {
  return {
    path: $("filter-path").value.trim(),
    method: $("filter-method").value.trim().toUpperCase(),
    status: $("filter-status").value.trim().toLowerCase(),
  };
}

// The same rules as the server's (views.Filters), for entries that arrive live.
function matches(entry, f) {
  if (f.path && !entry.path.toLowerCase().includes(f.path.toLowerCase())) return false;
  if (f.method && entry.method !== f.method) return false;
  if (/^[1-5]xx$/.test(f.status)) return String(entry.status)[0] === f.status[0];
  return !f.status || String(entry.status) === f.status;
}

function rowFor(entry) {
  const tr = el("tr", entry.replay_of ? "replay" : "");
  tr.dataset.id = entry.id;
  tr.tabIndex = 0;
  const path = el("td", "path", entry.path);
  if (entry.replay_of) path.prepend(el("span", "badge", `replay of #${entry.replay_of}`), " ");
  if (entry.fault) path.append(" ", el("span", "badge fault-badge", `${entry.fault.side} failed`));
  tr.append(
    el("td", "time", formatTime(entry.time)),
    el("td", "method", entry.method),
    path,
    el("td", statusClass(entry.status), entry.status),
    el("td", "num", formatDuration(entry.duration_ms)),
    el("td", "num", formatSize(entry.size)),
  );
  if (entry.id === selectedId) tr.classList.add("selected");
  tr.addEventListener("click", () => select(entry.id));
  tr.addEventListener("keydown", (event) => {
    if (event.key === "Enter") select(entry.id);
  });
  return tr;
}

function insertRow(entry) {
  const body = $("requests").tBodies[0];
  body.querySelector(`tr[data-id="${entry.id}"]`)?.remove();
  rows.set(entry.id, entry);
  const later = [...body.rows].find((tr) => Number(tr.dataset.id) < entry.id);
  body.insertBefore(rowFor(entry), later ?? null);
  while (body.rows.length > maxRows) {
    rows.delete(Number(body.rows[body.rows.length - 1].dataset.id));
    body.deleteRow(-1);
  }
  showEmpty();
}

async function loadList() {
  const f = currentFilters();
  const response = await fetch(`/api/requests?${new URLSearchParams(f)}`);
  const payload = await response.json();
  $("filter-error").textContent = response.ok ? "" : payload.error;
  if (!response.ok) return;
  // Entries that arrived live while this list was being fetched stay.
  const newest = payload.requests.length ? payload.requests[0].id : 0;
  const kept = [...rows.values()].filter((entry) => entry.id > newest && matches(entry, f));
  rows.clear();
  $("requests").tBodies[0].replaceChildren();
  for (const entry of [...payload.requests].reverse()) insertRow(entry);
  for (const entry of kept) insertRow(entry);
  showEmpty();
}

function showEmpty() {
  // Nothing listed: say whether nothing came yet, or the filters hide what was kept.
  const filtered = Object.values(currentFilters()).some((value) => value !== "");
  $("empty").textContent = filtered
    ? "No kept request matches these filters."
    : "No requests yet: visit your public URL and they appear here.";
  $("empty").hidden = rows.size > 0;
}

function listen() {
  const events = new EventSource("/api/events");
  const live = $("live");
  events.addEventListener("open", () => {
    live.dataset.state = "live";
    live.textContent = "live";
    loadList(); // after a reconnect, catch up on what was missed
  });
  events.addEventListener("error", () => {
    live.dataset.state = "reconnecting";
    live.textContent = "reconnecting…";
  });
  events.addEventListener("request", (event) => {
    const entry = JSON.parse(event.data);
    if (matches(entry, currentFilters())) insertRow(entry);
    statusTimer ??= setTimeout(() => {
      statusTimer = null;
      refreshStatus();
    }, STATUS_AFTER_EVENT_MS);
  });
}

// --- The detail view --------------------------------------------------------------------------

function hexDump(hex) {
  const lines = [];
  for (let offset = 0; offset < hex.length / 2; offset += 16) {
    const chunk = hex.slice(offset * 2, offset * 2 + 32);
    const bytes = chunk.match(/../g) ?? [];
    const ascii = bytes
      .map((b) => parseInt(b, 16))
      .map((c) => (c >= 0x20 && c < 0x7f ? String.fromCharCode(c) : "."))
      .join("");
    lines.push(`${offset.toString(16).padStart(8, "0")}  ${bytes.join(" ").padEnd(47)}  ${ascii}`);
  }
  return lines.join("\n");
}

function bodyView(body) {
  const box = el("div", "body");
  const meta = el("p", "muted body-meta", `${formatSize(body.size)}`);
  if (body.content_type) meta.append(` · ${body.content_type}`);
  box.append(meta);
  if (body.truncated) {
    box.append(el("p", "truncated", `truncated: showing ${formatSize(body.stored)} of ${formatSize(body.size)}`));
  }
  if (body.kind === "empty") {
    box.append(el("p", "muted", "no body"));
  } else if (body.kind === "json") {
    box.append(el("pre", "body-text json", body.pretty));
  } else if (body.kind === "text") {
    box.append(el("pre", "body-text", body.text));
  } else if (body.kind === "image" && body.data_uri.startsWith("data:image/")) {
    const img = el("img", "preview");
    img.src = body.data_uri;
    img.alt = `image, ${formatSize(body.size)}`;
    box.append(img);
  } else if (body.kind === "binary") {
    const previewed = body.hex.length / 2;
    box.append(
      el("p", "muted", `binary: first ${formatSize(previewed)} as hex`),
      el("pre", "body-text hex", hexDump(body.hex)),
    );
  }
  return box;
}

function messageView(message) {
  const table = el("table", "headers");
  for (const [name, value] of message.headers) {
    table.append(el("tr", "", el("th", "", name), el("td", "", value)));
  }
  if (!message.headers.length) table.append(el("tr", "", el("td", "muted", "no headers")));
  return [table, bodyView(message.body)];
}

// --- Raw view and "copy as curl" ---------------------------------------------------------------

// Headers curl sets itself, or that belong to one connection only.
const CURL_SKIPPED = new Set(["host", "content-length", "connection", "keep-alive", "te",
  "trailer", "transfer-encoding", "upgrade", "proxy-connection"]);

function rawBody(body) {
  let text = "";
  if (body.kind === "json" || body.kind === "text") text = body.text ?? "";
  else if (body.kind === "image") text = `[image, ${formatSize(body.size)}]`;
  else if (body.kind === "binary") text = `[binary, ${formatSize(body.size)}: see the hex in the Pretty view]`;
  if (body.truncated) text += `\n[truncated: ${formatSize(body.stored)} of ${formatSize(body.size)} kept]`;
  return text;
}

function rawMessage(startLine, message) {
  const head = [startLine, ...message.headers.map(([n, v]) => `${n}: ${v}`)].join("\n");
  const body = rawBody(message.body);
  return body ? `${head}\n\n${body}` : `${head}\n`;
}

function shellQuote(text) {
  return `'${String(text).replaceAll("'", "'\\''")}'`;
}

// The tunnel's public URL the page knows of, so that the command goes through the tunnel.
function publicBase(tunnel) {
  const known = (session.tunnels ?? []).find((t) => t.name === tunnel);
  const urls = session.public_urls ?? [];
  const base = known?.url ?? known?.path_url
    ?? urls.find((url) => url.includes(`/t/${tunnel}/`)) ?? urls[0] ?? "";
  return base.replace(/\/$/, "");
}

function curlCommand(entry) {
  const parts = ["curl"];
  const body = entry.request.body;
  if (entry.method === "HEAD") parts.push("--head");
  else if (entry.method !== "GET" && !(entry.method === "POST" && body.kind !== "empty")) {
    parts.push("-X", entry.method);
  }
  parts.push(shellQuote(publicBase(entry.tunnel) + entry.path));
  for (const [name, value] of entry.request.headers) {
    if (!CURL_SKIPPED.has(name.toLowerCase())) parts.push("-H", shellQuote(`${name}: ${value}`));
  }
  let note = "";
  if ((body.kind === "json" || body.kind === "text") && !body.truncated) {
    parts.push("--data-binary", shellQuote(body.text ?? ""));
  } else if (body.kind !== "empty") {
    parts.push("--data-binary", "@body.bin");
    note = `# the captured body (${formatSize(body.size)}) is not text: save it as body.bin\n`;
  }
  return note + parts.join(" ");
}

async function copyAsCurl() {
  if (!shown) return;
  const command = curlCommand(shown);
  const box = $("curl-text");
  box.value = command;
  try {
    await navigator.clipboard.writeText(command);
    box.hidden = true;
    $("replay-result").textContent = "curl command copied";
  } catch {
    // No clipboard (an older browser, or permission refused): show it to copy by hand.
    box.hidden = false;
    box.select();
    $("replay-result").textContent = "copy the curl command below";
  }
}

function showView(raw) {
  rawView = raw;
  $("view-pretty").setAttribute("aria-pressed", String(!raw));
  $("view-raw").setAttribute("aria-pressed", String(raw));
  $("request-view").hidden = raw;
  $("response-view").hidden = raw;
  $("request-raw").hidden = !raw;
  $("response-raw").hidden = !raw;
}

async function select(id) {
  selectedId = id;
  for (const tr of $("requests").tBodies[0].rows) {
    tr.classList.toggle("selected", Number(tr.dataset.id) === id);
  }
  const response = await fetch(`/api/requests/${id}`);
  const entry = await response.json();
  if (id !== selectedId) return; // another row was clicked meanwhile
  $("detail-hint").hidden = true;
  $("detail").hidden = false;
  $("replay-result").textContent = "";
  $("curl-text").hidden = true;
  if (!response.ok) {
    shown = null;
    $("detail-title").textContent = entry.error;
    $("detail-meta").textContent = "";
    $("detail-fault").hidden = true;
    $("request-view").replaceChildren();
    $("response-view").replaceChildren();
    $("request-raw").textContent = "";
    $("response-raw").textContent = "";
    return;
  }
  shown = entry;
  $("detail-title").textContent = `#${entry.id} ${entry.method} ${entry.path} → ${entry.status}`;
  const meta = `${new Date(entry.time).toLocaleString()} · ${formatDuration(entry.duration_ms)} · tunnel ${entry.tunnel}`;
  $("detail-meta").textContent = entry.replay_of ? `${meta} · replay of #${entry.replay_of}` : meta;
  $("detail-fault").hidden = !entry.fault;
  $("detail-fault").textContent = entry.fault ? `The ${entry.fault.side} failed: ${entry.fault.message}` : "";
  $("request-view").replaceChildren(...messageView(entry.request));
  $("response-view").replaceChildren(...messageView(entry.response));
  $("request-raw").textContent = rawMessage(`${entry.method} ${entry.path} HTTP/1.1`, entry.request);
  $("response-raw").textContent = rawMessage(`HTTP/1.1 ${entry.status}`, entry.response);
  showView(rawView);
  fillEditForm(entry);
}

// --- Replay -----------------------------------------------------------------------------------

function fillEditForm(entry) {
  $("edit-method").value = entry.method;
  $("edit-path").value = entry.path;
  $("edit-headers").value = entry.request.headers.map(([n, v]) => `${n}: ${v}`).join("\n");
  $("edit-error").textContent = "";
  const body = entry.request.body;
  const editable = !body.truncated && ["empty", "text", "json"].includes(body.kind);
  const note = $("edit-body-note");
  $("edit-body").value = editable ? (body.text ?? "") : "";
  $("edit-body").dataset.keep = String(!editable && !body.truncated);
  $("edit-body").disabled = !editable && !body.truncated;
  note.hidden = editable;
  note.textContent = body.truncated
    ? "The captured body was truncated: type the body to send."
    : `The body is binary (${formatSize(body.size)}) and is sent as captured.`;
}

function parseHeaders(text) {
  const headers = [];
  text.split("\n").forEach((line, index) => {
    if (!line.trim()) return;
    const colon = line.indexOf(":");
    if (colon < 1) throw new Error(`headers line ${index + 1}: write it as “Name: value”`);
    headers.push([line.slice(0, colon).trim(), line.slice(colon + 1).trim()]);
  });
  return headers;
}

async function replay(edits) {
  const response = await fetch(`/api/requests/${shown.id}/replay`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(edits),
  });
  const payload = await response.json();
  if (!response.ok) throw new Error(payload.error);
  // The event stream brings it too; whichever comes first shows it.
  if (matches(payload, currentFilters())) insertRow(payload);
  return payload;
}

async function replayAsCaptured() {
  if (!shown) return;
  $("replay-result").textContent = "sending…";
  try {
    const result = await replay({});
    $("replay-result").textContent = `replayed as #${result.id}: ${result.status}`;
  } catch (error) {
    $("replay-result").textContent = error.message;
  }
}

async function replayWithEdits(event) {
  event.preventDefault();
  if (!shown) return;
  $("edit-error").textContent = "";
  try {
    const edits = {
      method: $("edit-method").value.trim(),
      path: $("edit-path").value.trim(),
      headers: parseHeaders($("edit-headers").value),
    };
    if ($("edit-body").dataset.keep !== "true") edits.body = $("edit-body").value;
    const result = await replay(edits);
    $("edit-error").textContent = "";
    await select(result.id);
    $("replay-result").textContent = `replayed with edits as #${result.id}: ${result.status}`;
  } catch (error) {
    $("edit-error").textContent = error.message;
  }
}

// --- Session status ---------------------------------------------------------------------------

// Each term and its value in one box, so that they never end up on different lines.
function statusItem(term, ...values) {
  const value = el("dd", "", ...values);
  value.title = value.textContent;
  return [el("div", "", el("dt", "", term), value)];
}

async function refreshStatus() {
  try {
    const status = await (await fetch("/api/status")).json();
    maxRows = status.requests.max_requests ?? DEFAULT_MAX_ROWS;
    session = status.session ?? {};
    const items = [];
    // Short values never shrink (a cut "online" says nothing); the URLs take the ellipsis.
    const fixed = (item) => {
      item.classList.add("fixed");
      return item;
    };
    if (session.status) items.push(...statusItem("Session", session.status).map(fixed));
    for (const url of session.public_urls ?? []) {
      const link = el("a", "", url);
      if (/^https?:\/\//.test(url)) link.href = url;
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      items.push(...statusItem("Public", link));
    }
    if (session.target) items.push(...statusItem("Target", session.target).map(fixed));
    if (session.relay) items.push(...statusItem("Relay", session.relay));
    const counts = `${status.requests.kept} of ${status.requests.recorded}`;
    items.push(...statusItem("Kept", counts).map(fixed));
    $("status").replaceChildren(...items);
  } catch {
    // the agent is gone or restarting; the live indicator already says so
  }
}

// --- Wiring -----------------------------------------------------------------------------------

$("filters").addEventListener("submit", (event) => event.preventDefault());
$("filters").addEventListener("input", () => {
  clearTimeout(filterTimer);
  filterTimer = setTimeout(loadList, FILTER_DELAY_MS);
});
$("replay").addEventListener("click", replayAsCaptured);
$("copy-curl").addEventListener("click", copyAsCurl);
$("view-pretty").addEventListener("click", () => showView(false));
$("view-raw").addEventListener("click", () => showView(true));
$("edit-form").addEventListener("submit", replayWithEdits);
refreshStatus();
setInterval(refreshStatus, STATUS_POLL_MS);
listen();
