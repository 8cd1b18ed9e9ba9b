// One deployment: what it is, its actions, its steps' timings, the commands its build
// ran, its files, and its build log followed live.

import { get, seg } from './api.js';
import { h, time, badge, table, extLink, duration, bytes } from './dom.js';
import { LogStream, LogView } from './log.js';
import { deploymentActions } from './projects.js';

const TERMINAL = ['ready', 'failed', 'canceled'];

function summary(d, production, ctx, after) {
  return h('div', { class: 'summary' },
    h('dl', { class: 'facts' },
      h('dt', {}, 'Status'), h('dd', { id: 'dep-status' }, badge(d.status), d.error ? h('span', { class: 'error' }, ` ${d.error}`) : null),
      h('dt', {}, 'Project'), h('dd', {}, h('a', { href: `/ui/projects/${seg(d.slug)}` }, d.slug)),
      h('dt', {}, 'Source'), h('dd', {}, d.source, d.git ? [' ', h('code', {}, d.git.url), d.git.ref ? [' @ ', h('code', {}, d.git.ref)] : null] : null),
      d.commit ? [h('dt', {}, 'Commit'), h('dd', {}, h('code', {}, d.commit.slice(0, 12)))] : null,
      d.reused_from
        ? [h('dt', {}, 'Built'), h('dd', {}, 'no: unchanged since ',
          h('a', { href: `/ui/deployments/${seg(d.reused_from)}` }, h('code', {}, d.reused_from)),
          ', whose output it serves')]
        : null,
      d.branch ? [h('dt', {}, 'Branch'), h('dd', {}, d.branch)] : null,
      h('dt', {}, 'Created'), h('dd', {}, time(d.created_at)),
      h('dt', {}, 'URL'), h('dd', {}, extLink(d.preview_url)),
      d.branch_url ? [h('dt', {}, 'Branch URL'), h('dd', {}, extLink(d.branch_url))] : null,
      h('dt', {}, 'Production'), h('dd', {}, d.production ? extLink(d.url) : 'no')),
    h('div', { class: 'actions' }, deploymentActions(d, production, ctx, after)));
}

/** Per step: from its first event to its last. */
function timings(events) {
  const steps = new Map();
  for (const e of events) {
    if (!e.step) continue;
    const t = Date.parse(e.ts);
    const s = steps.get(e.step) || { from: t, to: t };
    s.to = t;
    steps.set(e.step, s);
  }
  return [...steps].map(([step, s]) => [step, duration(s.to - s.from)]);
}

async function files(d) {
  if (d.status !== 'ready') return h('p', { class: 'muted' }, 'Files are listed once the deployment is ready.');
  const answer = await get(`/v1/deployments/${seg(d.id)}/files?limit=200`);
  return h('div', {},
    h('p', { class: 'muted' }, `${answer.total.toLocaleString()} files, ${bytes(answer.total_bytes)}${answer.files.length < answer.total ? `; the first ${answer.files.length} shown` : ''}.`),
    table('Files', ['Path', 'Size'], answer.files.map((f) => [h('code', {}, f.path), bytes(f.size)]), 'No files.'));
}

export async function show([id], ctx) {
  // The log is asked for first, while the deployment's details load beside it.
  let d = null;
  let production = null;
  let details = null;
  const events = [];
  const view = new LogView({ label: 'Build log' });
  const timingBox = h('div', {});
  const planBox = h('ul', { class: 'plan' });
  const filesBox = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const progress = h('p', { class: 'progress muted', 'aria-live': 'polite' });
  const stateBox = h('span', { class: 'stream-state muted' });
  let summaryBox = h('div', {});

  const showTimings = () => timingBox.replaceChildren(
    table('Step timings', ['Step', 'Took'], timings(events), 'No step has run yet.'));
  const stream = new LogStream(id, {
    onEvent: (e) => {
      events.push({ step: e.step, ts: e.ts });
      if (e.type === 'log') {
        view.push({ seq: e.seq, step: e.step, stream: e.stream, text: e.line });
        view.settle();
        // The plan: what the build decided (framework, Node.js and package manager,
        // the install's cache), said on the install step, and every command it ran.
        if (e.stream === 'system' && e.line.startsWith('$ ')) planBox.append(h('li', {}, h('code', {}, `${e.step}: ${e.line.slice(2)}`)));
        else if (e.stream === 'system' && e.step === 'install') planBox.append(h('li', {}, e.line));
      } else if (e.type === 'progress') {
        progress.textContent = e.total ? `${e.step}: ${e.done} of ${e.total}` : '';
      } else if (e.type === 'status') {
        progress.textContent = '';
        if (TERMINAL.includes(e.status)) {
          details.then(() => get(`/v1/deployments/${seg(d.id)}`)).then((fresh) => {
            d = fresh;
            const next = summary(d, production, ctx, () => ctx.refresh());
            summaryBox.replaceWith(next);
            summaryBox = next;
            files(d).then((f) => filesBox.replaceChildren(f)).catch(() => {});
          }).catch(() => {});
        } else {
          const status = document.getElementById('dep-status');
          if (status) status.replaceChildren(badge(e.status));
        }
      }
      if (!stream.timingScheduled) {
        stream.timingScheduled = true;
        setTimeout(() => {
          stream.timingScheduled = false;
          showTimings();
        }, 500);
      }
    },
    onState: (s) => {
      stateBox.textContent = { connecting: 'connecting…', live: 'live', reconnecting: 'reconnecting…', ended: '' }[s] || '';
    },
  });
  stream.start();
  view.root.cdeployStream = stream;
  ctx.onLeave(() => stream.stop());
  details = (async () => {
    d = await get(`/v1/deployments/${seg(id)}`);
    const project = await get(`/v1/projects/${seg(d.slug)}`);
    production = project.production ? await get(`/v1/deployments/${seg(project.production)}`).catch(() => null) : null;
  })();
  try {
    await details;
  } catch (e) {
    stream.stop();
    throw e;
  }
  summaryBox = summary(d, production, ctx, () => ctx.refresh());
  const onHash = () => {
    const m = location.hash.match(/^#L(\d+)$/);
    if (m) view.goto(Number(m[1]));
  };
  window.addEventListener('hashchange', onHash);
  ctx.onLeave(() => window.removeEventListener('hashchange', onHash));
  onHash();
  showTimings();
  files(d).then((f) => filesBox.replaceChildren(f)).catch((e) => filesBox.replaceChildren(h('p', { class: 'error' }, e.message)));

  return h('div', {},
    h('h1', {}, `Deployment ${d.id}`),
    summaryBox,
    h('section', { 'aria-labelledby': 'log-h' },
      h('h2', { id: 'log-h' }, 'Build log ', stateBox), progress, view.root),
    h('div', { class: 'columns' },
      h('section', { 'aria-labelledby': 'timing-h' }, h('h2', { id: 'timing-h' }, 'Timings'), timingBox),
      h('section', { 'aria-labelledby': 'plan-h' }, h('h2', { id: 'plan-h' }, 'Plan'), planBox)),
    h('section', { 'aria-labelledby': 'files-h' }, h('h2', { id: 'files-h' }, 'Files'), filesBox));
}
