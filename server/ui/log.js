// A deployment's build log: `LogStream` follows the event WebSocket and never loses or
// repeats a line (it resumes with `after=` from the last sequence number it holds,
// whenever the socket closes, goes quiet, or the tab comes back from hidden or frozen);
// `LogView` shows any number of lines by rendering only those in sight.

import { h } from './dom.js';
import { renderLine, stripAnsi } from './ansi.js';

/** Height of one log row in CSS pixels (app.css gives `.log-line` the same). */
const ROW = 18;
/** Rows rendered above and below the visible ones. */
const OVERSCAN = 30;
/** A socket that brought nothing for this long is replaced (the server pings every 20 s,
 * which a page cannot see, so a quiet build costs a harmless resume at most). */
const QUIET_MS = 45000;

export class LogStream {
  /** `onEvent(e)` gets every event once, in order (`seq` 1, 2, 3, …). */
  constructor(id, { onEvent, onState }) {
    this.id = id;
    this.last = 0;
    this.done = false;
    this.stopped = false;
    this.ws = null;
    this.delay = 250;
    this.onEvent = onEvent;
    this.onState = onState || (() => {});
    this.check = () => this.ensure();
    // Leaving the page (it may be kept in the back-forward cache): the socket closes, and
    // `pageshow` resumes from the last line held if the page comes back.
    this.hide = () => {
      this.ws = null;
      clearTimeout(this.retry);
      this.closeAll();
    };
    // Every socket not yet closed: one being replaced may still be closing.
    this.sockets = new Set();
  }

  start() {
    document.addEventListener('visibilitychange', this.check);
    document.addEventListener('resume', this.check);
    window.addEventListener('online', this.check);
    window.addEventListener('pageshow', this.check);
    window.addEventListener('pagehide', this.hide);
    this.watchdog = setInterval(this.check, 5000);
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearInterval(this.watchdog);
    clearTimeout(this.retry);
    document.removeEventListener('visibilitychange', this.check);
    document.removeEventListener('resume', this.check);
    window.removeEventListener('online', this.check);
    window.removeEventListener('pageshow', this.check);
    window.removeEventListener('pagehide', this.hide);
    this.closeAll();
  }

  closeAll() {
    for (const ws of this.sockets) ws.close();
  }

  connect() {
    if (this.stopped || this.done) return;
    clearTimeout(this.retry);
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const url = `${scheme}://${location.host}/v1/deployments/${encodeURIComponent(this.id)}/events?after=${this.last}`;
    if (this.ws) this.ws.close();
    const ws = new WebSocket(url);
    this.ws = ws;
    this.sockets.add(ws);
    this.heard = Date.now();
    this.onState('connecting');
    ws.onopen = () => {
      if (this.ws === ws) this.onState('live');
    };
    ws.onmessage = (m) => {
      if (this.ws !== ws) return;
      this.heard = Date.now();
      this.delay = 250;
      let e;
      try {
        e = JSON.parse(m.data);
      } catch (_) {
        return;
      }
      if (!Number.isInteger(e.seq) || e.seq <= this.last) return; // seen already
      if (e.seq !== this.last + 1) {
        // A gap: start again from the last line held.
        this.reconnect(0);
        return;
      }
      this.last = e.seq;
      if (e.type === 'status' && ['ready', 'failed', 'canceled'].includes(e.status)) this.done = true;
      this.onEvent(e);
      if (this.done) {
        this.onState('ended');
        this.stop();
      }
    };
    ws.onclose = (ev) => {
      this.sockets.delete(ws);
      if (this.ws !== ws || this.stopped || this.done) return;
      if (ev.code === 1008) {
        // The session ended or its token was revoked: no resume will be let in.
        this.stop();
        window.dispatchEvent(new CustomEvent('cdeploy:signed-out'));
        return;
      }
      this.onState('reconnecting');
      this.reconnect(this.delay);
      this.delay = Math.min(this.delay * 2, 5000);
    };
  }

  reconnect(delay) {
    const old = this.ws;
    this.ws = null;
    if (old && old.readyState <= WebSocket.OPEN) old.close();
    clearTimeout(this.retry);
    this.retry = setTimeout(() => this.connect(), delay);
  }

  /** Called on visibility, resume from frozen, network back, and every 5 s. */
  ensure() {
    if (this.stopped || this.done) return;
    if (!this.ws) {
      if (document.visibilityState === 'visible') this.connect();
      return;
    }
    if (this.ws.readyState > WebSocket.OPEN || Date.now() - this.heard > QUIET_MS) this.reconnect(0);
  }
}

export class LogView {
  /** `linkBase`: the page a line's link points into (`/ui/deployments/<id>`). */
  constructor({ label = 'Build log' } = {}) {
    this.lines = [];
    this.query = '';
    this.matches = [];
    this.current = -1;
    this.target = -1;
    this.follow = true;
    this.pending = false;
    this.range = [0, 0];
    this.dirty = true;

    const search = h('input', { type: 'search', id: 'log-search', placeholder: 'Search the log', autocomplete: 'off', spellcheck: 'false' });
    this.count = h('output', { for: 'log-search', class: 'log-count', 'aria-live': 'polite' });
    this.total = h('span', { class: 'log-total' }, '0 lines');
    const follow = h('input', { type: 'checkbox', id: 'log-follow', checked: true });
    this.followBox = follow;
    follow.addEventListener('change', () => {
      this.follow = follow.checked;
      this.schedule();
    });
    let debounce;
    search.addEventListener('input', () => {
      clearTimeout(debounce);
      debounce = setTimeout(() => this.setQuery(search.value), 120);
    });
    search.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter') {
        ev.preventDefault();
        clearTimeout(debounce);
        if (search.value.toLowerCase() !== this.query) this.setQuery(search.value);
        else this.step(ev.shiftKey ? -1 : 1);
      }
    });
    this.searchInput = search;
    const toolbar = h('div', { class: 'log-toolbar' },
      h('label', { for: 'log-search', class: 'sr-only' }, 'Search the log'),
      search,
      h('button', { type: 'button', onclick: () => this.step(-1), 'aria-label': 'Previous match' }, '↑'),
      h('button', { type: 'button', onclick: () => this.step(1), 'aria-label': 'Next match' }, '↓'),
      this.count,
      h('span', { class: 'log-follow' }, follow, h('label', { for: 'log-follow' }, 'Follow')),
      this.total);
    this.spacer = h('div', { class: 'log-spacer' });
    this.rows = h('div', { class: 'log-rows' });
    this.viewport = h('div', { class: 'log-viewport', tabindex: '0', role: 'region', 'aria-label': `${label} lines` },
      this.spacer, this.rows);
    this.root = h('section', { class: 'log-panel', 'aria-label': label }, toolbar, this.viewport);
    // For the browser tests: the lines held, which the rows render.
    this.root.cdeployLog = this;

    this.viewport.addEventListener('scroll', () => {
      if (this.autoScroll) {
        this.autoScroll = false;
      } else {
        const v = this.viewport;
        const atBottom = v.scrollTop + v.clientHeight >= v.scrollHeight - ROW * 2;
        if (atBottom !== this.follow) {
          this.follow = atBottom;
          this.followBox.checked = atBottom;
        }
      }
      this.schedule();
    }, { passive: true });
    if (window.ResizeObserver) new ResizeObserver(() => this.schedule()).observe(this.viewport);
  }

  /** Adds a line: {seq, step, stream, text}. */
  push(line) {
    const i = this.lines.length;
    this.lines.push(line);
    if (this.query && this.plain(i).includes(this.query)) this.matches.push(i);
    this.grown = true;
    this.schedule();
  }

  plain(i) {
    const l = this.lines[i];
    if (l.plain === undefined) l.plain = stripAnsi(l.text).toLowerCase();
    return l.plain;
  }

  /** Renders on the next frame. Hidden tabs get no frames, and a tab frozen and resumed
   * can lose the frame it asked for: a timer renders then (timers of hidden tabs run at
   * most once a second; a frozen tab's wait for its resume), so no line is left unshown. */
  schedule() {
    if (this.pending) return;
    this.pending = true;
    const run = () => {
      if (!this.pending) return;
      this.pending = false;
      clearTimeout(this.fallback);
      this.render();
    };
    requestAnimationFrame(run);
    this.fallback = setTimeout(run, 250);
  }

  render() {
    const v = this.viewport;
    const n = this.lines.length;
    if (this.grown) {
      this.grown = false;
      this.spacer.style.height = `${n * ROW}px`;
      this.total.textContent = `${n.toLocaleString()} ${n === 1 ? 'line' : 'lines'}`;
      if (this.query) this.count.textContent = this.countText();
    }
    if (this.follow && v.scrollTop + v.clientHeight < n * ROW - 1) {
      this.autoScroll = true;
      v.scrollTop = n * ROW;
    }
    const height = v.clientHeight || 600;
    const first = Math.max(0, Math.floor(v.scrollTop / ROW) - OVERSCAN);
    const last = Math.min(n, Math.ceil((v.scrollTop + height) / ROW) + OVERSCAN);
    if (!this.dirty && first === this.range[0] && last === this.range[1]) return;
    this.dirty = false;
    this.range = [first, last];
    // For measurements (bench/dashboard.sh): when the first line was drawn.
    if (n && !this.drawn) {
      this.drawn = true;
      performance.mark('cdeploy-first-log-line');
    }
    this.rows.style.transform = `translateY(${first * ROW}px)`;
    const frag = document.createDocumentFragment();
    const currentLine = this.current >= 0 ? this.matches[this.current] : -1;
    for (let i = first; i < last; i++) frag.append(this.row(i, currentLine));
    this.rows.replaceChildren(frag);
  }

  row(i, currentLine) {
    const l = this.lines[i];
    let cls = `log-line s-${l.stream}`;
    if (i === this.target) cls += ' target';
    if (i === currentLine) cls += ' current';
    const text = h('span', { class: 'lt' });
    renderLine(text, l.text, this.query && this.plain(i).includes(this.query) ? this.query : '');
    return h('div', { class: cls, 'data-line': i + 1 },
      h('a', { class: 'ln', href: `#L${i + 1}`, tabindex: '-1', 'aria-label': `Line ${i + 1}` }, String(i + 1)),
      text);
  }

  countText() {
    if (!this.matches.length) return 'no matches';
    return `${this.current + 1} of ${this.matches.length.toLocaleString()}`;
  }

  setQuery(q) {
    this.query = q.trim().toLowerCase();
    this.matches = [];
    this.current = -1;
    if (this.query) {
      for (let i = 0; i < this.lines.length; i++) if (this.plain(i).includes(this.query)) this.matches.push(i);
      if (this.matches.length) {
        const top = Math.floor(this.viewport.scrollTop / ROW);
        const at = this.matches.findIndex((m) => m >= top);
        this.current = at >= 0 ? at : 0;
        this.reveal(this.matches[this.current]);
      }
    }
    this.count.textContent = this.query ? this.countText() : '';
    this.dirty = true;
    this.schedule();
  }

  step(dir) {
    if (!this.matches.length) return;
    this.current = (this.current + dir + this.matches.length) % this.matches.length;
    this.count.textContent = this.countText();
    this.reveal(this.matches[this.current]);
  }

  /** Scrolls line index `i` into the middle of the view (and stops following). */
  reveal(i) {
    this.follow = false;
    this.followBox.checked = false;
    const v = this.viewport;
    v.scrollTop = Math.max(0, i * ROW - (v.clientHeight || 600) / 2);
    this.dirty = true;
    this.schedule();
  }

  /** Highlights line number `n` (1-based) and scrolls to it, once it has arrived. */
  goto(n) {
    if (!(n >= 1)) return;
    this.target = n - 1;
    if (n <= this.lines.length) this.reveal(n - 1);
    else this.wanted = n;
  }

  /** Called as lines arrive: a line asked for by link is revealed when it exists. */
  settle() {
    if (this.wanted && this.wanted <= this.lines.length) {
      const n = this.wanted;
      this.wanted = 0;
      this.reveal(n - 1);
    }
  }
}
