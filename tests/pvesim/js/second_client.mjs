// A second, independent PVE API client (npm "proxmox-api") driven against
// the simulator: ticket and token logins, reads, a container's whole life
// (create, start, DHCP address, stop, destroy) and one rejected request.
//
// Configuration comes from the environment (see REQUIRED below). The
// simulator's CA is trusted through NODE_EXTRA_CA_CERTS, which the caller
// sets to PVE_CAFILE; TLS verification stays on.
//
// On success prints one JSON line with what it saw; on failure prints the
// step and the reason on stderr and exits 1.

import proxmoxApi, { ProxmoxEngine } from "proxmox-api";

const REQUIRED = [
  "PVE_HOST", "PVE_PORT", "PVE_USER", "PVE_PASSWORD", "PVE_TOKEN_ID",
  "PVE_TOKEN_SECRET", "PVE_CAFILE", "PVE_NODE", "PVE_VMID", "PVE_SSH_KEY",
];
const TASK_TIMEOUT_MS = 90_000;
const IP_TIMEOUT_MS = 60_000;

const steps = [];
let current = "setup";

class StepError extends Error {}

function fail(message) {
  throw new StepError(message);
}

function check(cond, message) {
  if (!cond) fail(message);
}

async function step(name, fn) {
  current = name;
  const result = await fn();
  steps.push(name);
  return result;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Split proxmox-api's error text ("<METHOD> <url> return Error <status>
 * <reason>: <json body>") into its parts. */
function parseApiError(err) {
  const text = String(err && err.message ? err.message : err);
  const m = /return Error (\d{3}) (.*?): (\{.*\})$/s.exec(text);
  if (!m) return { status: null, reason: null, body: null, text };
  let body = null;
  try {
    body = JSON.parse(m[3]);
  } catch {
    // leave body null; the caller reports the raw text
  }
  return { status: Number(m[1]), reason: m[2], body, text };
}

async function waitTask(api, node, upid, what) {
  check(typeof upid === "string" && upid.startsWith("UPID:"), `${what}: expected a UPID, got ${JSON.stringify(upid)}`);
  const deadline = Date.now() + TASK_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const st = await api.nodes.$(node).tasks.$(upid).status.$get();
    if (st.status === "stopped") {
      check(st.exitstatus === "OK", `${what}: task ${upid} ended with exitstatus ${JSON.stringify(st.exitstatus)}`);
      return st;
    }
    check(st.status === "running", `${what}: task ${upid} has status ${JSON.stringify(st.status)}`);
    await sleep(100);
  }
  fail(`${what}: task ${upid} still running after ${TASK_TIMEOUT_MS / 1000}s`);
}

async function main() {
  const missing = REQUIRED.filter((k) => !process.env[k]);
  check(missing.length === 0, `missing environment variables: ${missing.join(", ")}`);
  check(process.env.NODE_TLS_REJECT_UNAUTHORIZED !== "0", "refusing to run with TLS verification disabled");
  check(process.env.NODE_EXTRA_CA_CERTS === process.env.PVE_CAFILE,
    "NODE_EXTRA_CA_CERTS must name PVE_CAFILE (the simulator's CA) when node starts");

  const env = process.env;
  const host = env.PVE_HOST;
  const port = Number(env.PVE_PORT);
  const node = env.PVE_NODE;
  const vmid = Number(env.PVE_VMID);
  check(Number.isInteger(port) && port > 0, `bad PVE_PORT ${env.PVE_PORT}`);
  check(Number.isInteger(vmid) && vmid >= 100, `bad PVE_VMID ${env.PVE_VMID}`);
  const out = { node, vmid };

  // --- logins --------------------------------------------------------------
  const engine = new ProxmoxEngine({ host, port, username: env.PVE_USER, password: env.PVE_PASSWORD });
  const ticketApi = proxmoxApi(engine);
  await step("ticket-login", async () => {
    const { ticket, CSRFPreventionToken } = await engine.getTicket();
    check(typeof ticket === "string" && ticket.startsWith("PVE:"), `ticket looks wrong: ${ticket}`);
    check(typeof CSRFPreventionToken === "string" && CSRFPreventionToken.length > 0, "no CSRFPreventionToken");
    const v = await ticketApi.version.$get();
    check(v && v.version, `GET /version with a ticket returned ${JSON.stringify(v)}`);
  });

  const api = proxmoxApi({ host, port, tokenID: env.PVE_TOKEN_ID, tokenSecret: env.PVE_TOKEN_SECRET });
  await step("token-login", async () => {
    const v = await api.version.$get();
    check(v && v.version, `GET /version with the token returned ${JSON.stringify(v)}`);
    out.version = v.version;
    out.release = v.release;
  });

  // --- reads ---------------------------------------------------------------
  await step("nodes", async () => {
    const nodes = await api.nodes.$get();
    check(Array.isArray(nodes), `GET /nodes returned ${JSON.stringify(nodes)}`);
    const me = nodes.find((n) => n.node === node);
    check(me, `node ${node} not in GET /nodes: ${JSON.stringify(nodes)}`);
    check(me.status === "online", `node ${node} is ${me.status}`);
  });

  await step("nextid", async () => {
    const id = await api.cluster.nextid.$get();
    check(Number.isInteger(Number(id)) && Number(id) >= 100, `GET /cluster/nextid returned ${JSON.stringify(id)}`);
    out.nextid = Number(id);
  });

  await step("storage", async () => {
    const list = await api.nodes.$(node).storage.$get();
    check(Array.isArray(list), `GET /nodes/${node}/storage returned ${JSON.stringify(list)}`);
    const names = list.map((s) => s.storage);
    for (const want of ["local", "local-lvm"]) {
      check(names.includes(want), `storage ${want} missing from ${JSON.stringify(names)}`);
    }
    out.storages = names;
  });

  await step("templates", async () => {
    const content = await api.nodes.$(node).storage.$("local").content.$get({ content: "vztmpl" });
    check(Array.isArray(content), `GET .../storage/local/content returned ${JSON.stringify(content)}`);
    const tmpl = content.find((c) => c.content === "vztmpl" && typeof c.volid === "string");
    check(tmpl, `no vztmpl volume on storage local: ${JSON.stringify(content)}`);
    check(content.every((c) => c.content === "vztmpl"), `content filter ignored: ${JSON.stringify(content)}`);
    out.template = tmpl.volid;
  });

  const lxc = api.nodes.$(node).lxc;
  const ct = lxc.$(vmid);
  const createParams = {
    vmid,
    ostemplate: out.template,
    storage: "local-lvm",
    hostname: "jsclient",
    net0: "name=eth0,bridge=vmbr0,ip=dhcp",
    "ssh-public-keys": env.PVE_SSH_KEY,
    unprivileged: 1,
    start: 0,
  };

  // --- a request PVE rejects -------------------------------------------------
  await step("bad-request", async () => {
    let err = null;
    try {
      await lxc.$post({ ...createParams, memory: 1 });
    } catch (e) {
      err = e;
    }
    check(err, "POST /lxc with memory=1 was accepted");
    const parsed = parseApiError(err);
    check(parsed.status === 400, `POST /lxc with memory=1: expected status 400, library said: ${parsed.text}`);
    check(parsed.reason === "Parameter verification failed.", `unexpected reason phrase: ${parsed.text}`);
    const memErr = parsed.body && parsed.body.errors && parsed.body.errors.memory;
    check(typeof memErr === "string" && /minimum/.test(memErr), `PVE's memory error not surfaced: ${parsed.text}`);
    out.bad_request = { status: parsed.status, reason: parsed.reason, errors: parsed.body.errors };
    const list = await lxc.$get();
    check(!list.some((c) => Number(c.vmid) === vmid), `rejected create left CT ${vmid} behind`);
  });

  // --- a container's life (writes through the ticket: cookie + CSRF) --------
  const tlxc = ticketApi.nodes.$(node).lxc;
  const tct = tlxc.$(vmid);

  await step("create", async () => {
    const upid = await tlxc.$post(createParams);
    await waitTask(api, node, upid, "create");
    out.create_upid = upid;
    const cfg = await ct.config.$get();
    check(cfg.hostname === "jsclient", `config hostname is ${JSON.stringify(cfg.hostname)}`);
    check(typeof cfg.net0 === "string" && cfg.net0.includes("ip=dhcp"), `config net0 is ${JSON.stringify(cfg.net0)}`);
  });

  await step("start", async () => {
    const upid = await tct.status.start.$post();
    await waitTask(api, node, upid, "start");
  });

  await step("dhcp-ip", async () => {
    const deadline = Date.now() + IP_TIMEOUT_MS;
    let last = null;
    while (Date.now() < deadline) {
      last = await ct.interfaces.$get();
      const eth0 = Array.isArray(last) ? last.find((i) => i.name === "eth0") : null;
      const inet = eth0 && (eth0.inet || eth0["ip-address"]);
      if (typeof inet === "string" && /^\d+\.\d+\.\d+\.\d+(\/\d+)?$/.test(inet)) {
        out.ip = inet.split("/")[0];
        out.hwaddr = eth0.hwaddr;
        return;
      }
      await sleep(250);
    }
    fail(`eth0 got no IPv4 address within ${IP_TIMEOUT_MS / 1000}s; last interfaces: ${JSON.stringify(last)}`);
  });

  await step("status-running", async () => {
    const st = await ct.status.current.$get();
    check(st.status === "running", `status/current says ${JSON.stringify(st.status)}`);
    check(Number(st.vmid) === vmid, `status/current vmid is ${JSON.stringify(st.vmid)}`);
    check(st.name === "jsclient", `status/current name is ${JSON.stringify(st.name)}`);
    out.status = st.status;
  });

  await step("stop", async () => {
    const upid = await tct.status.stop.$post();
    await waitTask(api, node, upid, "stop");
    const st = await ct.status.current.$get();
    check(st.status === "stopped", `after stop, status/current says ${JSON.stringify(st.status)}`);
  });

  await step("destroy", async () => {
    const upid = await tct.$delete();
    await waitTask(api, node, upid, "destroy");
  });

  await step("gone", async () => {
    const list = await lxc.$get();
    check(Array.isArray(list), `GET /nodes/${node}/lxc returned ${JSON.stringify(list)}`);
    check(!list.some((c) => Number(c.vmid) === vmid), `CT ${vmid} still listed after destroy`);
  });

  out.steps = steps;
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().then(
  () => process.exit(0),
  (err) => {
    // proxmox-api's errors say it all in the message; a bug in this script
    // (TypeError and the like) needs its stack.
    const internal = err instanceof TypeError || err instanceof ReferenceError || err instanceof RangeError;
    const detail = internal ? err.stack : (err && err.message) || String(err);
    let cause = err && err.cause;
    let chain = "";
    while (cause) {
      chain += `\n  caused by: ${cause.message || cause}`;
      cause = cause.cause;
    }
    process.stderr.write(`second_client: FAILED at step "${current}" (done: ${steps.join(", ") || "none"}): ${detail}${chain}\n`);
    process.exit(1);
  },
);
