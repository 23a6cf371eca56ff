// The two HTTP services: auth (its own origin) and the backend (this page's origin).
// The access token lives in memory only; the refresh token in this tab's
// sessionStorage, so a reload keeps the session (see docs/security.md).

const REFRESH_KEY = 'agentchat.refresh_token';

export class ApiError extends Error {
  constructor(status, problem, retryAfter) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.code = problem?.code ?? (status ? 'http_error' : 'network_error');
    this.problem = problem;
    this.retryAfter = retryAfter;
  }
}

async function request(url, { method = 'GET', body, token } = {}) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, { detail: `cannot reach ${new URL(url, location.href).origin}` });
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { detail: text }; }
  if (!response.ok) throw new ApiError(response.status, data, response.headers.get('Retry-After'));
  return data;
}

export async function loadConfig() {
  return request('/app-config.json');
}

export class Session {
  constructor(authUrl) {
    this.authUrl = authUrl.replace(/\/$/, '');
    this.accessToken = null;
    this.user = null;
    this.onSignedOut = () => {};
    this._refreshing = null;
    this._timer = null;
  }

  get signedIn() { return this.accessToken !== null; }

  async register(email, password, displayName) {
    const body = { email, password };
    if (displayName) body.display_name = displayName;
    return request(`${this.authUrl}/auth/register`, { method: 'POST', body });
  }

  async login(email, password) {
    const answer = await request(`${this.authUrl}/auth/login`, { method: 'POST', body: { email, password } });
    this._keep(answer);
    this.user = answer.user;
  }

  /** After a reload: trade the tab's refresh token for a new pair. */
  async restore() {
    if (!sessionStorage.getItem(REFRESH_KEY)) return false;
    try {
      await this.refresh();
      this.user = (await request(`${this.authUrl}/auth/me`, { token: this.accessToken })).user;
      return true;
    } catch (error) {
      if (error.status === 0) clearTimeout(this._timer); // auth unreachable: the token stays for a later reload
      else this._forget();
      return false;
    }
  }

  /** A new access token; one refresh at a time (the refresh token rotates). */
  refresh() {
    this._refreshing ??= this._refresh().finally(() => { this._refreshing = null; });
    return this._refreshing;
  }

  async _refresh() {
    const token = sessionStorage.getItem(REFRESH_KEY);
    if (!token) throw new ApiError(401, { code: 'unauthorized', detail: 'not signed in' });
    try {
      this._keep(await request(`${this.authUrl}/auth/refresh`, { method: 'POST', body: { refresh_token: token } }));
    } catch (error) {
      if (error.status === 401) this.signOut();
      else this._schedule(5); // auth unreachable: keep the token and try again soon
      throw error;
    }
  }

  async logout() {
    const token = this.accessToken;
    this._forget();
    try { await request(`${this.authUrl}/auth/logout`, { method: 'POST', body: {}, token }); } catch { /* revoked or unreachable: signed out here either way */ }
    this.onSignedOut();
  }

  signOut() {
    if (!this.signedIn && !sessionStorage.getItem(REFRESH_KEY)) return;
    this._forget();
    this.onSignedOut();
  }

  /** A backend call; an expired access token is refreshed once and the call retried. */
  async api(path, options = {}) {
    try {
      return await request(path, { ...options, token: this.accessToken });
    } catch (error) {
      if (error.status !== 401) throw error;
      await this.refresh();
      return request(path, { ...options, token: this.accessToken });
    }
  }

  /** Every page of a cursor-paginated list. */
  async all(path) {
    const items = [];
    let cursor = null;
    do {
      const sep = path.includes('?') ? '&' : '?';
      const page = await this.api(`${path}${sep}limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      items.push(...page.items);
      cursor = page.next_cursor;
    } while (cursor);
    return items;
  }

  _keep(pair) {
    this.accessToken = pair.access_token;
    sessionStorage.setItem(REFRESH_KEY, pair.refresh_token);
    this._schedule(Math.max(30, pair.expires_in * 0.8));
  }

  _schedule(seconds) {
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this.refresh().catch(() => {}), seconds * 1000);
  }

  _forget() {
    clearTimeout(this._timer);
    this.accessToken = null;
    this.user = null;
    sessionStorage.removeItem(REFRESH_KEY);
  }
}
