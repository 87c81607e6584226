// The VPN: every WireGuard peer with its handshake age and bytes (for
// operators), and a config for a host (admins; everyone may make their
// own) to download or scan as a QR code. A config made here gives the
// name a new key pair, so the page says so before making one. A gateway
// without a VPN says so to any role (`vpn_disabled` from /vpn/peers): the
// page then offers no config, and says why, rather than fail after the
// confirmation.

import * as api from "./api.js";
import { ago, bytes, confirmAction, fill, h, sortableTable, toast } from "./ui.js";

export function title([name]) {
  return name ? `VPN: ${name}` : "VPN";
}

export function mount(app, root, [wanted]) {
  const operator = app.can("operator");
  const admin = app.can("admin");
  const cleanups = [];
  let peersNow = [];

  const problem = h("p.note", { id: "vpn-problem", hidden: true });
  const off = h("p.note", { id: "vpn-off", hidden: true });
  const server = h("p.muted", { id: "vpn-server" });
  const peers = sortableTable([
    { key: "name", label: "Peer" },
    { key: "ipv4", label: "IPv4" },
    { key: "ipv6", label: "IPv6", className: "hide-narrow" },
    { key: "endpoint", label: "Endpoint", className: "hide-narrow", value: (p) => p.endpoint ?? "–" },
    { key: "latest_handshake", label: "Handshake", num: true, value: (p) => p.latest_handshake, cell: (p) => ago(p.latest_handshake) },
    { key: "rx_bytes", label: "Received", num: true, cell: (p) => bytes(p.rx_bytes) },
    { key: "tx_bytes", label: "Sent", num: true, cell: (p) => bytes(p.tx_bytes) },
    { key: "state", label: "State", value: (p) => (p.valid ? (p.active ? "active" : "idle") : "expired"),
      cell: (p) => h(`span.badge.${p.valid ? (p.active ? "ok" : "") : "bad"}`, {}, p.valid ? (p.active ? "active" : "idle") : "token expired") },
    { key: "actions", label: "", sortable: false, cell: (p) => admin ? h("button.small.danger", { type: "button", dataset: { revoke: p.name }, onclick: () => revoke(p) }, "Revoke") : null },
  ], { sortKey: "name", rowAttrs: (p) => ({ dataset: { peer: p.name } }), empty: "No peers yet." });

  const nameInput = h("input", { id: "conf-name", value: wanted ?? (admin ? "" : app.info.name), list: "conf-names", "aria-label": "Config for", readonly: !admin, autocomplete: "off" });
  const names = h("datalist", { id: "conf-names" });
  const result = h("div", { id: "conf-result" });
  const form = h("form", { id: "conf-form", class: "row" },
    h("label", { for: "conf-name" }, "Config for"), nameInput, names,
    h("button", { type: "submit", id: "conf-make" }, "Make config"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = nameInput.value.trim() || app.info.name;
    const known = peersNow.find((p) => p.name === name);
    const warning = known
      ? `${name} already has a peer (${known.ipv4}). A new config gives it a new key pair: a host that keeps its own key (agent --vpn) loses its tunnel until it fetches again.`
      : `This makes a key pair for ${name} and a config with its private key. Keep the file secret.`;
    if (!(await confirmAction(`Make a config for ${name}?`, warning, "Make config"))) return;
    try {
      const conf = await api.vpnConf(app.token, name === app.info.name ? null : name);
      showConf(conf);
      if (operator) loadPeers();
    } catch (e) {
      if (e.reason === "vpn_disabled") return vpnOff(e.message);
      fill(result, h("p.error", { role: "alert" }, `${name}: ${e.message}`));
    }
  });

  /** No VPN on this gateway: no config is offered, and the page says why. */
  let disabled = false;
  function vpnOff(why) {
    disabled = true;
    form.hidden = true;
    result.replaceChildren();
    off.hidden = false;
    off.textContent = `No config is offered: ${why}.`;
  }

  // The object URLs of the config shown (a private key): dropped with it.
  let confUrls = [];
  const dropConfUrls = () => {
    confUrls.forEach((u) => URL.revokeObjectURL(u));
    confUrls = [];
  };
  cleanups.push(dropConfUrls);
  function showConf(conf) {
    dropConfUrls();
    const url = URL.createObjectURL(new Blob([conf.conf_data], { type: "text/plain" }));
    const qr = conf.qr_svg ? URL.createObjectURL(new Blob([conf.qr_svg], { type: "image/svg+xml" })) : null;
    confUrls = [url, qr].filter(Boolean);
    fill(result,
      h("div.grid", {},
        h("div", {},
          h("h3", {}, `${conf.name}.conf`),
          h("pre.conf", { id: "conf-text" }, conf.conf_data),
          h("a.button", { href: url, download: `${conf.name}.conf`, id: "conf-download" }, "Download config")),
        qr ? h("div", {}, h("h3", {}, "QR code"), h("img.qr", { src: qr, alt: `QR code of the WireGuard config of ${conf.name}`, id: "conf-qr" }),
          h("p.muted", {}, "Scan with the WireGuard app.")) : h("p.muted", {}, "Too long for a QR code.")));
    toast(`Config for ${conf.name} made`);
  }

  async function revoke(peer) {
    if (!(await confirmAction(`Revoke ${peer.name}?`, `Remove ${peer.name}'s peer (${peer.ipv4}) from the server and free its addresses. Its tunnel stops within a second.`, "Revoke"))) return;
    try {
      await app.gw.ask("concierge", "vpn_revoke", { name: peer.name });
      toast(`${peer.name} revoked`);
    } catch (e) {
      toast(`Revoke ${peer.name}: ${e.message}`, true);
    }
    loadPeers();
  }

  // Asked of every role: an operator is shown the peers, anyone whether
  // there is a VPN at all (a 403 to a lesser role means there is one).
  async function loadPeers() {
    try {
      const status = await api.vpnPeers(app.token);
      if (!operator) return;
      peersNow = status.peers;
      problem.hidden = !status.problem;
      problem.textContent = status.problem ? `Interface: ${status.problem}` : "";
      server.textContent = `Interface ${status.interface ?? "none"}, server key ${status.server_public_key}, ${status.server_addresses.join(", ")}`;
      peers.render(status.peers);
      fill(names, [...new Set([...status.peers.map((p) => p.name), ...app.agents().map((a) => a.name)])].map((n) => h("option", { value: n })));
    } catch (e) {
      if (e.reason === "vpn_disabled") vpnOff(e.message);
      if (!operator) return;
      problem.hidden = false;
      problem.textContent = `Peers: ${e.message}`;
      server.textContent = "";
      peers.render([]);
    }
  }

  fill(root,
    operator ? h("div.card", {}, h("h1", {}, "VPN peers"), problem, server, peers.el) : h("h1", {}, "VPN"),
    h("div.card", {},
      h("h2", {}, admin ? "A config for a host" : "Your config"),
      admin ? null : h("p.muted", {}, "Only an admin may make configs for other names."),
      off, form, result));
  loadPeers();
  if (operator) {
    const t = setInterval(() => { if (!disabled) loadPeers(); }, 5000);
    cleanups.push(() => clearInterval(t));
  }
  return () => cleanups.forEach((c) => c());
}
