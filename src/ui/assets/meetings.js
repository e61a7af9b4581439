// Meetings: the synchronised state of Zoom meetings, their occurrences (instances), who attended
// and for how long, and their recordings. Attendance CSV is generated in the browser from what
// the API answered, so the download is exactly the table on screen.

import { api, apiAll } from './api.js';
import {
  downloadCsv, duration, errorBox, field, formValues, h, link, localToIso, mount, pageHead, props,
  statusBadge, table, time, actionButton, str,
} from './dom.js';

/** What `?status=` accepts (sync's MeetingStatus names). */
const STATUSES = [['', 'Any status'], ...['scheduled', 'started', 'ended', 'deleted', 'recovered', 'permanently_deleted'].map((s) => [s, s.replace('_', ' ')])];

function meetingLink(m) {
  return link(`#/meetings/${encodeURIComponent(m.id)}`, m.name || m.id);
}

/** The Meetings page. */
export async function renderList(root, _params, query) {
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter meetings' },
    field({ label: 'Status', name: 'status', type: 'select', options: STATUSES, value: query.get('status') }),
    field({ label: 'Host (id or email)', name: 'host', value: query.get('host') }),
    field({ label: 'Starting since', name: 'since', type: 'date', value: (query.get('since') || '').slice(0, 10) }),
    field({ label: 'Starting until', name: 'until', type: 'date', value: (query.get('until') || '').slice(0, 10) }),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Apply')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const v = formValues(form);
    const q = new URLSearchParams();
    if (v.status) q.set('status', v.status);
    if (v.host) q.set('host', v.host);
    if (v.since) q.set('since', localToIso(`${v.since}T00:00`));
    if (v.until) q.set('until', localToIso(`${v.until}T23:59:59`));
    location.hash = `#/meetings${q.toString() ? `?${q}` : ''}`;
  });
  const list = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  mount(root, pageHead('Meetings'), h('section', { class: 'panel' }, form), list);
  try {
    const meetings = await apiAll('/meetings', {
      status: query.get('status'), host: query.get('host'), since: query.get('since'), until: query.get('until'),
    }, 500);
    mount(list, table([
      { label: 'Topic', value: meetingLink },
      { label: 'Meeting id', class: 'mono', value: (m) => m.id },
      { label: 'Status', value: (m) => statusBadge(m.status) },
      { label: 'Start', class: 'nowrap', value: (m) => time(m.start_time) },
      { label: 'End', class: 'nowrap hide-narrow', value: (m) => time(m.end_time) },
      { label: 'Host', class: 'hide-narrow', value: (m) => m.email || m.host_id },
    ], meetings, { empty: 'No meeting matches. Meetings appear here as their events arrive.', caption: 'Meetings' }));
  } catch (e) {
    mount(list, errorBox(e));
  }
}

const ATTENDANCE_HEADER = ['participant_id', 'name', 'email', 'sessions', 'first_join_time', 'last_leave_time', 'total_seconds'];

function attendanceRow(p) {
  const a = p.attendance || {};
  return [p.id, p.name, p.email, a.session_count, a.first_join_time, a.last_leave_time, a.total_seconds];
}

async function attendance(box, meeting, instance) {
  mount(box, h('p', { class: 'muted' }, 'Loading attendance…'));
  try {
    const people = await apiAll(`/meeting-instances/${encodeURIComponent(instance.id)}/participants`, {}, 5000);
    const csvName = `attendance-${meeting.id}-${str(instance.start_time || instance.id).replace(/[^0-9A-Za-z]+/g, '-')}.csv`;
    mount(box,
      h('div', { class: 'page-head' },
        h('h3', {}, 'Attendance of the occurrence started ', time(instance.start_time)),
        people.length ? actionButton('Download CSV', () => downloadCsv(csvName, [ATTENDANCE_HEADER, ...people.map(attendanceRow)]), { kind: 'secondary' }) : null),
      table([
        { label: 'Participant', value: (p) => p.name || p.id },
        { label: 'Email', class: 'hide-narrow', value: (p) => p.email },
        { label: 'Sessions', class: 'num', value: (p) => str(p.attendance ? p.attendance.session_count : (p.sessions || []).length) },
        { label: 'First join', class: 'nowrap hide-narrow', value: (p) => time(p.attendance && p.attendance.first_join_time) },
        { label: 'Last leave', class: 'nowrap hide-narrow', value: (p) => time(p.attendance && p.attendance.last_leave_time) },
        { label: 'Time in meeting', class: 'num', value: (p) => duration(p.attendance && p.attendance.total_seconds) },
      ], people, { empty: 'No participant has joined this occurrence.', caption: 'Attendance' }));
  } catch (e) {
    mount(box, errorBox(e));
  }
}

function recordingsTable(recordings) {
  return table([
    { label: 'Topic', value: (r) => r.name || r.id },
    { label: 'Start', class: 'nowrap', value: (r) => time(r.start_time) },
    { label: 'Status', value: (r) => statusBadge(r.status) },
    { label: 'Files', class: 'num', value: (r) => str(((r.zoom && r.zoom.recording_files) || []).length) },
    { label: 'Size', class: 'num', value: (r) => size((r.zoom && r.zoom.total_size) || 0) },
  ], recordings, { empty: 'No recording of this meeting yet.', caption: 'Recordings' });
}

function size(bytes) {
  if (!bytes) return '—';
  const units = ['B', 'KB', 'MB', 'GB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
}

/** One meeting. */
export async function renderDetail(root, [id]) {
  const meeting = await api(`/meetings/${encodeURIComponent(id)}`);
  const attendanceBox = h('div', {});
  const instancesBox = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const recordingsBox = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  mount(root,
    pageHead(meeting.name || `Meeting ${meeting.id}`, link('#/meetings', '← All meetings')),
    h('section', { class: 'panel' }, props([
      ['Meeting id', h('code', {}, meeting.id)],
      ['Status', statusBadge(meeting.status)],
      ['Start', time(meeting.start_time)],
      ['End', time(meeting.end_time)],
      ['Host', meeting.email || meeting.host_id],
      ['Events', link(`#/events?entity=${encodeURIComponent(meeting.id)}`, 'events of this meeting')],
    ])),
    h('section', { class: 'panel' }, h('h2', {}, 'Occurrences'), instancesBox, attendanceBox),
    h('section', { class: 'panel' }, h('h2', {}, 'Recordings'), recordingsBox));

  apiAll(`/meetings/${encodeURIComponent(id)}/instances`, {}, 500).then((instances) => {
    const sorted = [...instances].sort((a, b) => String(b.start_time || '').localeCompare(String(a.start_time || '')));
    mount(instancesBox, table([
      { label: 'Started', class: 'nowrap', value: (i) => time(i.start_time) },
      { label: 'Ended', class: 'nowrap hide-narrow', value: (i) => time(i.end_time) },
      { label: 'Status', value: (i) => statusBadge(i.status) },
      { label: 'Uuid', class: 'mono hide-narrow', value: (i) => i.id },
      { label: 'Attendance', value: (i) => actionButton('Show attendance', () => attendance(attendanceBox, meeting, i), { kind: 'secondary', 'aria-label': `Show attendance of the occurrence ${i.id}` }) },
    ], sorted, { empty: 'No occurrence has started yet.', caption: 'Occurrences' }));
    if (sorted.length) attendance(attendanceBox, meeting, sorted[0]);
  }).catch((e) => mount(instancesBox, errorBox(e)));

  apiAll('/recordings', { meeting_id: id }, 500)
    .then((recordings) => mount(recordingsBox, recordingsTable(recordings)))
    .catch((e) => mount(recordingsBox, errorBox(e)));
}
