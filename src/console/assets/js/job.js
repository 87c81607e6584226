// One job (docs/PROTOCOL.md §19): its record (who made it, when, what it
// runs where and how), its progress live, every host with its state, exit
// code and time, one host's output at a click; Cancel while it runs and
// Rerun failed for operators.
//
// Live: the page subscribes to the job's service (`job_ID`, owned by the
// gateway's coordinator), then reads `job_get` for a baseline and applies
// the `JobEvent`s on top (those that came before the baseline, after it).
// A `hosts` event carries each changed host's whole row, and a final state is never
// replaced by one that is not, nor a row by an older one. When the
// subscription's history could not be recovered (a reconnection, or
// another replica that took the job over and made the service anew) or the
// service goes, the baseline is read again. The gateway publishes a
// host's event only once its ledger (what job_get reads) has the row, so
// an event the subscription did not bring is in the baseline. Everything
// that came from hosts is set as text.

import { failure } from "./gateway.js";
import { GATEWAY, JOBS } from "./requests.js";
import { clock, confirmAction, duration, fill, h, sortableTable, toast } from "./ui.js";
import { countParts, countsBar, describeRequest, hostBadge, hostCount, isFinal, jobBadge, outcome, preview, runCount, runConfirmed } from "./jobs.js";

const JOB_ID = /^[0-9a-f]{12}$/;
/** The most events kept while a baseline is read. */
const EARLY_MAX = 10000;

export function title([id]) {
  return id ? `Job ${id}` : "Job";
}

export function mount(app, root, [id = ""]) {
  const gw = app.gw;
  const operator = app.can("operator");
  const cleanups = [];
  if (!JOB_ID.test(id)) {
    fill(root, h("div.card", {}, h("h1", {}, "Job"), h("p.error", { role: "alert" }, `${JSON.stringify(id)} is not a job id (12 lowercase hex digits).`),
      h("a", { href: "#/jobs" }, "All jobs")));
    return () => {};
  }
  const service = `${JOBS.prefix}${id}`;

  let job = null;
  const rows = new Map();
  let total = 0;
  // Events that came before the baseline they apply on top of.
  let early = [];
  let baseline = false;
  // The host whose output is shown, and the last ask for one.
  let showing = null;
  let opened = 0;

  const heading = h("h1", { id: "job-title" }, `Job ${id}`);
  const stateBadge = h("span", { id: "job-state" });
  const record = h("div.scroll", { id: "job-record" });
  const progress = h("div", { id: "job-progress" });
  const actions = h("div.actions", { id: "job-actions" });
  const problem = h("p.error", { id: "job-problem", role: "alert", hidden: true });
  const table = sortableTable([
    { key: "host", label: "Host", cell: (x) => h("button.small.quiet", { type: "button", dataset: { output: x.host }, onclick: () => openOutput(x.host) }, x.host) },
    { key: "state", label: "State", value: (x) => `${outcome(x.state, x.exit_code)} ${x.state}`, cell: hostBadge },
    { key: "result", label: "Result", value: (x) => result(x) },
    { key: "duration", label: "Took", num: true, value: (x) => took(x) ?? -1, cell: (x) => (took(x) === null ? "–" : duration(took(x) / 1000)) },
    { key: "attempts", label: "Sent", num: true, className: "hide-narrow" },
    { key: "digest", label: "Output", className: "hide-narrow", cell: (x) => x.digest ? h("span.mono", { title: "hosts with the same digest printed the same" }, x.digest.slice(0, 8)) : "" },
    { key: "updated_ms", label: "Changed", num: true, className: "hide-narrow nowrap", cell: (x) => clock(x.updated_ms / 1000) },
  ], { sortKey: "host", rowAttrs: (x) => ({ dataset: { host: x.host, state: x.state, outcome: outcome(x.state, x.exit_code) } }), empty: "No host yet." });
  const shownNote = h("p.muted", { id: "job-hosts-shown" });
  const outputTitle = h("h2", { id: "job-output-title" }, "Output");
  const outputState = h("p.muted", { id: "job-output-state" }, "Click a host to see what it printed.");
  const output = h("pre.output", { id: "job-output", tabindex: "0", "aria-label": "The host's output", hidden: true });
  const reply = h("pre.conf", { id: "job-reply", tabindex: "0", "aria-label": "The host's reply", hidden: true });

  fill(root,
    h("div.card", {},
      h("div.row.spread", {}, h("div.row", {}, heading, stateBadge), actions),
      problem,
      record,
      h("h2", {}, "Progress"),
      progress,
      operator ? null : h("p.note", { id: "job-viewer-note" }, `Your role (${app.info.role}) may follow this job but not cancel or rerun it.`)),
    h("div.card", {}, h("h2", {}, "Hosts"), shownNote, h("div", { id: "job-hosts" }, table.el)),
    h("div.card", { id: "job-output-card" }, outputTitle, outputState, output, reply));

  function draw() {
    if (!job) return;
    heading.textContent = `Job ${job.id}`;
    fill(stateBadge, jobBadge(job));
    const spec = job.spec;
    const options = [
      spec.online && "online hosts only",
      spec.wait_secs && `waits ${duration(spec.wait_secs)} for offline hosts`,
      spec.batch !== undefined && `batch ${spec.batch}`,
      spec.max_failures !== undefined && `at most ${spec.max_failures} failures`,
      spec.canary && `canary ${hostCount(spec.canary)}`,
      spec.timeout_secs && `timeout ${duration(spec.timeout_secs)}`,
      spec.stream && "output streamed",
    ].filter(Boolean);
    fill(record, h("table", {}, h("tbody", {}, [
      ["by", `${job.user ?? "anonymous"} (client ${job.client})`],
      ["created", clock(job.created_ms / 1000)],
      ["finished", job.finished_ms ? `${clock(job.finished_ms / 1000)} (after ${duration((job.finished_ms - job.created_ms) / 1000)})` : "not yet"],
      ["target", h("span.mono", {}, spec.target)],
      ["runs", h("span.mono", {}, describeRequest(spec.request))],
      ["request", h("span.mono", {}, JSON.stringify(spec.request))],
      ["options", options.join(", ") || "none"],
      job.stopped_by ? ["stopped by", job.stopped_by] : null,
    ].filter(Boolean).map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k), h("td", { dataset: { field: k } }, v))))));
    // With every host at hand, the bar is theirs (exit codes tell `exited`
    // apart); else the job's counts, as its `progress` events bring them.
    const parts = rows.size === total ? rowParts() : countParts(job.counts);
    fill(progress, countsBar(parts, job.hosts));
    const all = [...rows.values()];
    table.render(all);
    shownNote.textContent = all.length < total ? `The first ${all.length} of ${hostCount(total)}.` : hostCount(total);
    drawActions();
  }
  function rowParts() {
    const by = new Map();
    for (const x of rows.values()) {
      const tone = outcome(x.state, x.exit_code);
      const label = x.state === "exited" ? (x.exit_code === 0 ? "exited 0" : "exited non-zero") : x.state;
      const part = by.get(label) ?? { label, n: 0, tone };
      part.n += 1;
      by.set(label, part);
    }
    return [...by.values()].sort((a, b) => order(a.tone) - order(b.tone));
  }
  function drawActions() {
    if (!operator) return fill(actions);
    const failed = [...rows.values()].filter((x) => isFinal(x.state) && outcome(x.state, x.exit_code) !== "ok");
    fill(actions,
      job.state === "running" ? h("button.danger", { type: "button", id: "job-cancel", onclick: cancel }, "Cancel") : null,
      job.state !== "running" && (failed.length || rows.size < total) && job.hosts
        ? h("button.quiet", { type: "button", id: "job-rerun", onclick: rerun }, "Rerun failed") : null);
  }

  // ---- The baseline, then the events on top; a baseline read again is
  // merged as an event would be.
  let loads = 0;
  async function load() {
    const mine = ++loads;
    baseline = false;
    try {
      const { msg } = await gw.ask(GATEWAY, JOBS.get, { job: id });
      if (mine !== loads) return;
      // A job the events said was over stays over.
      if (!job || job.state === "running" || msg.job.state !== "running") job = msg.job;
      total = msg.total;
      msg.hosts.forEach(host);
      problem.hidden = true;
      baseline = true;
      const pending = early;
      early = [];
      pending.forEach(apply);
      draw();
    } catch (e) {
      if (mine !== loads) return;
      problem.hidden = false;
      problem.textContent = e.reason === "not_found" ? `There is no job ${id}.` : `The job could not be read: ${failure(e)}`;
    }
  }
  function apply(event) {
    if (event?.job !== id && event?.job?.id !== id) return;
    if (!baseline) {
      // The next baseline stands for what does not fit.
      if (early.length < EARLY_MAX) early.push(event);
      return;
    }
    switch (event.event) {
      case "hosts":
        if (Array.isArray(event.hosts)) event.hosts.forEach(host);
        return;
      case "output":
        if (event.host === showing && typeof event.data === "string") appendOutput(event.stream, event.data);
        return;
      case "progress":
        job.counts = event.counts;
        return;
      case "end":
        job = event.job;
        return;
      default:
    }
  }
  function host(row) {
    const was = rows.get(row.host);
    if (was && isFinal(was.state) && !isFinal(row.state)) return;
    if (was && row.updated_ms < was.updated_ms) return;
    if (!was && rows.size >= total) return;
    rows.set(row.host, row);
    // The output shown is the host's last word once it is done.
    if (row.host === showing && isFinal(row.state) && !(was && isFinal(was.state))) openOutput(row.host);
  }
  // Many events at once (a big job) are drawn once.
  let drawing = null;
  const onEvent = (e) => {
    // Only the job's coordinator publishes on its service.
    if (e.detail.origin?.name !== service) return;
    apply(e.detail.data);
    if (baseline && !drawing) drawing = setTimeout(() => { drawing = null; draw(); }, 100);
  };
  const onLost = () => load();
  const onBroadcast = (e) => {
    const p = e.detail;
    if (p.type === "SERVICE_DELETE_RESULT" && p.service?.name === service && job?.state === "running") load();
  };
  gw.addEventListener(`service:${service}`, onEvent);
  gw.addEventListener(`lost:${service}`, onLost);
  gw.addEventListener("broadcast", onBroadcast);
  gw.subscribe(service);
  // The first baseline waits for the connection; after a reconnection the
  // subscription's result says whether the history was recovered.
  const onUp = () => { if (!job) load(); };
  gw.addEventListener("up", onUp);
  cleanups.push(() => {
    gw.removeEventListener(`service:${service}`, onEvent);
    gw.removeEventListener(`lost:${service}`, onLost);
    gw.removeEventListener("broadcast", onBroadcast);
    gw.removeEventListener("up", onUp);
    gw.unsubscribe(service);
    clearTimeout(drawing);
    loads += 1;
  });
  if (gw.up) load();

  // ---- One host's output
  function appendOutput(stream, text) {
    output.hidden = false;
    output.append(stream === "stderr" ? h("span.stderr", {}, text) : document.createTextNode(text));
  }
  async function openOutput(name) {
    const mine = ++opened;
    showing = name;
    outputTitle.textContent = `Output of ${name}`;
    outputState.textContent = "…";
    try {
      const { msg } = await gw.ask(GATEWAY, JOBS.output, { job: id, host: name });
      if (mine !== opened) return;
      const x = msg.host;
      fill(outputState, hostBadge(x), " ", result(x));
      output.replaceChildren();
      output.dataset.host = name;
      output.hidden = false;
      if (x.stdout) appendOutput("stdout", captured(x.stdout));
      if (x.stderr) appendOutput("stderr", captured(x.stderr));
      if (!x.stdout && !x.stderr) output.hidden = true;
      reply.hidden = x.reply === undefined || x.reply === null;
      reply.textContent = reply.hidden ? "" : JSON.stringify(x.reply, null, 2);
      document.getElementById("job-output-card")?.scrollIntoView({ block: "nearest" });
    } catch (e) {
      if (mine !== opened) return;
      outputState.textContent = failure(e);
    }
  }

  // ---- Cancel, and a new job for the hosts that did not succeed
  async function cancel() {
    if (!(await confirmAction(`Cancel job ${id}?`,
      `Job ${id} (${describeRequest(job.spec.request)} on ${job.spec.target}): hosts not sent it yet are cancelled, and where it runs it is stopped (SIGTERM, then SIGKILL).`,
      "Cancel the job"))) return;
    try {
      const { msg } = await gw.ask(GATEWAY, JOBS.cancel, { job: id });
      job = msg.job;
      draw();
      toast(`Job ${id} cancelled`);
    } catch (e) {
      toast(`Cancel ${id}: ${failure(e)}`, true);
    }
  }
  async function rerun() {
    try {
      const names = (await everyHost()).filter((x) => isFinal(x.state) && outcome(x.state, x.exit_code) !== "ok").map((x) => x.host);
      if (!names.length) return toast("Every host succeeded: nothing to run again.");
      const { online, wait_secs, batch, max_failures, canary, timeout_secs, stream } = job.spec;
      const spec = { target: names.join(","), request: job.spec.request, online, wait_secs, batch, max_failures, canary, timeout_secs, stream };
      for (const k of Object.keys(spec)) if (spec[k] === undefined || spec[k] === false) delete spec[k];
      // The names, resolved as a target, are counted again before the confirmation.
      await runConfirmed(app, spec, runCount(spec, await preview(app, spec)));
    } catch (e) {
      toast(`Rerun failed: ${failure(e)}`, true);
    }
  }
  /** Every host of the job, each page of them. */
  async function everyHost() {
    if (rows.size === total) return [...rows.values()];
    const all = [];
    while (all.length < total) {
      const { msg } = await gw.ask(GATEWAY, JOBS.get, { job: id, offset: all.length });
      if (!msg.hosts.length) break;
      all.push(...msg.hosts);
    }
    return all;
  }

  draw();
  return () => cleanups.forEach((c) => c());
}

/** What a host's run came to, in words. */
function result(x) {
  if (x.state === "exited") return x.signal ? `killed by ${x.signal}` : `exit code ${x.exit_code}`;
  if (x.reason || x.desc) return [x.reason, x.desc].filter(Boolean).join(": ");
  return "";
}

/** How long a host ran, in milliseconds, or null. */
function took(x) {
  return x.started_ms && x.finished_ms ? x.finished_ms - x.started_ms : null;
}

/** A `Captured` output as text: its head, what was left out, its tail. */
function captured(c) {
  return c.omitted ? `${c.head}\n[… ${c.omitted} bytes left out …]\n${c.tail ?? ""}` : `${c.head}${c.tail ?? ""}`;
}

/** Bar parts in a steady order: done, went wrong, did not run, still to come. */
function order(tone) {
  return { ok: 0, bad: 1, none: 2, mixed: 3, pending: 4 }[tone] ?? 5;
}
