// The containers list: polls GET /api/containers every 3 s (1 s while an
// action is under way), paused while the tab is hidden.  Rows are keyed by
// container id and replaced only when what they show changed, so nothing
// flickers and an open menu stays open.  A clone is listed right under its
// source (indented); sources keep the API's order (newest first).
"use strict";
(function () {
  const { api, el, containerState, stateBadge, STATES, allowedActions, containerAction, poller, timeAgo, ago, envTag } = window.App;
  const POLL_MS = 3000, BUSY_POLL_MS = 1000, BUSY_MAX_MS = 90000;
  const tbody = document.querySelector("#containers-table tbody");
  const rows = new Map(); // id -> {tr, key}
  const busy = new Map(); // id -> {action, status, lifecycle, since}: asked for, not shown yet
  let containers = [];
  let lastOk = null;
  let loaded = false;

  const progressStates = new Set(["pending", "creating", "error"]);
  const detailUrl = (ct) => `/containers/${encodeURIComponent(ct.id)}`;

  // What the row, the summary and the filter show: the action asked for counts.
  const shown = (ct) => containerState(ct, busy.has(ct.id) ? busy.get(ct.id).action : null);

  // --- one row ------------------------------------------------------------------------------
  // The line under the badge (none while an action asked for is the news).
  function statusSub(ct, st) {
    if (busy.has(ct.id)) return null;
    if (ct.lifecycle === "creating" && ct.current_phase) return ct.current_phase;
    if (ct.lifecycle === "pending") return "queued";
    if (ct.lifecycle === "error") {
      const phase = ct.error_details && ct.error_details.phase;
      return phase ? `${phase} failed` : "failed";
    }
    return st.state === "unknown" ? "node unreachable" : null;
  }

  function statusCell(ct) {
    const st = shown(ct);
    const sub = statusSub(ct, st);
    return el("td", { class: "status" }, stateBadge(st), sub && el("span", { class: "sub" }, sub));
  }

  // source: the listed container a clone is shown under (depth: how far in), or null
  function nameCell(ct, depth, source) {
    const inProgress = progressStates.has(ct.lifecycle);
    const href = inProgress ? `${detailUrl(ct)}/progress` : detailUrl(ct);
    return el("td", { class: `hostname${depth ? ` clone depth-${Math.min(depth, 4)}` : ""}` },
      depth ? el("span", { class: "clone-mark", "aria-hidden": "true" }, "↳") : null,
      source ? el("span", { class: "visually-hidden" }, `clone of ${source.hostname}: `) : null,
      el("a", { class: "name", href, title: inProgress ? "Live progress" : "Details" }, ct.hostname),
      ct.environment ? envTag(ct.environment) : null,
      el("span", { class: "sub mono" }, ct.id.slice(0, 8),
        inProgress && el("span", {}, " · ", el("a", { href: detailUrl(ct), class: "details-link" }, "details"))));
  }

  function actionButton(ct, action, cls) {
    const spec = window.App.ACTIONS[action];
    return el("button", {
      type: "button", class: `small ${cls || ""}`.trim(), "data-action": action,
      onclick: (ev) => { closeMenus(); run(ct.id, action, ev.currentTarget); },
    }, spec.label);
  }

  // Up to two everyday actions as buttons; the rest in a "More" menu.
  function actionsCell(ct) {
    const allowed = busy.has(ct.id) ? [] : allowedActions(ct);
    const inline = ["retry", "start", "stop"].filter((a) => allowed.includes(a)).slice(0, 2);
    const rest = allowed.filter((a) => !inline.includes(a));
    const group = el("div", { class: "button-group" }, inline.map((a) => actionButton(ct, a)));
    if (rest.length) {
      group.append(el("details", { class: "menu" },
        el("summary", { class: "button small ghost", "aria-label": `More actions for ${ct.hostname}`, title: "More actions" }, "•••"),
        el("div", { class: "menu-items", role: "menu" },
          el("a", { href: detailUrl(ct), role: "menuitem" }, "Details"),
          rest.map((a) => {
            const b = actionButton(ct, a, a === "destroy" ? "menu-danger" : "");
            b.setAttribute("role", "menuitem");
            return b;
          }))));
    }
    return el("td", { class: "actions" }, group);
  }

  function rowKey(ct, depth, source) {
    return JSON.stringify([ct.hostname, ct.lifecycle, ct.current_phase, ct.node, ct.template, ct.vmid, ct.owns_container, ct.ip,
      ct.pve && ct.pve.status, ct.pve_error, ct.error, busy.get(ct.id) && busy.get(ct.id).action, ct.environment,
      depth, source && source.hostname]);
  }

  function renderRow(ct, depth, source) {
    return el("tr", { "data-id": ct.id, "data-hostname": ct.hostname, class: depth ? "clone-row" : null,
      "data-source": source ? source.id : null, "data-depth": String(depth) },
      statusCell(ct),
      nameCell(ct, depth, source),
      el("td", { class: "col-node" }, ct.node),
      el("td", { class: "col-template" }, el("a", { href: `/templates/${encodeURIComponent(ct.template)}`, class: "plain" }, ct.template)),
      el("td", { class: "num mono col-vmid" }, !ct.owns_container && ["ready", "error"].includes(ct.lifecycle)
        ? el("span", { class: "muted no-container", title: ct.pve_error || ct.error || "" }, "no container")
        : ct.vmid === null ? "–" : String(ct.vmid)),
      el("td", { class: "mono ip" }, ct.ip || el("span", { class: "muted" }, "–")),
      el("td", { class: "nowrap muted age col-age" }, timeAgo(ct.created_at)),
      actionsCell(ct));
  }

  // --- the table ----------------------------------------------------------------------------
  function matches(ct) {
    const q = document.getElementById("filter").value.trim().toLowerCase();
    const want = document.getElementById("status-filter").value;
    if (want) {
      const s = shown(ct).state;
      if (want === "creating" ? !["creating", "pending"].includes(s) : s !== want) return false;
    }
    if (!q) return true;
    return [ct.hostname, ct.ip, ct.template, ct.node, ct.id, ct.vmid && String(ct.vmid), ct.environment]
      .some((v) => v && String(v).toLowerCase().includes(q));
  }

  function summary() {
    if (!containers.length) return "No containers.";
    const counts = {};
    for (const ct of containers) {
      const s = shown(ct).state;
      counts[s] = (counts[s] || 0) + 1;
    }
    const order = [...STATES, ...Object.keys(counts).filter((s) => !STATES.includes(s))];
    const parts = order.filter((s) => counts[s]).map((s) => `${counts[s]} ${s}`);
    const total = containers.length;
    return `${total} container${total === 1 ? "" : "s"} · ${parts.join(" · ")}`;
  }

  // The rows in the order shown: every container the filter keeps whose
  // source is not kept too (not listed, destroyed, or filtered out) in the
  // API's order, each followed by its clones (and theirs), newest first.
  // Returns [{ct, depth, source}] (source: the row a clone is shown under).
  function grouped(kept) {
    const byId = new Map(containers.map((c) => [c.id, c]));
    const children = new Map();
    const roots = [];
    for (const c of containers) {
      const parent = c.source_id && c.source_id !== c.id && kept.has(c.id) && kept.has(c.source_id) ? c.source_id : null;
      if (parent) {
        if (!children.has(parent)) children.set(parent, []);
        children.get(parent).push(c);
      } else {
        roots.push(c);
      }
    }
    const out = [];
    const placed = new Set();
    const visit = (c, depth) => {
      if (placed.has(c.id)) return;
      placed.add(c.id);
      out.push({ ct: c, depth, source: depth ? byId.get(c.source_id) : null });
      for (const child of children.get(c.id) || []) visit(child, depth + 1);
    };
    roots.forEach((c) => visit(c, 0));
    containers.forEach((c) => visit(c, 0));  // a loop of sources (never made by the provisioner): listed all the same
    return out;
  }

  function render() {
    const seen = new Set();
    const kept = new Set(containers.filter(matches).map((c) => c.id));
    let previous = null;
    for (const { ct, depth, source } of grouped(kept)) {
      seen.add(ct.id);
      const key = rowKey(ct, depth, source);
      let row = rows.get(ct.id);
      if (!row || row.key !== key) {
        const tr = renderRow(ct, depth, source);
        if (row) row.tr.replaceWith(tr);
        row = { tr, key };
        rows.set(ct.id, row);
      }
      row.tr.hidden = !kept.has(ct.id);
      // keep the order shown without touching rows already in place
      const want = previous ? previous.nextSibling : tbody.firstChild;
      if (want !== row.tr) tbody.insertBefore(row.tr, want);
      previous = row.tr;
    }
    for (const [id, row] of rows) {
      if (!seen.has(id)) { row.tr.remove(); rows.delete(id); busy.delete(id); }
    }
    document.getElementById("loading").hidden = true;
    document.getElementById("list").hidden = containers.length === 0;
    document.getElementById("empty").hidden = containers.length !== 0;
    document.getElementById("no-match").hidden = !containers.length || kept.size > 0;
    document.getElementById("summary").textContent = summary();
  }

  // An action is "busy" until the container's state or lifecycle moves on.
  function settleBusy() {
    const now = Date.now();
    for (const ct of containers) {
      const b = busy.get(ct.id);
      if (!b) continue;
      const status = containerState(ct).state;
      if (status !== b.status || ct.lifecycle !== b.lifecycle || now - b.since > BUSY_MAX_MS ||
          (b.action === "reboot" && now - b.since > 4000 && status === "running")) {
        busy.delete(ct.id);
      }
    }
  }

  async function refresh() {
    try {
      const data = await api("GET", "/api/containers");
      containers = data.containers;
      lastOk = new Date().toISOString();
      document.getElementById("load-error").hidden = true;
      loaded = true;
    } catch (e) {
      const box = document.getElementById("load-error");
      box.textContent = `Cannot refresh the list: ${e.message}. Retrying…`;
      box.hidden = false;
      if (!loaded) document.getElementById("loading").hidden = true;
      liveState();
      return;
    }
    settleBusy();
    render();
    liveState();
  }

  function liveState() {
    const node = document.getElementById("live-state");
    node.replaceChildren(el("span", { class: `dot ${document.getElementById("load-error").hidden ? "dot-running" : "dot-error"}` }),
      lastOk ? ` Live · updated ${ago(lastOk)}` : " Connecting…");
  }

  async function run(id, action, button) {
    const ct = containers.find((c) => c.id === id);
    if (!ct) return;
    if (button) button.setAttribute("aria-busy", "true");
    const answer = await containerAction(ct, action);
    if (button) button.removeAttribute("aria-busy");
    if (!answer) return;
    busy.set(id, { action, status: containerState(ct).state, lifecycle: ct.lifecycle, since: Date.now() });
    render();
    poll.now();
  }

  // --- menus --------------------------------------------------------------------------------
  // The table scrolls sideways on narrow screens, which would clip a dropdown:
  // an open menu is placed with fixed coordinates under its button instead.
  function closeMenus(except) {
    document.querySelectorAll("details.menu[open]").forEach((d) => { if (d !== except) d.open = false; });
  }
  tbody.addEventListener("toggle", (ev) => {
    const d = ev.target;
    if (!(d instanceof HTMLDetailsElement) || !d.open) return;
    closeMenus(d);
    const r = d.querySelector("summary").getBoundingClientRect();
    const items = d.querySelector(".menu-items");
    items.style.top = `${r.bottom + 4}px`;
    items.style.right = `${Math.max(8, window.innerWidth - r.right)}px`;
  }, true);
  document.addEventListener("click", (ev) => { if (!ev.target.closest("details.menu")) closeMenus(); });
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") closeMenus(); });
  window.addEventListener("scroll", () => closeMenus(), { passive: true });
  window.addEventListener("resize", () => closeMenus());

  // --- wiring -------------------------------------------------------------------------------
  document.getElementById("filter").addEventListener("input", render);
  document.getElementById("status-filter").addEventListener("change", render);
  // ages and "updated ... ago" move on between polls
  setInterval(() => {
    tbody.querySelectorAll("time[datetime]").forEach((t) => { t.textContent = ago(t.getAttribute("datetime")); });
    if (lastOk) liveState();
  }, 1000);

  const poll = poller(refresh, () => (busy.size ? BUSY_POLL_MS : POLL_MS));
})();
