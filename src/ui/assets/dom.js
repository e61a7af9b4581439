// DOM helpers. Everything the dashboard shows is built with these: text is always set as text
// (never innerHTML), because event bodies, topics and names come from outside.

/**
 * Creates an element. `attrs` keys: `class`, `text`, `on{Event}` handlers, `dataset`, booleans
 * (set when true), everything else as an attribute. Children may be nodes, strings or arrays.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2).toLowerCase(), value);
    else if (key === 'value') el.value = value;
    else if (key === 'checked') el.checked = !!value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces the children of `el`. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let idCounter = 0;
/** A page-unique id for pairing labels with inputs. */
function uid(prefix = 'f') {
  idCounter += 1;
  return `${prefix}-${idCounter}`;
}

/** A labelled input: `{label, name, type, value, hint, options (select), wide, ...attrs}`. */
export function field({ label, name, type = 'text', value, hint, options, wide, rows, ...attrs }) {
  const id = uid(name || 'f');
  let input;
  if (type === 'select') {
    input = h('select', { id, name, ...attrs },
      (options || []).map(([v, text]) => h('option', { value: v, selected: String(v) === String(value ?? '') }, text)));
  } else if (type === 'textarea') {
    input = h('textarea', { id, name, rows: rows || 3, ...attrs });
    input.value = value ?? '';
  } else if (type === 'checkbox') {
    input = h('input', { id, name, type, checked: !!value, ...attrs });
    return h('div', { class: `field${wide ? ' wide' : ''}` },
      h('label', { class: 'check', for: id }, input, label),
      hint && h('span', { class: 'hint', id: `${id}-hint` }, hint));
  } else {
    input = h('input', { id, name, type, value: value ?? '', ...attrs });
  }
  if (hint) input.setAttribute('aria-describedby', `${id}-hint`);
  return h('div', { class: `field${wide ? ' wide' : ''}` },
    h('label', { for: id }, label), input,
    hint && h('span', { class: 'hint', id: `${id}-hint` }, hint));
}

/** The values of a form's named fields (checkboxes as booleans). */
export function formValues(form) {
  const values = {};
  for (const el of form.elements) {
    if (!el.name) continue;
    values[el.name] = el.type === 'checkbox' ? el.checked : el.value.trim();
  }
  return values;
}

/**
 * A table: `columns` are `{label, value(row) -> node|string, class}`; an empty list shows
 * `empty`. `caption` names it for screen readers.
 */
export function table(columns, rows, { empty = 'Nothing yet.', caption, rowClass } = {}) {
  if (!rows || rows.length === 0) return h('p', { class: 'empty' }, empty);
  return h('div', { class: 'table-wrap' },
    h('table', {},
      caption && h('caption', { class: 'visually-hidden' }, caption),
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: c.class }, c.label)))),
      h('tbody', {}, rows.map((row) => tableRow(columns, row, rowClass)))));
}

export function tableRow(columns, row, rowClass) {
  return h('tr', { class: rowClass && rowClass(row) },
    columns.map((c) => h('td', { class: c.class }, c.value(row) ?? '—')));
}

/** A definition list of `[label, value]` pairs. */
export function props(pairs) {
  return h('dl', { class: 'props' },
    pairs.filter(Boolean).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v ?? '—')]));
}

export function badge(text, kind = 'neutral') {
  return h('span', { class: `badge ${kind}` }, text);
}

/** The badge of a delivery or entity status. */
export function statusBadge(status) {
  const kinds = {
    succeeded: 'ok', started: 'ok', enabled: 'ok', receiving: 'ok', connected: 'ok', completed: 'ok',
    pending: 'warn', delivering: 'warn', connecting: 'warn', backoff: 'warn', standby: 'neutral', waiting: 'neutral',
    recovered: 'ok', scheduled: 'neutral',
    failed: 'bad', disabled: 'bad', refusing: 'bad', disconnected: 'bad', deleted: 'bad', permanently_deleted: 'bad', trashed: 'warn',
  };
  return badge(status ?? 'unknown', kinds[status] || 'neutral');
}

/** A time as the viewer's local time, with the UTC instant as the tooltip. */
export function time(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  // Today's times without the date: the tables stay narrow, the tooltip has the instant.
  const today = d.toDateString() === new Date().toDateString();
  const options = today
    ? { hour: '2-digit', minute: '2-digit', second: '2-digit' }
    : { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' };
  return h('time', { datetime: iso, title: iso }, d.toLocaleString(undefined, options));
}

/** "3 s", "4 min", "2 h 5 min" */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return '—';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60 ? `${s % 60} s` : ''}`.trim();
  const m = Math.floor((s % 3600) / 60);
  return `${Math.floor(s / 3600)} h${m ? ` ${m} min` : ''}`;
}

/** Age of an ISO time, as a duration. */
export function age(iso) {
  if (!iso) return '—';
  return duration((Date.now() - new Date(iso).getTime()) / 1000);
}

/** `datetime-local` input value → RFC 3339 UTC, or '' if empty. */
export function localToIso(value) {
  if (!value) return '';
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}

/** A value as text for a table cell: '—' when there is none. */
export function str(value) {
  return value === null || value === undefined ? '—' : String(value);
}

export function link(href, text) {
  return h('a', { href }, text);
}

/**
 * Pretty-printed JSON of a text, or the text as it is when it is not JSON. A text is re-indented
 * as text, never parsed into numbers: JSON.parse would round 99999999999999999 to 1e17, and the
 * pretty view must show the body Zoom sent, only laid out.
 */
export function prettyJson(text) {
  if (text === null || text === undefined) return '';
  if (typeof text !== 'string') return JSON.stringify(text, null, 2);
  try {
    JSON.parse(text);
  } catch {
    return text;
  }
  return reindent(text);
}

/** Lays out valid JSON text with two-space indents, leaving every token as written. */
function reindent(text) {
  let out = '';
  let depth = 0;
  let inString = false;
  let escaped = false;
  const newline = () => '\n' + '  '.repeat(depth);
  for (let i = 0; i < text.length; i += 1) {
    const c = text[i];
    if (inString) {
      out += c;
      if (escaped) escaped = false;
      else if (c === '\\') escaped = true;
      else if (c === '"') inString = false;
      continue;
    }
    if (c === ' ' || c === '\n' || c === '\r' || c === '\t') continue;
    if (c === '"') {
      inString = true;
      out += c;
    } else if (c === '{' || c === '[') {
      let j = i + 1;
      while (j < text.length && ' \n\r\t'.includes(text[j])) j += 1;
      if (text[j] === (c === '{' ? '}' : ']')) {
        out += c + text[j];
        i = j;
      } else {
        depth += 1;
        out += c + newline();
      }
    } else if (c === '}' || c === ']') {
      depth -= 1;
      out += newline() + c;
    } else if (c === ',') {
      out += ',' + newline();
    } else if (c === ':') {
      out += ': ';
    } else {
      out += c;
    }
  }
  return out;
}

/** Shows a short message at the corner of the screen (announced by screen readers). */
export function toast(message, kind = '') {
  const box = document.getElementById('toasts');
  if (!box) return;
  const item = h('div', { class: `toast ${kind}` }, message);
  box.append(item);
  setTimeout(() => item.remove(), kind === 'bad' ? 8000 : 4000);
}

/** The message of an error for a person. */
export function errorText(e) {
  if (!e) return 'unknown error';
  return e.status ? `${e.message} (HTTP ${e.status})` : e.message || String(e);
}

export function errorBox(e) {
  return h('div', { class: 'error-box', role: 'alert' }, errorText(e));
}

/** A button that disables itself while `action` runs and reports failures as a toast. */
export function actionButton(label, action, { kind = '', ...attrs } = {}) {
  const button = h('button', { type: 'button', class: kind, ...attrs }, label);
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      await action(button);
    } catch (e) {
      toast(errorText(e), 'bad');
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

/** Downloads `rows` (arrays) as a CSV file generated here, in the browser. */
export function downloadCsv(filename, rows) {
  const cell = (v) => {
    const s = v === null || v === undefined ? '' : String(v);
    // Quote everything that needs it, and neutralise spreadsheet formulas in names from outside.
    const safe = /^[=+\-@\t\r]/.test(s) ? `'${s}` : s;
    return /[",\n\r]/.test(safe) || safe !== s ? `"${safe.replaceAll('"', '""')}"` : safe;
  };
  const text = rows.map((r) => r.map(cell).join(',')).join('\r\n') + '\r\n';
  const url = URL.createObjectURL(new Blob([text], { type: 'text/csv;charset=utf-8' }));
  const a = h('a', { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

/** Copies text to the clipboard, saying whether it worked. */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    toast('Copied to the clipboard.');
  } catch {
    toast('Copying was refused by the browser; select the text instead.', 'bad');
  }
}

/** A page heading row with actions on the right. */
export function pageHead(title, ...actions) {
  return h('div', { class: 'page-head' }, h('h1', {}, title), h('div', { class: 'actions' }, actions));
}
