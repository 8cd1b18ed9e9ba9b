// A project's settings: custom domains, environment variables (values are write-only
// here), the repository link with its webhook deliveries, and preview protection.

import { get, put, post, del, seg, ApiError } from './api.js';
import { h, time, badge, table, field, actionButton, confirmDialog, toast, extLink } from './dom.js';
import { projectTabs } from './projects.js';

function page(slug, tab, title, ctx, ...body) {
  return h('div', {}, h('h1', {}, `${slug}: ${title}`), projectTabs(slug, tab, ctx), ...body);
}

/** A form whose submit runs `fn(form)`; errors are shown in it. */
function form(label, fields, submit, fn) {
  const error = h('p', { class: 'error', role: 'alert' });
  const f = h('form', { class: 'card form', 'aria-label': label }, fields, error, h('button', { type: 'submit', class: 'primary' }, submit));
  f.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    error.textContent = '';
    const button = f.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      await fn(f);
    } catch (e) {
      error.textContent = e.message;
    } finally {
      button.disabled = false;
    }
  });
  return f;
}

export async function domains([slug], ctx) {
  const list = await get(`/v1/projects/${seg(slug)}/domains`);
  const reports = await Promise.all(list.map((d) => get(`/v1/domains/${seg(d.name)}`).catch(() => null)));
  const name = h('input', { name: 'name', required: true, autocomplete: 'off', spellcheck: 'false', placeholder: 'www.example.com' });
  const add = ctx.can.deploy(slug) ? form('Add a domain', [field('Domain', name)], 'Add domain', async () => {
    await post(`/v1/projects/${seg(slug)}/domains`, { name: name.value.trim() });
    toast(`Added ${name.value.trim()}`);
    ctx.refresh();
  }) : null;
  return page(slug, 'domains', 'domains', ctx,
    list.length ? list.map((d, i) => {
      const r = reports[i];
      return h('section', { class: 'card', 'aria-label': d.name },
        h('div', { class: 'title-row' },
          h('h2', {}, extLink(d.url, d.name), ' ', badge(d.state), d.verified ? null : h('span', { class: 'tag' }, 'unverified')),
          ctx.can.deploy(slug) ? actionButton('Remove', async () => {
            if (!await confirmDialog(`Remove ${d.name}? It stops being served.`, { action: 'Remove', danger: true })) return;
            await del(`/v1/domains/${seg(d.name)}`);
            ctx.refresh();
          }, { danger: true }) : null),
        d.certificate ? h('p', {}, `Certificate valid until ${d.certificate.not_after}, renews from ${d.certificate.renew_at}.`) : null,
        d.dns.length ? table(`DNS records for ${d.name}`, ['Type', 'Name', 'Value'], d.dns.map((rec) => [rec.kind, h('code', {}, rec.name), h('code', {}, rec.value)])) : null,
        r && r.next_attempt ? h('p', { class: 'muted' }, `Next attempt ${r.next_attempt}`) : null,
        r ? table(`Certificate attempts for ${d.name}`, ['When', 'Outcome', 'Stage', 'Details'],
          r.attempts.map((a) => [time(a.at), a.ok ? 'issued' : 'failed', a.stage, [a.ca_error || a.self_check || '', a.fix ? h('div', { class: 'muted' }, a.fix) : null]]),
          'No attempt yet.') : null);
    }) : h('p', { class: 'empty' }, 'No custom domain.'),
    add);
}

export async function env([slug], ctx) {
  const vars = await get(`/v1/projects/${seg(slug)}/env`);
  const name = h('input', { name: 'name', required: true, autocomplete: 'off', spellcheck: 'false', pattern: '[A-Za-z_][A-Za-z0-9_]*' });
  const value = h('textarea', { name: 'value', rows: '2', autocomplete: 'off', spellcheck: 'false' });
  const target = h('select', { name: 'target' },
    h('option', { value: 'both' }, 'production and preview'),
    h('option', { value: 'production' }, 'production'),
    h('option', { value: 'preview' }, 'preview'));
  const sensitive = h('input', { type: 'checkbox', name: 'sensitive' });
  const runtime = h('input', { type: 'checkbox', name: 'runtime' });
  const add = form('Set a variable', [
    field('Name', name),
    field('Value', value, 'Stored sealed; never shown again here.'),
    field('Targets', target),
    h('div', { class: 'check' }, sensitive, h('label', { for: (sensitive.id = 'env-sensitive') }, 'Sensitive (masked in build logs)')),
    h('div', { class: 'check' }, runtime, h('label', { for: (runtime.id = 'env-runtime') }, 'Also for the server at run time')),
  ], 'Save variable', async () => {
    const targets = target.value === 'both' ? ['production', 'preview'] : [target.value];
    await put(`/v1/projects/${seg(slug)}/env/${seg(name.value.trim())}`, { value: value.value, targets, sensitive: sensitive.checked, runtime: runtime.checked });
    value.value = '';
    toast(`Saved ${name.value.trim()}`);
    ctx.refresh();
  });
  return page(slug, 'env', 'environment', ctx,
    table('Environment variables', ['Name', 'Target', 'Kind', 'Updated', ''], vars.map((v) => [
      h('code', {}, v.name), v.target, [v.sensitive ? 'sensitive' : 'plain', v.runtime ? ', run time' : ''], time(v.updated_at),
      actionButton('Remove', async () => {
        if (!await confirmDialog(`Remove ${v.name} (${v.target})?`, { action: 'Remove', danger: true })) return;
        await del(`/v1/projects/${seg(slug)}/env/${seg(v.name)}?target=${seg(v.target)}`);
        ctx.refresh();
      }, { danger: true }),
    ]), 'No variables.'),
    add);
}

export async function git([slug], ctx) {
  let link = null;
  if (ctx.can.admin) {
    link = await get(`/v1/projects/${seg(slug)}/git`).catch((e) => {
      if (e instanceof ApiError && e.status === 404) return null;
      throw e;
    });
  }
  const deliveries = await get(`/v1/projects/${seg(slug)}/deliveries?limit=100`);
  let linkBox = null;
  if (ctx.can.admin) {
    const repo = h('input', { name: 'repo', required: true, autocomplete: 'off', spellcheck: 'false', value: link ? link.repo : '' });
    const branch = h('input', { name: 'branch', autocomplete: 'off', spellcheck: 'false', value: link ? link.production_branch : 'main' });
    linkBox = h('div', {},
      link ? h('section', { class: 'card', 'aria-labelledby': 'link-h' },
        h('h2', { id: 'link-h' }, 'Linked repository'),
        h('p', {}, h('code', {}, link.repo), ` — pushes to ${link.production_branch} deploy production; other branches deploy previews.`),
        table('Webhooks', ['Forge', 'Webhook path', 'Secret'], Object.entries(link.webhooks).map(([forge, path]) => [
          forge, h('code', {}, path),
          h('details', {}, h('summary', {}, 'Show secret'), h('code', {}, link.webhook_secrets[forge] || '')),
        ])),
        actionButton('Unlink', async () => {
          if (!await confirmDialog(`Unlink ${slug} from its repository? Pushes stop deploying.`, { action: 'Unlink', danger: true })) return;
          await del(`/v1/projects/${seg(slug)}/git`);
          ctx.refresh();
        }, { danger: true })) : null,
      form(link ? 'Change the link' : 'Link a repository', [field('Repository URL', repo), field('Production branch', branch)], link ? 'Save link' : 'Link repository', async () => {
        await put(`/v1/projects/${seg(slug)}/git`, { repo: repo.value.trim(), production_branch: branch.value.trim() || undefined });
        toast('Linked');
        ctx.refresh();
      }));
  }
  return page(slug, 'git', 'git', ctx, linkBox,
    h('section', { 'aria-labelledby': 'deliv-h' },
      h('h2', { id: 'deliv-h' }, 'Webhook deliveries'),
      table('Webhook deliveries', ['When', 'From', 'Event', 'Decision', 'Reason', 'Deployment'], deliveries.map((d) => [
        time(d.at), d.forge, d.event, badge(d.decision), d.reason,
        d.deployment ? h('a', { href: `/ui/deployments/${seg(d.deployment)}` }, d.deployment) : '',
      ]), 'No delivery yet.')));
}

export async function protection([slug], ctx) {
  const info = await get(`/v1/projects/${seg(slug)}/protection`);
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'new-password', minlength: '8', maxlength: '256' });
  const shown = h('div', {});
  const set = form('Protect previews', [field('Password (optional)', password, '8 to 256 characters; empty: only the bypass token opens previews.')],
    info.enabled ? 'Update protection' : 'Protect previews', async () => {
      const answer = await put(`/v1/projects/${seg(slug)}/protection`, password.value
        ? { password: password.value } : { keep_password: info.enabled });
      password.value = '';
      if (answer.bypass_token) {
        shown.replaceChildren(h('p', { class: 'card' }, 'Bypass token (shown once): ', h('code', {}, answer.bypass_token)));
      }
      toast('Previews are protected');
    });
  return page(slug, 'protection', 'preview protection', ctx,
    h('p', {}, info.enabled
      ? `Previews are protected${info.password ? ' by a password and' : ' by'} a bypass token${info.updated_at ? ` (since ${info.updated_at})` : ''}. Production is always public.`
      : 'Previews are public.'),
    shown, set,
    info.enabled ? actionButton('Make previews public', async () => {
      if (!await confirmDialog('Remove preview protection? Anyone with a preview URL can open it.', { action: 'Make public', danger: true })) return;
      await del(`/v1/projects/${seg(slug)}/protection`);
      ctx.refresh();
    }, { danger: true }) : null);
}
