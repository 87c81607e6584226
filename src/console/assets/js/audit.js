// The agents' audit: what was asked of every host and by whom, newest
// first. Live from each agent's `audit_<host>` service, resumed after a
// reconnection with what was recorded meanwhile; an operator also sees each
// agent's recent history (its `audit` request needs that role), fetched
// again when a resumption could not recover what was missed.

import { isHost } from "./gateway.js";
import { clock, fill, h, sortableTable } from "./ui.js";

const HISTORY = 200;
const KEEP = 2000;

export function title([host]) {
  return host ? `Audit: ${host}` : "Audit";
}

export function mount(app, root, [onlyHost]) {
  const gw = app.gw;
  const entries = [];
  const seen = new Set();
  const subscribed = new Map();
  const filter = h("input", { type: "search", id: "audit-search", value: onlyHost ?? "", placeholder: "Filter by host, user, request, result…", "aria-label": "Filter the audit" });
  const count = h("span.muted", { id: "audit-count" });
  const table = sortableTable([
    { key: "time", label: "Time", className: "nowrap", cell: (e) => clock(Date.parse(e.time) / 1000) },
    { key: "host", label: "Host" },
    { key: "user", label: "User", value: (e) => e.user ?? "anonymous" },
    { key: "client", label: "Client", className: "hide-narrow" },
    { key: "req", label: "Request", cell: (e) => h("span.mono", {}, e.req ?? "") },
    { key: "args", label: "Arguments", sortable: false, className: "hide-narrow", cell: (e) => h("span.mono", {}, e.args ? JSON.stringify(e.args) : "") },
    { key: "result", label: "Result", cell: (e) => e.result === "success"
      ? h("span.badge.ok", {}, "success")
      : h("span", {}, h("span.badge.bad", {}, e.reason ?? e.result ?? "error"), " ", e.desc ?? "") },
  ], { sortKey: "time", descending: true, rowAttrs: (e) => ({ dataset: { req: e.req, result: e.result, user: e.user ?? "" } }), empty: "Nothing audited yet." });

  fill(root, h("div.card", {},
    h("div.row.spread", {}, h("h1", {}, "Audit"), count),
    app.can("operator") ? null : h("p.note", {}, "Your role shows what is audited from now on; the earlier history needs the operator role."),
    h("div.row", {}, filter),
    table.el));

  function add(host, entry) {
    const key = `${host}|${entry.time}|${entry.uuid}|${entry.rid}|${entry.req}`;
    if (seen.has(key)) return;
    seen.add(key);
    entries.push({ ...entry, host });
    if (entries.length > KEEP) entries.splice(0, entries.length - KEEP);
  }
  function draw() {
    const needle = filter.value.trim().toLowerCase();
    const shown = needle ? entries.filter((e) => [e.host, e.user, e.client, e.req, e.result, e.reason].some((v) => v && String(v).toLowerCase().includes(needle))) : entries;
    count.textContent = `${shown.length} of ${entries.length} entries`;
    table.render(shown);
  }
  filter.addEventListener("input", draw);

  function follow(host) {
    if (subscribed.has(host)) return;
    const service = `audit_${host}`;
    // Attributed to the verified publisher (origin), never to data.host:
    // only host itself can own audit_<host>, and only the owner publishes.
    const onEntry = (e) => {
      const from = e.detail.origin;
      if (e.detail.data?.event === "audit" && from?.name === host && isHost(from)) {
        add(from.name, e.detail.data.entry);
        draw();
      }
    };
    const history = () => {
      if (!app.can("operator")) return;
      gw.ask(host, "audit", { limit: HISTORY })
        .then(({ msg }) => { msg.entries.forEach((entry) => add(host, entry)); draw(); })
        .catch(() => {});
    };
    gw.addEventListener(`service:${service}`, onEntry);
    gw.addEventListener(`lost:${service}`, history);
    gw.subscribe(service);
    subscribed.set(host, () => {
      gw.removeEventListener(`service:${service}`, onEntry);
      gw.removeEventListener(`lost:${service}`, history);
      gw.unsubscribe(service);
    });
    history();
  }
  function agents() {
    app.agents().forEach((a) => follow(a.name));
  }
  app.addEventListener("fleet", agents);
  agents();
  draw();
  return () => {
    app.removeEventListener("fleet", agents);
    subscribed.forEach((stop) => stop());
  };
}
