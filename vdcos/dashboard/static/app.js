// The vdcos dashboard: one page, no build step, no library. Every figure comes from the API
// through the dashboard's JSON gateway (POST /api/v1/Service/Method), called with the token the
// user signed in with; what a page shows and which buttons it offers follow that token's role.
// Pages poll what they show (every REFRESH_MS), so they stay live without a reload; the DOM is
// built with textContent only, never from HTML strings: names come from users.
"use strict";

const REFRESH_MS = 1500;
const REFRESH_FAST_MS = 400;  // while a migration moves: its bar follows the agent's reports (every 200 ms)
const DIMENSIONS = [["vcpus", "vCPU"], ["memory_mib", "memory"], ["disk_gib", "disk"],
                    ["network_mbps", "network"], ["disk_iops", "IOPS"]];
const PAGES = [["overview", "Overview"], ["hosts", "Hosts"], ["vms", "VMs"], ["migrations", "Migrations"],
               ["ha", "HA"], ["refusals", "Refusals"], ["events", "Events"]];
const SAMPLES_KEPT = 200;

const state = {token: sessionStorage.getItem("vdcos-token") || "", caller: null, config: null,
               page: null, timer: null, fast: false, samples: new Map()};

// ---- helpers -------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "style") el.style.cssText = v;  // CSSOM: the CSP refuses style attributes
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const num = (x) => Number(x || 0);
const short = (s, prefix) => (s || "").replace(prefix, "").toLowerCase().replace(/_/g, "-");
const phase = (p) => short(p, "VM_PHASE_");
const qos = (c) => short(c, "QOS_CLASS_");
const pct = (a, b) => (b > 0 ? Math.round(100 * a / b) : 0);
const gib = (mib) => (num(mib) / 1024).toFixed(1) + " GiB";
const ago = (ts) => {
  if (!ts) return "";
  const s = Math.max(0, (Date.now() - Date.parse(ts)) / 1000);
  return s < 60 ? `${Math.round(s)} s ago` : s < 3600 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
};
const bytes = (b) => {
  b = num(b);
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return `${b.toFixed(i ? 1 : 0)} ${u[i]}`;
};

function can(perm) {
  return !!state.caller && state.caller.permissions.includes(perm);
}

class ApiError extends Error {
  constructor(status, info) { super(info.message); this.status = status; this.info = info; }
}

async function api(method, body) {
  const headers = {"Content-Type": "application/json"};
  if (state.token) headers.Authorization = "Bearer " + state.token;
  const r = await fetch("/api/v1/" + method, {method: "POST", headers, body: JSON.stringify(body || {})});
  const j = await r.json().catch(() => ({error: {message: `HTTP ${r.status}`, lines: [`HTTP ${r.status}`]}}));
  if (!r.ok) throw new ApiError(r.status, j.error);
  return j;
}

// What a refused call said, as the CLI says it: its lines (fields, reasons, shortfalls).
function errorBox(e) {
  const lines = (e.info && e.info.lines) || [String(e.message || e)];
  return h("div", {class: "error", role: "alert"}, lines.map((l) => h("div", {}, l)));
}

function flash(text, kind) {
  const f = document.getElementById("flash");
  f.replaceChildren(h("div", {class: "flash " + (kind || "ok")}, text));
  clearTimeout(flash.t);
  flash.t = setTimeout(() => f.replaceChildren(), 6000);
}

// Runs an action; its outcome goes to `where` (or the flash line) and the page refreshes.
async function act(label, fn, where, done) {
  try {
    const out = await fn();
    flash(`${label}: ${done || "done"}`);
    if (where) where.replaceChildren();
    refresh();
    return out;
  } catch (e) {
    if (where) where.replaceChildren(errorBox(e));
    else flash(label + ": " + ((e.info && e.info.lines) || [e.message]).join("; "), "bad");
    return null;
  }
}

function bar(used, total, label) {
  const p = pct(used, total);
  return h("div", {class: "bar", title: label || `${p}%`, role: "progressbar", "aria-valuenow": p,
                   "aria-valuemin": 0, "aria-valuemax": 100},
           h("div", {class: "fill " + (p >= 90 ? "hot" : p >= 70 ? "warm" : ""), style: `width:${Math.min(p, 100)}%`}),
           h("span", {}, label || `${p}%`));
}

// A heatmap cell: green (idle) to red (full).
function heat(ratio) {
  const r = Math.max(0, Math.min(1, ratio));
  return `background:hsl(${Math.round(120 * (1 - r))},65%,${Math.round(88 - 30 * r)}%)`;
}

function table(head, rows, attrs) {
  return h("div", {class: "scroll"},
           h("table", attrs || {}, h("thead", {}, h("tr", {}, head.map((c) => h("th", {}, c)))),
             h("tbody", {}, rows.length ? rows : [h("tr", {}, h("td", {colspan: head.length, class: "muted"}, "none"))])));
}

const link = (href, text) => h("a", {href}, text);

function section(title, ...body) {
  return h("section", {}, h("h2", {}, title), ...body);
}

// A line chart of [t (ms), value] points, drawn as SVG: no library.
function chart(title, points, unit) {
  const W = 560, H = 140, P = 28;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "chart");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", title);
  const last = points.length ? points[points.length - 1][1] : null;
  const wrap = h("figure", {class: "chartbox"},
                 h("figcaption", {}, title, " ", h("b", {}, last === null ? "no samples yet" : `${last.toFixed(1)} ${unit}`)),
                 svg);
  if (points.length < 2) return wrap;
  const t0 = points[0][0], t1 = points[points.length - 1][0];
  const vmax = Math.max(1, ...points.map((p) => p[1])) * 1.1;
  const x = (t) => P + (W - 2 * P) * (t - t0) / Math.max(1, t1 - t0);
  const y = (v) => H - P / 2 - (H - P) * v / vmax;
  const mk = (tag, attrs) => {
    const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    svg.append(el);
    return el;
  };
  mk("line", {x1: P, y1: y(0), x2: W - P, y2: y(0), class: "axis"});
  mk("polyline", {points: points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" "), class: "line"});
  mk("text", {x: 2, y: y(vmax / 1.1) + 4, class: "tick"}).textContent = (vmax / 1.1).toFixed(0);
  mk("text", {x: 2, y: y(0), class: "tick"}).textContent = "0";
  mk("text", {x: W - P, y: H - 2, class: "tick", "text-anchor": "end"}).textContent =
    `${Math.round((t1 - t0) / 60000)} min`;
  return wrap;
}

// ---- pages ---------------------------------------------------------------------------------
// A page: mount(root, arg) builds what stays (forms, buttons) and returns update(), which the
// timer calls to redraw what changes.

function live(root) {
  const box = h("div", {class: "live"});
  root.append(box);
  return box;
}

const pages = {};

pages.overview = (root) => {
  const box = live(root);
  return async () => {
    if (!can("capacity:get")) {
      box.replaceChildren(section("Your project", h("p", {}, "Cluster capacity needs a cluster role; see VMs.")));
      return;
    }
    const [rep, nodes] = await Promise.all([api("CapacityService/GetCapacityReport", {}),
                                            api("NodeService/ListNodes", {})]);
    const s = rep.summary;
    const byName = new Map(nodes.nodes.map((n) => [n.name, n]));
    const cards = h("div", {class: "cards"},
      h("div", {class: "card"}, h("b", {}, `${s.nodes_ready}/${s.nodes_total}`), "hosts ready",
        s.nodes_cordoned ? h("small", {}, `${s.nodes_cordoned} cordoned`) : null),
      h("div", {class: "card"}, h("b", {}, s.vms_total), "VMs",
        h("small", {}, Object.entries(s.vms_by_class).map(([k, v]) => `${v} ${k.toLowerCase()}`).join(", "))),
      ...DIMENSIONS.slice(0, 3).map(([d, label]) => h("div", {class: "card"},
        h("b", {}, `${pct(num(s.committed[d]), num(s.allocatable[d]))}%`), `${label} committed`,
        bar(num(s.committed[d]), num(s.allocatable[d])))));
    const heatRows = rep.nodes.map((n) => {
      const node = byName.get(n.node);
      return h("tr", {},
        h("th", {}, link(`#/hosts/${encodeURIComponent(n.node)}`, n.node),
          node && node.state !== "NODE_STATE_READY" ? h("span", {class: "tag bad"}, "not ready") : null,
          !n.schedulable && node && node.cordoned ? h("span", {class: "tag"}, "cordoned") : null),
        ...DIMENSIONS.map(([d]) => {
          const r = num(n.allocatable[d]) ? num(n.committed[d]) / num(n.allocatable[d]) : 0;
          return h("td", {class: "cell", style: heat(r), title: `${n.committed[d]} of ${n.allocatable[d]}`},
                   `${Math.round(100 * r)}%`);
        }),
        h("td", {}, n.vms));
    });
    const headRows = rep.headroom.map((x) => h("tr", {}, h("td", {}, x.name),
      h("td", {}, `${x.resources.vcpus} vCPU, ${gib(x.resources.memory_mib)}`),
      h("td", {}, x.guaranteed), h("td", {}, x.burstable)));
    const stranded = Object.entries(rep.stranded || {}).filter(([, v]) => v > 0);
    box.replaceChildren(
      section("Datacenter", cards),
      section("Utilization by host (committed / allocatable)",
        table(["host", ...DIMENSIONS.map(([, l]) => l), "VMs"], heatRows, {class: "heatmap", id: "heatmap"})),
      section("Headroom: how many more VMs of each shape fit",
        table(["shape", "size", "guaranteed", "burstable"], headRows, {id: "headroom"}),
        stranded.length ? h("p", {class: "muted"}, "Stranded: " + stranded.map(([d, v]) => `${v} ${d}`).join(", ")) : null));
  };
};

function nodeActions(name, node, out) {
  const buttons = [];
  if (can("nodes:cordon")) {
    buttons.push(node.cordoned
      ? h("button", {onclick: () => act(`uncordon ${name}`, () => api("NodeService/UncordonNode", {name}), out)}, "Uncordon")
      : h("button", {onclick: () => act(`cordon ${name}`, () => api("NodeService/CordonNode", {name}), out)}, "Cordon"));
  }
  if (can("nodes:drain")) {
    buttons.push(h("button", {class: "warn", onclick: () => {
      if (confirm(`Drain ${name}? Its VMs move to other hosts by live migration.`)) {
        act(`drain ${name}`, () => api("NodeService/DrainNode", {name}), out);
      }
    }}, "Drain"));
  }
  return buttons;
}

pages.hosts = (root) => {
  const box = live(root);
  return async () => {
    if (!can("nodes:list")) { box.replaceChildren(h("p", {}, "Hosts need a cluster role.")); return; }
    const {nodes} = await api("NodeService/ListNodes", {});
    box.replaceChildren(section("Hosts", table(
      ["host", "state", "HA", "VMs", "vCPU used", "memory used", "committed vCPU", "committed memory"],
      nodes.map((n) => h("tr", {"data-node": n.name},
        h("td", {}, link(`#/hosts/${encodeURIComponent(n.name)}`, n.name)),
        h("td", {}, n.state === "NODE_STATE_READY" ? "ready" : h("span", {class: "tag bad"}, "not ready"),
          n.cordoned ? h("span", {class: "tag"}, "cordoned") : null),
        h("td", {}, n.ha_state || "ok"),
        h("td", {}, n.vm_count),
        h("td", {}, bar(num(n.used.vcpus), num(n.capacity.vcpus), `${num(n.used.vcpus)} / ${num(n.capacity.vcpus)}`)),
        h("td", {}, bar(num(n.used.memory_mib), num(n.capacity.memory_mib),
                        `${gib(n.used.memory_mib)} / ${gib(n.capacity.memory_mib)}`)),
        h("td", {}, bar(num(n.committed.vcpus), num(n.allocatable.vcpus))),
        h("td", {}, bar(num(n.committed.memory_mib), num(n.allocatable.memory_mib))))))));
  };
};

pages.host = (root, name) => {
  const out = h("div", {});
  const head = h("div", {class: "actions"});
  root.append(h("h1", {}, "Host ", name), head, out);
  const box = live(root);
  return async () => {
    const [{node}, {vms}] = await Promise.all([api("NodeService/GetNode", {name}), api("VmService/ListVms", {node: name})]);
    head.replaceChildren(...nodeActions(name, node, out));
    box.replaceChildren(
      section("State", h("dl", {class: "facts"},
        h("dt", {}, "state"), h("dd", {}, node.state === "NODE_STATE_READY" ? "ready" : "not ready",
                                  node.cordoned ? " (cordoned)" : ""),
        h("dt", {}, "HA"), h("dd", {}, node.ha_state || "ok"),
        h("dt", {}, "heartbeat"), h("dd", {}, ago(node.last_heartbeat)),
        h("dt", {}, "driver"), h("dd", {}, node.driver),
        h("dt", {}, "labels"), h("dd", {}, Object.entries(node.labels).map(([k, v]) => `${k}=${v}`).join(", ") || "none"))),
      section("Live usage", h("div", {class: "cards"},
        ...[["vcpus", "vCPU in use", (v) => v], ["memory_mib", "memory in use", gib]].map(([d, l, f]) =>
          h("div", {class: "card"}, h("b", {}, f(num(node.used[d]))), l,
            bar(num(node.used[d]), num(node.capacity[d]))))),
        table(["dimension", "capacity", "allocatable", "guaranteed", "committed"],
          DIMENSIONS.map(([d, l]) => h("tr", {}, h("td", {}, l), h("td", {}, node.capacity[d]), h("td", {}, node.allocatable[d]),
            h("td", {}, node.guaranteed[d]), h("td", {}, bar(num(node.committed[d]), num(node.allocatable[d]))))))),
      section(`VMs on ${name}`, vmTable(vms)));
  };
};

function vmTable(vms) {
  return table(["VM", "project", "phase", "host", "QoS", "vCPU", "memory", "CPU time"],
    vms.map((v) => h("tr", {"data-vm": v.spec.name},
      h("td", {}, link(`#/vms/${encodeURIComponent(v.spec.name)}`, v.spec.name)),
      h("td", {}, v.spec.project || "-"),
      h("td", {}, h("span", {class: "phase " + phase(v.status.phase)}, phase(v.status.phase))),
      h("td", {}, v.placement && v.placement.node ? link(`#/hosts/${encodeURIComponent(v.placement.node)}`, v.placement.node) : "-"),
      h("td", {}, v.spec.qos_policy || "default"),
      h("td", {}, v.spec.resources.vcpus),
      h("td", {}, gib(v.spec.resources.memory_mib)),
      h("td", {}, `${(num(v.status.cpu_time_ns) / 1e9).toFixed(1)} s`))));
}

function createForm(out) {
  const f = h("form", {class: "inline", id: "create-vm"},
    h("label", {}, "name ", h("input", {name: "name", required: true, pattern: "[a-z0-9]([a-z0-9\\-]*[a-z0-9])?", size: 14})),
    h("label", {}, "vCPU ", h("input", {name: "vcpus", type: "number", min: 1, value: 1, size: 3})),
    h("label", {}, "memory MiB ", h("input", {name: "memory_mib", type: "number", min: 64, value: 128, size: 6})),
    h("label", {}, "disk GiB ", h("input", {name: "disk_gib", type: "number", min: 0, value: 1, size: 4})),
    h("label", {}, "QoS policy ", h("input", {name: "qos_policy", placeholder: "default", size: 10})),
    h("label", {}, "image ", h("input", {name: "image", placeholder: "counter", size: 9})),
    h("label", {}, "project ", h("input", {name: "project", placeholder: state.caller.project || "", size: 9})),
    h("button", {type: "submit"}, "Create VM"));
  f.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const v = Object.fromEntries(new FormData(f).entries());
    const spec = {name: v.name, resources: {vcpus: v.vcpus, memory_mib: v.memory_mib, disk_gib: v.disk_gib},
                  qos_policy: v.qos_policy, image: v.image, project: v.project};
    act(`create ${v.name}`, () => api("VmService/CreateVm", {spec}), out).then((r) => { if (r) f.reset(); });
  });
  return f;
}

pages.vms = (root) => {
  const out = h("div", {});
  if (can("vms:create")) root.append(section("New VM", createForm(out), out));
  const box = live(root);
  return async () => {
    const {vms} = await api("VmService/ListVms", {});
    vms.sort((a, b) => a.spec.name.localeCompare(b.spec.name));
    box.replaceChildren(section(`VMs (${vms.length})`, vmTable(vms)));
  };
};

// The agents' samples of one VM, kept while the dashboard is open: [t, cpu %, memory MiB].
function sample(vm) {
  const key = vm.spec.name;
  const list = state.samples.get(key) || [];
  const t = Date.parse(vm.status.updated_at || "") || Date.now();
  const cpu = num(vm.status.cpu_time_ns);
  const prev = list[list.length - 1];
  if (!prev || t > prev.t) {
    const cpuPct = prev && cpu >= prev.cpu ? 100 * (cpu - prev.cpu) / 1e6 / (t - prev.t) : null;
    list.push({t, cpu, cpuPct, mem: num(vm.status.memory_used_mib)});
    if (list.length > SAMPLES_KEPT) list.shift();
  }
  state.samples.set(key, list);
  return list;
}

pages.vm = (root, name) => {
  const out = h("div", {});
  const actions = h("div", {class: "actions"});
  root.append(h("h1", {}, "VM ", name), actions, out);
  const box = live(root);
  let history = null, historyAt = 0, built = false;
  return async () => {
    const [{vm}, ev] = await Promise.all([api("VmService/GetVm", {name}),
      can("events:list") ? api("EventService/ListEvents", {filter: {vm: name}, page_size: 20}) : {events: []}]);
    if (state.config.prometheus && Date.now() - historyAt > 15000) {
      historyAt = Date.now();
      const r = await fetch(`/api/history?vm=${encodeURIComponent(name)}&minutes=30`,
                            {headers: state.token ? {Authorization: "Bearer " + state.token} : {}});
      history = r.ok ? await r.json() : null;
    }
    if (!built) {
      built = true;
      actions.replaceChildren(...vmActions(vm, out));
    }
    const list = sample(vm);
    const since = list.length ? list[0].t : Date.now();
    const hist = (k) => history ? history.series[k].map(([t, v]) => [t * 1000, v]).filter(([t]) => t < since) : [];
    const cpu = hist("cpu_percent").concat(list.filter((s) => s.cpuPct !== null).map((s) => [s.t, s.cpuPct]));
    const mem = hist("memory_mib").concat(list.map((s) => [s.t, s.mem]));
    const p = vm.placement || {};
    box.replaceChildren(
      h("div", {class: "grid2"},
        section("Placement and QoS", h("dl", {class: "facts"},
          h("dt", {}, "phase"), h("dd", {}, h("span", {class: "phase " + phase(vm.status.phase), id: "vm-phase"},
                                                phase(vm.status.phase)), " ", vm.status.message || ""),
          h("dt", {}, "power"), h("dd", {id: "vm-power"}, short(vm.spec.power_state || "POWER_STATE_ON", "POWER_STATE_"),
                                  Number(vm.spec.reboots || 0) ? ` (${vm.status.reboots || 0} of ${vm.spec.reboots} reboots done)` : ""),
          h("dt", {}, "host"), h("dd", {id: "vm-node"}, p.node || "-"),
          h("dt", {}, "project"), h("dd", {}, vm.spec.project || "-"),
          h("dt", {}, "QoS"), h("dd", {}, `${vm.spec.qos_policy || "default"} (${qos(p.qos_class)})`),
          h("dt", {}, "asks"), h("dd", {}, `${vm.spec.resources.vcpus} vCPU, ${gib(vm.spec.resources.memory_mib)}, ` +
                                          `${vm.spec.resources.disk_gib} GiB disk`),
          h("dt", {}, "epoch"), h("dd", {}, p.epoch || "-"),
          h("dt", {}, "placed"), h("dd", {}, ago(p.placed_at)),
          h("dt", {}, "image"), h("dd", {}, vm.spec.image || "counter"))),
        section("Usage", chart("CPU", cpu, "%"), chart("Memory", mem, "MiB"),
          h("p", {class: "muted"}, history ? "30 minutes from Prometheus, then the agent's samples" :
                                          "the agent's samples since this page opened"))),
      section("Events", eventTable(ev.events)));
  };
};

function vmActions(vm, out) {
  const name = vm.spec.name;
  const buttons = [];
  if (can("migrations:create")) {
    const target = h("select", {name: "target", id: "migrate-target"}, h("option", {value: ""}, "any host (scheduler picks)"));
    if (can("nodes:list")) {
      api("NodeService/ListNodes", {}).then(({nodes}) => nodes
        .filter((n) => n.name !== (vm.placement || {}).node && n.state === "NODE_STATE_READY" && !n.cordoned)
        .forEach((n) => target.append(h("option", {value: n.name}, n.name)))).catch(() => {});
    }
    const limit = h("input", {type: "number", min: 0, id: "migrate-bandwidth", placeholder: "no limit", size: 7,
                              title: "bandwidth limit, MiB/s", "aria-label": "bandwidth limit, MiB/s"});
    buttons.push(h("span", {class: "group"}, target, limit, h("button", {id: "migrate", onclick: () =>
      act(`migrate ${name}`, async () => {
        const r = await api("MigrationService/MigrateVm", {vm: name, target_node: target.value,
                                                           options: {max_bandwidth_mibps: Number(limit.value || 0)}});
        location.hash = `#/migrations`;
        return r;
      }, out, "started")}, "Migrate")));
  }
  if (can("vms:power")) {
    // Every power operation is offered; one the VM's state does not allow is refused by the
    // API with why (FAILED_PRECONDITION), shown under the buttons.
    const power = [["start", "StartVm", {}, "Start"], ["stop", "StopVm", {}, "Stop"],
                   ["force-stop", "StopVm", {force: true}, "Power off"], ["reboot", "RebootVm", {}, "Reboot"],
                   ["suspend", "SuspendVm", {}, "Suspend"], ["resume", "ResumeVm", {}, "Resume"],
                   ["shelve", "ShelveVm", {}, "Shelve"]];
    buttons.push(h("span", {class: "group"}, ...power.map(([id, method, extra, label]) =>
      h("button", {id: `power-${id}`, onclick: () =>
        act(`${label.toLowerCase()} ${name}`, () => api(`VmService/${method}`, {name, ...extra}), out, "asked")},
        label))));
  }
  if (can("vms:delete")) {
    buttons.push(h("button", {class: "danger", id: "delete", onclick: () => {
      if (confirm(`Delete ${name}? Its guest is destroyed.`)) {
        act(`delete ${name}`, async () => {
          await api("VmService/DeleteVm", {name});
          location.hash = "#/vms";
        }, out);
      }
    }}, "Delete"));
  }
  return buttons;
}

function eventTable(events) {
  return table(["when", "kind", "name", "host", "message"], events.map((e) => h("tr", {"data-kind": e.kind},
    h("td", {title: e.at}, ago(e.at)), h("td", {}, e.kind, e.count > 1 ? ` ×${e.count}` : ""),
    h("td", {}, e.name), h("td", {}, e.node), h("td", {class: "msg"}, e.message))));
}

const ACTIVE = new Set(["MIGRATION_PHASE_PENDING", "MIGRATION_PHASE_RUNNING"]);

pages.migrations = (root) => {
  const box = live(root);
  return async () => {
    const {migrations} = await api("MigrationService/ListMigrations", {});
    migrations.sort((a, b) => Date.parse(b.created_at) - Date.parse(a.created_at));
    const row = (m) => {
      const pr = m.progress || {};
      const total = num(pr.memory_total_bytes), done = num(pr.memory_processed_bytes);
      const ph = short(m.phase, "MIGRATION_PHASE_");
      const finished = ph === "completed";
      return h("tr", {"data-migration": m.id, "data-vm": m.vm, "data-phase": ph},
        h("td", {}, link(`#/vms/${encodeURIComponent(m.vm)}`, m.vm)),
        h("td", {}, `${m.source_node} → ${m.target_node}`),
        h("td", {}, h("span", {class: "phase " + ph}, ph)),
        h("td", {class: "progress"}, bar(finished ? 1 : done, finished ? 1 : total,
          finished ? "100%" : total ? `${pct(done, total)}% (${bytes(pr.memory_remaining_bytes)} left, pass ${pr.iteration || 0})`
                                    : ph === "pending" ? "waiting" : ph)),
        h("td", {}, m.downtime_ms >= 0 ? `${m.downtime_ms} ms` : "-"),
        h("td", {}, num(m.total_ms) ? `${(num(m.total_ms) / 1000).toFixed(2)} s` : "-"),
        h("td", {class: "msg"}, m.message),
        h("td", {}, ACTIVE.has(m.phase) && can("migrations:delete") && !m.cancel_requested
          ? h("button", {onclick: () => act(`cancel ${m.vm}`, () => api("MigrationService/CancelMigration", {id: m.id}))}, "Cancel")
          : null));
    };
    const active = migrations.filter((m) => ACTIVE.has(m.phase));
    state.fast = active.length > 0;
    const done = migrations.filter((m) => !ACTIVE.has(m.phase)).slice(0, 50);
    const head = ["VM", "move", "phase", "progress", "downtime", "took", "message", ""];
    box.replaceChildren(section(`In progress (${active.length})`, table(head, active.map(row), {id: "active-migrations"})),
                        section("Finished", table(head, done.map(row), {id: "finished-migrations"})));
  };
};

pages.ha = (root) => {
  const box = live(root);
  return async () => {
    if (!can("ha:get")) { box.replaceChildren(h("p", {}, "HA status needs a cluster role.")); return; }
    const s = await api("HaService/GetHaStatus", {});
    const reasons = (list) => list.map((r) => `${r.vm}: ${r.reason}`).join("; ");
    box.replaceChildren(
      section("Admission control", h("dl", {class: "facts"},
        h("dt", {}, "controller"), h("dd", {}, s.leader || "no leader yet"),
        h("dt", {}, "host failures tolerated"), h("dd", {}, s.host_failures_to_tolerate),
        h("dt", {}, "protected VMs"), h("dd", {}, s.protected_vms),
        h("dt", {}, "failover capacity"), h("dd", {}, h("span", {class: s.failover_capacity_ok ? "tag ok" : "tag bad"},
          s.failover_capacity_ok ? "enough" : "short"), " ", s.failover_capacity_message))),
      section("Hosts failed or coming back", table(["host", "phase", "declared", "restarted", "lost", "waiting", "message"],
        s.hosts.map((f) => h("tr", {}, h("td", {}, f.node), h("td", {}, f.phase), h("td", {}, ago(f.declared_at)),
          h("td", {}, f.restarted.join(", ")), h("td", {}, reasons(f.lost)), h("td", {}, reasons(f.pending)),
          h("td", {class: "msg"}, f.message))))),
      section("Timeline", table(["when", "what", "host", "VM", "epoch", "message"],
        s.events.slice().reverse().slice(0, 50).map((e) => h("tr", {}, h("td", {title: e.at}, ago(e.at)),
          h("td", {}, e.kind), h("td", {}, e.node), h("td", {}, e.vm), h("td", {}, e.epoch || ""),
          h("td", {class: "msg"}, e.message))))));
  };
};

pages.refusals = (root) => {
  const out = h("div", {});
  if (can("placements:get")) {
    const f = h("form", {class: "inline", id: "explain"},
      h("label", {}, "vCPU ", h("input", {name: "vcpus", type: "number", min: 1, value: 2, size: 3})),
      h("label", {}, "memory MiB ", h("input", {name: "memory_mib", type: "number", min: 64, value: 1024, size: 6})),
      h("label", {}, "QoS policy ", h("input", {name: "qos_policy", placeholder: "default", size: 10})),
      h("button", {type: "submit"}, "Would it fit?"));
    f.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const v = Object.fromEntries(new FormData(f).entries());
      try {
        const r = await api("PlacementService/ExplainPlacement", {spec: {name: "what-if",
          resources: {vcpus: v.vcpus, memory_mib: v.memory_mib}, qos_policy: v.qos_policy}, limit: 5});
        out.replaceChildren(r.placeable
          ? h("div", {class: "flash ok"}, `fits: ${r.chosen_node} would be chosen (${r.nodes_scored} of ${r.nodes_total} hosts scored)`)
          : h("div", {class: "error"}, h("div", {}, "would be refused:"), explain(r.rejection)));
      } catch (e) { out.replaceChildren(errorBox(e)); }
    });
    root.append(section("Ask the scheduler", f, out));
  }
  const box = live(root);
  return async () => {
    const [vm, quota] = await Promise.all([api("EventService/ListEvents", {filter: {kind: "vm.refused"}, page_size: 50}),
                                           api("EventService/ListEvents", {filter: {kind: "quota.refused"}, page_size: 50})]);
    const all = vm.events.concat(quota.events).sort((a, b) => Date.parse(b.at) - Date.parse(a.at));
    box.replaceChildren(section(`Refusals (${all.length})`, table(["when", "VM", "project", "why", "details"],
      all.map((e) => h("tr", {"data-kind": e.kind}, h("td", {title: e.at}, ago(e.at)),
        h("td", {}, e.name, e.count > 1 ? ` and ${e.count - 1} more` : ""), h("td", {}, e.project || "-"),
        h("td", {class: "msg"}, e.message),
        h("td", {class: "msg"}, Object.entries(e.fields).map(([k, v]) => h("div", {}, `${k}: ${v}`))))))));
  };
};

function explain(rej) {
  const lines = [`${rej.nodes_feasible} of ${rej.nodes_total} hosts feasible; ` +
                 (rej.retryable ? "could fit later" : "can never fit as asked")];
  for (const f of rej.filters) lines.push(`filter ${f.filter}: ruled out ${f.nodes_ruled_out} hosts (${f.reason})`);
  for (const d of rej.dimensions) {
    lines.push(`${d.dimension} [${d.pool}]: ${d.nodes_short} hosts short; asked ${d.requested}, ` +
               `largest free ${d.largest_free} on ${d.largest_free_node}`);
  }
  return lines.map((l) => h("div", {}, l));
}

pages.events = (root) => {
  const filter = h("form", {class: "inline"},
    h("label", {}, "kind ", h("input", {name: "kind", placeholder: "vm. or node.drained", size: 14})),
    h("label", {}, "VM ", h("input", {name: "vm", size: 10})),
    h("label", {}, "host ", h("input", {name: "node", size: 10})));
  let current = {};
  filter.addEventListener("input", () => { current = Object.fromEntries(new FormData(filter).entries()); refresh(); });
  root.append(section("Filter", filter));
  const box = live(root);
  return async () => {
    try {
      const {events} = await api("EventService/ListEvents", {filter: current, page_size: 100});
      box.replaceChildren(section("Events (newest first)", eventTable(events)));
    } catch (e) { box.replaceChildren(errorBox(e)); }
  };
};

// ---- shell ---------------------------------------------------------------------------------

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (parts[0] === "hosts" && parts[1]) return ["host", parts[1], "hosts"];
  if (parts[0] === "vms" && parts[1]) return ["vm", parts[1], "vms"];
  return [pages[parts[0]] ? parts[0] : "overview", null, pages[parts[0]] ? parts[0] : "overview"];
}

let updating = false;
async function refresh() {
  if (!state.page || updating) return;
  updating = true;
  const page = state.page;
  try {
    await page.update();
    page.err.replaceChildren();
  } catch (e) {
    if (e.status === 401) { signOut("Your token was refused: " + e.message); return; }
    page.err.replaceChildren(errorBox(e));
  } finally {
    updating = false;
  }
}

function schedule() {
  clearTimeout(state.timer);
  state.timer = setTimeout(async () => { await refresh(); if (state.page) schedule(); },
                           state.fast ? REFRESH_FAST_MS : REFRESH_MS);
}

function render() {
  clearTimeout(state.timer);
  state.fast = false;
  const [name, arg, tab] = route();
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("on", a.dataset.page === tab));
  const root = h("div", {class: "page", id: "page-" + name});
  const err = h("div", {});
  root.append(err);
  document.getElementById("main").replaceChildren(root);
  state.page = {update: pages[name](root, arg), err};
  refresh();
  schedule();
}

function signOut(why) {
  sessionStorage.removeItem("vdcos-token");
  state.token = "";
  state.caller = null;
  clearTimeout(state.timer);
  state.page = null;
  login(why);
}

function login(why) {
  document.getElementById("nav").replaceChildren();
  document.getElementById("who").replaceChildren();
  const input = h("input", {type: "password", name: "token", id: "token", autocomplete: "off", size: 50,
                            placeholder: "vdcos.tok-….…"});
  const out = h("div", {});
  const f = h("form", {class: "login", id: "login"}, h("h1", {}, "Sign in"),
    h("p", {}, "With a vdcos token: `vdcos dashboard` prints a link that signs you in, or make one with `vdcos token create`."),
    why ? h("div", {class: "error"}, why) : null, input, h("button", {type: "submit"}, "Sign in"), out);
  f.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    state.token = input.value.trim();
    if (await start(out)) sessionStorage.setItem("vdcos-token", state.token);
  });
  document.getElementById("main").replaceChildren(f);
  input.focus();
}

async function start(out) {
  try {
    state.caller = await api("TokenService/GetCaller", {});
  } catch (e) {
    state.token = "";
    if (out) out.replaceChildren(errorBox(e)); else login(e.message);
    return false;
  }
  const c = state.caller;
  document.getElementById("nav").replaceChildren(...PAGES.map(([p, label]) => h("a", {href: `#/${p}`, "data-page": p}, label)));
  document.getElementById("who").replaceChildren(
    h("span", {id: "caller"}, c.insecure ? "insecure datacenter" : `${c.name} · ${c.role || "no role"}` +
      (c.project ? ` in ${c.project}` : "")),
    c.insecure ? null : h("button", {class: "link", id: "signout", onclick: () => signOut()}, "Sign out"));
  render();
  return true;
}

// `vdcos dashboard`'s link: the token is in the fragment, which no server sees; it moves to
// the tab's sessionStorage and out of the address bar (and the history).
function tokenFromLink() {
  const m = location.hash.match(/token=([^&]+)/);
  if (!m) return false;
  state.token = decodeURIComponent(m[1]);
  sessionStorage.setItem("vdcos-token", state.token);
  history.replaceState(null, "", location.pathname + "#/overview");
  return true;
}

async function boot() {
  tokenFromLink();
  state.config = await (await fetch("/api/config")).json();
  window.addEventListener("hashchange", () => {
    if (tokenFromLink()) start(null);
    else if (state.caller) render();
  });
  if (state.config.insecure || state.token) await start(null);
  else login();
}

document.addEventListener("DOMContentLoaded", boot);
