// Drives the zoomhook dashboard in the system Chromium, for tests/dashboard.rs.
//
// Usage: node dashboard.mjs PLAN.json — the plan (written by the Rust test) names the server,
// the admin token, the webhook secret, the sink URL, the event bodies to post and where to put
// screenshots. Webhooks are signed here, independently of zoomhook's code, as Zoom signs them.
//
// Every wait is bounded. Any console error or uncaught page error fails the run. The last line
// on stdout is a JSON summary for the Rust side; progress goes to stderr.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const plan = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const require = createRequire(path.join(plan.modules_dir, 'package.json'));
const { chromium } = require('playwright-core');

const WAIT = 15_000;
const problems = [];
const summary = { steps: [] };

function log(message) {
  process.stderr.write(`[dashboard] ${message}\n`);
}

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

async function step(name, body) {
  log(`step: ${name}`);
  const started = Date.now();
  await body();
  summary.steps.push({ name, ms: Date.now() - started });
}

/** POSTs a body to the webhook endpoint signed as Zoom signs (v0:{ts}:{raw body}). */
async function postWebhook(body) {
  const ts = Math.floor(Date.now() / 1000).toString();
  const signature = `v0=${crypto.createHmac('sha256', plan.secret).update(`v0:${ts}:${body}`).digest('hex')}`;
  const response = await fetch(`${plan.base}/webhooks/zoom`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'x-zm-request-timestamp': ts,
      'x-zm-signature': signature,
      'x-zm-request-id': crypto.randomUUID(),
    },
    body,
  });
  check(response.ok, `webhook accepted (HTTP ${response.status}: ${await response.text()})`);
}

/** Every WebSocket URL the pages opened (the live tail must have used one). */
const sockets = [];

function watch(page, label) {
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`${label} console error: ${m.text()} at ${JSON.stringify(m.location())}`);
  });
  page.on('pageerror', (e) => problems.push(`${label} page error: ${e.message}`));
  // The token never travels in a URL: not in a request's, not in the live stream's.
  const inUrl = (url) => plan.token && url.includes(plan.token);
  page.on('request', (r) => {
    if (inUrl(r.url())) problems.push(`${label} the token is in a request URL: ${r.url()}`);
  });
  page.on('websocket', (ws) => {
    sockets.push(ws.url());
    if (inUrl(ws.url())) problems.push(`${label} the token is in the stream's URL: ${ws.url()}`);
  });
  page.on('response', (r) => {
    const url = r.url();
    if (r.status() >= 400 && !url.includes('/webhooks/')) problems.push(`${label} HTTP ${r.status()} for ${url}`);
  });
}

async function shot(page, name) {
  await page.waitForLoadState('networkidle', { timeout: 3_000 }).catch(() => {});
  const file = path.join(plan.screenshots_dir, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  log(`screenshot ${file}`);
}

async function signIn(page) {
  await page.goto(plan.base + '/');
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  await page.getByLabel('Admin token').fill(plan.token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Overview' }).waitFor();
}

async function go(page, hash, heading) {
  await page.evaluate((h) => { location.hash = h; }, hash);
  if (heading) await page.getByRole('heading', { name: heading, exact: typeof heading === 'string' }).first().waitFor();
}

/** The page has no horizontal scrollbar at its viewport width (wide tables scroll inside). */
async function fitsWidth(page, name) {
  const { scroll, client } = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth,
  }));
  check(scroll <= client + 1, `${name} fits the ${client}px viewport (content is ${scroll}px wide)`);
}

const browser = await chromium.launch({
  executablePath: plan.chromium,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  timeout: 30_000,
});
const timer = setTimeout(() => {
  log('the run took longer than 240 s; giving up');
  process.exit(3);
}, 240_000);

try {
  const laptop = await browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
  laptop.setDefaultTimeout(WAIT);
  const page = await laptop.newPage();
  watch(page, 'laptop');
  let subscriptionId;
  let eventId;
  let deliveryHash;
  let meetingHash;

  await step('sign in with the admin token, which stays out of the URL', async () => {
    await page.goto(plan.base + '/');
    await shot(page, 'laptop-0-sign-in');
    await page.getByLabel('Admin token').fill('not-the-token');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByText('That token is not accepted by this server.').waitFor();
    // The refused sign-in's 401 is expected (Chromium logs every 4xx as a console error);
    // only those two lines are forgiven.
    for (let i = problems.length - 1; i >= 0; i -= 1) {
      if (/HTTP 401 for .*\/api\/v1\/stats$|status of 401/.test(problems[i])) problems.splice(i, 1);
    }
    await page.getByLabel('Admin token').fill(plan.token);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Overview' }).waitFor();
    check(!page.url().includes(plan.token), 'the token is not in the URL');
    const stored = await page.evaluate(() => sessionStorage.getItem('zoomhook.admin_token'));
    check(stored === plan.token, 'the token is kept in sessionStorage');
  });

  await step('a webhook posted now appears in the live tail', async () => {
    await go(page, '#/events', 'Events');
    await page.locator('.live-state', { hasText: 'live' }).waitFor();
    await postWebhook(plan.live_event);
    const row = page.locator('tbody tr', { hasText: plan.live_event_name }).first();
    await row.waitFor({ timeout: 10_000 });
    await shot(page, 'laptop-2-events');
    await row.getByRole('link', { name: plan.live_event_name }).click();
    await page.getByRole('heading', { name: plan.live_event_name }).waitFor();
    eventId = decodeURIComponent(page.url().split('#/events/')[1]);
    const pretty = await page.getByLabel('Body, pretty-printed').textContent();
    check(pretty.includes(plan.live_event_marker), 'the pretty body shows the event');
    await page.getByText('Raw body, exactly as received').click();
    const raw = await page.getByLabel('Raw body', { exact: true }).textContent();
    check(raw === plan.live_event, 'the raw body is byte for byte what was posted');
    // The pretty view re-lays the text out, never re-writes a value (a parsed 99999999999999999
    // would show as 100000000000000000).
    const squeeze = (t) => t.replace(/\s+/g, '');
    check(squeeze(pretty) === squeeze(raw), 'the pretty body is the raw body, only laid out');
  });

  await step('pausing the tail and resuming it misses nothing', async () => {
    await go(page, '#/events', 'Events');
    await page.locator('.live-state', { hasText: 'live' }).waitFor();
    await page.getByRole('button', { name: 'Pause' }).click();
    await page.locator('.live-state', { hasText: 'paused' }).waitFor();
    await postWebhook(plan.paused_event);
    await page.waitForTimeout(500);
    check(await page.locator('tbody tr', { hasText: plan.paused_event_name }).count() === 0, 'a paused tail shows nothing new');
    await page.getByRole('button', { name: 'Resume' }).click();
    await page.locator('tbody tr', { hasText: plan.paused_event_name }).first().waitFor({ timeout: 10_000 });
  });

  await step('filter the log by entity and event pattern', async () => {
    await page.getByLabel('Entity (object id or uuid)').fill(plan.live_event_entity);
    await page.getByLabel('Event pattern').fill('user.*');
    await page.getByRole('button', { name: 'Apply' }).click();
    await page.waitForURL(/entity=/);
    await page.locator('.live-state', { hasText: 'live' }).waitFor();
    const rows = page.locator('tbody tr');
    await rows.first().waitFor();
    const texts = await rows.allTextContents();
    check(texts.length === 1 && texts[0].includes(plan.live_event_name), `only the matching event is listed (${texts.length} rows)`);
  });

  await step('create a subscription to a sink that answers 500', async () => {
    await go(page, '#/subscriptions', 'Subscriptions');
    await page.getByRole('link', { name: 'New subscription' }).click();
    await page.getByRole('heading', { name: 'New subscription' }).waitFor();
    await page.getByLabel('Description').fill('Failing sink');
    await page.getByLabel('URL').fill(plan.sink_url);
    await page.getByLabel('Events').fill('user.*');
    await shot(page, 'laptop-4-subscription-new');
    await page.getByRole('button', { name: 'Create subscription' }).click();
    await page.getByRole('heading', { name: 'Failing sink' }).waitFor();
    subscriptionId = decodeURIComponent(page.url().split('#/subscriptions/')[1]);
    const secret = await page.getByLabel('Secret', { exact: true }).first().textContent();
    check(secret.startsWith('whsec_'), `the generated secret is shown once (${secret.slice(0, 6)}…)`);
  });

  await step('deliver the event again to it; the delivery fails and is retried', async () => {
    await go(page, `#/events/${encodeURIComponent(eventId)}`, plan.live_event_name);
    const select = page.getByLabel('Subscription');
    await select.locator('option', { hasText: 'Failing sink' }).waitFor({ state: 'attached' });
    await select.selectOption({ label: 'Failing sink' });
    await page.getByRole('button', { name: 'Deliver again' }).click();
    await page.getByText('Queued 1 delivery.').waitFor();
    await page.locator('tbody tr', { hasText: 'Failing sink' }).first().waitFor({ timeout: 10_000 });
    await shot(page, 'laptop-3-event');

    await go(page, `#/subscriptions/${encodeURIComponent(subscriptionId)}`, 'Failing sink');
    const failedRow = page.locator('tbody tr', { hasText: 'failed' }).first();
    const deadline = Date.now() + 20_000;
    while (!(await failedRow.isVisible())) {
      check(Date.now() < deadline, 'the delivery to the 500 sink ends failed within 20 s');
      await page.getByRole('button', { name: 'Refresh' }).click();
      await page.waitForTimeout(500);
    }
    await page.getByRole('button', { name: 'Reveal secret' }).click();
    await page.getByLabel('Secret', { exact: true }).first().waitFor();
    await page.getByRole('button', { name: 'Send test event' }).click();
    await page.locator('.test-result dd', { hasText: /^500$/ }).waitFor();
    await shot(page, 'laptop-5-subscription');

    await failedRow.getByRole('link', { name: 'Attempts' }).click();
    await page.getByRole('heading', { name: /^Delivery of / }).waitFor();
    deliveryHash = new URL(page.url()).hash;
    const attemptsBefore = await page.locator('section', { hasText: 'Attempts' }).locator('tbody tr').count();
    check(attemptsBefore >= 1, 'the failed delivery lists its attempts');
    await page.getByText('receiver says hi').first().waitFor();
    await page.getByRole('button', { name: 'Retry now' }).click();
    await page.getByText('Delivery queued again.').waitFor();
    const retryDeadline = Date.now() + 20_000;
    for (;;) {
      await page.waitForTimeout(700);
      await page.evaluate(() => window.dispatchEvent(new HashChangeEvent('hashchange')));
      await page.getByRole('heading', { name: /^Delivery of / }).waitFor();
      const n = await page.locator('section', { hasText: 'Attempts' }).locator('tbody tr').count();
      if (n > attemptsBefore) break;
      check(Date.now() < retryDeadline, 'the retried delivery gets a new attempt within 20 s');
    }
    await shot(page, 'laptop-6-delivery');
    summary.attempts_before_retry = attemptsBefore;
  });

  await step('a meeting lifecycle becomes a meeting with its attendance', async () => {
    for (const body of plan.lifecycle) await postWebhook(body);
    await go(page, '#/meetings', 'Meetings');
    const deadline = Date.now() + 20_000;
    const link = page.getByRole('link', { name: plan.meeting_topic });
    while (!(await link.isVisible())) {
      check(Date.now() < deadline, 'the meeting appears within 20 s');
      await page.waitForTimeout(500);
      await page.getByRole('button', { name: 'Apply' }).click();
    }
    await shot(page, 'laptop-7-meetings');
    await link.click();
    await page.getByRole('heading', { name: plan.meeting_topic }).waitFor();
    meetingHash = new URL(page.url()).hash;
    const attendance = page.getByRole('table', { name: 'Attendance' });
    for (const p of plan.participants) {
      await attendance.locator('tr', { hasText: p.name }).locator('td', { hasText: p.duration_text }).waitFor();
    }
    const download = page.waitForEvent('download');
    await page.getByRole('button', { name: 'Download CSV' }).click();
    const csv = fs.readFileSync(await (await download).path(), 'utf8');
    for (const p of plan.participants) {
      check(csv.includes(p.email) && csv.includes(`,${p.total_seconds}\r\n`), `the CSV has ${p.email} with ${p.total_seconds} s`);
    }
    summary.csv = csv;
    await shot(page, 'laptop-8-meeting');
  });

  await step('edit, disable and enable, rotate the secret, replay a seq range', async () => {
    await go(page, `#/subscriptions/${encodeURIComponent(subscriptionId)}`, 'Failing sink');
    await page.getByRole('link', { name: 'Edit' }).click();
    await page.getByRole('heading', { name: 'Edit Failing sink' }).waitFor();
    await page.getByLabel('Description').fill('Failing sink (CRM)');
    await page.getByLabel('Custom headers').fill('X-Team: crm');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByRole('heading', { name: 'Failing sink (CRM)' }).waitFor();
    await page.getByText('X-Team: crm').waitFor();

    await page.getByRole('button', { name: 'Disable' }).click();
    await page.locator('dd .badge', { hasText: 'disabled' }).waitFor();
    await page.getByRole('button', { name: 'Enable' }).click();
    await page.locator('dd .badge', { hasText: 'enabled' }).waitFor();

    await page.getByRole('button', { name: 'Reveal secret' }).click();
    const before = await page.getByLabel('Secret', { exact: true }).first().textContent();
    page.once('dialog', (d) => d.accept());
    await page.getByRole('button', { name: 'Rotate secret' }).click();
    await page.getByText('The new secret.').waitFor();
    const after = await page.getByLabel('Secret', { exact: true }).first().textContent();
    check(after.startsWith('whsec_') && after !== before, 'rotation shows a new secret');

    await page.getByLabel('After seq').fill('0');
    await page.getByLabel('Up to seq').fill('1');
    await page.getByRole('button', { name: 'Replay' }).click();
    await page.locator('.toast', { hasText: /^Queued \d+ deliver(y|ies)\.$/ }).last().waitFor();
  });

  await step('operational events and failed deliveries', async () => {
    await postWebhook(plan.url_validation);
    await go(page, '#/operations', 'Operational events');
    // The replay queued the delivery again; it lists as failed once its attempts are spent.
    const failed = page.getByRole('link', { name: 'Failing sink (CRM)' });
    const deadline = Date.now() + 20_000;
    while (!(await failed.isVisible())) {
      check(Date.now() < deadline, 'the replayed delivery is listed as failed within 20 s');
      await page.waitForTimeout(700);
      await page.evaluate(() => window.dispatchEvent(new HashChangeEvent('hashchange')));
      await page.getByRole('heading', { name: 'Operational events' }).waitFor();
      await page.getByRole('heading', { name: 'Failed deliveries' }).locator('xpath=..').locator('.empty, h3').first().waitFor();
    }
    await page.getByRole('link', { name: 'endpoint.url_validation' }).waitFor();
    await shot(page, 'laptop-9-operations');
  });

  await step('the overview charts what happened', async () => {
    await go(page, '#/overview', 'Overview');
    await page.locator('svg.chart path.series').first().waitFor({ state: 'attached', timeout: 20_000 });
    await page.locator('.card', { hasText: 'Store' }).getByText('healthy').waitFor();
    await shot(page, 'laptop-1-overview');
  });

  await step('keyboard: the skip link is the first stop and the focus is visible', async () => {
    await page.keyboard.press('Tab');
    const focused = await page.evaluate(() => {
      const el = document.activeElement;
      return { text: el.textContent, outline: getComputedStyle(el).outlineStyle };
    });
    check(focused.text === 'Skip to content', `Tab first reaches the skip link (got ${focused.text})`);
    check(focused.outline !== 'none', 'the focused element shows an outline');
    await page.keyboard.press('Enter');
    check(await page.evaluate(() => document.activeElement.id) === 'main', 'the skip link moves the focus to the content');
  });

  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  phone.setDefaultTimeout(WAIT);
  const small = await phone.newPage();
  watch(small, 'phone');
  await step('every page on a phone', async () => {
    await signIn(small);
    const pages = [
      ['events', '#/events', 'Events'],
      ['event', `#/events/${encodeURIComponent(eventId)}`, plan.live_event_name],
      ['meetings', '#/meetings', 'Meetings'],
      ['subscriptions', '#/subscriptions', 'Subscriptions'],
      ['meeting', meetingHash, plan.meeting_topic],
      ['subscription', `#/subscriptions/${encodeURIComponent(subscriptionId)}`, 'Failing sink (CRM)'],
      ['subscription-new', '#/subscriptions/new', 'New subscription'],
      ['delivery', deliveryHash, /^Delivery of /],
      ['operations', '#/operations', 'Operational events'],
      ['overview', '#/overview', 'Overview'],
    ];
    for (const [name, hash, heading] of pages) {
      await go(small, hash, heading);
      if (name === 'overview') await small.locator('svg.chart path.series').first().waitFor({ state: 'attached', timeout: 20_000 });
      await small.waitForTimeout(300);
      await fitsWidth(small, name);
      await shot(small, `phone-${name}`);
    }
  });
  check(sockets.length > 0, 'the live tail opened the stream');
  check(problems.length === 0, `no console errors:\n  ${problems.join('\n  ')}`);
  summary.ok = true;
} catch (e) {
  for (const context of browser.contexts()) {
    for (const [i, p] of context.pages().entries()) {
      await p.screenshot({ path: path.join(plan.screenshots_dir, `failure-${i}.png`), fullPage: true }).catch(() => {});
    }
  }
  summary.ok = false;
  summary.error = `${e.message}${problems.length ? `\nalso:\n  ${problems.join('\n  ')}` : ''}`;
} finally {
  clearTimeout(timer);
  await browser.close().catch(() => {});
}
process.stdout.write(`${JSON.stringify(summary)}\n`);
process.exit(summary.ok ? 0 : 1);
