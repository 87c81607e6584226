// The gateway's HTTP endpoints the console uses: logging in and keeping
// the token fresh (PROTOCOL §9.1) and the VPN (§14.1). Every failure is
// thrown as an ApiError with the gateway's `reason` and a sentence.

export class ApiError extends Error {
  constructor(status, reason, desc) {
    super(desc || reason || `HTTP ${status}`);
    this.status = status;
    this.reason = reason;
  }
}

async function call(path, { method = "GET", token, body } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
  } catch (e) {
    throw new ApiError(0, "unreachable", `the gateway cannot be reached (${e.message})`);
  }
  const text = await resp.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* a plain-text answer */ }
  if (!resp.ok || (json && json.success === false)) {
    const reason = json?.reason ?? null;
    const desc = json?.desc ?? (json ? null : text.trim());
    throw new ApiError(resp.status, reason, desc || explain(resp.status, reason, json));
  }
  return json;
}

/** What a login or token failure means, for a person. */
function explain(status, reason, json) {
  switch (reason) {
    case "user_invalid":
    case "password_invalid":
      return "Wrong user or password.";
    case "locked_out":
      return `Too many failed logins: try again in ${json?.retry_after ?? "a few"} seconds.`;
    case "token_expired":
      return "The session expired: log in again.";
    case "token_revoked":
      return "The session was revoked: log in again.";
    default:
      return reason ? `${reason} (HTTP ${status})` : `HTTP ${status}`;
  }
}

/** `POST /auth/token`: `{token, validity}`. */
export function login(username, password) {
  return call("/auth/token", { method: "POST", body: { username, password } });
}

/** `GET /auth/token`: the token's `{validity, user, name, role}`. */
export function tokenInfo(token) {
  return call("/auth/token", { token });
}

/** `POST /auth/token/refresh`: a new `{token, validity}`. */
export function refresh(token) {
  return call("/auth/token/refresh", { method: "POST", token });
}

/** `GET /vpn/peers`: the interface and every peer (operators). */
export function vpnPeers(token) {
  return call("/vpn/peers", { token });
}

/** `GET /vpn/conf?format=json`: a config for `name` and its QR code. */
export function vpnConf(token, name) {
  const query = new URLSearchParams({ format: "json" });
  if (name) query.set("name", name);
  return call(`/vpn/conf?${query}`, { token });
}
