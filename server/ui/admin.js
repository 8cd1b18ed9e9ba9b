// Admin pages: tokens (and the dashboard sessions made with them), and the audit log.

import { get, post, del, seg } from './api.js';
import { h, time, table, field, actionButton, confirmDialog, toast } from './dom.js';

export async function tokens(_params, ctx) {
  const [list, sessions] = await Promise.all([get('/v1/tokens'), get('/v1/sessions')]);
  const name = h('input', { name: 'name', required: true, autocomplete: 'off', spellcheck: 'false' });
  const role = h('select', { name: 'role' }, ['deploy', 'read', 'admin', 'metrics'].map((r) => h('option', { value: r }, r)));
  const projects = h('input', { name: 'projects', autocomplete: 'off', spellcheck: 'false', placeholder: 'web, docs' });
  const days = h('input', { name: 'days', type: 'number', min: '1', inputmode: 'numeric' });
  const created = h('div', { 'aria-live': 'polite' });
  const error = h('p', { class: 'error', role: 'alert' });
  const form = h('form', { class: 'card form', 'aria-label': 'Create a token' },
    field('Name', name), field('Role', role),
    field('Projects', projects, 'For deploy and read tokens: the projects it acts on, comma-separated.'),
    field('Expires after (days)', days, 'Empty: it does not expire.'),
    error, h('button', { type: 'submit', class: 'primary' }, 'Create token'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    error.textContent = '';
    try {
      const t = await post('/v1/tokens', {
        name: name.value.trim(),
        role: role.value,
        projects: projects.value.split(',').map((s) => s.trim()).filter(Boolean),
        expires_in_secs: days.value ? Number(days.value) * 86400 : undefined,
      });
      created.replaceChildren(h('div', { class: 'card' },
        h('p', {}, `Token ${t.name} (${t.id}). Copy it now: it is not shown again.`),
        h('code', { class: 'secret' }, t.token)));
      form.reset();
    } catch (e) {
      error.textContent = e.message;
    }
  });
  return h('div', {},
    h('h1', {}, 'Tokens'),
    table('Tokens', ['Name', 'Id', 'Role', 'Projects', 'Created', 'Last used', 'Expires', ''], list.map((t) => [
      t.name, h('code', {}, t.id), t.role, t.projects.join(', '), time(t.created_at),
      t.last_used_at ? time(t.last_used_at) : 'never', t.expires_at || 'never',
      t.id === ctx.session.token.id ? h('span', { class: 'muted' }, 'this session’s') : actionButton('Revoke', async () => {
        if (!await confirmDialog(`Revoke token ${t.name}? Everything using it, its dashboard sessions too, stops working.`, { action: 'Revoke', danger: true })) return;
        await del(`/v1/tokens/${seg(t.id)}`);
        toast(`Revoked ${t.name}`);
        ctx.refresh();
      }, { danger: true }),
    ])),
    created, form,
    h('section', { 'aria-labelledby': 'sessions-h' },
      h('h2', { id: 'sessions-h' }, 'Dashboard sessions'),
      table('Dashboard sessions', ['Session', 'Token', 'Started', 'Last seen', 'Expires', ''], sessions.map((s) => [
        h('code', {}, s.id), s.token_name, time(s.created_at), time(s.last_seen_at), s.expires_at,
        s.id === ctx.session.id ? h('span', { class: 'muted' }, 'this one') : actionButton('End', async () => {
          await del(`/v1/sessions/${seg(s.id)}`);
          ctx.refresh();
        }, { danger: true }),
      ]), 'No session.')));
}

export async function audit(_params, ctx) {
  const q = new URLSearchParams(location.search);
  const fields = ['token', 'project', 'action', 'status'];
  const inputs = Object.fromEntries(fields.map((f) => [f, h('input', { name: f, value: q.get(f) || '', autocomplete: 'off', spellcheck: 'false' })]));
  const params = new URLSearchParams();
  for (const f of fields) if (q.get(f)) params.set(f, q.get(f));
  if (q.get('before')) params.set('before', q.get('before'));
  params.set('limit', '100');
  const entries = await get(`/v1/audit?${params}`);
  const filter = h('form', { class: 'filters', 'aria-label': 'Filter the audit log' },
    field('Token', inputs.token), field('Project', inputs.project),
    field('Action', inputs.action, 'Part of it: tokens, promote, POST'),
    field('Status', inputs.status, '403 or 4xx'),
    h('button', { type: 'submit' }, 'Filter'));
  filter.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const next = new URLSearchParams();
    for (const f of fields) if (inputs[f].value.trim()) next.set(f, inputs[f].value.trim());
    ctx.navigate(`/ui/audit${next.toString() ? `?${next}` : ''}`);
  });
  const last = entries[entries.length - 1];
  const older = new URLSearchParams(params);
  older.delete('limit');
  if (last) older.set('before', last.cursor);
  return h('div', {},
    h('h1', {}, 'Audit log'),
    filter,
    table('Audit log entries', ['When', 'Token', 'Action', 'Target', 'Status', 'Detail'], entries.map((e) => [
      time(e.at), e.token, h('code', {}, e.action), e.target || '', String(e.status), [e.detail || '', e.count > 1 ? ` (×${e.count})` : ''],
    ]), 'No entries.'),
    entries.length === 100 ? h('p', {}, h('a', { href: `/ui/audit?${older}` }, 'Older entries')) : null);
}
