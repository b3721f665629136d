// One container: overview (live), events timeline, full log, snapshots,
// settings (day-two changes), environment (its source, its clones; clone,
// sync, promote), actions.
// The page starts from the stored state the server rendered into
// #container-data, then polls GET /api/containers/<id> (live PVE status);
// the timeline fetches events by seq only when last_seq moved on.  A change
// asked for here (a snapshot, a rollback, a removal, a set, a resync) is a
// run: the page follows it to its terminal event, then says how it ended
// and reloads the snapshots (GET .../snapshots, asked of the node).  A
// promote is a run of the source: the page follows the source's events.
"use strict";
(function () {
  const { api, el, bytes, duration, containerState, stateBadge, allowedActions, containerAction, poller,
    when, ago, timeAgo, copyText, allows, confirmDialog, choiceGroup, toast, showFieldErrors, clearFieldErrors,
    envTag, ENVIRONMENTS } = window.App;
  const readJson = (id) => JSON.parse(document.getElementById(id).textContent);
  let ct = readJson("container-data");
  const defaults = readJson("template-defaults") || {};
  const base = `/api/containers/${encodeURIComponent(ct.id)}`;
  const POLL_MS = 3000, BUSY_POLL_MS = 1000, BUSY_MAX_MS = 90000;
  let busy = null; // {action, status, lifecycle, since}: asked for, not shown yet
  // the change asked for on this page, until its run's terminal event:
  // {action, label, after (the last seq before it), other (the container
  // whose run it is, when not this one: {id, hostname})}; then how it ended
  let change = null, outcome = null;
  const startSeq = ct.last_seq; // events up to it are history
  let liveLoaded = false;
  const keys = {}; // section -> what it last showed, to re-render only on change

  function changed(section, value) {
    const key = JSON.stringify(value);
    if (keys[section] === key) return false;
    keys[section] = key;
    return true;
  }

  const dash = () => el("span", { class: "muted" }, "–");
  function kv(dl, pairs) {
    dl.replaceChildren(...pairs.filter(Boolean).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v === null || v === undefined || v === "" ? dash() : v)]));
  }
  const code = (text) => el("code", {}, text);
  const copyButton = (text, label) => el("button", { type: "button", class: "small ghost", title: `Copy ${label}`, "aria-label": `Copy ${label}`, onclick: () => copyText(text) }, "Copy");

  // --- header ---------------------------------------------------------------------------------
  function renderHeader() {
    const st = containerState(ct, busy && busy.action);
    const live = ct.pve && ct.pve.status;
    const isProtected = snapshots.protected();
    if (changed("status", [st, live, ct.lifecycle, isProtected, ct.environment])) {
      const box = document.getElementById("ct-status");
      box.replaceChildren(stateBadge(st, { id: "status-badge" }),
        ct.lifecycle === "error" && live ? el("span", { class: `badge badge-${live}`, title: "live status in PVE" }, `${live} in PVE`) : "",
        isProtected ? el("span", { class: "badge badge-warn", id: "protected-badge",
          title: "Proxmox VE's protection flag is set: no destroy, no rollback" }, "protected") : "",
        ct.environment ? envTag(ct.environment, { id: "environment-tag" }) : "");
    }
    if (changed("subtitle", [ct.vmid, ct.owns_container, ct.node, ct.template, ct.created_at])) {
      document.getElementById("ct-subtitle").replaceChildren(
        ct.vmid !== null && ct.owns_container ? `CT ${ct.vmid} on ` : "on ", el("a", { href: "/nodes", class: "plain" }, ct.node),
        " · ", el("a", { href: `/templates/${encodeURIComponent(ct.template)}`, class: "plain" }, ct.template),
        " · created ", timeAgo(ct.created_at));
    }
    // power actions follow the live status: offer them once it is known
    const allowed = busy ? [] : allowedActions(ct).filter((a) => liveLoaded || !["start", "stop", "reboot"].includes(a));
    if (changed("actions", [allowed, ct.lifecycle])) {
      const box = document.getElementById("ct-actions");
      const link = document.getElementById("progress-link");
      link.className = `button ${["pending", "creating"].includes(ct.lifecycle) ? "primary" : "secondary"}`;
      box.replaceChildren(link, ...allowed.map((a) => el("button", {
        type: "button", class: a === "destroy" ? "danger" : "secondary", "data-action": a,
        onclick: (ev) => run(a, ev.currentTarget),
      }, window.App.ACTIONS[a].label)));
    }
  }

  // --- notices ------------------------------------------------------------------------------
  function errorNotice() {
    const d = ct.error_details || {};
    const facts = [
      d.phase && ["Phase", d.phase],
      d.script && ["Script", el("span", { class: "mono" }, d.script)],
      d.exit_code !== undefined && d.exit_code !== null && ["Exit code", el("span", { class: "mono" }, String(d.exit_code))],
      d.timed_out && ["Timed out", "yes: the script ran longer than its timeout"],
      ["Attempts", String(ct.attempts)],
    ];
    const lines = d.last_lines || [];
    return el("div", { class: "notice notice-error error-details", role: "alert" },
      el("strong", {}, d.phase ? `Provisioning failed in the ${d.phase} phase` : "Provisioning failed"),
      el("p", { class: "error-message" }, d.message || ct.error || "no message recorded"),
      el("dl", { class: "kv" }, facts.filter(Boolean).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
      d.hint ? el("p", { class: "hint" }, el("strong", {}, "What to do: "), d.hint) : null,
      lines.length ? el("div", { class: "last-lines" },
        el("div", { class: "small-text muted" }, `Last ${lines.length} line${lines.length === 1 ? "" : "s"} of output`),
        el("div", { class: "console" }, lines.map((l) => el("div", { class: "line" }, l)))) : null,
      el("p", { class: "small-text" }, "Fix the cause, then ", el("strong", {}, "Retry"),
        " (finished phases are kept) or ", el("strong", {}, "Destroy"), " the container."));
  }

  const CHANGE_NAMES = { resync: "a resync", set: "a change of settings", sync: "a sync", promote: "a promotion" };
  const cap = (text) => text.charAt(0).toUpperCase() + text.slice(1);
  const timelineLink = (text) => el("a", { href: "#timeline", onclick: (ev) => { ev.preventDefault(); showTab("timeline", true); } }, text);

  // a change under way: the one asked for here (with a spinner), and the
  // safety snapshot of the one in flight (change_in_flight), whoever asked
  function changeNotice() {
    const flight = ct.change_in_flight;
    if (!(change && change.action !== "resync") && !flight) return null;
    const safety = flight ? [
      `${change && change.action === flight.action ? "Its" : `${cap(CHANGE_NAMES[flight.action] || `a ${flight.action}`)} is under way; its`} safety snapshot is `,
      el("span", { class: "mono" }, flight.snapshot), ": if it fails, the container is ",
      flight.on_failure === "keep" ? "kept as the failure leaves it (on failure: keep)." : "rolled back to it."] : [];
    if (change && change.other) {
      const other = `/containers/${encodeURIComponent(change.other.id)}`;
      return el("div", { class: "notice notice-info", id: "change-notice", role: "status" },
        el("span", { class: "row" }, el("span", { class: "spinner" }), el("strong", {}, `${change.label}…`)),
        el("p", { class: "small-text" }, "It is a run of ", el("a", { href: other, id: "change-other-link" }, change.other.hostname),
          ": follow its steps in ", el("a", { href: `${other}#timeline` }, `${change.other.hostname}'s timeline`),
          " or its ", el("a", { href: `${other}/progress` }, "live progress view"), "."));
    }
    if (change && change.action !== "resync") {
      return el("div", { class: "notice notice-info", id: "change-notice", role: "status" },
        el("span", { class: "row" }, el("span", { class: "spinner" }), el("strong", {}, `${change.label}…`)),
        el("p", { class: "small-text" }, safety, safety.length ? " " : "", "Follow its steps in the ", timelineLink("timeline"), "."));
    }
    return el("div", { class: "notice notice-info", id: "change-in-flight" }, safety);
  }

  // how the last change asked for here ended, when it did not work
  function outcomeNotice() {
    if (!outcome || outcome.ok) return null;
    return el("div", { class: `notice ${outcome.rolledBack ? "notice-warn" : "notice-error"}`, id: "change-outcome", role: "alert" },
      el("strong", {}, outcome.rolledBack ? `${outcome.what} failed and was rolled back. ` : `${outcome.what} failed. `),
      el("span", { class: "error-message" }, outcome.message), " ",
      outcome.other
        ? el("span", { class: "small-text" }, "The ", el("a", { href: `/containers/${encodeURIComponent(outcome.other.id)}#timeline` },
          `timeline of ${outcome.other.hostname}`), " has every step. ")
        : el("span", { class: "small-text" }, "The ", timelineLink("timeline"), " has every step. "),
      el("button", { type: "button", class: "small ghost", onclick: () => { outcome = null; renderNotices(); } }, "Dismiss"));
  }

  function renderNotices() {
    if (!changed("notices", [ct.lifecycle, ct.error, ct.error_details, ct.pve_error, ct.owns_container, ct.current_phase, ct.finished_at,
      ct.change_in_flight, change, outcome])) return;
    const box = document.getElementById("ct-notices");
    const items = [];
    if (ct.lifecycle === "error") items.push(errorNotice());
    if (ct.lifecycle === "creating" || ct.lifecycle === "pending") {
      items.push(el("div", { class: "notice notice-info" },
        el("strong", {}, ct.lifecycle === "pending" ? "Queued. " : `${ct.change_in_flight && ct.change_in_flight.action === "resync" ? "Resyncing" : "Provisioning"}: ${ct.current_phase || "starting"}. `),
        "Follow every step in the ", el("a", { href: `/containers/${encodeURIComponent(ct.id)}/progress` }, "live progress view"), "."));
    }
    items.push(changeNotice(), outcomeNotice());
    if (ct.lifecycle === "destroyed") {
      items.push(el("div", { class: "notice notice-warn" }, el("strong", {}, "Destroyed. "),
        `This container was removed from Proxmox ${ct.finished_at ? "on " + when(ct.finished_at) : ""}; its history is kept below.`));
    }
    if (!ct.owns_container && ["ready", "error"].includes(ct.lifecycle)) {
      items.push(el("div", { class: "notice notice-warn", id: "no-container" }, el("strong", {}, "No container. "),
        `${ct.pve_error || "This record owns no container in Proxmox"}. `,
        el("strong", {}, "Destroy"), " only removes this record; ", el("strong", {}, "Retry"), " creates a new container."));
    } else if (ct.pve_error) {
      items.push(el("div", { class: "notice notice-warn" }, el("strong", {}, "Live status unavailable: "), ct.pve_error));
    }
    box.replaceChildren(...items.filter(Boolean));
  }

  // --- overview -------------------------------------------------------------------------------
  function renderAccess() {
    if (!changed("access", [ct.ip, ct.ssh_host_key_fingerprint, ct.lifecycle, ct.owns_container])) return;
    const box = document.getElementById("access");
    if (!ct.owns_container && ["ready", "error"].includes(ct.lifecycle)) {
      box.replaceChildren(el("p", { class: "muted" }, "Nothing to reach: this record owns no container."));
      return;
    }
    if (ct.lifecycle === "destroyed" || ct.lifecycle === "destroying") {
      box.replaceChildren(el("p", { class: "muted" }, ct.lifecycle === "destroyed" ? "The container no longer exists" : "The container is being destroyed",
        ct.ip ? `; it was at ${ct.ip}.` : "."));
      return;
    }
    if (!ct.ip) {
      box.replaceChildren(el("p", { class: "muted" }, "No IP address yet: it is known once the container has started."));
      return;
    }
    const ssh = `ssh root@${ct.ip}`;
    const dl = el("dl", { class: "kv" });
    kv(dl, [
      ["IP address", el("span", { class: "mono", id: "ct-ip" }, ct.ip)],
      ["SSH", el("span", { class: "copy-row" }, el("code", { id: "ssh-command" }, ssh), copyButton(ssh, "SSH command"))],
      ["Host key", ct.ssh_host_key_fingerprint ? el("span", { class: "mono small-text fingerprint" }, ct.ssh_host_key_fingerprint) : null],
    ]);
    box.replaceChildren(dl);
  }

  function renderDetails() {
    const live = ct.pve;
    if (!changed("details", [ct, busy && busy.action])) return;
    const r = ct.request || {};
    const phases = ct.finished_phases.length ? ct.finished_phases.join(" → ") : null;
    kv(document.getElementById("details"), [
      ["ID", el("span", { class: "copy-row" }, el("span", { class: "mono small-text" }, ct.id), copyButton(ct.id, "container id"))],
      ["Lifecycle", el("span", { class: `badge badge-${ct.lifecycle}`, id: "lifecycle-badge" }, ct.lifecycle)],
      ["Live status", live ? el("span", {}, el("span", { class: `badge badge-${live.status}`, id: "live-badge" }, live.status),
        live.status === "running" && live.uptime ? el("span", { class: "muted small-text" }, ` up ${duration(live.uptime)}`) : null)
        : el("span", { class: "muted" }, ct.lifecycle === "destroyed" ? "gone from PVE"
          : !ct.owns_container && ["ready", "error"].includes(ct.lifecycle) ? "no container"
          : ct.pve_error ? "unavailable"
          : !liveLoaded ? "loading…" : ct.vmid === null ? "not created in PVE yet" : "–")],
      ["Node", el("a", { href: "/nodes" }, ct.node)],
      ct.placement && ["Placement", el("span", { id: "ct-placement", class: "small-text" }, ct.placement.reasons)],
      ct.spread_group && ["Spread group", ct.spread_group],
      ["Template", el("a", { href: `/templates/${encodeURIComponent(ct.template)}` }, ct.template)],
      ["Owner", ct.owner ? el("span", { id: "ct-owner", title: "the webhooks of this user get its events" }, ct.owner) : null],
      ["VMID", ct.vmid !== null && ct.owns_container ? el("span", { class: "mono" }, String(ct.vmid))
        : ["ready", "error"].includes(ct.lifecycle) ? el("span", { class: "muted", id: "vmid-none" }, "none: this record owns no container") : null],
      ["Phase", ct.current_phase],
      ["Finished phases", phases],
      ["Scripts run", ct.finished_scripts.length ? el("span", { class: "mono small-text" }, ct.finished_scripts.join(", ")) : null],
      ["Network", `${r.ip || "dhcp"}${r.gateway ? ` via ${r.gateway}` : ""}${r.bridge ? ` on ${r.bridge}` : ""}`],
      r.storage && ["Storage", r.storage],
      (r.ip6 || r.vlan || r.firewall) && ["eth0", [r.ip6 && `IPv6 ${r.ip6}`, r.gateway6 && `via ${r.gateway6}`,
        r.vlan && `VLAN ${r.vlan}`, r.firewall && "firewall"].filter(Boolean).join(", ")],
      ...(r.nics || []).map((n, i) => [`eth${i + 1}`, [n.bridge || "node's bridge", n.ip === null ? null : n.ip || "dhcp",
        n.ip6 && `IPv6 ${n.ip6}`, n.vlan && `VLAN ${n.vlan}`, n.firewall && "firewall"].filter(Boolean).join(", ")]),
      (r.nameserver || r.searchdomain) && ["DNS", [r.nameserver, r.searchdomain].filter(Boolean).join(" · ")],
      ...(r.mounts || []).map((m) => ["Volume", el("span", { class: "mono" },
        `${m.path} · ${m.size} GiB${m.storage ? ` on ${m.storage}` : ""}${m.backup === false ? " · not backed up" : ""}`)]),
      ...(r.binds || []).map((b) => ["Bind mount", el("span", { class: "mono" }, `${b.source} → ${b.path}${b.ro ? " (read-only)" : ""}`)]),
      r.features && ["Features", Object.entries(r.features).map(([k, on]) => `${k} ${on ? "on" : "off"}`).join(", ")],
      r.onboot !== undefined && ["Start on boot", `${r.onboot ? "yes" : "no"}${r.startup ? ` (${r.startup})` : ""}`],
      r.tags?.length && ["Tags", r.tags.join(", ")],
      r.pool && ["Pool", r.pool],
      ["Attempts", String(ct.attempts)],
      ["On failure", ct.failure_policy === "destroy" ? "destroy the container" : "keep it for inspection"],
    ]);
  }

  function meter(used, total) {
    if (!total) return null;
    const pct = Math.min(100, Math.round((used / total) * 100));
    return el("div", { class: `meter ${pct > 90 ? "high" : pct > 70 ? "warn" : "ok"}`, title: `${pct}%` },
      el("span", { style: `width:${pct}%` }));
  }

  function renderResources() {
    if (!changed("resources", [ct.request, ct.pve])) return;
    const r = ct.request || {};
    const value = (name, fmt) => {
      if (r[name] !== null && r[name] !== undefined) return fmt(r[name]);
      if (defaults[name] !== null && defaults[name] !== undefined) {
        return el("span", {}, fmt(defaults[name]), el("span", { class: "muted small-text" }, " (template default)"));
      }
      return el("span", { class: "muted" }, "template default");
    };
    const mib = (n) => bytes(n * 1024 * 1024);
    const dl = el("dl", { class: "kv" });
    kv(dl, [
      ["Cores", value("cores", String)],
      ["Memory", value("memory", mib)],
      ["Swap", value("swap", mib)],
      ["Disk", value("disk", (n) => `${n} GiB`)],
    ]);
    const live = ct.pve;
    const usage = live && live.status === "running" ? el("div", { class: "usage" },
      el("h3", {}, "Live usage"),
      el("div", { class: "usage-row" }, el("span", {}, "CPU"), meter(live.cpu || 0, 1), el("span", { class: "mono small-text" }, `${Math.round((live.cpu || 0) * 100)}%`)),
      el("div", { class: "usage-row" }, el("span", {}, "Memory"), meter(live.memory_used, live.memory_total), el("span", { class: "mono small-text" }, `${bytes(live.memory_used)} / ${bytes(live.memory_total)}`)),
      live.disk_total ? el("div", { class: "usage-row" }, el("span", {}, "Disk"), meter(live.disk_used, live.disk_total), el("span", { class: "mono small-text" }, `${bytes(live.disk_used)} / ${bytes(live.disk_total)}`)) : null)
      : null;
    document.getElementById("resources").replaceChildren(dl, usage || "");
  }

  function renderTimes() {
    if (!changed("times", [ct.created_at, ct.started_at, ct.finished_at, ct.updated_at])) return;
    const t = (iso) => (iso ? el("span", {}, when(iso), el("span", { class: "muted small-text" }, ` · ${ago(iso)}`)) : null);
    const took = ct.started_at && ct.finished_at ? duration((new Date(ct.finished_at) - new Date(ct.started_at)) / 1000) : null;
    kv(document.getElementById("times"), [
      ["Requested", t(ct.created_at)],
      ["Started", t(ct.started_at)],
      ["Finished", t(ct.finished_at)],
      took && ["Took", took],
      ["Last change", t(ct.updated_at)],
    ]);
  }

  function renderServices() {
    if (!changed("services", [ct.services, ct.lifecycle])) return;
    const box = document.getElementById("services");
    if (!ct.services.length) {
      box.replaceChildren(el("p", { class: "muted" }, ct.lifecycle === "ready" ? "No listening service was found." : "Listening services are discovered in the finalize phase."));
      return;
    }
    box.replaceChildren(el("table", { class: "table compact" },
      el("thead", {}, el("tr", {}, el("th", {}, "Port"), el("th", {}, "Protocol"), el("th", {}, "Address"), el("th", {}, "Process"))),
      el("tbody", {}, ct.services.map((s) => el("tr", {},
        el("td", { class: "mono" }, String(s.port)), el("td", {}, s.proto), el("td", { class: "mono" }, s.address),
        el("td", {}, s.process || dash()))))));
  }

  function renderVariables() {
    if (!changed("variables", [ct.variables, ct.secret_variables])) return;
    const box = document.getElementById("variables");
    const names = Object.keys(ct.variables);
    if (!names.length && !ct.secret_variables.length) {
      box.replaceChildren(el("p", { class: "muted" }, "The template's defaults, nothing set."));
      return;
    }
    const dl = el("dl", { class: "kv" });
    kv(dl, [
      ...names.map((n) => [el("span", { class: "mono" }, n), ct.variables[n] === "" ? el("span", { class: "muted" }, "(empty)") : el("span", { class: "mono" }, String(ct.variables[n]))]),
      ...ct.secret_variables.map((n) => [el("span", { class: "mono" }, n), el("span", { class: "muted" }, "secret (never shown)")]),
    ]);
    box.replaceChildren(dl);
  }

  function render() {
    renderHeader();
    renderNotices();
    snapshots.render();
    settings.render();
    environment.render();
    renderAccess();
    renderDetails();
    renderResources();
    renderTimes();
    renderServices();
    renderVariables();
    document.title = `${ct.hostname} · Containers · LXC provisioner`;
  }

  // --- actions ------------------------------------------------------------------------------
  async function run(action, button) {
    button.setAttribute("aria-busy", "true");
    const answer = await containerAction(ct, action);
    button.removeAttribute("aria-busy");
    if (!answer) return;
    busy = { action, status: containerState(ct).state, lifecycle: ct.lifecycle, since: Date.now() };
    // a resync is a change too: how it ended (rolled back, kept) is said when it ends
    if (action === "resync") follow(answer, "Resync", "Resyncing");
    render();
    poll.now();
  }

  // --- changes: a run asked for here, followed to its terminal event ---------------------------
  const afterOf = (url) => Number(new URL(url, location.href).searchParams.get("after") || 0);
  const seenEnds = []; // terminal events of runs that ended while this page was open

  // answer: the API's 202; what: "Snapshot" (said when it ended); label:
  // "Taking snapshot 'x'"; otherName: the hostname of the container whose run
  // it is, when it is not this one (answer.container: a promote runs on the source)
  function follow(answer, what, label, otherName) {
    const other = answer.container && answer.container !== ct.id ? { id: answer.container, hostname: otherName || answer.container.slice(0, 8) } : null;
    change = { action: answer.action, what, label, after: afterOf(answer.events_url), cursor: afterOf(answer.events_url), other };
    outcome = null;
    // the run may have ended before the answer came back (its events, on this page's stream)
    const ended = other ? null : seenEnds.find((e) => e.seq > change.after);
    if (ended) changeEnded(ended);
    render();
    poll.now();
  }

  function changeEnded(e) {
    const done = change;
    change = null;
    // the run is over, even if no poll saw its lifecycle change (a quick resync)
    if (busy && busy.action === done.action) busy = null;
    const ok = e.type === "complete";
    const who = done.other ? done.other.hostname : ct.hostname;
    outcome = { ok, what: done.what, message: e.message, rolledBack: e.outcome === "rolled-back", other: done.other };
    if (ok) toast(`${who}: ${e.message}`, "ok");
    else toast(`${done.what} failed (${who}): ${e.message}`, "error");
    if (ok && done.action === "set") settings.refillOnNextRefresh();
    environment.stale();  // a sync or a promote changed a clone or its source
  }

  // every non-log event, in order, from the timeline (or, when it does not
  // follow, from the change's own look-up)
  function runEvent(e) {
    if (e.type !== "complete" && e.type !== "error") return;
    if (e.seq <= startSeq) return;
    if (!seenEnds.some((x) => x.seq === e.seq)) seenEnds.push(e);
    if (change && !change.other && e.seq > change.after) changeEnded(e);
    snapshots.stale();  // a run ended: a snapshot or the protection may have changed
    render();
    poll.now();  // the record as the run left it
  }

  // the timeline follows the events unless the user pages it by hand: then
  // the change's events are looked up here, as are those of a run of
  // another container (a promote: the source's events)
  async function followChange() {
    if (!change || (!change.other && timeline.following())) return;
    const followed = change;
    const url = followed.other ? `/api/containers/${encodeURIComponent(followed.other.id)}/events` : `${base}/events`;
    try {
      const data = await api("GET", `${url}?after=${followed.cursor}&limit=2000`);
      const cursor = followed.cursor;
      if (followed.other) {
        if (change !== followed) return;
        const end = data.events.find((e) => (e.type === "complete" || e.type === "error") && e.seq > followed.after);
        if (end) {
          changeEnded(end);
          render();
        } else {
          followed.cursor = data.next_after;
        }
        return;
      }
      data.events.forEach((e) => { if (e.type !== "log") runEvent(e); });
      if (change && change.cursor === cursor) change.cursor = data.next_after;
    } catch (e) {
      if (followed.other && e.status === 404 && change === followed) {
        // the container whose run it was is gone: nothing more to follow
        change = null;
        outcome = { ok: false, what: followed.what, message: `${followed.other.hostname} no longer exists`, rolledBack: false, other: null };
        render();
        return;
      }
      toast(`Cannot follow the change: ${e.message}`, "error");
    }
  }

  function settleBusy() {
    if (!busy) return;
    const status = containerState(ct).state;
    const elapsed = Date.now() - busy.since;
    if (status !== busy.status || ct.lifecycle !== busy.lifecycle || elapsed > BUSY_MAX_MS ||
        (busy.action === "reboot" && elapsed > 4000 && status === "running")) busy = null;
  }

  async function refresh() {
    try {
      ct = await api("GET", base);
      liveLoaded = true;
    } catch (e) {
      if (e.status === 404) { window.location.reload(); return; }
      window.App.toast(`Cannot refresh ${ct.hostname}: ${e.message}`, "error");
      return;
    }
    settleBusy();
    settings.refill();
    render();
    await timeline.follow();
    await followChange();
    if (activeTab === "log") log.follow();
    if (activeTab === "environment") environment.follow();
  }

  // --- timeline -----------------------------------------------------------------------------
  const timeline = (function () {
    const list = document.getElementById("timeline");
    const more = document.getElementById("timeline-more");
    const PAGE = 2000, PAGES_PER_LOAD = 10;
    let after = 0, hasMore = false, loading = false, count = 0;
    let lastPhase = null, lastType = null, lastItem = null, logLines = 0, run = 1, runKind = "provision", phaseItem = null;

    function time(ts) {
      const d = new Date(ts);
      return isNaN(d) ? ts : d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    }

    // a phase's header gets its duration once the next phase (or the end) comes
    function endPhase(ts) {
      if (!phaseItem) return;
      const took = (new Date(ts) - new Date(phaseItem.dataset.start)) / 1000;
      if (isFinite(took)) phaseItem.querySelector(".when").textContent += ` · took ${window.App.duration(took)}`;
      phaseItem = null;
    }

    function flushLogCount() {
      if (lastItem && logLines) {
        let note = lastItem.querySelector(".log-count");
        if (!note) { note = el("span", { class: "log-count" }); lastItem.append(note); }
        note.dataset.n = String(Number(note.dataset.n || 0) + logLines);
        note.textContent = `${note.dataset.n} log line${note.dataset.n === "1" ? "" : "s"}`;
      }
      logLines = 0;
    }

    // what a run was, from its first event (the events carry no action:
    // pipeline/job.py and pipeline/changes.py word their steps so)
    const RUN_KINDS = [
      [/^(start|stop|reboot) CT /, (m) => m[1]],
      [/^destroy/, () => "destroy"],
      [/^taking snapshot 'auto-(resync|set|sync|promote)-/, (m) => m[1]],
      [/^taking snapshot '/, () => "snapshot"],
      [/^removing snapshot '/, () => "delete-snapshot"],
      [/^rolling CT \d+ back to snapshot '/, () => "rollback"],
      [/^(changing |growing the root disk|restarting CT \d+ to apply)/, () => "set"],
      [/^(start|stop|reboot|resync|snapshot|rollback|delete-snapshot|set|sync|promote) failed: /, (m) => m[1]],
    ];
    const RUN_LABELS = { start: "Start", stop: "Stop", reboot: "Reboot", destroy: "Destroy", provision: "Provisioning",
      resync: "Resync", snapshot: "Snapshot", "delete-snapshot": "Remove snapshot", rollback: "Rollback", set: "Change settings",
      sync: "Sync", promote: "Promote" };
    // runs without phases worth a header of their own
    const FLAT_RUNS = ["start", "stop", "reboot", "snapshot", "delete-snapshot", "rollback", "set", "sync", "promote"];
    function kindOf(message) {
      for (const [re, kind] of RUN_KINDS) {
        const m = re.exec(message || "");
        if (m) return kind(m);
      }
      return "provision";
    }

    function add(e) {
      if (e.type === "log") { logLines += 1; return; }
      flushLogCount();
      if (lastType === "complete" || lastType === "error") {
        run += 1;
        // an action's run says what it was; start/stop/reboot and the changes have no phases to show
        runKind = kindOf(e.message);
        list.append(el("li", { class: "timeline-run", "data-run": String(run), "data-kind": runKind },
          el("span", { class: "what" }, `Run ${run} · ${RUN_LABELS[runKind]}`), el("span", { class: "when" }, time(e.ts))));
        lastPhase = null;
      }
      if (e.phase && e.phase !== lastPhase && e.type === "step" && !FLAT_RUNS.includes(runKind)) {
        endPhase(e.ts);
        phaseItem = el("li", { class: "timeline-phase", "data-phase": e.phase, "data-start": e.ts },
          el("span", { class: "what" }, `Phase ${e.phase}`), el("span", { class: "when" }, time(e.ts)));
        list.append(phaseItem);
      }
      if (e.type === "complete" || e.type === "error") endPhase(e.ts);
      if (e.phase) lastPhase = e.phase;
      lastType = e.type;
      const meta = [time(e.ts), e.phase, e.percent !== undefined && e.percent !== null ? `${e.percent}%` : null, `#${e.seq}`].filter(Boolean).join(" · ");
      lastItem = el("li", { class: `timeline-${e.type}`, "data-seq": String(e.seq), "data-type": e.type },
        el("span", { class: "what" }, e.message || e.type), el("span", { class: "when", title: e.ts }, meta));
      list.append(lastItem);
      count += 1;
      runEvent(e);
    }

    function updateState() {
      const c = document.getElementById("timeline-count");
      c.textContent = String(count);
      c.hidden = !count;
      more.hidden = !hasMore;
      const state = document.getElementById("timeline-state");
      state.textContent = count ? `${count} event${count === 1 ? "" : "s"} up to #${after}` : "";
      if (!count && !hasMore && !list.children.length) {
        list.replaceChildren(el("li", { class: "timeline-empty muted" }, "No events yet."));
      } else {
        const empty = list.querySelector(".timeline-empty");
        if (empty && count) empty.remove();
      }
    }

    async function load(pages) {
      if (loading) return;
      loading = true;
      try {
        for (let i = 0; i < pages; i++) {
          const data = await api("GET", `${base}/events?after=${after}&limit=${PAGE}`);
          data.events.forEach(add);
          after = data.next_after;
          hasMore = data.more;
          if (!hasMore) break;
        }
        flushLogCount();
      } catch (e) {
        window.App.toast(`Cannot load the events: ${e.message}`, "error");
      } finally {
        loading = false;
        updateState();
      }
    }

    more.addEventListener("click", () => load(PAGES_PER_LOAD));
    return {
      start: () => load(PAGES_PER_LOAD),
      // new events exist (last_seq moved on) and the user is not paging by hand
      follow: () => (!hasMore && ct.last_seq > after ? load(PAGES_PER_LOAD) : Promise.resolve()),
      following: () => !hasMore,
    };
  })();

  // --- full log -------------------------------------------------------------------------------
  const log = (function () {
    const box = document.getElementById("log");
    const MAX_LINES = 20000;
    const LINE = /^(\S+) \[([^\]]*)\] ?(.*)$/;
    let entries = [], loadedSeq = -1, loading = false, lastLoad = 0;

    function parse(text) {
      const out = [];
      for (const raw of text.split("\n")) {
        if (raw === "") continue;
        if (raw.startsWith("    ") && out.length) { out[out.length - 1].message += "\n" + raw.slice(4); continue; }
        const m = LINE.exec(raw);
        if (!m) { out.push({ ts: "", kind: "log", stream: "", script: "", message: raw }); continue; }
        const [source, ...rest] = m[2].split(" ");
        if (["stdout", "stderr", "log"].includes(source)) {
          out.push({ ts: m[1], kind: "log", stream: source, script: rest.join(" "), message: m[3] });
        } else {
          out.push({ ts: m[1], kind: source, stream: "", script: "", message: m[3] });
        }
      }
      return out;
    }

    function visible(e) {
      const stream = document.getElementById("log-stream").value;
      const script = document.getElementById("log-script").value;
      const q = document.getElementById("log-search").value.trim().toLowerCase();
      if (stream === "events" && e.kind === "log") return false;
      if ((stream === "stdout" || stream === "stderr") && e.stream !== stream) return false;
      if (script && e.script !== script) return false;
      if (q && !e.message.toLowerCase().includes(q)) return false;
      return true;
    }

    function line(e) {
      const cls = e.kind === "log" ? (e.stream === "stderr" ? "line stderr" : `line ${e.stream || "stdout"}`) : `line ${e.kind}`;
      const ts = e.ts ? new Date(e.ts) : null;
      const shown = ts && !isNaN(ts) ? ts.toLocaleTimeString(undefined, { hour12: false }) + "." + String(ts.getMilliseconds()).padStart(3, "0") : e.ts;
      return el("div", { class: cls, "data-stream": e.stream || e.kind },
        el("span", { class: "ts", title: e.ts }, shown),
        el("span", { class: "src" }, e.kind === "log" ? (e.script || e.stream) : e.kind),
        e.message);
    }

    function render() {
      const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
      const shown = entries.filter(visible);
      const tail = shown.slice(-MAX_LINES);
      const frag = document.createDocumentFragment();
      if (shown.length > tail.length) {
        frag.append(el("div", { class: "console-empty" }, `Showing the last ${MAX_LINES} of ${shown.length} lines: download the log for all of them.`));
      }
      tail.forEach((e) => frag.append(line(e)));
      if (!tail.length) frag.append(el("div", { class: "console-empty" }, entries.length ? "No line matches the filter." : "The log is empty."));
      box.replaceChildren(frag);
      if (atBottom || !render.done) box.scrollTop = box.scrollHeight;
      render.done = true;
      const stderr = entries.filter((e) => e.stream === "stderr").length;
      document.getElementById("log-state").textContent =
        `${entries.length} line${entries.length === 1 ? "" : "s"}${stderr ? ` · ${stderr} on stderr` : ""}`;
    }

    function fillScripts() {
      const select = document.getElementById("log-script");
      const current = select.value;
      const scripts = [...new Set(entries.map((e) => e.script).filter(Boolean))].sort();
      select.replaceChildren(el("option", { value: "" }, "All scripts"), ...scripts.map((s) => el("option", { value: s }, s)));
      select.value = scripts.includes(current) ? current : "";
    }

    async function load() {
      if (loading) return;
      loading = true;
      lastLoad = Date.now();
      const seq = ct.last_seq;
      document.getElementById("log-state").replaceChildren(el("span", { class: "spinner" }), " loading…");
      try {
        const text = await api("GET", `${base}/log`);
        entries = parse(typeof text === "string" ? text : "");
        loadedSeq = seq;
        fillScripts();
        render();
      } catch (e) {
        box.replaceChildren(el("div", { class: "console-empty" }, `Cannot load the log: ${e.message}`));
        document.getElementById("log-state").textContent = "";
      } finally {
        loading = false;
      }
    }

    ["log-stream", "log-script"].forEach((id) => document.getElementById(id).addEventListener("change", render));
    document.getElementById("log-search").addEventListener("input", render);
    document.getElementById("log-reload").addEventListener("click", load);
    return {
      open: () => (loadedSeq < 0 ? load() : null),
      // reload when new events arrived, at most every 5 s
      follow: () => { if (loadedSeq >= 0 && ct.last_seq > loadedSeq && Date.now() - lastLoad > 5000) load(); },
    };
  })();

  // --- snapshots ------------------------------------------------------------------------------
  // Why a change cannot be asked for now (the server's rules), or null.
  function cannotChange(what) {
    if (ct.lifecycle === "destroyed" || ct.lifecycle === "destroying") return `The container is ${ct.lifecycle}: it has no ${what}.`;
    if (["ready", "error"].includes(ct.lifecycle) && !ct.owns_container) return `This record owns no container in Proxmox VE: it has no ${what}.`;
    if (ct.lifecycle === "pending" || ct.lifecycle === "creating") return `The container is ${ct.lifecycle}: its ${what} can be changed once it is ready.`;
    return null;
  }
  const busyWith = () => (change ? `${change.label}: wait for it to end.` : busy && busy.action === "resync" ? "A resync is under way: wait for it to end." : null);

  const renderPage = () => render();

  const snapshots = (function () {
    const box = document.getElementById("snapshots");
    const stateBox = document.getElementById("snapshots-state");
    const form = document.getElementById("snapshot-form");
    const nameInput = document.getElementById("snapshot-name");
    const formError = document.getElementById("snapshot-form-error");
    let info = null;      // {snapshots, running, protected}: the node's last answer
    let error = null;     // why the last look-up failed
    let loading = null;   // the look-up under way (a promise)
    let stale = true;     // a run ended since: ask again when shown

    const stamp = (d) => d.toISOString().replace(/[-:]/g, "").replace("T", "-").slice(0, 15);
    const defaultName = () => `snap-${stamp(new Date())}`;

    // the wording of provisioner.changes.rollback_warning
    function warning(snap, running) {
      return `Rolling back to '${snap.name}' (${when(snap.taken_at)}, ${ago(snap.taken_at)}) loses everything written to the ` +
        "container since then: files, databases, packages, and its configuration (cores, memory, swap, disk size; the description stays) " +
        `as it is now.${running ? " The container is stopped for the rollback and started again." : ""}`;
    }

    async function load() {
      if (loading) return loading;
      if (!allows(ct, "snapshot")) { stale = false; return null; }
      stateBox.replaceChildren(el("span", { class: "spinner" }), " asking the node…");
      loading = (async () => {
        try {
          info = await api("GET", `${base}/snapshots`);
          error = null;
        } catch (e) {
          error = e.message;
        } finally {
          stale = false;
          loading = null;
        }
        renderPage();  // the header's badge and the settings' toggle follow the protection
        return error ? null : info;
      })();
      return loading;
    }

    function row(snap) {
      const auto = snap.automatic;
      const cannot = busyWith() || (!allows(ct, "rollback") ? cannotChange("snapshots") : null);
      const rollbackWhy = info.protected ? "The container is protected: turn protection off under Settings to roll back." : cannot;
      return el("tr", { "data-name": snap.name },
        el("td", {}, el("span", { class: "mono snapshot-name" }, snap.name),
          auto ? el("span", { class: "badge badge-neutral", title: "a safety snapshot, taken before a change" }, "automatic") : null),
        el("td", { class: "nowrap" }, snap.taken_at ? timeAgo(snap.taken_at) : dash()),
        el("td", { class: "snapshot-description" }, snap.description ? snap.description : dash()),
        el("td", { class: "actions" }, el("div", { class: "button-group" },
          el("button", { type: "button", class: "secondary small", "data-op": "rollback", disabled: rollbackWhy ? true : null,
            title: rollbackWhy, "aria-describedby": info.protected ? "snapshots-protected" : null,
            "aria-label": `Roll back to ${snap.name}`, onclick: (ev) => rollback(snap.name, ev.currentTarget) }, "Roll back"),
          el("button", { type: "button", class: "ghost small", "data-op": "remove", disabled: cannot ? true : null, title: cannot,
            "aria-label": `Remove ${snap.name}`, onclick: (ev) => remove(snap, ev.currentTarget) }, "Remove"))));
    }

    function render() {
      const why = cannotChange("snapshots");
      const unavailable = document.getElementById("snapshots-unavailable");
      unavailable.hidden = !why;
      unavailable.textContent = why || "";
      document.getElementById("card-snapshots").hidden = Boolean(why);
      document.getElementById("card-take-snapshot").hidden = Boolean(why);
      document.getElementById("snapshots-protected").hidden = !(info && info.protected) || Boolean(why);
      const count = document.getElementById("snapshots-count");
      count.hidden = !info || Boolean(why);
      count.textContent = info ? String(info.snapshots.length) : "";
      const pending = busyWith();
      document.getElementById("snapshot-submit").disabled = Boolean(pending || why);
      document.getElementById("snapshot-form-state").textContent = pending || "";
      nameInput.placeholder = defaultName();
      if (loading) return;
      stateBox.textContent = error ? "" : info ? `${info.snapshots.length} snapshot${info.snapshots.length === 1 ? "" : "s"} · CT ${info.running ? "running" : "stopped"}` : "";
      if (!changed("snapshots", [info, error, pending, why, ct.lifecycle])) return;
      if (error) {
        box.replaceChildren(el("div", { class: "notice notice-error", role: "alert" }, el("strong", {}, "Cannot list the snapshots: "), error));
        return;
      }
      if (!info) { box.replaceChildren(el("p", { class: "muted" }, "Open this tab to ask the node.")); return; }
      if (!info.snapshots.length) {
        box.replaceChildren(el("p", { class: "muted", id: "snapshots-empty" }, "No snapshot yet. Take one below before a risky change."));
        return;
      }
      const newest = [...info.snapshots].reverse();
      box.replaceChildren(el("table", { class: "table compact", id: "snapshots-table" },
        el("thead", {}, el("tr", {}, el("th", {}, "Name"), el("th", {}, "Taken"), el("th", {}, "Description"),
          el("th", {}, el("span", { class: "visually-hidden" }, "Actions")))),
        el("tbody", {}, newest.map(row))));
    }

    async function rollback(name, button) {
      button.setAttribute("aria-busy", "true");
      const fresh = await load();  // as the node has it now: running, protected, still there
      button.removeAttribute("aria-busy");
      if (!fresh) { toast(`Cannot roll back: ${error}`, "error"); return; }
      const snap = fresh.snapshots.find((s) => s.name === name);
      if (!snap) { toast(`${ct.hostname} has no snapshot '${name}' any more`, "error"); return; }
      if (fresh.protected) { toast(`${ct.hostname} is protected: turn protection off under Settings to roll back`, "error"); return; }
      const ok = await confirmDialog(`Roll ${ct.hostname} back to '${name}'?`, [
        el("p", { class: "rollback-loses" }, warning(snap, fresh.running)),
        el("p", { class: "small-text muted" }, "The snapshot itself stays, and so do the others."),
      ], "Roll back", true);
      if (!ok) return;
      try {
        const answer = await api("POST", `${base}/snapshots/${encodeURIComponent(name)}/rollback`);
        toast(`Rolling ${ct.hostname} back to '${name}'…`, "info");
        follow(answer, "Rollback", `Rolling back to '${name}'`);
      } catch (e) {
        toast(`Rollback of ${ct.hostname} refused: ${e.message}`, "error");
        if (e.field === "protection") load();
      }
    }

    async function remove(snap, button) {
      const auto = snap.automatic ? " It is a safety snapshot: without it a change that failed can no longer be undone by rolling back to it." : "";
      const ok = await confirmDialog(`Remove snapshot '${snap.name}'?`,
        `The snapshot taken ${snap.taken_at ? `on ${when(snap.taken_at)}` : ""} is deleted from Proxmox VE: ${ct.hostname} can no longer be rolled back to it.${auto} The container itself is not changed.`,
        "Remove", true);
      if (!ok) return;
      button.setAttribute("aria-busy", "true");
      try {
        const answer = await api("DELETE", `${base}/snapshots/${encodeURIComponent(snap.name)}`);
        toast(`Removing snapshot '${snap.name}'…`, "info");
        follow(answer, "Removing the snapshot", `Removing snapshot '${snap.name}'`);
      } catch (e) {
        toast(`Removing '${snap.name}' refused: ${e.message}`, "error");
      } finally {
        button.removeAttribute("aria-busy");
      }
    }

    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearFieldErrors(form);
      formError.hidden = true;
      const name = nameInput.value.trim();
      const description = document.getElementById("snapshot-description").value;
      const body = {};
      if (name) body.name = name;
      if (description.trim()) body.description = description;
      const submit = document.getElementById("snapshot-submit");
      submit.setAttribute("aria-busy", "true");
      try {
        const answer = await api("POST", `${base}/snapshots`, body);
        toast(`Taking a snapshot of ${ct.hostname}…`, "info");
        form.reset();
        follow(answer, "Snapshot", name ? `Taking snapshot '${name}'` : "Taking a snapshot");
      } catch (e) {
        const left = e.status === 400 ? showFieldErrors(form, e) : [e.message];
        if (left.length) { formError.textContent = left.join("; "); formError.hidden = false; }
      } finally {
        submit.removeAttribute("aria-busy");
      }
    });
    document.getElementById("snapshots-reload").addEventListener("click", load);

    return {
      render,
      load,
      protected: () => Boolean(info && info.protected),
      known: () => info !== null,
      stale() { stale = true; if (activeTab === "snapshots" || info) load(); },
      open() { if (stale || !info) load(); else render(); },
    };
  })();

  // --- settings: change in place (PATCH /api/containers/<id>) ---------------------------------
  const settings = (function () {
    const form = document.getElementById("settings-form");
    const errorBox = document.getElementById("settings-error");
    const input = (name) => form.querySelector(`[name="${name}"]`);
    const protection = document.getElementById("set-protection");
    const noTags = document.getElementById("set-no-tags");
    const mib = (n) => `${n} MiB`;
    const FIELDS = [["cores", "Cores", String], ["memory", "Memory", mib], ["swap", "Swap", mib]];
    let filledFrom = null;       // the values the form was filled with
    let protectionTouched = false;
    let refillWanted = false;

    // the values now: the record's request, else the template's defaults
    function current() {
      const r = ct.request || {};
      const pick = (name) => (r[name] !== null && r[name] !== undefined ? r[name]
        : defaults[name] !== null && defaults[name] !== undefined ? defaults[name] : null);
      return { cores: pick("cores"), memory: pick("memory"), swap: pick("swap"), disk: pick("disk"),
        fromTemplate: Object.fromEntries(["cores", "memory", "swap", "disk"].map((n) => [n, r[n] === null || r[n] === undefined])) };
    }

    function fill() {
      const now = current();
      filledFrom = now;
      form.reset();
      clearFieldErrors(form);
      errorBox.hidden = true;
      for (const [name, , fmt] of FIELDS) {
        input(name).value = now[name] === null ? "" : String(now[name]);
        document.getElementById(`set-${name}-now`).textContent = now[name] === null ? "Now: the template's default"
          : `Now: ${fmt(now[name])}${now.fromTemplate[name] ? " (the template's default)" : ""}`;
      }
      const disk = input("disk");
      disk.value = "";
      if (now.disk !== null) {
        disk.min = String(now.disk + 1);
        disk.placeholder = `more than ${now.disk}`;
      }
      document.getElementById("set-disk-now").textContent = now.disk === null ? "Larger than now: a disk only grows."
        : `Now: ${now.disk} GiB. Larger only: Proxmox VE cannot shrink a disk.`;
      protectionTouched = false;
      syncProtection();
      input("tags").disabled = false;
    }

    function syncProtection() {
      const known = snapshots.known();
      protection.disabled = !known;
      if (!protectionTouched) protection.checked = snapshots.protected();
      document.getElementById("set-protection-help").textContent = !known
        ? "Proxmox VE's protection flag (asking the node for its state…)"
        : `Proxmox VE's protection flag, ${snapshots.protected() ? "set now" : "not set now"}: while it is set the container can be neither destroyed nor rolled back.`;
    }

    // the changes the form asks for: {body, lines, problems: [{field, message}]}
    function collect() {
      const now = filledFrom || current();
      const body = {}, lines = [], problems = [];
      const whole = (name) => {
        const field = input(name);
        const raw = field.value.trim();
        if (field.validity.badInput || (raw !== "" && !/^\d+$/.test(raw))) {
          problems.push({ field: name, message: `${name} must be a whole number` });
          return null;
        }
        return raw === "" ? null : Number(raw);
      };
      for (const [name, label, fmt] of FIELDS) {
        const value = whole(name);
        if (value !== null && value !== now[name]) {
          body[name] = value;
          lines.push([label, now[name] === null ? fmt(value) : `${fmt(now[name])} → ${fmt(value)}`]);
        }
      }
      const disk = whole("disk");
      if (disk !== null) {
        if (now.disk !== null && disk <= now.disk) {
          problems.push({ field: "disk", message: `disk ${disk} GiB is ${disk === now.disk ? "the same as" : "smaller than"} the disk now (${now.disk} GiB): a disk only grows (Proxmox VE cannot shrink one)` });
        } else {
          body.disk = disk;
          lines.push(["Root disk", `${now.disk === null ? "" : `${now.disk} GiB → `}${disk} GiB (it cannot be shrunk again)`]);
        }
      }
      if (noTags.checked) {
        body.tags = [];
        lines.push(["Tags", "every tag removed but 'provisioner'"]);
      } else {
        const tags = input("tags").value.split(/[\s,;]+/).filter(Boolean);
        if (tags.length) {
          body.tags = tags;
          lines.push(["Tags", `${tags.join(", ")} (replacing the current ones)`]);
        }
      }
      const onboot = input("onboot").value;
      if (onboot) {
        body.onboot = onboot === "true";
        lines.push(["Start with the node", body.onboot ? "yes" : "no"]);
      }
      const description = input("description").value;
      if (description.trim()) {
        body.description = description;
        lines.push(["Description", description.length > 120 ? `${description.slice(0, 120)}…` : description]);
      }
      if (snapshots.known() && protection.checked !== snapshots.protected()) {
        body.protection = protection.checked;
        lines.push(["Protection", protection.checked ? "on: no destroy and no rollback while it is set" : "off"]);
      }
      if (input("restart").checked) {
        body.restart = true;
        lines.push(["Restart", "afterwards, so that what Proxmox VE holds pending takes effect"]);
      }
      body.on_failure = form.querySelector('[name="on_failure"]:checked').value;
      return { body, lines, problems, resources: ["cores", "memory", "swap", "disk"].some((n) => n in body) };
    }

    function render() {
      const why = cannotChange("settings");
      const unavailable = document.getElementById("settings-unavailable");
      unavailable.hidden = !why;
      unavailable.textContent = why || "";
      document.getElementById("card-settings").hidden = Boolean(why);
      const pending = busyWith();
      document.getElementById("settings-submit").disabled = Boolean(pending || why);
      document.getElementById("settings-state").textContent = pending || "";
      if (changed("settings-protection", [snapshots.known(), snapshots.protected()])) syncProtection();
    }

    noTags.addEventListener("change", () => { input("tags").disabled = noTags.checked; });
    protection.addEventListener("change", () => { protectionTouched = true; });
    document.getElementById("settings-reset").addEventListener("click", fill);

    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearFieldErrors(form);
      errorBox.hidden = true;
      const { body, lines, problems, resources } = collect();
      if (problems.length) {
        showFieldErrors(form, { errors: problems });
        return;
      }
      if (!lines.length) {
        errorBox.textContent = "Nothing to change: change a value above, or tick Restart afterwards.";
        errorBox.hidden = false;
        return;
      }
      const how = resources
        ? body.on_failure === "keep"
          ? "A safety snapshot is taken first; if the change fails, the container is kept as the failure left it (the snapshot still holds it as it was)."
          : "A safety snapshot is taken first; if the change fails, the container is rolled back to it."
        : "Nothing else about the container changes.";
      const ok = await confirmDialog(`Change ${ct.hostname}?`, [
        el("p", {}, `These changes are made in place, in CT ${ct.vmid} on ${ct.node}:`),
        el("dl", { class: "kv change-list" }, lines.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
        el("p", { class: "small-text" }, how),
      ], "Apply", false);
      if (!ok) return;
      const submit = document.getElementById("settings-submit");
      submit.setAttribute("aria-busy", "true");
      try {
        const answer = await api("PATCH", base, body);
        toast(`Changing ${ct.hostname}…`, "info");
        follow(answer, "The change of settings", "Changing the settings");
      } catch (e) {
        const left = e.status === 400 ? showFieldErrors(form, e) : [e.message];
        if (left.length) { errorBox.textContent = left.join("; "); errorBox.hidden = false; }
      } finally {
        submit.removeAttribute("aria-busy");
      }
    });

    fill();
    return {
      render,
      // after a set that worked: the form shows the new values once the record has them
      refillOnNextRefresh() { refillWanted = true; },
      refill() { if (refillWanted && !change) { refillWanted = false; fill(); } },
    };
  })();

  // --- environment: its source, its clones; clone, sync, promote --------------------------------
  // The records come from GET /api/containers (stored state, no live status:
  // nothing here asks a node); a clone's source is looked up alone when the
  // list does not hold it.  A clone is a new container (201, its root
  // password once); a sync is a run of this clone; a promote is a run of the
  // source, followed on the source's stream.
  const environment = (function () {
    const details = document.getElementById("environment-details");
    const actionsBox = document.getElementById("environment-actions");
    const errorBox = document.getElementById("environment-error");
    const clonesBox = document.getElementById("clones");
    const stateBox = document.getElementById("environment-state");
    const RELOAD_MS = 5000;  // while the tab is open: the clones' lifecycles move on
    let list = null;      // every record, destroyed ones too, as the API lists them
    let source = null;    // this clone's source: its record, "gone", or null (not known yet)
    let error = null;     // why the last look-up failed
    let loading = null;   // the look-up under way (a promise)
    let stale = true;
    let loadedAt = 0;

    const detailUrl = (id) => `/containers/${encodeURIComponent(id)}`;
    const sourceKnown = () => source && source !== "gone";
    const clones = () => (list || []).filter((c) => c.source_id === ct.id && c.lifecycle !== "destroyed");
    const sourceName = () => (sourceKnown() ? source.hostname : "its source");

    async function load() {
      if (loading) return loading;
      stateBox.replaceChildren(el("span", { class: "spinner" }), " loading…");
      loading = (async () => {
        try {
          const data = await api("GET", "/api/containers?live=false&include_destroyed=true&limit=5000");
          let found = null;
          if (ct.source_id) {
            found = data.containers.find((c) => c.id === ct.source_id) || null;
            if (!found) {  // older than the list's newest 5000
              try { found = await api("GET", `/api/containers/${encodeURIComponent(ct.source_id)}`); }
              catch (e) { if (e.status === 404) found = "gone"; else throw e; }
            }
          }
          list = data.containers;
          source = found;
          error = null;
        } catch (e) {
          error = e.message;
        } finally {
          stale = false;
          loading = null;
          loadedAt = Date.now();
        }
        renderPage();
      })();
      return loading;
    }

    // why an action of this tab cannot be asked for now, or null
    function cannotClone() {
      if (!ct.owns_container && ["ready", "error"].includes(ct.lifecycle)) return "This record owns no container in Proxmox VE: there is nothing to clone.";
      if (ct.lifecycle !== "ready") return `Only a ready container can be cloned; ${ct.hostname} is ${ct.lifecycle}.`;
      return busyWith();
    }
    // action: "sync" (a run of this clone, its source read) or "promote" (a
    // run of the source, this clone read); the server's rules, as far as the
    // records tell (a run holding either is the server's to say)
    function cannotRefresh(action) {
      const verb = action === "sync" ? "sync from" : "promote to";
      if (!ct.source_id) return "Only a clone has a source.";
      if (source === "gone") return `The container ${ct.hostname} was cloned from no longer exists: there is nothing to ${verb}.`;
      if (!sourceKnown()) return error ? `Its source is unknown: ${error}` : "Looking up its source…";
      if (source.lifecycle === "destroyed" || source.lifecycle === "destroying") return `${source.hostname} is ${source.lifecycle}: there is nothing to ${verb}.`;
      for (const c of action === "sync" ? [ct, source] : [source, ct]) {
        if (!allows(c, action)) {
          return !c.owns_container && ["ready", "error"].includes(c.lifecycle)
            ? `${c.hostname} owns no container in Proxmox VE.` : `${c.hostname} is ${c.lifecycle}: wait until it is ready.`;
        }
      }
      return busyWith();
    }

    function actionBlock(id, label, cls, why, help, onclick) {
      return el("div", { class: "env-action" },
        el("button", { type: "button", class: cls, id, disabled: why ? true : null, title: why,
          "aria-describedby": `${id}-help`, onclick: (ev) => onclick(ev.currentTarget) }, label),
        el("p", { class: "field-help", id: `${id}-help` }, help, why ? el("span", { class: "env-why" }, ` ${why}`) : null));
    }

    function renderActions() {
      const src = sourceName();
      const blocks = [actionBlock("clone-open", "Clone…", "primary", cannotClone(),
        `A new container with ${ct.hostname}'s data and a fresh identity: its own machine id, SSH host keys and root password.`,
        cloneDialog)];
      if (ct.source_id) {
        blocks.push(
          actionBlock("sync-open", `Sync from ${src}`, "secondary", cannotRefresh("sync"),
            `${ct.hostname}'s data is replaced by ${src}'s; a snapshot of ${ct.hostname} is taken first.`, sync),
          actionBlock("promote-open", `Promote to ${src}`, "danger", cannotRefresh("promote"),
            `${src}'s data is replaced by ${ct.hostname}'s; a snapshot of ${src} is taken first and any failure rolls it back.`, promote));
      }
      actionsBox.replaceChildren(...blocks);
    }

    function sourceCell() {
      if (!ct.source_id) return el("span", { class: "muted", id: "environment-source" }, "not a clone");
      if (source === "gone") {
        return el("span", { class: "muted", id: "environment-source" }, "a container that no longer exists (",
          el("span", { class: "mono" }, ct.source_id.slice(0, 8)), ")");
      }
      if (!sourceKnown()) return el("span", { class: "muted", id: "environment-source" }, error ? "unknown" : "loading…");
      return el("span", { id: "environment-source", class: "row" },
        el("a", { href: detailUrl(source.id), id: "source-link" }, source.hostname),
        source.environment ? envTag(source.environment) : null,
        source.lifecycle !== "ready" ? el("span", { class: `badge badge-${source.lifecycle}` }, source.lifecycle) : null);
    }

    function renderClones() {
      const mine = clones();
      const count = document.getElementById("clones-count");
      count.hidden = !list || !mine.length;
      count.textContent = String(mine.length);
      document.getElementById("clones-state").textContent = list ? `${mine.length} clone${mine.length === 1 ? "" : "s"}` : "";
      if (error && !list) {
        clonesBox.replaceChildren(el("div", { class: "notice notice-error", role: "alert" }, el("strong", {}, "Cannot list the clones: "), error));
        return;
      }
      if (!list) { clonesBox.replaceChildren(el("p", { class: "muted" }, "Open this tab to list them.")); return; }
      if (!mine.length) {
        clonesBox.replaceChildren(el("p", { class: "muted", id: "clones-empty" }, `No clone of ${ct.hostname}.`));
        return;
      }
      clonesBox.replaceChildren(el("table", { class: "table compact", id: "clones-table" },
        el("thead", {}, el("tr", {}, el("th", {}, "Hostname"), el("th", {}, "Environment"), el("th", {}, "Lifecycle"), el("th", {}, "Created"))),
        el("tbody", {}, mine.map((c) => el("tr", { "data-id": c.id },
          el("td", {}, el("a", { href: ["pending", "creating"].includes(c.lifecycle) ? `${detailUrl(c.id)}/progress` : detailUrl(c.id) }, c.hostname)),
          el("td", {}, c.environment ? envTag(c.environment) : dash()),
          el("td", {}, el("span", { class: `badge badge-${c.lifecycle}` }, c.lifecycle)),
          el("td", { class: "nowrap" }, timeAgo(c.created_at)))))));
    }

    function render() {
      if (loading) return;
      stateBox.textContent = error ? `Cannot look it up: ${error}` : "";
      const summary = (c) => c && c !== "gone" ? [c.id, c.hostname, c.lifecycle, c.environment] : c;
      if (!changed("environment", [ct.environment, ct.source_id, ct.lifecycle, ct.owns_container, ct.hostname, summary(source),
        list && clones().map(summary), error, busyWith()])) return;
      kv(details, [
        ["Environment", ct.environment ? envTag(ct.environment, { id: "environment-badge" })
          : el("span", { class: "muted", id: "environment-badge" }, "none")],
        ["Cloned from", sourceCell()],
      ]);
      renderActions();
      renderClones();
    }

    // 409 and the like: said in the tab and as a toast
    function refused(what, e) {
      errorBox.replaceChildren(el("strong", {}, `${what} refused. `), el("span", { class: "error-message" }, e.message));
      errorBox.hidden = false;
      toast(`${what} refused: ${e.message}`, "error");
    }

    // --- clone: a form in a dialog; 400s are shown next to their fields -------------------------
    function cloneDialog() {
      errorBox.hidden = true;
      const r = ct.request || {};
      const field = (label, input, help) => el("div", { class: "field" },
        el("label", { for: input.id }, label), input,
        help ? el("span", { class: "field-help", id: `${input.id}-help` }, help) : null,
        el("span", { class: "field-error" }));
      const text = (name, attrs) => el("input", { type: "text", id: `clone-${name}`, name, spellcheck: "false", autocapitalize: "off",
        "aria-describedby": `clone-${name}-help`, ...attrs });
      const hostname = text("hostname", { class: "mono", maxlength: "253", required: true, placeholder: `${ct.hostname}-staging` });
      const env = text("environment", { maxlength: "32", list: "clone-environments", value: "staging" });
      const production = el("p", { class: "notice notice-warn small-text", id: "clone-production-note", hidden: true },
        "A production clone gets Proxmox VE's protection flag: it can be neither destroyed nor rolled back until it is unprotected.");
      env.addEventListener("input", () => { production.hidden = env.value.trim() !== "production"; });
      const [kind, kindChosen] = choiceGroup({ name: "full", legend: "Copy", options: [
        ["true", "Full copy", "an independent copy of the disk (the default)"],
        ["false", "Linked clone", "made from a snapshot of the source, on its storage (on LVM-thin: in a moment); the source keeps that snapshot"]] });
      const ipmode = el("div", { class: "radio-row", role: "radiogroup", "aria-label": "How the clone gets its address" },
        el("label", { class: "checkbox" }, el("input", { type: "radio", name: "ipmode", value: "dhcp", checked: true }), " DHCP"),
        el("label", { class: "checkbox" }, el("input", { type: "radio", name: "ipmode", value: "static" }), " Static address"));
      const ip = text("ip", { class: "mono", inputmode: "decimal", placeholder: "198.18.0.150/24" });
      const gateway = text("gateway", { class: "mono", inputmode: "decimal", placeholder: "198.18.0.1" });
      const staticFields = el("div", { class: "form-grid", id: "clone-static", hidden: true },
        field("Address with prefix length", ip, "CIDR form: the address, a slash, the prefix length."),
        field(el("span", {}, "Gateway ", el("span", { class: "optional" }, "(optional)")), gateway, "An address in the same network."));
      const isStatic = () => ipmode.querySelector("input:checked").value === "static";
      ipmode.addEventListener("change", () => { staticFields.hidden = !isStatic(); });
      const bridge = text("bridge", { class: "mono", maxlength: "64", placeholder: r.bridge || "the source's" });
      const storage = text("storage", { class: "mono", maxlength: "64", placeholder: r.storage || "the source's" });
      const more = el("details", { class: "clone-more" }, el("summary", {}, "Bridge and storage"),
        el("div", { class: "form-grid" },
          field(el("span", {}, "Bridge ", el("span", { class: "optional" }, "(optional)")), bridge, "Empty: the source's bridge."),
          field(el("span", {}, "Storage ", el("span", { class: "optional" }, "(optional)")), storage, "Empty: the source's storage.")));
      kind.addEventListener("change", () => {
        const linked = kindChosen() === "false";
        storage.disabled = linked;
        document.getElementById("clone-storage-help").textContent = linked
          ? "A linked clone stays on the source's storage (Proxmox VE's rule)." : "Empty: the source's storage.";
      });
      const formError = el("div", { class: "notice notice-error", id: "clone-error", role: "alert", hidden: true });
      const submit = el("button", { type: "submit", class: "primary", id: "clone-submit" }, "Clone");
      const form = el("form", { id: "clone-form", novalidate: true, autocomplete: "off" },
        field("Hostname", hostname, "The clone's name: letters, digits and hyphens; dots separate the parts of a full name."),
        field("Environment", env, "production, staging, development or another name (lower-case letters, digits, '-'). Empty: staging."),
        el("datalist", { id: "clone-environments" }, ENVIRONMENTS.map((name) => el("option", { value: name }))),
        production,
        el("div", { class: "field" }, kind, el("span", { class: "field-error" })),
        el("fieldset", { class: "dialog-choice" }, el("legend", {}, "IPv4 address"), ipmode, staticFields),
        more, formError,
        el("div", { class: "actions" },
          el("button", { type: "button", class: "secondary", onclick: () => dlg.close() }, "Cancel"), submit));
      const dlg = el("dialog", { class: "confirm form-dialog", id: "clone-dialog", "aria-labelledby": "clone-title" },
        el("h2", { id: "clone-title" }, `Clone ${ct.hostname}`),
        el("p", { class: "small-text" }, `A snapshot of ${ct.hostname} is taken (it keeps running) and copied into a new container `,
          "with the same template, resources and data; the clone then gets a fresh identity and its own address."),
        form);
      dlg.addEventListener("close", () => dlg.remove());

      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        clearFieldErrors(form);
        formError.hidden = true;
        const full = kindChosen() !== "false";
        const body = { hostname: hostname.value.trim(), full, ip: isStatic() ? ip.value.trim() : "dhcp" };
        if (env.value.trim()) body.environment = env.value.trim();
        if (isStatic() && gateway.value.trim()) body.gateway = gateway.value.trim();
        if (bridge.value.trim()) body.bridge = bridge.value.trim();
        if (full && storage.value.trim()) body.storage = storage.value.trim();
        submit.setAttribute("aria-busy", "true");
        submit.disabled = true;
        let answer;
        try {
          answer = await api("POST", `${base}/clone`, body);
        } catch (e) {
          if (e.errors.some((x) => ["bridge", "storage"].includes(x.field))) more.open = true;
          const left = e.status === 400 ? showFieldErrors(form, e) : [e.message];
          if (left.length) {
            formError.replaceChildren(el("strong", {}, e.status === 409 ? "Cannot clone now. " : "Not cloned. "), left.join("; "));
            formError.hidden = false;
          }
          return;
        } finally {
          submit.removeAttribute("aria-busy");
          submit.disabled = false;
        }
        dlg.close();
        stale = true;
        load();
        await cloneCreated(answer, body.hostname);
      });
      document.body.append(dlg);
      dlg.showModal();
      hostname.focus();
    }

    // the clone's root password, this one time, then where to go
    function cloneCreated(answer, hostname) {
      return new Promise((resolve) => {
        const page = detailUrl(answer.id);
        const password = answer.root_password;
        const secret = password ? el("code", { class: "secret", id: "root-password" }, password) : null;
        // the secret variables the template regenerates for a clone, new values shown once too
        const others = Object.entries(answer.generated_secrets || {});
        const otherCodes = others.map(([name, value]) => el("code", { class: "secret", id: `generated-${name}` }, value));
        const dlg = el("dialog", { class: "confirm password-dialog", id: "clone-created", "aria-labelledby": "clone-created-title" },
          el("h2", { id: "clone-created-title" }, `${hostname} is being cloned`),
          password ? el("p", {}, "The root password of ", el("strong", {}, hostname),
            " is shown this once. It is stored encrypted and no page shows it again.") : null,
          password ? el("div", { class: "secret-box" }, secret,
            el("button", { type: "button", class: "secondary small", id: "copy-password", onclick: () => copyText(password) }, "Copy")) : null,
          others.length ? el("div", { class: "generated-secrets" },
            el("p", {}, `New values of the template's secret variables, for the clone only, shown this once too:`),
            others.map(([name, value], i) => el("div", { class: "secret-row" },
              el("span", { class: "label mono", id: `generated-${name}-label` }, name),
              el("div", { class: "secret-box", role: "group", "aria-labelledby": `generated-${name}-label` }, otherCodes[i],
                el("button", { type: "button", class: "secondary small", "aria-label": `Copy ${name}`, onclick: () => copyText(value) }, "Copy"))))) : null,
          answer.warning ? el("div", { class: "notice notice-warn small-text" }, answer.warning)
            : el("p", { class: "muted small-text" }, `The clone of ${ct.hostname} has started: follow it in its progress view, or find it under Clones.`),
          el("div", { class: "actions" },
            el("button", { type: "button", class: "secondary", id: "password-saved", onclick: () => dlg.close() }, password || others.length ? "I have saved it" : "Close"),
            el("a", { class: "button secondary", id: "clone-page-link", href: page }, `Open ${hostname}`),
            el("a", { class: "button primary", id: "clone-progress-link", href: `${page}/progress` }, "Follow its progress")));
        dlg.addEventListener("cancel", (e) => { if (password || others.length) e.preventDefault(); });  // Escape must not lose them by accident
        dlg.addEventListener("close", () => {
          if (secret) secret.textContent = "";
          otherCodes.forEach((c) => { c.textContent = ""; });
          dlg.remove();
          resolve();
        });
        document.body.append(dlg);
        dlg.showModal();
        (document.getElementById("copy-password") || document.getElementById("clone-progress-link")).focus();
      });
    }

    // --- sync: a run of this clone ------------------------------------------------------------
    async function sync(button) {
      errorBox.hidden = true;
      button.setAttribute("aria-busy", "true");
      await load();  // as the records are now: the source still there and ready
      button.removeAttribute("aria-busy");
      const why = cannotRefresh("sync");
      if (why) { toast(why, "error"); return; }
      const src = source;
      const production = ct.environment === "production";
      const anonymise = el("input", { type: "checkbox", id: "sync-anonymise", name: "anonymise", checked: !production,
        "aria-describedby": "sync-anonymise-help" });
      const [group, chosen] = choiceGroup({ name: "on_failure", legend: "If the sync fails", options: [
        ["rollback", "Roll back to the safety snapshot", `${ct.hostname} is put back as it was before the sync`],
        ["keep", "Keep the clone as the failure left it", "for inspection; the safety snapshot still holds it as it was"]] });
      const ok = await confirmDialog(`Sync ${ct.hostname} from ${src.hostname}?`, [
        el("p", { class: "sync-replaces" }, el("strong", {}, `The data of ${ct.hostname} is replaced by ${src.hostname}'s.`),
          ` What the template exports from ${src.hostname} is imported into ${ct.hostname}; what ${ct.hostname} holds now is lost. `,
          `${src.hostname} itself is not changed.`),
        el("p", { class: "small-text" }, `A safety snapshot of ${ct.hostname} is taken first.`),
        el("div", { class: "field" },
          el("label", { class: "checkbox" }, anonymise, " Anonymise the copied data"),
          el("span", { class: "field-help", id: "sync-anonymise-help" }, production
            ? `Off by default: ${ct.hostname} is production.`
            : "The template's anonymisation runs on the data before it is used here: recommended for anything but production.")),
        group,
      ], "Sync", true);
      if (!ok) return;
      try {
        const answer = await api("POST", `${base}/sync`, { on_failure: chosen(), anonymise: anonymise.checked });
        toast(`Syncing ${ct.hostname} from ${src.hostname}…`, "info");
        follow(answer, "The sync", `Syncing from ${src.hostname}`);
      } catch (e) {
        refused("Sync", e);
      }
    }

    // --- promote: a run of the source -----------------------------------------------------------
    async function promote(button) {
      errorBox.hidden = true;
      button.setAttribute("aria-busy", "true");
      await load();
      button.removeAttribute("aria-busy");
      const why = cannotRefresh("promote");
      if (why) { toast(why, "error"); return; }
      const src = source;
      const ok = await confirmDialog(`Promote ${ct.hostname} to ${src.hostname}?`, [
        el("p", { class: "promote-replaces" }, el("strong", {}, `The data of ${src.hostname}${src.environment ? ` (${src.environment})` : ""} is replaced by ${ct.hostname}'s.`),
          ` What ${src.hostname} holds now is lost, but for the safety snapshot.`),
        el("p", { class: "small-text" }, `A safety snapshot of ${src.hostname} is taken first; if anything fails, ${src.hostname} is rolled back to it. `,
          `${ct.hostname} itself is not changed.`),
        el("p", { class: "small-text" }, `The data goes as ${ct.hostname} holds it: if it was synced with anonymisation, its personal data is scrubbed.`),
      ], `Promote to ${src.hostname}`, true, { mustType: src.hostname });
      if (!ok) return;
      try {
        const answer = await api("POST", `${base}/promote`, { on_failure: "rollback" });
        toast(`Promoting ${ct.hostname} to ${src.hostname}…`, "info");
        follow(answer, "The promotion", `Promoting to ${src.hostname}`, src.hostname);
      } catch (e) {
        refused("Promote", e);
      }
    }

    document.getElementById("environment-reload").addEventListener("click", load);
    return {
      render,
      open() { if (stale || !list) load(); else render(); },
      stale() { stale = true; if (activeTab === "environment") load(); },
      // while the tab is open: the clones' lifecycles, the source's
      follow() { if (!loading && Date.now() - loadedAt > RELOAD_MS) load(); },
    };
  })();

  // --- tabs -----------------------------------------------------------------------------------
  let activeTab = "overview";
  const TABS = ["overview", "timeline", "log", "snapshots", "settings", "environment"];
  function showTab(name, push) {
    if (!TABS.includes(name)) name = "overview";
    activeTab = name;
    for (const t of TABS) {
      document.getElementById(`tab-${t}`).setAttribute("aria-selected", String(t === name));
      document.getElementById(`tab-${t}`).tabIndex = t === name ? 0 : -1;
      document.getElementById(`panel-${t}`).hidden = t !== name;
    }
    if (push) history.replaceState(null, "", name === "overview" ? location.pathname : `#${name}`);
    if (name === "log") log.open();
    if (name === "snapshots") snapshots.open();
    if (name === "environment") environment.open();
  }
  document.querySelectorAll('[role="tab"]').forEach((tab) => {
    tab.addEventListener("click", () => showTab(tab.id.replace("tab-", ""), true));
    tab.addEventListener("keydown", (ev) => {
      const order = TABS;
      const i = order.indexOf(activeTab);
      if (ev.key === "ArrowRight" || ev.key === "ArrowLeft") {
        const next = order[(i + (ev.key === "ArrowRight" ? 1 : order.length - 1)) % order.length];
        showTab(next, true);
        document.getElementById(`tab-${next}`).focus();
      }
    });
  });
  document.querySelectorAll("[data-tab]").forEach((a) => a.addEventListener("click", (ev) => {
    ev.preventDefault();
    showTab(a.dataset.tab, true);
  }));
  window.addEventListener("hashchange", () => showTab(location.hash.slice(1), false));

  render();
  showTab(location.hash.slice(1), false);
  if (activeTab !== "snapshots") snapshots.load();  // the header's "protected" badge, the settings' toggle
  timeline.start();
  setInterval(() => document.querySelectorAll("#ct-subtitle time[datetime]").forEach((t) => { t.textContent = ago(t.getAttribute("datetime")); }), 5000);
  const poll = poller(refresh, () => (busy || change ? BUSY_POLL_MS : ["pending", "creating", "destroying"].includes(ct.lifecycle) ? 2000 : POLL_MS));
})();
