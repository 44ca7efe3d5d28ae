// The public JSON APIs, and the session's secret.  The secret lives in
// sessionStorage only: it goes when the tab closes or on sign-out, and is
// never written to localStorage or a cookie.

const STORE = 'nebula.session';

export function session() {
  try { return JSON.parse(sessionStorage.getItem(STORE)) || null; } catch (e) { return null; }
}

export function setSession(s) {
  if (s) sessionStorage.setItem(STORE, JSON.stringify(s));
  else sessionStorage.clear();
}

// the API keys made in this session, so that Quickstart can fill one in;
// they go with the session
export function rememberKey(id, name, secret) {
  const s = session();
  if (!s) return;
  s.made = (s.made || []).filter(k => k.id !== id).concat([{ id, name, secret }]);
  setSession(s);
}

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// what went wrong, in words a person acts on
function explain(status, body) {
  const e = body && body.error;
  const said = e && (e.message || (typeof e === 'string' ? e : null));
  if (said) return said;
  if (status === 401) return 'This secret was not accepted. Sign in again.';
  if (status === 403) return 'This is not allowed for this secret.';
  if (status === 404) return 'Not found.';
  if (status === 429) return 'Too many requests: wait a moment and try again.';
  if (status >= 500) return `The service could not answer (HTTP ${status}). Try again shortly.`;
  return `The request failed (HTTP ${status}).`;
}

// one call: JSON in and out, the session's secret unless told otherwise
export async function call(method, path, body, opts) {
  opts = opts || {};
  const headers = {};
  const secret = opts.secret !== undefined ? opts.secret : session()?.secret;
  if (secret) headers['Authorization'] = 'Bearer ' + secret;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store', credentials: 'omit', redirect: 'error',
    });
  } catch (e) {
    throw new ApiError(0, 'Cannot reach the service: check the connection and try again.');
  }
  if (opts.raw) {
    if (!res.ok) throw new ApiError(res.status, explain(res.status, await res.json().catch(() => null)));
    return res;
  }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (!res.ok) {
    const err = new ApiError(res.status, explain(res.status, data), data?.error?.code);
    if (res.status === 401 && !opts.secret && opts.signOutOn401 !== false && session()) {
      // the secret no longer works (revoked, deleted): back to sign-in
      window.dispatchEvent(new CustomEvent('nebula:unauthorized', { detail: err.message }));
    }
    throw err;
  }
  if (data === null) throw new ApiError(res.status, 'The service answered something that is not JSON.');
  return data;
}

export const get = (path, opts) => call('GET', path, undefined, opts);
export const post = (path, body, opts) => call('POST', path, body === undefined ? {} : body, opts);
export const patch = (path, body, opts) => call('PATCH', path, body, opts);
export const del = (path, opts) => call('DELETE', path, undefined, opts);

// the public catalog, read once a page load
let catalog = null;
export async function publicCatalog() {
  if (!catalog) {
    catalog = Promise.all([get('/v1/models', { secret: null }), get('/v1/plans', { secret: null })])
      .then(([m, p]) => ({ models: m.data, plans: p.data, signup: p.signup }))
      .catch(e => { catalog = null; throw e; });
  }
  return catalog;
}

export const enc = encodeURIComponent;
