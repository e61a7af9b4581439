// Events: the log, newest first, with a live tail; and one event with its body and deliveries.
//
// The list and the tail are one table. It is first filled from `GET /api/v1/events?order=desc`,
// then the stream is opened with `after_seq` = the newest seq shown, so no event falls between
// the two and none is shown twice (the stream's resume guarantee). Pausing closes the stream;
// resuming reopens it after the last seq seen, so the events that arrived meanwhile appear then.
// The stream filters by event pattern itself; entity and source filters are applied here to the
// frames, which carry both.

import { api, apiAll, streamProtocols, streamUrl } from './api.js';
import {
  actionButton, errorBox, field, formValues, h, link, localToIso, mount, pageHead, prettyJson,
  props, statusBadge, table, tableRow, time, toast, copyText, str,
} from './dom.js';

const PAGE = 50;
const MAX_ROWS = 500;

const COLUMNS = [
  { label: 'Seq', class: 'num', value: (e) => str(e.seq) },
  { label: 'Event', value: (e) => link(`#/events/${encodeURIComponent(e.id)}`, e.event) },
  { label: 'Received', class: 'nowrap', value: (e) => time(e.received_at) },
  { label: 'Entity', class: 'hide-narrow', value: (e) => e.object_id || e.object_uuid || '—' },
  { label: 'Source', class: 'hide-narrow', value: (e) => e.source },
];

const FILTERS = ['event', 'entity', 'source', 'since', 'until'];

function filterForm(query) {
  const local = (iso) => {
    if (!iso) return '';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return '';
    return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
  };
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter events' },
    field({ label: 'Event pattern', name: 'event', value: query.get('event'), placeholder: 'meeting.*,recording.completed' }),
    field({ label: 'Entity (object id or uuid)', name: 'entity', value: query.get('entity') }),
    field({ label: 'Source', name: 'source', value: query.get('source'), placeholder: 'zoom' }),
    field({ label: 'Received since', name: 'since', type: 'datetime-local', value: local(query.get('since')) }),
    field({ label: 'Received until', name: 'until', type: 'datetime-local', value: local(query.get('until')) }),
    h('div', { class: 'actions' },
      h('button', { type: 'submit' }, 'Apply'),
      h('button', { type: 'button', class: 'secondary', onclick: () => { location.hash = '#/events'; } }, 'Clear')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const v = formValues(form);
    v.since = localToIso(v.since);
    v.until = localToIso(v.until);
    const q = new URLSearchParams();
    for (const k of FILTERS) if (v[k]) q.set(k, v[k]);
    const next = `#/events${q.toString() ? `?${q}` : ''}`;
    if (location.hash === next) window.dispatchEvent(new HashChangeEvent('hashchange'));
    else location.hash = next;
  });
  return form;
}

/** The filters, folded away on a phone unless one is set. */
function filterBox(query, filters) {
  const open = Object.values(filters).some(Boolean) || window.matchMedia('(min-width: 721px)').matches;
  return h('details', { class: 'panel filters-box', open },
    h('summary', {}, 'Filters'), filterForm(query));
}

/** Whether a live frame passes the filters the stream cannot apply. */
function passes(frame, filters) {
  if (filters.source && frame.source !== filters.source) return false;
  if (filters.entity && frame.object_id !== filters.entity && frame.object_uuid !== filters.entity) return false;
  return true;
}

/** The Events page. */
export async function renderList(root, _params, query) {
  const filters = Object.fromEntries(FILTERS.map((k) => [k, query.get(k) || '']));
  const canLive = !filters.until;
  const state = h('span', { class: 'live-state', role: 'status' }, h('span', { class: 'dot' }), 'connecting…');
  const pause = h('button', { type: 'button', class: 'secondary', 'aria-pressed': 'false' }, 'Pause');
  const tbody = h('tbody', {});
  const tableBox = h('div', { class: 'table-wrap' },
    h('table', {}, h('caption', { class: 'visually-hidden' }, 'Events, newest first'),
      h('thead', {}, h('tr', {}, COLUMNS.map((c) => h('th', { scope: 'col', class: c.class }, c.label)))),
      tbody));
  const empty = h('p', { class: 'empty' }, 'No event matches yet.');
  const more = h('div', { class: 'actions' });
  const failure = h('div', {});
  mount(root,
    pageHead('Events', canLive ? state : h('span', { class: 'muted small' }, 'Live tail off: an “until” time is set.'), canLive ? pause : null),
    filterBox(query, filters),
    failure, tableBox, empty, more);

  let newest = null;
  const addRows = (events, { top = false, fresh = false } = {}) => {
    for (const e of events) {
      const row = tableRow(COLUMNS, e, () => (fresh ? 'new' : ''));
      row.dataset.seq = e.seq;
      if (top) tbody.prepend(row);
      else tbody.append(row);
    }
    while (tbody.children.length > MAX_ROWS) tbody.lastElementChild.remove();
    empty.hidden = tbody.children.length > 0;
    tableBox.hidden = tbody.children.length === 0;
  };

  const loadPage = async (cursor) => {
    const page = await api('/events', {
      query: { ...filters, order: 'desc', limit: PAGE, cursor },
    });
    addRows(page.data || []);
    if (!cursor && page.data && page.data.length) newest = page.data[0].seq;
    mount(more, page.next_cursor && tbody.children.length < MAX_ROWS
      ? actionButton('Load older events', () => loadPage(page.next_cursor), { kind: 'secondary' })
      : null);
  };
  try {
    await loadPage(null);
  } catch (e) {
    mount(failure, errorBox(e));
    return undefined;
  }
  if (!canLive) return undefined;

  // The live tail.
  let socket = null;
  let paused = false;
  let retry = null;
  let delay = 1000;
  let stopped = false;
  const setState = (text, dot) => mount(state, h('span', { class: `dot ${dot}` }), text);
  const connect = () => {
    const q = { events: filters.event, after_seq: newest ?? 0 };
    const ws = new WebSocket(streamUrl(q), streamProtocols());
    socket = ws;
    ws.addEventListener('message', (m) => {
      let frame;
      try {
        frame = JSON.parse(m.data);
      } catch {
        return;
      }
      if (frame.type === 'hello') {
        delay = 1000;
        setState('live', 'on');
      } else if (frame.type === 'event') {
        newest = Math.max(newest ?? 0, frame.seq);
        if (passes(frame, filters) && (!filters.since || frame.received_at >= filters.since)) {
          addRows([frame], { top: true, fresh: true });
        }
      }
    });
    ws.addEventListener('close', (ev) => {
      if (socket !== ws) return;
      socket = null;
      if (stopped || paused) return;
      // The server names where to resume in its close reason; the last seq seen is the same.
      const m = /after_seq=(\d+)/.exec(ev.reason || '');
      if (m) newest = Math.max(newest ?? 0, Number(m[1]));
      setState(`disconnected; reconnecting in ${delay / 1000} s`, 'off');
      retry = setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    });
  };
  pause.addEventListener('click', () => {
    paused = !paused;
    pause.setAttribute('aria-pressed', str(paused));
    pause.textContent = paused ? 'Resume' : 'Pause';
    if (paused) {
      clearTimeout(retry);
      if (socket) socket.close(1000, 'paused');
      socket = null;
      setState('paused', '');
    } else {
      setState('connecting…', '');
      connect();
    }
  });
  connect();
  return () => {
    stopped = true;
    clearTimeout(retry);
    if (socket) socket.close(1000, 'page closed');
  };
}

function deliveriesTable(list, names = new Map()) {
  if (list === null || list === undefined) return h('p', { class: 'muted' }, 'This server does not list an event\u2019s deliveries.');
  return table([
    { label: 'Subscription', value: (d) => link(`#/subscriptions/${encodeURIComponent(d.subscription_id)}`, names.get(d.subscription_id) || d.subscription_id) },
    { label: 'Status', value: (d) => statusBadge(d.status) },
    { label: 'Attempts', class: 'num', value: (d) => str(d.attempt_count) },
    { label: 'Last answer', value: (d) => (d.last_status_code ? str(d.last_status_code) : d.last_error || '—') },
    { label: 'Updated', class: 'nowrap', value: (d) => time(d.updated_at) },
    { label: 'Delivery', value: (d) => link(`#/deliveries/${encodeURIComponent(d.id)}`, 'attempts') },
  ], list, { empty: 'No subscription has received this event.' });
}

function deliverAgain(event, subscriptions, reload) {
  const select = field({ label: 'Subscription', name: 'subscription', type: 'select', options: [['', 'Loading…']] });
  const form = h('form', { class: 'form-grid', 'aria-label': 'Deliver again' }, select,
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Deliver again')));
  subscriptions.then((subs) => {
    const input = select.querySelector('select');
    mount(input, subs.length
      ? subs.map((s) => h('option', { value: s.id }, `${s.description || s.url || s.id}${s.enabled ? '' : ' (disabled)'}`))
      : h('option', { value: '' }, 'No subscriptions'));
  }).catch((e) => toast(e.message, 'bad'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const id = form.elements.subscription.value;
    if (!id) return;
    const button = form.querySelector('button');
    button.disabled = true;
    try {
      const answer = await api(`/subscriptions/${encodeURIComponent(id)}/replay`, {
        method: 'POST', body: { after_seq: event.seq - 1, to_seq: event.seq },
      });
      const n = answer.queued_count ?? 0;
      toast(n ? `Queued ${n} delivery.` : 'Nothing queued: the subscription\u2019s event filter does not match this event.', n ? '' : 'bad');
      setTimeout(reload, 1500);
    } catch (err) {
      toast(err.message, 'bad');
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

/** One event. */
export async function renderDetail(root, [id]) {
  const event = await api(`/events/${encodeURIComponent(id)}`);
  // Subscriptions name the deliveries and fill "deliver again"; the page does not wait for them.
  const subscriptions = apiAll('/subscriptions');
  let names = new Map();
  const deliveries = h('div', {}, deliveriesTable(event.deliveries));
  subscriptions.then((subs) => {
    names = new Map(subs.map((s) => [s.id, s.description || s.url || s.id]));
    mount(deliveries, deliveriesTable(event.deliveries, names));
  }).catch(() => {});
  const reload = async () => {
    try {
      mount(deliveries, deliveriesTable((await api(`/events/${encodeURIComponent(id)}`)).deliveries, names));
    } catch (e) {
      mount(deliveries, errorBox(e));
    }
  };
  const raw = event.body ?? '';
  const entity = event.object_id || event.object_uuid;
  mount(root,
    pageHead(event.event, link('#/events', '← All events')),
    h('section', { class: 'panel' }, props([
      ['Seq', str(event.seq)],
      ['Id', h('code', {}, event.id)],
      ['Source', event.source],
      ['Event time', time(event.event_time)],
      ['Received', time(event.received_at)],
      ['Account', event.account_id],
      ['Object', entity && link(`#/events?entity=${encodeURIComponent(entity)}`, entity)],
      event.object_uuid && event.object_id ? ['Object uuid', event.object_uuid] : null,
      ['Request id', event.request_id && h('code', {}, event.request_id)],
    ])),
    h('section', { class: 'panel' },
      h('h2', {}, 'Body'),
      h('pre', { class: 'code', tabindex: '0', 'aria-label': 'Body, pretty-printed' }, prettyJson(raw)),
      h('details', {},
        h('summary', {}, 'Raw body, exactly as received'),
        h('div', { class: 'actions' }, actionButton('Copy raw body', () => copyText(raw), { kind: 'secondary' })),
        h('pre', { class: 'code wrap', tabindex: '0', 'aria-label': 'Raw body' }, raw))),
    h('section', { class: 'panel' }, h('h2', {}, 'Deliveries'), deliveries),
    h('section', { class: 'panel' }, h('h2', {}, 'Deliver again to…'),
      h('p', { class: 'muted small' }, 'Queues this event once more for one subscription (a replay of seq ', str(event.seq), ').'),
      deliverAgain(event, subscriptions, reload)));
}
