// The console's entry point: the login, the session (token kept in this
// tab's sessionStorage and refreshed before it expires), the fleet as the
// gateway reports it, and the router that shows one view at a time.

import * as api from "./api.js";
import { Gateway, isHost } from "./gateway.js";
import { clearToasts, fill, h, toast, useSettings } from "./ui.js";
import * as fleet from "./fleet.js";
import * as host from "./host.js";
import * as vpn from "./vpn.js";
import * as audit from "./audit.js";
import * as jobs from "./jobs.js";
import * as job from "./job.js";
import * as alerts from "./alerts.js";

const TOKEN_KEY = "concierge.token";
const IMPLIED = { admin: ["admin", "operator", "viewer"], operator: ["operator", "viewer"], viewer: ["viewer"], agent: ["agent"] };

/** What every view reaches: the connection, who is logged in, the fleet. */
class App extends EventTarget {
  constructor() {
    super();
    this.gw = null;
    this.token = null;
    this.info = null;
    this.clients = new Map();
    this.services = new Map();
    /** Whether the clients and services were read on this connection. */
    this.loaded = false;
    this.refreshTimer = null;
  }

  /** Whether the logged-in role implies `role` (viewer, operator, admin). */
  can(role) {
    return (IMPLIED[this.info?.role] ?? []).includes(role);
  }

  /** The hosts: clients whose verified token is a host's (a tag proves nothing). */
  agents() {
    return [...this.clients.values()].filter(isHost);
  }

  clientByName(name) {
    for (const c of this.clients.values()) if (c.name === name) return c;
    return null;
  }

  /**
   * Tells the pages the fleet changed: `detail` is the broadcast that
   * changed it (CLIENT_JOINED…), `{type: "reload"}` after every client and
   * service was read again, `{type: "services"}` after the services were.
   */
  changed(detail) {
    this.dispatchEvent(new CustomEvent("fleet", { detail }));
  }

  async begin(token) {
    const info = await api.tokenInfo(token);
    this.token = token;
    this.info = info;
    sessionStorage.setItem(TOKEN_KEY, token);
    this.scheduleRefresh(info.validity);
    const name = consoleName(info.name);
    this.gw = new Gateway(() => this.token, name);
    this.gw.addEventListener("up", () => this.reload());
    this.gw.addEventListener("down", (e) => this.down(e.detail));
    this.gw.addEventListener("broadcast", (e) => this.broadcast(e.detail));
    this.gw.start();
    showSession(this);
  }

  end(message) {
    clearTimeout(this.refreshTimer);
    this.gw?.stop();
    this.gw = null;
    this.token = null;
    this.info = null;
    this.clients.clear();
    this.services.clear();
    sessionStorage.removeItem(TOKEN_KEY);
    // The next person at this screen starts from an empty form.
    document.getElementById("login-form").reset();
    showLogin(message);
  }

  /** Refreshes the token at four fifths of its validity. */
  scheduleRefresh(validitySecs) {
    clearTimeout(this.refreshTimer);
    const ms = Math.max(5, validitySecs * 0.8) * 1000;
    this.refreshTimer = setTimeout(async () => {
      try {
        const fresh = await api.refresh(this.token);
        this.token = fresh.token;
        sessionStorage.setItem(TOKEN_KEY, fresh.token);
        this.scheduleRefresh(fresh.validity);
      } catch (e) {
        toast(`The session could not be extended: ${e.message}`, true);
      }
    }, Math.min(ms, 2 ** 31 - 1));
  }

  async reload() {
    linkState(true);
    // The user's units (USER_SETTINGS_FETCH) before the pages draw sizes;
    // without them, the gateway's defaults.
    try {
      const reply = await this.gw.request({ type: "USER_SETTINGS_FETCH" });
      useSettings(reply.settings);
    } catch {
      useSettings(null);
    }
    try {
      const [clients, services] = await Promise.all([
        this.gw.request({ type: "CLIENT_FETCH_ALL" }),
        this.gw.request({ type: "SERVICE_FETCH_ALL" }),
      ]);
      this.clients = new Map(clients.clients.map((c) => [c.uuid, c]));
      this.services = new Map(services.services.map((s) => [s.name, s]));
      this.loaded = true;
      this.changed({ type: "reload" });
    } catch (e) {
      toast(`The fleet could not be read: ${e.message}`, true);
    }
  }

  down({ code, reason, fatal }) {
    this.loaded = false;
    linkState(false, reason || `closed (${code})`);
    if (fatal) this.end(`${fatal} (${code}${reason ? `: ${reason}` : ""})`);
  }

  broadcast(p) {
    switch (p.type) {
      case "CLIENT_JOINED":
        this.clients.set(p.client.uuid, p.client);
        break;
      case "CLIENT_LEFT":
        this.clients.delete(p.client.uuid);
        break;
      case "SERVICE_CREATE_RESULT":
        if (p.successful) this.services.set(p.service.name, p.service);
        break;
      case "SERVICE_DELETE_RESULT":
        this.services.delete(p.service.name);
        break;
      case "SERVICE_CLIENT_SUBSCRIBED":
      case "SERVICE_CLIENT_UNSUBSCRIBED":
        this.services.set(p.service.name, p.service);
        break;
      default:
        return;
    }
    this.changed(p);
  }

  /** Re-reads the services (subscriber counts change without a broadcast to us). */
  async refreshServices() {
    if (!this.gw?.up) return;
    try {
      const reply = await this.gw.request({ type: "SERVICE_FETCH_ALL" });
      this.services = new Map(reply.services.map((s) => [s.name, s]));
      this.changed({ type: "services" });
    } catch { /* reconnecting: reload() reads them again */ }
  }
}

/** `alice` → `alice_console_3f2a1b`: a token for `alice` allows `alice_*`, and each tab has its own. */
function consoleName(name) {
  const suffix = Array.from(crypto.getRandomValues(new Uint8Array(3)), (b) => b.toString(16).padStart(2, "0")).join("");
  const full = `${name}_console_${suffix}`;
  return full.length <= 64 ? full : `${name.slice(0, 64 - suffix.length - 1)}_${suffix}`;
}

function linkState(up, why = "") {
  const el = document.getElementById("link-state");
  el.className = `state ${up ? "up" : "down"}`;
  el.textContent = up ? "connected" : `reconnecting${why ? ` (${why})` : ""}`;
}

function showLogin(message) {
  document.getElementById("nav").hidden = true;
  document.getElementById("who").hidden = true;
  fill(document.getElementById("page"));
  document.getElementById("login").hidden = false;
  const error = document.getElementById("login-error");
  error.hidden = !message;
  error.textContent = message ?? "";
  document.getElementById("login-user").focus();
}

function showSession(app) {
  document.getElementById("login").hidden = true;
  document.getElementById("nav").hidden = false;
  document.getElementById("who").hidden = false;
  document.getElementById("who-name").textContent = `${app.info.user} (${app.info.role})`;
  linkState(false, "connecting");
  route(app);
}

const VIEWS = { fleet, host, jobs, job, alerts, vpn, audit };
/** The section a page belongs to in the navigation: a host is the fleet's, a job the jobs'. */
const SECTION = { host: "fleet", job: "jobs" };
let unmount = null;

function route(app) {
  if (!app.info) return;
  const [section = "fleet", ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  const view = VIEWS[section] ?? fleet;
  for (const link of document.querySelectorAll("#nav a")) {
    const current = VIEWS[section] ? (SECTION[section] ?? section) : "fleet";
    if (link.dataset.section === current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  unmount?.();
  clearToasts();
  const page = document.getElementById("page");
  fill(page);
  const container = h("div");
  page.append(container);
  unmount = view.mount(app, container, rest.map(decodeURIComponent));
  document.title = `${view.title(rest.map(decodeURIComponent))} · Concierge`;
}

const app = new App();
window.concierge = app;

document.getElementById("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = document.getElementById("login-submit");
  const error = document.getElementById("login-error");
  button.disabled = true;
  error.hidden = true;
  try {
    const user = document.getElementById("login-user").value.trim();
    const password = document.getElementById("login-password").value;
    if (!user || !password) throw new Error("Give a user and a password.");
    const { token } = await api.login(user, password);
    document.getElementById("login-password").value = "";
    await app.begin(token);
  } catch (e) {
    error.textContent = e.message;
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
});
document.getElementById("logout").addEventListener("click", () => app.end());
window.addEventListener("hashchange", () => {
  route(app);
  document.getElementById("view").focus({ preventScroll: true });
});

const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) {
  app.begin(saved).catch((e) => app.end(e.message));
} else {
  showLogin();
}
