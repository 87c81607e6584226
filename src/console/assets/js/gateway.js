// The console's connection to the gateway: one WebSocket speaking the
// protocol of docs/PROTOCOL.md, as any client does.
//
// - Requests are numbered from 0 after IDENTIFY and their replies carry
//   that `seq` (§4): `request()` resolves with the reply of its number.
// - Agents are asked in seed 003's envelope inside a MESSAGE (§13.1):
//   `ask()` resolves with the agent's `msg` of the same `rid`, or throws
//   an AgentError with its `reason`; a followed process's events go to
//   `onEvent` until its `exit`.
// - Services the console wants (telemetry, audit) are subscribed again
//   whenever they are created anew (an agent that reconnected) and after
//   the console itself reconnects, from the last position seen of their
//   history (§17): what was published meanwhile is replayed. When it could
//   not be (`recovered: false`, or no history to resume from, as a
//   cluster's), a `lost:NAME` event tells the page to fetch again what it
//   shows. The HELLO's `resume` secret (a console
//   without a token) is given back to take the name over at once.
// - Broadcasts (CLIENT_JOINED, CLIENT_LEFT, SERVICE_*) are dispatched as
//   `broadcast` events on the Gateway object, and a service's messages as
//   `service:NAME` events.

const PROTOCOL_VERSION = "0.2.0";
const SUBPROTOCOL = "ert-concierge";

/** A close code the console must not reconnect after: the token is no good. */
const FATAL = {
  4010: "this gateway needs a token: log in",
  4011: "the token is not valid: log in again",
  4013: "the session was revoked: log in again",
  4014: "the token does not allow this console's name",
  4015: "another connection took this console's name over",
};

/**
 * Whether a client object (or a MESSAGE origin) is a host: its roles and
 * user, which the gateway takes from the verified token, are a host
 * token's (role `agent`, issued to the name it holds; a host's ctl holds
 * another name). The tag `agent` is self-declared and proves nothing.
 */
export function isHost(client) {
  return !!client?.roles?.includes("agent") && client.user === client.name;
}

export class AgentError extends Error {
  constructor(reason, desc) {
    super(desc || reason);
    this.reason = reason;
  }
}

/** A failure as a line for a person: an agent's or the gateway's reason and sentence. */
export function failure(e) {
  return e instanceof AgentError ? `${e.reason}: ${e.message}` : e.message;
}

export class Gateway extends EventTarget {
  /**
   * @param {() => string} token the current token (it is refreshed while the console runs)
   * @param {string} name the client name to identify as
   */
  constructor(token, name) {
    super();
    this.token = token;
    this.name = name;
    this.ws = null;
    this.uuid = null;
    this.seq = 0;
    this.pending = new Map();
    this.rid = 1;
    this.asks = new Map();
    this.wanted = new Set();
    /** The last position seen of each wanted service's history. */
    this.positions = new Map();
    /** The wanted services subscribed on an earlier connection or before. */
    this.subscribedBefore = new Set();
    /** The services asked again after a hole in their offsets. */
    this.refilling = new Set();
    this.resume = null;
    this.up = false;
    this.stopped = false;
    this.backoff = 500;
    this.undecodable = 0;
  }

  start() {
    this.stopped = false;
    this.open();
  }

  stop() {
    this.stopped = true;
    if (this.ws) this.ws.close(1000, "logged out");
  }

  open() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/ws`, [SUBPROTOCOL]);
    this.ws = ws;
    ws.onopen = () => {
      ws.send(JSON.stringify({
        type: "IDENTIFY", name: this.name, version: PROTOCOL_VERSION,
        tags: ["console"], token: this.token(), resume: this.resume,
      }));
    };
    ws.onmessage = (event) => this.receive(event.data);
    ws.onclose = (event) => this.closed(ws, event);
    // A failed connect is followed by `close`, where it is handled.
    ws.onerror = () => {};
  }

  closed(ws, event) {
    if (ws !== this.ws) return;
    const wasUp = this.up;
    this.up = false;
    this.uuid = null;
    for (const [, p] of this.pending) p.reject(new Error("the connection to the gateway closed"));
    this.pending.clear();
    for (const [rid, a] of this.asks) {
      a.reject(new AgentError("disconnected", "the connection to the gateway closed"));
      this.asks.delete(rid);
    }
    const fatal = FATAL[event.code];
    this.emit("down", { code: event.code, reason: event.reason, fatal: fatal ?? null });
    if (this.stopped || fatal) return;
    // 4012 (token expired) reconnects at once: the console refreshes its
    // token before expiry, and the new connection takes the name over.
    const delay = event.code === 4012 || wasUp ? 200 : this.backoff;
    this.backoff = Math.min(this.backoff * 2, 10000);
    setTimeout(() => { if (!this.stopped) this.open(); }, delay);
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  receive(text) {
    let payload;
    try { payload = JSON.parse(text); } catch (e) { return this.skip(e); }
    if (typeof payload !== "object" || payload === null || Array.isArray(payload)) {
      return this.skip(new TypeError("not a JSON object"));
    }
    if (payload.type === "HELLO") {
      this.uuid = payload.uuid;
      this.resume = payload.resume ?? null;
      this.seq = 0;
      this.up = true;
      this.backoff = 500;
      this.emit("up", payload);
      this.refilling.clear();
      for (const service of this.wanted) this.subscribeNow(service);
      return;
    }
    if (typeof payload.seq === "number" && this.pending.has(payload.seq)) {
      const p = this.pending.get(payload.seq);
      this.pending.delete(payload.seq);
      p.resolve(payload);
      return;
    }
    if (payload.type === "MESSAGE") {
      this.message(payload);
      return;
    }
    if (payload.type === "SERVICE_CREATE_RESULT" && payload.successful && this.wanted.has(payload.service.name)) {
      this.subscribeNow(payload.service.name);
    }
    this.emit("broadcast", payload);
  }

  /**
   * A frame that is not a payload: skipped, never a reason to drop the
   * connection (docs/PROTOCOL.md, MESSAGE). Counted in `undecodable`; the
   * 1st, 2nd, 4th... are logged, so a flood of them logs a few lines.
   */
  skip(error) {
    this.undecodable += 1;
    if ((this.undecodable & (this.undecodable - 1)) === 0) {
      console.warn(`skipped a frame from the gateway that is not a payload (${this.undecodable} so far): ${error.message}`);
    }
  }

  message(payload) {
    const data = payload.data;
    const service = payload.target?.type === "SERVICE" ? payload.target.service : null;
    if (payload.position && this.positions.has(service) && !this.inOrder(service, payload.position)) return;
    if (payload.origin?.service) {
      this.emit(`service:${payload.origin.service.name}`, { data, origin: payload.origin });
      return;
    }
    const ask = data && typeof data === "object" ? this.asks.get(data.rid) : undefined;
    // Only the asked host answers its rid: any client may message this
    // console, and a reply from anyone else is not the agent's.
    if (ask && payload.origin?.name === ask.host) {
      if (data.event) {
        ask.onEvent?.(data);
        if (data.event === "exit") this.asks.delete(data.rid);
        return;
      }
      if ("msg" in data) {
        const msg = data.msg;
        clearTimeout(ask.timer);
        if (!ask.onEvent || (msg && msg.result === "error")) this.asks.delete(data.rid);
        if (msg && msg.result === "error") ask.reject(new AgentError(msg.reason, msg.desc));
        else ask.resolve(msg);
      }
    }
  }

  /** Sends a request and resolves with its reply. */
  request(payload) {
    if (!this.up) return Promise.reject(new Error("not connected to the gateway"));
    const seq = this.seq++;
    return new Promise((resolve, reject) => {
      this.pending.set(seq, { resolve, reject });
      this.ws.send(JSON.stringify(payload));
    });
  }

  /**
   * Asks the agent `host` for `req`; resolves with its reply's `msg`.
   * `onEvent` receives the events of a followed process (the ask stays
   * open until `exit`, or until `cancel(rid)`).
   */
  async ask(host, req, msg = {}, { onEvent, timeoutMs = 30000 } = {}) {
    const rid = this.rid++;
    const answer = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.asks.has(rid)) {
          this.asks.delete(rid);
          reject(new AgentError("timeout", `${host} did not answer ${req} within ${timeoutMs / 1000} s`));
        }
      }, timeoutMs);
      this.asks.set(rid, { host, resolve, reject, onEvent, timer });
    });
    // Its failure is seen below, or not at all when the MESSAGE itself failed.
    answer.catch(() => {});
    const forget = () => {
      clearTimeout(this.asks.get(rid)?.timer);
      this.asks.delete(rid);
    };
    let reply;
    try {
      reply = await this.request({ type: "MESSAGE", target: { type: "NAME", name: host }, data: { req, rid, msg } });
    } catch (e) {
      forget();
      throw new AgentError("disconnected", e.message);
    }
    if (reply.type !== "OK") {
      forget();
      const why = reply.type === "INVALID_NAME" ? `${host} is not connected` : (reply.desc ?? reply.type);
      throw new AgentError(reply.type === "INVALID_NAME" ? "offline" : reply.type.toLowerCase(), why);
    }
    const result = await answer;
    return { rid, msg: result };
  }

  /** Stops delivering a followed process's events to its `onEvent`. */
  cancel(rid) {
    this.asks.delete(rid);
  }

  /**
   * Whether a broadcast of `service` at `position` is to be shown, taking
   * its position: not one already seen (a replay that overlaps), nor one
   * after a hole in the offsets (broadcasts this replica did not get while
   * the owner's was cut off from Redis, docs/PROTOCOL.md §17.5), for which
   * the history is asked again from the last position seen: the replay
   * brings the missing ones, then this one, in order.
   */
  inOrder(service, position) {
    if (this.refilling.has(service)) return false;
    const seen = this.positions.get(service);
    if (seen && seen.epoch === position.epoch) {
      if (position.offset <= seen.offset) return false;
      if (position.offset > seen.offset + 1) {
        this.refilling.add(service);
        this.request({ type: "SELF_UNSUBSCRIBE", service }).catch(() => {});
        this.subscribeNow(service);
        return false;
      }
    }
    this.positions.set(service, position);
    return true;
  }

  /** Keeps the console subscribed to `service` until `unsubscribe`. */
  subscribe(service) {
    this.wanted.add(service);
    if (!this.positions.has(service)) this.positions.set(service, null);
    if (this.up) this.subscribeNow(service);
  }

  unsubscribe(service) {
    this.wanted.delete(service);
    this.positions.delete(service);
    this.subscribedBefore.delete(service);
    if (this.up) this.request({ type: "SELF_UNSUBSCRIBE", service }).catch(() => {});
  }

  /**
   * SELF_SUBSCRIBE from the last position seen. The result is handled
   * before the next frame (a replay or a live message) is read: recovered,
   * the replay moves the position; otherwise the result's position is
   * where the live messages start, and the page is told (`lost:NAME`)
   * when it had subscribed before.
   */
  subscribeNow(service) {
    const position = this.positions.get(service) ?? undefined;
    // INVALID_SERVICE: not created yet; its SERVICE_CREATE_RESULT retries.
    this.request({ type: "SELF_SUBSCRIBE", service, position }).then((reply) => {
      const refilled = this.refilling.delete(service);
      if (reply.type !== "SELF_SUBSCRIBE_RESULT" || !this.positions.has(service) || !reply.successful) return;
      if (reply.recovered !== true && reply.position) this.positions.set(service, reply.position);
      const again = this.subscribedBefore.has(service) || refilled;
      this.subscribedBefore.add(service);
      if (reply.recovered === false || (again && reply.recovered !== true)) {
        this.emit(`lost:${service}`, { position: reply.position ?? null });
      }
    }).catch(() => {});
  }
}
