// Small SVG line charts, drawn here so the dashboard loads nothing from anywhere else.
//
// A chart is redrawn whole on every sample (a few dozen points): simpler than updating paths and
// cheap at this size. The SVG scales to its box (viewBox + preserveAspectRatio="none"); strokes
// keep their width through `vector-effect: non-scaling-stroke` in the stylesheet. Each chart has
// a text alternative that states the latest values, for screen readers.

import { h } from './dom.js';

const NS = 'http://www.w3.org/2000/svg';
const W = 300;
const H = 100;

function svg(tag, attrs = {}) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

/** A round upper bound for the y axis: 1, 2, 5, 10, 20, 50 … */
function niceMax(value) {
  if (!(value > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 5, 10]) if (value <= m * p) return m * p;
  return 10 * p;
}

function formatNumber(v, unit) {
  if (v === null || v === undefined) return '—';
  const rounded = Math.abs(v) >= 10 || Number.isInteger(v) ? Math.round(v) : v.toFixed(1);
  return `${rounded}${unit ? ` ${unit}` : ''}`;
}

/**
 * A line chart box: `title`, `series` = [{name, cls, values: [number|null]}] (oldest first, all
 * the same length), `unit` for the axis, `span` = seconds the x axis covers (for its label),
 * `max` to fix the y range (e.g. 100 for percentages).
 */
export function lineChart({ title, series, unit = '', span, max }) {
  const length = Math.max(0, ...series.map((s) => s.values.length));
  const peak = Math.max(0, ...series.flatMap((s) => s.values.filter((v) => v !== null && v !== undefined)));
  const top = max ?? niceMax(peak);
  const latest = series.map((s) => `${s.name} ${formatNumber(s.values[s.values.length - 1], unit)}`).join(', ');
  const chart = svg('svg', {
    class: 'chart', viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img',
    'aria-label': `${title}: ${length ? latest : 'no samples yet'}`,
  });
  for (const y of [0, H / 2, H]) chart.append(svg('line', { class: 'grid-line', x1: 0, x2: W, y1: y, y2: y }));
  if (length > 1) {
    for (const s of series) {
      let d = '';
      let pen = false;
      s.values.forEach((v, i) => {
        if (v === null || v === undefined) {
          pen = false;
          return;
        }
        const x = (i / (length - 1)) * W;
        const y = H - (Math.min(v, top) / top) * (H - 2) - 1;
        d += `${pen ? 'L' : 'M'}${x.toFixed(1)} ${y.toFixed(1)} `;
        pen = true;
      });
      if (d) chart.append(svg('path', { class: `series ${s.cls}`, d: d.trim() }));
    }
  }
  return h('div', { class: 'chart-box panel' },
    h('h3', {}, title),
    h('div', { class: 'axis', 'aria-hidden': 'true' }, h('span', {}, `max ${formatNumber(top, unit)}`)),
    chart,
    h('div', { class: 'axis', 'aria-hidden': 'true' },
      h('span', {}, span ? `${Math.round(span / 60) || '<1'} min ago` : ''), h('span', {}, 'now')),
    h('div', { class: 'legend' }, series.map((s) =>
      h('span', {}, h('span', { class: `key ${s.cls}` }), `${s.name}: ${formatNumber(s.values[s.values.length - 1], unit)}`))));
}
