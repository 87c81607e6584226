// The Fleet page, in two tabs. Hosts (inventory.js): every host of the
// gateway's inventory, online, offline or never connected, with its health,
// at ten thousand hosts. Clients: the connected clients that are not hosts
// (operators' consoles, ctl, services' owners), live from CLIENT_JOINED and
// CLIENT_LEFT, and every service with its owner and subscriber count.
// The tab shown is in the address (`#/fleet/clients`), so it is kept on a
// reload and can be linked to.

import { isHost } from "./gateway.js";
import { mountHosts } from "./inventory.js";
import { fill, h, sortableTable } from "./ui.js";

const TABS = [["hosts", "Hosts"], ["clients", "Clients"]];

export function title([tab]) {
  return tab === "clients" ? "Clients" : "Fleet";
}

export function mount(app, root, [tab = "hosts"]) {
  const cleanups = [];
  const tabs = h("div.tabs", { role: "tablist", "aria-label": "Fleet sections" });
  const panels = {};
  const mounted = {};
  for (const [id, label] of TABS) {
    tabs.append(h("button", { type: "button", role: "tab", id: `fleet-tab-${id}`, "aria-controls": `fleet-panel-${id}`, onclick: () => show(id) }, label));
    panels[id] = h("section.card", { id: `fleet-panel-${id}`, role: "tabpanel", "aria-labelledby": `fleet-tab-${id}`, hidden: true });
  }
  fill(root, tabs, Object.values(panels));

  function show(id) {
    for (const [other] of TABS) {
      document.getElementById(`fleet-tab-${other}`).setAttribute("aria-selected", String(other === id));
      panels[other].hidden = other !== id;
    }
    // The address names the tab without a new page (no hashchange).
    history.replaceState(null, "", id === "hosts" ? "#/fleet" : `#/fleet/${id}`);
    document.title = `${title([id])} · Concierge`;
    if (!mounted[id]) {
      mounted[id] = true;
      cleanups.push(id === "hosts" ? mountHosts(app, panels.hosts) : mountClients(app, panels.clients));
    }
  }
  show(TABS.some(([id]) => id === tab) ? tab : "hosts");
  return () => cleanups.forEach((c) => c());
}

/** The Clients tab: connected clients that are not hosts, and the services. */
function mountClients(app, root) {
  const search = h("input", { type: "search", id: "fleet-search", placeholder: "Search name, user, tag…", "aria-label": "Search clients" });
  const counts = h("p.muted", { id: "fleet-counts" });
  const kindOf = (c) => (c.tags.includes("console") ? "console" : "client");
  const clients = sortableTable([
    { key: "name", label: "Name" },
    { key: "kind", label: "Kind", value: kindOf, cell: (c) => h("span.badge", {}, kindOf(c)) },
    { key: "user", label: "User", value: (c) => c.user ?? "anonymous" },
    { key: "roles", label: "Roles", value: (c) => c.roles.join(", "), className: "hide-narrow" },
    { key: "tags", label: "Tags", cell: (c) => c.tags.map((t) => h("span.badge", {}, t)), value: (c) => c.tags.join(" "), className: "hide-narrow" },
    { key: "uuid", label: "UUID", cell: (c) => h("span.mono", { title: c.uuid }, c.uuid.slice(0, 8)), className: "hide-narrow" },
  ], { sortKey: "name", rowAttrs: (c) => ({ dataset: { name: c.name } }), empty: "No client matches." });
  const services = sortableTable([
    { key: "name", label: "Service" },
    { key: "owner", label: "Owner", value: (s) => app.clients.get(s.owner_uuid)?.name ?? s.owner_uuid.slice(0, 8) },
    { key: "subscribers", label: "Subscribers", num: true, value: (s) => s.subscribers.length },
  ], { sortKey: "name", rowAttrs: (s) => ({ dataset: { service: s.name } }), empty: "No services." });

  fill(root,
    h("div.row.spread", {}, h("h1", {}, "Clients"), counts),
    h("p.muted", {}, "The connected clients that are not hosts: consoles, ctl, services' owners. Hosts are in the Hosts tab."),
    h("div.row", {}, search),
    h("div", { id: "fleet-clients" }, clients.el),
    h("h2", {}, "Services"),
    h("div", { id: "fleet-services" }, services.el));

  function draw() {
    const needle = search.value.trim().toLowerCase();
    const all = [...app.clients.values()];
    const others = all.filter((c) => !isHost(c));
    const shown = needle
      ? others.filter((c) => [c.name, c.nickname, c.user, c.uuid, ...c.tags].some((v) => v && v.toLowerCase().includes(needle)))
      : others;
    clients.render(shown);
    services.render([...app.services.values()]);
    counts.textContent = [count(others.length, "client"), count(all.length - others.length, "host"), count(app.services.size, "service")].join(", ");
  }
  // A fleet of hosts connecting at once is many broadcasts: drawn at most every 200 ms.
  let pending = null;
  const onFleet = () => { if (!pending) pending = setTimeout(() => { pending = null; draw(); }, 200); };
  search.addEventListener("input", draw);
  app.addEventListener("fleet", onFleet);
  const poll = setInterval(() => app.refreshServices(), 5000);
  draw();
  return () => {
    app.removeEventListener("fleet", onFleet);
    clearInterval(poll);
    clearTimeout(pending);
  };
}

/** 1 → "1 client", 2 → "2 clients". */
function count(n, noun) {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}
