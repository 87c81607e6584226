// DOM building blocks shared by every view: an element builder (text is
// always set as text, never parsed as HTML), sortable tables, the
// confirmation dialog, notices and the formats numbers are shown in.

/** `h("button.small", {onclick}, "text", child...)`: an element. */
export function h(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const el = document.createElement(tag || "div");
  if (classes.length) el.className = classes.join(" ");
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "class") el.classList.add(...String(value).split(" ").filter(Boolean));
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  for (const child of children.flat()) {
    if (child !== undefined && child !== null && child !== false) el.append(child);
  }
  return el;
}

/**
 * A table whose columns sort on a click (or Enter on the header's button).
 * `columns`: [{key, label, num?, value?(row), cell?(row), sort?(row)}].
 * Call `render(rows)` with fresh rows; the chosen order is kept.
 */
export function sortableTable(columns, { sortKey = null, descending = false, rowAttrs, empty = "Nothing here." } = {}) {
  let rows = [];
  let shown = null;
  let key = sortKey;
  let desc = descending;
  const head = h("tr");
  const body = h("tbody");
  const table = h("table", {}, h("thead", {}, head), body);
  const box = h("div.scroll", {}, table);
  function header() {
    fill(head, columns.map((col) => {
      const th = h(`th${col.num ? ".num" : ""}`, { scope: "col", class: col.className });
      if (col.sortable === false) {
        th.textContent = col.label;
      } else {
        th.setAttribute("aria-sort", key === col.key ? (desc ? "descending" : "ascending") : "none");
        th.append(h("button.sort", {
          type: "button",
          onclick: () => {
            if (key === col.key) desc = !desc;
            else { key = col.key; desc = !!col.num; }
            draw();
          },
        }, col.label));
      }
      return th;
    }));
  }
  function sortValue(col, row) {
    if (col.sort) return col.sort(row);
    return col.value ? col.value(row) : row[col.key];
  }
  // A redraw keeps the keyboard focus where it was: on the same control
  // of the row with the same first data attribute (its key).
  function focused() {
    const active = document.activeElement;
    if (!active || !body.contains(active)) return null;
    const row = active.closest("tr");
    const key = Object.entries(row?.dataset ?? {})[0];
    return key ? { key, tag: active.tagName, text: active.textContent } : null;
  }
  function refocus(was) {
    if (!was) return;
    const [name, value] = was.key;
    const row = [...body.rows].find((tr) => tr.dataset[name] === value);
    const el = row && [...row.querySelectorAll(was.tag)].find((e) => e.textContent === was.text);
    el?.focus();
  }
  function draw() {
    const was = focused();
    drawRows();
    refocus(was);
  }
  function drawRows() {
    header();
    const col = columns.find((c) => c.key === key);
    const sorted = col ? [...rows].sort((a, b) => {
      const x = sortValue(col, a);
      const y = sortValue(col, b);
      const order = typeof x === "number" && typeof y === "number" ? x - y : String(x ?? "").localeCompare(String(y ?? ""), undefined, { numeric: true });
      return desc ? -order : order;
    }) : rows;
    if (!sorted.length) {
      fill(body, h("tr", {}, h("td.muted", { colspan: columns.length }, empty)));
      return;
    }
    fill(body, sorted.map((row) => h("tr", rowAttrs ? rowAttrs(row) : {}, columns.map((c) => {
      const content = c.cell ? c.cell(row) : (c.value ? c.value(row) : row[c.key]);
      return h(`td${c.num ? ".num" : ""}`, { class: c.className }, content ?? "");
    }))));
  }
  header();
  return {
    el: box,
    render(newRows) {
      // Unchanged rows are not drawn again (the lists are polled).
      const text = JSON.stringify(newRows);
      if (text === shown) return;
      shown = text;
      rows = newRows;
      draw();
    },
  };
}

/** Asks before doing something that cannot be taken back; resolves true on Confirm. */
export function confirmAction(title, text, okLabel = "Confirm") {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = okLabel;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    document.getElementById("confirm-cancel").focus();
  });
}

/** A short notice at the corner of the screen. */
export function toast(text, bad = false) {
  const el = h(`div.toast${bad ? ".bad" : ""}`, {}, text);
  document.getElementById("toasts").append(el);
  setTimeout(() => el.remove(), bad ? 8000 : 4000);
}

// Sizes are shown in the unit the user chose (USER_SETTINGS_FETCH,
// `storage_unit_of_measurement`: `bytes`, `gb` for kB, MB, GB (10^3) or
// `gib` for KiB, MiB, GiB (2^10)), formatted as `concierge ctl` formats
// them (crates/ctl/src/render.rs): the two show the same size alike.
// Until the settings come, the gateway's defaults (`gb`, `mem`).
const STORAGE = {
  gb: [1000, ["B", "kB", "MB", "GB", "TB"]],
  gib: [1024, ["B", "KiB", "MiB", "GiB", "TiB"]],
};
let storage = "gb";
let memLabelNow = "Mem";

/** Takes the user's settings (`{name: value}`) for the sizes shown from now on. */
export function useSettings(settings) {
  const unit = settings?.storage_unit_of_measurement;
  storage = unit === "bytes" || unit in STORAGE ? unit : "gb";
  memLabelNow = settings?.mem_or_ram === "ram" ? "RAM" : "Mem";
}

/** What the user calls memory: "Mem" or "RAM" (`mem_or_ram`). */
export function memLabel() {
  return memLabelNow;
}

/** A number of bytes in the user's unit: "1234567 B", "1.2 MB" or "1.2 MiB". */
export function bytes(n) {
  if (typeof n !== "number" || !isFinite(n) || n < 0) return "–";
  n = Math.round(n);
  if (storage === "bytes") return `${n} B`;
  const [base, names] = STORAGE[storage];
  let value = n;
  let i = 0;
  while (value >= base && i < names.length - 1) { value /= base; i += 1; }
  return i === 0 ? `${n} B` : `${value.toFixed(1)} ${names[i]}`;
}

/** Seconds → "3 s", "4 min", "2 h", "5 d". */
export function duration(secs) {
  if (typeof secs !== "number" || !isFinite(secs)) return "–";
  if (secs < 90) return `${Math.round(secs)} s`;
  if (secs < 5400) return `${Math.round(secs / 60)} min`;
  if (secs < 172800) return `${Math.round(secs / 3600)} h`;
  return `${Math.round(secs / 86400)} d`;
}

/** A Unix time in seconds as local time, with the date unless it is today. */
export function clock(unixSecs) {
  if (!unixSecs) return "–";
  const at = new Date(unixSecs * 1000);
  const time = at.toLocaleTimeString();
  return at.toDateString() === new Date().toDateString() ? time : `${at.toLocaleDateString()} ${time}`;
}

/** A Unix time in seconds as "local time (N min ago)", the full date and time on hover. */
export function when(unixSecs) {
  if (!unixSecs) return "–";
  return h("span.nowrap", { title: new Date(unixSecs * 1000).toLocaleString() }, `${clock(unixSecs)} (${ago(unixSecs)})`);
}

/** Takes every notice off the screen (a new page starts clean). */
export function clearToasts() {
  document.getElementById("toasts").replaceChildren();
}

/** How long ago a Unix time (seconds) was; "never" for 0. */
export function ago(unixSecs) {
  if (!unixSecs) return "never";
  return `${duration(Math.max(0, Date.now() / 1000 - unixSecs))} ago`;
}

/** A status word as a coloured badge. */
export function statusBadge(status) {
  const tone = { running: "ok", active: "ok", stopped: "warn", exited: "", failed: "bad", zombie: "bad", dead: "bad" }[status] ?? "";
  return h(`span.badge${tone ? "." + tone : ""}`, {}, status ?? "unknown");
}

/** The letters of a process's state in `ps` (the agent's words, docs/PROTOCOL.md §13). */
const STATE_LETTERS = {
  running: "R", sleeping: "S", disk_sleep: "D", stopped: "T", tracing_stop: "t",
  zombie: "Z", dead: "X", idle: "I", parked: "P", waking: "W", wakekill: "K",
};

/** A process's state as a badge: "running (R)", "sleeping (S)"… */
export function processBadge(status) {
  const badge = statusBadge(status);
  const letter = STATE_LETTERS[status];
  if (letter) badge.textContent = `${status} (${letter})`;
  badge.dataset.state = status ?? "unknown";
  return badge;
}

/**
 * How a process ended, as the Jobs page colours a host's exit (jobs.js,
 * `outcome`): exit 0 `ok`, another code or a signal `bad`, still running
 * `none`. `text` is what the badge says.
 */
export function exitBadge(exit, text) {
  const tone = !exit ? "none" : exit.signal ? "bad" : exit.code === 0 ? "ok" : "bad";
  return h(`span.badge.${tone}`, { dataset: { exit: tone } }, text);
}
