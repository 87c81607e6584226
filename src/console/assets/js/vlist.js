// A virtual list: a table of any number of rows that draws only those in
// view. Every row has one fixed height, so a spacer as tall as all of them
// gives the scroll bar its true size and the rows in view are found by
// arithmetic; scrolling redraws those few rows, once per frame. Columns
// sort on a click, as sortableTable's do (ui.js), and a new set of rows
// (a filter, a refresh) keeps the order chosen and the scroll position.
//
// It is a grid of divs with the table roles (a <table> cannot be given a
// spacer), its columns set by one `grid-template-columns` shared by the
// header and the rows.

import { h } from "./ui.js";

/** How many rows are drawn beyond each edge of the view. */
const OVERSCAN = 8;

const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

/**
 * `columns`: [{key, label, width, num?, value?(row), cell?(row), sort?(row), className?}].
 * `value`/`sort` give what the column sorts by: a number or a string;
 * null or undefined sort last whichever way. Returns {el, render(rows), destroy()}.
 */
export function virtualList(columns, { rowHeight = 34, sortKey = null, descending = false, rowAttrs, empty = "Nothing here.", label = "List" } = {}) {
  let rows = [];
  let order = [];
  let key = sortKey;
  let desc = descending;
  let frame = 0;
  const template = columns.map((c) => c.width ?? "minmax(6rem, 1fr)").join(" ");
  const head = h("div.vhead", { role: "row" });
  head.style.gridTemplateColumns = template;
  const spacer = h("div.vspacer");
  const body = h("div.vbody", { role: "rowgroup", tabindex: "0", "aria-label": `${label}: scroll for more rows` }, spacer);
  const none = h("p.muted.vempty", { hidden: true }, empty);
  const grid = h("div.vgrid", { role: "table", "aria-label": label }, head, body);
  const box = h("div.vlist", {}, h("div.vscroll", {}, grid), none);

  function header() {
    head.replaceChildren(...columns.map((col) => {
      const cell = h(`div.vcell.vth${col.num ? ".num" : ""}`, { role: "columnheader", class: col.className });
      if (col.sortable === false) {
        cell.textContent = col.label;
        return cell;
      }
      cell.setAttribute("aria-sort", key === col.key ? (desc ? "descending" : "ascending") : "none");
      cell.append(h("button.sort", {
        type: "button",
        dataset: { sort: col.key },
        onclick: () => {
          if (key === col.key) desc = !desc;
          else { key = col.key; desc = !!col.num; }
          header();
          sort();
          body.scrollTop = 0;
          draw();
        },
      }, col.label));
      return cell;
    }));
  }

  /** The rows' order under the column chosen: keys computed once per row, not per comparison. */
  function sort() {
    const col = columns.find((c) => c.key === key);
    if (!col) {
      order = rows;
      return;
    }
    const of = col.sort ?? col.value ?? ((row) => row[col.key]);
    const keyed = rows.map((row) => ({ row, v: of(row) }));
    const sign = desc ? -1 : 1;
    keyed.sort((a, b) => {
      const x = a.v;
      const y = b.v;
      const xNone = x === null || x === undefined || (typeof x === "number" && Number.isNaN(x));
      const yNone = y === null || y === undefined || (typeof y === "number" && Number.isNaN(y));
      if (xNone || yNone) return xNone === yNone ? 0 : xNone ? 1 : -1;
      const o = typeof x === "number" && typeof y === "number" ? x - y : collator.compare(String(x), String(y));
      return sign * o;
    });
    order = keyed.map((k) => k.row);
  }

  function draw() {
    frame = 0;
    const n = order.length;
    spacer.style.height = `${n * rowHeight}px`;
    // The header stays over its columns beside the rows' scroll bar.
    head.style.paddingRight = `${body.offsetWidth - body.clientWidth}px`;
    grid.setAttribute("aria-rowcount", String(n + 1));
    box.dataset.rows = String(n);
    none.hidden = n > 0;
    const first = Math.max(0, Math.floor(body.scrollTop / rowHeight) - OVERSCAN);
    const last = Math.min(n, Math.ceil((body.scrollTop + body.clientHeight) / rowHeight) + OVERSCAN);
    const block = h("div.vrows");
    block.style.transform = `translateY(${first * rowHeight}px)`;
    for (let i = first; i < last; i += 1) {
      const row = order[i];
      const tr = h("div.vrow", { role: "row", "aria-rowindex": i + 2, ...(rowAttrs ? rowAttrs(row) : {}) });
      tr.style.gridTemplateColumns = template;
      tr.style.height = `${rowHeight}px`;
      for (const c of columns) {
        const content = c.cell ? c.cell(row) : (c.value ? c.value(row) : row[c.key]);
        const td = h(`div.vcell${c.num ? ".num" : ""}`, { role: "cell", class: c.className });
        if (content instanceof Node) td.append(content);
        else if (Array.isArray(content)) td.append(...content.filter((x) => x !== null && x !== undefined));
        else td.textContent = content ?? "";
        tr.append(td);
      }
      block.append(tr);
    }
    spacer.replaceChildren(block);
  }

  body.addEventListener("scroll", () => {
    if (!frame) frame = requestAnimationFrame(draw);
  });
  // A list shown after it was drawn hidden (another tab) has its height only now.
  const resized = new ResizeObserver(() => { if (!frame) frame = requestAnimationFrame(draw); });
  resized.observe(body);
  header();
  return {
    el: box,
    /** New rows, in the order chosen, at the same scroll position. */
    render(newRows) {
      rows = newRows;
      sort();
      draw();
    },
    /** Stops following the list's size and scrolling (the page is left). */
    destroy() {
      resized.disconnect();
      cancelAnimationFrame(frame);
    },
  };
}
