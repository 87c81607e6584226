// The Fleet page's Hosts tab: every host of the gateway's inventory
// (`hosts`, 5,000 at a time until `more` is false), online, offline since
// when, or never connected, with its latest health, in a virtual list that
// stays quick at ten thousand hosts (vlist.js).
//
// - Filtering: a target expression is sent as `hosts`'s `target` (the
//   gateway's caret under a mistake, as on the Jobs form) and selects among
//   the hosts read; quick filters (presence, stale health) are applied here.
//   "N of M hosts": those shown of the whole inventory.
// - Live: CLIENT_JOINED and CLIENT_LEFT of a host's name change its
//   presence at once (the gateway counts a host online while a client
//   holds its name); the inventory is read again every 10 s for health,
//   and the rows are replaced in the order chosen at the same scroll
//   position.

import { failure } from "./gateway.js";
import { healthCell, isStale, learnInterval, load, percent, presenceBadge, presenceRank, sparkline, vpnAge } from "./health.js";
import { FLEET, GATEWAY } from "./requests.js";
import { fill, h } from "./ui.js";
import { virtualList } from "./vlist.js";

/** How often the inventory is read again while the tab is open. */
const HOSTS_EVERY_MS = 10000;

/** The quick filters: [id, label, predicate]. */
const QUICK = [
  ["all", "All", () => true],
  ["online", "Online", (x) => x.presence === "online"],
  ["offline", "Offline", (x) => x.presence === "offline"],
  ["never", "Never connected", (x) => x.presence === "never"],
  ["stale", "Stale health", (x) => isStale(x.health)],
];

function os(x) {
  return [x.facts.os, x.facts.os_version].filter(Boolean).join(" ") || "–";
}

function labels(x) {
  return Object.entries(x.facts.labels ?? {}).map(([k, v]) => `${k}=${v}`).join(", ");
}

/** A health number of a row, for sorting: hosts without health last. */
const metric = (field) => (x) => x.health?.[field] ?? null;

const COLUMNS = [
  { key: "name", label: "Host", width: "minmax(9rem, 2fr)", cell: (x) => h("a", { href: `#/host/${encodeURIComponent(x.name)}`, class: "host-link" }, x.name) },
  { key: "presence", label: "Presence", width: "10rem", sort: presenceRank, cell: presenceBadge },
  { key: "kind", label: "Kind", width: "5rem", cell: (x) => h("span.badge", {}, x.kind) },
  { key: "os", label: "OS", width: "7rem", value: os, className: "clip" },
  { key: "labels", label: "Labels", width: "minmax(7rem, 2fr)", value: labels, cell: (x) => h("span.clip", { title: labels(x) }, labels(x)) },
  { key: "cpu", label: "CPU %", width: "5rem", num: true, sort: metric("cpu"), cell: (x) => healthCell(x, percent(x.health?.cpu)) },
  { key: "load", label: "Load", width: "4.5rem", num: true, sort: metric("load"), cell: (x) => healthCell(x, load(x.health?.load)) },
  { key: "mem", label: "Mem %", width: "5rem", num: true, sort: metric("mem"), cell: (x) => healthCell(x, percent(x.health?.mem)) },
  { key: "disk", label: "Disk %", width: "5rem", num: true, sort: metric("disk"), cell: (x) => healthCell(x, percent(x.health?.disk)) },
  { key: "vpn_age", label: "VPN age", width: "5.5rem", num: true, sort: metric("vpn_age"), cell: (x) => healthCell(x, vpnAge(x.health?.vpn_age)) },
  { key: "trend", label: "CPU trend", width: "6rem", sortable: false, cell: (x) => (x.health ? sparkline(x.health.trend, { stale: isStale(x.health) }) : "") },
];

/** Every page of `hosts` for `target` (all without one), each page handed to `onPage` as it comes. */
async function readAll(app, target, onPage = () => {}) {
  const found = [];
  let after;
  for (;;) {
    const { msg } = await app.gw.ask(GATEWAY, FLEET.hosts, { ...(target && { target }), ...(after && { after }), limit: FLEET.max_page });
    learnInterval(msg);
    found.push(...msg.hosts);
    onPage(found);
    if (!msg.more || !msg.hosts.length) return found;
    after = msg.hosts[msg.hosts.length - 1].name;
  }
}

/** Mounts the Hosts tab in `root`; returns its cleanup. */
export function mountHosts(app, root) {
  const cleanups = [];
  /** The inventory as last read (and moved on by presence events), by name. */
  let records = new Map();
  /** The names the target selects, or null without a target; the expression they are for. */
  let selected = null;
  let selectedFor = "";
  let quick = "all";

  const target = h("input", { type: "search", id: "hosts-target", placeholder: "Target: web*, a,b, role=web,dc in (fra,ams), presence=offline…", "aria-label": "Target expression", "aria-describedby": "hosts-target-error", autocomplete: "off", spellcheck: "false" });
  const targetError = h("pre.error", { id: "hosts-target-error", role: "alert", hidden: true });
  const counts = h("p.muted", { id: "hosts-counts", role: "status" }, "Reading the inventory…");
  const readError = h("p.error", { id: "hosts-error", role: "alert", hidden: true });
  const quickButtons = QUICK.map(([id, label]) => h("button.small.quiet.chip", {
    type: "button", id: `quick-${id}`, "aria-pressed": String(id === quick),
    onclick: () => {
      quick = id;
      for (const b of quickButtons) b.setAttribute("aria-pressed", String(b.id === `quick-${id}`));
      draw();
    },
  }, label));
  const list = virtualList(COLUMNS, {
    sortKey: "name",
    label: "Hosts",
    empty: "No host matches.",
    rowAttrs: (x) => ({ dataset: { host: x.name, presence: x.presence, online: String(x.online) } }),
  });
  list.el.id = "fleet-hosts";

  fill(root,
    h("div.row.spread", {}, h("h1", {}, "Hosts"), counts),
    h("div.row", {}, target),
    targetError,
    h("div.row.chips", { role: "group", "aria-label": "Quick filters" }, quickButtons),
    readError,
    list.el);

  function draw() {
    const pass = QUICK.find(([id]) => id === quick)[2];
    const all = [...records.values()];
    const shown = all.filter((x) => (!selected || selected.has(x.name)) && pass(x));
    list.render(shown);
    const online = shown.filter((x) => x.presence === "online").length;
    counts.textContent = `${shown.length} of ${all.length} hosts, ${online} online`;
    counts.dataset.shown = String(shown.length);
    counts.dataset.total = String(all.length);
    counts.dataset.target = selected ? selectedFor : "";
    for (const [id, label, test] of QUICK) {
      const b = quickButtons.find((x) => x.id === `quick-${id}`);
      b.textContent = `${label} (${all.filter((x) => (!selected || selected.has(x.name)) && test(x)).length})`;
    }
  }

  // The whole inventory; while the first read runs, each page is drawn as it comes.
  let reading = false;
  let first = true;
  async function readInventory() {
    if (reading || !app.gw.up) return;
    reading = true;
    try {
      const found = await readAll(app, "", first ? (sofar) => { records = new Map(sofar.map((x) => [x.name, x])); draw(); } : undefined);
      records = new Map(found.map((x) => [x.name, x]));
      first = false;
      readError.hidden = true;
      if (target.value.trim()) await readSelection();
      draw();
    } catch (e) {
      readError.hidden = false;
      readError.textContent = `The inventory could not be read: ${failure(e)}`;
    } finally {
      reading = false;
    }
  }
  // The names the target selects; a mistake shown with the gateway's caret.
  let asked = 0;
  async function readSelection() {
    const mine = ++asked;
    const expression = target.value.trim();
    if (!expression) {
      asked += 1;
      selected = null;
      targetError.hidden = true;
      return;
    }
    try {
      const found = await readAll(app, expression);
      if (mine !== asked) return;
      selected = new Set(found.map((x) => x.name));
      selectedFor = expression;
      for (const x of found) if (!records.has(x.name)) records.set(x.name, x);
      targetError.hidden = true;
    } catch (e) {
      if (mine !== asked) return;
      targetError.hidden = false;
      targetError.textContent = e.message;
    }
  }
  let typing;
  target.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(async () => { await readSelection(); draw(); }, 250);
  });
  target.addEventListener("keydown", (e) => {
    if (e.key !== "Enter") return;
    clearTimeout(typing);
    readSelection().then(draw);
  });

  // Presence from the namespace's broadcasts, drawn at most every 200 ms.
  let pending = null;
  const later = () => { if (!pending) pending = setTimeout(() => { pending = null; draw(); }, 200); };
  const onFleet = (e) => {
    const p = e.detail ?? {};
    if (p.type === "reload") return readInventory();
    const x = p.client && records.get(p.client.name);
    if (!x) return;
    const now = Math.floor(Date.now() / 1000);
    if (p.type === "CLIENT_JOINED") records.set(x.name, { ...x, online: true, presence: "online", last_seen: now, first_seen: x.first_seen ?? now });
    else if (p.type === "CLIENT_LEFT") records.set(x.name, { ...x, online: false, presence: "offline", last_seen: now });
    else return;
    later();
  };
  app.addEventListener("fleet", onFleet);
  // The inventory is read as soon as the connection is up, beside the
  // clients' list rather than after it.
  const onUp = () => readInventory();
  app.gw.addEventListener("up", onUp);
  const poll = setInterval(readInventory, HOSTS_EVERY_MS);
  cleanups.push(() => {
    app.removeEventListener("fleet", onFleet);
    app.gw.removeEventListener("up", onUp);
    list.destroy();
    clearInterval(poll);
    clearTimeout(typing);
    clearTimeout(pending);
    asked += 1;
  });
  readInventory();
  return () => cleanups.forEach((c) => c());
}
