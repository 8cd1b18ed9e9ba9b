// ANSI colour codes in build output, rendered safely: SGR sequences become classes on
// text spans (256-colour and RGB values are set through the CSSOM, which the page's
// Content-Security-Policy allows, unlike style attributes); every other escape sequence
// and control character is dropped. Text is only ever a text node.

// CSI (ESC [ … final byte), OSC (ESC ] … BEL or ESC \), and two-byte escapes.
const ESCAPES = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]/g;
const CONTROLS = /[\x00-\x08\x0b-\x1f\x7f]/g;

/** What a terminal would show last on the line: the text after the last carriage return
 * (progress bars redraw with `\r`). */
function lastRedraw(line) {
  const cut = line.lastIndexOf('\r', line.length - 2);
  return cut >= 0 ? line.slice(cut + 1) : line;
}

/** The line as plain text (for search). */
export function stripAnsi(line) {
  return lastRedraw(line).replace(ESCAPES, '').replace(CONTROLS, '');
}

function xterm256(n) {
  if (n < 16) return null;
  if (n >= 232) {
    const v = 8 + (n - 232) * 10;
    return `rgb(${v}, ${v}, ${v})`;
  }
  const levels = [0, 95, 135, 175, 215, 255];
  const i = n - 16;
  return `rgb(${levels[Math.floor(i / 36)]}, ${levels[Math.floor(i / 6) % 6]}, ${levels[i % 6]})`;
}

/** Reads an extended colour (`38;5;n` or `38;2;r;g;b`) from `codes` at `i`; returns
 * [class or null, css colour or null, index of its last code]. */
function extended(codes, i) {
  if (codes[i + 1] === 5 && i + 2 < codes.length) {
    const n = codes[i + 2] & 255;
    return n < 16 ? [n, null, i + 2] : [null, xterm256(n), i + 2];
  }
  if (codes[i + 1] === 2 && i + 4 < codes.length) {
    const [r, g, b] = codes.slice(i + 2, i + 5).map((v) => v & 255);
    return [null, `rgb(${r}, ${g}, ${b})`, i + 4];
  }
  return [null, null, i];
}

function applySgr(state, params) {
  const codes = params === '' ? [0] : params.split(';').map((p) => (p === '' ? 0 : Number(p)));
  for (let i = 0; i < codes.length; i++) {
    const c = codes[i];
    if (c === 0) Object.assign(state, { fg: null, bg: null, fgCss: null, bgCss: null, bold: false, dim: false, italic: false, underline: false });
    else if (c === 1) state.bold = true;
    else if (c === 2) state.dim = true;
    else if (c === 3) state.italic = true;
    else if (c === 4) state.underline = true;
    else if (c === 22) { state.bold = false; state.dim = false; }
    else if (c === 23) state.italic = false;
    else if (c === 24) state.underline = false;
    else if (c >= 30 && c <= 37) { state.fg = c - 30; state.fgCss = null; }
    else if (c >= 90 && c <= 97) { state.fg = c - 90 + 8; state.fgCss = null; }
    else if (c === 39) { state.fg = null; state.fgCss = null; }
    else if (c >= 40 && c <= 47) { state.bg = c - 40; state.bgCss = null; }
    else if (c >= 100 && c <= 107) { state.bg = c - 100 + 8; state.bgCss = null; }
    else if (c === 49) { state.bg = null; state.bgCss = null; }
    else if (c === 38 || c === 48) {
      const [cls, css, end] = extended(codes, i);
      if (c === 38) { state.fg = cls; state.fgCss = css; } else { state.bg = cls; state.bgCss = css; }
      i = end;
    }
  }
}

/** Splits a line into styled segments: [{text, state}]. */
export function segments(line) {
  const text = lastRedraw(line);
  const out = [];
  const state = { fg: null, bg: null, fgCss: null, bgCss: null, bold: false, dim: false, italic: false, underline: false };
  const sgr = /\x1b\[([0-9;]*)m/g;
  let at = 0;
  const pushText = (s) => {
    const clean = s.replace(ESCAPES, '').replace(CONTROLS, '');
    if (clean) out.push({ text: clean, state: { ...state } });
  };
  for (let m = sgr.exec(text); m; m = sgr.exec(text)) {
    pushText(text.slice(at, m.index));
    applySgr(state, m[1]);
    at = m.index + m[0].length;
  }
  pushText(text.slice(at));
  return out;
}

/** Appends `text` to `el`, the case-insensitive matches of `query` (lowercase) in <mark>. */
function appendMarked(el, text, query) {
  if (!query) {
    el.append(document.createTextNode(text));
    return;
  }
  const lower = text.toLowerCase();
  let at = 0;
  for (let i = lower.indexOf(query); i >= 0; i = lower.indexOf(query, at)) {
    if (i > at) el.append(document.createTextNode(text.slice(at, i)));
    const mark = document.createElement('mark');
    mark.textContent = text.slice(i, i + query.length);
    el.append(mark);
    at = i + query.length;
  }
  if (at < text.length) el.append(document.createTextNode(text.slice(at)));
}

/** Renders a line's segments into `el` (search matches marked). */
export function renderLine(el, line, query) {
  for (const { text, state } of segments(line)) {
    const plain = state.fg === null && state.bg === null && !state.fgCss && !state.bgCss
      && !state.bold && !state.dim && !state.italic && !state.underline;
    if (plain) {
      appendMarked(el, text, query);
      continue;
    }
    const span = document.createElement('span');
    if (state.fg !== null) span.classList.add(`fg${state.fg}`);
    if (state.bg !== null) span.classList.add(`bg${state.bg}`);
    if (state.bold) span.classList.add('ab');
    if (state.dim) span.classList.add('ad');
    if (state.italic) span.classList.add('ai');
    if (state.underline) span.classList.add('au');
    if (state.fgCss) span.style.color = state.fgCss;
    if (state.bgCss) span.style.backgroundColor = state.bgCss;
    appendMarked(span, text, query);
    el.append(span);
  }
}
