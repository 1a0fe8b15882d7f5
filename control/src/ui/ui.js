// serin's dashboard: polls the admin API (docs/admin.md) and draws what it answers.
// The JSON it reads is control/src/wire.rs's ServiceView, TimelineEvent and ApiError;
// tests/golden/ holds an example of each (service.json, timeline.json, error.json).
// No library, no build step; every value from the API is set as text, never as HTML.
"use strict";

const POLL_MS = 2000;
const HISTORY_MS = 5 * 60 * 1000;
const COLORS = ["#0b5cad", "#c2410c", "#15803d", "#7e22ce", "#a16207", "#0e7490"];
const TOKEN_KEY = "serin-admin-token";
const SVG = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);
const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  // Reads worked without a token: the API is open, so commands need none either.
  open: false,
  needToken: false,
  selected: decodeURIComponent(location.hash.slice(1)) || null,
  history: new Map(), // service -> version -> [{t, rps, err, p50, p95, p99}]
  pending: null,
  timer: null,
};

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function fmt(n, digits) {
  if (n === null || n === undefined) return "–";
  return Number(n).toLocaleString("en-US", { maximumFractionDigits: digits });
}

function pct(rate) {
  return rate === null || rate === undefined ? "–" : fmt(rate * 100, 2) + " %";
}

class Unauthorized extends Error {}

async function api(method, path) {
  const headers = { Accept: "application/json" };
  if (state.token) headers.Authorization = "Bearer " + state.token;
  const res = await fetch(path, { method, headers, cache: "no-store" });
  if (res.status === 401) throw new Unauthorized(path);
  let body = null;
  try { body = await res.json(); } catch (_) { body = null; }
  if (!res.ok) {
    const why = body && body.error ? body.error : res.status + " " + res.statusText;
    throw new Error(why);
  }
  if (!state.token) state.open = true;
  return body;
}

function askToken(why) {
  state.needToken = true;
  $("token-why").textContent = why;
  $("token-form").hidden = false;
  $("token").focus();
  renderAuth();
}

function renderAuth() {
  const can = Boolean(state.token) || state.open;
  $("actions").hidden = !can;
  for (const b of $("actions").querySelectorAll("button")) b.disabled = !can;
  $("actions-locked").hidden = can;
  $("forget").hidden = !state.token;
}

function setStatus(text) { $("status").textContent = text; }

async function poll() {
  clearTimeout(state.timer);
  try {
    const services = await api("GET", "/api/v1/services");
    state.needToken = false;
    $("token-form").hidden = true;
    renderAuth();
    const now = Date.now();
    for (const s of services) remember(s, now);
    renderPicker(services);
    const current = services.find((s) => s.name === state.selected) || services[0];
    if (current) {
      state.selected = current.name;
      let timeline = [];
      let unread = null;
      try {
        timeline = await api("GET", "/api/v1/services/" + encodeURIComponent(current.name) + "/timeline");
      } catch (err) {
        // Fleet mode with etcd away: the service still shows; the timeline says why not.
        if (err instanceof Unauthorized) throw err;
        unread = err.message;
      }
      renderService(current, timeline);
      $("timeline-empty").textContent = unread ? "The timeline cannot be read now: " + unread : "No decisions yet.";
    } else {
      $("service-view").hidden = true;
    }
    setStatus("Updated " + new Date(now).toLocaleTimeString());
  } catch (err) {
    if (err instanceof Unauthorized) {
      if (state.token) {
        sessionStorage.removeItem(TOKEN_KEY);
        state.token = null;
        askToken("The admin API refused the token: enter the token of this serin.");
      } else {
        askToken("This serin needs its admin token (admin.token_file or SERIN_ADMIN_TOKEN) to show its services.");
      }
      setStatus("Waiting for the admin token");
      return; // polling resumes once a token is given
    }
    setStatus("Cannot read the admin API: " + err.message + " (retrying)");
  }
  state.timer = setTimeout(poll, POLL_MS);
}

function remember(service, now) {
  let versions = state.history.get(service.name);
  if (!versions) { versions = new Map(); state.history.set(service.name, versions); }
  for (const [name, v] of Object.entries(service.versions || {})) {
    let points = versions.get(name);
    if (!points) { points = []; versions.set(name, points); }
    points.push({ t: now, rps: v.rps, err: v.error_rate === null ? null : v.error_rate * 100,
      p50: v.p50_ms, p95: v.p95_ms, p99: v.p99_ms });
    while (points.length && points[0].t < now - HISTORY_MS) points.shift();
  }
}

function renderPicker(services) {
  const select = $("service");
  $("picker").hidden = services.length < 2;
  const names = services.map((s) => s.name);
  if ([...select.options].map((o) => o.value).join("\n") !== names.join("\n")) {
    select.replaceChildren(...names.map((n) => { const o = el("option", n); o.value = n; return o; }));
  }
  if (state.selected) select.value = state.selected;
}

function renderService(s, timeline) {
  $("service-view").hidden = false;
  $("service-name").textContent = s.name;
  document.title = "serin · " + s.name;
  const versionNames = Object.keys(s.weights);
  const color = (name) => COLORS[Math.max(0, versionNames.indexOf(name)) % COLORS.length];

  // Weights.
  const total = Object.values(s.weights).reduce((a, b) => a + b, 0) || 1;
  $("weights-bar").replaceChildren(...versionNames.map((n) => {
    const part = el("span");
    part.style.width = (100 * s.weights[n] / total) + "%";
    part.style.background = color(n);
    return part;
  }));
  $("weights").textContent = versionNames.map((n) => n + " " + s.weights[n]).join(" · ");

  // A rollback drill: serin injects the canary's faults, so nobody reads it as an incident.
  const d = s.drill;
  $("drill-banner").hidden = !d;
  $("drill-banner").textContent = d
    ? "Rollback drill running — not an incident: serin answers " + d.errors + " of " + d.canary +
      "'s requests with 503" + (d.latency_ms ? " and delays the others by " + d.latency_ms + " ms" : "") +
      ", until " + new Date(d.ends_at).toLocaleTimeString() + " (" + d.faults.total + " requests so far)."
    : "";

  // Rollout state and steps.
  const r = s.rollout;
  const badge = $("rollout-state");
  badge.textContent = r.state === "none" ? "no rollout" : r.state.replace("_", " ");
  badge.className = "state " + r.state;
  $("rollout-since").textContent = r.since ? "since " + new Date(r.since).toLocaleTimeString() : "";
  const steps = r.steps || [];
  $("steps").replaceChildren(...steps.map((w, i) => {
    const li = el("li", (r.canary || "canary") + " " + w + " %");
    const finished = r.state === "promoted";
    if (i === r.step && !finished && r.state !== "rolled_back") {
      li.className = "current";
      li.setAttribute("aria-current", "step");
    } else if (i < r.step || finished) {
      li.className = "done";
    }
    li.title = "step " + (i + 1) + " of " + steps.length;
    return li;
  }));
  if (steps.length && r.step !== null) {
    $("steps").setAttribute("aria-label", "Step " + (r.step + 1) + " of " + steps.length + " (canary weight)");
  }
  $("rollout-reason").textContent = r.reason || "";
  $("ask-token").hidden = r.state === "none";
  $("actions-locked").classList.toggle("none", r.state === "none");

  // Numbers.
  $("window").textContent = s.window_s ? "(over the last " + fmt(s.window_s, 1) + " s)" : "";
  $("numbers").tBodies[0].replaceChildren(...versionNames.map((n) => {
    const v = (s.versions || {})[n] || {};
    const tr = el("tr");
    tr.dataset.version = n;
    const name = el("th", n);
    name.scope = "row";
    name.style.borderLeft = "6px solid " + color(n);
    tr.append(name);
    for (const [text, key] of [[s.weights[n], "weight"], [fmt(v.requests, 0), "requests"],
      [fmt(v.rps, 2), "rps"], [fmt(v.errors, 0), "errors"], [pct(v.error_rate), "error_rate"],
      [fmt(v.p50_ms, 2), "p50"], [fmt(v.p95_ms, 2), "p95"], [fmt(v.p99_ms, 2), "p99"]]) {
      const td = el("td", text, "num");
      td.dataset.field = key;
      tr.append(td);
    }
    return tr;
  }));

  renderFleet(s.fleet, versionNames);

  // Charts.
  const hist = state.history.get(s.name) || new Map();
  const series = (key, dash) => versionNames.map((n) => ({
    color: color(n), dash, points: (hist.get(n) || []).map((p) => [p.t, p[key]]),
  }));
  chart($("chart-rps"), series("rps", ""));
  chart($("chart-err"), series("err", ""));
  chart($("chart-lat"), [...series("p50", ""), ...series("p95", "6 3"), ...series("p99", "2 3")]);
  $("legend").replaceChildren(...versionNames.map((n) => {
    const item = el("span");
    const swatch = el("i");
    swatch.style.background = color(n);
    item.append(swatch, n);
    return item;
  }));

  renderTimeline(timeline);
}

function chart(box, series) {
  const W = 420, H = 160, L = 44, B = 18, T = 8, R = 8;
  const now = Date.now();
  // The span shown grows from one minute to HISTORY_MS as the page gathers samples.
  let first = now;
  for (const s of series) if (s.points.length && s.points[0][0] < first) first = s.points[0][0];
  const span = Math.min(HISTORY_MS, Math.max(60 * 1000, now - first));
  const t0 = now - span;
  let max = 0;
  for (const s of series) for (const [, y] of s.points) if (y !== null && y > max) max = y;
  max = max > 0 ? max * 1.1 : 1;
  const x = (t) => L + (W - L - R) * (t - t0) / span;
  const y = (v) => T + (H - T - B) * (1 - v / max);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 " + W + " " + H);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.append(e);
    return e;
  };
  for (const f of [0, 0.5, 1]) {
    add("line", { x1: L, x2: W - R, y1: y(max * f), y2: y(max * f), stroke: "#d5d9df" });
    add("text", { x: L - 4, y: y(max * f) + 3, "text-anchor": "end" }, fmt(max * f, max * f < 10 ? 2 : 0));
  }
  add("text", { x: L, y: H - 4 }, "−" + Math.round(span / 60000) + " min");
  add("text", { x: W - R, y: H - 4, "text-anchor": "end" }, "now");
  let latest = [];
  for (const s of series) {
    // A gap (no requests, so no value) breaks the line.
    let d = "";
    let pen = false;
    for (const [t, v] of s.points) {
      if (v === null || v === undefined || t < t0) { pen = false; continue; }
      d += (pen ? "L" : "M") + x(t).toFixed(1) + " " + y(v).toFixed(1);
      pen = true;
    }
    if (d) add("path", { d, fill: "none", stroke: s.color, "stroke-width": 2, "stroke-dasharray": s.dash });
    const last = s.points[s.points.length - 1];
    if (last && last[1] !== null) latest.push(fmt(last[1], 2));
  }
  svg.setAttribute("aria-label", "latest values: " + (latest.join(", ") || "none"));
  box.replaceChildren(svg);
}

// Fleet mode: the fleet as its leader last judged it (the merged numbers, then each
// listed instance's own requests and errors over the same window).
function renderFleet(f, declared) {
  $("fleet").hidden = !f;
  if (!f) return;
  let about = "(this is " + f.instance;
  if (f.leader) about += ", led by " + f.leader + "; " + f.instances + " instances";
  if (f.window_s) about += "; over the last " + fmt(f.window_s, 1) + " s";
  if (f.note) about += "; " + f.note;
  $("fleet-about").textContent = about + ")";
  const merged = f.versions || {};
  const names = declared.filter((n) => n in merged).concat(Object.keys(merged).filter((n) => !declared.includes(n)));
  const head = el("tr");
  head.append(el("th", "Instance"));
  for (const n of names) head.append(el("th", n + " requests"), el("th", n + " errors"));
  $("fleet-members").tHead.replaceChildren(head);
  const row = (label, counts) => {
    const tr = el("tr");
    const th = el("th", label);
    th.scope = "row";
    tr.append(th);
    for (const n of names) {
      const c = counts[n] || {};
      tr.append(el("td", fmt(c.requests, 0), "num"), el("td", fmt(c.errors, 0), "num"));
    }
    return tr;
  };
  $("fleet-members").tBodies[0].replaceChildren(row("whole fleet", f.versions || {}),
    ...(f.members || []).map((m) => row(m.instance, m.versions || {})));
  $("fleet-more").textContent = f.more_members ? "… and " + f.more_members + " more instances" : "";
}

function renderTimeline(events) {
  const rows = [...events].reverse().map((e) => {
    const tr = el("tr");
    tr.dataset.event = e.event;
    if (e.event === "rolled_back") tr.className = "bad";
    if (e.drill) tr.classList.add("drill");
    const why = [];
    if (e.reason) why.push(e.reason);
    if (e.rule) {
      why.push("rule " + e.rule.rule + ": observed " + fmt(e.rule.observed, 4) +
        " against " + fmt(e.rule.threshold, 4));
    }
    const numbers = Object.entries(e.versions || {}).map(([n, v]) =>
      n + ": " + fmt(v.requests, 0) + " req, " + fmt(v.errors, 0) + " err (" + pct(v.error_rate) +
      "), p99 " + fmt(v.p99_ms, 2) + " ms").join("; ");
    const weights = Object.entries(e.weights || {}).map(([n, w]) => n + " " + w).join(" · ");
    const decision = e.event.replace("_", " ") + (e.manual ? " (by hand)" : "") +
      (e.drill && !e.event.startsWith("drill") ? " (drill)" : "");
    for (const text of [new Date(e.at).toLocaleTimeString(), decision, e.state.replace("_", " "),
      e.step === null || e.step === undefined ? "–" : e.step + 1, weights, why.join(" — "), numbers]) {
      tr.append(el("td", text));
    }
    return tr;
  });
  $("timeline").tBodies[0].replaceChildren(...rows);
  $("timeline-empty").hidden = rows.length > 0;
}

const VERBS = {
  promote: "Promote: the canary takes 100 % now and the rollout ends.",
  pause: "Pause: the rollout stops moving; weights stay.",
  resume: "Resume: the rollout continues from its current step.",
  abort: "Abort: the canary's weight goes to 0 now and the rollout ends.",
};

function ask(command) {
  state.pending = command;
  $("confirm-text").textContent = VERBS[command] + " Do it on " + state.selected + "?";
  $("confirm-yes").textContent = "Confirm " + command;
  $("confirm").hidden = false;
  $("confirm-yes").focus();
}

async function confirmCommand() {
  const command = state.pending;
  $("confirm").hidden = true;
  state.pending = null;
  if (!command || !state.selected) return;
  try {
    const view = await api("POST", "/api/v1/services/" + encodeURIComponent(state.selected) + "/" + command);
    $("action-result").textContent = command + " done: the rollout is " + view.rollout.state.replace("_", " ") + ".";
  } catch (err) {
    if (err instanceof Unauthorized) {
      sessionStorage.removeItem(TOKEN_KEY);
      state.token = null;
      askToken("The admin API refused the token for " + command + ": enter the token of this serin.");
      return;
    }
    $("action-result").textContent = command + " refused: " + err.message;
  }
  poll();
}

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = $("token").value.trim();
    if (!token) return;
    state.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    $("token-form").hidden = true;
    renderAuth();
    poll();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    state.open = false;
    renderAuth();
    poll();
  });
  $("ask-token").addEventListener("click", () => askToken("Enter the admin token to act on the rollout."));
  $("service").addEventListener("change", (ev) => {
    state.selected = ev.target.value;
    location.hash = encodeURIComponent(state.selected);
    poll();
  });
  for (const b of $("actions").querySelectorAll("button")) {
    b.addEventListener("click", () => ask(b.dataset.command));
  }
  $("confirm-yes").addEventListener("click", confirmCommand);
  $("confirm-no").addEventListener("click", () => { $("confirm").hidden = true; state.pending = null; });
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && !$("confirm").hidden) { $("confirm").hidden = true; state.pending = null; }
  });
  renderAuth();
  poll();
});
