// The Alerts page (PROTOCOL §21): the alerts firing now and the latest
// events (`alerts`, older ones a page at a time with `before`), live from
// the gateway's `alerts` service (subscribed with resumption, as every
// service the console follows: gateway.js), and the rules (`alert_rules`).
// Admins get a form to add a rule over the API (`alert_rule_set`) and a
// delete button on each API rule (`alert_rule_delete`, confirmed); rules
// from the gateway's configuration are changed in its file, and viewers
// see no control at all.
//
// Live events are merged by `seq`: an event already shown is not shown
// twice, and when the subscription could not resume (`lost:alerts`) the
// lists are read again.

import { failure } from "./gateway.js";
import { ALERTS, GATEWAY } from "./requests.js";
import { clock, confirmAction, fill, h, sortableTable, toast, when } from "./ui.js";

/** Events per page of the recent list. */
const PAGE = 100;
/** The most events kept on the page. */
const KEEP = 2000;

export function title() {
  return "Alerts";
}

/** An alert's state as a badge. */
function stateBadge(e) {
  return h(`span.badge.${e.state === "firing" ? "bad" : "ok"}`, { dataset: { state: e.state } }, e.state);
}

function valueText(e) {
  return typeof e.value === "number" ? String(Math.round(e.value * 10) / 10) : "";
}

export function mount(app, root) {
  const gw = app.gw;
  const admin = app.can("admin");
  const cleanups = [];
  /** Firing alerts by `rule|host`. */
  const active = new Map();
  /** Recent events by seq. */
  const recent = new Map();
  let more = false;

  const error = h("p.error", { id: "alerts-error", role: "alert", hidden: true });
  const activeCount = h("span.muted", { id: "alerts-active-count" });
  const activeTable = sortableTable([
    { key: "host", label: "Host", cell: (e) => h("a", { href: `#/host/${encodeURIComponent(e.host)}`, class: "host-link" }, e.host) },
    { key: "rule", label: "Rule" },
    { key: "when", label: "Condition", cell: (e) => h("span.mono", {}, e.when) },
    { key: "value", label: "Value", num: true, value: valueText },
    { key: "since", label: "Since", num: true, className: "nowrap", cell: (e) => when(e.since) },
  ], { sortKey: "since", descending: true, rowAttrs: (e) => ({ dataset: { rule: e.rule, host: e.host, seq: e.seq } }), empty: "No alert is firing." });
  const recentTable = sortableTable([
    { key: "seq", label: "#", num: true },
    { key: "at", label: "When", num: true, className: "nowrap", cell: (e) => clock(e.at) },
    { key: "state", label: "State", cell: stateBadge },
    { key: "host", label: "Host", cell: (e) => h("a", { href: `#/host/${encodeURIComponent(e.host)}`, class: "host-link" }, e.host) },
    { key: "rule", label: "Rule" },
    { key: "when", label: "Condition", className: "hide-narrow", cell: (e) => h("span.mono", {}, e.when) },
    { key: "value", label: "Value", num: true, value: valueText },
  ], { sortKey: "seq", descending: true, rowAttrs: (e) => ({ dataset: { seq: e.seq, state: e.state, rule: e.rule, host: e.host } }), empty: "No event yet." });
  const older = h("button.quiet", { type: "button", id: "alerts-older", hidden: true, onclick: () => readEvents(oldest()) }, "Older events");
  const rulesError = h("p.error", { id: "rules-error", role: "alert", hidden: true });
  const rulesTable = sortableTable([
    { key: "name", label: "Rule", cell: (r) => h("span.mono", {}, r.name) },
    { key: "when", label: "Condition", cell: (r) => h("span.mono", {}, r.when) },
    { key: "target", label: "Target", value: (r) => r.target ?? "every host", cell: (r) => (r.target ? h("span.mono", {}, r.target) : h("span.muted", {}, "every host")) },
    { key: "source", label: "From", cell: (r) => h("span.badge", { title: r.source === "config" ? "the gateway's configuration file: change it there" : "added over the API" }, r.source) },
    { key: "actions", label: "", sortable: false, cell: (r) => (admin && r.source === "api"
      ? h("button.small.danger", { type: "button", dataset: { deleteRule: r.name }, onclick: () => remove(r) }, "Delete") : null) },
  ], { sortKey: "name", rowAttrs: (r) => ({ dataset: { rule: r.name, source: r.source } }), empty: "No rule." });

  fill(root,
    h("div.card", {},
      h("div.row.spread", {}, h("h1", {}, "Alerts"), activeCount),
      error,
      h("h2", {}, "Firing now"),
      h("div", { id: "alerts-active" }, activeTable.el),
      h("h2", {}, "Recent events"),
      h("div", { id: "alerts-recent" }, recentTable.el),
      older),
    h("div.card", {},
      h("h2", {}, "Rules"),
      rulesError,
      admin ? ruleForm() : h("p.note", { id: "alerts-viewer-note" }, `Your role (${app.info.role}) may see the rules; an admin adds and deletes them.`),
      h("div", { id: "alerts-rules" }, rulesTable.el)));

  function oldest() {
    return Math.min(...recent.keys());
  }
  function draw() {
    activeTable.render([...active.values()]);
    recentTable.render([...recent.values()]);
    activeCount.textContent = `${active.size} firing`;
    older.hidden = !more;
  }
  function keep(e) {
    recent.set(e.seq, e);
    if (recent.size > KEEP) recent.delete(oldest());
  }

  // ---- The lists, and the events on top
  async function readEvents(before) {
    try {
      const { msg } = await gw.ask(GATEWAY, ALERTS.list, { limit: PAGE, ...(before && { before }) });
      error.hidden = true;
      if (!before) {
        active.clear();
        for (const e of msg.active) active.set(`${e.rule}|${e.host}`, e);
      }
      msg.recent.forEach(keep);
      if (!before || msg.recent.length) more = msg.more;
      draw();
    } catch (e) {
      error.hidden = false;
      error.textContent = `The alerts could not be read: ${failure(e)}`;
    }
  }
  function apply(e) {
    if (!e || typeof e.seq !== "number" || typeof e.host !== "string" || typeof e.rule !== "string") return;
    if (recent.has(e.seq)) return;
    keep(e);
    const key = `${e.rule}|${e.host}`;
    if (e.state === "firing") active.set(key, e);
    else if (active.get(key)?.seq < e.seq) active.delete(key);
  }
  let drawing = null;
  const onEvent = (ev) => {
    // The name `alerts` is the gateway's: no client can own or publish on it.
    apply(ev.detail.data);
    if (!drawing) drawing = setTimeout(() => { drawing = null; draw(); }, 100);
  };
  const onLost = () => readEvents();
  gw.addEventListener(`service:${ALERTS.service}`, onEvent);
  gw.addEventListener(`lost:${ALERTS.service}`, onLost);
  gw.subscribe(ALERTS.service);

  // ---- The rules
  async function readRules() {
    try {
      const { msg } = await gw.ask(GATEWAY, ALERTS.rules, {});
      rulesError.hidden = true;
      rulesTable.render(msg.rules);
    } catch (e) {
      rulesError.hidden = false;
      rulesError.textContent = `The rules could not be read: ${failure(e)}`;
    }
  }
  async function remove(rule) {
    if (!(await confirmAction(`Delete rule ${rule.name}?`, `The rule ${rule.name} (${rule.when}) stops being evaluated; its firing alerts resolve.`, "Delete"))) return;
    try {
      await gw.ask(GATEWAY, ALERTS.delete, { name: rule.name });
      toast(`Rule ${rule.name} deleted`);
    } catch (e) {
      toast(`Delete ${rule.name}: ${failure(e)}`, true);
    }
    readRules();
  }
  function ruleForm() {
    const field = (id, placeholder, label) => h("input", { id, name: id, placeholder, "aria-label": label, autocomplete: "off", spellcheck: "false" });
    const name = field("rule-name", "name, e.g. cpu-hot", "Rule name");
    const cond = field("rule-when", "condition: cpu > 90 for 5m, disk >= 95, offline for 2m", "Condition");
    const target = field("rule-target", "target (optional): role=web,dc=fra", "Target expression");
    const problem = h("pre.error", { id: "rule-error", role: "alert", hidden: true });
    const form = h("form", { id: "rule-form", novalidate: true },
      h("div.row", {}, name, cond, target, h("button", { type: "submit", id: "rule-add" }, "Add rule")),
      problem);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const rule = { name: name.value.trim(), when: cond.value.trim() };
      if (target.value.trim()) rule.target = target.value.trim();
      if (!rule.name || !rule.when) {
        problem.hidden = false;
        problem.textContent = "Give the rule a name and a condition.";
        return;
      }
      try {
        const { msg } = await gw.ask(GATEWAY, ALERTS.set, rule);
        problem.hidden = true;
        form.reset();
        toast(`Rule ${msg.rule?.name ?? rule.name} saved`);
      } catch (e) {
        problem.hidden = false;
        problem.textContent = failure(e);
      }
      readRules();
    });
    return form;
  }

  // The first reads wait for the connection; a reconnection reads again
  // (the subscription's resumption brings the events missed meanwhile).
  const onUp = () => { readEvents(); readRules(); };
  gw.addEventListener("up", onUp);
  cleanups.push(() => {
    gw.removeEventListener(`service:${ALERTS.service}`, onEvent);
    gw.removeEventListener(`lost:${ALERTS.service}`, onLost);
    gw.removeEventListener("up", onUp);
    gw.unsubscribe(ALERTS.service);
    clearTimeout(drawing);
  });
  if (gw.up) onUp();
  draw();
  return () => cleanups.forEach((c) => c());
}
