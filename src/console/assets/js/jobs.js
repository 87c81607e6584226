// The Jobs page (docs/PROTOCOL.md §19): every job, newest first, paged
// with `before_ms` and read again while any of them runs; and, for
// operators, a new job's form: its target (the gateway's caret under a
// mistake, as on the Fleet page), what to run, its options, the hosts the
// target resolves to (`job_create` with `dry_run`), and their count
// confirmed before the job is created. One job's page is job.js; what both
// pages draw (host states, the counts bar, a request in a line, the
// confirmed creation) is here.

import { failure } from "./gateway.js";
import { UNIT_ACTIONS } from "./host.js";
import { GATEWAY, HOST_STATES, JOBS } from "./requests.js";
import { clock, confirmAction, fill, h, sortableTable, toast } from "./ui.js";

/** Jobs per page of the list. */
const PAGE = 50;
/** How often the list is read again while a job runs, and while none does. */
const RUNNING_EVERY_MS = 2000;
const IDLE_EVERY_MS = 10000;

const STATES = new Map(HOST_STATES.map((s) => [s.state, s]));

/**
 * How a host went, as the protocol says (requests.js): `ok`, `bad` (it ran
 * and went wrong), `none` (it did not run, or was stopped) or `pending`.
 */
export function outcome(state, exitCode) {
  const s = STATES.get(state);
  if (!s) return "none";
  return exitCode === 0 ? s.exit_0 : s.exit_other;
}

/** Whether a host in `state` is done with the job for good. */
export function isFinal(state) {
  return STATES.get(state)?.final ?? true;
}

/** A host's state as a coloured badge: `exited 0`, `exited SIGKILL`, `timed_out`. */
export function hostBadge(host) {
  const exit = host.state === "exited" ? ` ${host.exit_code ?? host.signal ?? ""}`.trimEnd() : "";
  return h(`span.badge.${outcome(host.state, host.exit_code)}`, { dataset: { state: host.state } }, `${host.state}${exit}`);
}

const JOB_TONES = { running: "pending", finished: "ok", stopped: "bad", cancelled: "none" };

/** A job's state as a coloured badge, with what stopped it. */
export function jobBadge(job) {
  return h(`span.badge.${JOB_TONES[job.state] ?? "none"}`, { title: job.stopped_by ?? "", dataset: { jobState: job.state } }, job.state);
}

/**
 * A stacked bar of `parts` ([{label, n, tone}]) out of `total` hosts, with
 * its numbers as text beside it and as the bar's accessible name.
 */
export function countsBar(parts, total) {
  const shown = parts.filter((p) => p.n > 0);
  const text = shown.map((p) => `${p.n} ${p.label}`).join(", ") || "no hosts";
  const bar = h("span.bar", { role: "img", "aria-label": text, title: text });
  for (const p of shown) {
    const seg = h(`span.seg.${p.tone}`);
    // A style property, not an attribute: the page's policy allows no inline style.
    seg.style.flexGrow = String(p.n);
    bar.append(seg);
  }
  const done = shown.filter((p) => p.tone !== "pending").reduce((sum, p) => sum + p.n, 0);
  return h("span.progress", {}, bar, h("span.muted.nowrap", {}, `${done}/${total}`));
}

/**
 * A job's counts (`JobInfo.counts`) as the bar's parts, in the protocol's
 * order. A state whose hosts went differently by exit code (`exited`) is
 * `mixed`: only the hosts' rows tell them apart.
 */
export function countParts(counts) {
  return HOST_STATES.map((s) => ({
    label: s.state,
    n: counts?.[s.state] ?? 0,
    tone: s.exit_0 === s.exit_other ? s.exit_0 : "mixed",
  }));
}

/** What a job runs, in a line: the command line, a unit action, or the request. */
export function describeRequest(request) {
  const msg = request?.msg ?? {};
  if (request?.req === "execute") return msg.command ?? (msg.cmd ?? []).join(" ");
  if (UNIT_ACTIONS.some(([req]) => req === request?.req)) return `${request.req} ${msg.service_name ?? ""}`;
  return `${request?.req ?? "?"} ${JSON.stringify(msg)}`;
}

/** `n` hosts, in words. */
export function hostCount(n) {
  return `${n} host${n === 1 ? "" : "s"}`;
}

/** The hosts `spec`'s target resolves to, as `job_create` with `dry_run` lists them. */
export async function preview(app, spec) {
  const { msg } = await app.gw.ask(GATEWAY, JOBS.create, { ...spec, dry_run: true });
  return msg.hosts;
}

/** How many of the previewed hosts the job runs on: the online ones only with `online`. */
export function runCount(spec, previewed) {
  return spec.online ? previewed.filter((x) => x.online).length : previewed.length;
}

/**
 * Asks to confirm running `spec` on `n` hosts, naming the number, then
 * creates the job and opens its page. Resolves with the job, or null when
 * the person did not confirm.
 */
export async function runConfirmed(app, spec, n) {
  const what = describeRequest(spec.request);
  const ok = await confirmAction(`Run on ${hostCount(n)}?`,
    `${what} will run on ${hostCount(n)} (target ${spec.target}). It cannot be taken back, only cancelled.`,
    `Run on ${hostCount(n)}`);
  if (!ok) return null;
  const { msg } = await app.gw.ask(GATEWAY, JOBS.create, spec);
  const job = msg.job;
  if (job.hosts !== n) toast(`The target resolved to ${hostCount(job.hosts)} when the job was made, not ${n}.`, true);
  location.hash = `#/job/${encodeURIComponent(job.id)}`;
  return job;
}

export function title() {
  return "Jobs";
}

export function mount(app, root) {
  const cleanups = [];
  const jobs = new Map();
  // Whether an older page may follow, and whether one was asked for (then
  // reading the newest page again does not decide it).
  let more = false;
  let pagedBack = false;

  const count = h("span.muted", { id: "jobs-count" });
  const table = sortableTable([
    { key: "id", label: "Job", cell: (j) => h("a.mono", { href: `#/job/${encodeURIComponent(j.id)}`, class: "job-link" }, j.id) },
    { key: "created_ms", label: "When", num: true, className: "nowrap", cell: (j) => clock(j.created_ms / 1000) },
    { key: "user", label: "Who", value: (j) => j.user ?? "anonymous", cell: (j) => h("span", { title: `client ${j.client}` }, j.user ?? "anonymous") },
    { key: "target", label: "Target", cell: (j) => h("span.mono", {}, j.spec.target) },
    { key: "request", label: "Request", className: "hide-narrow", value: (j) => describeRequest(j.spec.request), cell: (j) => h("span.mono", {}, describeRequest(j.spec.request)) },
    { key: "state", label: "State", cell: jobBadge },
    { key: "hosts", label: "Hosts", num: true, cell: (j) => countsBar(countParts(j.counts), j.hosts) },
  ], { sortKey: "created_ms", descending: true, rowAttrs: (j) => ({ dataset: { job: j.id, state: j.state } }), empty: "No job yet." });
  const older = h("button.quiet", { type: "button", id: "jobs-older", hidden: true, onclick: () => load(oldest()) }, "Older jobs");
  const listError = h("p.error", { id: "jobs-error", role: "alert", hidden: true });

  fill(root,
    app.can("operator") ? jobForm(app) : h("p.note", { id: "jobs-viewer-note" }, `Your role (${app.info.role}) may follow jobs but not start or cancel them.`),
    h("div.card", {},
      h("div.row.spread", {}, h("h1", {}, "Jobs"), count),
      listError,
      h("div", { id: "jobs-list" }, table.el),
      older));

  function oldest() {
    return Math.min(...[...jobs.values()].map((j) => j.created_ms));
  }
  function draw() {
    const all = [...jobs.values()];
    table.render(all);
    const running = all.filter((j) => j.state === "running").length;
    count.textContent = `${all.length} shown${running ? `, ${running} running` : ""}`;
    older.hidden = !more;
  }
  // The newest page (again), or the page before `before_ms`.
  let timer = null;
  async function load(before_ms) {
    clearTimeout(timer);
    try {
      const { msg } = await app.gw.ask(GATEWAY, JOBS.list, { limit: PAGE, ...(before_ms && { before_ms }) });
      listError.hidden = true;
      for (const job of msg.jobs) jobs.set(job.id, job);
      if (before_ms || !pagedBack) more = msg.jobs.length === PAGE;
      if (before_ms) pagedBack = true;
      draw();
    } catch (e) {
      listError.hidden = false;
      listError.textContent = `The jobs could not be read: ${failure(e)}`;
    }
    const running = [...jobs.values()].some((j) => j.state === "running");
    timer = setTimeout(() => load(), running ? RUNNING_EVERY_MS : IDLE_EVERY_MS);
  }
  cleanups.push(() => clearTimeout(timer));
  // The first read waits for the connection; a reconnection reads again.
  const onUp = () => load();
  app.gw.addEventListener("up", onUp);
  cleanups.push(() => app.gw.removeEventListener("up", onUp));
  if (app.gw.up) load();
  draw();
  return () => cleanups.forEach((c) => c());
}

/** The `Amount` a field holds: a number of hosts (10) or a share ("25%"), or undefined when empty. */
function amount(field, label) {
  const text = field.value.trim();
  if (!text) return undefined;
  if (/^\d+$/.test(text)) return Number(text);
  const share = /^(\d+)\s*%$/.exec(text);
  if (share && Number(share[1]) >= 1 && Number(share[1]) <= 100) return `${Number(share[1])}%`;
  throw new Error(`${label}: ${JSON.stringify(text)} is not a number of hosts (10) or a share of them (25%)`);
}

/** A whole number a field holds, from `min` to `max`, or undefined when empty. */
function whole(field, label, min, max) {
  const text = field.value.trim();
  if (!text) return undefined;
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < min || n > max) throw new Error(`${label}: give a whole number from ${min} to ${max}`);
  return n;
}

/**
 * The new job's form. The preview is of what the form said when it was
 * asked; any change makes it stale, and the run button waits for a fresh
 * one.
 */
function jobForm(app) {
  const field = (id, attrs = {}) => h("input", { id, name: id, autocomplete: "off", spellcheck: "false", ...attrs });
  const target = field("job-target", { type: "search", placeholder: "web*, a,b, role=web,dc in (fra,ams), !canary…", "aria-describedby": "job-error", required: true });
  const error = h("pre.error", { id: "job-error", role: "alert", hidden: true });
  const kind = h("select", { id: "job-kind", "aria-label": "What to run" },
    h("option", { value: "command" }, "A command line"),
    h("option", { value: "unit" }, "A unit action"),
    h("option", { value: "request" }, "A request (JSON)"));
  const command = field("job-command", { placeholder: "a command line, e.g. uptime", "aria-label": "Command line" });
  const unitAction = h("select", { id: "job-unit-action", "aria-label": "Unit action" }, UNIT_ACTIONS.map(([req, verb]) => h("option", { value: req }, verb)));
  const unit = field("job-unit", { placeholder: "unit, e.g. nginx.service", "aria-label": "Unit name" });
  const request = h("textarea", { id: "job-request", rows: 3, spellcheck: "false", "aria-label": "Request as JSON: {\"req\": NAME, \"msg\": {…}}" });
  request.value = '{"req": "ping", "msg": {}}';
  const what = {
    command: h("div.row", { id: "job-what-command" }, command),
    unit: h("div.row", { id: "job-what-unit", hidden: true }, unitAction, unit),
    request: h("div", { id: "job-what-request", hidden: true }, request),
  };
  const online = h("input", { type: "checkbox", id: "job-online" });
  const wait = field("job-wait", { inputmode: "numeric", placeholder: "no wait" });
  const batch = field("job-batch", { placeholder: "all at once" });
  const maxFailures = field("job-max-failures", { placeholder: "no limit" });
  const canary = field("job-canary", { inputmode: "numeric", placeholder: "none" });
  const timeout = field("job-timeout", { inputmode: "numeric", placeholder: "the agent's" });
  const option = (input, label, hint) => h("div.option", {}, h("label", { for: input.id }, label), input, h("span.muted", {}, hint));
  const previewButton = h("button.quiet", { type: "button", id: "job-preview" }, "Preview");
  const run = h("button.danger", { type: "submit", id: "job-run", disabled: true }, "Run");
  const previewBox = h("div", { id: "job-preview-result", "aria-live": "polite" });

  const el = h("form.card", { id: "job-form", novalidate: true },
    h("h2", {}, "New job"),
    h("label", { for: "job-target" }, "Target"),
    target, error,
    h("label", { for: "job-kind" }, "What to run"),
    h("div.row", {}, kind),
    Object.values(what),
    h("details", { id: "job-options" },
      h("summary", {}, "Options"),
      h("div.options", {},
        h("div.option", {}, h("label", { for: "job-online" }, online, " Only hosts online now")),
        option(wait, "Wait for offline hosts (s)", "then they are expired"),
        option(batch, "Batch", "hosts at once: 10 or 25%"),
        option(maxFailures, "Max failures", "then the rest are skipped"),
        option(canary, "Canary", "hosts that run it first"),
        option(timeout, "Timeout per host (s)", "then it is stopped"))),
    h("div.row", {}, previewButton, run),
    previewBox);

  const showKind = () => {
    for (const [k, box] of Object.entries(what)) box.hidden = k !== kind.value;
  };
  kind.addEventListener("change", showKind);

  /** The spec the form says, or an Error saying what is wrong with it. */
  function spec() {
    const expression = target.value.trim();
    if (!expression) throw new Error("Give a target: a host name, a glob (web*), labels (role=web)…");
    let req;
    if (kind.value === "command") {
      const line = command.value.trim();
      if (!line) throw new Error("Give a command line to run.");
      req = { req: "execute", msg: { command: line } };
    } else if (kind.value === "unit") {
      const name = unit.value.trim();
      if (!name) throw new Error("Give the unit's name.");
      req = { req: unitAction.value, msg: { service_name: name } };
    } else {
      try {
        req = JSON.parse(request.value);
      } catch (e) {
        throw new Error(`The request is not JSON: ${e.message}`);
      }
      if (!req || typeof req !== "object" || Array.isArray(req) || typeof req.req !== "string") {
        throw new Error('The request is {"req": NAME, "msg": {…}}.');
      }
    }
    const s = { target: expression, request: req };
    if (online.checked) s.online = true;
    const options = {
      wait_secs: whole(wait, "Wait", 1, JOBS.max_secs),
      batch: amount(batch, "Batch"),
      max_failures: amount(maxFailures, "Max failures"),
      canary: whole(canary, "Canary", 1, 2 ** 32 - 1),
      timeout_secs: whole(timeout, "Timeout", 1, JOBS.max_secs),
    };
    for (const [k, v] of Object.entries(options)) if (v !== undefined) s[k] = v;
    return s;
  }

  // The preview stands for the form as it was when asked: a change makes
  // it stale, and only a fresh one arms the run button.
  let shown = null;
  let asked = 0;
  function stale() {
    asked += 1;
    shown = null;
    run.disabled = true;
    run.textContent = "Run";
    previewBox.classList.add("stale");
  }
  el.addEventListener("input", stale);
  el.addEventListener("change", stale);

  function fail(message) {
    error.hidden = false;
    error.textContent = message;
  }
  async function doPreview() {
    let s;
    try {
      s = spec();
    } catch (e) {
      stale();
      return fail(e.message);
    }
    const mine = ++asked;
    previewButton.disabled = true;
    try {
      const found = await preview(app, s);
      if (mine !== asked) return;
      error.hidden = true;
      const n = runCount(s, found);
      shown = { spec: s, n };
      drawPreview(found, n);
      run.disabled = n === 0;
      run.textContent = n ? `Run on ${hostCount(n)}` : "No host to run on";
    } catch (e) {
      if (mine !== asked) return;
      fill(previewBox);
      fail(failure(e));
    } finally {
      previewButton.disabled = false;
    }
  }
  function drawPreview(found, n) {
    previewBox.classList.remove("stale");
    const up = found.filter((x) => x.online).length;
    fill(previewBox,
      h("p", { id: "job-preview-count" }, `${hostCount(found.length)}, ${up} online: it runs on ${hostCount(n)}.`),
      h("ul.hostlist", {}, found.map((x) => h("li", { dataset: { host: x.name, online: String(x.online) } },
        h("span.mono", {}, x.name), " ",
        h(`span.badge.${x.online ? "ok" : "none"}`, {}, x.online ? "online" : "offline")))));
  }
  previewButton.addEventListener("click", doPreview);
  el.addEventListener("submit", async (event) => {
    event.preventDefault();
    // Enter in a field previews; only a fresh preview's count is run.
    if (!shown) return doPreview();
    run.disabled = true;
    try {
      await runConfirmed(app, shown.spec, shown.n);
    } catch (e) {
      fail(failure(e));
    } finally {
      run.disabled = !shown;
    }
  });
  showKind();
  return el;
}
