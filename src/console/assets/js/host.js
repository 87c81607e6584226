// One host: its live telemetry, the processes its agent started (with
// their output, followed, and exit codes), every process, and its systemd
// units; with the agent's commands for those who may give them. A viewer
// is shown no button it could not use; the agent checks again anyway.

import { HostCharts } from "./charts.js";
import { historyCard, presenceBanner } from "./hoststatus.js";
import { AgentError, failure, isHost } from "./gateway.js";
import { ACCESS, SIGNALS as ALL_SIGNALS } from "./requests.js";
import { ago, bytes, confirmAction, duration, exitBadge, fill, h, memLabel, processBadge, sortableTable, statusBadge, toast, when } from "./ui.js";

export function title([name]) {
  return name ?? "Host";
}

const TABS = [
  ["telemetry", "Telemetry"],
  ["started", "Started processes"],
  ["processes", "All processes"],
  ["units", "Units"],
  ["usage", "Work folder"],
  ["request", "Request"],
];

/** The requests that act on a systemd unit (`service_name`), with their verbs; the Jobs form offers them too. */
export const UNIT_ACTIONS = [["start_service", "Start"], ["stop_service", "Stop"], ["restart_service", "Restart"], ["reload_service", "Reload"]];

/** How many characters of a command line the process list shows before "…". */
const CMD_SHOWN = 60;

/** How much of a followed process's output the page keeps, in characters. */
const OUTPUT_KEEP = 512 * 1024;

/** The requests an agent serves that only read, and those that need an operator: the gateway's table. */
const READS = Object.keys(ACCESS).filter((r) => ACCESS[r] === "read");
const COMMANDS = Object.keys(ACCESS).filter((r) => ACCESS[r] === "command");

export function mount(app, root, [name]) {
  const gw = app.gw;
  const operator = app.can("operator");
  const cleanups = [];
  const every = (ms, fn) => { const t = setInterval(fn, ms); cleanups.push(() => clearInterval(t)); };

  const state = h("p", { id: "host-state" });
  const banner = h("div.banner", { id: "host-banner", role: "status", hidden: true });
  const showBanner = presenceBanner(app, name, banner);
  const detail = h("section.card", { id: "detail", hidden: true, "aria-live": "polite" });
  const vpnLine = h("p.muted", { id: "host-vpn" });
  const tabs = h("div.tabs", { role: "tablist", "aria-label": "Host sections" });
  const panels = {};
  for (const [id, label] of TABS) {
    const button = h("button", { type: "button", role: "tab", id: `tab-${id}`, "aria-controls": `panel-${id}`, onclick: () => show(id) }, label);
    tabs.append(button);
    panels[id] = h("section", { id: `panel-${id}`, role: "tabpanel", "aria-labelledby": `tab-${id}`, hidden: true });
  }
  let current = null;
  function show(id) {
    current = id;
    for (const [tab] of TABS) {
      document.getElementById(`tab-${tab}`).setAttribute("aria-selected", String(tab === id));
      panels[tab].hidden = tab !== id;
    }
    loaders[id]?.();
  }

  fill(root,
    h("div.card", {},
      h("div.row.spread", {},
        h("h1", {}, name, " ", h("span.badge.agent", {}, "agent")),
        app.can("admin") ? h("a.button.quiet", { href: `#/vpn/${encodeURIComponent(name)}`, id: "host-vpn-conf" }, "VPN config") : null),
      state, banner, vpnLine,
      operator ? null : h("p.note", { id: "viewer-note" }, `Your role (${app.info.role}) may look but not act: commands are not offered.`)),
    tabs,
    detail,
    Object.values(panels));

  // ---- Telemetry
  const cpuCanvas = h("canvas", { id: "cpu-chart", role: "img", "aria-label": `CPU use of each core of ${name}` });
  const memCanvas = h("canvas", { id: "mem-chart", role: "img", "aria-label": `Memory of ${name}` });
  const diskCanvas = h("canvas", { id: "disk-chart", role: "img", "aria-label": `Disks of ${name}` });
  const history = historyCard(app, name);
  cleanups.push(() => history.destroy());
  fill(panels.telemetry, history.el, h("div.grid", {},
    h("div.card", {}, h("h2", {}, "CPU per core"), h("div.chart", {}, cpuCanvas)),
    h("div.card", {}, h("h2", {}, memLabel() === "RAM" ? "RAM" : "Memory"), h("div.chart", {}, memCanvas)),
    h("div.card", {}, h("h2", {}, "Disks"), h("div.chart", {}, diskCanvas))));
  const charts = new HostCharts(cpuCanvas, memCanvas, diskCanvas);
  cleanups.push(() => charts.destroy());
  const telemetryService = `telemetry_${name}`;
  // Only the host itself publishes on its service (the gateway reserves it).
  const onTelemetry = (e) => {
    const from = e.detail.origin;
    if (e.detail.data?.event === "telemetry" && from?.name === name && isHost(from)) telemetry(e.detail.data.tele_data);
  };
  gw.addEventListener(`service:${telemetryService}`, onTelemetry);
  gw.subscribe(telemetryService);
  cleanups.push(() => {
    gw.removeEventListener(`service:${telemetryService}`, onTelemetry);
    gw.unsubscribe(telemetryService);
  });
  function telemetry(tele) {
    charts.add(tele);
    const v = tele.vpn_status;
    if (v) {
      vpnLine.textContent = v.up
        ? `VPN ${v.ifname}: up, ${v.conn_ip4 ?? ""} ${v.conn_ip6 ?? ""}, handshake ${ago(v.latest_handshake)}, ↓ ${bytes(v.rx_bytes)} ↑ ${bytes(v.tx_bytes)}`
        : `VPN: ${v.desc ?? "down"}`;
    }
  }

  // ---- Started processes, and the output of the one shown
  const outputTitle = h("h3", { id: "output-title" }, "Output");
  const outputState = h("p.muted", { id: "output-state" });
  const output = h("pre.output", { id: "output", tabindex: "0", "aria-label": "Process output", "aria-live": "off" });
  // One process's output is shown at a time: a newer follow silences the
  // older one, even if its ask has not been answered yet.
  let following = null;
  let generation = 0;
  let shownChars = 0;
  function appendOutput(node, chars) {
    output.append(node);
    shownChars += chars;
    // The agent keeps 1 MiB per process; the page keeps the newest 512 KiB.
    while (shownChars > OUTPUT_KEEP && output.firstChild) {
      shownChars -= output.firstChild.textContent.length;
      output.firstChild.remove();
    }
    output.scrollTop = output.scrollHeight;
  }
  function follow(procId, cmd, start) {
    if (following) gw.cancel(following);
    following = null;
    const mine = ++generation;
    outputTitle.textContent = `Output of ${procId}: ${cmd}`;
    outputState.textContent = "running";
    output.replaceChildren();
    shownChars = 0;
    output.dataset.procId = String(procId);
    const onEvent = (ev) => {
      if (mine !== generation) return;
      if (ev.event === "exit") {
        fill(outputState, exitBadge(ev, exitText(ev)));
        loadStarted();
        return;
      }
      if (ev.dropped) {
        const note = `[${ev.dropped} bytes dropped]\n`;
        appendOutput(h("span.stderr", {}, note), note.length);
      }
      const text = ev.data ?? decode(ev.data_b64);
      appendOutput(ev.event === "stderr" ? h("span.stderr", {}, text) : document.createTextNode(text), text.length);
    };
    return start(onEvent).then(({ rid }) => {
      if (mine === generation) following = rid;
      else gw.cancel(rid);
    });
  }
  cleanups.push(() => { if (following) gw.cancel(following); });

  const runForm = operator ? h("form", { id: "run-form", class: "row" },
    h("label", { for: "run-command" }, "Run"),
    h("input", { id: "run-command", name: "command", placeholder: "a command line, e.g. ping -c 3 localhost", required: true, autocomplete: "off" }),
    h("input", { id: "run-cwd", name: "cwd", placeholder: "folder (default: the agent's)", "aria-label": "Working folder", autocomplete: "off" }),
    h("button", { type: "submit", id: "run-submit" }, "Run")) : null;
  runForm?.addEventListener("submit", async (event) => {
    event.preventDefault();
    const command = runForm.elements.command.value.trim();
    const cwd = runForm.elements.cwd.value.trim();
    if (!command) return;
    const msg = { command, follow: true };
    if (cwd) msg.cwd = cwd;
    try {
      await follow("…", command, async (onEvent) => {
        const { rid, msg: reply } = await gw.ask(name, "execute", msg, { onEvent });
        outputTitle.textContent = `Output of ${reply.proc_id}: ${command}`;
        output.dataset.procId = String(reply.proc_id);
        loadStarted();
        return { rid };
      });
    } catch (e) {
      outputState.textContent = failure(e);
      toast(`${command}: ${failure(e)}`, true);
    }
  });

  const started = sortableTable([
    { key: "proc_id", label: "Proc", num: true, cell: (p) => p.running ? h("button.small.quiet", { type: "button", dataset: { details: p.proc_id }, onclick: () => processDetail(p.proc_id) }, String(p.proc_id)) : String(p.proc_id) },
    { key: "cmd", label: "Command", value: (p) => p.cmd.join(" "), cell: (p) => h("span.mono", {}, p.cmd.join(" ")) },
    { key: "status", label: "Status", cell: (p) => processBadge(p.status) },
    { key: "started", label: "Started", num: true, cell: (p) => when(p.started), className: "hide-narrow nowrap" },
    { key: "exit", label: "Exit", value: (p) => p.exit ? (p.exit.signal ?? p.exit.code) : "", cell: (p) => p.exit ? exitBadge(p.exit, exitText(p.exit)) : exitBadge(null, "running") },
    { key: "output_bytes", label: "Output", num: true, cell: (p) => bytes(p.output_bytes), className: "hide-narrow" },
    { key: "actions", label: "", sortable: false, cell: (p) => h("div.actions", {},
      h("button.small.quiet", { type: "button", onclick: () => follow(p.proc_id, p.cmd.join(" "), (onEvent) => gw.ask(name, "proc_output", { proc_id: p.proc_id, follow: true }, { onEvent })).catch((e) => toast(failure(e), true)) }, "Output"),
      operator && p.running ? signalButtons(p.proc_id, p.cmd.join(" "), p.status) : null) },
  ], { sortKey: "proc_id", descending: true, rowAttrs: (p) => ({ dataset: { procId: p.proc_id, status: p.status } }), empty: "The agent has started no process yet." });
  fill(panels.started,
    h("div.card", {}, h("h2", {}, "Started by the agent"), runForm, started.el),
    h("div.card", {}, outputTitle, outputState, output));
  async function loadStarted() {
    try {
      started.render(await pages(gw, name, "list_started", "processes"));
    } catch (e) {
      started.render([]);
      toast(`Started processes: ${failure(e)}`, true);
    }
  }

  // ---- Signals, with a confirmation
  const SIGNALS = [
    ["pause_process", "Pause", "SIGSTOP: it stops running until resumed."],
    ["resume_process", "Resume", "SIGCONT: it carries on where it stopped."],
    ["kill_process", "Terminate", "SIGTERM: it is asked to exit."],
  ];
  function signalButtons(pid, label, status) {
    return SIGNALS
      .filter(([req]) => (req === "pause_process" ? status !== "stopped" : req === "resume_process" ? status === "stopped" : true))
      .map(([req, verb, what]) => h(`button.small${req === "kill_process" ? ".danger" : ""}`, {
        type: "button",
        dataset: { signal: req, pid },
        onclick: async () => {
          if (!(await confirmAction(`${verb} ${pid}?`, `${verb} process ${pid} (${label}) on ${name}. ${what}`, verb))) return;
          try {
            const { msg } = await gw.ask(name, req, { pid });
            toast(`${msg.signal} sent to ${pid}`);
          } catch (e) {
            toast(`${verb} ${pid}: ${failure(e)}`, true);
          }
          setTimeout(() => { loadStarted(); if (current === "processes") loadProcesses(); }, 300);
        },
      }, verb));
  }

  // ---- Every process
  const procFilter = h("input", { type: "search", id: "proc-search", placeholder: "Filter by name, pid, status…", "aria-label": "Filter processes" });
  const procCount = h("span.muted");
  let allProcs = [];
  const procs = sortableTable([
    { key: "pid", label: "PID", num: true, cell: (p) => h("button.small.quiet", { type: "button", dataset: { details: p.pid }, onclick: () => processDetail(p.pid) }, String(p.pid)) },
    { key: "name", label: "Name" },
    { key: "user", label: "User", className: "hide-narrow", value: (p) => p.user_name ?? (p.user ?? "–"), cell: (p) => h("span", { title: `uid ${p.user ?? "–"}` }, p.user_name ?? String(p.user ?? "–")) },
    { key: "cmd", label: "Command", className: "hide-narrow", value: (p) => p.cmd.join(" "), cell: (p) => commandLine(p) },
    { key: "cpu_usage", label: "CPU %", num: true },
    { key: "rss", label: "Memory", num: true, value: (p) => p.memory.rss, cell: (p) => bytes(p.memory.rss) },
    { key: "status", label: "Status", cell: (p) => processBadge(p.status) },
    { key: "started", label: "Up", num: true, className: "hide-narrow", value: (p) => -p.started, cell: (p) => h("span", { title: new Date(p.started * 1000).toLocaleString() }, duration(Date.now() / 1000 - p.started)) },
    { key: "actions", label: "", sortable: false, cell: (p) => operator && p.safe_kill ? h("div.actions", {}, signalButtons(p.pid, p.name, p.status)) : null },
  ], { sortKey: "cpu_usage", descending: true, rowAttrs: (p) => ({ dataset: { pid: p.pid } }) });
  procFilter.addEventListener("input", drawProcs);
  fill(panels.processes, h("div.card", {},
    h("div.row.spread", {}, h("h2", {}, "Processes"), procCount),
    h("div.row", {}, procFilter, h("button.quiet", { type: "button", id: "proc-refresh", onclick: () => loadProcesses() }, "Refresh")),
    procs.el));
  function drawProcs() {
    const needle = procFilter.value.trim().toLowerCase();
    const shown = needle ? allProcs.filter((p) => [String(p.pid), p.name, p.status, p.user_name ?? "", p.cmd.join(" ")].some((v) => v.toLowerCase().includes(needle))) : allProcs;
    procCount.textContent = `${shown.length} of ${allProcs.length}`;
    procs.render(shown);
  }
  async function loadProcesses() {
    try {
      allProcs = await pages(gw, name, "obtain_all_process_info", "processes");
      drawProcs();
    } catch (e) {
      toast(`Processes: ${failure(e)}`, true);
    }
  }

  // ---- systemd units
  const unitNote = h("p.note", { hidden: true, id: "units-note" });
  const unitFilter = h("input", { type: "search", id: "unit-search", placeholder: "Filter units…", "aria-label": "Filter units" });
  let allUnits = [];
  const units = sortableTable([
    { key: "name", label: "Unit", cell: (u) => h("button.small.quiet", { type: "button", dataset: { unitDetails: u.name }, onclick: () => unitDetail(u.name) }, u.name) },
    { key: "description", label: "Description", className: "hide-narrow" },
    { key: "active_state", label: "Active", cell: (u) => statusBadge(u.active_state) },
    { key: "sub_state", label: "State" },
    { key: "actions", label: "", sortable: false, cell: (u) => operator ? h("div.actions", {}, UNIT_ACTIONS
      .filter(([req]) => (u.active_state === "active" ? req !== "start_service" : req === "start_service"))
      .map(([req, verb]) => h("button.small.quiet", {
        type: "button",
        dataset: { unitAction: req, unit: u.name },
        onclick: async () => {
          if (req !== "start_service" && !(await confirmAction(`${verb} ${u.name}?`, `${verb} the unit ${u.name} on ${name}.`, verb))) return;
          try {
            const { msg } = await gw.ask(name, req, { service_name: u.name }, { timeoutMs: 75000 });
            toast(`${u.name}: ${msg.active_state} (${msg.sub_state})`);
          } catch (e) {
            toast(`${verb} ${u.name}: ${failure(e)}`, true);
          }
          loadUnits();
        },
      }, verb))) : null },
  ], { sortKey: "name", rowAttrs: (u) => ({ dataset: { unit: u.name } }), empty: "No units." });
  unitFilter.addEventListener("input", drawUnits);
  fill(panels.units, h("div.card", {}, h("h2", {}, "systemd units"), unitNote, h("div.row", {}, unitFilter), units.el));
  function drawUnits() {
    const needle = unitFilter.value.trim().toLowerCase();
    units.render(needle ? allUnits.filter((u) => `${u.name} ${u.description}`.toLowerCase().includes(needle)) : allUnits);
  }
  async function loadUnits() {
    try {
      allUnits = await pages(gw, name, "list_services", "services");
      unitNote.hidden = true;
      drawUnits();
    } catch (e) {
      allUnits = [];
      drawUnits();
      unitNote.hidden = false;
      unitNote.textContent = e.reason === "no_systemd" ? `No systemd here: ${e.message}` : failure(e);
    }
  }

  // ---- One process or unit in detail (ctl proc, ctl signal, ctl unit status)
  function closeDetail() {
    detail.hidden = true;
    detail.replaceChildren();
  }
  function showDetail(heading, rows, ...extra) {
    fill(detail,
      h("div.row.spread", {}, h("h2", { id: "detail-title" }, heading), h("button.small.quiet", { type: "button", id: "detail-close", onclick: closeDetail }, "Close")),
      h("div.scroll", {}, h("table", {}, h("tbody", {}, rows.map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k), h("td", { dataset: { field: k } }, v)))))),
      extra);
    detail.hidden = false;
    detail.scrollIntoView({ block: "nearest" });
  }
  async function processDetail(pid, { gone } = {}) {
    try {
      const { msg: p } = await gw.ask(name, "obtain_process_info", { pid });
      const send = operator && p.safe_kill ? (() => {
        const choice = h("select", { id: "detail-signal", "aria-label": "Signal" }, ALL_SIGNALS.map((sig) => h("option", { value: sig }, sig)));
        const go = h("button.danger", { type: "button", id: "detail-send", onclick: async () => {
          const mode = choice.value;
          if (!(await confirmAction(`Send ${mode} to ${pid}?`, `Send ${mode} to process ${pid} (${p.name}) on ${name}.`, `Send ${mode}`))) return;
          try {
            const { msg } = await gw.ask(name, "proc_signal", { pid, mode });
            toast(`${msg.signal} sent to ${pid}`);
          } catch (e) {
            toast(`${mode} ${pid}: ${failure(e)}`, true);
          }
          // A signal that ended it closes the details instead of failing.
          setTimeout(() => processDetail(pid, { gone: closeDetail }), 300);
        } }, "Send");
        return h("div.row", {}, h("label", { for: "detail-signal" }, "Signal"), choice, go);
      })() : h("p.muted", {}, operator ? "The agent's policy does not let it signal this process." : "");
      showDetail(`Process ${pid}: ${p.name}`, [
        ["command", h("span.mono", {}, p.cmd.join(" "))],
        ["status", processBadge(p.status)],
        ["user", p.user_name ? `${p.user_name} (uid ${p.user})` : `uid ${p.user ?? "–"}`],
        ["CPU", `${p.cpu_usage} % (user ${p.cpu_time.user ?? "–"} s, system ${p.cpu_time.system ?? "–"} s)`],
        [memLabel() === "RAM" ? "RAM" : "memory", `${bytes(p.memory.rss)} resident, ${bytes(p.memory.swap)} swapped`],
        ["started", when(p.started)],
        ["may be signalled", p.safe_kill ? "yes" : "no"],
      ], send);
    } catch (e) {
      if (e.reason === "not_found" && gone) return gone();
      toast(`Process ${pid}: ${failure(e)}`, true);
    }
  }
  async function unitDetail(unit) {
    try {
      const { msg: u } = await gw.ask(name, "obtain_service_info", { service_name: unit });
      showDetail(`Unit ${u.name}`, [
        ["description", u.description],
        ["active", statusBadge(u.active_state)],
        ["state", u.sub_state],
        ["file", h("span.mono", {}, u.file_location ?? "–")],
        ["up for", u.uptime ? duration(u.uptime) : "–"],
        ["main pid", u.pid ?? "–"],
      ]);
    } catch (e) {
      toast(`${unit}: ${failure(e)}`, true);
    }
  }

  // ---- The agent's work folder (ctl usage)
  const usageHead = h("p", { id: "usage-summary" });
  const usage = sortableTable([
    { key: "name", label: "Name" },
    { key: "type", label: "Type" },
    { key: "bytes", label: "Size", num: true, cell: (e) => bytes(e.bytes) },
  ], { sortKey: "bytes", descending: true, rowAttrs: (e) => ({ dataset: { entry: e.name } }), empty: "The folder is empty." });
  fill(panels.usage, h("div.card", {}, h("h2", {}, "Work folder"), usageHead, usage.el));
  async function loadUsage() {
    try {
      const { msg } = await gw.ask(name, "obtain_user_usages");
      const r = msg.resources ?? {};
      // `mem_util` is in MB (10^6 bytes), seed 003's unit.
      usageHead.textContent = `${msg.folder}: ${bytes(msg.total_bytes)}. The agent's ${r.processes ?? 0} running processes use ${r.cpu_util ?? 0} % CPU and ${bytes((r.mem_util ?? 0) * 1e6)}.`;
      usage.render(msg.entries);
    } catch (e) {
      usageHead.textContent = failure(e);
    }
  }

  // ---- Any request, as `ctl request HOST REQ MSG` sends it
  const reqName = h("select", { id: "request-name", "aria-label": "Request" }, (operator ? [...READS, ...COMMANDS] : READS).map((r) => h("option", { value: r }, r)));
  const reqMsg = h("input", { id: "request-msg", value: "{}", "aria-label": "msg, a JSON object", autocomplete: "off", spellcheck: "false" });
  const reqReply = h("pre.conf", { id: "request-reply", tabindex: "0", "aria-label": "Reply" });
  const reqForm = h("form", { id: "request-form", class: "row" }, h("label", { for: "request-name" }, "Ask"), reqName, reqMsg, h("button", { type: "submit", id: "request-send" }, "Send"));
  reqForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    let msg;
    try {
      msg = JSON.parse(reqMsg.value || "{}");
      if (!msg || typeof msg !== "object" || Array.isArray(msg)) throw new Error("msg must be a JSON object");
    } catch (e) {
      reqReply.textContent = `Not sent: ${e.message}`;
      return;
    }
    reqReply.textContent = "…";
    const lines = [];
    try {
      const onEvent = msg.follow ? (ev) => { lines.push(JSON.stringify(ev)); reqReply.textContent = lines.join("\n"); } : undefined;
      const { msg: reply } = await gw.ask(name, reqName.value, msg, { onEvent, timeoutMs: 75000 });
      lines.unshift(JSON.stringify(reply, null, 2));
      reqReply.textContent = lines.join("\n");
    } catch (e) {
      reqReply.textContent = JSON.stringify({ result: "error", reason: e.reason ?? "error", desc: e.message }, null, 2);
    }
  });
  fill(panels.request, h("div.card", {},
    h("h2", {}, "Send a request"),
    h("p.muted", {}, operator ? "Any of the agent's requests, with its msg as JSON; the reply as the agent sent it." : "Your role may send the requests that only read."),
    reqForm, reqReply));

  // ---- Presence: the page follows the host leaving and coming back
  const loaders = { started: loadStarted, processes: loadProcesses, units: loadUnits, usage: loadUsage };
  let online = null;
  let bannerFor = null;
  function presence() {
    const agent = app.clientByName(name);
    const now = !!agent && gw.up;
    if (agent) state.replaceChildren(h("span.badge.ok", { id: "host-online" }, "online"), ` user ${agent.user ?? "anonymous"}, uuid `, h("span.mono", {}, agent.uuid));
    else state.replaceChildren(h("span.badge.bad", { id: "host-online" }, "offline"), ` ${name} is not connected.`);
    // Whether it is offline, never connected or unknown is the inventory's
    // to say, once this page knows every client.
    if (app.loaded && now !== bannerFor) {
      bannerFor = now;
      showBanner(now);
    }
    if (now && online !== true) {
      gw.ask(name, "telemetry").then(({ msg }) => telemetry(msg.tele_data)).catch(() => {});
      loaders[current]?.();
    }
    online = now;
  }
  app.addEventListener("fleet", presence);
  cleanups.push(() => app.removeEventListener("fleet", presence));
  every(5000, () => { if (online && current === "started") loadStarted(); });

  show("telemetry");
  presence();
  return () => cleanups.forEach((c) => c());
}

/** Every page of a paged agent reply (`next_offset` until null). */
async function pages(gw, host, req, key) {
  const all = [];
  let offset = 0;
  for (;;) {
    const { msg } = await gw.ask(host, req, { offset });
    all.push(...msg[key]);
    if (msg.next_offset === null || msg.next_offset === undefined) return all;
    // A page that does not move on would be asked for forever.
    if (!(msg.next_offset > offset)) throw new AgentError("malformed", `${host}'s ${req} pages do not advance`);
    offset = msg.next_offset;
  }
}

/**
 * A process's command line as text: the first CMD_SHOWN characters, the
 * whole of it on hover and when opened; a kernel thread's name in
 * brackets, as `ps` shows one (it has no command line).
 */
function commandLine(p) {
  const line = p.cmd.join(" ");
  if (!line) return h("span.muted.mono", {}, `[${p.name}]`);
  if (line.length <= CMD_SHOWN) return h("span.mono.cmdline", {}, line);
  return h("details.cmdline", {},
    h("summary.mono", { title: line }, `${line.slice(0, CMD_SHOWN)}…`),
    h("div.mono", {}, line));
}

function exitText(exit) {
  const ms = exit.duration_ms;
  const took = typeof ms !== "number" ? "" : ms < 1000 ? ` after ${ms} ms` : ` after ${duration(ms / 1000)}`;
  return exit.signal ? `killed by ${exit.signal}${took}` : `exited with ${exit.code}${took}`;
}

function decode(b64) {
  try {
    return new TextDecoder().decode(Uint8Array.from(atob(b64 ?? ""), (c) => c.charCodeAt(0)));
  } catch {
    return "";
  }
}
