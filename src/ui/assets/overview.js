// Overview: how the gateway is doing right now.
//
// `/api/v1/stats` answers counters since the server started; rates are the differences of two
// samples taken here every SAMPLE_MS. The sampler runs while the viewer is signed in, whatever
// page is open, so the charts already have history when the Overview is opened again; it keeps
// MAX_SAMPLES (ten minutes) in memory and nothing anywhere else. A counter that went down means
// the server restarted: the new value is then the whole increase.

import { api } from './api.js';
import { lineChart } from './charts.js';
import { age, badge, errorBox, h, mount, pageHead, statusBadge, table, time, str } from './dom.js';

const SAMPLE_MS = 5000;
const MAX_SAMPLES = 120;

/** [{at: ms, stats}] oldest first. */
const samples = [];
const listeners = new Set();
let timer = null;
let lastError = null;

async function sample() {
  try {
    const stats = await api('/stats');
    samples.push({ at: Date.now(), stats });
    if (samples.length > MAX_SAMPLES) samples.shift();
    lastError = null;
  } catch (e) {
    lastError = e;
  }
  for (const listener of listeners) listener();
}

export function startSampler() {
  if (timer) return;
  sample();
  timer = setInterval(sample, SAMPLE_MS);
}

export function stopSampler() {
  clearInterval(timer);
  timer = null;
  samples.length = 0;
}

function increase(now, before) {
  return now >= before ? now - before : now;
}

function sumValues(map) {
  return Object.values(map || {}).reduce((a, b) => a + b, 0);
}

/** Per-interval figures between consecutive samples: rates per second and gauges. */
function intervals() {
  const out = [];
  for (let i = 1; i < samples.length; i += 1) {
    const a = samples[i - 1].stats;
    const b = samples[i].stats;
    const seconds = Math.max(0.001, (samples[i].at - samples[i - 1].at) / 1000);
    const rate = (x, y) => increase(x, y) / seconds;
    const ok = increase(b.deliveries.succeeded_count, a.deliveries.succeeded_count);
    const bad = increase(b.deliveries.failed_count, a.deliveries.failed_count);
    out.push({
      accepted: rate(b.ingest.accepted_count, a.ingest.accepted_count),
      duplicate: rate(b.ingest.duplicate_count, a.ingest.duplicate_count),
      rejected: rate(sumValues(b.ingest.rejected_counts), sumValues(a.ingest.rejected_counts)),
      succeeded: rate(b.deliveries.succeeded_count, a.deliveries.succeeded_count),
      failed: rate(b.deliveries.failed_count, a.deliveries.failed_count),
      successRate: ok + bad > 0 ? (100 * ok) / (ok + bad) : null,
      pending: b.deliveries.pending_count,
      lag: b.sync.lag,
    });
  }
  return out;
}

function card(label, value, sub, extra) {
  return h('div', { class: 'card' },
    h('div', { class: 'label' }, label),
    h('div', { class: 'value' }, value),
    sub && h('div', { class: 'sub' }, sub),
    extra);
}

function perSecond(v) {
  if (v === null || v === undefined) return '—';
  return `${v >= 10 ? Math.round(v) : v.toFixed(1)}/s`;
}

function cards(latest, series) {
  const { ingest, deliveries, sync, store } = latest;
  const last = series[series.length - 1];
  const rejected = sumValues(ingest.rejected_counts);
  const attempts = deliveries.succeeded_count + deliveries.failed_count;
  const recent = series.filter((s) => s.successRate !== null);
  const recentRate = recent.length ? recent[recent.length - 1].successRate : null;
  const overall = attempts ? (100 * deliveries.succeeded_count) / attempts : null;
  return h('div', { class: 'cards' },
    card('Ingest rate', last ? perSecond(last.accepted) : '…', `${ingest.accepted_count} accepted since start`),
    card('Duplicates', str(ingest.duplicate_count), 'answered 2xx, stored once'),
    card('Rejected', str(rejected), rejected ? 'see reasons below' : 'no refusals'),
    card('Delivery success', overall === null ? '—' : `${Number.isInteger(overall) ? overall : overall.toFixed(1)} %`,
      recentRate === null ? `${attempts} attempts since start` : `last ${SAMPLE_MS / 1000} s: ${recentRate.toFixed(0)} %`),
    card('Queue depth', deliveries.pending_count ?? '—',
      deliveries.oldest_pending_at ? `oldest pending ${age(deliveries.oldest_pending_at)}` : 'nothing waiting'),
    card('Sync lag', sync.lag ?? '—', sync.head === null ? 'store did not answer' : `applied ${sync.applied} · head ${sync.head}`),
    card('Store', store.backend, null, h('div', {}, store.ok ? badge('healthy', 'ok') : badge('not ready', 'bad'))));
}

function charts(series) {
  const span = samples.length > 1 ? (samples[samples.length - 1].at - samples[0].at) / 1000 : 0;
  const pick = (k) => series.map((s) => s[k]);
  return h('div', { class: 'charts' },
    lineChart({
      title: 'Ingest (events/s)', span, series: [
        { name: 'accepted', cls: 's-accepted', values: pick('accepted') },
        { name: 'duplicate', cls: 's-duplicate', values: pick('duplicate') },
        { name: 'rejected', cls: 's-rejected', values: pick('rejected') },
      ],
    }),
    lineChart({
      title: 'Attempts/s', span, series: [
        { name: 'succeeded', cls: 's-succeeded', values: pick('succeeded') },
        { name: 'failed', cls: 's-failed', values: pick('failed') },
      ],
    }),
    lineChart({ title: 'Delivery success', span, unit: '%', max: 100, series: [{ name: 'success', cls: 's-succeeded', values: pick('successRate') }] }),
    lineChart({ title: 'Queue depth', span, series: [{ name: 'pending', cls: 's-neutral', values: pick('pending') }] }),
    lineChart({ title: 'Sync lag', span, series: [{ name: 'lag', cls: 's-neutral', values: pick('lag') }] }));
}

function rejections(latest) {
  const first = samples[0] ? samples[0].stats.ingest.rejected_counts : {};
  const rows = Object.entries(latest.ingest.rejected_counts || {}).map(([reason, n]) => ({
    reason, n, recent: increase(n, first[reason] || 0),
  }));
  return h('section', { class: 'panel' },
    h('h2', {}, 'Rejected webhooks by reason'),
    table([
      { label: 'Reason', value: (r) => h('code', {}, r.reason) },
      { label: 'Since start', class: 'num', value: (r) => str(r.n) },
      { label: 'In the charts\u2019 window', class: 'num', value: (r) => str(r.recent) },
    ], rows, { empty: 'No webhook has been refused since the server started.' }));
}

function gapsText(gaps) {
  if (!gaps || gaps.length === 0) return 'none';
  return h('ul', { class: 'small' }, gaps.slice(0, 3).map((g) =>
    h('li', {}, time(g.from), ' → ', time(g.to), g.reason ? ` (${g.reason})` : '')));
}

function sourcesPanel(list) {
  return h('section', { class: 'panel' },
    h('h2', {}, 'Sources'),
    table([
      { label: 'Name', value: (s) => h('code', {}, s.name) },
      { label: 'Kind', value: (s) => s.kind },
      { label: 'State', value: (s) => statusBadge(s.state) },
      { label: 'Last event', class: 'nowrap', value: (s) => time(s.last_event_at) },
      { label: 'Recent gaps', value: (s) => gapsText(s.recent_gaps) },
    ], list.data || [], { empty: 'No sources are configured.' }));
}

/** The Overview page. */
export async function render(root) {
  const body = h('div', {}, samples.length ? null : h('p', { class: 'muted' }, 'Taking the first sample…'));
  const sources = h('div', {});
  mount(root, pageHead('Overview', h('span', { class: 'muted small hide-narrow' }, `sampled every ${SAMPLE_MS / 1000} s in this tab`)), body, sources);

  const draw = () => {
    if (lastError && samples.length === 0) {
      mount(body, errorBox(lastError));
      return;
    }
    const latest = samples.length ? samples[samples.length - 1].stats : null;
    if (!latest) return;
    const series = intervals();
    mount(body,
      lastError && errorBox(lastError),
      cards(latest, series),
      series.length < 2 ? h('p', { class: 'muted' }, 'The charts appear once a few samples have arrived.') : charts(series),
      h('div', { class: 'spacer-block' }),
      rejections(latest),
      h('p', { class: 'muted small' }, 'Counters of this instance since it started; queue and sync figures come from the shared store. Read at ', time(latest.generated_at), '.'));
  };
  const loadSources = async () => {
    try {
      mount(sources, sourcesPanel(await api('/sources')));
    } catch (e) {
      if (e.status !== 401) mount(sources, errorBox(e));
    }
  };
  draw();
  loadSources();
  listeners.add(draw);
  const sourcesTimer = setInterval(loadSources, 15000);
  return () => {
    listeners.delete(draw);
    clearInterval(sourcesTimer);
  };
}
