// The operator console: plain JavaScript, no build step, nothing fetched from elsewhere.
//
// Logging in posts the token to /api/v1/session once; the gateway answers with an HttpOnly cookie, so
// this script never keeps the token. Every REST call and the WebSocket go with that cookie. The fleet,
// strategies, history, positions and P&L are polled; orders and fills arrive live on /ws/events. A
// command is queued (202) and its status read back from /commands/{id} until executed or failed.
// Everything shown is set as text, never as HTML.
"use strict";

const API = "/api/v1";
const POLL_MS = { fleet: 3000, strategies: 3000, history: 3000, journal: 15000, command: 1000 };
const LIVE_ROWS = 50; // newest orders and fills kept on the page
const VERBS = ["start", "stop", "restart", "pause", "resume"];
const ROLES = { viewer: 0, operator: 1, admin: 2 };

const state = { me: null, timers: [], ws: null, seq: null, retry: null, orders: new Map(), commands: new Map(), killEngage: true };

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

const $ = (selector) => document.querySelector(selector);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = el("tr");
  for (const cell of cells) {
    const td = el("td");
    if (cell instanceof Node) td.append(cell);
    else td.textContent = cell === undefined || cell === null ? "" : String(cell);
    tr.append(td);
  }
  return tr;
}

function detailOf(body, status) {
  if (!body || body.detail === undefined) return `HTTP ${status}`;
  if (typeof body.detail === "string") return body.detail;
  // FastAPI's 422: [{loc: ["body", "params", "fast"], msg}, ...] names the field
  return body.detail.map((d) => `${(d.loc || []).filter((p) => p !== "body").join(".")}: ${d.msg}`).join("; ");
}

async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(API + path, init);
  let data = null;
  if (response.status !== 204) {
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
  }
  if (response.status === 401 && path !== "/session") {
    showLogin("");
  }
  if (!response.ok) throw new ApiError(response.status, detailOf(data, response.status));
  return data;
}

function time(value) {
  if (!value) return "";
  const d = typeof value === "number" ? new Date(value / 1e6) : new Date(value);
  return isNaN(d) ? String(value) : d.toLocaleTimeString();
}

// ---- login -------------------------------------------------------------------------------------

function showLogin(message) {
  stop();
  state.me = null;
  $("#app").hidden = true;
  $("#logout").hidden = true;
  $("#whoami").textContent = "";
  $("#login-view").hidden = false;
  $("#login-error").textContent = message;
}

async function login(event) {
  event.preventDefault();
  const token = $("#token").value.trim();
  $("#login-error").textContent = "";
  try {
    await api("POST", "/session", { token });
  } catch (err) {
    $("#login-error").textContent = err.status === 401 ? "That token is not valid." : `Login failed: ${err.message}`;
    return;
  } finally {
    $("#token").value = "";
  }
  await start();
}

async function logout() {
  try {
    await api("DELETE", "/session");
  } finally {
    showLogin("Logged out.");
  }
}

// ---- the page ----------------------------------------------------------------------------------

async function start() {
  try {
    state.me = await api("GET", "/whoami");
  } catch (err) {
    showLogin(err.status === 401 ? "" : `The gateway is unreachable: ${err.message}`);
    return;
  }
  $("#login-view").hidden = true;
  $("#app").hidden = false;
  $("#logout").hidden = false;
  $("#whoami").textContent = `${state.me.name} (${state.me.role})`;
  document.body.classList.toggle("can-operate", ROLES[state.me.role] >= ROLES.operator);
  every(POLL_MS.fleet, refreshFleet);
  every(POLL_MS.strategies, refreshStrategies);
  every(POLL_MS.history, refreshHistory);
  every(POLL_MS.journal, refreshJournal);
  connect();
}

function stop() {
  state.timers.forEach(clearInterval);
  state.timers = [];
  clearTimeout(state.retry);
  if (state.ws) {
    state.ws.onclose = null;
    state.ws.close();
    state.ws = null;
  }
  setStream("offline");
}

function every(ms, fn) {
  fn();
  state.timers.push(setInterval(fn, ms));
}

// A poll's failure (the gateway restarting, the database unavailable: 503) is shown in ``note`` until the
// next poll succeeds; a 401 has already brought the login back.
async function quietly(fn, note) {
  try {
    await fn();
    if (note) $(note).textContent = "";
  } catch (err) {
    if (err.status === 401) return;
    if (note) $(note).textContent = err.message;
    else console.warn(err);
  }
}

// ---- fleet and kill switch ---------------------------------------------------------------------

function refreshFleet() {
  return quietly(async () => {
    const fleet = await api("GET", "/fleet");
    badge($("#bus"), fleet.bus_connected ? "bus connected" : "bus DISCONNECTED", fleet.bus_connected ? "ok" : "bad");
    const ks = fleet.kill_switch;
    if (ks && ks.engaged) badge($("#kill-state"), `kill switch ENGAGED: ${ks.reason}`, "bad");
    else badge($("#kill-state"), ks ? `kill switch released: ${ks.reason}` : "kill switch not engaged", "ok");
    $("#fleet-host").textContent = `host ${fleet.host}`;
    const body = $("#daemons tbody");
    body.replaceChildren(...fleet.daemons.map((d) => {
      const health = d.healthy === null ? "" : d.healthy ? "healthy" : `unhealthy: ${d.reason || ""}`;
      const tr = row([d.host, d.unit, d.state, health, d.uptime_sec === null ? "" : `${Math.round(d.uptime_sec)} s`, d.pid]);
      tr.dataset.unit = d.unit;
      tr.className = d.state === "alive" && d.healthy !== false ? "ok" : d.state === "silent" || d.healthy === false ? "bad" : "";
      return tr;
    }));
  });
}

function badge(node, text, kind) {
  node.textContent = text;
  node.className = `badge ${kind}`;
}

function askKill(engage) {
  state.killEngage = engage;
  $("#kill-question").textContent = engage ? "Engage the kill switch?" : "Release the kill switch?";
  $("#kill-reason").value = "";
  $("#kill-dialog").showModal();
}

async function confirmKill(event) {
  event.preventDefault();
  const reason = $("#kill-reason").value.trim();
  if (!reason) return;
  $("#kill-dialog").close();
  try {
    const sent = await api("POST", "/kill-switch", { engage: state.killEngage, reason });
    $("#kill-result").textContent = `${sent.engage ? "engage" : "release"} sent (trace ${sent.trace})`;
  } catch (err) {
    $("#kill-result").textContent = `kill switch not sent: ${err.message}`;
  }
  refreshFleet();
}

// ---- strategies and commands -------------------------------------------------------------------

function refreshStrategies() {
  return quietly(async () => {
    const strategies = await api("GET", "/strategies");
    $("#strategies tbody").replaceChildren(...strategies.map(strategyRow));
  }, "#strategies-note");
}

function strategyRow(s) {
  const buttons = el("span");
  for (const verb of VERBS) {
    const b = el("button", verb);
    b.type = "button";
    b.dataset.verb = verb;
    b.addEventListener("click", () => command(s.name, verb));
    buttons.append(b);
  }
  const edit = el("button", "edit params…");
  edit.type = "button";
  edit.dataset.verb = "update_config";
  edit.addEventListener("click", () => editParams(s));
  buttons.append(edit);
  const status = el("span", null, "command-status");
  const last = state.commands.get(s.name);
  if (last) showCommand(status, last);
  const tr = row([s.name, s.kind, s.engine, el("span", s.desired_state, `state ${s.desired_state}`), s.version,
    el("code", Object.entries(s.params).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(" ")), buttons, status]);
  tr.children[6].className = "operator-only"; // as its header: a viewer's columns stay aligned
  tr.dataset.strategy = s.name;
  return tr;
}

function statusCell(name) {
  return document.querySelector(`#strategies tr[data-strategy="${CSS.escape(name)}"] .command-status`);
}

function showCommand(node, c) {
  if (!node) return;
  const what = c.verb === "update_config" ? "update_config" : c.verb;
  node.textContent = c.reason ? `${what}: ${c.status}: ${c.reason}` : `${what}: ${c.status}`;
  node.className = `command-status ${c.status}`;
  node.dataset.status = c.status;
  node.dataset.command = c.id;
}

async function command(name, verb) {
  const refused = await submit(name, () => api("POST", `/strategies/${encodeURIComponent(name)}/commands`,
    { verb, id: newId(verb) }));
  if (refused) showCommand(statusCell(name), { verb, status: "refused", reason: refused, id: "" });
}

// Queue a command and follow it; the refusal's message when it was not queued (nothing was written).
async function submit(name, send) {
  let c;
  try {
    c = await send();
  } catch (err) {
    return err.message;
  }
  track(name, c);
  refreshHistory();
  return null;
}

function newId(verb) {
  const random = crypto.getRandomValues(new Uint32Array(2));
  return `console-${verb}-${Date.now().toString(36)}-${random[0].toString(36)}${random[1].toString(36)}`.slice(0, 64);
}

function track(name, c) {
  state.commands.set(name, c);
  showCommand(statusCell(name), c);
  if (c.status !== "pending") {
    refreshStrategies();
    return;
  }
  const timer = setInterval(() => quietly(async () => {
    const now = await api("GET", `/commands/${encodeURIComponent(c.id)}`);
    if (state.commands.get(name)?.id === c.id) {
      state.commands.set(name, now);
      showCommand(statusCell(name), now);
    }
    if (now.status !== "pending") {
      clearInterval(timer);
      refreshStrategies();
      refreshHistory();
    }
  }), POLL_MS.command);
  state.timers.push(timer);
}

function editParams(s) {
  $("#params-name").textContent = s.name;
  $("#params-json").value = JSON.stringify(s.params, null, 2);
  $("#params-error").textContent = "";
  $("#params-dialog").dataset.strategy = s.name;
  $("#params-dialog").dataset.original = JSON.stringify(s.params);
  $("#params-dialog").showModal();
}

async function saveParams(event) {
  event.preventDefault();
  const dialog = $("#params-dialog");
  const name = dialog.dataset.strategy;
  let edited;
  try {
    edited = JSON.parse($("#params-json").value);
  } catch (err) {
    $("#params-error").textContent = `Not JSON: ${err.message}`;
    return;
  }
  if (edited === null || typeof edited !== "object" || Array.isArray(edited)) {
    $("#params-error").textContent = "Expected a JSON object of parameters.";
    return;
  }
  const original = JSON.parse(dialog.dataset.original);
  const changed = Object.fromEntries(Object.entries(edited).filter(([k, v]) => JSON.stringify(original[k]) !== JSON.stringify(v)));
  if (Object.keys(changed).length === 0) {
    $("#params-error").textContent = "Nothing changed.";
    return;
  }
  const refused = await submit(name, () => api("PATCH", `/strategies/${encodeURIComponent(name)}/params`,
    { params: changed, id: newId("params") }));
  if (refused) $("#params-error").textContent = refused; // e.g. "params: need 0 < fast < slow": nothing was queued
  else dialog.close();
}

function refreshHistory() {
  return quietly(async () => {
    const commands = await api("GET", "/commands?limit=50");
    $("#history tbody").replaceChildren(...commands.map((c) => {
      const tr = row([time(c.created_at), c.id, c.strategy, c.verb, Object.keys(c.args).length ? JSON.stringify(c.args) : "",
        c.actor, el("span", c.status, `status ${c.status}`), c.reason || ""]);
      tr.dataset.command = c.id;
      return tr;
    }));
  }, "#history-note");
}

// ---- the journal: orders and fills so far, positions, P&L ---------------------------------------

function refreshJournal() {
  return quietly(async () => {
    await Promise.all([loadOrders(), loadFills(), loadPositions(), loadPnl()]);
  });
}

async function journal(path, note) {
  try {
    const data = await api("GET", path);
    if (note) $(note).textContent = "";
    return data;
  } catch (err) {
    if (err.status === 404) {
      if (note) $(note).textContent = "No journal for today yet.";
      return null;
    }
    throw err;
  }
}

async function loadOrders() {
  const orders = await journal("/orders");
  for (const o of orders || []) {
    if (!state.orders.has(o.client_id)) addOrder(o, false);
  }
}

async function loadFills() {
  const fills = await journal("/fills");
  for (const f of fills || []) {
    if (!document.querySelector(`#fills tr[data-fill="${CSS.escape(f.fill_id)}"]`)) addFill(f, false);
  }
}

async function loadPositions() {
  const positions = await journal("/positions", "#positions-note");
  if (positions === null) return;
  $("#positions tbody").replaceChildren(...positions.map((p) => row([p.strategy, p.symbol, p.quantity, p.average.toFixed(2),
    p.mark.toFixed(2), p.unrealised.toFixed(2)])));
  if (!positions.length) $("#positions-note").textContent = "No open positions.";
}

async function loadPnl() {
  const pnl = await journal("/pnl", "#pnl-note");
  if (pnl === null) return;
  const dl = $("#pnl");
  dl.replaceChildren();
  for (const key of ["realised", "unrealised", "gross_pnl", "net_pnl", "max_drawdown"]) {
    dl.append(el("dt", key.replace("_", " ")), el("dd", pnl[key].toFixed(2), pnl[key] < 0 ? "bad" : ""));
  }
}

function addOrder(o, live) {
  const key = o.client_id || o.order_id;
  const tr = row([time(o.ts), o.strategy, o.symbol, o.side, o.quantity, o.status, o.filled_quantity]);
  tr.dataset.order = key;
  if (live) tr.className = "live";
  const old = state.orders.get(key);
  if (old) old.replaceWith(tr);
  else prepend($("#orders tbody"), tr);
  state.orders.set(key, tr);
}

function addFill(f, live) {
  const tr = row([time(f.ts || f.exchange_time), f.fill_id, f.strategy, f.symbol, f.side, f.quantity, f.price]);
  tr.dataset.fill = f.fill_id;
  if (live) tr.className = "live";
  prepend($("#fills tbody"), tr);
}

function prepend(body, tr) {
  body.prepend(tr);
  while (body.children.length > LIVE_ROWS) body.lastElementChild.remove();
}

// ---- the live stream ---------------------------------------------------------------------------

function setStream(text) {
  const node = $("#stream-state");
  node.textContent = text;
  node.className = `badge ${text === "live" ? "ok" : "bad"}`;
}

function connect() {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/events`);
  state.ws = ws;
  setStream("connecting");
  ws.onopen = () => {
    const first = { topics: ["execution.*", "control.kill_switch", "risk.pnl"] };
    if (state.seq !== null) first.since = state.seq;
    ws.send(JSON.stringify(first));
  };
  ws.onmessage = (message) => {
    const m = JSON.parse(message.data);
    if (m.type === "subscribed") {
      setStream("live");
      if (state.seq === null) state.seq = m.seq; // a resume's replay follows this message
    } else if (m.type === "gap") {
      refreshJournal(); // the ring no longer reaches back: re-read what was missed
    } else if (m.type === "event") {
      state.seq = m.seq;
      onEvent(m);
    }
  };
  ws.onclose = (event) => {
    state.ws = null;
    setStream(event.code === 1008 ? "refused" : "reconnecting");
    if (state.me) state.retry = setTimeout(connect, 2000); // resumes with since
  };
}

function onEvent(m) {
  const payload = m.event.payload || {};
  const ts = m.event.ts;
  if (m.topic === "execution.fill") addFill({ ts, ...payload }, true);
  else if (m.topic === "execution.order" || m.topic === "execution.reject") addOrder({ ts, ...payload }, true);
  else if (m.topic === "control.kill_switch") refreshFleet();
  else if (m.topic === "risk.pnl") showLivePnl(payload);
}

// risk's booked P&L, live: it moves with every fill and mark, between the journal's report reloads
function showLivePnl(p) {
  const live = $("#pnl-live");
  live.textContent = `live from risk: realised ${p.realised.toFixed(2)}, unrealised ${p.unrealised.toFixed(2)}, ` +
    `${p.open_positions} open position${p.open_positions === 1 ? "" : "s"}`;
  live.className = p.realised + p.unrealised < 0 ? "bad" : "";
}

// ---- wiring ------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", login);
  $("#logout").addEventListener("click", logout);
  $("#kill-engage").addEventListener("click", () => askKill(true));
  $("#kill-release").addEventListener("click", () => askKill(false));
  $("#kill-form").addEventListener("submit", confirmKill);
  $("#kill-cancel").addEventListener("click", () => $("#kill-dialog").close());
  $("#params-form").addEventListener("submit", saveParams);
  $("#params-cancel").addEventListener("click", () => $("#params-dialog").close());
  start();
});
