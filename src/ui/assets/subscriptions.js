// Subscriptions: where events go. Create, edit, enable/disable, the secret (reveal, rotate), a
// test send, the deliveries with every attempt, retry and replay.
//
// A generated secret is shown by the API once, in the answer to the create or rotation that
// made it; the dashboard shows that answer on the next screen and keeps it nowhere. "Reveal"
// asks the API again (`GET …/secret`) and hides it when the viewer leaves the page.

import { api } from './api.js';
import {
  actionButton, badge, copyText, errorBox, errorText, field, formValues, h, link, localToIso, mount,
  pageHead, props, statusBadge, table, time, toast, str,
} from './dom.js';

/** A secret from a create answer, shown once on the subscription's page. */
let freshSecret = null;

const enc = encodeURIComponent;

function nameOf(s) {
  return s.description || s.url || (s.email && s.email.to) || s.id;
}

function countsText(c) {
  if (!c) return '—';
  return h('span', { class: 'row small' },
    badge(`${c.succeeded} ok`, 'ok'),
    c.failed ? badge(`${c.failed} failed`, 'bad') : null,
    c.pending + c.delivering ? badge(`${c.pending + c.delivering} pending`, 'warn') : null);
}

/** The Subscriptions page. */
export async function renderList(root) {
  const page = await api('/subscriptions', { query: { limit: 1000 } });
  mount(root,
    pageHead('Subscriptions', h('a', { class: 'button', href: '#/subscriptions/new' }, 'New subscription')),
    table([
      { label: 'Subscription', value: (s) => link(`#/subscriptions/${enc(s.id)}`, nameOf(s)) },
      { label: 'Events', value: (s) => (s.events || []).join(', ') || 'every event' },
      { label: 'State', value: (s) => (s.enabled ? (s.failing_since ? badge('failing', 'warn') : statusBadge('enabled')) : statusBadge('disabled')) },
      { label: 'Deliveries', value: (s) => countsText(s.delivery_counts) },
      { label: 'Kind', class: 'hide-narrow', value: (s) => s.kind },
    ], page.data || [], { empty: 'No subscription yet: create one to send events to your own systems.', caption: 'Subscriptions' }));
}

function headersText(headers) {
  return Object.entries(headers || {}).map(([k, v]) => `${k}: ${v}`).join('\n');
}

function parseHeaders(text) {
  const headers = {};
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const at = line.indexOf(':');
    if (at <= 0) throw new Error(`A header line must be “Name: value”: ${line.trim()}`);
    headers[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return headers;
}

function subscriptionForm(existing, onSaved) {
  const s = existing || { kind: 'webhook', scheme: 'standard', body_format: 'raw', ordering: 'none', timeout: '10s', max_in_flight: 8, enabled: true, events: [] };
  const email = s.email || {};
  const status = h('div', { role: 'alert' });
  const form = h('form', { class: 'panel', 'aria-label': existing ? 'Edit subscription' : 'New subscription', novalidate: true },
    h('div', { class: 'form-grid' },
      field({ label: 'Kind', name: 'kind', type: 'select', value: s.kind, options: [['webhook', 'Webhook'], ['email', 'Email']], disabled: !!existing }),
      field({ label: 'Description', name: 'description', value: s.description }),
      field({ label: 'URL', name: 'url', type: 'url', value: s.url, wide: true, placeholder: 'https://example.com/zoom-events', dataset: { kind: 'webhook' } }),
      field({ label: 'Events', name: 'events', value: (s.events || []).join(', '), wide: true, hint: 'Comma-separated names or patterns, e.g. meeting.*, recording.completed, *.deleted' }),
      field({ label: 'Signature scheme', name: 'scheme', type: 'select', value: s.scheme, options: [['standard', 'Standard Webhooks'], ['zoom', 'Zoom (x-zm-signature)']] }),
      field({ label: 'Body format', name: 'body_format', type: 'select', value: s.body_format, options: [['raw', 'raw (verbatim)'], ['compact', 'compact']] }),
      field({ label: 'Ordering', name: 'ordering', type: 'select', value: s.ordering, options: [['none', 'none'], ['entity', 'per entity']] }),
      field({ label: 'Timeout', name: 'timeout', value: s.timeout, hint: 'e.g. 10s, 1500ms' }),
      field({ label: 'Max in flight', name: 'max_in_flight', type: 'number', min: 1, value: s.max_in_flight }),
      field({ label: 'Rate limit (per second)', name: 'rate_limit', type: 'number', min: 0, value: s.rate_limit ?? '', hint: 'Empty for none' }),
      field({ label: 'Custom headers', name: 'headers', type: 'textarea', value: headersText(s.headers), wide: true, hint: 'One “Name: value” per line' }),
      field({ label: 'Email to', name: 'email_to', value: email.to, dataset: { kind: 'email' }, hint: 'Addresses, or a template such as {{payload.object.host_email}}' }),
      field({ label: 'Email subject', name: 'email_subject', value: email.subject, dataset: { kind: 'email' } }),
      field({ label: 'Email body', name: 'email_body', type: 'textarea', value: email.body, wide: true, dataset: { kind: 'email' } }),
      existing ? null : field({ label: 'Secret', name: 'secret', type: 'password', autocomplete: 'new-password', hint: 'Leave empty to have one generated (whsec_…)' }),
      field({ label: 'HTTPS only', name: 'https_only', type: 'checkbox', value: s.https_only }),
      field({ label: 'Enabled', name: 'enabled', type: 'checkbox', value: s.enabled })),
    status,
    h('div', { class: 'actions' },
      h('button', { type: 'submit' }, existing ? 'Save' : 'Create subscription'),
      link(existing ? `#/subscriptions/${enc(s.id)}` : '#/subscriptions', 'Cancel')));
  const showKind = () => {
    const kind = form.elements.kind.value;
    for (const input of form.querySelectorAll('[data-kind]')) input.closest('.field').hidden = input.dataset.kind !== kind;
  };
  form.elements.kind.addEventListener('change', showKind);
  showKind();
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const v = formValues(form);
    let body;
    try {
      body = {
        url: v.kind === 'webhook' ? v.url : null,
        events: v.events.split(',').map((p) => p.trim()).filter(Boolean),
        scheme: v.scheme,
        body_format: v.body_format,
        ordering: v.ordering,
        timeout: v.timeout || undefined,
        max_in_flight: v.max_in_flight ? Number(v.max_in_flight) : undefined,
        rate_limit: v.rate_limit === '' ? null : Number(v.rate_limit),
        headers: parseHeaders(v.headers),
        description: v.description,
        https_only: v.https_only,
        enabled: v.enabled,
        email: v.kind === 'email' ? { to: v.email_to || null, subject: v.email_subject || null, body: v.email_body || null } : null,
      };
      if (!existing) {
        body.kind = v.kind;
        if (v.secret) body.secret = v.secret;
      }
    } catch (err) {
      mount(status, errorBox(err));
      return;
    }
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    try {
      const saved = existing
        ? await api(`/subscriptions/${enc(s.id)}`, { method: 'PATCH', body })
        : await api('/subscriptions', { method: 'POST', body });
      onSaved(saved);
    } catch (err) {
      mount(status, errorBox(err));
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

export async function renderCreate(root) {
  mount(root, pageHead('New subscription', link('#/subscriptions', '← All subscriptions')),
    subscriptionForm(null, (saved) => {
      freshSecret = saved.secret ? { id: saved.id, secret: saved.secret } : null;
      toast('Subscription created.');
      location.hash = `#/subscriptions/${enc(saved.id)}`;
    }));
}

export async function renderEdit(root, [id]) {
  const s = await api(`/subscriptions/${enc(id)}`);
  mount(root, pageHead(`Edit ${nameOf(s)}`, link(`#/subscriptions/${enc(id)}`, '← Back')),
    subscriptionForm(s, () => {
      toast('Saved.');
      location.hash = `#/subscriptions/${enc(id)}`;
    }));
}

function secretBox(secret, note) {
  return h('div', {},
    note && h('p', { class: 'small' }, note),
    h('div', { class: 'row' }, h('code', { class: 'secret', 'aria-label': 'Secret' }, secret),
      actionButton('Copy', () => copyText(secret), { kind: 'secondary' })));
}

function secretPanel(s) {
  const out = h('div', { 'aria-live': 'polite', class: 'secret-out' });
  if (freshSecret && freshSecret.id === s.id) {
    mount(out, secretBox(freshSecret.secret, 'The generated secret. Configure it in the receiving application; it is also available under “Reveal”.'));
    freshSecret = null;
  }
  const overlap = field({ label: 'Keep the old secret valid for', name: 'overlap', value: '24h', hint: 'Both secrets sign deliveries meanwhile (e.g. 1h, 24h)' });
  return h('section', { class: 'panel' },
    h('h2', {}, 'Secret'),
    h('div', { class: 'actions' },
      actionButton('Reveal secret', async () => {
        const answer = await api(`/subscriptions/${enc(s.id)}/secret`);
        mount(out, secretBox(answer.secret),
          answer.previous_secret && h('p', { class: 'small muted' }, 'The previous secret is valid until ', time(answer.previous_secret_expires_at), '.'),
          h('button', { type: 'button', class: 'secondary', onclick: () => mount(out) }, 'Hide'));
      }, { kind: 'secondary' })),
    out,
    h('h3', {}, 'Rotate'),
    h('form', { class: 'form-grid', 'aria-label': 'Rotate secret' }, overlap,
      h('div', { class: 'actions' }, actionButton('Rotate secret', async () => {
        const value = overlap.querySelector('input').value.trim();
        if (!window.confirm('Generate a new secret? The receiving application must be given it.')) return;
        const answer = await api(`/subscriptions/${enc(s.id)}`, {
          method: 'PATCH', body: { rotate_secret: true, ...(value ? { rotation_overlap: value } : {}) },
        });
        mount(out, secretBox(answer.secret || '(not returned)', 'The new secret.'));
        toast('Secret rotated.');
      }, { kind: 'danger' }))));
}

function testPanel(s) {
  const out = h('div', { 'aria-live': 'polite', class: 'test-result' });
  return h('section', { class: 'panel' },
    h('h2', {}, 'Send a test event'),
    h('p', { class: 'muted small' }, 'Sends a signed test event to this subscription now, outside the queue.'),
    actionButton('Send test event', async () => {
      mount(out, h('p', { class: 'muted' }, 'Sending…'));
      const r = await api(`/subscriptions/${enc(s.id)}/test`, { method: 'POST', body: {} });
      mount(out, props([
        ['Result', r.ok ? badge('ok', 'ok') : badge('failed', 'bad')],
        ['Status', r.status_code ? str(r.status_code) : '—'],
        ['Duration', r.duration_ms !== null && r.duration_ms !== undefined ? `${r.duration_ms} ms` : '—'],
        ['Error', r.error],
        ['Response', r.response_excerpt && h('pre', { class: 'code wrap' }, r.response_excerpt)],
      ]));
    }, { kind: 'secondary' }),
    out);
}

function deliveryColumns(refresh) {
  return [
    { label: 'Event', value: (d) => link(`#/events/${enc(d.event_id)}`, d.event || d.event_id) },
    { label: 'Seq', class: 'num', value: (d) => str(d.event_seq) },
    { label: 'Status', value: (d) => statusBadge(d.status) },
    { label: 'Attempts', class: 'num', value: (d) => str(d.attempt_count) },
    { label: 'Last answer', value: (d) => (d.last_status_code ? str(d.last_status_code) : d.last_error || '—') },
    { label: 'Next attempt', class: 'nowrap hide-narrow', value: (d) => time(d.next_attempt_at) },
    {
      label: 'Actions', value: (d) => h('span', { class: 'row' },
        link(`#/deliveries/${enc(d.id)}`, 'Attempts'),
        d.status === 'failed' ? actionButton('Retry', async () => {
          await api(`/deliveries/${enc(d.id)}/retry`, { method: 'POST' });
          toast('Delivery queued again.');
          setTimeout(refresh, 1000);
        }, { kind: 'secondary', 'aria-label': `Retry delivery of ${d.event || d.event_id} (seq ${d.event_seq})` }) : null),
    },
  ];
}

function deliveriesPanel(s) {
  const list = h('div', {});
  const filter = field({ label: 'Status', name: 'status', type: 'select', options: [['', 'All'], ['pending', 'pending'], ['delivering', 'delivering'], ['succeeded', 'succeeded'], ['failed', 'failed']] });
  // The rows shown so far: "Load more" adds the next page to them.
  let shown = [];
  const load = async (cursor) => {
    try {
      const page = await api(`/subscriptions/${enc(s.id)}/deliveries`, {
        query: { status: filter.querySelector('select').value, cursor, limit: 50 },
      });
      shown = cursor ? shown.concat(page.data || []) : page.data || [];
      mount(list,
        table(deliveryColumns(() => load(null)), shown, { empty: 'No delivery matches.', caption: 'Deliveries' }),
        page.next_cursor ? actionButton('Load more', () => load(page.next_cursor), { kind: 'secondary' }) : null);
    } catch (e) {
      mount(list, errorBox(e));
    }
  };
  filter.querySelector('select').addEventListener('change', () => load(null));
  load(null);
  return [h('section', { class: 'panel' },
    h('div', { class: 'page-head' }, h('h2', {}, 'Deliveries'),
      h('div', { class: 'actions' }, filter, actionButton('Refresh', () => load(null), { kind: 'secondary' }))),
    list), () => load(null)];
}

function replayPanel(s, refresh) {
  const form = h('form', { class: 'form-grid', 'aria-label': 'Replay' },
    field({ label: 'After seq', name: 'after_seq', type: 'number', min: 0 }),
    field({ label: 'Up to seq', name: 'to_seq', type: 'number', min: 0 }),
    field({ label: 'Received since', name: 'since', type: 'datetime-local' }),
    field({ label: 'Received until', name: 'until', type: 'datetime-local' }),
    field({ label: 'Entity', name: 'entity', hint: 'Object id or uuid' }),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Replay')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const v = formValues(form);
    const body = {};
    if (v.after_seq) body.after_seq = Number(v.after_seq);
    if (v.to_seq) body.to_seq = Number(v.to_seq);
    if (v.since) body.since = localToIso(v.since);
    if (v.until) body.until = localToIso(v.until);
    if (v.entity) body.entity = v.entity;
    if (Object.keys(body).length === 0 && !window.confirm('Replay every event in the log to this subscription?')) return;
    try {
      const answer = await api(`/subscriptions/${enc(s.id)}/replay`, { method: 'POST', body });
      const n = answer.queued_count ?? 0;
      toast(`Queued ${n} ${n === 1 ? 'delivery' : 'deliveries'}.`);
      setTimeout(refresh, 1000);
    } catch (err) {
      toast(errorText(err), 'bad');
    }
  });
  return h('section', { class: 'panel' }, h('h2', {}, 'Replay'),
    h('p', { class: 'muted small' }, 'Queues the matching events of the log to this subscription again (its event filter applies).'),
    form);
}

/** One subscription. */
export async function renderDetail(root, [id]) {
  const s = await api(`/subscriptions/${enc(id)}`);
  const c = s.delivery_counts || {};
  const toggle = actionButton(s.enabled ? 'Disable' : 'Enable', async () => {
    await api(`/subscriptions/${enc(id)}`, { method: 'PATCH', body: { enabled: !s.enabled } });
    toast(s.enabled ? 'Disabled.' : 'Enabled.');
    window.dispatchEvent(new HashChangeEvent('hashchange'));
  }, { kind: 'secondary' });
  const remove = actionButton('Delete', async () => {
    if (!window.confirm('Delete this subscription and its pending deliveries?')) return;
    await api(`/subscriptions/${enc(id)}`, { method: 'DELETE' });
    toast('Deleted.');
    location.hash = '#/subscriptions';
  }, { kind: 'danger' });
  const [deliveries, refresh] = deliveriesPanel(s);
  mount(root,
    pageHead(nameOf(s), h('a', { class: 'button secondary', href: `#/subscriptions/${enc(id)}/edit` }, 'Edit'), toggle, remove),
    h('p', {}, link('#/subscriptions', '← All subscriptions')),
    h('div', { class: 'cards' },
      ['pending', 'delivering', 'succeeded', 'failed'].map((k) =>
        h('div', { class: 'card' }, h('div', { class: 'label' }, k), h('div', { class: 'value' }, str(c[k] ?? '—'))))),
    h('section', { class: 'panel' }, props([
      ['Id', h('code', {}, s.id)],
      ['State', s.enabled ? statusBadge('enabled') : h('span', {}, statusBadge('disabled'), s.disabled_reason ? ` ${s.disabled_reason}` : '')],
      s.failing_since ? ['Failing since', time(s.failing_since)] : null,
      ['Kind', s.kind],
      s.kind === 'email' ? ['Email', s.email && `${s.email.to || ''} — ${s.email.subject || ''}`] : ['URL', h('code', {}, s.url)],
      ['Events', (s.events || []).join(', ') || 'every event'],
      ['Signature', s.scheme],
      ['Body', s.body_format],
      ['Ordering', s.ordering],
      ['Timeout', s.timeout],
      ['Max in flight', str(s.max_in_flight)],
      ['Rate limit', s.rate_limit ? `${s.rate_limit}/s` : 'none'],
      ['HTTPS only', s.https_only ? 'yes' : 'no'],
      ['Headers', Object.keys(s.headers || {}).length ? h('pre', { class: 'small' }, headersText(s.headers)) : 'none'],
      ['Created', time(s.created_at)],
      ['Updated', time(s.updated_at)],
    ])),
    deliveries,
    h('div', { class: 'grid' }, testPanel(s), secretPanel(s)),
    replayPanel(s, refresh));
}

/** One delivery with every attempt. */
export async function renderDelivery(root, [id]) {
  const d = await api(`/deliveries/${enc(id)}`);
  const retry = d.status === 'failed' || d.status === 'pending'
    ? actionButton('Retry now', async () => {
      await api(`/deliveries/${enc(id)}/retry`, { method: 'POST' });
      toast('Delivery queued again.');
      setTimeout(() => window.dispatchEvent(new HashChangeEvent('hashchange')), 1000);
    })
    : null;
  mount(root,
    pageHead(`Delivery of ${d.event || d.event_id}`, retry),
    h('p', {}, link(`#/subscriptions/${enc(d.subscription_id)}`, '← Subscription')),
    h('section', { class: 'panel' }, props([
      ['Id', h('code', {}, d.id)],
      ['Status', statusBadge(d.status)],
      ['Event', link(`#/events/${enc(d.event_id)}`, `${d.event || d.event_id} (seq ${d.event_seq})`)],
      ['Entity', d.entity_id],
      ['Attempts', str(d.attempt_count)],
      ['Next attempt', time(d.next_attempt_at)],
      ['Last answer', d.last_status_code ? str(d.last_status_code) : d.last_error],
      ['Created', time(d.created_at)],
      ['Updated', time(d.updated_at)],
    ])),
    h('section', { class: 'panel' }, h('h2', {}, 'Attempts'),
      table([
        { label: '#', class: 'num', value: (a) => str(a.number) },
        { label: 'Started', class: 'nowrap', value: (a) => time(a.started_at) },
        { label: 'Duration', class: 'num', value: (a) => (a.duration_ms === null || a.duration_ms === undefined ? '—' : `${a.duration_ms} ms`) },
        { label: 'Status', class: 'num', value: (a) => (a.status_code ? str(a.status_code) : '—') },
        { label: 'Error', value: (a) => a.error },
        { label: 'Response excerpt', class: 'excerpt', value: (a) => (a.response_excerpt ? h('code', {}, a.response_excerpt) : '—') },
      ], d.attempts || [], { empty: 'No attempt has been made yet.', caption: 'Attempts' })));
}
