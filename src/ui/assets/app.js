// The dashboard shell: sign-in, the hash router and the navigation.
//
// Hash routing (`#/events/evt_…`) keeps the server simple — it serves one page at `/` — and
// makes every view linkable and the Back button work. Each page module exports
// `render(root, params)`, which may return a function that stops what the page started (a
// WebSocket, a timer) when the viewer leaves it.

import { clearToken, getToken, setToken, tokenAccepted } from './api.js';
import { errorText, field, h, mount } from './dom.js';
import * as overview from './overview.js';
import * as events from './events.js';
import * as meetings from './meetings.js';
import * as subscriptions from './subscriptions.js';
import * as operations from './operations.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const signOut = document.getElementById('signout');

/** [pattern, nav section, render(root, params)]; the first match wins. */
const ROUTES = [
  [/^overview$/, 'overview', overview.render],
  [/^events$/, 'events', events.renderList],
  [/^events\/([^/]+)$/, 'events', events.renderDetail],
  [/^meetings$/, 'meetings', meetings.renderList],
  [/^meetings\/([^/]+)$/, 'meetings', meetings.renderDetail],
  [/^subscriptions$/, 'subscriptions', subscriptions.renderList],
  [/^subscriptions\/new$/, 'subscriptions', subscriptions.renderCreate],
  [/^subscriptions\/([^/]+)\/edit$/, 'subscriptions', subscriptions.renderEdit],
  [/^subscriptions\/([^/]+)$/, 'subscriptions', subscriptions.renderDetail],
  [/^deliveries\/([^/]+)$/, 'subscriptions', subscriptions.renderDelivery],
  [/^operations$/, 'operations', operations.render],
];

let dispose = null;
let generation = 0;

function stopPage() {
  if (typeof dispose === 'function') {
    try {
      dispose();
    } catch (e) {
      console.warn('stopping the page failed', e);
    }
  }
  dispose = null;
}

/** Renders the page the hash names. */
async function route() {
  if (!getToken()) {
    showSignIn();
    return;
  }
  const hash = location.hash.replace(/^#\/?/, '');
  const path = hash.split('?')[0];
  const match = ROUTES.map(([re, section, render]) => [path.match(re), section, render]).find(([m]) => m);
  if (!match) {
    location.replace('#/overview');
    return;
  }
  const [m, section, render] = match;
  stopPage();
  nav.hidden = false;
  signOut.hidden = false;
  for (const a of nav.querySelectorAll('a')) {
    if (a.dataset.page === section) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const mine = ++generation;
  const root = h('div', { class: `page page-${section}` });
  mount(main, root);
  const params = m.slice(1).map(decodeURIComponent);
  const query = new URLSearchParams(hash.includes('?') ? hash.slice(hash.indexOf('?') + 1) : '');
  try {
    const stop = await render(root, params, query);
    if (mine === generation) dispose = stop;
    else if (typeof stop === 'function') stop();
  } catch (e) {
    if (mine !== generation) return;
    if (e && e.status === 401) return;
    mount(root, h('h1', {}, 'Something went wrong'), h('div', { class: 'error-box', role: 'alert' }, errorText(e)));
  }
  if (mine === generation) document.title = `${section[0].toUpperCase()}${section.slice(1)} · zoomhook`;
}

function showSignIn(message) {
  stopPage();
  overview.stopSampler();
  nav.hidden = true;
  signOut.hidden = true;
  document.title = 'Sign in · zoomhook';
  const status = h('div', { role: 'alert' }, message && h('p', { class: 'error-box' }, message));
  const form = h('form', { class: 'panel signin', novalidate: true },
    h('h1', {}, 'Sign in'),
    h('p', { class: 'muted' },
      'Paste an admin token: ZOOMHOOK_ADMIN_TOKEN, the one printed at first start, or one from ',
      h('code', {}, 'zoomhook token create'), '. It is kept in this tab only.'),
    field({ label: 'Admin token', name: 'token', type: 'password', autocomplete: 'current-password', required: true, spellcheck: 'false' }),
    status,
    h('p', {}, h('button', { type: 'submit' }, 'Sign in')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const token = form.elements.token.value.trim();
    if (!token) {
      mount(status, h('p', { class: 'error-box' }, 'Enter a token.'));
      return;
    }
    let accepted;
    try {
      accepted = await tokenAccepted(token);
    } catch (err) {
      mount(status, h('p', { class: 'error-box' }, errorText(err)));
      return;
    }
    if (!accepted) {
      mount(status, h('p', { class: 'error-box' }, 'That token is not accepted by this server.'));
      form.elements.token.select();
      return;
    }
    setToken(token);
    overview.startSampler();
    if (!location.hash || location.hash === '#' || location.hash === '#/') location.hash = '#/overview';
    else route();
  });
  mount(main, form);
  form.elements.token.focus();
}

window.addEventListener('zoomhook:unauthorized', () => {
  if (!getToken()) return;
  clearToken();
  showSignIn('The server no longer accepts your token; sign in again.');
});

window.addEventListener('hashchange', () => {
  route().then(() => main.focus({ preventScroll: false }));
});

signOut.addEventListener('click', () => {
  clearToken();
  showSignIn();
});

// The skip link targets <main> without touching the hash the router owns.
document.getElementById('skip').addEventListener('click', (e) => {
  e.preventDefault();
  main.focus();
});

if (getToken()) overview.startSampler();
route();
