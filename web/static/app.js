// Shared helpers of the dashboard's pages (no build step, no framework).
// Every page loads this first; page scripts use window.App.
"use strict";
(function () {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  class ApiError extends Error {
    constructor(status, message, field, errors) {
      super(message);
      this.status = status;
      this.field = field || null;
      // every field error of the request ([{field, message}]), the first one included
      this.errors = errors && errors.length ? errors : (field ? [{ field, message }] : []);
    }
  }

  // JSON request to the REST API with the session cookie and the CSRF header.
  // Resolves to the parsed body; rejects with ApiError(status, message, field, errors).
  async function api(method, url, body) {
    const opts = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (method !== "GET" && method !== "HEAD") opts.headers["X-CSRF-Token"] = csrf();
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(url, opts);
    } catch (e) {
      throw new ApiError(0, "the server cannot be reached: " + e.message);
    }
    if (resp.status === 401) {
      window.location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
      throw new ApiError(401, "not logged in");
    }
    const type = resp.headers.get("Content-Type") || "";
    const data = type.includes("json") ? await resp.json() : await resp.text();
    if (!resp.ok) {
      const message = (data && data.error) || (typeof data === "string" && data.trim()) || resp.statusText;
      throw new ApiError(resp.status, message, data && data.field, data && Array.isArray(data.errors) ? data.errors : null);
    }
    return data;
  }

  // Build an element: el("div", {class: "x", onclick: f}, child, "text", ...).
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
      else if (k === "class") node.className = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else if (k === "style") node.style.cssText = v;  // CSSOM: allowed by the CSP, unlike the attribute
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  // "1h 02m", "3m 07s", "12s".
  function duration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
    const s = Math.max(0, Math.round(seconds));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
    if (m) return `${m}m ${String(r).padStart(2, "0")}s`;
    return `${r}s`;
  }

  function bytes(n) {
    if (n === null || n === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return `${n.toFixed(i && n < 10 ? 1 : 0)} ${units[i]}`;
  }

  // A coloured status badge: creating, ready, error, running, stopped, ...
  function badge(status) {
    return el("span", { class: `badge badge-${status}` }, status);
  }

  // A transient message at the bottom right; kind: "info" | "error" | "ok".
  function toast(message, kind) {
    const box = document.getElementById("toasts");
    const t = el("div", { class: `toast toast-${kind || "info"}`, role: kind === "error" ? "alert" : "status" }, message);
    box.append(t);
    setTimeout(() => t.remove(), kind === "error" ? 8000 : 4000);
  }

  // A modal confirmation; resolves true when confirmed.  text: a string (a
  // paragraph), or nodes (a list, a choice the caller reads once it resolves).
  // opts.mustType: a word the user types before the confirm button works (a
  // strong confirmation: the hostname of what is about to be replaced).
  let _dialogs = 0;
  function confirmDialog(title, text, confirmLabel, danger, opts) {
    return new Promise((resolve) => {
      const n = ++_dialogs;
      const id = `dialog-title-${n}`;
      const body = typeof text === "string" ? el("p", {}, text) : el("div", { class: "dialog-body" }, text);
      const must = opts && opts.mustType;
      const ok = el("button", { type: "button", class: danger ? "danger" : "primary", value: "ok", disabled: Boolean(must),
        onclick: () => dlg.close("ok") }, confirmLabel || "Confirm");
      let typed = null;
      if (must) {
        const input = el("input", { type: "text", id: `dialog-type-${n}`, class: "mono", autocomplete: "off", spellcheck: "false",
          autocapitalize: "off", "aria-describedby": `dialog-type-help-${n}` });
        input.addEventListener("input", () => { ok.disabled = input.value !== must; });
        input.addEventListener("keydown", (ev) => { if (ev.key === "Enter" && input.value === must) { ev.preventDefault(); dlg.close("ok"); } });
        typed = el("div", { class: "field type-to-confirm" },
          el("label", { for: `dialog-type-${n}` }, "Type ", el("strong", { class: "mono" }, must), " to confirm"),
          input,
          el("span", { class: "field-help", id: `dialog-type-help-${n}` }, "The confirm button works once the name matches exactly."));
      }
      const dlg = el("dialog", { class: "confirm", "aria-labelledby": id },
        el("h2", { id }, title), body, typed,
        el("div", { class: "actions" },
          el("button", { type: "button", class: "secondary", value: "cancel", onclick: () => dlg.close("cancel") }, "Cancel"),
          ok));
      dlg.addEventListener("close", () => { dlg.remove(); resolve(dlg.returnValue === "ok"); });
      document.body.append(dlg);
      dlg.showModal();
      if (typed) typed.querySelector("input").focus();
    });
  }

  async function copyText(text) {
    try { await navigator.clipboard.writeText(text); toast("Copied", "ok"); }
    catch (e) { toast("Copy failed: select and copy by hand", "error"); }
  }

  // --- time -------------------------------------------------------------------------
  const _date = (iso) => (iso ? new Date(iso) : null);

  // "12s ago", "5m ago", "3h ago", "2d ago" (null -> "–").
  function ago(iso) {
    const d = _date(iso);
    if (!d || isNaN(d)) return "–";
    const s = Math.max(0, (Date.now() - d.getTime()) / 1000);
    if (s < 60) return `${Math.floor(s)}s ago`;
    if (s < 3600) return `${Math.floor(s / 60)}m ago`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
    return `${Math.floor(s / 86400)}d ago`;
  }

  // A timestamp in the browser's locale ("23 Nov 2026, 10:32:39").
  function when(iso) {
    const d = _date(iso);
    if (!d || isNaN(d)) return "–";
    return d.toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric",
      hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  // A <time> element showing "5m ago" with the full timestamp as its tooltip.
  function timeAgo(iso) {
    return el("time", { datetime: iso || "", title: when(iso) }, ago(iso));
  }

  // --- containers ----------------------------------------------------------------------
  // The one mapping from a container to the state the dashboard shows, and
  // the badge's style: the list's rows, its summary and status filter and
  // the detail page's badge all go through it, so they never disagree.  It
  // takes the lifecycle, the live status PVE reports (which refines "ready"
  // into running or stopped; "unknown" when the node did not answer) and an
  // action the user has just asked for that the container does not show yet:
  // a destroy is "destroying" at once, as it will be while the worker runs it.
  // Returns {state, badge, title, busy}: the word shown, the badge's CSS
  // class, its tooltip, and whether a spinner goes with it.
  const REQUESTED = { start: "starting", stop: "stopping", reboot: "rebooting", retry: "retrying",
    resync: "resyncing", destroy: "destroying" };
  const SPINNING = new Set(["starting", "stopping", "rebooting", "retrying", "resyncing"]);
  // every state, in the order the list's summary names them
  const STATES = ["running", "ready", "starting", "stopping", "rebooting", "pending", "creating",
    "retrying", "resyncing", "error", "stopped", "destroying", "destroyed", "unknown"];

  function containerState(ct, requested) {
    const lc = ct.lifecycle;
    const live = ct.pve && ct.pve.status;
    const inPve = live ? `; ${live} in PVE` : "";
    let state = lc, title = lc + inPve;
    if (requested && REQUESTED[requested]) {
      state = REQUESTED[requested];
      title = `${requested} requested${inPve}`;
    } else if ((lc === "ready" || lc === "error") && ct.owns_container === false) {
      [state, title] = ["error", `this record owns no container: ${ct.pve_error || ct.error || "its CT is gone"}`];
    } else if (lc === "ready") {
      if (live === "running" || live === "stopped") [state, title] = [live, `ready, ${live} in PVE`];
      else if (ct.pve_error) [state, title] = ["unknown", `ready; live status unavailable: ${ct.pve_error}`];
    } else if (lc === "error") {
      title = (ct.error || "provisioning failed") + inPve;
    } else if (lc === "creating" && ct.current_phase) {
      title = `creating: ${ct.current_phase}`;
    }
    const busy = SPINNING.has(state);
    return { state, title, busy, badge: busy ? "badge-info" : `badge-${state}` };
  }

  // The badge of a containerState(); attrs adds attributes (an id).
  function stateBadge(st, attrs) {
    return el("span", { ...attrs, class: `badge ${st.badge}`, title: st.title, "data-status": st.state },
      st.busy && el("span", { class: "spinner" }), st.state);
  }

  // A container's environment as a pill (production, staging and development
  // have colours of their own); attrs adds attributes (an id).
  const ENVIRONMENTS = ["production", "staging", "development"];
  function envTag(name, attrs) {
    const kind = ENVIRONMENTS.includes(name) ? name : "other";
    return el("span", { title: "environment", ...attrs, class: `tag env env-${kind}`, "data-environment": name },
      el("span", { class: "visually-hidden" }, "environment: "), name);
  }

  // The actions a user may ask for, their confirmation texts and button looks.
  const ACTIONS = {
    start: { label: "Start", verb: "Starting", danger: false,
      text: (who) => `${who} boots and its services start.` },
    stop: { label: "Stop", verb: "Stopping", danger: true,
      text: (who) => `${who} shuts down: its services are unavailable until it is started again.` },
    reboot: { label: "Reboot", verb: "Rebooting", danger: false,
      text: (who) => `${who} restarts: its services are briefly unavailable.` },
    retry: { label: "Retry", verb: "Retrying", danger: false,
      text: () => "Provisioning runs again from where it failed; finished phases and scripts are kept." },
    resync: { label: "Resync", verb: "Resyncing", danger: false,
      text: (who) => `Files are deployed and every script runs again in ${who}. A safety snapshot is taken first.`,
      choice: { name: "on_failure", legend: "If the resync fails", options: [
        ["rollback", "Roll back to the safety snapshot", "the container is put back as it was before the resync"],
        ["keep", "Keep the container as the failure left it", "for inspection; the safety snapshot still holds it as it was"]] } },
    destroy: { label: "Destroy", verb: "Destroying", danger: true,
      text: (who, owns) => owns ? `${who} and its disks are removed from Proxmox. This cannot be undone.`
        : "This record owns no container in Proxmox: only the record is removed, nothing in Proxmox is touched." },
  };

  // lifecycle states per action, as the server allows them (rendered into the
  // page as <script type="application/json" id="container-actions">).
  let _allowed = null;
  // the actions that need the record's CT (provisioner/request_checks.py CT_ACTIONS)
  const CT_ACTIONS = ["start", "stop", "reboot", "resync", "snapshot", "rollback", "delete-snapshot", "set"];

  // Whether the server takes `action` (any of its ACTIONS: "snapshot", "set", ...)
  // for the container as it is now: its lifecycle, and a CT of its own.
  function allows(ct, action) {
    if (_allowed === null) {
      const node = document.getElementById("container-actions");
      _allowed = node ? JSON.parse(node.textContent) : {};
    }
    if (!(_allowed[action] || []).includes(ct.lifecycle)) return false;
    return !(CT_ACTIONS.includes(action) && !ct.owns_container);
  }

  function allowedActions(ct) {
    const live = ct.pve && ct.pve.status;
    return Object.keys(ACTIONS).filter((a) => {
      if (!allows(ct, a)) return false;
      if (a === "start" && live === "running") return false;
      if ((a === "stop" || a === "reboot") && live === "stopped") return false;
      return true;
    });
  }

  // A radio group for a dialog: {name, legend, options: [[value, label, help]]},
  // the first option checked.  Returns [fieldset, () => the value chosen].
  function choiceGroup(spec) {
    const fieldset = el("fieldset", { class: "dialog-choice" }, el("legend", {}, spec.legend),
      spec.options.map(([value, label, help], i) => el("label", { class: "checkbox choice" },
        el("input", { type: "radio", name: spec.name, value, checked: i === 0 }),
        el("span", {}, label, help ? el("span", { class: "field-help" }, help) : null))));
    return [fieldset, () => (fieldset.querySelector("input:checked") || {}).value];
  }

  // Confirm, then enqueue an action.  Resolves to the API's answer, or null
  // when the user cancelled or the API refused (the refusal is a toast).  An
  // action with a choice (resync: on failure, roll back or keep) asks it in
  // the confirmation and sends it as the body.
  async function containerAction(ct, action) {
    const spec = ACTIONS[action];
    const owns = ct.owns_container !== false;
    const who = ct.vmid && owns ? `CT ${ct.vmid} on ${ct.node}` : `The container (not created in PVE yet)`;
    const [group, chosen] = spec.choice ? choiceGroup(spec.choice) : [null, null];
    const text = group ? [el("p", {}, spec.text(who, owns)), group] : spec.text(who, owns);
    const ok = await confirmDialog(`${spec.label} ${ct.hostname}?`, text, spec.label, spec.danger);
    if (!ok) return null;
    const body = group ? { [spec.choice.name]: chosen() } : undefined;
    try {
      const answer = await api("POST", `/api/containers/${encodeURIComponent(ct.id)}/actions/${action}`, body);
      toast(`${spec.verb} ${ct.hostname}…`, "info");
      return answer;
    } catch (e) {
      toast(`${spec.label} ${ct.hostname} failed: ${e.message}`, "error");
      return null;
    }
  }

  // --- polling ---------------------------------------------------------------------------
  // Calls fn every `ms` (waiting for each call to finish), paused while the tab
  // is hidden and resumed at once when it shows again.  poll.now() runs it
  // right away; poll.stop() ends it.
  function poller(fn, ms) {
    let timer = null, running = false, stopped = false, again = false;
    async function tick() {
      clearTimeout(timer);
      timer = null;
      if (stopped) return;
      if (running) { again = true; return; }
      if (document.hidden) return;
      running = true;
      try { await fn(); } catch (e) { console.error(e); }
      running = false;
      if (stopped) return;
      if (again) { again = false; tick(); return; }
      timer = setTimeout(tick, typeof ms === "function" ? ms() : ms);
    }
    const onVisible = () => { if (!document.hidden && !running) tick(); };
    document.addEventListener("visibilitychange", onVisible);
    tick();
    return {
      now: tick,
      stop() { stopped = true; clearTimeout(timer); document.removeEventListener("visibilitychange", onVisible); },
    };
  }

  // --- forms -------------------------------------------------------------------------------
  // Show an API error next to the field it names (input[name=field] in form):
  // aria-invalid plus the text in the field's .field-error.  Returns whether a
  // field was found (otherwise show the message elsewhere).
  function showFieldError(form, field, message) {
    if (!field) return false;
    const input = form.querySelector(`[name="${CSS.escape(field)}"]`);
    if (!input) return false;
    input.setAttribute("aria-invalid", "true");
    const box = input.closest(".field");
    const slot = box && box.querySelector(".field-error");
    if (slot) {
      slot.textContent = message;
      if (!slot.id) slot.id = `${input.id || field}-error`;
      input.setAttribute("aria-describedby", slot.id);
    }
    input.focus();
    return true;
  }

  function clearFieldErrors(form) {
    form.querySelectorAll("[aria-invalid]").forEach((n) => n.removeAttribute("aria-invalid"));
    form.querySelectorAll(".field-error").forEach((n) => { n.textContent = ""; });
  }

  // Every field error of an ApiError next to its field (the first one
  // focused).  Returns the messages no field of the form took.
  function showFieldErrors(form, error) {
    const errors = error.errors && error.errors.length ? error.errors : [{ field: error.field, message: error.message }];
    const left = [];
    let first = null;
    for (const e of errors) {
      if (showFieldError(form, e.field, e.message)) first = first || e.field;
      else left.push(e.message);
    }
    if (first) form.querySelector(`[name="${CSS.escape(first)}"]`).focus();
    return left;
  }

  window.App = { api, ApiError, el, duration, bytes, badge, toast, confirmDialog, choiceGroup, copyText, csrf,
    ago, when, timeAgo, containerState, stateBadge, STATES, ACTIONS, ENVIRONMENTS, envTag, allows, allowedActions, containerAction, poller,
    showFieldError, clearFieldErrors, showFieldErrors };
})();
