// The Hatchway dashboard page: polls the relay's state (tokens, names, tunnels) every few
// seconds and its charts every minute or so, creates, revokes, reserves and releases. Labels
// and names come from the relay's store: they reach the page only as text (textContent), and
// charts only as data: images drawn by the server.
"use strict";

const $ = (id) => document.getElementById(id);
const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;
const CSRF = meta("hatchway-csrf");
const REFRESH_MS = Number(meta("hatchway-refresh-ms")) || 5000;
const METRICS_MS = Number(meta("hatchway-metrics-ms")) || 60000;
const DOMAIN_MS = 300000; // certificates and job runs: the server reads them every 5 minutes

let chartWindow = "hour";
let pendingRevoke = null; // the token row the confirmation dialog is about
let stateTimer = null;
let metricsTimer = null;

function el(tag, className, ...children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  node.append(...children.map((child) => (child instanceof Node ? child : String(child))));
  return node;
}

function cell(...children) {
  return el("td", "", ...children);
}

// --- Formatting -------------------------------------------------------------------------------

function formatTime(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const d = new Date(seconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function formatAge(seconds, now) {
  const age = Math.max(0, now - seconds);
  if (age < 60) return `${Math.round(age)} s`;
  if (age < 3600) return `${Math.floor(age / 60)} min`;
  if (age < 86400) return `${Math.floor(age / 3600)} h ${Math.floor((age % 3600) / 60)} min`;
  return `${Math.floor(age / 86400)} d`;
}

function formatLimits(limits) {
  const parts = [];
  if (limits.rate) parts.push(`${limits.rate}/s (burst ${limits.burst || Math.ceil(limits.rate)})`);
  if (limits.requests_per_day) parts.push(`${limits.requests_per_day}/day`);
  if (limits.max_tunnels) parts.push(`${limits.max_tunnels} tunnels`);
  return parts.length ? parts.join(", ") : "none";
}

function formatAccess(access) {
  const parts = [];
  if (access.allow.length) parts.push(`allow ${access.allow.join(" ")}`);
  if (access.deny.length) parts.push(`deny ${access.deny.join(" ")}`);
  if (access.rate) parts.push(`${access.rate}/s (burst ${access.burst})`);
  return parts.length ? parts.join("; ") : "anyone";
}

function formatGuards(guards) {
  const parts = [];
  if (guards.basic_auth) parts.push("password");
  if (guards.webhook) parts.push(`${guards.webhook} webhooks only`);
  if (guards.large_responses && guards.large_responses !== "refuse") parts.push(`large responses: ${guards.large_responses}`);
  return parts.length ? parts.join(", ") : "none";
}

// Errors by cause, most frequent first, as the agents' heartbeats last reported them.
function formatErrors(errors) {
  const causes = Object.entries(errors);
  if (!causes.length) return el("span", "muted", "none");
  return causes.map(([cause, count]) => `${cause} ${count}`).join(", ");
}

// The last minute's answers: median and 95th percentile, in ms.
function formatLatency(p50, p95) {
  if (p95 === null || p95 === undefined) return el("span", "muted", "—");
  return `${p50} / ${p95} ms`;
}

// --- Talking to the server --------------------------------------------------------------------

async function getJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `${path} answered ${response.status}`);
  return body;
}

async function post(path, payload) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF },
    body: JSON.stringify(payload),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `the dashboard answered ${response.status}`);
  return body;
}

function setLive(state, text) {
  $("live").dataset.state = state;
  $("live").textContent = text;
}

function showError(text) {
  $("page-error").textContent = text;
  $("page-error").hidden = !text;
}

// --- Tables -----------------------------------------------------------------------------------

// A pool's agents under its name: how many, and each one's start, address, count, errors
// and latency.
function poolNote(tunnel) {
  if (!tunnel.members.length) return [];
  const list = el("ul", "members muted small", ...tunnel.members.map((m) => {
    const errors = Object.entries(m.errors).map(([cause, count]) => `${cause} ${count}`);
    const latency = m.latency_p95_ms === null ? "" : `, ${m.latency_p50_ms} / ${m.latency_p95_ms} ms`;
    return el(
      "li", "",
      `since ${formatTime(m.since)}, ${m.source_ip || "?"}, served ${m.served}`
        + (errors.length ? `, errors ${errors.join(", ")}` : "") + latency,
    );
  }));
  return [el("span", "muted", ` · pool of ${tunnel.members.length}`), list];
}

function renderTunnels(state) {
  const body = $("tunnels").tBodies[0];
  body.replaceChildren(
    ...state.tunnels.map((t) => {
      const row = el(
        "tr",
        "",
        cell(el("strong", "", t.name), ...poolNote(t)),
        cell(t.token_label ? `${t.token_label} ` : "", el("span", "muted mono", t.token_id)),
        cell(formatTime(t.connected_at), el("span", "muted", ` (${formatAge(t.connected_at, state.taken_at)})`)),
        cell(t.source_ip || "—"),
        el("td", "num served", String(t.served)),
        el("td", "errors", formatErrors(t.errors)),
        el("td", "num latency", formatLatency(t.latency_p50_ms, t.latency_p95_ms)),
        cell(formatAccess(t.access)),
        cell(formatGuards(t.guards)),
      );
      row.dataset.tunnel = t.name;
      return row;
    }),
  );
  $("tunnels-empty").hidden = state.tunnels.length > 0;
  $("tunnel-count").textContent = `(${state.tunnels.length})`;
}

function renderTokens(state) {
  const body = $("tokens").tBodies[0];
  body.replaceChildren(
    ...state.tokens.map((t) => {
      const revoke = el("button", "danger small", "Revoke…");
      revoke.type = "button";
      revoke.addEventListener("click", () => askRevoke(t));
      const inUse = t.in_use_since === null
        ? el("span", "muted", "no agent connected")
        : `${t.connections} agent${t.connections === 1 ? "" : "s"} since ${formatTime(t.in_use_since)}`;
      const lastUsed = t.in_use_since !== null
        ? "in use now"
        : t.last_used === null
          ? el("span", "muted", "never")
          : `${formatTime(t.last_used)} (${formatAge(t.last_used, state.taken_at)} ago)`;
      const row = el(
        "tr",
        "",
        cell(el("strong", "", t.label || "—")),
        el("td", "mono", t.token_id),
        cell(formatTime(t.created_at)),
        el("td", "last-used", lastUsed),
        cell(inUse),
        cell(t.tunnels.length ? t.tunnels.join(", ") : "—"),
        cell(t.reserved.length ? t.reserved.join(", ") : "—"),
        cell(formatLimits(t.limits)),
        cell(revoke),
      );
      row.dataset.tokenId = t.token_id;
      return row;
    }),
  );
  $("tokens-empty").hidden = state.tokens.length > 0;
  $("token-count").textContent = `(${state.tokens.length})`;
  const select = $("reserve-token");
  const chosen = select.value;
  select.replaceChildren(
    ...state.tokens.map((t) => {
      const option = el("option", "", `${t.label || "(no label)"} — ${t.token_id}`);
      option.value = t.token_id;
      return option;
    }),
  );
  if (state.tokens.some((t) => t.token_id === chosen)) select.value = chosen;
}

function renderReservations(state) {
  const body = $("reservations").tBodies[0];
  body.replaceChildren(
    ...state.reservations.map((r) => {
      const release = el("button", "secondary small", "Release");
      release.type = "button";
      release.addEventListener("click", () => releaseName(r));
      const row = el(
        "tr",
        "",
        cell(el("strong", "", r.name)),
        cell(r.token_label ? `${r.token_label} ` : "", el("span", "muted mono", r.token_id)),
        cell(r.live ? "yes" : "no"),
        cell(release),
      );
      row.dataset.name = r.name;
      return row;
    }),
  );
  $("names-empty").hidden = state.reservations.length > 0;
  $("name-count").textContent = `(${state.reservations.length})`;
}

async function refreshState() {
  clearTimeout(stateTimer);
  try {
    const state = await getJson("/api/state");
    renderTunnels(state);
    renderTokens(state);
    renderReservations(state);
    setLive("live", `live · updated ${new Date().toLocaleTimeString()}`);
    showError("");
  } catch (error) {
    setLive("stale", "not updating");
    showError(`The relay could not be read: ${error.message}`);
  }
  schedule();
}

function schedule() {
  clearTimeout(stateTimer);
  if (document.visibilityState === "visible") stateTimer = setTimeout(refreshState, REFRESH_MS);
}

// --- Actions ----------------------------------------------------------------------------------

function number(id) {
  const value = $(id).value.trim();
  return value === "" ? undefined : Number(value);
}

async function createToken(event) {
  event.preventDefault();
  $("create-error").textContent = "";
  const payload = {
    label: $("create-label").value,
    reserve: $("create-reserve").value,
    limits: {
      rate: number("create-rate"),
      burst: number("create-burst"),
      max_tunnels: number("create-max-tunnels"),
      requests_per_day: number("create-per-day"),
    },
  };
  try {
    const created = await post("/api/tokens", payload);
    $("new-token-label").textContent = created.label;
    $("new-token-value").textContent = created.token;
    $("new-token").hidden = false;
    $("create-form").reset();
  } catch (error) {
    $("create-error").textContent = error.message;
  }
  refreshState();
}

function forgetNewToken() {
  // The token leaves the page: it was shown once.
  $("new-token-value").textContent = "";
  $("new-token").hidden = true;
}

async function copyNewToken() {
  try {
    await navigator.clipboard.writeText($("new-token-value").textContent);
    $("new-token-copy").textContent = "Copied";
  } catch {
    const range = document.createRange();
    range.selectNodeContents($("new-token-value"));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
  }
}

function askRevoke(token) {
  pendingRevoke = token;
  $("confirm-label").textContent = token.label ? `“${token.label}” (${token.token_id})` : token.token_id;
  $("confirm-detail").textContent = token.tunnels.length
    ? `It serves ${token.tunnels.join(", ")} right now; those tunnels stop answering.`
    : "No tunnel of it is served right now.";
  $("confirm-revoke").showModal();
}

async function confirmRevoke() {
  const token = pendingRevoke;
  pendingRevoke = null;
  $("confirm-revoke").close();
  if (!token) return;
  try {
    await post(`/api/tokens/${encodeURIComponent(token.token_id)}/revoke`, { confirm: token.token_id });
    showError("");
  } catch (error) {
    showError(`Revoking ${token.token_id} failed: ${error.message}`);
  }
  refreshState();
}

async function reserveName(event) {
  event.preventDefault();
  $("reserve-error").textContent = "";
  try {
    await post("/api/reservations", { name: $("reserve-name").value.trim(), token_id: $("reserve-token").value });
    $("reserve-name").value = "";
  } catch (error) {
    $("reserve-error").textContent = error.message;
  }
  refreshState();
}

async function releaseName(reservation) {
  try {
    await post(`/api/reservations/${encodeURIComponent(reservation.name)}/release`, { token_id: reservation.token_id });
    showError("");
  } catch (error) {
    showError(`Releasing ${reservation.name} failed: ${error.message}`);
  }
  refreshState();
}

// --- Metrics and domain -----------------------------------------------------------------------

async function refreshMetrics() {
  clearTimeout(metricsTimer);
  try {
    const found = await getJson(`/api/metrics?window=${chartWindow}`);
    $("metrics-note").textContent = found.note;
    $("metrics-note").hidden = !found.note;
    $("charts").replaceChildren(
      ...found.charts.map((chart) => {
        const image = el("img");
        image.alt = `${chart.title}: ${chart.summary}`;
        image.src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(chart.svg)}`;
        const figure = el("figure", "chart", image, el("figcaption", "", el("strong", "", chart.title), " — ", chart.summary));
        figure.dataset.chart = chart.key;
        return figure;
      }),
    );
  } catch (error) {
    $("metrics-note").textContent = `Metrics could not be read: ${error.message}`;
    $("metrics-note").hidden = false;
  }
  if (document.visibilityState === "visible") metricsTimer = setTimeout(refreshMetrics, METRICS_MS);
}

function table(id, rows) {
  $(id).tBodies[0].replaceChildren(...rows);
  $(id).hidden = rows.length === 0;
}

async function refreshDomain() {
  try {
    const domain = await getJson("/api/domain");
    $("domain-notes").replaceChildren(...domain.notes.map((note) => el("li", "", note)));
    table("certificates", domain.certificates.map((c) => el(
      "tr", c.warn ? "warn" : "",
      cell(c.domain), cell(c.status), cell(formatTime(c.not_after)),
      el("td", "num", c.days_left === null ? "—" : String(c.days_left)),
    )));
    table("jobs", domain.jobs.map((j) => el(
      "tr", j.result === "failed" ? "warn" : "",
      cell(j.job), cell(formatTime(j.last_run)), cell(j.result), cell(j.detail),
    )));
    table("alarms", domain.alarms.map((a) => el(
      "tr", a.state === "ALARM" ? "warn" : "",
      cell(a.name), cell(a.state), cell(formatTime(a.since)),
    )));
  } catch (error) {
    $("domain-notes").replaceChildren(el("li", "error", `The domain's state could not be read: ${error.message}`));
  }
}

function chooseWindow(event) {
  chartWindow = event.currentTarget.dataset.window;
  for (const button of document.querySelectorAll("[data-window]")) {
    button.setAttribute("aria-pressed", String(button.dataset.window === chartWindow));
  }
  refreshMetrics();
}

// --- Start ------------------------------------------------------------------------------------

$("create-form").addEventListener("submit", createToken);
$("reserve-form").addEventListener("submit", reserveName);
$("new-token-done").addEventListener("click", forgetNewToken);
$("new-token-copy").addEventListener("click", copyNewToken);
$("confirm-ok").addEventListener("click", confirmRevoke);
$("confirm-cancel").addEventListener("click", () => {
  pendingRevoke = null;
  $("confirm-revoke").close();
});
for (const button of document.querySelectorAll("[data-window]")) button.addEventListener("click", chooseWindow);
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") {
    refreshState();
    refreshMetrics();
  }
});
refreshState();
refreshMetrics();
refreshDomain();
setInterval(refreshDomain, DOMAIN_MS);
