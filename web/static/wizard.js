// The creation wizard: template → node → network → resources → access →
// variables → review → POST /api/containers, then the progress view.
//
// Every step lives in the page (hidden when not current), so values survive
// Back and Next.  Each input carries data-field="<API field>": the same name
// the API's 4xx answers put in `field`, which is how a refused request lands
// on the step and the input to correct.  The generated root password exists
// only in a local variable and the one-time dialog: never in the URL,
// storage or the console.
"use strict";
(function () {
  const { api, el, bytes, toast, copyText } = window.App;
  const form = document.getElementById("wizard");
  if (!form) return;

  const STEPS = ["template", "node", "network", "resources", "access", "variables", "review"];
  const REVIEW = STEPS.length - 1;
  const RESOURCES = ["cores", "memory", "swap", "disk"];
  const AUTO = "auto"; // the node placement chooses (provisioner.placement.AUTO)
  const NUMBERS = {
    cores: { label: "CPU cores", min: 1, max: 8192, unit: "" },
    memory: { label: "Memory", min: 16, max: 64 * 1024 * 1024, unit: " MiB" },
    swap: { label: "Swap", min: 0, max: 64 * 1024 * 1024, unit: " MiB" },
    disk: { label: "Root disk", min: 1, max: 128 * 1024, unit: " GiB" },
    vmid: { label: "VMID", min: 100, max: 999999999, unit: "" },
  };
  // The API's own check (web/api_containers.py), one key per line.
  const SSH_KEY = /^(ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9-]+|sk-[a-z0-9@.-]+) ([A-Za-z0-9+/]+=*)( [^\x00-\x1f]*)?$/;
  const MIN_PASSWORD = 8;

  const state = {
    step: 0,
    furthest: 0,
    templates: [],
    template: null, // the chosen template (from GET /api/templates)
    nodes: [],
    node: null, // the chosen node's name
    nodeInfo: {}, // name -> GET /api/nodes/<n>/resources, or {error}
    storages: [],
    bridges: [],
    placement: null, // the promise loading the chosen node's storages and bridges
    placementToken: 0,
    loadingPlacement: false,
    touched: new Set(), // resource inputs the user changed (kept when the template changes)
    varValues: {}, // template name -> {variable: raw input value}, kept across template switches
    creating: false,
  };

  const $ = (id) => document.getElementById(id);
  const value = (id) => $(id).value.trim();
  const checkedValue = (name) => {
    const input = form.querySelector(`input[name="${name}"]:checked`);
    return input ? input.value : null;
  };
  const isStatic = () => checkedValue("ipmode") === "static";
  const customPassword = () => checkedValue("pwmode") === "custom";
  const section = (i) => form.querySelector(`section.step[data-step="${STEPS[i]}"]`);
  const fieldEl = (field) => form.querySelector(`[data-field="${CSS.escape(field)}"]`);
  const errorEl = (field) => form.querySelector(`[data-error-for="${CSS.escape(field)}"]`);
  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
  const humanize = (name) => {
    const words = name.replace(/[_-]+/g, " ").trim();
    return words.charAt(0).toUpperCase() + words.slice(1);
  };

  // --- pure checks: each returns a message naming the field, or null -----------------------

  function hostnameProblem(name) {
    if (!name) return "Enter a hostname, e.g. web-01";
    if (name.length > 253) return "The hostname may be at most 253 characters long";
    const bad = name.match(/[^A-Za-z0-9.-]/);
    if (bad) {
      if (bad[0] === "_") return "The hostname cannot contain underscores: use a hyphen (web-01)";
      if (/\s/.test(bad[0])) return "The hostname cannot contain spaces";
      return `The hostname cannot contain “${bad[0]}”: use letters, digits and hyphens`;
    }
    for (const part of name.split(".")) {
      if (!part) return "The hostname has an empty part: no leading, trailing or double dots";
      if (part.length > 63) return "Each part of the hostname (between dots) may be at most 63 characters long";
      if (part.startsWith("-") || part.endsWith("-")) {
        return `The hostname part “${part}” starts or ends with a hyphen, which DNS does not allow`;
      }
    }
    return null;
  }

  function parseIPv4(text) {
    const parts = text.split(".");
    if (parts.length !== 4) return null;
    let n = 0;
    for (const p of parts) {
      if (!/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > 255) return null;
      n = n * 256 + Number(p);
    }
    return n;
  }
  const formatIPv4 = (n) => [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join(".");

  function networkOf(addr, prefix) {
    const size = 2 ** (32 - prefix);
    const base = Math.floor(addr / size) * size;
    return { base, last: base + size - 1, prefix, text: `${formatIPv4(base)}/${prefix}` };
  }

  // {addr, prefix, net} or {problem}
  function parseCidr(text, suggestedPrefix) {
    if (!text) return { problem: "Enter the static address with its prefix length, e.g. 198.18.0.150/24" };
    const slash = text.indexOf("/");
    if (slash < 0) {
      return parseIPv4(text) === null
        ? { problem: `The address “${text}” is not an IPv4 address (four numbers 0–255: 198.18.0.150/24)` }
        : { problem: `The address needs its prefix length: ${text}/${suggestedPrefix || 24}, not ${text}` };
    }
    const addrText = text.slice(0, slash);
    const prefixText = text.slice(slash + 1);
    const addr = parseIPv4(addrText);
    if (addr === null) {
      return { problem: `The address “${addrText}” is not an IPv4 address (four numbers 0–255: 198.18.0.150/24)` };
    }
    if (!/^([1-9]|[12][0-9]|3[0-2])$/.test(prefixText)) {
      return { problem: `The prefix length “${prefixText}” must be a number from 1 to 32 (198.18.0.150/24)` };
    }
    const prefix = Number(prefixText);
    const net = networkOf(addr, prefix);
    if (prefix <= 30 && addr === net.base) {
      return { problem: `${addrText} is the network address of ${net.text}: choose a host address in it` };
    }
    if (prefix <= 30 && addr === net.last) {
      return { problem: `${addrText} is the broadcast address of ${net.text}: choose a host address in it` };
    }
    return { addr, prefix, net };
  }

  function gatewayProblem(gateway, cidr) {
    if (!gateway) return null;
    if (gateway.includes("/")) return "Give the gateway without a prefix length, e.g. 198.18.0.1";
    const addr = parseIPv4(gateway);
    if (addr === null) return `The gateway “${gateway}” is not an IPv4 address`;
    if (cidr.problem) return null; // the address's own message says what to fix first
    const net = cidr.net;
    if (addr < net.base || addr > net.last) {
      return `The gateway ${gateway} is not in the container's network ${net.text}`;
    }
    if (addr === cidr.addr) return "The gateway cannot be the container's own address";
    if (net.prefix <= 30 && (addr === net.base || addr === net.last)) {
      return `The gateway ${gateway} is the ${addr === net.base ? "network" : "broadcast"} address of ${net.text}`;
    }
    return null;
  }

  function numberProblem(id, required) {
    const spec = NUMBERS[id];
    const input = $(id);
    const raw = input.value.trim();
    const range = `${spec.min}–${spec.max}${spec.unit}`;
    if (raw === "" && input.validity.badInput) return `${spec.label} must be a whole number (${range})`;
    if (raw === "") return required ? `Enter ${spec.label.toLowerCase()}: a whole number, ${range}` : null;
    if (!/^[0-9]+$/.test(raw)) return `${spec.label} must be a whole number (${range})`;
    const n = Number(raw);
    if (n < spec.min) return `${spec.label} must be at least ${spec.min}${spec.unit}`;
    if (n > spec.max) return `${spec.label} may be at most ${spec.max}${spec.unit}`;
    return null;
  }

  // {keys: [{type, blob, comment}], problem}
  function parseKeys(text) {
    const keys = [];
    if (text.length > 16384) return { keys, problem: "The SSH public keys may be at most 16384 characters in all" };
    if (/PRIVATE KEY/.test(text)) {
      return { keys, problem: "That is a private key: paste the public key (the .pub file) and keep the private one secret" };
    }
    const lines = text.split(/\r?\n/).map((line, i) => [i + 1, line.trim()]).filter(([, line]) => line);
    for (const [number, line] of lines) {
      const where = lines.length > 1 ? `SSH public key, line ${number}: ` : "SSH public key: ";
      const m = SSH_KEY.exec(line);
      if (!m) return { keys, problem: `${where}not an OpenSSH public key (ssh-ed25519 AAAA… comment)` };
      if (!keyBlobOk(m[2], m[1])) {
        return { keys, problem: `${where}the key data is damaged or cut short (it is not a ${m[1]} key)` };
      }
      keys.push({ type: m[1], blob: m[2], comment: (m[3] || "").trim() });
    }
    return { keys, problem: null };
  }

  // A key's base64 blob is a run of length-prefixed fields, the first one its
  // type: a blob cut short or pasted under the wrong type does not add up.
  function keyBlobOk(blob, type) {
    let raw;
    try {
      raw = atob(blob);
    } catch (e) {
      return false;
    }
    const fields = [];
    let at = 0;
    while (at < raw.length) {
      if (at + 4 > raw.length) return false;
      const length = ((raw.charCodeAt(at) << 24) | (raw.charCodeAt(at + 1) << 16) |
        (raw.charCodeAt(at + 2) << 8) | raw.charCodeAt(at + 3)) >>> 0;
      at += 4;
      if (at + length > raw.length) return false;
      fields.push(raw.slice(at, at + length));
      at += length;
    }
    if (fields.length < 2 || fields[0] !== type) return false;
    return type !== "ssh-ed25519" || (fields.length === 2 && fields[1].length === 32);
  }

  function patternOf(text) {
    try {
      return new RegExp(`^(?:${text})$`);
    } catch (e) {
      return null; // a Python-only construct: the server checks it
    }
  }

  // The provisioner's check_value() for a form value (provisioner/templates/variables.py).
  function variableProblem(v, input) {
    const label = humanize(v.name);
    if (v.type === "bool") return null;
    const raw = v.type === "int" ? input.value.trim() : input.value;
    if (raw === "" && v.secret && !v.required) return null; // generated
    if (raw === "" && v.required) return `${label} is required`;
    if (v.type === "int") {
      if (raw === "" || !/^[+-]?[0-9]+$/.test(raw)) return `${label} must be a whole number`;
      const n = Number(raw);
      if (v.min !== null && n < v.min) return `${label} must be at least ${v.min}`;
      if (v.max !== null && n > v.max) return `${label} must be at most ${v.max}`;
      return null;
    }
    if (v.type === "choice") {
      return v.choices.includes(raw) ? null : `${label} must be one of ${v.choices.join(", ")}`;
    }
    const control = v.multiline ? /[\x00-\x08\x0b-\x1f\x7f]/ : /[\x00-\x1f\x7f]/;
    if (control.test(raw)) return `${label} must not contain control characters${v.multiline ? " (other than newlines and tabs)" : ""}`;
    if (v.min_length !== null && raw.length < v.min_length) {
      return `${label} must be at least ${plural(v.min_length, "character")} long`;
    }
    if (v.max_length !== null && raw.length > v.max_length) {
      return `${label} may be at most ${plural(v.max_length, "character")} long`;
    }
    if (v.pattern) {
      const re = patternOf(v.pattern);
      if (re && !re.test(raw)) return `${label} must match ${v.pattern}${v.secret ? "" : `, got “${raw}”`}`;
    }
    return null;
  }

  // --- the checks of each input (by data-field) ------------------------------------------------

  const checks = {
    template: () => (state.template ? null : "Choose a template to continue"),
    node: () => {
      if (state.node) return null;
      return state.nodes.length ? "Choose the node to run it on" : "There is no node yet: add one on the Nodes page first";
    },
    storage: () => {
      if (!state.node || state.node === AUTO) return null;
      if (state.loadingPlacement) return `Still loading the storages of ${state.node}…`;
      if (!state.storages.length) return `Node ${state.node} offers no storage for container disks`;
      return $("storage").value ? null : "Choose a storage for the root disk";
    },
    bridge: () => {
      if (!state.node || state.node === AUTO) return null;
      if (state.loadingPlacement) return `Still loading the bridges of ${state.node}…`;
      if (!state.bridges.length) return `Node ${state.node} has no network bridge`;
      return $("bridge").value ? null : "Choose a network bridge";
    },
    hostname: () => hostnameProblem(value("hostname")),
    ip: () => (isStatic() ? parseCidr(value("ip"), bridgeNetwork()?.prefix).problem || null : null),
    gateway: () => (isStatic() ? gatewayProblem(value("gateway"), parseCidr(value("ip"))) : null),
    cores: () => numberProblem("cores", true),
    memory: () => numberProblem("memory", true),
    swap: () => numberProblem("swap", true),
    disk: () => numberProblem("disk", true),
    vmid: () => numberProblem("vmid", false),
    ssh_public_key: () => parseKeys($("ssh_public_key").value).problem,
    root_password: () => {
      if (!customPassword()) return null;
      const password = $("root_password").value;
      if (!password) return "Enter the root password, or choose to have one generated";
      if (password.length < MIN_PASSWORD) return `The root password must be at least ${MIN_PASSWORD} characters long`;
      if (password.length > 256) return "The root password may be at most 256 characters long";
      if (/[\x00-\x1f\x7f]/.test(password)) return "The root password must not contain control characters";
      return null;
    },
    root_password_confirm: () => {
      if (!customPassword() || !$("root_password").value) return null;
      return $("root_password_confirm").value === $("root_password").value ? null : "The two passwords differ";
    },
  };

  function setError(field, message) {
    const box = errorEl(field);
    const input = fieldEl(field);
    if (box) box.textContent = message || "";
    if (input) {
      if (message) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
    }
    return Boolean(box);
  }

  function setWarning(field, message) {
    const box = form.querySelector(`[data-warn-for="${field}"]`);
    if (box) box.textContent = message || "";
  }

  const stepFields = (i) =>
    [...section(i).querySelectorAll("[data-field]")].map((e) => e.dataset.field).filter((f) => checks[f]);

  // Check a step; show (or clear) its messages if `show`. Returns the first bad field or null.
  function validateStep(i, show) {
    let first = null;
    for (const field of stepFields(i)) {
      const problem = checks[field]();
      if (show) setError(field, problem);
      if (problem && first === null) first = field;
    }
    return first;
  }

  function recheck(field) {
    if (checks[field]) setError(field, checks[field]());
    else setError(field, null); // the server's message, from before the edit
  }

  // Re-check what the user is typing into only once it was flagged, or when
  // they leave a filled-in field: no red while someone is still typing.
  function onEdit(event, leaving) {
    const target = event.target.closest("[data-field]");
    if (!target) return;
    const field = target.dataset.field;
    if (leaving ? target.value !== "" : target.getAttribute("aria-invalid") === "true") recheck(field);
    // fields whose check depends on this one
    for (const other of { ip: ["gateway"], root_password: ["root_password_confirm"] }[field] || []) {
      if (fieldEl(other).getAttribute("aria-invalid") === "true" || (leaving && value(other))) recheck(other);
    }
  }

  // --- step 1: templates ------------------------------------------------------------------------

  async function loadTemplates() {
    const box = $("template-cards");
    let data;
    try {
      data = await api("GET", "/api/templates");
    } catch (e) {
      box.replaceChildren(loadFailed(`Cannot load the templates: ${e.message}`, loadTemplates));
      return;
    }
    state.templates = data.templates;
    box.replaceChildren(...state.templates.map(templateCard));
    if (!state.templates.length) {
      box.replaceChildren(el("div", { class: "empty" }, el("h2", {}, "No templates"),
        el("p", {}, "Put a template directory with a template.toml into the templates directory.")));
    }
    if (data.invalid && data.invalid.length) {
      box.after(el("p", { class: "muted small-text invalid-templates" },
        `Not offered because they are invalid: ${data.invalid.map((t) => t.name).join(", ")} `,
        el("a", { href: "/templates" }, "(see Templates)")));
    }
    const wanted = form.dataset.preselect;
    if (wanted) {
      const input = box.querySelector(`input[value="${CSS.escape(wanted)}"]`);
      if (input) {
        input.checked = true;
        selectTemplate(wanted);
        show(1);
      } else {
        const notice = $("preselect-missing");
        notice.textContent = `There is no template named “${wanted}”: choose one below.`;
        notice.hidden = false;
      }
    }
  }

  function loadFailed(message, retry) {
    const box = el("div", { class: "notice notice-error load-failed" }, el("span", {}, message), " ");
    box.append(el("button", { type: "button", class: "small secondary", onclick: () => retry() }, "Retry"));
    return box;
  }

  function templateCard(t) {
    const r = t.resources;
    const input = el("input", { type: "radio", name: "template", value: t.name, class: "visually-hidden" });
    input.addEventListener("change", () => selectTemplate(t.name));
    const card = el("label", { class: "card choice-card", "data-template": t.name },
      input,
      el("span", { class: "choice-check", "aria-hidden": "true" }),
      el("span", { class: "choice-title" }, t.name),
      el("span", { class: "choice-desc" }, t.description),
      el("span", { class: "tags" }, t.tags.map((tag) => el("span", { class: "tag" }, tag))),
      el("span", { class: "choice-meta" }, [plural(r.cores, "core"), `${r.memory} MiB`, `${r.disk} GiB disk`,
        t.variables.length ? plural(t.variables.length, "variable") : "no variables"].join(" · ")));
    card.addEventListener("dblclick", () => next());
    return card;
  }

  function selectTemplate(name) {
    const t = state.templates.find((x) => x.name === name);
    if (!t || t === state.template) return;
    if (state.template) state.varValues[state.template.name] = rawVariableValues();
    state.template = t;
    setError("template", null);
    applyResourceDefaults(false);
    renderVariables();
    renderStepper();
  }

  // --- step 2: node, storage, bridge --------------------------------------------------------------

  async function loadNodes() {
    const box = $("node-cards");
    try {
      state.nodes = (await api("GET", "/api/nodes")).nodes;
    } catch (e) {
      box.replaceChildren(loadFailed(`Cannot load the nodes: ${e.message}`, loadNodes));
      return;
    }
    if (!state.nodes.length) {
      box.replaceChildren(el("div", { class: "empty" }, el("h2", {}, "No nodes yet"),
        el("p", {}, "Containers run on a Proxmox VE node. Add one first."),
        el("a", { class: "button primary", href: "/nodes" }, "Add a node")));
      return;
    }
    const several = state.nodes.length > 1;
    box.replaceChildren(...(several ? [autoCard()] : []), ...state.nodes.map(nodeCard));
    state.nodes.forEach((n) => loadNodeInfo(n.name));
    if (!state.node || !box.querySelector(`[data-node="${CSS.escape(state.node)}"]`)) {
      box.querySelector("input").checked = true; // the only node, or automatic placement
      selectNode(several ? AUTO : state.nodes[0].name);
    }
  }

  // Several nodes: placement chooses one (the request's node "auto"), with the
  // node's default storage and bridge; the review says where it would go now.
  function autoCard() {
    const input = el("input", { type: "radio", name: "node", value: AUTO, class: "visually-hidden" });
    input.addEventListener("change", () => selectNode(AUTO));
    const card = el("label", { class: "card choice-card node-card", "data-node": AUTO },
      input,
      el("span", { class: "choice-check", "aria-hidden": "true" }),
      el("span", { class: "choice-title" }, "Automatic (recommended)"),
      el("span", { class: "choice-desc" }, "The node with the most free memory and disk, skipping nodes in maintenance; " +
        "it gets that node's default storage and bridge."),
      el("span", { class: "choice-meta" }, el("span", {}, `${plural(state.nodes.length, "node")} to choose from`)));
    card.addEventListener("dblclick", () => next());
    return card;
  }

  async function loadNodeInfo(name) {
    try {
      state.nodeInfo[name] = await api("GET", `/api/nodes/${encodeURIComponent(name)}/resources`);
    } catch (e) {
      state.nodeInfo[name] = { error: e.message };
    }
    const card = form.querySelector(`[data-node="${CSS.escape(name)}"] .node-stats`);
    if (card) card.replaceChildren(...nodeStats(name));
    if (name === state.node) updateResourceHints();
  }

  function nodeCard(n) {
    const input = el("input", { type: "radio", name: "node", value: n.name, class: "visually-hidden" });
    input.addEventListener("change", () => selectNode(n.name));
    const card = el("label", { class: "card choice-card node-card", "data-node": n.name },
      input,
      el("span", { class: "choice-check", "aria-hidden": "true" }),
      el("span", { class: "choice-title" }, n.name, el("span", { class: "node-status" })),
      el("span", { class: "choice-desc mono host" }, `${n.host}:${n.port} · PVE node ${n.pve_node}`),
      el("span", { class: "node-stats" }, el("span", { class: "skeleton" }), el("span", { class: "skeleton" })),
      el("span", { class: "choice-meta" }, el("span", {}, plural(n.containers || 0, "container"))));
    card.addEventListener("dblclick", () => next());
    return card;
  }

  function meter(label, free, total, text) {
    const used = total > 0 ? Math.min(1, Math.max(0, 1 - free / total)) : 0;
    const level = used > 0.9 ? "high" : used > 0.7 ? "warn" : "ok";
    return el("span", { class: "stat-line" },
      el("span", { class: "stat-text" }, el("span", { class: "muted" }, label), " ", text),
      el("span", { class: `meter ${level}` }, el("span", { style: `width: ${(used * 100).toFixed(1)}%` })));
  }

  function nodeStats(name) {
    const info = state.nodeInfo[name];
    const status = form.querySelector(`[data-node="${CSS.escape(name)}"] .node-status`);
    if (!info || info.error) {
      if (status) status.replaceChildren(el("span", { class: "badge badge-error" }, "unreachable"));
      return [el("span", { class: "node-error small-text" }, info ? info.error : "")];
    }
    if (status) status.replaceChildren(el("span", { class: `badge badge-${info.online ? "ok" : "error"}` }, info.online ? "online" : "offline"));
    return [
      meter("CPU", info.free_cpu, info.cpus, `${info.free_cpu.toFixed(1)} of ${plural(info.cpus, "CPU")} idle`),
      meter("Memory", info.free_memory, info.memory_total, `${bytes(info.free_memory)} of ${bytes(info.memory_total)} free`),
    ];
  }

  function selectNode(name) {
    if (state.node === name && state.placement) return state.placement;
    state.node = name;
    setError("node", null);
    state.placement = loadPlacement(name);
    updateResourceHints();
    renderStepper();
    return state.placement;
  }

  function loading(select) {
    select.disabled = true;
    select.replaceChildren(el("option", { value: "" }, "Loading…"));
  }

  async function loadPlacement(name) {
    if (name === AUTO) return autoPlacement();
    const token = ++state.placementToken;
    const node = state.nodes.find((n) => n.name === name);
    const storage = $("storage");
    const bridge = $("bridge");
    const keep = { storage: storage.value, bridge: bridge.value };
    for (const field of ["storage", "bridge"]) setError(field, null);
    form.querySelectorAll(".placement .load-failed").forEach((e) => e.remove());
    loading(storage);
    loading(bridge);
    state.storages = [];
    state.bridges = [];
    const base = `/api/nodes/${encodeURIComponent(name)}`;
    state.loadingPlacement = true;
    const [storages, bridges] = await Promise.allSettled([
      api("GET", `${base}/storages?content=rootdir`), api("GET", `${base}/bridges`)]);
    if (token !== state.placementToken) return; // another node was chosen meanwhile
    state.loadingPlacement = false;
    if (storages.status === "fulfilled") {
      state.storages = storages.value.storages;
      fillSelect(storage, state.storages.map((s) => ({
        value: s.name,
        text: `${s.name} — ${bytes(s.avail)} free of ${bytes(s.total)} (${s.type})`,
        disabled: !(s.active && s.enabled),
      })), [keep.storage, node.default_storage]);
    } else {
      storage.replaceChildren(el("option", { value: "" }, "Not available"));
      setError("storage", `Cannot list the storages of ${name}: ${storages.reason.message}`);
    }
    if (bridges.status === "fulfilled") {
      state.bridges = bridges.value.bridges;
      fillSelect(bridge, state.bridges.map((b) => ({
        value: b.name,
        text: `${b.name}${b.cidr ? ` — ${b.cidr}` : ""}${b.active ? "" : " (inactive)"}`,
      })), [keep.bridge, node.default_bridge]);
      $("nic-rows").querySelectorAll("select[data-key=bridge]").forEach((select) => fillNicBridge(select, select.value));
    } else {
      bridge.replaceChildren(el("option", { value: "" }, "Not available"));
      setError("bridge", `Cannot list the bridges of ${name}: ${bridges.reason.message}`);
    }
    if (storages.status === "rejected" || bridges.status === "rejected") {
      state.placement = null; // Next or Retry loads again
      form.querySelector(".placement").append(loadFailed("Some of the node's details did not load.", () => selectNode(name)));
    }
    updateBridgeHint();
    updateResourceHints();
  }

  function autoPlacement() {
    ++state.placementToken; // a node's details still loading are not wanted now
    state.loadingPlacement = false;
    state.storages = [];
    state.bridges = [];
    for (const field of ["storage", "bridge"]) setError(field, null);
    form.querySelectorAll(".placement .load-failed").forEach((e) => e.remove());
    for (const id of ["storage", "bridge"]) {
      $(id).replaceChildren(el("option", { value: "" }, "The chosen node's default"));
      $(id).disabled = true;
    }
    $("nic-rows").querySelectorAll("select[data-key=bridge]").forEach((select) => fillNicBridge(select, ""));
    updateBridgeHint();
    updateResourceHints();
    return Promise.resolve();
  }

  // Where the request would go now (POST /api/placement reserves nothing).
  async function previewPlacement(box) {
    const body = { template: state.template.name };
    for (const field of ["memory", "disk"]) if (/^[0-9]+$/.test(value(field))) body[field] = Number(value(field));
    const adv = advancedBody();
    if (adv.mounts) body.mounts = adv.mounts;
    box.replaceChildren(el("span", { class: "muted" }, "asking the nodes…"));
    try {
      const got = await api("POST", "/api/placement", body);
      box.replaceChildren(got.node
        ? el("span", {}, el("strong", {}, got.node), el("span", { class: "muted small-text" }, ` — ${got.reasons.replace(/^placed on [^:]+: /, "")}`))
        : el("span", { class: "field-error" }, got.reasons), ...(got.warning ? [el("div", { class: "small-text" }, got.warning)] : []));
    } catch (e) {
      box.replaceChildren(el("span", { class: "muted" }, `cannot ask now (${e.message}); the node is chosen when you create`));
    }
  }

  function fillSelect(select, options, preferred) {
    select.replaceChildren(...options.map((o) => el("option", { value: o.value, disabled: o.disabled || null }, o.text)));
    const usable = options.filter((o) => !o.disabled).map((o) => o.value);
    const choice = preferred.find((p) => p && usable.includes(p)) || usable[0] || "";
    if (!options.length) select.replaceChildren(el("option", { value: "" }, "None on this node"));
    select.value = choice;
    select.disabled = !options.length;
  }

  // --- step 3: network -------------------------------------------------------------------------------

  function bridgeNetwork() {
    const b = state.bridges.find((x) => x.name === $("bridge").value);
    if (!b || !b.cidr) return null;
    const parsed = parseCidr(b.cidr);
    return parsed.problem ? null : { bridge: b.name, host: formatIPv4(parsed.addr), ...parsed.net };
  }

  function updateBridgeHint() {
    const net = bridgeNetwork();
    const hint = $("bridge-net");
    hint.textContent = net ? `Bridge ${net.bridge} is on ${net.text}; the node's own address there is ${net.host}.` : "";
    if (net) {
      $("ip").placeholder = `${formatIPv4(Math.min(net.base + 150, net.last - 1))}/${net.prefix}`;
      $("gateway").placeholder = net.host;
    }
    updateIpWarning();
  }

  function updateIpWarning() {
    const net = bridgeNetwork();
    const cidr = parseCidr(value("ip"));
    const outside = isStatic() && net && !cidr.problem && (cidr.addr < net.base || cidr.addr > net.last);
    setWarning("ip", outside ? `Not in bridge ${net.bridge}'s network ${net.text}` : "");
  }

  function syncIpMode() {
    const on = isStatic();
    $("static-fields").hidden = !on;
    $("dhcp-help").hidden = on;
    if (!on) ["ip", "gateway"].forEach((f) => setError(f, null));
    updateIpWarning();
  }

  // --- step 4: resources ---------------------------------------------------------------------------------

  function applyResourceDefaults(all) {
    const t = state.template;
    if (!t) return;
    if (all) state.touched.clear();
    for (const field of RESOURCES) {
      if (!state.touched.has(field)) {
        $(field).value = t.resources[field];
        setError(field, null);
      }
    }
    const r = t.resources;
    $("resource-defaults").textContent =
      `Defaults of ${t.name}: ${plural(r.cores, "core")}, ${r.memory} MiB memory, ${r.swap} MiB swap, ${r.disk} GiB disk.`;
    updateResourceHints();
  }

  function updateResourceHints() {
    const info = state.node && state.nodeInfo[state.node];
    const storage = state.storages.find((s) => s.name === $("storage").value);
    const parts = [];
    if (info && !info.error) {
      parts.push(`${state.node}: ${info.free_cpu.toFixed(1)} of ${plural(info.cpus, "CPU")} idle, ${bytes(info.free_memory)} of ${bytes(info.memory_total)} memory free`);
    }
    if (storage) parts.push(`${storage.name}: ${bytes(storage.avail)} free`);
    $("node-free").textContent = parts.join(" · ");
    const number = (id) => (/^[0-9]+$/.test(value(id)) ? Number(value(id)) : null);
    const cores = number("cores");
    const memory = number("memory");
    const disk = number("disk");
    const ok = info && !info.error;
    setWarning("cores", ok && cores > info.cpus ? `More than the ${plural(info.cpus, "CPU")} of ${state.node}` : "");
    setWarning("memory", ok && memory * 1048576 > info.free_memory ? `More than ${state.node}'s free memory (${bytes(info.free_memory)})` : "");
    setWarning("disk", storage && disk * 1073741824 > storage.avail ? `More than the free space on ${storage.name} (${bytes(storage.avail)})` : "");
  }

  // --- step 5: access ----------------------------------------------------------------------------------------

  function renderKeys() {
    const { keys } = parseKeys($("ssh_public_key").value);
    $("key-list").replaceChildren(...keys.map((k) => el("li", {},
      el("span", { class: "tag" }, k.type), " ",
      el("span", { class: "mono small-text" }, `${k.blob.slice(0, 12)}…${k.blob.slice(-8)}`), " ",
      el("span", { class: "muted" }, k.comment || "(no comment)"))));
  }

  async function uploadKey(event) {
    const file = event.target.files[0];
    event.target.value = ""; // choosing the same file again fires change again
    if (!file) return;
    if (file.size > 16384) {
      setError("ssh_public_key", `${file.name} is ${bytes(file.size)}: a public key is far smaller; choose the .pub file`);
      return;
    }
    const text = (await file.text()).trim();
    const area = $("ssh_public_key");
    area.value = area.value.trim() ? `${area.value.trim()}\n${text}` : text;
    recheck("ssh_public_key");
    renderKeys();
    if (!checks.ssh_public_key()) toast(`Added the key from ${file.name}`, "ok");
  }

  function syncPasswordMode() {
    const on = customPassword();
    $("password-fields").hidden = !on;
    if (!on) ["root_password", "root_password_confirm"].forEach((f) => setError(f, null));
  }

  // --- step 6: variables -----------------------------------------------------------------------------------

  function variableInput(v, saved) {
    const attrs = { id: `var-${v.name}`, "data-field": `variables.${v.name}`, "data-var": v.name, name: `var-${v.name}` };
    const initial = saved !== undefined ? saved : v.default;
    if (v.type === "bool") {
      const box = el("input", { type: "checkbox", ...attrs });
      box.checked = Boolean(initial);
      return box;
    }
    if (v.type === "choice") {
      const select = el("select", attrs, v.choices.map((c) => el("option", { value: c }, c)));
      select.value = initial === null || initial === undefined ? v.choices[0] : String(initial);
      return select;
    }
    let input;
    if (v.type === "int") {
      input = el("input", { type: "text", inputmode: "numeric", class: "num", ...attrs });
    } else if (v.multiline) {
      input = el("textarea", { rows: 3, spellcheck: "false", ...attrs });
    } else {
      input = el("input", {
        type: v.secret ? "password" : "text", spellcheck: "false", autocomplete: v.secret ? "new-password" : "off",
        placeholder: v.secret && !v.required ? `generated: ${v.generated_length} random characters` : null, ...attrs });
    }
    input.value = initial === null || initial === undefined ? "" : String(initial);
    return input;
  }

  function variableHelp(v) {
    const bits = [];
    if (v.description) bits.push(v.description);
    if (v.type === "int" && (v.min !== null || v.max !== null)) {
      bits.push(v.min !== null && v.max !== null ? `${v.min}–${v.max}` : v.min !== null ? `at least ${v.min}` : `at most ${v.max}`);
    }
    if (v.secret && !/generat/i.test(v.description)) bits.push("leave empty to generate one");
    return bits.join(" · ");
  }

  function renderVariables() {
    const box = $("variable-fields");
    for (const key of Object.keys(checks)) if (key.startsWith("variables.")) delete checks[key];
    const t = state.template;
    const vars = t ? t.variables : [];
    $("variables-lead").textContent = vars.length
      ? `Settings ${t.name}'s files and scripts use (scripts see them as TPL_<NAME>).`
      : "";
    if (!vars.length) {
      box.replaceChildren(el("div", { class: "empty compact" },
        el("p", {}, t ? `${t.name} has no variables: nothing to set here.` : "Choose a template first.")));
      return;
    }
    const saved = state.varValues[t.name] || {};
    box.replaceChildren(...vars.map((v) => {
      const input = variableInput(v, saved[v.name]);
      const field = `variables.${v.name}`;
      checks[field] = () => variableProblem(v, input);
      const help = el("div", { class: "field-help" }, variableHelp(v));
      const error = el("div", { class: "field-error", "data-error-for": field, id: `err-var-${v.name}` });
      input.setAttribute("aria-describedby", `err-var-${v.name}`);
      const name = el("code", { class: "var-name" }, v.name);
      const optional = v.required ? null : v.secret ? el("span", { class: "optional" }, " (optional)") : null;
      if (v.type === "bool") {
        return el("div", { class: "field variable" },
          el("label", { class: "checkbox", for: input.id }, input, humanize(v.name), name), help, error);
      }
      return el("div", { class: "field variable" },
        el("label", { for: input.id }, humanize(v.name), optional, name), input, help, error);
    }));
  }

  function rawVariableValues() {
    const out = {};
    $("variable-fields").querySelectorAll("[data-var]").forEach((input) => {
      out[input.dataset.var] = input.type === "checkbox" ? input.checked : input.value;
    });
    return out;
  }

  function variableValues() {
    const out = {};
    for (const v of state.template.variables) {
      const input = $("variable-fields").querySelector(`[data-var="${CSS.escape(v.name)}"]`);
      if (v.type === "bool") out[v.name] = input.checked;
      else if (v.type === "int") out[v.name] = Number(input.value.trim());
      else if (!(v.secret && input.value === "")) out[v.name] = input.value;
    }
    return out;
  }

  // --- the advanced options: repeatable rows (interfaces, volumes, bind mounts) ----------------------
  // Each row's inputs carry data-field="nics[0].vlan" etc., the API's field
  // names, so a refused request lands on the input (renumbered on removal).

  const ROWS = {
    nics: { box: "nic-rows", noun: "interface", fields: [
      ["bridge", "Bridge", "bridge"], ["ip", "IPv4", "text", "dhcp"], ["ip6", "IPv6", "text", "none"],
      ["vlan", "VLAN", "number", ""], ["firewall", "Firewall", "checkbox"]] },
    mounts: { box: "mount-rows", noun: "volume", fields: [
      ["path", "Path", "text", "/data"], ["size", "Size (GiB)", "number", "2"], ["backup", "Backed up", "checkbox", true]] },
    binds: { box: "bind-rows", noun: "bind mount", fields: [
      ["source", "Host path", "text", "/srv/www/site"], ["path", "Path", "text", "/mnt/site"], ["ro", "Read-only", "checkbox"]] },
  };

  function renumber(kind) {
    [...$(ROWS[kind].box).children].forEach((row, i) => {
      row.querySelectorAll("[data-key]").forEach((input) => {
        input.dataset.field = `${kind}[${i}].${input.dataset.key}`;
        input.id = `${kind}-${i}-${input.dataset.key}`;
      });
      row.querySelectorAll("[data-error-key]").forEach((box) => {
        box.dataset.errorFor = `${kind}[${i}].${box.dataset.errorKey}`;
      });
      row.querySelector(".remove-row").setAttribute("aria-label", `Remove ${ROWS[kind].noun} ${i + 1}`);
    });
  }

  function addRow(kind) {
    const spec = ROWS[kind];
    const row = el("div", { class: "row-fields form-grid" });
    for (const [key, label, type, extra] of spec.fields) {
      let input;
      if (type === "checkbox") input = el("input", { type: "checkbox", "data-key": key, checked: extra === true });
      else if (type === "bridge") fillNicBridge(input = el("select", { "data-key": key }), "");
      else input = el("input", { type, "data-key": key, placeholder: extra, spellcheck: "false", class: type === "number" ? "num" : null });
      row.append(el("div", { class: type === "checkbox" ? "field narrow" : "field" },
        type === "checkbox" ? el("label", { class: "checkbox" }, input, ` ${label}`) : el("label", {}, label, input),
        el("div", { class: "field-error", "data-error-key": key })));
    }
    row.append(el("button", { type: "button", class: "ghost small remove-row",
      onclick: () => { row.remove(); renumber(kind); } }, "Remove"));
    $(spec.box).append(row);
    renumber(kind);
    row.querySelector("input, select").focus();
  }

  // A further interface's bridge: the node's default, or one of the bridges it has.
  function fillNicBridge(select, keep) {
    fillSelect(select, [{ value: "", text: "The node's default" },
      ...state.bridges.map((b) => ({ value: b.name, text: `${b.name}${b.cidr ? ` — ${b.cidr}` : ""}` }))], [keep]);
  }

  function rowValues(kind) {
    return [...$(ROWS[kind].box).children].map((row) => {
      const out = {};
      row.querySelectorAll("[data-key]").forEach((input) => {
        const key = input.dataset.key;
        if (input.type === "checkbox") out[key] = input.checked;
        else if (input.value.trim() !== "") out[key] = input.type === "number" ? Number(input.value) : input.value.trim();
      });
      if (kind === "nics" && out.ip === undefined && out.ip6 !== undefined) out.ip = null; // IPv6 only
      return out;
    });
  }

  // The advanced options as the API takes them (only those given).
  function advancedBody() {
    const body = {};
    for (const id of ["ip6", "gateway6", "nameserver", "searchdomain", "pool", "startup"]) {
      if (value(id)) body[id] = value(id);
    }
    if (value("vlan")) body.vlan = Number(value("vlan"));
    if ($("firewall").checked) body.firewall = true;
    if (value("onboot")) body.onboot = value("onboot") === "1";
    if (value("tags")) body.tags = value("tags").split(/[\s,]+/).filter(Boolean);
    for (const kind of Object.keys(ROWS)) {
      const rows = rowValues(kind);
      if (rows.length) body[kind] = rows;
    }
    const features = {};
    form.querySelectorAll("[data-feature]").forEach((select) => {
      if (select.value) features[select.dataset.feature] = select.value === "1";
    });
    if (Object.keys(features).length) body.features = features;
    return body;
  }

  // --- step 7: review and create ---------------------------------------------------------------------------

  function requestBody() {
    const body = {
      template: state.template.name,
      node: state.node,
      hostname: value("hostname"),
      ip: isStatic() ? value("ip") : "dhcp",
      failure_policy: checkedValue("failure_policy"),
      variables: variableValues(),
    };
    for (const field of RESOURCES) body[field] = Number(value(field));
    if (isStatic() && value("gateway")) body.gateway = value("gateway");
    for (const id of ["storage", "bridge"]) if ($(id).value) body[id] = $(id).value;
    if (value("environment")) body.environment = value("environment");
    if (value("vmid")) body.vmid = Number(value("vmid"));
    if (value("ssh_public_key")) body.ssh_public_key = value("ssh_public_key");
    if (customPassword()) body.root_password = $("root_password").value;
    return { ...body, ...advancedBody() };
  }

  function reviewCard(title, step, rows) {
    return el("div", { class: "card review-card", "data-review": STEPS[step] },
      el("div", { class: "card-header" }, el("h3", {}, title),
        el("button", { type: "button", class: "ghost small", onclick: () => show(step) }, "Edit")),
      el("dl", { class: "kv" }, rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])));
  }

  function renderReview() {
    const t = state.template;
    const adv = advancedBody();
    const advancedRows = (...pairs) => pairs.filter(([key]) => adv[key] !== undefined)
      .map(([key, label]) => [label, el("span", { class: "mono" }, String(adv[key]))]);
    const keys = parseKeys($("ssh_public_key").value).keys;
    const storage = state.storages.find((s) => s.name === $("storage").value);
    const vmid = value("vmid");
    const vars = t.variables.map((v) => {
      const input = $("variable-fields").querySelector(`[data-var="${CSS.escape(v.name)}"]`);
      let shown;
      if (v.type === "bool") shown = input.checked ? "yes" : "no";
      else if (v.secret) shown = input.value ? "set by you (hidden)" : `generated (${v.generated_length} characters)`;
      else shown = input.value === "" ? el("span", { class: "muted" }, "(empty)") : el("span", { class: "pre" }, input.value);
      return [el("code", {}, v.name), shown];
    });
    $("review").replaceChildren(
      reviewCard("Template", 0, [["Template", el("strong", {}, t.name)], ["Description", t.description],
        ["OS image", el("span", { class: "mono small-text" }, t.ostemplate)]]),
      reviewCard("Placement", 1, [["Node", state.node === AUTO ? el("span", { id: "auto-choice" }) : state.node],
        ["Storage", storage ? `${storage.name} (${bytes(storage.avail)} free)` : $("storage").value],
        ["Bridge", $("bridge").value]]),
      reviewCard("Network", 2, [["Hostname", el("span", { class: "mono" }, value("hostname"))],
        ["Environment", value("environment") ? value("environment") + (value("environment") === "production" ? " (protected in Proxmox VE)" : "") : "none"],
        ["IPv4", isStatic() ? el("span", { class: "mono" }, value("ip")) : "DHCP"],
        ...(isStatic() ? [["Gateway", value("gateway") ? el("span", { class: "mono" }, value("gateway")) : "none"]] : []),
        ...advancedRows(["ip6", "IPv6"], ["gateway6", "IPv6 gateway"], ["vlan", "VLAN tag"], ["nameserver", "DNS servers"],
          ["searchdomain", "Search domains"]),
        ...(adv.firewall ? [["Firewall", "on eth0"]] : []),
        ...(adv.nics ? [["Further interfaces", adv.nics.map((n, i) => `eth${i + 1}: ${[n.bridge || "node's bridge", n.ip === null ? null : n.ip || "dhcp", n.ip6, n.vlan && `VLAN ${n.vlan}`, n.firewall && "firewall"].filter(Boolean).join(", ")}`).join("; ")]] : [])]),
      reviewCard("Resources", 3, [["CPU cores", value("cores")], ["Memory", `${value("memory")} MiB`],
        ["Swap", `${value("swap")} MiB`], ["Root disk", `${value("disk")} GiB`],
        ["VMID", vmid || "next free"],
        ...(adv.mounts ? [["Data volumes", adv.mounts.map((m) => `${m.path} (${m.size} GiB${m.backup ? "" : ", no backup"})`).join(", ")]] : []),
        ...(adv.binds ? [["Bind mounts", adv.binds.map((b) => `${b.source} → ${b.path}${b.ro ? " (read-only)" : ""}`).join(", ")]] : []),
        ...(adv.features ? [["Features", Object.entries(adv.features).map(([k, on]) => `${k} ${on ? "on" : "off"}`).join(", ")]] : []),
        ...(adv.onboot !== undefined ? [["Start on boot", adv.onboot ? "yes" : "no"]] : []),
        ...advancedRows(["startup", "Startup"], ["pool", "Pool"]),
        ...(adv.tags ? [["Tags", adv.tags.join(", ")]] : []),
        ["If it fails", checkedValue("failure_policy") === "destroy" ? "destroy the container" : "keep the container"]]),
      reviewCard("Access", 4, [
        ["SSH keys", keys.length ? el("span", {}, keys.map((k) => el("span", { class: "key-line" },
          el("span", { class: "tag" }, k.type), " ", k.comment || "(no comment)"))) : "none (password only)"],
        ["Root password", customPassword() ? "set by you" : "generated, shown once after creation"]]),
      reviewCard("Variables", 5, vars.length ? vars : [["Variables", "none"]]),
    );
    if (state.node === AUTO) previewPlacement($("auto-choice"));
  }

  function setBusy(busy) {
    const nextButton = $("next");
    nextButton.disabled = busy;
    nextButton.setAttribute("aria-busy", busy ? "true" : "false");
    nextButton.replaceChildren(...(busy ? [el("span", { class: "spinner" }), "Creating…"] : ["Create container"]));
    $("back").disabled = busy;
    form.classList.toggle("busy", busy);
  }

  function jumpToField(field, message) {
    let target = field;
    // a part without an input of its own (variables.x, nics[1], startup.order): the whole field's
    while (!fieldEl(target) && /[.[]/.test(target)) target = target.replace(/(\.[^.[\]]*|\[\d+\])$/, "");
    if (target === "ip" || target === "gateway") {
      form.querySelector('input[name="ipmode"][value="static"]').checked = true;
      syncIpMode();
    }
    const input = fieldEl(target);
    const step = input && input.closest("section.step");
    if (!step || !errorEl(target)) return false;
    show(STEPS.indexOf(step.dataset.step), false);
    setError(target, message);
    focusField(target);
    return true;
  }

  async function create() {
    for (let i = 0; i < REVIEW; i++) {
      const bad = validateStep(i, true);
      if (bad) {
        show(i, false);
        focusField(bad);
        return;
      }
    }
    const errorBox = $("create-error");
    errorBox.hidden = true;
    state.creating = true;
    setBusy(true);
    let created;
    try {
      created = await api("POST", "/api/containers", requestBody());
    } catch (e) {
      state.creating = false;
      setBusy(false);
      if (e.status === 401) return; // app.js is taking us to the login page
      if (e.field && jumpToField(e.field, e.message)) {
        renderStepper();
        return;
      }
      errorBox.replaceChildren(el("strong", {}, "The container was not created. "), e.message);
      errorBox.hidden = false;
      errorBox.scrollIntoView({ block: "nearest" });
      return;
    }
    const generated = Object.entries(created.generated_secrets || {});
    if (created.root_password || generated.length) {
      await showPasswordOnce(created.root_password, value("hostname"), created.warning, generated);
    }
    else if (created.warning) toast(created.warning, "info");
    window.location.replace(`/containers/${encodeURIComponent(created.id)}/progress`);
  }

  // The generated root password and the values generated for the template's
  // secret variables, shown this one time; resolves when dismissed.
  function showPasswordOnce(password, hostname, warning, generated) {
    return new Promise((resolve) => {
      const secret = password ? el("code", { class: "secret", id: "root-password" }, password) : null;
      const codes = generated.map(([name, v]) => el("code", { class: "secret", id: `generated-${name}` }, v));
      const dialog = el("dialog", { class: "confirm password-dialog", "aria-labelledby": "password-title" },
        el("h2", { id: "password-title" }, password ? "Save the root password" : "Save the generated secrets"),
        password ? el("p", {}, "The root password of ", el("strong", {}, hostname),
          " is shown this once. It is stored encrypted and no page shows it again.") : null,
        password ? el("div", { class: "secret-box" }, secret,
          el("button", { type: "button", class: "secondary small", id: "copy-password", onclick: () => copyText(password) }, "Copy")) : null,
        generated.length ? el("div", { class: "generated-secrets" },
          el("p", {}, "Values generated for the template's secret variables, shown this once too:"),
          generated.map(([name, v], i) => el("div", { class: "secret-row" },
            el("span", { class: "label mono", id: `generated-${name}-label` }, name),
            el("div", { class: "secret-box", role: "group", "aria-labelledby": `generated-${name}-label` }, codes[i],
              el("button", { type: "button", class: "secondary small", "aria-label": `Copy ${name}`, onclick: () => copyText(v) }, "Copy"))))) : null,
        warning
          ? el("div", { class: "notice notice-warn small-text" }, warning)
          : el("p", { class: "muted small-text" }, "Provisioning has already started; you will see its progress next."),
        el("div", { class: "actions" },
          el("button", { type: "button", class: "primary", id: "password-saved", onclick: () => dialog.close() }, "I have saved it")));
      dialog.addEventListener("cancel", (e) => e.preventDefault()); // Escape must not lose it by accident
      dialog.addEventListener("close", () => {
        if (secret) secret.textContent = "";
        codes.forEach((c) => { c.textContent = ""; });
        dialog.remove();
        resolve();
      });
      document.body.append(dialog);
      dialog.showModal();
      (password ? $("copy-password") : $("password-saved")).focus();
    });
  }

  // --- navigation ---------------------------------------------------------------------------------------------

  function summary(i) {
    const t = state.template;
    switch (STEPS[i]) {
      case "template": return t ? t.name : "";
      case "node": return state.node === AUTO ? "automatic" : state.node ? [state.node, $("storage").value].filter(Boolean).join(" · ") : "";
      case "network": return isStatic() ? value("ip") : value("hostname") ? "DHCP" : "";
      case "resources": return value("cores") ? `${plural(Number(value("cores")), "core")} · ${value("memory")} MiB` : "";
      case "access": {
        const n = parseKeys($("ssh_public_key").value).keys.length;
        return n ? plural(n, "key") : "password";
      }
      case "variables": return t ? (t.variables.length ? plural(t.variables.length, "variable") : "none") : "";
      default: return "";
    }
  }

  function renderStepper() {
    STEPS.forEach((id, i) => {
      const li = form.querySelector(`#stepper li[data-step="${id}"]`);
      const visited = i <= state.furthest;
      const current = i === state.step;
      const invalid = visited && !current && i !== REVIEW && validateStep(i, false) !== null;
      li.classList.toggle("current", current);
      li.classList.toggle("done", visited && !current && !invalid && i !== REVIEW);
      li.classList.toggle("invalid", invalid);
      const link = li.querySelector("button");
      link.disabled = !visited || state.creating;
      if (current) link.setAttribute("aria-current", "step");
      else link.removeAttribute("aria-current");
      li.querySelector(".step-sub").textContent = visited && i !== REVIEW ? summary(i) : "";
    });
  }

  function show(i, focus = true) {
    state.step = i;
    state.furthest = Math.max(state.furthest, i);
    STEPS.forEach((_, k) => { section(k).hidden = k !== i; });
    $("back").disabled = i === 0;
    $("step-count").textContent = `Step ${i + 1} of ${STEPS.length}`;
    const nextButton = $("next");
    nextButton.replaceChildren(i === REVIEW ? "Create container" : "Next");
    nextButton.classList.toggle("create", i === REVIEW);
    if (STEPS[i] === "review") renderReview();
    if (STEPS[i] === "resources") updateResourceHints();
    if (STEPS[i] === "network") updateBridgeHint();
    renderStepper();
    if (form.getBoundingClientRect().top < 0) form.scrollIntoView({ block: "start" });
    if (focus) focusStep(i);
  }

  function focusStep(i) {
    const s = section(i);
    const first = s.querySelector("input:checked, input:not([type=hidden]):not([type=file]):not([disabled]), select:not([disabled]), textarea");
    const target = STEPS[i] === "review" || !first || first.closest("[hidden], details:not([open])") ? s.querySelector("h2") : first;
    target.focus({ preventScroll: true });
  }

  function focusField(field) {
    let input = fieldEl(field);
    if (!input) return;
    const details = input.closest("details");
    if (details) details.open = true;
    if (!/^(INPUT|SELECT|TEXTAREA)$/.test(input.tagName)) {
      input = input.querySelector("input:checked") || input.querySelector("input, select, textarea") || input;
    }
    if (input.focus) input.focus({ preventScroll: true });
    input.scrollIntoView({ block: "center" });
  }

  async function next() {
    if (state.creating) return;
    if (state.step === REVIEW) return create();
    if (STEPS[state.step] === "node" && state.node) {
      const nextButton = $("next");
      nextButton.setAttribute("aria-busy", "true");
      try {
        await (state.placement || selectNode(state.node));
      } finally {
        nextButton.setAttribute("aria-busy", "false");
      }
    }
    const bad = validateStep(state.step, true);
    if (bad) {
      focusField(bad);
      renderStepper();
      return;
    }
    show(state.step + 1);
  }

  function back() {
    if (state.step > 0 && !state.creating) show(state.step - 1);
  }

  // Jump with the stepper: backwards freely, forwards only across valid steps.
  function goTo(i) {
    if (state.creating || i > state.furthest) return;
    for (let k = Math.min(state.step, i); k < i; k++) {
      const bad = validateStep(k, true);
      if (bad) {
        show(k, false);
        focusField(bad);
        return;
      }
    }
    show(i);
  }

  // --- wiring ----------------------------------------------------------------------------------------------------

  function init() {
    // every error box describes its input
    form.querySelectorAll("[data-error-for]").forEach((box) => {
      const input = fieldEl(box.dataset.errorFor);
      box.id = box.id || `err-${box.dataset.errorFor}`;
      if (input) {
        const described = (input.getAttribute("aria-describedby") || "").split(" ").filter(Boolean);
        input.setAttribute("aria-describedby", [...described, box.id].join(" "));
      }
    });
    $("next").addEventListener("click", () => next());
    $("back").addEventListener("click", back);
    $("stepper").addEventListener("click", (e) => {
      const link = e.target.closest("[data-goto]");
      if (link) goTo(STEPS.indexOf(link.dataset.goto));
    });
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      next();
    });
    // Enter = Next (Ctrl+Enter inside a text area); buttons and links keep their own Enter.
    form.addEventListener("keydown", (e) => {
      if (e.key !== "Enter" || e.isComposing || e.altKey || e.shiftKey) return;
      const t = e.target;
      if (t.tagName === "TEXTAREA" && !(e.ctrlKey || e.metaKey)) return;
      if (/^(BUTTON|A|SUMMARY)$/.test(t.tagName) || t.type === "file") return;
      e.preventDefault();
      next();
    });
    form.addEventListener("input", (e) => {
      const field = e.target.dataset.field;
      if (RESOURCES.includes(field)) {
        state.touched.add(field);
        updateResourceHints();
      }
      if (field === "ip") updateIpWarning();
      if (field === "ssh_public_key") renderKeys();
      onEdit(e, false);
    });
    form.addEventListener("focusout", (e) => onEdit(e, true));
    form.addEventListener("change", (e) => {
      if (e.target.name === "ipmode") syncIpMode();
      if (e.target.name === "pwmode") syncPasswordMode();
      if (e.target.id === "storage") {
        setError("storage", null);
        updateResourceHints();
      }
      if (e.target.id === "bridge") {
        setError("bridge", null);
        updateBridgeHint();
      }
    });
    $("reset-resources").addEventListener("click", () => applyResourceDefaults(true));
    $("add-nic").addEventListener("click", () => addRow("nics"));
    $("add-mount").addEventListener("click", () => addRow("mounts"));
    $("add-bind").addEventListener("click", () => addRow("binds"));
    $("ssh-file").addEventListener("change", uploadKey);
    syncIpMode();
    syncPasswordMode();
    renderVariables();
    show(0, false);
    loadTemplates();
    loadNodes();
  }

  init();
})();
