// sapd directory page: live updates over /v1/events. The page works without this
// script; it only keeps the table current. Rows are built with DOM calls and
// textContent (never innerHTML): names come from the network.
"use strict";
(function () {
  const table = document.getElementById("sessions");
  if (!table || !window.EventSource) return;
  const tbody = table.tBodies[0];
  const query = table.dataset.query || "";
  const live = document.getElementById("live");
  const shown = document.getElementById("shown");
  const MIN_GAP = 250; // ms between page fetches, however many events arrive
  let inFlight = false, again = false, lastFetch = 0, timer = null;

  function ago(first, now) {
    const s = Math.max(0, Math.floor(now - first));
    if (s < 120) return s + "s";
    if (s < 7200) return Math.floor(s / 60) + "m";
    if (s < 172800) return Math.floor(s / 3600) + "h";
    return Math.floor(s / 86400) + "d";
  }
  function stateOf(s) { return s.local ? "local" : (s.stale ? "stale" : "live"); }
  function heardVia(s) {
    return (s.heard_via || []).map(function (v) {
      let t = String(v.via || "?");
      if (v.group) t += " " + v.group;
      if (v.interface) t += " on " + v.interface;
      return t;
    }).join("; ") || "-";
  }
  function mediaText(s) {
    const media = (s.media || []).join(" "), codecs = (s.codecs || []).join(", ");
    return media && codecs ? media + " \u00b7 " + codecs : (media || codecs || "-");
  }
  function sourceText(s) {
    return s.origin_address === s.source ? String(s.source)
      : s.origin_address + " via " + s.source;
  }
  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }
  function badge(td, text, cls) {
    const b = document.createElement("span");
    b.className = "badge" + (cls ? " " + cls : "");
    b.textContent = text;
    td.appendChild(b);
  }
  function buildRow(s, now) {
    const tr = document.createElement("tr");
    tr.id = "s-" + s.id;
    tr.dataset.id = s.id;
    const name = document.createElement("td");
    const a = document.createElement("a");
    a.href = "/sessions/" + encodeURIComponent(s.id);
    a.textContent = s.name;
    name.appendChild(a);
    if (s.conflict) badge(name, "conflict", "conflict");
    if (s.redundant) badge(name, "2022-7");
    if (s.verified) badge(name, "signed");
    tr.appendChild(name);
    cell(tr, (s.groups || []).join(", ") || "-", "mono");
    cell(tr, mediaText(s));
    cell(tr, sourceText(s), "mono");
    cell(tr, s.scope || "-");
    cell(tr, s.site || "-");
    cell(tr, heardVia(s));
    cell(tr, ago(s.first_seen, now), "num").dataset.firstSeen = s.first_seen;
    const state = stateOf(s);
    cell(tr, state, "state-" + state);
    tr.dataset.sig = JSON.stringify([s.name, s.version, s.groups, s.media, s.codecs,
      s.source, s.origin_address, s.scope, s.site, s.heard_via, s.local, s.stale,
      s.conflict, s.redundant]);
    return tr;
  }
  function render(result) {
    const now = Date.now() / 1000;
    const old = new Map();
    for (const tr of Array.from(tbody.rows)) old.set(tr.dataset.id, tr);
    const wanted = result.sessions.map(function (s) {
      const fresh = buildRow(s, now);
      const tr = old.get(s.id);
      if (tr && tr.dataset.sig === fresh.dataset.sig) { old.delete(s.id); return tr; }
      return fresh;  // new or changed; a changed row's old element leaves below
    });
    for (const tr of old.values()) tr.remove();
    let at = tbody.firstElementChild;
    for (const tr of wanted) {
      if (tr === at) at = at.nextElementSibling;
      else tbody.insertBefore(tr, at);
    }
    const total = result.total + (result.total_exact ? "" : "+");
    const n = result.sessions.length;
    if (shown) shown.textContent = n ? (result.offset + 1) + "\u2013" + (result.offset + n) +
      " of " + total : "none of " + total;
    const empty = document.getElementById("empty");
    if (empty) empty.hidden = n > 0;
  }
  function refresh() {
    timer = null;
    if (inFlight) { again = true; return; }
    inFlight = true;
    lastFetch = Date.now();
    fetch("/v1/sessions?" + query, { headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (result) { if (result) render(result); })
      .catch(function () {})
      .finally(function () {
        inFlight = false;
        if (again) { again = false; schedule(); }
      });
  }
  function schedule() {
    if (timer !== null) return;
    timer = setTimeout(refresh, Math.max(0, lastFetch + MIN_GAP - Date.now()));
  }
  function gone(e) {
    try {
      const tr = document.getElementById("s-" + JSON.parse(e.data).id);
      if (tr) tr.remove();
    } catch (err) { /* a malformed event changes nothing */ }
    schedule();
  }
  const source = new EventSource("/v1/events");
  source.addEventListener("open", function () {
    if (live) { live.hidden = false; live.className = "on"; live.textContent = "live"; }
    schedule();  // whatever changed between the page's rendering and this stream
  });
  source.addEventListener("error", function () {
    if (live) { live.className = ""; live.textContent = "reconnecting\u2026"; }
  });
  source.addEventListener("new", schedule);
  source.addEventListener("changed", schedule);
  source.addEventListener("deleted", gone);
  source.addEventListener("expired", gone);
  source.addEventListener("resync", schedule);
  setInterval(function () {  // ages move on between events
    const now = Date.now() / 1000;
    for (const td of tbody.querySelectorAll("td[data-first-seen]")) {
      td.textContent = ago(Number(td.dataset.firstSeen), now);
    }
  }, 10000);
})();
