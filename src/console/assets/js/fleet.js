// The fleet: every host of the gateway's inventory, online or offline
// (since when), selected by a target expression (docs/PROTOCOL.md §18);
// every connected client, live from CLIENT_JOINED and CLIENT_LEFT, agents
// marked and linked to their host page; and every service with its owner
// and subscriber count.

import { isHost } from "./gateway.js";
import { ago, fill, h, sortableTable } from "./ui.js";

/** How often the inventory is read again while the page is open. */
const HOSTS_EVERY_MS = 10000;

export function title() {
  return "Fleet";
}

export function mount(app, root) {
  const search = h("input", { type: "search", id: "fleet-search", placeholder: "Search name, user, tag…", "aria-label": "Search clients" });
  const kind = h("select", { id: "fleet-kind", "aria-label": "Which clients" },
    h("option", { value: "all" }, "All clients"),
    h("option", { value: "agents" }, "Agents only"),
    h("option", { value: "others" }, "Not agents"));
  const counts = h("p.muted", { id: "fleet-counts" });

  const clients = sortableTable([
    { key: "name", label: "Name", cell: (c) => isHost(c) ? h("a", { href: `#/host/${encodeURIComponent(c.name)}`, class: "host-link" }, c.name) : c.name },
    { key: "kind", label: "Kind", value: (c) => isHost(c) ? "agent" : (c.tags.includes("console") ? "console" : "client"),
      cell: (c) => isHost(c) ? h("span.badge.agent", {}, "agent") : h("span.badge", {}, c.tags.includes("console") ? "console" : "client") },
    { key: "user", label: "User", value: (c) => c.user ?? "anonymous" },
    { key: "roles", label: "Roles", value: (c) => c.roles.join(", "), className: "hide-narrow" },
    { key: "tags", label: "Tags", cell: (c) => c.tags.map((t) => h("span.badge", {}, t)), value: (c) => c.tags.join(" "), className: "hide-narrow" },
    { key: "uuid", label: "UUID", cell: (c) => h("span.mono", { title: c.uuid }, c.uuid.slice(0, 8)), className: "hide-narrow" },
  ], { sortKey: "name", rowAttrs: (c) => ({ dataset: { name: c.name } }), empty: "No client matches." });

  const target = h("input", { type: "search", id: "hosts-target", placeholder: "Target: web*, a,b, role=web,dc in (fra,ams), !canary…", "aria-label": "Target expression" });
  const targetError = h("pre.error", { id: "hosts-target-error", role: "alert", hidden: true });
  const hostCounts = h("p.muted", { id: "hosts-counts" });
  const hosts = sortableTable([
    { key: "name", label: "Host", cell: (x) => h("a", { href: `#/host/${encodeURIComponent(x.name)}`, class: "host-link" }, x.name) },
    { key: "kind", label: "Kind", cell: (x) => h("span.badge", {}, x.kind) },
    { key: "state", label: "State", value: (x) => (x.online ? "online" : "offline"),
      cell: (x) => x.online ? h("span.badge.ok", {}, "online")
        : h("span.badge.bad", { title: new Date(x.last_seen * 1000).toLocaleString() }, `offline, seen ${ago(x.last_seen)}`) },
    { key: "os", label: "OS", value: (x) => [x.facts.os, x.facts.os_version].filter(Boolean).join(" ") || "—", className: "hide-narrow" },
    { key: "labels", label: "Labels", value: (x) => Object.entries(x.facts.labels ?? {}).map(([k, v]) => `${k}=${v}`).join(", "), className: "hide-narrow" },
  ], { sortKey: "name", rowAttrs: (x) => ({ dataset: { host: x.name, online: String(x.online) } }), empty: "No host matches." });

  const services = sortableTable([
    { key: "name", label: "Service" },
    { key: "owner", label: "Owner", value: (s) => app.clients.get(s.owner_uuid)?.name ?? s.owner_uuid.slice(0, 8) },
    { key: "subscribers", label: "Subscribers", num: true, value: (s) => s.subscribers.length },
  ], { sortKey: "name", rowAttrs: (s) => ({ dataset: { service: s.name } }), empty: "No services." });

  fill(root,
    h("div.card", {},
      h("div.row.spread", {}, h("h1", {}, "Hosts"), hostCounts),
      h("div.row", {}, target),
      targetError,
      h("div", { id: "fleet-hosts" }, hosts.el)),
    h("div.card", {},
      h("div.row.spread", {}, h("h2", {}, "Clients"), counts),
      h("div.row", {}, search, kind),
      h("div", { id: "fleet-clients" }, clients.el)),
    h("div.card", {}, h("h2", {}, "Services"), h("div", { id: "fleet-services" }, services.el)));

  function draw() {
    const needle = search.value.trim().toLowerCase();
    const all = [...app.clients.values()];
    const shown = all.filter((c) => {
      if (kind.value === "agents" && !isHost(c)) return false;
      if (kind.value === "others" && isHost(c)) return false;
      if (!needle) return true;
      return [c.name, c.nickname, c.user, c.uuid, ...c.tags].some((v) => v && v.toLowerCase().includes(needle));
    });
    clients.render(shown);
    services.render([...app.services.values()]);
    counts.textContent = [count(all.length, "client"), count(all.filter(isHost).length, "agent"), count(app.services.size, "service")].join(", ");
  }
  // The inventory, every page of it, for the target typed; a mistake in
  // the expression is shown with the gateway's caret under it.
  let asked = 0;
  async function loadHosts() {
    const mine = ++asked;
    const expression = target.value.trim();
    const found = [];
    try {
      let after;
      for (;;) {
        const { msg } = await app.gw.ask("concierge", "hosts", { ...(expression && { target: expression }), ...(after && { after }) });
        found.push(...msg.hosts);
        if (!msg.more || !msg.hosts.length) break;
        after = msg.hosts[msg.hosts.length - 1].name;
      }
    } catch (e) {
      if (mine !== asked) return;
      targetError.hidden = false;
      targetError.textContent = e.message;
      return;
    }
    if (mine !== asked) return;
    targetError.hidden = true;
    hosts.render(found);
    const online = found.filter((x) => x.online).length;
    hostCounts.textContent = `${count(found.length, "host")}, ${online} online`;
  }
  let typing;
  target.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(loadHosts, 300);
  });
  const onFleet = () => {
    draw();
    clearTimeout(typing);
    typing = setTimeout(loadHosts, 300);
  };
  search.addEventListener("input", draw);
  kind.addEventListener("change", draw);
  app.addEventListener("fleet", onFleet);
  const poll = setInterval(() => app.refreshServices(), 5000);
  const hostsPoll = setInterval(loadHosts, HOSTS_EVERY_MS);
  draw();
  loadHosts();
  return () => {
    app.removeEventListener("fleet", onFleet);
    clearInterval(poll);
    clearInterval(hostsPoll);
    clearTimeout(typing);
  };
}

/** 1 → "1 agent", 2 → "2 agents". */
function count(n, noun) {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}
