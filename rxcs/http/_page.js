"use strict";
const MAX_ROWS = 500;
const $ = (id) => document.getElementById(id);
const rows = $("events"), status = $("status"), banner = $("banner");
const params = new URLSearchParams(location.hash.slice(1));
let token = params.get("token") || sessionStorage.getItem("rxcs-token") || "";
if (params.get("token")) { sessionStorage.setItem("rxcs-token", token); history.replaceState(null, "", location.pathname); }
// The server's key for its own page: proof, for browsers that send no Sec-Fetch-Site, that the request
// comes from this page and not from another site's (docs/http.md, "Security model").
const pageKey = document.querySelector("meta[name='rxcs-page-key']").content;
let source = null, paused = false, waiting = [], received = 0, lastId = "";

function setStatus(state, text) { status.dataset.state = state; status.textContent = text; }
function showBanner(text) { banner.textContent = text; banner.classList.toggle("shown", Boolean(text)); }

function describe(change) {
  if (change.updateDescription) {
    const d = change.updateDescription, parts = {};
    if (Object.keys(d.updatedFields || {}).length) parts.$set = d.updatedFields;
    if ((d.removedFields || []).length) parts.$unset = Object.fromEntries(d.removedFields.map((f) => [f, ""]));
    return parts;
  }
  return change.fullDocument ?? change.to ?? change.operationDescription ?? "";
}

function matches(row) {
  const wanted = $("filter").value.trim().toLowerCase();
  return !wanted || row.dataset.text.includes(wanted);
}

function render(op, change) {
  const tr = document.createElement("tr");
  const when = change.wallTime && change.wallTime.$date ? new Date(change.wallTime.$date) : new Date();
  const ns = change.ns ? [change.ns.db, change.ns.coll].filter(Boolean).join(".") : "";
  const detail = describe(change);
  const cells = [
    when.toLocaleTimeString([], {hour12: false}) + "." + String(when.getMilliseconds()).padStart(3, "0"),
    null, ns, change.documentKey ? JSON.stringify(change.documentKey) : "",
    detail === "" ? "" : JSON.stringify(detail),
  ];
  cells.forEach((text, i) => {
    const td = document.createElement("td");
    if (i === 1) {
      const badge = document.createElement("span");
      badge.className = "op op-" + op; badge.textContent = op; td.append(badge);
    } else { td.textContent = text; }
    if (i === 4) td.className = "detail";
    tr.append(td);
  });
  tr.className = "fresh"; tr.dataset.op = op;
  tr.dataset.text = (op + " " + ns + " " + JSON.stringify(change)).toLowerCase();
  tr.hidden = !matches(tr);
  rows.prepend(tr);
  while (rows.children.length > MAX_ROWS) rows.lastElementChild.remove();
  $("empty").hidden = true;
}

function counts() {
  $("counts").textContent = received + " events" + (waiting.length ? " · " + waiting.length + " waiting (paused)" : "");
  $("position").textContent = lastId ? "last id " + lastId.slice(0, 18) + "…" : "no position yet";
}

function onChange(message) {
  received += 1; lastId = message.lastEventId;
  const change = JSON.parse(message.data);
  const op = message.type === "message" ? (change.operationType || "change") : message.type;
  if (paused) { waiting.push([op, change]); if (waiting.length > 5000) waiting.shift(); }
  else render(op, change);
  counts();
}

const OPERATIONS = ["insert", "update", "replace", "delete", "drop", "rename", "dropDatabase", "invalidate",
                    "create", "createIndexes", "dropIndexes", "message"];

function watchUrl(resume) {
  const query = new URLSearchParams();
  for (const name of ["db", "collection"]) { const v = $(name).value.trim(); if (v) query.set(name, v); }
  if (resume && lastId) query.set("resume_after", lastId);
  if (token) query.set("access_token", token);
  else query.set("page_key", pageKey);
  return "watch?" + query.toString();
}

// EventSource gives up on an HTTP error without saying which: ask the server with fetch.
function explainRefusal() {
  const probe = new AbortController();
  fetch(watchUrl(true), {signal: probe.signal}).then((r) => {
    if (r.ok) { probe.abort(); setTimeout(() => connect(true), 2000); return; }
    if (r.status === 401) {
      const given = prompt("This server needs a bearer token:");
      if (given) { token = given; sessionStorage.setItem("rxcs-token", token); connect(true); }
      return;
    }
    if (r.status === 503) setTimeout(() => connect(true), 5000);
    r.json().then((b) => showBanner(b.error + ": " + b.message)).catch(() => showBanner("HTTP " + r.status));
  }).catch(() => { setStatus("connecting", "server unreachable, retrying"); setTimeout(() => connect(true), 5000); });
}

function connect(resume) {
  if (source) source.close();
  setStatus("connecting", "connecting");
  source = new EventSource(watchUrl(resume));
  source.onopen = () => { setStatus("live", "live"); showBanner(""); };
  for (const op of OPERATIONS) source.addEventListener(op, onChange);
  source.addEventListener("error", (event) => {
    if (event.data !== undefined) {  // the server's own error event, not a lost connection
      const error = JSON.parse(event.data);
      showBanner(error.code + ": " + error.message);
      if (!error.resumable) { source.close(); setStatus("ended", "ended (" + error.code + ")"); }
      return;
    }
    if (source.readyState === EventSource.CLOSED) { setStatus("ended", "refused"); explainRefusal(); }
    else { setStatus("connecting", "reconnecting"); }
  });
}

$("scope").addEventListener("submit", (event) => {
  event.preventDefault(); rows.replaceChildren(); lastId = ""; connect(false);
});
$("filter").addEventListener("input", () => { for (const row of rows.children) row.hidden = !matches(row); });
$("pause").addEventListener("click", () => {
  paused = !paused;
  $("pause").setAttribute("aria-pressed", String(paused));
  $("pause").textContent = paused ? "Resume" : "Pause";
  if (!paused) { for (const [op, change] of waiting) render(op, change); waiting = []; }
  counts();
});
$("clear").addEventListener("click", () => { rows.replaceChildren(); $("empty").hidden = false; });
connect(false);
