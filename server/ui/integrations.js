// A project's integrations: notification endpoints and their deliveries, deploy hooks,
// and the CI identities (OIDC trusts) that may deploy it without a stored token.

import { get, post, del, seg } from './api.js';
import { h, time, badge, table, field, actionButton, confirmDialog, toast } from './dom.js';
import { projectTabs } from './projects.js';

const EVENTS = ['created', 'ready', 'failed', 'canceled', 'promoted', 'rolled_back'];

/** A secret just created, shown once on the page drawn next (the list is drawn again
 * to hold the new entry). */
let pending = null;

/** A form whose submit runs `fn()`; its error is shown in it. */
function form(label, fields, submit, fn) {
  const error = h('p', { class: 'error', role: 'alert' });
  const f = h('form', { class: 'card form', 'aria-label': label }, h('h3', {}, label), fields, error,
    h('button', { type: 'submit', class: 'primary' }, submit));
  f.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    error.textContent = '';
    try {
      await fn();
    } catch (e) {
      error.textContent = e.message;
    }
  });
  return f;
}

/** Shown once: a secret the server will not show again. */
function once(label, value) {
  return h('div', { class: 'card', role: 'status' }, h('p', {}, `${label} (shown once: copy it now)`), h('code', { class: 'secret' }, value));
}

async function notifications(slug, ctx) {
  const list = await get(`/v1/projects/${seg(slug)}/notifications`);
  const deliveries = await Promise.all(list.map((n) => get(`/v1/projects/${seg(slug)}/notifications/${seg(n.id)}/deliveries?limit=20`).catch(() => [])));
  const out = [h('h2', { id: 'notify-h' }, 'Notifications')];
  out.push(list.length ? list.map((n, i) => h('section', { class: 'card', 'aria-label': `Endpoint ${n.url}` },
    h('div', { class: 'title-row' },
      h('h3', {}, h('code', {}, n.url), ` · ${n.format}`),
      ctx.can.admin ? actionButton('Remove', async () => {
        if (!await confirmDialog(`Stop sending ${slug}'s events to ${n.url}?`, { action: 'Remove', danger: true })) return;
        await del(`/v1/projects/${seg(slug)}/notifications/${seg(n.id)}`);
        ctx.refresh();
      }, { danger: true }) : null),
    h('p', { class: 'muted' }, `Events: ${n.events.length ? n.events.join(', ') : 'all'}`),
    table(`Deliveries to ${n.url}`, ['When', 'Event', 'Deployment', 'Attempt', 'Outcome', 'Status', 'Error'], deliveries[i].map((d) => [
      time(d.at), d.event, h('a', { href: `/ui/deployments/${seg(d.deployment)}` }, d.deployment), String(d.attempt),
      badge(d.outcome), d.status ? String(d.status) : '', d.error || '',
    ]), 'Nothing sent yet.'))) : h('p', { class: 'empty' }, 'No endpoint.'));
  if (ctx.can.admin) {
    const url = h('input', { type: 'url', required: true, autocomplete: 'off', spellcheck: 'false', placeholder: 'https://hooks.example.com/cdeploy' });
    const format = h('select', {}, ['json', 'slack', 'discord'].map((f) => h('option', { value: f }, f)));
    const boxes = EVENTS.map((e) => h('input', { type: 'checkbox', id: `ev-${e}`, value: e }));
    out.push(form('Send events to an endpoint', [
      field('URL', url), field('Format', format),
      h('fieldset', {}, h('legend', {}, 'Events (none: all)'),
        boxes.map((b) => h('div', { class: 'check' }, b, h('label', { for: b.id }, b.value)))),
    ], 'Add endpoint', async () => {
      const n = await post(`/v1/projects/${seg(slug)}/notifications`, {
        url: url.value.trim(), format: format.value, events: boxes.filter((b) => b.checked).map((b) => b.value),
      });
      pending = once(`Signing secret of ${n.url}`, n.secret || '');
      toast('Endpoint added');
      ctx.refresh();
    }));
  }
  return out;
}

async function hooks(slug, ctx) {
  const list = await get(`/v1/projects/${seg(slug)}/deploy-hooks`);
  const name = h('input', { required: true, autocomplete: 'off', spellcheck: 'false' });
  const branch = h('input', { autocomplete: 'off', spellcheck: 'false', placeholder: 'the production branch' });
  return [
    h('h2', {}, 'Deploy hooks'),
    table('Deploy hooks', ['Name', 'Branch', 'Created', ''], list.map((k) => [
      k.name, k.branch, time(k.created_at),
      actionButton('Delete', async () => {
        if (!await confirmDialog(`Delete deploy hook ${k.name}? Its URL stops working.`, { action: 'Delete', danger: true })) return;
        await del(`/v1/projects/${seg(slug)}/deploy-hooks/${seg(k.id)}`);
        ctx.refresh();
      }, { danger: true }),
    ]), 'No deploy hook.'),
    form('Create a deploy hook', [field('Name', name), field('Branch', branch)], 'Create hook', async () => {
      const k = await post(`/v1/projects/${seg(slug)}/deploy-hooks`, { name: name.value.trim(), branch: branch.value.trim() || undefined });
      pending = once(`POST to this URL to deploy ${k.branch}`, `${location.origin}${k.path || ''}`);
      ctx.refresh();
    }),
  ];
}

async function trusts(slug, ctx) {
  const list = await get(`/v1/projects/${seg(slug)}/trust`);
  const out = [
    h('h2', {}, 'CI identities (OIDC)'),
    h('p', { class: 'muted' }, 'CI jobs whose identity token carries these claims deploy this project without a stored token (cdeploy trust).'),
    table('Trusted CI identities', ['Issuer', 'Claims', 'Created', ''], list.map((t) => [
      h('code', {}, t.issuer),
      h('ul', { class: 'plain' }, Object.entries(t.claims).map(([k, v]) => h('li', {}, h('code', {}, `${k}=${v}`)))),
      time(t.created_at),
      ctx.can.admin ? actionButton('Remove', async () => {
        if (!await confirmDialog(`Stop trusting ${t.issuer} for ${slug}?`, { action: 'Remove', danger: true })) return;
        await del(`/v1/projects/${seg(slug)}/trust/${seg(t.id)}`);
        ctx.refresh();
      }, { danger: true }) : '',
    ]), 'No CI identity is trusted.'),
  ];
  if (ctx.can.admin) {
    const issuer = h('input', { type: 'url', required: true, list: 'issuers', autocomplete: 'off', spellcheck: 'false' });
    const claims = h('textarea', { rows: '3', required: true, spellcheck: 'false', placeholder: 'repository_id=123456\nrepository_owner_id=7890\nref=refs/heads/main' });
    out.push(h('datalist', { id: 'issuers' },
      h('option', { value: 'https://token.actions.githubusercontent.com' }, 'GitHub Actions'),
      h('option', { value: 'https://gitlab.com' }, 'GitLab')));
    out.push(form('Trust a CI identity', [
      field('Issuer', issuer),
      field('Claims', claims, 'One NAME=VALUE a line; every one must match. GitHub and gitlab.com need the numeric repository and owner ids.'),
    ], 'Add trust', async () => {
      const rules = {};
      for (const line of claims.value.split('\n').map((l) => l.trim()).filter(Boolean)) {
        const at = line.indexOf('=');
        if (at < 1) throw new Error(`"${line}": write NAME=VALUE`);
        rules[line.slice(0, at).trim()] = line.slice(at + 1).trim();
      }
      await post(`/v1/projects/${seg(slug)}/trust`, { issuer: issuer.value.trim(), claims: rules });
      toast('Trust added');
      ctx.refresh();
    }));
  }
  return out;
}

export async function integrations([slug], ctx) {
  const shown = h('div', { 'aria-live': 'polite' }, pending);
  pending = null;
  const parts = await Promise.all([
    notifications(slug, ctx),
    ctx.can.admin ? hooks(slug, ctx) : [],
    trusts(slug, ctx),
  ]);
  return h('div', {}, h('h1', {}, `${slug}: integrations`), projectTabs(slug, 'integrations', ctx), shown, parts);
}
