// The fleet: every connected client, live from CLIENT_JOINED and
// CLIENT_LEFT, agents marked and linked to their host page; and every
// service with its owner and subscriber count.

import { isHost } from "./gateway.js";
import { fill, h, sortableTable } from "./ui.js";

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

  const services = sortableTable([
    { key: "name", label: "Service" },
    { key: "owner", label: "Owner", value: (s) => app.clients.get(s.owner_uuid)?.name ?? s.owner_uuid.slice(0, 8) },
    { key: "subscribers", label: "Subscribers", num: true, value: (s) => s.subscribers.length },
  ], { sortKey: "name", rowAttrs: (s) => ({ dataset: { service: s.name } }), empty: "No services." });

  fill(root,
    h("div.card", {},
      h("div.row.spread", {}, h("h1", {}, "Fleet"), counts),
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
  search.addEventListener("input", draw);
  kind.addEventListener("change", draw);
  app.addEventListener("fleet", draw);
  const poll = setInterval(() => app.refreshServices(), 5000);
  draw();
  return () => {
    app.removeEventListener("fleet", draw);
    clearInterval(poll);
  };
}

/** 1 → "1 agent", 2 → "2 agents". */
function count(n, noun) {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}
