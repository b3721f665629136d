// One container: overview (live), events timeline, full log, actions.
// The page starts from the stored state the server rendered into
// #container-data, then polls GET /api/containers/<id> (live PVE status);
// the timeline fetches events by seq only when last_seq moved on.
"use strict";
(function () {
  const { api, el, bytes, duration, containerState, stateBadge, allowedActions, containerAction, poller,
    when, ago, timeAgo, copyText } = window.App;
  const readJson = (id) => JSON.parse(document.getElementById(id).textContent);
  let ct = readJson("container-data");
  const defaults = readJson("template-defaults") || {};
  const base = `/api/containers/${encodeURIComponent(ct.id)}`;
  const POLL_MS = 3000, BUSY_POLL_MS = 1000, BUSY_MAX_MS = 90000;
  let busy = null; // {action, status, lifecycle, since}: asked for, not shown yet
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
    if (changed("status", [st, live, ct.lifecycle])) {
      const box = document.getElementById("ct-status");
      box.replaceChildren(stateBadge(st, { id: "status-badge" }),
        ct.lifecycle === "error" && live ? el("span", { class: `badge badge-${live}`, title: "live status in PVE" }, `${live} in PVE`) : "");
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

  function renderNotices() {
    if (!changed("notices", [ct.lifecycle, ct.error, ct.error_details, ct.pve_error, ct.owns_container, ct.current_phase, ct.finished_at])) return;
    const box = document.getElementById("ct-notices");
    const items = [];
    if (ct.lifecycle === "error") items.push(errorNotice());
    if (ct.lifecycle === "creating" || ct.lifecycle === "pending") {
      items.push(el("div", { class: "notice notice-info" },
        el("strong", {}, ct.lifecycle === "pending" ? "Queued. " : `Provisioning: ${ct.current_phase || "starting"}. `),
        "Follow every step in the ", el("a", { href: `/containers/${encodeURIComponent(ct.id)}/progress` }, "live progress view"), "."));
    }
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
    box.replaceChildren(...items);
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
      ["Template", el("a", { href: `/templates/${encodeURIComponent(ct.template)}` }, ct.template)],
      ["VMID", ct.vmid !== null && ct.owns_container ? el("span", { class: "mono" }, String(ct.vmid))
        : ["ready", "error"].includes(ct.lifecycle) ? el("span", { class: "muted", id: "vmid-none" }, "none: this record owns no container") : null],
      ["Phase", ct.current_phase],
      ["Finished phases", phases],
      ["Scripts run", ct.finished_scripts.length ? el("span", { class: "mono small-text" }, ct.finished_scripts.join(", ")) : null],
      ["Network", `${r.ip || "dhcp"}${r.gateway ? ` via ${r.gateway}` : ""}${r.bridge ? ` on ${r.bridge}` : ""}`],
      r.storage && ["Storage", r.storage],
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
    render();
    poll.now();
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
    render();
    await timeline.follow();
    if (activeTab === "log") log.follow();
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

    function add(e) {
      if (e.type === "log") { logLines += 1; return; }
      flushLogCount();
      if (lastType === "complete" || lastType === "error") {
        run += 1;
        // an action's run says what it was; start/stop/reboot have no phases to show
        const power = /^(start|stop|reboot) CT /.exec(e.message || "");
        runKind = power ? power[1] : /^destroy/.test(e.message || "") ? "destroy" : "provision";
        const label = { start: "Start", stop: "Stop", reboot: "Reboot", destroy: "Destroy", provision: "Provisioning" }[runKind];
        list.append(el("li", { class: "timeline-run", "data-run": String(run) },
          el("span", { class: "what" }, `Run ${run} · ${label}`), el("span", { class: "when" }, time(e.ts))));
        lastPhase = null;
      }
      if (e.phase && e.phase !== lastPhase && e.type === "step" && !["start", "stop", "reboot"].includes(runKind)) {
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

  // --- tabs -----------------------------------------------------------------------------------
  let activeTab = "overview";
  function showTab(name, push) {
    if (!["overview", "timeline", "log"].includes(name)) name = "overview";
    activeTab = name;
    for (const t of ["overview", "timeline", "log"]) {
      document.getElementById(`tab-${t}`).setAttribute("aria-selected", String(t === name));
      document.getElementById(`tab-${t}`).tabIndex = t === name ? 0 : -1;
      document.getElementById(`panel-${t}`).hidden = t !== name;
    }
    if (push) history.replaceState(null, "", name === "overview" ? location.pathname : `#${name}`);
    if (name === "log") log.open();
  }
  document.querySelectorAll('[role="tab"]').forEach((tab) => {
    tab.addEventListener("click", () => showTab(tab.id.replace("tab-", ""), true));
    tab.addEventListener("keydown", (ev) => {
      const order = ["overview", "timeline", "log"];
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
  timeline.start();
  setInterval(() => document.querySelectorAll("#ct-subtitle time[datetime]").forEach((t) => { t.textContent = ago(t.getAttribute("datetime")); }), 5000);
  const poll = poller(refresh, () => (busy ? BUSY_POLL_MS : ["pending", "creating", "destroying"].includes(ct.lifecycle) ? 2000 : POLL_MS));
})();
