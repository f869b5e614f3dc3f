// pysyncer dashboard: plain JavaScript, no build step, no third-party code.
//
// Data comes from the admin API of the daemon serving this page. The live feed is
// GET /v1/sync/stream (server-sent events) read with fetch() and a ReadableStream, so the
// admin token travels in the Authorization header (EventSource cannot set headers, and a
// token in the URL would end up in logs). The token is asked once and kept in this tab's
// sessionStorage. Every value from the daemon is written with textContent, never as HTML.
"use strict";

(() => {
  const TOKEN_KEY = "pysyncer-admin-token";
  const HISTORY = 120; // lag points kept per data center (one per update: about 2 minutes)
  const RETRY_MS = 2000;
  const MAX_DIFF_ROWS = 500;
  const $ = (id) => document.getElementById(id);

  const state = {
    snap: null,
    lag: {}, // dc -> [revisions behind, ...]
    slotsKey: "",
    poolKey: "",
    renderQueued: false,
    diff: null,
    dryRun: null,
  };
  // What the page measured, for docs/dashboard.md (read by the browser test).
  const stats = (window.pysyncerStats = {
    startedAt: performance.now(),
    firstRenderMs: null,
    firstRenderAt: null,
    updates: 0,
    bytes: 0,
    frameBytes: [],
    latenciesMs: [],
  });

  // -- the admin API -------------------------------------------------------------------

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  function authHeaders() {
    const value = token();
    return value ? { Authorization: "Bearer " + value } : {};
  }

  class AuthError extends Error {}

  async function getJSON(path) {
    const response = await fetch(path, { headers: authHeaders(), cache: "no-store" });
    const body = await response.json().catch(() => ({}));
    if (response.status === 401) throw new AuthError(body.error || "the admin token is needed");
    if (!response.ok) throw new Error(body.error || response.status + " " + response.statusText);
    return body;
  }

  function askToken(message) {
    $("main").hidden = true;
    $("auth").hidden = false;
    $("auth-message").textContent = message;
    setConn("needs token", "down");
    $("auth-token").focus();
  }

  $("auth-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("auth-token").value.trim());
    $("auth-token").value = "";
    connect();
  });

  function setConn(text, kind) {
    const pill = $("conn");
    pill.textContent = text;
    pill.className = "pill " + kind;
  }

  // -- the event stream ------------------------------------------------------------------

  let controller = null;

  async function connect() {
    if (controller) controller.abort();
    controller = new AbortController();
    const signal = controller.signal;
    let response;
    try {
      response = await fetch("/v1/sync/stream", {
        headers: { ...authHeaders(), Accept: "text/event-stream" },
        cache: "no-store",
        signal,
      });
    } catch (err) {
      if (!signal.aborted) offline("offline: " + err.message);
      return;
    }
    if (response.status === 401) {
      const body = await response.json().catch(() => ({}));
      const why = body.error || "the admin token is needed";
      askToken(token() ? "The token was refused: " + why : "This daemon's admin API needs its token (" + why + ").");
      return;
    }
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      offline("stream refused: " + (body.error || response.status));
      return;
    }
    $("auth").hidden = true;
    $("main").hidden = false;
    setConn("live", "live");
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        stats.bytes += value.byteLength;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          onFrame(frame);
        }
      }
    } catch (err) {
      if (signal.aborted) return;
    }
    offline("the daemon closed the stream");
  }

  function offline(why) {
    setConn("offline", "down");
    $("updated").textContent = why + "; retrying";
    setTimeout(connect, RETRY_MS);
  }

  function onFrame(frame) {
    let event = "message";
    let data = "";
    for (const line of frame.split("\n")) {
      if (line.startsWith(":")) continue; // keepalive comment
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data += line.slice(5).trim();
    }
    if (!data) return;
    const payload = JSON.parse(data);
    if (event === "snapshot") state.snap = payload;
    else if (event === "delta") state.snap = mergePatch(state.snap, payload);
    else return;
    stats.updates += 1;
    stats.frameBytes.push(frame.length + 2);
    if (payload.at) stats.latenciesMs.push(Date.now() - payload.at * 1000);
    rememberLag();
    scheduleRender();
  }

  // RFC 7386: objects merge key by key, null removes, anything else replaces.
  function mergePatch(target, patch) {
    if (patch === null || typeof patch !== "object" || Array.isArray(patch)) return patch;
    const out = target && typeof target === "object" && !Array.isArray(target) ? { ...target } : {};
    for (const [key, value] of Object.entries(patch)) {
      if (value === null) delete out[key];
      else out[key] = mergePatch(out[key], value);
    }
    return out;
  }

  function rememberLag() {
    const remote = (state.snap.sync && state.snap.sync.remote) || {};
    for (const [dc, link] of Object.entries(remote)) {
      const points = state.lag[dc] || (state.lag[dc] = []);
      points.push(link.lag);
      if (points.length > HISTORY) points.shift();
    }
  }

  function scheduleRender() {
    if (state.renderQueued) return;
    state.renderQueued = true;
    requestAnimationFrame(() => {
      state.renderQueued = false;
      render();
      if (stats.firstRenderMs === null) {
        stats.firstRenderMs = performance.now() - stats.startedAt; // script start to first render
        stats.firstRenderAt = performance.now(); // navigation start to first render
      }
    });
  }

  // -- helpers -----------------------------------------------------------------------------

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function row(cells) {
    const tr = document.createElement("tr");
    for (const cell of cells) {
      if (cell instanceof Node) {
        const td = document.createElement("td");
        td.appendChild(cell);
        tr.appendChild(td);
      } else tr.appendChild(el("td", cell));
    }
    return tr;
  }

  function pill(text, kind) {
    return el("span", text, "pill " + kind);
  }

  function fmt(n) {
    return Number(n || 0).toLocaleString("en");
  }

  function seconds(s) {
    if (s < 0) return "?";
    if (s < 1) return (s * 1000).toFixed(0) + " ms";
    if (s < 120) return s.toFixed(1) + " s";
    return Math.round(s / 60) + " min";
  }

  function median(histogram) {
    if (!histogram || !histogram.count) return "-";
    let bound = "inf";
    for (const [upper, count] of Object.entries(histogram.buckets)) {
      if (count >= histogram.count / 2) {
        bound = upper;
        break;
      }
    }
    return bound === "inf" ? "> 10 s" : "≤ " + seconds(Number(bound));
  }

  function topError(errors) {
    const entries = Object.entries(errors || {});
    if (!entries.length) return "";
    entries.sort((a, b) => b[1] - a[1]);
    return entries[0][0] + " ×" + entries[0][1];
  }

  function colour(name) {
    if (!name) return "#cbd5e0";
    let hash = 0;
    for (const ch of name) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
    return "hsl(" + (hash % 360) + ", 60%, 48%)";
  }

  // -- panels ----------------------------------------------------------------------------

  function render() {
    const snap = state.snap;
    if (!snap) return;
    const health = snap.health || {};
    $("title-dc").textContent = "· " + (health.dc || "");
    $("title-node").textContent = (health.node || "") + " · " + (health.version || "") + " (" + (health.implementation || "") + ")";
    $("updated").textContent = "updated " + new Date((snap.at || 0) * 1000).toLocaleTimeString();
    renderAlarms(snap);
    renderProgress(snap.sync);
    renderLinks(snap.sync);
    renderPool(snap);
    renderDc(snap);
  }

  function alarms(snap) {
    const out = [];
    const sync = snap.sync;
    const health = snap.health || {};
    if (health.insecure) out.push(["warn", "insecure mode: an exposed address runs without gossip encryption or TLS (--insecure)"]);
    for (const reason of (snap.ready && snap.ready.reasons) || []) out.push(["bad", "not ready: " + reason]);
    if (sync) {
      const identity = sync.identity || {};
      for (const [dc, claims] of Object.entries(identity.claimants || {})) {
        for (const [node, group] of Object.entries(claims)) {
          out.push(["bad", "identity conflict: " + node + " claims data center " + dc + " from group " + group + " (not followed)"]);
        }
      }
      if (identity.conflicts && !Object.keys(identity.claimants || {}).length) {
        out.push(["warn", "identity conflicts seen: " + identity.conflicts]);
      }
      const store = sync.store || {};
      if (store.status && store.status !== "ok") {
        out.push(["bad", "store degraded" + (store.endpoint ? " (" + store.endpoint + ")" : "") + ": " + (store.last_error || "writes queue in memory") + ", " + fmt(store.queued) + " queued"]);
      }
      for (const line of (sync.filters && sync.filters.unused_rules) || []) out.push(["warn", "rule matches nothing: " + line]);
      for (const [dc, link] of Object.entries(sync.remote || {})) {
        if (link.state === "gone") out.push(["warn", "data center " + dc + " is gone: " + fmt(link.copies) + " copies held in grace"]);
        else if (link.state === "backoff") out.push(["warn", "link to " + dc + " is down (backoff): " + topError(link.errors)]);
      }
    }
    for (const task of Object.values(snap.tasks || {})) {
      if (task.restarts > 0) out.push([task.running ? "warn" : "bad", "task " + task.name + " restarted " + task.restarts + "×" + (task.last_error ? ": " + task.last_error : "")]);
    }
    const failed = Object.values(snap.members || {}).filter((m) => m.status === "failed");
    if (failed.length) out.push(["bad", failed.length + " member(s) failed: " + failed.map((m) => m.name).join(", ")]);
    return out;
  }

  function renderAlarms(snap) {
    const list = $("alarms");
    list.replaceChildren();
    const found = alarms(snap);
    if (!found.length) list.appendChild(el("li", "no alarms", "none"));
    for (const [kind, text] of found) list.appendChild(el("li", text, kind === "warn" ? "warn" : ""));
  }

  function renderProgress(sync) {
    const box = $("progress");
    box.replaceChildren();
    const remote = (sync && sync.remote) || {};
    let shown = 0;
    for (const [dc, link] of Object.entries(remote)) {
      const p = link.progress;
      if (!p || !p.kind) continue;
      shown += 1;
      const fraction = p.slots_total ? p.slots_done / p.slots_total : p.running ? 0 : 1;
      const wrap = el("div");
      wrap.dataset.dc = dc;
      const what = (p.kind === "initial" ? "initial sync" : "repair") + " from " + dc;
      const records = p.records_total ? fmt(p.records_done) + " / " + fmt(p.records_total) + " records" : fmt(p.records_done) + " records";
      const tail = p.running
        ? fmt(p.rate) + " records/s, ETA " + seconds(p.eta_seconds)
        : "done in " + seconds(Math.max(0, p.finished_at - p.started_at)) + " (" + fmt(p.rate) + " records/s)";
      wrap.appendChild(el("div", what + ": " + fmt(p.slots_done) + " / " + fmt(p.slots_total) + " slots, " + records + ", " + tail, "progress-line"));
      const bar = el("div", null, "bar" + (p.running ? "" : " done"));
      const fill = el("span");
      fill.style.width = (100 * Math.min(1, fraction)).toFixed(1) + "%";
      bar.appendChild(fill);
      wrap.appendChild(bar);
      box.appendChild(wrap);
    }
    if (!shown) box.appendChild(el("p", "no initial sync or repair yet", "hint"));
  }

  function sparkline(points) {
    const canvas = document.createElement("canvas");
    canvas.width = 120;
    canvas.height = 22;
    canvas.className = "spark";
    const ctx = canvas.getContext("2d");
    const top = Math.max(1, ...points);
    ctx.strokeStyle = "#2b6cb0";
    ctx.beginPath();
    points.forEach((value, i) => {
      const x = (i / Math.max(1, HISTORY - 1)) * canvas.width;
      const y = canvas.height - 2 - (value / top) * (canvas.height - 4);
      if (i === 0) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    });
    ctx.stroke();
    return canvas;
  }

  function renderLinks(sync) {
    const body = $("links").tBodies[0];
    body.replaceChildren();
    const remote = (sync && sync.remote) || {};
    for (const [dc, link] of Object.entries(remote)) {
      const tr = row([
        dc,
        pill(link.state, "state-" + link.state),
        link.syncer || "-",
        fmt(link.applied_revision) + " / " + fmt(link.remote_revision),
        fmt(link.lag),
        sparkline(state.lag[dc] || []),
        median(link.propagation),
        fmt(link.copies),
        fmt(link.repairs),
        topError(link.errors),
      ]);
      tr.dataset.dc = dc;
      tr.cells[7].className = "num copies";
      body.appendChild(tr);
    }
    if (!Object.keys(remote).length) {
      body.appendChild(row([sync ? "no remote data center yet" : "no sync engine running"]));
    }
  }

  function renderPool(snap) {
    const members = Object.values(snap.members || {});
    const filter = $("pool-filter").value.trim().toLowerCase();
    // a few hundred rows: rebuilt only when a member, the filter or this node's score moved
    const key = filter + "\u0000" + (snap.health || {}).health_score + JSON.stringify(snap.members);
    if (key === state.poolKey) return;
    state.poolKey = key;
    const byDc = {};
    for (const m of members) {
      if (filter && !(m.name + " " + (m.tags.dc || "") + " " + m.status).toLowerCase().includes(filter)) continue;
      (byDc[m.tags.dc || "(no data center)"] ||= []).push(m);
    }
    $("pool-count").textContent = members.length + " members, " + members.filter((m) => m.status === "alive").length + " alive";
    const table = el("table");
    const head = table.createTHead().insertRow();
    for (const name of ["member", "address", "state", "role", "version", "health score"]) head.appendChild(el("th", name));
    const body = table.createTBody();
    const self = snap.health || {};
    for (const dc of Object.keys(byDc).sort()) {
      const heading = row([dc + " (" + byDc[dc].length + ")"]);
      heading.className = "dc-heading";
      heading.cells[0].colSpan = 6;
      body.appendChild(heading);
      for (const m of byDc[dc].sort((a, b) => a.name.localeCompare(b.name))) {
        const role = m.tags.role !== "pysyncer" ? "-" : m.tags.export === "0" ? "follower" : "exporter";
        const score = m.name === self.node ? String(self.health_score) : "-";
        const tr = row([m.name, m.addr + ":" + m.port, pill(m.status, "state-" + m.status), role, m.tags.version || "-", score]);
        tr.dataset.member = m.name;
        tr.dataset.status = m.status;
        body.appendChild(tr);
      }
    }
    $("pool").replaceChildren(table);
  }

  function renderDc(snap) {
    const sync = snap.sync;
    const facts = $("dc-facts");
    facts.replaceChildren();
    const add = (name, value) => {
      facts.appendChild(el("dt", name));
      const dd = el("dd");
      if (value instanceof Node) dd.appendChild(value);
      else dd.textContent = String(value);
      facts.appendChild(dd);
    };
    if (!sync) {
      add("sync engine", "not running");
      return;
    }
    const own = sync.ownership || {};
    const store = sync.store || {};
    add("registry", sync.registry || "-");
    add("export revision", fmt(sync.revision) + (sync.epoch ? " (epoch " + sync.epoch.slice(0, 8) + ")" : ""));
    add("instances exported", fmt(sync.exported));
    add("slot table", "epoch " + (own.epoch ?? "-") + ", leader " + (own.leader || "-"));
    add("slots owned here", fmt(own.slots_owned));
    add("pending playbacks", fmt(own.slots_pending) + " slots (" + fmt(own.playbacks) + " playbacks done)");
    add("store", pill(store.status || "ok", "state-" + (store.status || "ok")));
    if (store.endpoint) add("store queue", fmt(store.queued) + " queued, " + fmt(store.dropped) + " dropped");
    const imp = sync.importer || {};
    add("copies registered", fmt(imp.registered) + " (" + fmt(imp.renewals) + " renewals, " + fmt(imp.lost) + " lost)");
    drawSlots(snap.slots || []);
  }

  function drawSlots(runs) {
    const key = JSON.stringify(runs);
    if (key === state.slotsKey) return;
    state.slotsKey = key;
    const canvas = $("slots");
    const ctx = canvas.getContext("2d");
    const side = 128; // 128 x 128 = 16,384 slots, 2 x 2 pixels each
    const counts = {};
    for (const [first, count, owner, pending] of runs) {
      ctx.fillStyle = colour(owner);
      counts[owner || "(unassigned)"] = (counts[owner || "(unassigned)"] || 0) + count;
      for (let slot = first; slot < first + count; slot++) {
        const x = (slot % side) * 2;
        const y = Math.floor(slot / side) * 2;
        ctx.fillRect(x, y, 2, 2);
        if (pending) {
          ctx.fillStyle = "rgba(0,0,0,0.45)";
          ctx.fillRect(x, y, 1, 1);
          ctx.fillStyle = colour(owner);
        }
      }
    }
    const legend = $("slot-legend");
    legend.replaceChildren();
    for (const [owner, count] of Object.entries(counts)) {
      const item = el("li");
      const swatch = el("i");
      swatch.style.background = colour(owner === "(unassigned)" ? "" : owner);
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(owner + ": " + fmt(count) + " slots"));
      legend.appendChild(item);
    }
  }

  // -- diff across data centers ------------------------------------------------------------

  $("diff-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const service = $("diff-service").value.trim();
    $("diff-summary").textContent = "asking every data center…";
    try {
      state.diff = await getJSON("/v1/sync/diff?service=" + encodeURIComponent(service));
      renderDiff();
    } catch (err) {
      if (err instanceof AuthError) askToken(err.message);
      $("diff-summary").textContent = "diff failed: " + err.message;
      $("diff-summary").className = "error";
    }
  });
  $("diff-only").addEventListener("change", () => state.diff && renderDiff());

  function renderDiff() {
    const diff = state.diff;
    const registries = Object.keys(diff.registries).sort();
    const summary = $("diff-summary");
    summary.className = "";
    const problems = diff.discrepancies.filter((d) => !["filtered_out", "origin_gone"].includes(d.kind));
    summary.textContent =
      (diff.service ? "service " + diff.service : "the whole pool") + ": " +
      registries.map((dc) => {
        const r = diff.registries[dc];
        return r.reached ? dc + " " + r.originals + " originals + " + r.copies + " copies" + (r.truncated ? " (cut at " + diff.limit + ")" : "") : dc + " unreachable";
      }).join(", ") +
      " — " + (problems.length ? problems.length + " discrepancies" : "no discrepancy") +
      " (" + seconds(diff.elapsed_seconds) + ")";
    summary.dataset.problems = String(problems.length);
    const list = $("diff-discrepancies");
    list.replaceChildren();
    for (const d of diff.discrepancies.slice(0, MAX_DIFF_ROWS)) {
      const item = el("li");
      item.dataset.kind = d.kind;
      item.appendChild(el("span", d.kind, "kind " + d.kind));
      item.appendChild(document.createTextNode(" " + d.registry + " · " + d.service + " · " + (d.instance_id || "") + ": " + d.explanation));
      list.appendChild(item);
    }
    // one row per original (or orphan copy), one column per registry
    const rows = new Map();
    for (const inst of diff.instances) {
      const key = inst.origin_dc + "\u0000" + inst.origin_id;
      if (!rows.has(key)) rows.set(key, { service: inst.service, origin: inst.origin_dc, id: inst.origin_id, cells: {} });
      rows.get(key).cells[inst.registry] = inst.copy ? "copy" : "original";
    }
    const flagged = new Map();
    for (const d of diff.discrepancies) flagged.set(d.origin_dc + "\u0000" + d.instance_id + "\u0000" + d.registry, d.kind);
    const table = $("diff-table");
    const head = table.tHead;
    head.replaceChildren();
    const hr = head.insertRow();
    for (const name of ["service", "origin", "instance", ...registries]) hr.appendChild(el("th", name));
    const body = table.tBodies[0];
    body.replaceChildren();
    let shown = 0;
    for (const [key, entry] of rows) {
      const kinds = registries.map((dc) => flagged.get(key + "\u0000" + dc));
      if ($("diff-only").checked && !kinds.some((k) => k)) continue;
      if (++shown > MAX_DIFF_ROWS) break;
      const tr = row([entry.service.split("/").slice(-2).join("/"), entry.origin, entry.id]);
      registries.forEach((dc, i) => {
        const kind = kinds[i];
        const held = entry.cells[dc];
        const text = kind === "copy_missing" ? "missing" : kind === "filtered_out" ? "filtered" : kind === "stale_fields" ? "stale copy" : kind === "extra_copy" ? "extra copy" : kind === "origin_gone" ? "copy (origin gone)" : held || "";
        const cls = kind === "copy_missing" || kind === "extra_copy" ? "missing" : kind === "stale_fields" ? "stale" : kind === "filtered_out" || kind === "origin_gone" ? "filtered" : held ? "held" : "";
        const td = el("td", text, cls);
        td.dataset.registry = dc;
        tr.appendChild(td);
      });
      body.appendChild(tr);
    }
  }

  // -- filter dry run -------------------------------------------------------------------------

  $("dryrun-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("dryrun-summary").textContent = "judging every service…";
    try {
      state.dryRun = await getJSON("/v1/sync/filters/dry-run");
      renderDryRun();
    } catch (err) {
      if (err instanceof AuthError) askToken(err.message);
      $("dryrun-summary").textContent = "dry run failed: " + err.message;
    }
  });
  $("dryrun-filter").addEventListener("input", () => state.dryRun && renderDryRun());

  function renderDryRun() {
    const run = state.dryRun;
    const filter = $("dryrun-filter").value.trim().toLowerCase();
    const count = (side, verdict) => run.services.filter((s) => s.side === side && s.verdict !== "no").length + "/" + run.services.filter((s) => s.side === side).length;
    $("dryrun-summary").textContent =
      "direction " + run.direction + ": exported " + count("export") + " services, imported " + count("import") +
      (Object.keys(run.unreachable).length ? "; not listed: " + Object.entries(run.unreachable).map(([dc, why]) => dc + " (" + why + ")").join(", ") : "") +
      (run.truncated ? "; some listings were cut" : "") +
      (run.unused_rules.length ? "; unused rules: " + run.unused_rules.join("; ") : "");
    const body = $("dryrun").tBodies[0];
    body.replaceChildren();
    for (const s of run.services) {
      if (filter && !(s.service + " " + s.dc + " " + s.reason).toLowerCase().includes(filter)) continue;
      body.appendChild(row([s.side, s.dc, s.service, fmt(s.instances), fmt(s.passing), pill(s.verdict, "verdict-" + s.verdict), s.reason]));
    }
  }

  $("pool-filter").addEventListener("input", scheduleRender);
  connect();
})();
