// The progress view: a container coming to life, live.
//
// Events arrive from the relay (/ws/containers/<id>/events?after=<seq>), one
// JSON event per message: the history first, then live ones.  Every event is
// kept (the download has them all); the stepper, the percent bar and the
// console are redrawn at most once per animation frame, so a replay of tens
// of thousands of lines does not freeze the page.  A dropped socket is
// reopened with ?after=<last seq received>: nothing lost, nothing repeated.
// The relay ends the stream after a terminal event (complete or error); the
// container's state is then read from the REST API, and the socket is
// reopened to follow whatever comes next (a retry, a destroy).
"use strict";
(function () {
  const { api, el, duration, toast, confirmDialog, copyText } = window.App;

  const MAX_DOM_LINES = 10000;   // console lines kept in the page; the download has every line
  const LINES_PER_FRAME = 1500;  // DOM lines added per animation frame
  const SETTLED = new Set(["ready", "error", "destroyed"]);
  // The events have no "action" field: a destroy or a power action is told
  // apart from provisioning by its step messages (pipeline/job.py).
  const DESTROY_STEP = /^(destroying CT \d+|destroyed)$/;
  const POWER_STEP = /^(start|stop|reboot) (CT \d+|done)$/;

  const root = document.getElementById("progress");
  const boot = JSON.parse(document.getElementById("progress-data").textContent);
  // the phases, in order, with their labels: from the server (provisioner/phases.py)
  const PHASES = boot.phases.map((p) => p.name);
  const PHASE_LABELS = Object.fromEntries(boot.phases.map((p) => [p.name, p.label]));
  // Phases whose steps say how far they are: the stepper shows the latest
  // under the phase (a sandbox's import: "42/171 items, 3.1/12.0 MiB, about
  // 40s left"), and its time left counts in the ETA.
  const DETAILED = new Set(["import"]);
  const TIME_LEFT = /\babout (\d+)s left\b/;
  const clockSkew = Date.parse(boot.now) - Date.now();  // the server's clock minus ours
  const serverNow = () => Date.now() + clockSkew;
  const $ = (id) => document.getElementById(id);
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // ---- the run, as the events tell it ---------------------------------------------

  const run = {
    // detail: the latest step message of a DETAILED phase, at detailAt (ms)
    phases: Object.fromEntries(PHASES.map((p) => [p, { state: "pending", start: null, end: null, detail: null, detailAt: null }])),
    active: null,       // the phase running now
    percent: 0,
    start: null,        // ms: first event of the latest provisioning attempt
    end: null,          // ms: its terminal event
    outcome: null,      // "complete" | "error" of the latest provisioning attempt
    step: "",           // the latest step's message
    segment: null,      // "provision" | "destroy" | "power" while one is under way
    attempts: 0,
    recovering: null,   // the "recovering" event's message while the run is handed on
  };

  function actionOf(ev) {
    if (ev.type !== "step") return null;
    if (DESTROY_STEP.test(ev.message)) return "destroy";
    if (POWER_STEP.test(ev.message)) return "power";
    return null;
  }

  function activate(phase, t) {
    const index = PHASES.indexOf(phase);
    PHASES.forEach((p, i) => {
      const ph = run.phases[p];
      if (i < index) {
        if (ph.state === "active") ph.end = t;
        ph.state = "done";  // finished, or skipped because an earlier attempt finished it
      } else if (i === index) {
        Object.assign(ph, { state: "active", start: t, end: null });
      } else {
        Object.assign(ph, { state: "pending", start: null, end: null, detail: null, detailAt: null });
      }
    });
    run.active = phase;
  }

  function beginSegment(ev, t) {
    run.segment = actionOf(ev) || "provision";
    if (run.segment !== "provision") {
      addSeparator(run.segment === "destroy" ? "destroy" : "power action", ev.seq);
      return;
    }
    run.attempts += 1;
    if (run.attempts > 1) {
      addSeparator(`${run.outcome === "error" ? "retry" : "run again"} · attempt ${run.attempts}`, ev.seq);
    }
    for (const p of PHASES) if (run.phases[p].state === "failed") run.phases[p].state = "pending";
    Object.assign(run, { start: t, end: null, outcome: null, active: null });
  }

  function endSegment(ev, t) {
    if (run.segment === "provision") {
      run.end = t;
      run.outcome = ev.type;
      if (ev.type === "complete") {
        for (const p of PHASES) {
          const ph = run.phases[p];
          if (ph.state === "active") ph.end = t;
          ph.state = "done";
        }
        run.percent = 100;
        run.active = null;
      } else {
        const failed = run.phases[run.active || ev.phase];
        if (failed) Object.assign(failed, { state: "failed", end: t });
      }
    }
    run.step = ev.message;
    run.segment = null;
  }

  function apply(ev) {
    const t = Date.parse(ev.ts);
    if (run.segment === null) beginSegment(ev, t);
    const action = actionOf(ev);
    if (run.segment === "provision" && !action && run.outcome === null) {
      if (ev.phase && ev.phase !== run.active) activate(ev.phase, t);
      if (ev.percent !== undefined && ev.percent !== null) run.percent = ev.percent;
    }
    if (ev.type === "recovering") run.recovering = ev.message;
    else if (ev.type === "step" || ev.type === "complete" || ev.type === "error") run.recovering = null;
    if (ev.type === "step") {
      run.step = ev.message;
      if (DETAILED.has(ev.phase) && run.phases[ev.phase] && run.segment === "provision") {
        Object.assign(run.phases[ev.phase], { detail: ev.message, detailAt: t });
      }
      const vmid = ev.phase === "create" && /\bCT (\d+)\b/.exec(ev.message);
      if (vmid) $("vmid").textContent = `CT ${vmid[1]}`;
    }
    addRow(ev);
    if (ev.type === "complete" || ev.type === "error") endSegment(ev, t);
  }

  // ---- receiving: every event once, in order --------------------------------------

  const events = [];      // every event received (the download)
  let incoming = [];      // received, not applied yet
  let lastSeq = 0;
  let openSegment = null; // the segment under way as the socket sees it (for the lifecycle)
  let lifecycle = boot.lifecycle;

  // The latest terminal event not acted on yet: whichever path brought it
  // (a socket, a poll) and whichever notices the stream's end acts on it.
  let unsettled = null;

  function receive(ev) {
    if (ev.seq <= lastSeq) return;  // already have it
    if (ev.seq !== lastSeq + 1) console.warn(`progress: events ${lastSeq + 1}..${ev.seq - 1} are missing`);
    lastSeq = ev.seq;
    events.push(ev);
    incoming.push(ev);
    const terminal = ev.type === "complete" || ev.type === "error";
    if (openSegment === null) {
      openSegment = actionOf(ev) || "provision";
      if (ev.seq > boot.last_seq) segmentStarted(openSegment);
    }
    if (ev.seq > boot.last_seq && !terminal) {
      // live, not history: the lifecycle follows the events
      if (openSegment === "destroy" || actionOf(ev) === "destroy") setLifecycle("destroying");
      else if (openSegment === "provision") setLifecycle("creating");
    }
    if (terminal) {
      openSegment = null;
      unsettled = ev;
    }
    schedule();
  }

  function segmentStarted(kind) {
    settled = false;
    if (kind === "destroy") showDestroying();
    else if (kind === "provision") hideOutcome();
    if (connState === "finished") setConn("live");
  }

  // ---- the connection ----------------------------------------------------------------

  let ws = null;
  let drops = 0;
  let reconnectTimer = null;
  let connState = "connecting";
  let settled = false;  // the stream ended and the outcome is shown

  function setConn(state, text, title) {
    connState = state;
    const box = $("connection");
    box.dataset.state = state;
    box.title = title || "";
    box.querySelector(".conn-text").textContent = text || {
      connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…", finished: "Finished",
      polling: "Live (polling)", recovering: "Recovering",
    }[state];
  }

  function connect() {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    if (ws) {
      ws.onclose = null;
      ws.close();
    }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const sock = new WebSocket(`${scheme}//${location.host}${boot.urls.ws}?after=${lastSeq}`);
    ws = sock;
    sock.onopen = () => {
      drops = 0;
      stopPolling();
      if (!settled) setConn("live");
    };
    sock.onmessage = (msg) => receive(JSON.parse(msg.data));
    sock.onclose = () => {
      if (ws !== sock) return;
      ws = null;
      if (!takeTerminal()) dropped();
    };
  }

  function dropped() {
    if (polling) return;  // the poll loop tries the socket again now and then
    drops += 1;
    const delay = Math.min(10000, 500 * 2 ** Math.min(drops - 1, 5)) * (0.8 + Math.random() * 0.4);
    if (!settled) {
      setConn("reconnecting", navigator.onLine ? `Reconnecting… (attempt ${drops})`
        : "Offline: reconnecting when the network is back");
    }
    reconnectTimer = setTimeout(connect, delay);
    if (drops % 3 === 0 && navigator.onLine) diagnose();
  }

  // A socket refused again and again: ask the stream's URL with a plain
  // request what is wrong.  404: the container is gone; 401: the login
  // expired (api() goes to the login page); 503: the server's streams are
  // all taken; 426: HTTP gets through but websockets do not (a proxy).  In
  // the last two cases the REST API is polled instead, and the socket tried
  // again now and then.
  async function diagnose() {
    let status = 0;
    try {
      status = (await fetch(`${boot.urls.ws}?after=${lastSeq}`, { credentials: "same-origin" })).status;
    } catch (e) {
      return;  // the server is unreachable: keep reconnecting
    }
    if (ws && ws.readyState === WebSocket.OPEN) return;  // it came back meanwhile
    if (status === 404) gone();
    else if (status === 401) api("GET", boot.urls.api).catch(() => {});
    else if (status === 503) startPolling("The server serves as many live streams as it can; following by polling instead.");
    else if (status === 426) startPolling("Live updates do not get through to this browser (a proxy that does not pass websockets?); following by polling instead.");
  }

  const POLL_MS = 2000;
  const SOCKET_RETRY_POLLS = 15;  // try the socket again every 30 s
  let polling = false;
  let pollTimer = null;
  let polls = 0;

  function startPolling(reason) {
    if (polling) return;
    polling = true;
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    if (ws) {
      ws.onclose = null;
      ws.close();
      ws = null;
    }
    if (!settled) setConn("polling", null, reason);
    poll();
  }

  function stopPolling() {
    if (!polling) return;
    polling = false;
    clearTimeout(pollTimer);
    pollTimer = null;
  }

  async function poll() {
    pollTimer = null;
    try {
      for (;;) {
        const page = await api("GET", `${boot.urls.api}/events?after=${lastSeq}&limit=2000`);
        for (const ev of page.events) receive(ev);
        if (!page.more) break;
      }
    } catch (e) {
      if (e.status === 404) { stopPolling(); gone(); return; }
    }
    if (!polling) {  // the socket is back: it sees the end, or this poll did
      if (!ws) takeTerminal();
      return;
    }
    if (!takeTerminal() && !settled && connState !== "polling") {
      setConn("polling", null, $("connection").title);
    }
    polls += 1;
    if (polls % SOCKET_RETRY_POLLS === 0 && !ws) connect();
    pollTimer = setTimeout(poll, POLL_MS);
  }

  // the browser knows first that the network is gone: say so now, not when
  // the socket times out; and try again as soon as it is back
  window.addEventListener("offline", () => {
    if (!ws) return;
    const sock = ws;
    ws = null;
    sock.onclose = null;
    sock.close();
    if (!takeTerminal()) dropped();
  });
  window.addEventListener("online", () => {
    if (reconnectTimer !== null) connect();
  });

  // Act on the terminal event received and not acted on yet; false if none.
  function takeTerminal() {
    if (unsettled === null) return false;
    const ev = unsettled;
    unsettled = null;
    afterTerminal(ev);
    return true;
  }

  function afterTerminal(ev) {
    if (ev.seq < boot.last_seq) {
      connect();  // history: the page was made after later events
      return;
    }
    settle();
  }

  // The stream ended: read the outcome, then follow whatever comes next.
  async function settle() {
    for (let i = 0; i < 30; i++) {
      let ct;
      try {
        ct = await api("GET", boot.urls.api);
      } catch (e) {
        if (e.status === 404) { gone(); return; }
        await sleep(1000);
        continue;
      }
      if (ct.last_seq > lastSeq) break;  // more events already: read them
      if (SETTLED.has(ct.lifecycle)) {
        showOutcome(ct);
        if (ct.lifecycle === "destroyed") return;
        break;
      }
      await sleep(Math.min(2000, 150 * (i + 1)));  // the row lags the event by a moment
    }
    if (!ws && !polling) connect();
  }

  function gone() {
    stopPolling();
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    settled = true;
    setConn("finished", "Gone");
    showNotice("notice-warn", "This container no longer exists.", el("a", { href: boot.urls.list }, "Back to the containers"));
  }

  // ---- outcome panels -------------------------------------------------------------------

  const outcome = $("outcome");

  function setLifecycle(value) {
    if (value === lifecycle && root.dataset.lifecycle === value) return;
    lifecycle = value;
    root.dataset.lifecycle = value;
    const badge = $("lifecycle-badge");
    badge.className = `badge badge-${value}`;
    badge.textContent = value;
    schedule();
  }

  function hideOutcome() {
    settled = false;
    outcome.hidden = true;
    outcome.replaceChildren();
  }

  function showNotice(kind, ...children) {
    outcome.replaceChildren(el("div", { class: `notice ${kind}` }, ...children));
    outcome.hidden = false;
  }

  function showOutcome(ct) {
    settled = true;
    setLifecycle(ct.lifecycle);
    setConn("finished");
    if (ct.vmid) $("vmid").textContent = `CT ${ct.vmid}`;
    if (ct.attempts > 1) {
      $("attempt").hidden = false;
      $("attempt").querySelector("b").textContent = ct.attempts;
    }
    if (ct.lifecycle === "ready") showSuccess(ct);
    else if (ct.lifecycle === "error") showFailure(ct, true);
    else {
      const destroyed = el("div", { class: "notice notice-warn", id: "destroyed" },
        el("strong", {}, `${ct.hostname} was destroyed.`), " ",
        el("a", { href: boot.urls.list }, "Back to the containers"));
      // destroyed by its failure policy: what failed still matters
      const failed = ct.failure_policy === "destroy" && ct.error_details;
      outcome.replaceChildren(destroyed, ...(failed ? [failureCard(ct, false)] : []));
      outcome.hidden = false;
    }
  }

  function kv(rows) {
    return el("dl", { class: "kv" }, rows.filter(Boolean).flatMap(([k, v, field]) =>
      [el("dt", {}, k), el("dd", { "data-field": field }, v)]));
  }

  function showSuccess(ct) {
    const ssh = `ssh root@${ct.ip}`;
    const services = ct.services || [];
    outcome.replaceChildren(el("div", { class: "card success", id: "success" },
      el("h2", {}, el("span", { class: "ok-mark", "aria-hidden": "true" }, "✔"), ` ${ct.hostname} is ready`),
      kv([
        ["IP address", el("span", { class: "mono" }, ct.ip || "–"), "ip"],
        ["SSH", el("span", { class: "copy-row" },
          el("code", { class: "mono", id: "ssh-command" }, ssh),
          el("button", { type: "button", class: "secondary small", id: "copy-ssh", onclick: () => copyText(ssh) }, "Copy")), "ssh"],
        ct.ssh_host_key_fingerprint && ["Host key", el("span", { class: "mono muted" }, ct.ssh_host_key_fingerprint), "host-key"],
        ["Container", ct.vmid ? `CT ${ct.vmid} on node ${ct.node}` : `node ${ct.node}`, "vmid"],
      ]),
      el("h3", {}, "Services"),
      services.length
        ? el("table", { class: "table compact services", id: "services" },
          el("thead", {}, el("tr", {}, el("th", {}, "Port"), el("th", {}, "Protocol"), el("th", {}, "Address"), el("th", {}, "Process"))),
          el("tbody", {}, services.map((s) => el("tr", {},
            el("td", { class: "mono" }, s.port), el("td", {}, s.proto),
            el("td", { class: "mono" }, s.address), el("td", {}, s.process || "–")))))
        : el("p", { class: "muted", id: "services" }, "No listening services found."),
      el("p", { class: "links" }, el("a", { href: boot.urls.detail }, "Container details →"))));
    outcome.hidden = false;
  }

  function showFailure(ct, actions) {
    outcome.replaceChildren(failureCard(ct, actions));
    outcome.hidden = false;
  }

  function failureCard(ct, actions) {
    const d = ct.error_details || {};
    const phase = d.phase || run.active || "";
    const exit = d.timed_out ? "timed out" : (d.exit_code ?? null);
    const lines = d.last_lines || [];
    const title = ["Failed in", PHASE_LABELS[phase] || phase || "an unknown phase"];
    if (d.script) title.push("·", d.script);
    const retry = el("button", { type: "button", class: "primary", id: "retry" }, "Retry");
    const destroy = el("button", { type: "button", class: "danger", id: "destroy" }, "Destroy");
    retry.addEventListener("click", () => doRetry(retry, destroy));
    destroy.addEventListener("click", () => doDestroy(ct, retry, destroy));
    return el("div", { class: "notice notice-error failure", id: "failure", role: "alert" },
      el("h2", {}, title.join(" ")),
      kv([
        ["Phase", PHASE_LABELS[phase] || phase || "–", "phase"],
        d.script && ["Script", el("span", { class: "mono" }, d.script), "script"],
        exit !== null && ["Exit code", el("span", { class: "mono" }, String(exit)), "exit-code"],
      ]),
      el("p", { class: "failure-message", "data-field": "message" }, d.message || ct.error || run.step),
      d.hint && el("p", { class: "hint", "data-field": "hint" }, d.hint),
      lines.length > 0 && el("div", { class: "tail-box" },
        el("div", { class: "tail-title muted" }, `Last ${lines.length} line${lines.length === 1 ? "" : "s"} of output`),
        el("pre", { class: "tail mono", "data-field": "last-lines" }, lines.join("\n"))),
      actions && el("div", { class: "actions" }, retry, destroy,
        el("a", { href: boot.urls.detail }, "Container details →")));
  }

  function showDestroying() {
    showNotice("notice-warn destroying", el("span", { class: "spinner", "aria-hidden": "true" }),
      el("strong", {}, `Destroying ${boot.hostname}…`), " The log below follows it.");
  }

  async function doRetry(retry, destroy) {
    retry.disabled = destroy.disabled = true;
    try {
      await api("POST", `${boot.urls.api}/actions/retry`);
    } catch (e) {
      toast(`Retry failed: ${e.message}`, "error");
      retry.disabled = destroy.disabled = false;
      return;
    }
    hideOutcome();
    setLifecycle("pending");
    setConn("live");
    run.step = "retry queued: waiting for a worker…";
    schedule();
    if (!ws) connect();
  }

  async function doDestroy(ct, retry, destroy) {
    const what = ct.vmid ? `CT ${ct.vmid} (${ct.hostname}) on node ${ct.node}` : ct.hostname;
    const ok = await confirmDialog(`Destroy ${ct.hostname}?`,
      `This stops and deletes ${what} with all its data. It cannot be undone.`, "Destroy", true);
    if (!ok) return;
    retry.disabled = destroy.disabled = true;
    try {
      await api("POST", `${boot.urls.api}/actions/destroy`);
    } catch (e) {
      toast(`Destroy failed: ${e.message}`, "error");
      retry.disabled = destroy.disabled = false;
      return;
    }
    settled = false;
    setLifecycle("destroying");
    setConn("live");
    showDestroying();
    if (!ws) connect();
  }

  // ---- the console ------------------------------------------------------------------------

  const consoleEl = $("console");
  const filterEl = $("log-filter");
  const rows = [];          // every event applied, and separators
  const scripts = new Map(); // script -> {option, lines}
  let filter = "";
  let pending = [];         // rows waiting for the DOM
  let matching = 0;         // rows that pass the filter
  let follow = true;        // keep the newest line in view
  let unseen = 0;           // lines added while not following

  function addRow(ev) {
    rows.push(ev);
    if (ev.type === "log" && ev.script) {
      let s = scripts.get(ev.script);
      if (!s) {
        s = { option: el("option", { value: ev.script }, ev.script), lines: 0 };
        scripts.set(ev.script, s);
        filterEl.append(s.option);
      }
      s.lines += 1;
    }
    if (matches(ev)) {
      pending.push(ev);
      matching += 1;
    }
  }

  function addSeparator(text, seq) {
    addRow({ type: "sep", message: text, seq });  // seq: of the event it comes before
  }

  function matches(row) {
    if (!filter) return true;
    return row.type === "log" && row.script === filter;
  }

  let lastClockKey = "";
  let lastClock = "";
  function clock(ts) {
    const key = ts.slice(0, 19);
    if (key !== lastClockKey) {
      const d = new Date(ts);
      lastClockKey = key;
      lastClock = [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":");
    }
    return lastClock;
  }

  const ROW_CLASS = { step: "step", warning: "warning", recovering: "warning recovering", error: "error", complete: "complete" };
  const ROW_MARK = { warning: "⚠ ", recovering: "↻ ", error: "✖ ", complete: "✔ " };

  function rowNode(row) {
    const div = document.createElement("div");
    if (row.type === "sep") {
      div.className = "sep";
      div.textContent = row.message;
      return div;
    }
    div.className = "line " + (row.type === "log" ? (row.stream || "plain") : ROW_CLASS[row.type]);
    div.dataset.seq = row.seq;
    div.dataset.type = row.type;
    if (row.script) div.dataset.script = row.script;
    if (row.stream) div.dataset.stream = row.stream;
    const ts = document.createElement("span");
    ts.className = "ts";
    ts.textContent = clock(row.ts);
    div.append(ts);
    if (row.type === "step" && row.phase) {
      const tag = document.createElement("span");
      tag.className = "phase-tag";
      tag.textContent = row.phase;
      div.append(tag);
    }
    div.append((ROW_MARK[row.type] || "") + row.message);
    return div;
  }

  function renderConsole() {
    if (pending.length > MAX_DOM_LINES) pending = pending.slice(-MAX_DOM_LINES);
    if (follow && !filter && pending.length && pending[0].seq <= boot.last_seq - MAX_DOM_LINES) {
      // replaying a long history: lines the later ones will push out of the
      // console anyway are not drawn at all
      const cut = boot.last_seq - MAX_DOM_LINES;
      let i = 0;
      while (i < pending.length && pending[i].seq <= cut) i++;
      pending = pending.slice(i);
    }
    if (pending.length) {
      const batch = pending.length > LINES_PER_FRAME ? pending.slice(0, LINES_PER_FRAME) : pending;
      pending = pending.length > LINES_PER_FRAME ? pending.slice(LINES_PER_FRAME) : [];
      const frag = document.createDocumentFragment();
      for (const row of batch) frag.append(rowNode(row));
      consoleEl.append(frag);
      if (!follow) unseen += batch.length;
    }
    if (follow) {
      let excess = consoleEl.childElementCount - MAX_DOM_LINES;
      while (excess-- > 0) consoleEl.firstElementChild.remove();
      consoleEl.scrollTop = consoleEl.scrollHeight;
    } else if (consoleEl.childElementCount > 2 * MAX_DOM_LINES) {
      // reading, not following, while lines pour in: trim anyway, keeping the view still
      const height = consoleEl.scrollHeight;
      let excess = consoleEl.childElementCount - MAX_DOM_LINES;
      while (excess-- > 0) consoleEl.firstElementChild.remove();
      consoleEl.scrollTop -= height - consoleEl.scrollHeight;
    }
    const hidden = matching - consoleEl.childElementCount - pending.length;
    const note = $("console-trimmed");
    note.hidden = hidden <= 0;
    if (hidden > 0) note.textContent = `${hidden.toLocaleString()} earlier line${hidden === 1 ? "" : "s"} not shown here: the download has everything.`;
    $("console-empty").hidden = consoleEl.childElementCount > 0 || pending.length > 0;
    $("console-empty").textContent = filter ? `No output from ${filter} yet.` : "No output yet.";
    const logLines = events.length;
    $("line-count").textContent = `${logLines.toLocaleString()} event${logLines === 1 ? "" : "s"}`;
    for (const [name, s] of scripts) s.option.textContent = `${name} (${s.lines.toLocaleString()})`;
    const button = $("follow");
    button.hidden = follow;
    button.textContent = unseen ? `↓ Follow (${unseen.toLocaleString()} new)` : "↓ Follow new lines";
  }

  function setFollow(value) {
    if (value === follow) return;
    follow = value;
    consoleEl.dataset.autoscroll = value ? "on" : "off";
    if (value) unseen = 0;
    schedule();
  }

  // Following stops only when the reader scrolls away (wheel, touch, keys, the
  // scrollbar), not when a resize or a screenshot moves the view, and starts
  // again once the view is back at the bottom.
  // An upward wheel or key stops following at once: waiting for its scroll
  // event would race the next batch of lines, which scrolls to the bottom.
  let readerScrolledAt = -Infinity;
  let readerUpAt = -Infinity;
  const UP_KEYS = new Set(["ArrowUp", "PageUp", "Home"]);
  const readerUp = () => {
    readerUpAt = performance.now();
    setFollow(false);
  };
  for (const type of ["wheel", "touchmove", "keydown", "pointerdown"]) {
    consoleEl.addEventListener(type, (event) => {
      readerScrolledAt = performance.now();
      if ((type === "wheel" && event.deltaY < 0) || (type === "keydown" && UP_KEYS.has(event.key))) readerUp();
    }, { passive: true });
  }
  consoleEl.addEventListener("scroll", () => {
    const now = performance.now();
    const atBottom = consoleEl.scrollHeight - consoleEl.scrollTop - consoleEl.clientHeight <= 24;
    if (atBottom) {
      if (now - readerUpAt > 500) setFollow(true);  // not the start of the reader's own scroll up
    } else if (now - readerScrolledAt < 1000) setFollow(false);
    else if (follow) schedule();  // moved by a layout change: back to the newest line
  }, { passive: true });
  window.addEventListener("resize", () => {
    if (follow) schedule();
  });

  $("follow").addEventListener("click", () => {
    setFollow(true);
    consoleEl.scrollTop = consoleEl.scrollHeight;
  });

  filterEl.addEventListener("change", () => {
    filter = filterEl.value;
    consoleEl.replaceChildren();
    pending = rows.filter(matches);
    matching = pending.length;
    unseen = 0;
    follow = false;
    setFollow(true);
    frame();  // now, not a frame later: no empty console in between
  });

  function formatLine(e) {
    const message = (e.message || "").replace(/\n/g, "\n    ");
    if (e.type === "log") {
      const source = [e.stream || "log", e.script].filter(Boolean).join(" ");
      return `${e.ts} [${source}] ${message}\n`;
    }
    const percent = e.percent !== undefined && e.percent !== null ? ` ${e.percent}%` : "";
    return `${e.ts} [${e.type}] ${e.phase || "-"}${percent}: ${message}\n`;
  }

  $("download").addEventListener("click", () => {
    const blob = new Blob(events.map(formatLine), { type: "text/plain" });
    const url = URL.createObjectURL(blob);
    const a = el("a", { href: url, download: `${boot.hostname}-${boot.id.slice(0, 8)}.log`, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  });

  // ---- the stepper, percent, elapsed, ETA ---------------------------------------------

  const stepEls = Object.fromEntries(PHASES.map((p) => [p, root.querySelector(`.stage[data-phase="${p}"]`)]));

  function phaseTime(p) {
    const ph = run.phases[p];
    const typical = boot.eta && boot.eta.phases[p];
    if (ph.state === "pending") return typical !== undefined && typical !== null ? `~${duration(typical)}` : "";
    if (ph.start === null) return ph.state === "done" ? "done" : "";
    const seconds = ((ph.end ?? serverNow()) - ph.start) / 1000;
    return ph.state === "failed" ? `failed after ${duration(seconds)}` : duration(seconds);
  }

  // Seconds left in a running phase as its own steps tell it (the import's
  // "about 40s left", counted down since that step); null when they do not.
  function liveLeft(p) {
    const ph = run.phases[p];
    if (!ph || ph.state !== "active" || !ph.detail) return null;
    const m = TIME_LEFT.exec(ph.detail);
    if (!m) return null;
    return Math.max(0, Number(m[1]) - (serverNow() - ph.detailAt) / 1000);
  }

  function etaText() {
    const eta = boot.eta;
    const over = run.outcome !== null || lifecycle === "destroying" || lifecycle === "destroyed";
    if (!eta) {
      if (over) return "";
      if (run.recovering) return "resuming…";
      const own = run.active === null ? null : liveLeft(run.active);
      // no earlier run to go by: the phase's own estimate, for that phase
      if (own !== null) return `${PHASE_LABELS[run.active]}: ~${duration(own)} left`;
      return "no history yet";
    }
    if (run.outcome === "complete") return `typically ${duration(eta.total)}`;
    if (run.outcome === "error" || lifecycle === "destroying" || lifecycle === "destroyed") return "";
    if (run.recovering) return "resuming…";
    if (run.start === null) return `ETA ~${duration(eta.total)}`;
    const now = serverNow();
    let remaining = 0;
    for (const p of PHASES) {
      const ph = run.phases[p];
      const typical = eta.phases[p] || 0;
      if (ph.state === "pending") remaining += typical;
      else if (ph.state === "active") remaining += liveLeft(p) ?? Math.max(0, typical - (now - ph.start) / 1000);
    }
    return remaining < 3 ? "ETA any moment" : `ETA ~${duration(remaining)}`;
  }

  function renderRun() {
    for (const p of PHASES) {
      const node = stepEls[p];
      const state = run.phases[p].state;
      if (node.dataset.state !== state) {
        node.dataset.state = state;
        node.querySelector(".stage-num").textContent =
          state === "done" ? "✓" : state === "failed" ? "✕" : String(PHASES.indexOf(p) + 1);
        if (state === "active") node.setAttribute("aria-current", "step");
        else node.removeAttribute("aria-current");
      }
      node.querySelector("[data-role=time]").textContent = phaseTime(p);
      const detail = node.querySelector("[data-role=detail]");
      if (detail && detail.textContent !== (run.phases[p].detail || "")) detail.textContent = run.phases[p].detail || "";
    }
    const bar = $("percent-bar");
    bar.querySelector(".percent-fill").style.width = `${run.percent}%`;
    bar.setAttribute("aria-valuenow", run.percent);
    bar.dataset.state = run.outcome || (run.start === null ? "waiting" : "running");
    $("percent").textContent = `${run.percent}%`;
    root.dataset.percent = run.percent;
    const elapsed = run.start === null ? null : ((run.end ?? serverNow()) - run.start) / 1000;
    $("elapsed").textContent = elapsed === null ? "–" : duration(elapsed);
    $("elapsed-label").textContent = run.attempts > 1 ? `Attempt ${run.attempts}` : "Elapsed";
    const eta = $("eta");
    eta.textContent = etaText();
    if (boot.eta) {
      eta.dataset.runs = boot.eta.runs;
      eta.title = `median of the ${boot.eta.runs} latest successful run${boot.eta.runs === 1 ? "" : "s"} of template ${boot.template}`;
    }
    const current = $("current-step");
    current.textContent = run.recovering ? `Recovering: ${run.recovering}` : run.step
      || (lifecycle === "pending" ? "Queued: waiting for a worker…" : "Waiting for the first event…");
    current.classList.toggle("muted", !run.step && !run.recovering);
    current.classList.toggle("recovering", Boolean(run.recovering));
    bar.dataset.state = run.recovering ? "recovering" : bar.dataset.state;
    // the connection is fine, the run is not: say so where "Live" would be
    if (run.recovering && connState === "live") setConn("recovering", "", run.recovering);
    else if (!run.recovering && connState === "recovering") setConn("live");
    const mark = lifecycle === "ready" ? "✔ " : lifecycle === "error" ? "✖ " : run.segment === "provision" ? `${run.percent}% · ` : "";
    document.title = `${mark}${boot.hostname} · progress · LXC provisioner`;
  }

  // ---- the frame loop -----------------------------------------------------------------------

  let scheduled = false;

  function schedule() {
    if (scheduled) return;
    scheduled = true;
    // a hidden tab gets no animation frames: keep up with timers there
    if (document.hidden) setTimeout(frame, 250);
    else requestAnimationFrame(frame);
  }

  function frame() {
    scheduled = false;
    const batch = incoming;
    incoming = [];
    for (const ev of batch) apply(ev);
    renderConsole();
    renderRun();
    if (pending.length || incoming.length) schedule();
  }

  setInterval(() => {
    if (run.segment === "provision" || lifecycle === "pending") renderRun();
  }, 1000);

  renderRun();
  renderConsole();
  connect();
})();
