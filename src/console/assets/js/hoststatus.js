// A host's page, beyond its live telemetry: what the inventory says of it
// (a banner when it is not online: offline since when, with its last facts
// and health; never connected; or no such host at all) and its stored
// health history (`history`, PROTOCOL §20) as a chart over a chosen range,
// read again as it moves on.

import { failure } from "./gateway.js";
import { isStale, load as loadAvg, percent, vpnAge } from "./health.js";
import { FLEET, GATEWAY } from "./requests.js";
import { ago, bytes, clock, fill, h, memLabel, when } from "./ui.js";

/** The ranges offered: [seconds, label]. The gateway picks the step. */
const RANGES = [[3600, "1 h"], [6 * 3600, "6 h"], [24 * 3600, "24 h"], [7 * 86400, "7 d"]];

/** The inventory's record of `name`, or null when it has none. */
async function record(app, name) {
  const { msg } = await app.gw.ask(GATEWAY, FLEET.hosts, { target: name, limit: FLEET.max_page });
  return msg.hosts.find((x) => x.name === name) ?? null;
}

/**
 * The banner of a host that is not online, in `el` (hidden while it is):
 * "offline since …" with its last facts and health, "never connected", or
 * "no such host". `show(online)` reads the inventory when it is not.
 */
export function presenceBanner(app, name, el) {
  let asked = 0;
  return async function show(online) {
    const mine = ++asked;
    if (online) {
      el.hidden = true;
      fill(el);
      return;
    }
    let x;
    try {
      x = await record(app, name);
    } catch (e) {
      if (mine !== asked) return;
      el.hidden = false;
      el.className = "banner";
      el.dataset.presence = "unknown";
      fill(el, `${name} is not connected, and the inventory could not be read: ${failure(e)}`);
      return;
    }
    if (mine !== asked) return;
    el.hidden = false;
    if (!x) {
      el.className = "banner missing";
      el.dataset.presence = "missing";
      fill(el, h("strong", {}, "No such host: "), `the inventory has no host ${JSON.stringify(name)}. It has never connected and no host token was issued for it.`);
      return;
    }
    el.dataset.presence = x.presence;
    if (x.presence === "never") {
      el.className = "banner never";
      fill(el, h("strong", {}, "Never connected: "), `a host token was issued for ${name}, and no agent has connected with it yet.`);
      return;
    }
    if (x.presence === "online") {
      // Online by the inventory, not yet in this page's list of clients.
      el.hidden = true;
      return;
    }
    el.className = "banner";
    fill(el,
      h("p", { id: "host-offline-since" }, h("strong", {}, "Offline "),
        x.last_seen ? ["since ", h("span", { title: new Date(x.last_seen * 1000).toLocaleString() }, clock(x.last_seen)), ` (${ago(x.last_seen)})`] : ""),
      h("div.scroll", {}, h("table.facts", {}, h("tbody", {}, factRows(x).map(([k, v]) =>
        h("tr", {}, h("th", { scope: "row" }, k), h("td", { dataset: { fact: k } }, v)))))));
  };
}

/** The last facts and health of a host, as [label, value] rows. */
function factRows(x) {
  const f = x.facts ?? {};
  const hh = x.health;
  const labels = Object.entries(f.labels ?? {}).map(([k, v]) => `${k}=${v}`).join(", ");
  return [
    ["first seen", x.first_seen ? when(x.first_seen) : "–"],
    ["system", [f.os, f.os_version, f.arch].filter(Boolean).join(" ") || "–"],
    ["kernel", f.kernel ?? "–"],
    ["CPUs", f.cpus ?? "–"],
    [memLabel() === "RAM" ? "RAM" : "memory", f.memory_bytes ? bytes(f.memory_bytes) : "–"],
    ["agent", f.agent_version ?? "–"],
    ["addresses", [...(f.addresses ?? []), f.vpn_address && `VPN ${f.vpn_address}`].filter(Boolean).join(", ") || "–"],
    ["labels", labels || "–"],
    ["last health", hh
      ? `CPU ${percent(hh.cpu)} %, load ${loadAvg(hh.load)}, ${memLabel().toLowerCase()} ${percent(hh.mem)} %, disk ${percent(hh.disk)} %, VPN handshake ${vpnAge(hh.vpn_age)}${isStale(hh) ? `, reported ${ago(hh.at)}` : ""}`
      : "none reported"],
  ];
}

/**
 * The health history card: a range picker and a chart of CPU, memory and
 * disk (%) and load, opened on the last hour and read again every summary
 * interval (or step, for a wide range). Returns {el, destroy()}.
 */
export function historyCard(app, name) {
  const canvas = h("canvas", { id: "history-chart", role: "img", "aria-label": `Health history of ${name}` });
  const note = h("p.muted", { id: "history-note", "aria-live": "polite" });
  let range = RANGES[0][0];
  const buttons = RANGES.map(([secs, label]) => h("button.small.quiet", {
    type: "button", dataset: { range: secs }, "aria-pressed": String(secs === range),
    onclick: () => {
      range = secs;
      for (const b of buttons) b.setAttribute("aria-pressed", String(Number(b.dataset.range) === secs));
      load();
    },
  }, label));
  const el = h("div.card", { id: "history-card" },
    h("div.row.spread", {}, h("h2", {}, "Health history"), h("div.range", { id: "history-range", role: "group", "aria-label": "Range" }, buttons)),
    note,
    h("div.chart", {}, canvas));
  const chart = new window.Chart(canvas, {
    type: "line",
    data: {
      labels: [],
      datasets: [
        ["CPU %", "#1f77b4", "y"], [`${memLabel()} %`, "#2ca02c", "y"], ["disk %", "#d62728", "y"], ["load", "#9467bd", "load"],
      ].map(([label, color, axis]) => ({ label, data: [], borderColor: color, backgroundColor: color, pointRadius: 0, borderWidth: 1.5, yAxisID: axis, spanGaps: false })),
    },
    options: {
      animation: false, responsive: true, maintainAspectRatio: false,
      interaction: { mode: "index", intersect: false },
      plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
      scales: {
        y: { min: 0, max: 100, title: { display: true, text: "%" } },
        load: { position: "right", min: 0, grid: { drawOnChartArea: false }, title: { display: true, text: "load" } },
        x: { ticks: { maxTicksLimit: 8 } },
      },
    },
  });

  let loads = 0;
  let timer = null;
  async function load() {
    clearTimeout(timer);
    const mine = ++loads;
    const asked = range;
    const since = Math.floor(Date.now() / 1000) - asked;
    let next = FLEET.summary_interval;
    try {
      const { msg } = await app.gw.ask(GATEWAY, FLEET.history, { host: name, since });
      if (mine !== loads) return;
      draw(msg, asked);
      next = Math.max(FLEET.summary_interval, msg.step);
    } catch (e) {
      if (mine !== loads) return;
      note.className = "error";
      note.textContent = e.reason === "not_found" ? `No history: the inventory has no host ${name}.` : `The history could not be read: ${failure(e)}`;
    }
    timer = setTimeout(load, next * 1000);
  }
  /** Draws `history`, read for the last `secs` seconds. */
  function draw(history, secs) {
    const labels = [];
    const series = [[], [], [], []];
    let previous = null;
    for (const p of history.points) {
      // A gap in the host's reports is a gap in the lines.
      if (previous !== null && p.at - previous > 2 * history.step) {
        labels.push("");
        series.forEach((s) => s.push(null));
      }
      labels.push(clock(p.at));
      series[0].push(p.cpu);
      series[1].push(p.mem);
      series[2].push(p.disk);
      series[3].push(p.load);
      previous = p.at;
    }
    chart.data.labels = labels;
    chart.data.datasets.forEach((set, i) => { set.data = series[i]; set.pointRadius = history.points.length < 3 ? 3 : 0; });
    chart.update("none");
    canvas.dataset.points = String(history.points.length);
    canvas.dataset.range = String(secs);
    note.className = "muted";
    note.textContent = history.points.length
      ? `${history.points.length} point${history.points.length === 1 ? "" : "s"} from ${clock(history.since)} to ${clock(history.until)}, one every ${history.step} s.`
      : "No health reported in this range.";
  }
  const onUp = () => load();
  app.gw.addEventListener("up", onUp);
  if (app.gw.up) load();
  return {
    el,
    destroy() {
      loads += 1;
      clearTimeout(timer);
      app.gw.removeEventListener("up", onUp);
      chart.destroy();
    },
  };
}
