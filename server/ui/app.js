// The dashboard's shell: the session, the navigation, and a router over paths under
// /ui/. Screens are functions `(params, ctx) => Promise<Node>`; `ctx` says what the
// session's token may do (buttons it may not use are never drawn; the server refuses
// them anyway) and collects what to stop when the screen is left.

import { api, get, post, del, setCsrf } from './api.js';
import { h, field, toast, confirmDialog } from './dom.js';
import * as projects from './projects.js';
import * as deployment from './deployment.js';

/** A screen of a module loaded when first needed (settings and admin pages are not
 * part of the first load). */
const later = (module, name) => async (params, ctx) => (await import(module))[name](params, ctx);

const ROUTES = [
  [/^\/ui\/?$/, projects.list],
  [/^\/ui\/builds$/, projects.builds],
  [/^\/ui\/projects\/([^/]+)$/, projects.project],
  [/^\/ui\/projects\/([^/]+)\/domains$/, later('./settings.js', 'domains')],
  [/^\/ui\/projects\/([^/]+)\/env$/, later('./settings.js', 'env')],
  [/^\/ui\/projects\/([^/]+)\/git$/, later('./settings.js', 'git')],
  [/^\/ui\/projects\/([^/]+)\/protection$/, later('./settings.js', 'protection')],
  [/^\/ui\/projects\/([^/]+)\/integrations$/, later('./integrations.js', 'integrations')],
  [/^\/ui\/deployments\/([^/]+)$/, deployment.show],
  [/^\/ui\/tokens$/, later('./admin.js', 'tokens')],
  [/^\/ui\/audit$/, later('./admin.js', 'audit')],
];

let session = null;
let cleanups = [];
let renderSeq = 0;

function can(s) {
  const role = s.token.role;
  return {
    admin: role === 'admin',
    deploy: (slug) => role === 'admin' || (role === 'deploy' && s.token.projects.includes(slug)),
  };
}

export function navigate(path, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  render();
}

function nav() {
  const el = document.getElementById('nav');
  const link = (href, text) => {
    const current = location.pathname === href || (href !== '/ui/' && location.pathname.startsWith(href));
    return h('a', { href, 'aria-current': current ? 'page' : null }, text);
  };
  if (!session) {
    el.replaceChildren(h('span', { class: 'brand' }, 'cdeploy'));
    return;
  }
  const c = can(session);
  el.replaceChildren(
    h('a', { class: 'brand', href: '/ui/' }, 'cdeploy'),
    h('div', { class: 'nav-links' },
      link('/ui/', 'Projects'),
      link('/ui/builds', 'Builds'),
      c.admin ? link('/ui/tokens', 'Tokens') : null,
      c.admin ? link('/ui/audit', 'Audit log') : null),
    h('div', { class: 'nav-user' },
      h('span', { class: 'who' }, `${session.token.name} · ${session.token.role}`),
      h('button', { type: 'button', onclick: signOut }, 'Sign out')));
}

async function signOut() {
  try {
    await del('/v1/session');
  } catch (_) {
    // signed out either way
  }
  session = null;
  setCsrf(null);
  navigate('/ui/signin');
}

function signInScreen() {
  const input = h('input', { type: 'password', name: 'token', autocomplete: 'off', required: true, spellcheck: 'false' });
  const error = h('p', { class: 'error', role: 'alert' });
  const form = h('form', { class: 'card signin' },
    h('h1', {}, 'Sign in to cdeploy'),
    field('API token', input, 'A token from `cdeploy tokens create`, or run `cdeploy dashboard` to open a signed-in page.'),
    error,
    h('button', { type: 'submit', class: 'primary' }, 'Sign in'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    error.textContent = '';
    try {
      await post('/v1/sessions', { token: input.value.trim() });
      input.value = '';
      await loadSession();
      navigate(sessionStorage.getItem('cdeploy:after') || '/ui/', { replace: true });
      sessionStorage.removeItem('cdeploy:after');
    } catch (e) {
      error.textContent = e.message;
    }
  });
  return form;
}

async function loadSession() {
  try {
    session = await get('/v1/session');
    setCsrf(session.csrf);
  } catch (e) {
    // Signed out, or this address is past its failed sign-ins (the form says so when
    // used): either way the sign-in page, never a page stuck loading.
    if (e.status !== 401 && e.status !== 429) throw e;
    session = null;
  }
}

async function render() {
  const seq = ++renderSeq;
  for (const fn of cleanups) fn();
  cleanups = [];
  const main = document.getElementById('main');
  const path = location.pathname;
  if (!session && path !== '/ui/signin') {
    sessionStorage.setItem('cdeploy:after', path + location.search + location.hash);
    history.replaceState(null, '', '/ui/signin');
    return render();
  }
  nav();
  if (path === '/ui/signin') {
    if (session) return navigate('/ui/', { replace: true });
    document.title = 'Sign in · cdeploy';
    main.replaceChildren(signInScreen());
    main.querySelector('input').focus();
    return;
  }
  const found = ROUTES.map(([re, screen]) => [path.match(re), screen]).find(([m]) => m);
  if (!found) {
    main.replaceChildren(h('h1', {}, 'Not found'), h('p', {}, 'No page here. ', h('a', { href: '/ui/' }, 'All projects')));
    return;
  }
  const [match, screen] = found;
  const ctx = {
    session,
    can: can(session),
    onLeave: (fn) => cleanups.push(fn),
    refresh: () => render(),
    navigate,
  };
  main.setAttribute('aria-busy', 'true');
  let node;
  try {
    node = await screen(match.slice(1).map(decodeURIComponent), ctx);
  } catch (e) {
    if (e.status === 401) return;
    node = h('div', {}, h('h1', {}, 'Cannot show this page'), h('p', { class: 'error', role: 'alert' }, e.message));
  }
  if (seq !== renderSeq) return; // left while loading
  main.removeAttribute('aria-busy');
  main.replaceChildren(node);
  const heading = main.querySelector('h1');
  document.title = `${heading ? heading.textContent : 'cdeploy'} · cdeploy`;
  if (!render.first) {
    if (heading) {
      heading.setAttribute('tabindex', '-1');
      heading.focus({ preventScroll: true });
    }
  }
  render.first = false;
}
render.first = true;

document.addEventListener('click', (ev) => {
  const a = ev.target.closest && ev.target.closest('a[href]');
  if (!a || a.target || ev.defaultPrevented || ev.button !== 0) return;
  if (ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith('/ui/')) return;
  if (url.pathname === location.pathname && url.hash) return; // a line link: the hash changes
  ev.preventDefault();
  navigate(url.pathname + url.search + url.hash);
});
window.addEventListener('popstate', () => render());
window.addEventListener('cdeploy:signed-out', () => {
  if (!session) return;
  session = null;
  setCsrf(null);
  toast('Your session ended; sign in again.', 'error');
  render();
});

/** A one-time link (`cdeploy dashboard`): `/ui/signin#code=…`, traded for a session and
 * removed from the address bar and history at once. A browser already signed in is
 * asked first: a page of another site could send it to a link of someone else's token
 * (signing it in as them, to see what it then types there). */
async function consumeLink() {
  const m = location.hash.match(/^#code=([A-Za-z0-9_-]+)$/);
  if (!m) return;
  history.replaceState(null, '', location.pathname);
  await loadSession();
  if (session) {
    const ok = await confirmDialog(
      `You are signed in as ${session.token.name} (${session.token.role}). A sign-in link would replace this session with another token's. Only go on if you opened this link yourself (cdeploy dashboard).`,
      { action: 'Use the link' });
    if (!ok) return;
  }
  try {
    const s = await api('POST', '/v1/sessions', { code: m[1] });
    toast(`Signed in as ${s.token.name} (${s.token.role})`);
  } catch (e) {
    toast(`That sign-in link did not work: ${e.message}`, 'error');
  }
}

async function boot() {
  await consumeLink();
  await loadSession();
  if (session && location.pathname === '/ui/signin') history.replaceState(null, '', '/ui/');
  render();
}

boot();
