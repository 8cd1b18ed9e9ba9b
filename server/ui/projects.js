// Projects, one project's deployments, and every running and queued build.

import { get, post, del, seg } from './api.js';
import { h, time, badge, table, extLink, confirmDialog, actionButton, toast, field } from './dom.js';

export async function list(_params, ctx) {
  const projects = await get('/v1/projects');
  const latest = await Promise.all(projects.map((p) => get(`/v1/projects/${seg(p.slug)}/deployments?limit=1`)
    .then((d) => d[0])
    .catch(() => null)));
  return h('div', {},
    h('h1', {}, 'Projects'),
    table('Projects', ['Project', 'Production', 'Last deployment', 'Status'],
      projects.map((p, i) => {
        const d = latest[i];
        return [
          h('a', { href: `/ui/projects/${seg(p.slug)}` }, p.slug),
          p.production ? extLink(p.url) : h('span', { class: 'muted' }, 'none yet'),
          d ? h('a', { href: `/ui/deployments/${seg(d.id)}` }, time(d.created_at)) : '',
          d ? badge(d.status) : '',
        ];
      }),
      ctx.can.admin ? 'No projects yet: run `cdeploy deploy` in an app’s folder.' : 'This token sees no project yet.'));
}

export async function builds(_params, ctx) {
  const active = await get('/v1/deployments');
  const timer = setInterval(() => ctx.refresh(), 5000);
  ctx.onLeave(() => clearInterval(timer));
  return h('div', {},
    h('h1', {}, 'Builds'),
    h('p', { class: 'muted' }, 'Every queued and running build of the projects you can see, oldest first. Refreshes every 5 s.'),
    table('Running and queued builds', ['Deployment', 'Project', 'Status', 'Branch', 'Queued', ''],
      active.map((d) => [
        h('a', { href: `/ui/deployments/${seg(d.id)}` }, d.id),
        h('a', { href: `/ui/projects/${seg(d.slug)}` }, d.slug),
        badge(d.status),
        d.branch || '',
        time(d.created_at),
        ctx.can.deploy(d.slug) ? actionButton('Cancel', async () => {
          await post(`/v1/deployments/${seg(d.id)}/cancel`);
          toast(`Canceled ${d.id}`);
          ctx.refresh();
        }) : '',
      ]),
      'No build is running or queued.'));
}

/** The tabs of a project's pages. */
export function projectTabs(slug, current, ctx) {
  const tabs = [['', 'Deployments'], ['domains', 'Domains'], ['git', 'Git'], ['integrations', 'Integrations']];
  if (ctx.can.admin) tabs.push(['env', 'Environment'], ['protection', 'Protection']);
  return h('nav', { class: 'tabs', 'aria-label': `Project ${slug}` },
    tabs.map(([path, label]) => h('a', {
      href: `/ui/projects/${seg(slug)}${path ? `/${path}` : ''}`,
      'aria-current': path === current ? 'page' : null,
    }, label)));
}

/** The buttons a deployment gets, for a token that may deploy its project. */
export function deploymentActions(d, production, ctx, after) {
  if (!ctx.can.deploy(d.slug)) return [];
  const out = [];
  if (d.status === 'ready' && !d.production) {
    const older = production && Date.parse(d.created_at) < Date.parse(production.created_at);
    const label = older ? 'Roll back to this' : 'Promote';
    out.push(actionButton(label, async () => {
      const ok = await confirmDialog(`${label}: ${d.slug} will serve deployment ${d.id}.`, { action: label });
      if (!ok) return;
      await post(`/v1/projects/${seg(d.slug)}/promote`, { deployment: d.id });
      toast(`${d.slug} now serves ${d.id}`);
      after();
    }));
  }
  if (!['ready', 'failed', 'canceled'].includes(d.status)) {
    out.push(actionButton('Cancel', async () => {
      await post(`/v1/deployments/${seg(d.id)}/cancel`);
      toast(`Canceled ${d.id}`);
      after();
    }));
  } else if (d.source !== 'prebuilt') {
    out.push(actionButton('Redeploy', async () => {
      const what = d.preview
        ? 'as a new preview (production stays as it is)'
        : `as a new production deployment: once ready, ${d.slug} serves it in place of what it serves now`;
      const ref = !d.git ? ''
        : d.commit ? ` (git commit ${d.commit.slice(0, 12)}, the one it built)`
          : ` (git ${d.git.ref ? `ref ${d.git.ref}` : 'default branch'}, as it is now)`;
      const ok = await confirmDialog(`Build ${d.id}'s source${ref} again ${what}.`, { action: 'Redeploy' });
      if (!ok) return;
      const n = await post(`/v1/deployments/${seg(d.id)}/redeploy`);
      ctx.navigate(`/ui/deployments/${seg(n.id)}`);
    }));
  }
  if (!d.production) {
    out.push(actionButton('Delete', async () => {
      const ok = await confirmDialog(`Delete deployment ${d.id} and its files? Its URL stops working.`, { action: 'Delete', danger: true });
      if (!ok) return;
      await del(`/v1/deployments/${seg(d.id)}`);
      toast(`Deleted ${d.id}`);
      after();
    }, { danger: true }));
  }
  return out;
}

function commit(d) {
  if (!d.git) return d.source;
  const ref = d.git.ref || 'default branch';
  return h('code', { title: d.git.url }, /^[0-9a-f]{40}$/.test(ref) ? ref.slice(0, 10) : ref);
}

export async function project([slug], ctx) {
  const [p, deployments] = await Promise.all([
    get(`/v1/projects/${seg(slug)}`),
    get(`/v1/projects/${seg(slug)}/deployments?limit=100`),
  ]);
  const production = deployments.find((d) => d.production)
    || (p.production ? await get(`/v1/deployments/${seg(p.production)}`).catch(() => null) : null);
  const refresh = () => ctx.refresh();
  if (deployments.some((d) => !['ready', 'failed', 'canceled'].includes(d.status))) {
    const timer = setInterval(refresh, 5000);
    ctx.onLeave(() => clearInterval(timer));
  }
  const deleteProject = ctx.can.admin ? actionButton('Delete project', async () => {
    const ok = await confirmDialog(`Delete project ${slug}, every deployment, domain and setting of it?`, { action: 'Delete project', danger: true, typed: slug });
    if (!ok) return;
    await del(`/v1/projects/${seg(slug)}`);
    toast(`Deleted ${slug}`);
    ctx.navigate('/ui/');
  }, { danger: true }) : null;
  return h('div', {},
    h('div', { class: 'title-row' }, h('h1', {}, slug), deleteProject),
    projectTabs(slug, '', ctx),
    h('section', { class: 'card', 'aria-labelledby': 'prod-h' },
      h('h2', { id: 'prod-h' }, 'Production'),
      production
        ? h('p', {}, extLink(p.url), ' serves ', h('a', { href: `/ui/deployments/${seg(production.id)}` }, production.id), ', ', time(production.created_at))
        : h('p', { class: 'muted' }, 'Nothing is in production yet.'),
      p.git ? h('p', { class: 'muted' }, 'Repository: ', h('code', {}, p.git)) : null),
    h('section', { 'aria-labelledby': 'deps-h' },
      h('h2', { id: 'deps-h' }, 'Deployments'),
      table('Deployments', ['Deployment', 'Status', 'Branch', 'Commit', 'Created', 'URLs', 'Actions'],
        deployments.map((d) => [
          h('a', { href: `/ui/deployments/${seg(d.id)}` }, d.id, d.production ? h('span', { class: 'tag' }, 'production') : null),
          badge(d.status),
          d.branch || (d.preview ? 'preview' : ''),
          commit(d),
          time(d.created_at),
          h('span', { class: 'urls' }, extLink(d.preview_url, 'own URL'), d.branch_url ? extLink(d.branch_url, 'branch URL') : null),
          h('span', { class: 'actions' }, deploymentActions(d, production, ctx, refresh)),
        ]),
        'No deployment yet.')),
    ctx.can.deploy(slug) ? deployForm(slug, p, ctx) : null);
}

/** Deploys a git repository's ref (what `cdeploy deploy --git` does), for tokens that
 * may deploy the project. */
function deployForm(slug, p, ctx) {
  // A linked URL with credentials is shown masked (`***`): not a value to send back.
  const linked = p.git && !p.git.includes('***') ? p.git : '';
  const url = h('input', { type: 'url', required: true, autocomplete: 'off', spellcheck: 'false', value: linked, placeholder: 'https://git.example.com/acme/web.git' });
  const ref = h('input', { autocomplete: 'off', spellcheck: 'false', placeholder: 'the default branch' });
  const preview = h('input', { type: 'checkbox', id: 'deploy-preview' });
  const branch = h('input', { autocomplete: 'off', spellcheck: 'false', placeholder: 'the ref' });
  const error = h('p', { class: 'error', role: 'alert' });
  const f = h('form', { class: 'card form', 'aria-labelledby': 'deploy-h' },
    h('h2', { id: 'deploy-h' }, 'Deploy from git'),
    field('Repository', url), field('Branch, tag or commit', ref),
    h('div', { class: 'check' }, preview, h('label', { for: 'deploy-preview' }, 'As a preview (production stays as it is)')),
    field('Preview branch alias', branch, 'With a preview: served at <branch>--<slug>.'),
    error, h('button', { type: 'submit', class: 'primary' }, 'Deploy'));
  f.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    error.textContent = '';
    const gitRef = ref.value.trim();
    const body = { git: { url: url.value.trim(), ref: gitRef || undefined }, preview: preview.checked };
    if (preview.checked && (branch.value.trim() || gitRef)) body.branch = branch.value.trim() || gitRef;
    try {
      const d = await post(`/v1/projects/${seg(slug)}/deployments`, body);
      ctx.navigate(`/ui/deployments/${seg(d.id)}`);
    } catch (e) {
      error.textContent = e.message;
    }
  });
  return f;
}
