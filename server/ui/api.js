// The dashboard's only way to the server: the same /v1 API the CLI uses, authenticated
// by the session cookie (HttpOnly: this code never sees it). Every change carries the
// session's CSRF token in a header, which a page of another site cannot set.

let csrf = null;

export function setCsrf(value) {
  csrf = value;
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Calls the API; resolves with the JSON answer (null for 204), rejects with ApiError. */
export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && method !== 'HEAD' && csrf) headers['X-CSRF-Token'] = csrf;
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
      redirect: 'error',
    });
  } catch (e) {
    throw new ApiError(0, 'network', `cannot reach the server: ${e.message}`);
  }
  if (res.status === 204) return null;
  let data = null;
  try {
    data = await res.json();
  } catch (_) {
    // not JSON
  }
  if (!res.ok) {
    const err = (data && data.error) || {};
    const e = new ApiError(res.status, err.code || 'error', err.message || `${res.status} ${res.statusText}`);
    if (res.status === 401) window.dispatchEvent(new CustomEvent('cdeploy:signed-out', { detail: e }));
    throw e;
  }
  return data;
}

export const get = (path) => api('GET', path);
export const post = (path, body) => api('POST', path, body === undefined ? {} : body);
export const put = (path, body) => api('PUT', path, body);
export const del = (path) => api('DELETE', path);

/** `encodeURIComponent` for one path segment. */
export const seg = (s) => encodeURIComponent(String(s));
