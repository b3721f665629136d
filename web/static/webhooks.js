// The webhooks page: the caller's hooks (GET /api/webhooks) with Test,
// Deliveries and Remove; the "Add webhook" form posts to /api/webhooks and
// shows the generated signing secret once; the delivery log of the chosen
// hook (GET /api/webhooks/<id>/deliveries) with each delivery's status,
// attempts and last answer, refreshed while a delivery is pending.
"use strict";
(function () {
  const { api, el, toast, confirmDialog, copyText, timeAgo, showFieldErrors, clearFieldErrors } = window.App;
  const config = JSON.parse(document.getElementById("webhooks-config").textContent);
  const tbody = document.querySelector("#hooks tbody");
  const STATUS_BADGE = { delivered: "badge-ok", failed: "badge-error", pending: "badge-pending" };
  let shown = null;  // the hook whose deliveries are listed
  let refreshTimer = null;

  // --- the hooks ------------------------------------------------------------------------------
  function row(h) {
    const test = el("button", { type: "button", class: "secondary small", "data-action": "test" }, "Test");
    const log = el("button", { type: "button", class: "secondary small", "data-action": "deliveries" }, "Deliveries");
    const remove = el("button", { type: "button", class: "danger small", "data-action": "remove" }, "Remove");
    test.addEventListener("click", () => sendTest(h, test));
    log.addEventListener("click", () => showDeliveries(h.id));
    remove.addEventListener("click", () => removeHook(h, remove));
    return el("tr", { "data-hook": h.id },
      el("td", { class: "mono" }, String(h.id)),
      el("td", {}, el("span", { class: "mono small-text truncate", title: h.url }, h.url)),
      el("td", {}, h.owner ? h.owner : el("span", { class: "tag" }, "every container")),
      el("td", {}, el("div", { class: "tags" }, h.events.map((e) => el("span", { class: "tag small-tag" }, e)))),
      el("td", { class: "small-text nowrap" }, timeAgo(h.created_at)),
      el("td", { class: "actions" }, el("div", { class: "button-group" }, test, log, remove)));
  }

  async function load() {
    let data;
    try {
      data = await api("GET", "/api/webhooks");
    } catch (e) {
      const box = document.getElementById("hooks-load-error");
      box.textContent = `Cannot list the webhooks: ${e.message}`;
      box.hidden = false;
      tbody.replaceChildren();
      return;
    }
    document.getElementById("hooks-load-error").hidden = true;
    document.getElementById("hooks-empty").hidden = data.webhooks.length > 0;
    document.getElementById("hooks-wrap").hidden = data.webhooks.length === 0;
    tbody.replaceChildren(...data.webhooks.map(row));
    if (shown !== null && !data.webhooks.some((h) => h.id === shown)) hideDeliveries();
  }

  async function sendTest(h, button) {
    button.setAttribute("aria-busy", "true");
    try {
      await api("POST", `/api/webhooks/${h.id}/test`);
      toast(`Ping queued for webhook ${h.id}`, "ok");
      await showDeliveries(h.id);
    } catch (e) {
      toast(`Cannot test webhook ${h.id}: ${e.message}`, "error");
    } finally {
      button.removeAttribute("aria-busy");
    }
  }

  async function removeHook(h, button) {
    const ok = await confirmDialog(`Remove webhook ${h.id}?`,
      `${h.url} gets no more events, and its delivery log goes with it.`, "Remove", true);
    if (!ok) return;
    button.setAttribute("aria-busy", "true");
    try {
      await api("DELETE", `/api/webhooks/${h.id}`);
      toast(`Webhook ${h.id} removed`, "ok");
      await load();
    } catch (e) {
      toast(`Cannot remove webhook ${h.id}: ${e.message}`, "error");
    } finally {
      button.removeAttribute("aria-busy");
    }
  }

  // --- the delivery log -----------------------------------------------------------------------
  function lastAnswer(d) {
    if (!d.attempts) return el("span", { class: "muted" }, "not sent yet");
    const text = d.last_error || `HTTP ${d.last_status_code}`;
    const next = d.status === "pending" && d.next_attempt_at
      ? el("span", { class: "sub" }, "next attempt at ", el("time", { datetime: d.next_attempt_at }, new Date(d.next_attempt_at).toLocaleTimeString()))
      : null;
    return el("span", { class: "small-text" }, text, next);
  }

  function deliveryRow(d) {
    const history = d.history.map((a) => `#${a.attempt} ${a.at}: ${a.error || `HTTP ${a.status_code}`} (${a.ms} ms)`).join("\n");
    return el("tr", { "data-delivery": d.id, "data-status": d.status },
      el("td", { class: "small-text nowrap" }, timeAgo(d.created_at)),
      el("td", {}, el("span", { class: "tag small-tag" }, d.event)),
      el("td", {}, d.container_id ? el("a", { class: "mono small-text", href: `/containers/${d.container_id}` }, d.container_id.slice(0, 8)) : el("span", { class: "muted" }, "–")),
      el("td", {}, el("span", { class: `badge ${STATUS_BADGE[d.status] || "badge-neutral"} delivery-status` }, d.status)),
      el("td", { class: "num attempts", title: history }, String(d.attempts)),
      el("td", { class: "last-answer" }, lastAnswer(d)),
      el("td", {}, el("span", { class: "mono small-text", title: d.id }, d.id.slice(0, 8))));
  }

  async function showDeliveries(id) {
    shown = id;
    clearTimeout(refreshTimer);
    const section = document.getElementById("deliveries-section");
    document.getElementById("deliveries-hook").textContent = String(id);
    section.hidden = false;
    const body = document.querySelector("#deliveries tbody");
    let data;
    try {
      data = await api("GET", `/api/webhooks/${id}/deliveries`);
    } catch (e) {
      body.replaceChildren(el("tr", {}, el("td", { colspan: "7" }, `Cannot read the deliveries: ${e.message}`)));
      return;
    }
    if (shown !== id) return;
    body.replaceChildren(...(data.deliveries.length ? data.deliveries.map(deliveryRow)
      : [el("tr", {}, el("td", { colspan: "7", class: "muted" }, "No deliveries yet: press Test to send a ping."))]));
    // a pending delivery is being sent or retried: look again soon
    if (data.deliveries.some((d) => d.status === "pending")) refreshTimer = setTimeout(() => showDeliveries(id), 1500);
  }

  function hideDeliveries() {
    shown = null;
    clearTimeout(refreshTimer);
    document.getElementById("deliveries-section").hidden = true;
  }

  document.getElementById("deliveries-refresh").addEventListener("click", () => { if (shown !== null) showDeliveries(shown); });

  // --- the add form ---------------------------------------------------------------------------
  const form = document.getElementById("add-hook-form");
  const panel = document.getElementById("add-hook");
  const toggle = document.getElementById("add-hook-toggle");
  const open = (show) => {
    panel.hidden = !show;
    toggle.setAttribute("aria-expanded", String(show));
    toggle.hidden = show;
    if (show) form.querySelector('[name="url"]').focus();
  };
  toggle.addEventListener("click", () => open(true));
  document.getElementById("add-hook-cancel").addEventListener("click", () => { open(false); form.reset(); clearFieldErrors(form); });

  function body() {
    const b = { url: form.querySelector('[name="url"]').value.trim(),
      events: [...form.querySelectorAll('[name="events"]:checked')].map((i) => i.value) };
    const owner = form.querySelector('[name="owner"]');
    if (owner) b.owner = owner.value.trim() || null;  // administrators: empty is every container
    return b;
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearFieldErrors(form);
    const notice = document.getElementById("add-hook-error");
    notice.hidden = true;
    const submit = document.getElementById("add-hook-submit");
    submit.setAttribute("aria-busy", "true");
    try {
      const added = await api("POST", "/api/webhooks", body());
      form.reset();
      open(false);
      if (added.secret) {
        document.getElementById("new-secret-id").textContent = String(added.webhook.id);
        document.getElementById("new-secret-value").textContent = added.secret;
        document.getElementById("new-secret").hidden = false;
      }
      toast(`Webhook ${added.webhook.id} added`, "ok");
      await load();
    } catch (e) {
      const left = showFieldErrors(form, e);
      if (left.length) {
        notice.textContent = left.join(" ");
        notice.hidden = false;
      }
    } finally {
      submit.removeAttribute("aria-busy");
    }
  });
  document.getElementById("new-secret-copy").addEventListener("click", () => copyText(document.getElementById("new-secret-value").textContent));
  document.getElementById("new-secret-done").addEventListener("click", () => {
    // the secret leaves the page: it is never shown again
    document.getElementById("new-secret-value").textContent = "";
    document.getElementById("new-secret").hidden = true;
  });

  load();
})();
