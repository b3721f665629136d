// The sandboxes page: the list (GET /api/sandboxes every 5 s, paused while
// the tab is hidden), each expiry counted down every second against the
// server's clock, Extend (a small form in a dialog) and Destroy (a
// confirmation naming the sandbox, then POST .../expire), and the "New
// sandbox" form (POST /api/sandboxes).  The Application Password goes in
// that request's body only: it is never echoed back, never put in a URL,
// and cleared from the page once the sandbox is asked for.
"use strict";
(function () {
  const { api, el, bytes, toast, confirmDialog, copyText, poller, when, ago, showFieldErrors, clearFieldErrors } = window.App;
  const config = JSON.parse(document.getElementById("sandboxes-config").textContent);
  const clockSkew = Date.parse(config.now) - Date.now();  // the server's clock minus ours
  const serverNow = () => Date.now() + clockSkew;
  const POLL_MS = 5000, BUSY_POLL_MS = 1000;
  const GONE = new Set(["destroying", "destroyed"]);
  const IN_PROGRESS = new Set(["pending", "creating", "error"]);
  const $ = (id) => document.getElementById(id);
  const tbody = document.querySelector("#sandboxes-table tbody");
  const rows = new Map(); // id -> {tr, key}
  const busy = new Set(); // ids expired here whose destroy has not shown yet
  let sandboxes = [];
  let lastOk = null;
  let loaded = false;

  const detailUrl = (id) => `/containers/${encodeURIComponent(id)}`;
  const sandboxApi = (id, rest) => `/api/sandboxes/${encodeURIComponent(id)}${rest}`;

  // --- the countdown -------------------------------------------------------------------------
  // "6d 23h", "5h 07m", "12m 05s", "40s": the two largest units, as the CLI says it.
  function countdown(seconds) {
    const s = Math.max(0, Math.ceil(seconds));
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    const two = (n) => String(n).padStart(2, "0");
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${two(m)}m`;
    if (m) return `${m}m ${two(r)}s`;
    return `${r}s`;
  }

  const secondsLeft = (sb) => (Date.parse(sb.expires_at) - serverNow()) / 1000;
  // "Dec 9, 12:35 PM": the table's short form (the full time is the tooltip)
  const shortWhen = (iso) => new Date(iso).toLocaleString(undefined, { month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit" });

  function paintCountdown(node, sb) {
    const left = secondsLeft(sb);
    const gone = GONE.has(sb.lifecycle) || busy.has(sb.id);
    let text, state;
    if (gone) [text, state] = ["ended", "ended"];
    else if (left <= 0) [text, state] = ["overdue: ending", "overdue"];
    else [text, state] = [countdown(left), sb.warned || left < 86400 ? "soon" : "ok"];
    if (node.textContent !== text) node.textContent = text;
    node.dataset.state = state;
  }

  function tickCountdowns() {
    for (const node of tbody.querySelectorAll("[data-role=countdown]")) {
      const sb = sandboxes.find((s) => s.id === node.closest("tr").dataset.id);
      if (sb) paintCountdown(node, sb);
    }
  }

  // --- one row -------------------------------------------------------------------------------
  function importedCell(sb) {
    const got = sb.imported || {};
    if (got.posts === undefined) {
      const text = GONE.has(sb.lifecycle) ? "–" : sb.lifecycle === "ready" ? "nothing recorded" : "not yet";
      return el("td", { class: "imported col-imported muted small-text" }, text);
    }
    const n = (count, one, many) => `${count} ${count === 1 ? one : many}`;
    const skipped = Array.isArray(got.skipped) ? got.skipped : [];
    return el("td", { class: "imported col-imported" },
      el("span", { class: "nowrap" }, [n(got.posts, "post", "posts"), n(got.pages || 0, "page", "pages"), `${got.media || 0} media`].join(" · ")),
      el("span", { class: "sub" }, [n(got.categories || 0, "category", "categories"), n(got.tags || 0, "tag", "tags"),
        n(got.users || 0, "author", "authors"), bytes(got.bytes || 0)].join(" · ")),
      skipped.length ? el("span", { class: "badge badge-warn skipped", title: skipped.slice(0, 20).join("\n") },
        `${skipped.length} skipped`) : null);
  }

  function statusCell(sb) {
    const lifecycle = busy.has(sb.id) && !GONE.has(sb.lifecycle) ? "destroying" : sb.lifecycle;
    const expiring = sb.warned && !GONE.has(lifecycle);
    return el("td", { class: "status" },
      el("span", { class: `badge badge-${lifecycle}`, "data-status": lifecycle }, lifecycle),
      expiring ? el("span", { class: "tag expiring-tag", title: "the expiring warning was sent" }, "expiring") : null,
      IN_PROGRESS.has(lifecycle) ? el("span", { class: "sub" }, el("a", { href: `${detailUrl(sb.id)}/progress` },
        lifecycle === "error" ? "what failed" : "live progress")) : null);
  }

  function rowKey(sb) {
    return JSON.stringify([sb.hostname, sb.lifecycle, sb.owner, sb.url, sb.expires_at, sb.warned, sb.imported,
      busy.has(sb.id)]);
  }

  function renderRow(sb) {
    const gone = GONE.has(sb.lifecycle) || busy.has(sb.id);
    const countdownNode = el("span", { class: "countdown", "data-role": "countdown", role: "timer" });
    paintCountdown(countdownNode, sb);
    const expires = el("time", { datetime: sb.expires_at, class: "sub", title: `expires ${when(sb.expires_at)}` }, shortWhen(sb.expires_at));
    const extend = el("button", { type: "button", class: "small secondary", "data-action": "extend", disabled: gone,
      "aria-label": `Extend ${sb.hostname}`, onclick: () => extendDialog(sb.id) }, "Extend");
    const destroy = el("button", { type: "button", class: "small danger", "data-action": "expire", disabled: gone,
      "aria-label": `Destroy ${sb.hostname}`, onclick: (ev) => expire(sb.id, ev.currentTarget) }, "Destroy");
    return el("tr", { "data-id": sb.id, "data-hostname": sb.hostname, "data-client": sb.client, "data-lifecycle": sb.lifecycle },
      el("td", { class: "client mono" }, sb.client),
      el("td", { class: "hostname" },
        el("a", { class: "name", href: detailUrl(sb.id), title: "Container details" }, sb.hostname),
        sb.url && sb.lifecycle === "ready"
          ? el("span", { class: "sub" }, el("a", { href: sb.url, class: "mono site-link", target: "_blank", rel: "noopener noreferrer" }, sb.url))
          : el("span", { class: "sub mono" }, sb.id.slice(0, 8))),
      el("td", { class: "owner col-owner" }, sb.owner || el("span", { class: "muted", title: "asked for from the CLI without --owner" }, "operator")),
      el("td", { class: "source" },
        el("a", { href: sb.source_url, class: "mono source-link", target: "_blank", rel: "noopener noreferrer" }, sb.source_url),
        el("span", { class: "sub" }, "as ", sb.source_user)),
      statusCell(sb),
      el("td", { class: "expiry nowrap" }, countdownNode, expires),
      importedCell(sb),
      el("td", { class: "actions" }, el("div", { class: "button-group" }, extend, destroy)));
  }

  // --- the table -----------------------------------------------------------------------------
  function shown() {
    const ended = $("show-ended").checked;
    return sandboxes.filter((sb) => ended || sb.lifecycle !== "destroyed");
  }

  function render() {
    const list = shown();
    const seen = new Set();
    let previous = null;
    for (const sb of list) {
      seen.add(sb.id);
      const key = rowKey(sb);
      let row = rows.get(sb.id);
      if (!row || row.key !== key) {
        const tr = renderRow(sb);
        if (row) row.tr.replaceWith(tr);
        row = { tr, key };
        rows.set(sb.id, row);
      }
      const want = previous ? previous.nextSibling : tbody.firstChild;
      if (want !== row.tr) tbody.insertBefore(row.tr, want);
      previous = row.tr;
    }
    for (const [id, row] of rows) {
      if (!seen.has(id)) { row.tr.remove(); rows.delete(id); }
    }
    $("sandboxes-loading").hidden = true;
    $("sandbox-list").hidden = sandboxes.length === 0;
    $("sandboxes-empty").hidden = sandboxes.length !== 0;
    $("no-live").hidden = !sandboxes.length || list.length > 0;
  }

  async function refresh() {
    try {
      const data = await api("GET", "/api/sandboxes?include_destroyed=1");
      sandboxes = data.sandboxes;
      lastOk = new Date().toISOString();
      $("sandboxes-load-error").hidden = true;
      loaded = true;
    } catch (e) {
      const box = $("sandboxes-load-error");
      box.textContent = `Cannot refresh the list: ${e.message}. Retrying…`;
      box.hidden = false;
      if (!loaded) $("sandboxes-loading").hidden = true;
      liveState();
      return;
    }
    for (const id of busy) {
      const sb = sandboxes.find((s) => s.id === id);
      if (!sb || GONE.has(sb.lifecycle)) busy.delete(id);
    }
    render();
    liveState();
  }

  function liveState() {
    $("live-state").replaceChildren(el("span", { class: `dot ${$("sandboxes-load-error").hidden ? "dot-running" : "dot-error"}` }),
      lastOk ? ` Live · updated ${ago(lastOk)}` : " Connecting…");
  }

  // --- extend: a small form in a dialog ------------------------------------------------------
  function extendDialog(id) {
    const sb = sandboxes.find((s) => s.id === id);
    if (!sb) return;
    const by = el("input", { type: "text", id: "extend-by", name: "by", class: "mono", value: "7d", maxlength: "32", required: true,
      spellcheck: "false", autocapitalize: "off", "aria-describedby": "extend-by-help" });
    const formError = el("div", { class: "notice notice-error", id: "extend-error", role: "alert", hidden: true });
    const submit = el("button", { type: "submit", class: "primary", id: "extend-submit" }, "Extend");
    const left = secondsLeft(sb);
    const form = el("form", { id: "extend-form", method: "post", novalidate: true, autocomplete: "off" },
      el("div", { class: "field" },
        el("label", { for: "extend-by" }, "By"), by,
        el("span", { class: "field-help", id: "extend-by-help" },
          "A duration such as 12h, 7d or 2w, added to the expiry (to now, when it is overdue)."),
        el("span", { class: "field-error" })),
      formError,
      el("div", { class: "actions" },
        el("button", { type: "button", class: "secondary", onclick: () => dlg.close() }, "Cancel"), submit));
    const dlg = el("dialog", { class: "confirm form-dialog", id: "extend-dialog", "aria-labelledby": "extend-title" },
      el("h2", { id: "extend-title" }, `Extend ${sb.hostname}`),
      el("p", { class: "small-text" }, `The sandbox of client ${sb.client} expires `,
        left > 0 ? `in ${countdown(left)} (${when(sb.expires_at)}).` : "now: it is overdue.",
        " Extending it lets the expiring warning come again before the new expiry."),
      form);
    dlg.addEventListener("close", () => dlg.remove());
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearFieldErrors(form);
      formError.hidden = true;
      submit.setAttribute("aria-busy", "true");
      submit.disabled = true;
      let updated;
      try {
        updated = await api("POST", sandboxApi(sb.id, "/extend"), { by: by.value.trim() });
      } catch (e) {
        const leftOver = e.status === 400 ? showFieldErrors(form, e) : [e.message];
        if (leftOver.length) {
          formError.replaceChildren(el("strong", {}, "Not extended. "), leftOver.join("; "));
          formError.hidden = false;
        }
        return;
      } finally {
        submit.removeAttribute("aria-busy");
        submit.disabled = false;
      }
      sandboxes = sandboxes.map((s) => (s.id === updated.id ? updated : s));
      render();
      dlg.close();
      toast(`${updated.hostname} now expires ${when(updated.expires_at)} (in ${countdown(secondsLeft(updated))})`, "ok");
    });
    document.body.append(dlg);
    dlg.showModal();
    by.select();
  }

  // --- destroy: ends the sandbox now (its expired event, then its destroy) --------------------
  async function expire(id, button) {
    const sb = sandboxes.find((s) => s.id === id);
    if (!sb) return;
    const ok = await confirmDialog(`Destroy ${sb.hostname}?`, [
      el("p", {}, "The sandbox of client ", el("strong", {}, sb.client), ` (the copy of ${sb.source_url}) expires now: `,
        "its container and everything written in it are destroyed. The live site is not touched. This cannot be undone."),
    ], "Destroy sandbox", true);
    if (!ok) return;
    button.setAttribute("aria-busy", "true");
    try {
      await api("POST", sandboxApi(sb.id, "/expire"));
    } catch (e) {
      toast(`Cannot destroy ${sb.hostname}: ${e.message}`, "error");
      return;
    } finally {
      button.removeAttribute("aria-busy");
    }
    busy.add(sb.id);
    render();
    toast(`${sb.hostname} expired: its destroy is queued`, "info");
    poll.now();
  }

  // --- new sandbox ---------------------------------------------------------------------------
  const panel = $("new-sandbox");
  const form = $("new-sandbox-form");
  const toggle = $("new-sandbox-toggle");
  const formError = $("new-sandbox-error");
  const existing = $("new-sandbox-existing");
  const password = form.querySelector('[name="app_password"]');

  function open(show) {
    panel.hidden = !show;
    toggle.setAttribute("aria-expanded", String(show));
    toggle.hidden = show;
    if (show) form.querySelector('[name="from"]').focus();
  }

  function resetForm() {
    form.reset();
    clearFieldErrors(form);
    formError.hidden = true;
    existing.hidden = true;
  }

  toggle.addEventListener("click", () => open(true));
  $("new-sandbox-empty").addEventListener("click", () => open(true));
  $("new-sandbox-cancel").addEventListener("click", () => { resetForm(); open(false); toggle.focus(); });
  // a corrected field loses its error
  form.addEventListener("input", (ev) => {
    if (!ev.target.getAttribute("aria-invalid")) return;
    ev.target.removeAttribute("aria-invalid");
    const slot = ev.target.closest(".field") && ev.target.closest(".field").querySelector(".field-error");
    if (slot) slot.textContent = "";
  });

  function requestBody(asNew) {
    const value = (name) => form.querySelector(`[name="${name}"]`).value.trim();
    const body = { from: value("from"), client: value("client"), user: value("user"), app_password: password.value };
    for (const name of ["node", "ttl", "fingerprint"]) if (value(name) !== "") body[name] = value(name);
    if (asNew) body.new = true;
    return body;
  }

  function setBusy(on) {
    const submit = $("new-sandbox-submit");
    submit.disabled = on;
    submit.setAttribute("aria-busy", String(on));
    $("new-sandbox-state").replaceChildren(...(on ? [el("span", { class: "spinner" }), " asking the live site…"] : []));
  }

  async function submitRequest(asNew) {
    clearFieldErrors(form);
    formError.hidden = true;
    existing.hidden = true;
    setBusy(true);
    let answer;
    try {
      answer = await api("POST", "/api/sandboxes", requestBody(asNew));
    } catch (e) {
      if (e.status === 401) return;  // app.js is taking us to the login page
      const leftOver = e.status === 400 ? showFieldErrors(form, e) : [e.message];
      if (leftOver.length) {
        formError.replaceChildren(el("strong", {}, "No sandbox was made. "), leftOver.join("; "));
        formError.hidden = false;
      }
      return;
    } finally {
      setBusy(false);
    }
    if (answer.existing) {
      showExisting(answer.sandbox);
      return;
    }
    password.value = "";  // asked for: the page keeps no copy
    await secretsOnce(answer);
    if (answer.warning) toast(answer.warning, "info");
    window.location.assign(`${detailUrl(answer.id)}/progress`);
  }

  // 200: the client has a sandbox already; link it, and offer a second one.
  function showExisting(sb) {
    const left = secondsLeft(sb);
    existing.replaceChildren(
      el("strong", {}, `Client ${sb.client} has a sandbox already: `),
      el("a", { href: detailUrl(sb.id), id: "existing-link" }, sb.hostname),
      ` (${sb.lifecycle}, ${left > 0 ? `expires in ${countdown(left)}` : "overdue"}). Nothing new was made. `,
      el("button", { type: "button", class: "secondary small", id: "second-sandbox", onclick: () => submitRequest(true) },
        `Make a second sandbox of ${sb.client}`));
    existing.hidden = false;
  }

  // 201: the generated passwords (the container's root password, the
  // WordPress administrator's…), this one time; resolves when dismissed.
  function secretsOnce(answer) {
    const secrets = [];
    if (answer.root_password) secrets.push(["root password", answer.root_password]);
    for (const [name, value] of Object.entries(answer.generated_secrets || {})) secrets.push([name, value]);
    if (!secrets.length) return Promise.resolve();
    const hostname = answer.sandbox ? answer.sandbox.hostname : "the sandbox";
    return new Promise((resolve) => {
      const codes = secrets.map(([name, value], i) => el("code", { class: "secret", id: `secret-${i}` }, value));
      const dlg = el("dialog", { class: "confirm password-dialog", id: "sandbox-secrets", "aria-labelledby": "sandbox-secrets-title" },
        el("h2", { id: "sandbox-secrets-title" }, `Save the passwords of ${hostname}`),
        el("p", {}, "They are shown this once: stored encrypted, no page shows them again."),
        el("div", { class: "generated-secrets" }, secrets.map(([name, value], i) => el("div", { class: "secret-row" },
          el("span", { class: "label mono", id: `secret-${i}-label` }, name),
          el("div", { class: "secret-box", role: "group", "aria-labelledby": `secret-${i}-label` }, codes[i],
            el("button", { type: "button", class: "secondary small", "aria-label": `Copy ${name}`, onclick: () => copyText(value) }, "Copy"))))),
        el("p", { class: "muted small-text" }, "The sandbox is being made; its progress, the import included, comes next."),
        el("div", { class: "actions" },
          el("button", { type: "button", class: "primary", id: "secrets-saved", onclick: () => dlg.close() }, "I have saved them")));
      dlg.addEventListener("cancel", (e) => e.preventDefault());  // Escape must not lose them by accident
      dlg.addEventListener("close", () => {
        codes.forEach((c) => { c.textContent = ""; });
        dlg.remove();
        resolve();
      });
      document.body.append(dlg);
      dlg.showModal();
      $("secrets-saved").focus();
    });
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    submitRequest(false);
  });
  if (location.hash === "#new") open(true);  // the wizard's "Make a sandbox"

  // --- wiring --------------------------------------------------------------------------------
  $("show-ended").addEventListener("change", render);
  setInterval(() => {
    tickCountdowns();
    if (lastOk) liveState();
  }, 1000);
  const poll = poller(refresh, () => (busy.size ? BUSY_POLL_MS : POLL_MS));
})();
