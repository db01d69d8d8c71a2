// Headrace's analyst page: pick a view, a key and one or more measures (p50, p95 and p99 of a view
// together, say); see them over time, live.
// History comes from REST (GET /v1/views/{view}); new and updated windows arrive through the
// GraphQL subscription (graphql-transport-ws). The token stays in this tab (sessionStorage); a
// "#token=..." fragment is read once and removed from the address bar.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { views: [], view: null, points: new Map(), socket: null, live: 0 };

function say(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function token() {
  return $("token").value.trim().replace(/^Bearer\s+/i, "");
}

async function api(path) {
  const answer = await fetch(path, { headers: { Authorization: `Bearer ${token()}` } });
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new Error(`${answer.status}: ${body.error || answer.statusText}`);
  return body;
}

function option(select, value, label) {
  const item = document.createElement("option");
  item.value = value;
  item.textContent = label ?? value;
  select.appendChild(item);
}

async function loadViews() {
  sessionStorage.setItem("headrace-token", token());
  try {
    state.views = (await api("/v1/views")).views;
  } catch (error) {
    say(`cannot list views: ${error.message}`, true);
    return;
  }
  $("view").replaceChildren();
  for (const view of state.views) option($("view"), view.name);
  $("view").disabled = state.views.length === 0;
  say(state.views.length ? `${state.views.length} view(s)` : "this token may read no view");
  if (state.views.length) await chooseView();
}

async function chooseView() {
  const view = state.views.find((v) => v.name === $("view").value);
  state.view = view;
  $("measure").replaceChildren();
  // numbers only: a top_k measure is a list, not a line
  for (const [name, type] of Object.entries(view.measures)) {
    if (type === "integer" || type === "number") option($("measure"), name);
  }
  if ($("measure").options.length) $("measure").options[0].selected = true;
  $("key").replaceChildren();
  const rows = (await api(`/v1/views/${encodeURIComponent(view.name)}?limit=1000&fields=${view.keys.join(",")}`)).rows;
  const seen = new Set();
  for (const row of rows) {
    const key = JSON.stringify(view.keys.map((k) => row[k]));
    if (seen.has(key)) continue;
    seen.add(key);
    option($("key"), key, view.keys.map((k) => row[k]).join(" · "));
  }
  for (const id of ["key", "measure", "plot"]) $(id).disabled = seen.size === 0;
  if (seen.size === 0) say(`${view.name} has no rows yet`);
}

function keyFilter() {
  const values = JSON.parse($("key").value);
  return Object.fromEntries(state.view.keys.map((k, i) => [k, values[i]]));
}

function chosenMeasures() {
  return [...$("measure").selectedOptions].map((o) => o.value);
}

async function plot() {
  const view = state.view, measures = chosenMeasures(), filter = keyFilter();
  if (!measures.length) {
    say("choose one or more measures", true);
    return;
  }
  const query = new URLSearchParams({ fields: ["window_start", ...measures].join(","), limit: "1000" });
  for (const [k, v] of Object.entries(filter)) query.append(k, v);
  try {
    const rows = (await api(`/v1/views/${encodeURIComponent(view.name)}?${query}`)).rows;
    state.points = new Map(rows.map((r) => [r.window_start, { row: r, live: false }]));
  } catch (error) {
    say(`cannot read ${view.name}: ${error.message}`, true);
    return;
  }
  state.live = 0;
  draw(measures);
  subscribe(view, measures, filter);
}

function subscribe(view, measures, filter) {
  if (state.socket) state.socket.close();
  const field = view.name.replace("@", "__");
  const where = Object.entries(filter).map(([k, v]) => `${k}: [${JSON.stringify(v)}]`).join(", ");
  const socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/graphql`,
                               "graphql-transport-ws");
  state.socket = socket;
  socket.onopen = () => socket.send(JSON.stringify({ type: "connection_init",
                                                     payload: { authorization: `Bearer ${token()}` } }));
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "connection_ack") {
      socket.send(JSON.stringify({ id: "1", type: "subscribe", payload: {
        query: `subscription { ${field}(where: {${where}}) { window_start ${measures.join(" ")} } }` } }));
      say(`${view.name}: ${state.points.size} windows, live`);
    } else if (message.type === "next" && message.payload.data) {
      const row = message.payload.data[field];
      state.points.set(row.window_start, { row, live: true });
      state.live += 1;
      draw(measures);
      say(`${view.name}: ${state.points.size} windows, live (${state.live} update${state.live === 1 ? "" : "s"})`);
    } else if (message.type === "error" || (message.type === "next" && message.payload.errors)) {
      say(`subscription refused: ${JSON.stringify(message.payload)}`, true);
    }
  };
  socket.onclose = (event) => {
    if (state.socket === socket && event.code !== 1000) say(`live updates stopped (${event.code} ${event.reason})`, true);
  };
}

const COLOURS = ["#2563eb", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2"];

function draw(measures) {
  const svg = $("chart"), W = 900, H = 380, left = 70, right = 20, top = 20, bottom = 50;
  const windows = [...state.points.entries()]
    .map(([start, p]) => ({ t: Date.parse(start), row: p.row, live: p.live }))
    .sort((a, b) => a.t - b.t);
  const series = measures.map((measure, i) => ({
    measure, colour: COLOURS[i % COLOURS.length],
    points: windows.map((w) => ({ t: w.t, v: w.row[measure], live: w.live }))
      .filter((p) => p.v !== null && p.v !== undefined),
  }));
  const points = series.flatMap((s) => s.points);
  svg.replaceChildren();
  const el = (name, attrs, text) => {
    const node = document.createElementNS("http://www.w3.org/2000/svg", name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.appendChild(node);
    return node;
  };
  $("legend").replaceChildren();
  if (!points.length) return;
  for (const s of series) {
    const key = document.createElement("span");
    key.className = "key";
    key.style.color = s.colour;
    key.textContent = `■ ${s.measure} `;
    $("legend").appendChild(key);
  }
  $("legend").appendChild(document.createTextNode(`per window (${windows.length} windows; red: arrived live)`));
  const t0 = Math.min(...points.map((p) => p.t)), t1 = Math.max(...points.map((p) => p.t), t0 + 1);
  const vmin = Math.min(0, ...points.map((p) => p.v)), vmax = Math.max(...points.map((p) => p.v), vmin + 1);
  const x = (t) => left + (t - t0) / (t1 - t0) * (W - left - right);
  const y = (v) => H - bottom - (v - vmin) / (vmax - vmin) * (H - top - bottom);
  for (let i = 0; i <= 4; i++) {
    const v = vmin + (vmax - vmin) * i / 4;
    el("line", { class: "grid", x1: left, x2: W - right, y1: y(v), y2: y(v) });
    el("text", { class: "tick", x: left - 8, y: y(v) + 4, "text-anchor": "end" }, +v.toPrecision(4));
  }
  for (const [t, anchor] of [[t0, "start"], [(t0 + t1) / 2, "middle"], [t1, "end"]]) {
    el("text", { class: "tick", x: x(t), y: H - bottom + 18, "text-anchor": anchor },
       new Date(t).toISOString().replace("T", " ").slice(0, 16));
  }
  el("line", { class: "axis", x1: left, x2: left, y1: top, y2: H - bottom });
  el("line", { class: "axis", x1: left, x2: W - right, y1: H - bottom, y2: H - bottom });
  for (const s of series) {
    el("polyline", { class: "line", stroke: s.colour, points: s.points.map((p) => `${x(p.t)},${y(p.v)}`).join(" ") });
    for (const p of s.points) {
      el("circle", { class: p.live ? "dot live" : "dot", fill: p.live ? "#dc2626" : s.colour, cx: x(p.t), cy: y(p.v),
                     r: 3.5, "data-measure": s.measure, "data-window": new Date(p.t).toISOString(), "data-value": p.v });
    }
  }
}

const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get("token")) {
  $("token").value = fragment.get("token");
  history.replaceState(null, "", location.pathname);
} else {
  $("token").value = sessionStorage.getItem("headrace-token") || "";
}
$("connect").addEventListener("click", loadViews);
$("view").addEventListener("change", chooseView);
$("plot").addEventListener("click", plot);
