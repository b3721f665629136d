// The nodes page: one card per node (GET /api/nodes), each filled in by its
// own calls (test, resources, storages, bridges) so a slow or unreachable
// node never holds up the others; the "Add node" form posts to /api/nodes
// and shows the API's errors next to the field they name.
"use strict";
(function () {
  const { api, el, bytes, toast, confirmDialog, showFieldError, clearFieldErrors, poller } = window.App;
  const config = JSON.parse(document.getElementById("nodes-config").textContent);
  const list = document.getElementById("nodes");
  const path = (name, rest) => `/api/nodes/${encodeURIComponent(name)}${rest || ""}`;

  // --- one node -------------------------------------------------------------------------------
  function meter(used, total) {
    const pct = total ? Math.min(100, Math.round((used / total) * 100)) : 0;
    return el("div", { class: `meter ${pct > 90 ? "high" : pct > 70 ? "warn" : "ok"}`, title: `${pct}% used` },
      el("span", { style: `width:${pct}%` }));
  }

  function trust(n) {
    if (n.fingerprint) return el("span", { class: "mono small-text fingerprint", title: n.fingerprint }, `fingerprint ${n.fingerprint}`);
    if (n.ca_file) return el("span", {}, "CA file ", el("span", { class: "mono small-text" }, n.ca_file));
    if (n.insecure) return el("span", { class: "badge badge-warn" }, "not verified");
    return "system CA store";
  }

  function card(n) {
    const dl = el("dl", { class: "kv" });
    const pairs = [
      ["Address", el("span", { class: "mono" }, `${n.host}:${n.port}`)],
      ["PVE node", el("span", { class: "mono" }, n.pve_node)],
      ["Cluster", n.cluster ? el("span", { class: "mono node-cluster" }, n.cluster) : el("span", { class: "muted" }, "standalone")],
      ["Authentication", n.auth === "token" ? el("span", {}, "API token ", el("span", { class: "mono small-text" }, n.token_id)) : el("span", {}, "password of ", el("span", { class: "mono small-text" }, n.user))],
      ["TLS", trust(n)],
      ["Defaults", el("span", {}, "storage ", el("span", { class: "mono" }, n.default_storage || "local-lvm"), ", bridge ", el("span", { class: "mono" }, n.default_bridge || "vmbr0"))],
      ["Containers", String(n.containers)],
    ];
    dl.append(...pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    const status = el("span", { class: "badge badge-neutral node-status", "data-status": "checking" }, el("span", { class: "spinner" }), "checking");
    const testButton = el("button", { type: "button", class: "secondary small", "data-action": "test" }, "Test connection");
    const removeButton = config.is_admin ? el("button", { type: "button", class: "danger small", "data-action": "remove" }, "Remove") : null;
    // maintenance: placement skips the node; a drain also moves its containers away
    const drainButton = config.is_admin ? el("button", { type: "button", class: "secondary small", "data-action": n.maintenance ? "undrain" : "drain" },
      n.maintenance ? "End maintenance" : "Drain…") : null;
    const maintenance = n.maintenance ? el("span", { class: "badge badge-warn node-maintenance", title: "new containers are placed on other nodes" }, "maintenance") : null;
    const node = el("article", { class: "card node-card", "data-node": n.name },
      el("div", { class: "card-header" },
        el("div", { class: "row node-title" }, el("h2", {}, n.name), status, maintenance, el("span", { class: "muted small-text node-version" })),
        el("div", { class: "button-group" }, testButton, drainButton, removeButton)),
      el("div", { class: "node-error" }),
      el("div", { class: "node-body" },
        el("div", { class: "node-info" }, dl),
        el("div", { class: "node-live" },
          el("div", { class: "node-resources" }, el("h3", {}, "Free resources"), el("p", { class: "muted small-text" }, el("span", { class: "spinner" }), " loading…")),
          el("div", { class: "node-bridges" }, el("h3", {}, "Bridges"), el("p", { class: "muted small-text" }, el("span", { class: "spinner" }), " loading…")))),
      el("div", { class: "node-storages" }, el("h3", {}, "Storages"), el("p", { class: "muted small-text" }, el("span", { class: "spinner" }), " loading…")));
    testButton.addEventListener("click", () => test(n, node, true));
    if (removeButton) removeButton.addEventListener("click", () => remove(n, removeButton));
    if (drainButton) drainButton.addEventListener("click", () => (n.maintenance ? undrain(n, drainButton) : drain(n, drainButton)));
    return node;
  }

  function setStatus(node, kind, text, title) {
    const badge = node.querySelector(".node-status");
    badge.className = `badge badge-${kind} node-status`;
    badge.dataset.status = text;
    badge.title = title || "";
    badge.replaceChildren(text);
  }

  function showError(node, message) {
    node.querySelector(".node-error").replaceChildren(message ? el("div", { class: "notice notice-error" }, message) : "");
  }

  async function test(n, node, manual) {
    const button = node.querySelector('[data-action="test"]');
    button.setAttribute("aria-busy", "true");
    setStatus(node, "neutral", "checking");
    try {
      const r = await api("POST", path(n.name, "/test"));
      const version = r.version && r.version.version ? `PVE ${r.version.version}` : "";
      setStatus(node, r.online ? "ok" : "warn", r.online ? "online" : "offline",
        r.online ? "connected" : "connected, but PVE reports the node offline");
      node.querySelector(".node-version").textContent = version;
      showError(node, null);
      if (manual) toast(`${n.name}: connection OK${version ? ` (${version})` : ""}`, "ok");
      return true;
    } catch (e) {
      setStatus(node, "error", "unreachable", e.message);
      node.querySelector(".node-version").textContent = "";
      showError(node, `Cannot connect: ${e.message}`);
      if (manual) toast(`${n.name}: ${e.message}`, "error");
      return false;
    } finally {
      button.removeAttribute("aria-busy");
    }
  }

  async function section(node, selector, title, load) {
    const box = node.querySelector(selector);
    try {
      box.replaceChildren(el("h3", {}, title), await load());
    } catch (e) {
      box.replaceChildren(el("h3", {}, title), el("p", { class: "muted small-text" }, `unavailable: ${e.message}`));
    }
  }

  async function resources(n, node) {
    await section(node, ".node-resources", "Free resources", async () => {
      const r = await api("GET", path(n.name, "/resources"));
      const usedCpu = r.cpus - r.free_cpu;
      return el("div", { class: "resource-rows" },
        el("div", { class: "usage-row", "data-resource": "cpu" }, el("span", {}, "CPU"), meter(usedCpu, r.cpus),
          el("span", { class: "small-text" }, el("strong", {}, `${r.free_cpu.toFixed(1)}`), ` of ${r.cpus} cores free`)),
        el("div", { class: "usage-row", "data-resource": "memory" }, el("span", {}, "Memory"), meter(r.memory_used, r.memory_total),
          el("span", { class: "small-text" }, el("strong", {}, bytes(r.free_memory)), ` of ${bytes(r.memory_total)} free`)));
    });
  }

  async function bridges(n, node) {
    await section(node, ".node-bridges", "Bridges", async () => {
      const r = await api("GET", path(n.name, "/bridges"));
      if (!r.bridges.length) return el("p", { class: "muted small-text" }, "No bridge: containers cannot get a network.");
      return el("div", { class: "tags" }, r.bridges.map((b) => el("span", {
        class: `tag mono ${b.active ? "" : "inactive"}`.trim(), title: [b.active ? "active" : "inactive", b.comments].filter(Boolean).join(" · "),
      }, b.name, b.cidr ? el("span", { class: "muted" }, ` ${b.cidr}`) : null)));
    });
  }

  async function storages(n, node) {
    await section(node, ".node-storages", "Storages", async () => {
      const r = await api("GET", path(n.name, "/storages"));
      if (!r.storages.length) return el("p", { class: "muted small-text" }, "No storage.");
      return el("table", { class: "table compact storages" },
        el("thead", {}, el("tr", {}, el("th", {}, "Name"), el("th", {}, "Type"), el("th", {}, "Content"),
          el("th", {}, "Usage"), el("th", { class: "num" }, "Free"))),
        el("tbody", {}, r.storages.map((s) => el("tr", { "data-storage": s.name },
          el("td", {}, el("span", { class: "mono" }, s.name),
            n.default_storage === s.name || (!n.default_storage && s.name === "local-lvm") ? el("span", { class: "tag default-tag" }, "default") : null,
            s.active ? null : el("span", { class: "badge badge-warn" }, "inactive")),
          el("td", { class: "small-text" }, s.type + (s.shared ? " · shared" : "")),
          el("td", {}, el("div", { class: "tags" }, s.content.map((c) => el("span", { class: "tag small-tag" }, c)))),
          el("td", { class: "usage-cell" }, s.total ? meter(s.used, s.total) : el("span", { class: "muted" }, "–")),
          el("td", { class: "num small-text nowrap" }, s.total ? `${bytes(s.avail)} of ${bytes(s.total)}` : "–")))));
    });
  }

  async function remove(n, button) {
    const ok = await confirmDialog(`Remove ${n.name}?`,
      `The provisioner forgets ${n.name} (${n.host}) and its stored secret. Nothing changes on the node itself.`,
      "Remove", true);
    if (!ok) return;
    button.setAttribute("aria-busy", "true");
    try {
      await api("DELETE", path(n.name));
      toast(`${n.name} removed`, "ok");
      await load();
    } catch (e) {
      toast(`Cannot remove ${n.name}: ${e.message}`, "error");
    } finally {
      button.removeAttribute("aria-busy");
    }
  }

  async function drain(n, button) {
    const moves = n.cluster
      ? `its ${n.containers === 1 ? "container moves" : `${n.containers} containers move`} to other nodes of cluster ${n.cluster}, one at a time (each a run you can follow on its page)`
      : "it is in no cluster, so its containers stay where they are";
    const ok = await confirmDialog(`Drain ${n.name}?`,
      `New containers are placed on other nodes while ${n.name} is in maintenance, and ${moves}. A running container is shut down for its move and started on the new node.`,
      n.cluster ? "Drain" : "Maintenance only", false);
    if (!ok) return;
    button.setAttribute("aria-busy", "true");
    try {
      const r = await api("POST", path(n.name, "/drain"), n.cluster ? {} : { move: false });
      toast(`${n.name} is in maintenance${r.moving.length ? `; moving ${r.moving.map((m) => m.hostname).join(", ")}` : ""}`, "ok");
      await load();
    } catch (e) {
      toast(`Cannot drain ${n.name}: ${e.message}`, "error");
    } finally {
      button.removeAttribute("aria-busy");
    }
  }

  async function undrain(n, button) {
    button.setAttribute("aria-busy", "true");
    try {
      await api("POST", path(n.name, "/undrain"));
      toast(`${n.name} takes new containers again`, "ok");
      await load();
    } catch (e) {
      toast(`Cannot end the maintenance of ${n.name}: ${e.message}`, "error");
    } finally {
      button.removeAttribute("aria-busy");
    }
  }

  // --- cluster usage: every node in one table (GET /api/cluster) -----------------------------------
  const usageBox = document.getElementById("cluster-usage");
  const usageRows = document.getElementById("cluster-usage-rows");
  const usageState = document.getElementById("cluster-usage-state");
  let usagePoll = null; // started last; load() refreshes it after a change
  const STATUS_KIND = { online: "ok", offline: "warn", unreachable: "error", unknown: "neutral" };

  function usageCell(used, total, text) {
    if (used == null || !total) return el("td", { class: "usage-cell muted small-text" }, "—");
    return el("td", { class: "usage-cell" }, meter(used, total), el("span", { class: "small-text" }, text));
  }

  function usageRow(n) {
    const memText = n.memory_total ? `${bytes(n.memory_used)} used, ${bytes(n.memory_committed)} committed of ${bytes(n.memory_total)}` : "";
    const cap = n.max_containers != null ? ` (cap ${n.max_containers})` : "";
    return el("tr", { "data-node": n.name, "data-status": n.status },
      el("td", {}, el("strong", {}, n.name), n.cluster ? el("span", { class: "muted small-text" }, ` ${n.cluster}`) : null),
      el("td", {}, el("span", { class: `badge badge-${STATUS_KIND[n.status] || "neutral"} cluster-status`, title: n.problem || "" }, n.status),
        n.maintenance ? el("span", { class: "badge badge-warn", title: "new containers are placed on other nodes" }, "maintenance") : null),
      usageCell(n.cpu == null ? null : n.cpu * n.cpus, n.cpus, n.cpu == null ? "" : `${Math.round(n.cpu * 100)}% of ${n.cpus} cores`),
      // the bar is what placement counts: the memory its guests may take
      usageCell(n.memory_committed, n.memory_total, memText),
      usageCell(n.disk_used, n.disk_total, n.disk_total ? `${n.storage}: ${bytes(n.disk_total - n.disk_used)} free of ${bytes(n.disk_total)}` : ""),
      el("td", { class: "num" }, n.guests == null ? "—" : `${n.running} running of ${n.guests}${cap}`),
      el("td", { class: "num" }, n.in_flight ? `${n.in_flight} (${bytes(n.in_flight_memory)})` : "0"));
  }

  async function clusterUsage() {
    try {
      const data = await api("GET", "/api/cluster");
      usageBox.hidden = data.nodes.length === 0;
      usageRows.replaceChildren(...data.nodes.map(usageRow));
      usageState.textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (e) {
      usageState.textContent = `cannot refresh: ${e.message}`;
    }
  }

  // --- the list -------------------------------------------------------------------------------
  async function load() {
    let data;
    try {
      data = await api("GET", "/api/nodes");
    } catch (e) {
      const box = document.getElementById("nodes-load-error");
      box.textContent = `Cannot list the nodes: ${e.message}`;
      box.hidden = false;
      list.replaceChildren();
      return;
    }
    document.getElementById("nodes-load-error").hidden = true;
    document.getElementById("nodes-empty").hidden = data.nodes.length > 0;
    const cards = data.nodes.map((n) => {
      const node = card(n);
      // each node on its own: a slow one does not hold up the rest
      test(n, node, false).then((ok) => {
        if (ok) return Promise.all([resources(n, node), bridges(n, node), storages(n, node)]);
        for (const [sel, title] of [[".node-resources", "Free resources"], [".node-bridges", "Bridges"], [".node-storages", "Storages"]]) {
          node.querySelector(sel).replaceChildren(el("h3", {}, title), el("p", { class: "muted small-text" }, "unavailable while the node cannot be reached"));
        }
        return null;
      });
      return node;
    });
    list.replaceChildren(...cards);
    if (usagePoll) usagePoll.now();
  }

  // --- the add form --------------------------------------------------------------------------
  const form = document.getElementById("add-node-form");
  if (form) {
    const panel = document.getElementById("add-node");
    const toggle = document.getElementById("add-node-toggle");
    const open = (show) => {
      panel.hidden = !show;
      toggle.setAttribute("aria-expanded", String(show));
      toggle.hidden = show;
      if (show) form.querySelector('[name="name"]').focus();
    };
    toggle.addEventListener("click", () => open(true));
    document.getElementById("add-node-empty").addEventListener("click", () => open(true));
    document.getElementById("add-node-cancel").addEventListener("click", () => { open(false); form.reset(); switchModes(); clearFieldErrors(form); });

    const choice = (name) => form.querySelector(`input[name="${name}"]:checked`).value;
    function switchModes() {
      const auth = choice("auth_kind"), mode = choice("trust");
      form.querySelectorAll("[data-auth]").forEach((g) => { g.hidden = g.dataset.auth !== auth; });
      form.querySelectorAll("[data-trust]").forEach((g) => { g.hidden = g.dataset.trust !== mode; });
    }
    form.querySelectorAll('input[name="auth_kind"], input[name="trust"]').forEach((r) => r.addEventListener("change", switchModes));
    // a corrected field loses its error
    form.addEventListener("input", (ev) => {
      if (ev.target.getAttribute("aria-invalid")) {
        ev.target.removeAttribute("aria-invalid");
        const slot = ev.target.closest(".field") && ev.target.closest(".field").querySelector(".field-error");
        if (slot) slot.textContent = "";
      }
    });

    function body() {
      const value = (name) => form.querySelector(`[name="${name}"]`).value.trim();
      const b = { name: value("name"), host: value("host") };
      const port = value("port");
      if (port !== "") b.port = /^\d+$/.test(port) ? Number(port) : port; // the API names a bad one
      const optional = { pve_node: value("pve_node"), default_storage: value("default_storage"), default_bridge: value("default_bridge") };
      if (choice("auth_kind") === "token") Object.assign(optional, { token_id: value("token_id"), token_secret: form.querySelector('[name="token_secret"]').value });
      else Object.assign(optional, { user: value("user"), password: form.querySelector('[name="password"]').value });
      const mode = choice("trust");
      if (mode === "insecure") b.insecure = true;
      else optional[mode] = value(mode);
      for (const [k, v] of Object.entries(optional)) if (v !== "") b[k] = v;
      return b;
    }

    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearFieldErrors(form);
      const notice = document.getElementById("add-node-error");
      notice.hidden = true;
      const submit = document.getElementById("add-node-submit");
      const state = document.getElementById("add-node-state");
      submit.setAttribute("aria-busy", "true");
      state.replaceChildren(el("span", { class: "spinner" }), " connecting to the node…");
      try {
        const created = await api("POST", "/api/nodes", body());
        const version = created.version && created.version.version ? ` (PVE ${created.version.version})` : "";
        toast(`${created.name} added${version}`, "ok");
        form.reset();
        switchModes();
        open(false);
        await load();
      } catch (e) {
        if (!showFieldError(form, e.field, e.message)) {
          notice.textContent = e.message;
          notice.hidden = false;
        }
      } finally {
        submit.removeAttribute("aria-busy");
        state.textContent = "";
      }
    });
    switchModes();
  }

  load();
  usagePoll = poller(clusterUsage, 15000);
})();
