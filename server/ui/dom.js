// DOM helpers. Every value from the API reaches the page as text (text nodes and
// attributes set one by one), never as markup: a branch named `<img onerror=…>` is shown
// as those characters.

/** Builds an element: `h('a', {href: '/ui/', class: 'x', onclick: fn}, 'text', child)`. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'href') {
      el.setAttribute('href', safeHref(value));
    } else if (value === true) {
      el.setAttribute(key, '');
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

/** Appends children: nodes, strings (as text), arrays of them; skips null and false. */
export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** A link target that cannot run script: http(s) URLs, and paths that stay on this
 * origin (`/\\evil.example` is another host to a browser, so it is resolved first). */
export function safeHref(value) {
  const s = String(value);
  if (s.startsWith('#')) return s;
  try {
    const absolute = /^[a-z][a-z0-9+.-]*:/i.test(s);
    const u = new URL(s, location.origin);
    // A path that normalises to `//host` is another host to a browser.
    if (!absolute && u.origin === location.origin && !u.pathname.startsWith('//')) return u.pathname + u.search + u.hash;
    if (absolute && (u.protocol === 'http:' || u.protocol === 'https:')) return u.href;
  } catch (_) {
    // not a URL
  }
  return '#';
}

/** An external link (a deployment's URL), opened in a new tab without an opener. */
export function extLink(url, text) {
  return h('a', { href: url, target: '_blank', rel: 'noopener noreferrer' }, text || url);
}

/** "3 min ago", "2 h ago", or the date. */
export function ago(iso) {
  if (!iso) return '';
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return String(iso);
  const s = Math.max(0, Math.round((Date.now() - then) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  if (s < 86400 * 30) return `${Math.floor(s / 86400)} d ago`;
  return new Date(then).toISOString().slice(0, 10);
}

/** A `<time>` showing `ago`, with the exact instant as its title. */
export function time(iso) {
  return h('time', { datetime: iso, title: iso }, ago(iso));
}

/** "850 ms", "12.3 s", "4 min 5 s". */
export function duration(ms) {
  if (!Number.isFinite(ms) || ms < 0) return '';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

export function bytes(n) {
  if (!Number.isFinite(n)) return '';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** A status badge (`ready`, `failed`, …): a word, never a colour alone. */
export function badge(status) {
  return h('span', { class: `badge badge-${String(status).replace(/[^a-z_]/g, '')}` }, status);
}

/** A table with a caption (for screen readers), headers and rows of cells. */
export function table(caption, headers, rows, empty) {
  if (!rows.length) return h('p', { class: 'empty' }, empty || 'Nothing yet.');
  return h('div', { class: 'table-wrap' },
    h('table', {},
      h('caption', { class: 'sr-only' }, caption),
      h('thead', {}, h('tr', {}, headers.map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows.map((cells) => h('tr', {}, cells.map((c) => h('td', {}, c)))))));
}

/** Asks to confirm in a modal dialog; resolves true when confirmed. With `typed`, the
 * user must type that text first (deleting a project). */
export function confirmDialog(message, { action = 'Confirm', danger = false, typed } = {}) {
  return new Promise((resolve) => {
    const input = typed
      ? h('input', { id: 'confirm-typed', autocomplete: 'off', spellcheck: 'false' })
      : null;
    // Plain buttons, not a `method=dialog` form: the page's CSP `form-action` stops
    // those submissions in Chromium.
    const ok = h('button', { type: 'button', class: danger ? 'danger' : 'primary', value: 'ok' }, action);
    const cancel = h('button', { type: 'button', value: 'cancel' }, 'Cancel');
    const dialog = h('dialog', { 'aria-labelledby': 'confirm-title' },
      h('h2', { id: 'confirm-title' }, action),
      h('p', {}, message),
      typed ? [h('label', { for: 'confirm-typed' }, `Type ${typed} to confirm`), input] : null,
      h('div', { class: 'actions' }, cancel, ok));
    let done = false;
    const finish = (confirmed) => {
      if (done) return;
      done = true;
      if (dialog.open) dialog.close();
      dialog.remove();
      resolve(confirmed);
    };
    ok.addEventListener('click', () => finish(true));
    cancel.addEventListener('click', () => finish(false));
    // Escape, or the browser closing it.
    dialog.addEventListener('cancel', () => finish(false));
    dialog.addEventListener('close', () => finish(false));
    if (input) {
      input.addEventListener('keydown', (ev) => {
        if (ev.key === 'Enter' && !ok.disabled) finish(true);
      });
    }
    if (input) {
      ok.disabled = true;
      input.addEventListener('input', () => { ok.disabled = input.value !== typed; });
    }
    document.body.append(dialog);
    dialog.showModal();
    (input || ok).focus();
  });
}

/** Shows a short message in the polite live region. */
export function toast(message, kind = 'info') {
  const region = document.getElementById('toast');
  if (!region) return;
  region.replaceChildren(h('p', { class: `toast toast-${kind}` }, message));
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => region.replaceChildren(), 6000);
}

/** A button that runs `fn`, disabled while it runs, its error shown as a toast. */
export function actionButton(label, fn, { danger = false, title } = {}) {
  const b = h('button', { type: 'button', class: danger ? 'danger' : null, title }, label);
  b.addEventListener('click', async () => {
    b.disabled = true;
    try {
      await fn();
    } catch (e) {
      toast(e.message || String(e), 'error');
    } finally {
      b.disabled = false;
    }
  });
  return b;
}

/** A labelled form field. */
export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  const hintEl = hint ? h('small', { id: `${id}-hint` }, hint) : null;
  if (hintEl) input.setAttribute('aria-describedby', hintEl.id);
  return h('div', { class: 'field' }, h('label', { for: id }, label), input, hintEl);
}
