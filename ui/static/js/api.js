// The REST calls the page makes. The login cookie (HttpOnly, set by the
// server) authenticates them; the page never reads or keeps a token.

export class HTTPError extends Error {
  constructor(status, message, retryAfter) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

async function call(method, path, {body, headers = {}} = {}) {
  const init = {method, headers: {...headers}, credentials: 'same-origin', cache: 'no-store'};
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new HTTPError(0, 'cannot reach changecast (is it running?)');
  }
  if (resp.status === 204) return null;
  let data = null;
  const text = await resp.text();
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!resp.ok) {
    const msg = (data && data.error) || `${resp.status} ${resp.statusText}`;
    throw new HTTPError(resp.status, msg, Number(resp.headers.get('Retry-After')) || 0);
  }
  return data;
}

// session returns who is signed in, or throws HTTPError 401.
export const session = () => call('GET', '/api/v1/auth/session');

// login signs in with a password; the answer's token is dropped, the
// cookie it comes with is what the page uses.
export async function login(username, password) {
  await call('POST', '/api/v1/auth/login', {body: {username, password}});
  return session();
}

// exchangeToken trades a pasted token for the login cookie.
export const exchangeToken = (token) =>
  call('POST', '/api/v1/auth/session', {headers: {Authorization: `Bearer ${token}`}});

// redeemLink redeems a one-time sign-in link's code.
export const redeemLink = (code) => call('POST', '/api/v1/auth/link', {body: {code}});

export const logout = () => call('POST', '/api/v1/auth/logout');

export const listEvents = (pagesize = 100) =>
  call('GET', `/api/v1/events?pagesize=${pagesize}&sort=created_at&order=desc`);

export const setEventStatus = (id, status) =>
  call('PUT', `/api/v1/events/${encodeURIComponent(id)}/status`, {body: {status}});
