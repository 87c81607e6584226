// How a host's presence and health read, wherever they are shown (the
// Fleet page's rows, a host's banner): presence as a badge (online; offline
// since when, the exact time on hover; never connected), the summary's
// numbers, health too old to trust marked as stale, and the CPU trend as a
// sparkline (inline SVG: no library, and only rows in view draw one).

import { FLEET } from "./requests.js";
import { ago, clock, duration, h } from "./ui.js";

/** The gateway's summary interval, as its last `hosts` answer said. */
let interval = FLEET.summary_interval;

/** Takes the `summary_interval` of a `hosts` answer. */
export function learnInterval(page) {
  if (page.summary_interval > 0) interval = page.summary_interval;
}

const SVG = "http://www.w3.org/2000/svg";

/** Whether a host's latest summary is older than three summary intervals. */
export function isStale(health, nowSecs = Date.now() / 1000) {
  return !!health && nowSecs - health.at > FLEET.stale_intervals * interval;
}

/** A presence badge: online, "offline 5 min ago" (the time on hover), "never connected". */
export function presenceBadge(record) {
  switch (record.presence) {
    case "online":
      return h("span.badge.ok.presence", { dataset: { presence: "online" } }, "online");
    case "never":
      return h("span.badge.none.presence.never", { dataset: { presence: "never" }, title: "expected (a host token was issued), never connected" }, "never connected");
    default:
      return h("span.badge.bad.presence", {
        dataset: { presence: "offline" },
        title: record.last_seen ? `last seen ${new Date(record.last_seen * 1000).toLocaleString()}` : "",
      }, record.last_seen ? `offline ${ago(record.last_seen)}` : "offline");
  }
}

/** The order presences sort in: online, then offline (most recently seen first), then never. */
export function presenceRank(record) {
  if (record.presence === "online") return 0;
  if (record.presence === "never") return 2e12;
  return 1e12 - (record.last_seen ?? 0);
}

/** A percentage as "12.5". */
export function percent(value) {
  return typeof value === "number" && isFinite(value) ? value.toFixed(1) : "–";
}

/** A load average as "0.42". */
export function load(value) {
  return typeof value === "number" && isFinite(value) ? value.toFixed(2) : "–";
}

/** A VPN handshake's age as "12 s", or "–" without one. */
export function vpnAge(seconds) {
  return typeof seconds === "number" ? duration(seconds) : "–";
}

/** One of the summary's numbers in a cell, greyed with its time on hover when stale. */
export function healthCell(record, text) {
  const health = record.health;
  if (!health) return h("span.muted", {}, "–");
  if (!isStale(health)) return text;
  return h("span.stale", { title: `stale: reported at ${clock(health.at)} (${ago(health.at)})` }, text);
}

/** The CPU trend (whole percents, oldest first) as a small SVG line. */
export function sparkline(trend, { width = 64, height = 18, stale = false } = {}) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", String(height));
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", `spark${stale ? " stale" : ""}`);
  svg.setAttribute("role", "img");
  if (!Array.isArray(trend) || trend.length === 0) {
    svg.setAttribute("aria-label", "no CPU trend");
    return svg;
  }
  svg.setAttribute("aria-label", `CPU trend: ${trend.join(", ")} %`);
  const step = trend.length > 1 ? width / (trend.length - 1) : 0;
  const y = (v) => (height - 1 - (Math.min(100, Math.max(0, v)) / 100) * (height - 2)).toFixed(1);
  const points = trend.map((v, i) => `${(i * step).toFixed(1)},${y(v)}`);
  if (trend.length === 1) points.push(`${width},${y(trend[0])}`);
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", points.join(" "));
  svg.append(line);
  return svg;
}
