// The admin API client of the dashboard. One place knows where the token lives and how it is sent.
//
// The token is kept in sessionStorage: it lasts while the tab is open and is gone when it closes,
// and it is never written into a URL (URLs end up in history, logs and Referer headers). Requests
// carry it as `Authorization: Bearer`; the WebSocket stream, which browsers cannot give headers,
// as a subprotocol (see streamProtocols).

const TOKEN_KEY = 'zoomhook.admin_token';

/** The signed-in admin token, or null. */
export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** An answer of the API that was not a success: its HTTP status and the `{error, detail}` body. */
export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

/** Builds `/api/v1{path}?query`, leaving out empty query values. */
export function apiUrl(path, query) {
  const url = new URL(`/api/v1${path}`, location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(key, String(value));
  }
  return url;
}

/**
 * Calls the admin API and returns the parsed JSON (null for an empty answer). Throws ApiError on
 * a non-2xx answer; a 401 also tells the app (event `zoomhook:unauthorized`) to ask for a token.
 */
export async function api(path, { method = 'GET', query, body, signal } = {}) {
  const headers = { Accept: 'application/json' };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(apiUrl(path, query), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      credentials: 'omit',
      cache: 'no-store',
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', 'zoomhook did not answer (is the server running?)');
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    if (response.status === 401) window.dispatchEvent(new CustomEvent('zoomhook:unauthorized'));
    throw new ApiError(response.status, data && data.error, (data && data.detail) || text.slice(0, 200));
  }
  return data;
}

/**
 * Whether the server accepts `token`, asked before it is stored: true, false (401), or an
 * ApiError for anything else (server down, store failing).
 */
export async function tokenAccepted(token) {
  let response;
  try {
    response = await fetch(apiUrl('/stats'), {
      headers: { Accept: 'application/json', Authorization: `Bearer ${token}` },
      credentials: 'omit',
      cache: 'no-store',
    });
  } catch {
    throw new ApiError(0, 'network', 'zoomhook did not answer (is the server running?)');
  }
  if (response.status === 401) return false;
  if (!response.ok) throw new ApiError(response.status, 'unavailable', `the server answered HTTP ${response.status}`);
  return true;
}

/** Every page of a list endpoint, up to `max` items. */
export async function apiAll(path, query = {}, max = 1000) {
  const items = [];
  let cursor = null;
  do {
    const page = await api(path, { query: { ...query, cursor, limit: Math.min(500, max) } });
    items.push(...(page.data || []));
    cursor = page.next_cursor;
  } while (cursor && items.length < max);
  return items.slice(0, max);
}

/** The WebSocket URL of `/api/v1/stream`: no token in it (see streamProtocols). */
export function streamUrl(query) {
  const url = apiUrl('/stream', query);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.toString();
}

/**
 * The subprotocols to open the stream with. A browser WebSocket cannot carry an Authorization
 * header, so the token travels as the subprotocol `zoomhook.bearer.<base64url(token)>` beside
 * `zoomhook.v1`, the one the server selects: never in a URL, where it could reach a proxy's log
 * or the browser's history.
 */
export function streamProtocols() {
  const token = getToken() || '';
  const bytes = new TextEncoder().encode(token);
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  const encoded = btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  return ['zoomhook.v1', `zoomhook.bearer.${encoded}`];
}
