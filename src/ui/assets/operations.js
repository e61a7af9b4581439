// Operational events: what zoomhook itself recorded in the log (source gaps, subscriptions
// disabled for failing, sync quarantines, store recoveries, Zoom's URL-validation handshakes —
// which recur every 72 hours and are worth watching), the deliveries that gave up, per
// subscription, and the log entries sync could not apply.

import { api } from './api.js';
import { errorBox, h, link, mount, pageHead, statusBadge, table, time, str } from './dom.js';

const OPERATIONAL = 'zoomhook.*,endpoint.url_validation';
const enc = encodeURIComponent;

function summary(event, body) {
  if (event === 'endpoint.url_validation') return 'Zoom checked the endpoint; the signed challenge was answered';
  try {
    const o = JSON.parse(body).payload?.object ?? JSON.parse(body).object ?? {};
    const parts = [];
    for (const key of ['id', 'reason', 'error', 'from', 'to', 'disabled_reason', 'failing_since']) {
      if (o[key] !== undefined && o[key] !== null) parts.push(`${key}: ${typeof o[key] === 'object' ? JSON.stringify(o[key]) : o[key]}`);
    }
    return parts.join(' · ');
  } catch {
    return '';
  }
}

async function operationalEvents(box) {
  try {
    const page = await api('/events', { query: { event: OPERATIONAL, order: 'desc', limit: 100, include_body: true } });
    mount(box, table([
      { label: 'Received', class: 'nowrap', value: (e) => time(e.received_at) },
      { label: 'Event', value: (e) => link(`#/events/${enc(e.id)}`, e.event) },
      { label: 'Source', class: 'hide-narrow', value: (e) => e.source },
      { label: 'Details', class: 'small', value: (e) => summary(e.event, e.body) || '—' },
    ], page.data || [], { empty: 'No operational event: no gaps, no disabled subscriptions, no URL validations.', caption: 'Operational events' }));
  } catch (e) {
    mount(box, errorBox(e));
  }
}

async function failedDeliveries(box) {
  try {
    const subs = (await api('/subscriptions', { query: { limit: 1000 } })).data || [];
    const sections = await Promise.all(subs.map(async (s) => {
      const page = await api(`/subscriptions/${enc(s.id)}/deliveries`, { query: { status: 'failed', limit: 20 } });
      const rows = page.data || [];
      if (rows.length === 0) return null;
      return h('div', {},
        h('h3', {}, link(`#/subscriptions/${enc(s.id)}`, s.description || s.url || s.id), ' ',
          s.enabled ? null : statusBadge('disabled')),
        table([
          { label: 'Event', value: (d) => link(`#/events/${enc(d.event_id)}`, d.event || d.event_id) },
          { label: 'Seq', class: 'num', value: (d) => str(d.event_seq) },
          { label: 'Attempts', class: 'num', value: (d) => str(d.attempt_count) },
          { label: 'Last answer', value: (d) => (d.last_status_code ? str(d.last_status_code) : d.last_error || '—') },
          { label: 'Updated', class: 'nowrap', value: (d) => time(d.updated_at) },
          { label: 'Delivery', value: (d) => link(`#/deliveries/${enc(d.id)}`, 'attempts') },
        ], rows, { caption: `Failed deliveries of ${s.id}` }),
        page.next_cursor ? h('p', { class: 'small muted' }, 'Showing the 20 most recent; the subscription\u2019s page lists them all.') : null);
    }));
    const present = sections.filter(Boolean);
    mount(box, present.length ? present : h('p', { class: 'empty' }, 'No delivery has given up.'));
  } catch (e) {
    mount(box, errorBox(e));
  }
}

async function quarantine(box) {
  try {
    const page = await api('/sync/quarantine', { query: { limit: 100 } });
    mount(box, table([
      { label: 'Seq', class: 'num', value: (q) => str(q.seq) },
      { label: 'Event', value: (q) => link(`#/events/${enc(q.event_id)}`, q.event) },
      { label: 'Error', value: (q) => q.error },
      { label: 'Quarantined', class: 'nowrap', value: (q) => time(q.quarantined_at) },
    ], page.data || [], { empty: 'Sync applied every entry of the log.', caption: 'Quarantined entries' }));
  } catch (e) {
    mount(box, errorBox(e));
  }
}

/** The Operational events page. */
export async function render(root) {
  const events = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const failed = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const quarantined = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  mount(root,
    pageHead('Operational events'),
    h('section', { class: 'panel' }, h('h2', {}, 'Recorded by zoomhook'), events),
    h('section', { class: 'panel' }, h('h2', {}, 'Failed deliveries'), failed),
    h('section', { class: 'panel' }, h('h2', {}, 'Sync quarantine'), quarantined));
  await Promise.all([operationalEvents(events), failedDeliveries(failed), quarantine(quarantined)]);
}
