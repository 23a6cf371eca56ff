// The live connection: `/ws` with the contract's protocol. It reconnects by itself
// (capped exponential backoff with jitter) and resumes after the last event it
// delivered, so the page sees every event of the user once and in order. Before the
// socket's authorization expires (80 % into its lifetime) it renews it on the open
// socket with a fresh access token (`reauth`), so a long session never reconnects.

const BACKOFF_BASE_MS = 250;
const BACKOFF_CAP_MS = 8000;
const PING_EVERY_MS = 25000;
const PONG_WITHIN_MS = 10000;
const RENEW_AT = 0.8; // of the authorization's remaining lifetime
const RENEW_MIN_MS = 1000;

export class LiveSocket {
  /**
   * url: the `/ws` address; token(fresh): an access token (fresh: refreshed first);
   * onEvent(event): each agent event once, in seq order;
   * onStatus({state, ...}): connecting | connected | reconnecting | resumed | resync | refused | offline;
   * onResync(): the history was lost or skipped: reload state over REST;
   * onFrame(frame): other frames (error, run_accepted, cancel_accepted, pong);
   * onExpiry(expiresAt): when the socket's authorization now ends (epoch seconds).
   */
  constructor({ url, token, onEvent, onStatus, onResync, onFrame, onExpiry = () => {} }) {
    Object.assign(this, { url, token, onEvent, onStatus, onResync, onFrame, onExpiry });
    this.ws = null;
    this.epoch = null; // null until the first welcome
    this.delivered = 0; // the highest seq handed to onEvent in this epoch
    this.held = new Map(); // events past a gap, waiting for it to fill
    this.attempts = 0;
    this.stopped = true;
    this.freshToken = false;
    this.duplicates = 0;
    this.renewals = 0;
    this.deadline = 0; // performance.now() when the authorization ends
    this._timers = {};
    this._online = () => { if (this._timers.retry) this._retryNow(); };
  }

  start() {
    this.stopped = false;
    addEventListener('online', this._online);
    this._connect();
  }

  stop() {
    this.stopped = true;
    removeEventListener('online', this._online);
    this._clearTimers();
    const ws = this.ws;
    this.ws = null;
    ws?.close(1000, 'signed out');
    this._status('offline');
  }

  /** Send a client message; false when not connected. */
  send(message) {
    if (this.ws?.readyState !== WebSocket.OPEN || !this.authenticated) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  async _connect() {
    this._status(this.attempts ? 'reconnecting' : 'connecting', { attempt: this.attempts });
    let token;
    try {
      token = await this.token(this.freshToken);
    } catch {
      if (!this.stopped) this._retry(); // auth unreachable: try again later
      return;
    }
    if (this.stopped) return;
    this.freshToken = false;
    this.authenticated = false;
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => { // after the first connection, resume rides in the auth message
      const resume = this.epoch === null ? undefined : { after: this.delivered, epoch: this.epoch };
      ws.send(JSON.stringify({ type: 'auth', token, resume }));
    };
    ws.onmessage = (message) => { if (ws === this.ws) this._frame(JSON.parse(message.data)); };
    ws.onclose = (event) => { if (ws === this.ws) this._closed(event); };
  }

  _frame(frame) {
    this._timers.pong = clearTimeout(this._timers.pong);
    switch (frame.type) {
      case 'welcome': return this._welcome(frame);
      case 'resumed': return this._resumed(frame);
      case 'resync_required': return this._resync(frame.epoch, frame.last_seq);
      case 'reauthed': return this._authorized(frame);
      default:
        if (frame.type === 'error' && String(frame.request_id).startsWith('reauth-')) return this._renewFailed();
        if (typeof frame.seq === 'number' && frame.run_id) return this._event(frame);
        return this.onFrame(frame);
    }
  }

  _welcome(frame) {
    this.authenticated = true;
    this.attempts = 0;
    this._keepAlive();
    this._authorized(frame);
    if (this.epoch === null) { // the page's first connection: live from here on
      this.epoch = frame.epoch;
      this.delivered = frame.last_seq;
      this.ws.send(JSON.stringify({ type: 'ping' })); // a first message releases live delivery at once
      this._status('connected', { seq: this.delivered });
    } else { // the server replays what was missed (asked in auth), then live
      this._status('resuming', { seq: this.delivered });
    }
  }

  /** The authorization holds until frame.expires_at: renew it 80 % of the way there. */
  _authorized(frame) {
    const lifetimeMs = (frame.expires_in ?? (frame.expires_at - Date.now() / 1000)) * 1000;
    this.deadline = performance.now() + lifetimeMs;
    this.onExpiry(frame.expires_at);
    this._renewIn(lifetimeMs * RENEW_AT);
  }

  _renewIn(ms) {
    clearTimeout(this._timers.renew);
    this._timers.renew = setTimeout(() => this._renew(), Math.max(RENEW_MIN_MS, ms));
  }

  async _renew() {
    const ws = this.ws;
    let token;
    try {
      token = await this.token(true);
    } catch {
      return this._renewFailed(); // auth unreachable: try again while time remains
    }
    if (ws !== this.ws || this.stopped) return;
    this.renewals += 1;
    this.send({ type: 'reauth', token, request_id: `reauth-${this.renewals}` });
  }

  /** Try again halfway to the deadline; past it the server closes (4401) and the
   * socket reconnects with a fresh token, resuming where it was. */
  _renewFailed() {
    const left = this.deadline - performance.now();
    if (left > 2 * RENEW_MIN_MS) this._renewIn(left / 2);
  }

  _resumed(frame) {
    this.epoch = frame.epoch;
    if (this.held.size) { // a gap the history could not fill: the page's state is stale
      this._resync(frame.epoch, Math.max(frame.last_seq, ...this.held.keys()));
      return;
    }
    this._status('resumed', { seq: this.delivered });
  }

  _resync(epoch, lastSeq) {
    this.epoch = epoch;
    this.delivered = lastSeq;
    this.held.clear();
    this._status('resync', { seq: lastSeq });
    this.onResync();
  }

  _event(event) {
    if (event.epoch !== this.epoch) { // the server announces a new epoch first; be safe anyway
      this._resync(event.epoch, event.seq - 1);
    }
    if (event.seq <= this.delivered || this.held.has(event.seq)) {
      this.duplicates += 1;
      return;
    }
    if (event.seq > this.delivered + 1) { // a gap: hold it, ask for what is missing
      this.held.set(event.seq, event);
      if (this.held.size === 1) this.send({ type: 'resume', after: this.delivered, epoch: this.epoch });
      return;
    }
    this._deliver(event);
    while (this.held.has(this.delivered + 1)) {
      const next = this.held.get(this.delivered + 1);
      this.held.delete(next.seq);
      this._deliver(next);
    }
  }

  _deliver(event) {
    this.delivered = event.seq;
    this.onEvent(event);
  }

  _closed(event) {
    this.ws = null;
    this.authenticated = false;
    this._clearTimers();
    if (this.stopped) return;
    if (event.code === 4403) { // the page's origin is not allowed: retrying cannot help
      this._status('refused', { reason: event.reason || 'origin not allowed' });
      return;
    }
    if (event.code === 4401) this.freshToken = true;
    this._retry();
  }

  _retry() {
    const delay = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** this.attempts) * (0.5 + Math.random() / 2);
    this.attempts += 1;
    this._status('reconnecting', { attempt: this.attempts, delay });
    this._timers.retry = setTimeout(() => this._retryNow(), delay);
  }

  _retryNow() {
    this._timers.retry = clearTimeout(this._timers.retry);
    this._connect();
  }

  /** An application ping now and then; no answer in time means a dead link. */
  _keepAlive() {
    clearInterval(this._timers.ping);
    this._timers.ping = setInterval(() => {
      if (!this.send({ type: 'ping' })) return;
      const ws = this.ws;
      this._timers.pong = setTimeout(() => {
        if (ws !== this.ws) return;
        ws.close(4000, 'no pong');
        this._closed({ code: 4000 });
      }, PONG_WITHIN_MS);
    }, PING_EVERY_MS);
  }

  _clearTimers() {
    clearTimeout(this._timers.retry);
    clearTimeout(this._timers.pong);
    clearTimeout(this._timers.renew);
    clearInterval(this._timers.ping);
    this._timers = {};
  }

  _status(state, details = {}) {
    this.state = state;
    this.onStatus({ state, epoch: this.epoch, ...details });
  }
}
