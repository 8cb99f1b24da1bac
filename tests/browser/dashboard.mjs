// The dashboard in a real headless Chromium (Debian's), driven by playwright-core.
//
// Run by tests/dashboard.rs (and scripts/bench-dashboard for the soak), never by hand-made
// fixtures: the pages under test are `contrail demo` processes.
//
// Environment:
//   CONTRAIL_CHROMIUM    the browser (default /usr/bin/chromium)
//   MODE                 `test` (default) or `soak`
//   LIVE_URL             a demo whose simulator runs for a while, then stops (--keep-serving)
//   WAITING_URL          (test) a demo that has processed nothing
//   SCREENSHOT           (test) where to save the screenshot
//   SQL_DIR              (test) the live demo's --sql-dir, to make and undo a bad edit
//   SOAK_SECONDS         (soak) how long to auto-refresh at 1 s (default 600)
//
// Prints one `figure: {...}` JSON line per measurement; exits 1 with the failed check's
// message.

import { createRequire } from 'node:module';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const require = createRequire(new URL('../../web/package.json', import.meta.url));
const { chromium } = require('playwright-core');

const env = process.env;
const mode = env.MODE ?? 'test';

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
  console.log(`ok: ${message}`);
}

function figure(name, value, extra = {}) {
  console.log(`figure: ${JSON.stringify({ name, value, ...extra })}`);
}

async function api(base, path) {
  const r = await fetch(new URL(path, base));
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status} ${await r.text()}`);
  return r.json();
}

async function heapMiB(page) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('HeapProfiler.collectGarbage');
  const { usedSize } = await cdp.send('Runtime.getHeapUsage');
  await cdp.detach();
  return usedSize / 2 ** 20;
}

// Only the aircraft trace has markers (trails and the selected track are lines, emergency
// labels are text).
const markerCount = (page) => page.evaluate(() => document.querySelectorAll('#map g.trace.scattergeo path.point').length);

const rowCount = (page, id) => page.evaluate((tableId) => (
  document.querySelectorAll(`#${tableId} tbody tr[data-icao24]`).length
), id);

const kpiValue = (page, id) => page.evaluate((kpi) => (
  document.querySelector(`#${kpi} .value`).dataset.value
), id);

// Waits until the page has rendered a snapshot received after now.
async function nextRender(page, timeout = 20000) {
  const seen = await page.evaluate(() => window.contrail.snapshots);
  await page.waitForFunction((n) => window.contrail.renderedSnapshot > n, seen, { timeout });
}

async function openPage(browser) {
  const page = await browser.newPage({ viewport: { width: 1600, height: 1200 } });
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('response', (r) => { if (r.status() >= 400) errors.push(`HTTP ${r.status()}: ${r.url()}`); });
  page.on('requestfailed', (r) => {
    // An EventSource closed by the page itself is not an error.
    if (!r.url().includes('/api/stream')) errors.push(`request failed: ${r.url()}`);
  });
  return { page, errors };
}

async function waitForStatic(base) {
  for (let i = 0; i < 240; i += 1) {
    const s = await api(base, '/api/summary');
    if (s.status === 'stale') return s;
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error('the live demo never went stale (did its source stop?)');
}

async function test(browser) {
  const live = env.LIVE_URL;

  // 1. Nothing processed yet: the waiting state.
  {
    const { page, errors } = await openPage(browser);
    await page.goto(env.WAITING_URL);
    await page.waitForFunction(() => window.contrail.renders > 0, null, { timeout: 20000 });
    check(await page.isVisible('#waiting'), 'an empty pipeline shows the "waiting for data" panel');
    check(await page.getAttribute('#status-pill', 'data-status') === 'waiting', 'the status pill says waiting');
    check(await kpiValue(page, 'kpi-aircraft') === '0', 'no aircraft are counted while waiting');
    check(errors.length === 0, `no console errors on the waiting page (${errors.join(' | ')})`);
    await page.close();
  }

  // 2. Data flowing.
  for (let i = 0; ; i += 1) {
    const s = await api(live, '/api/summary');
    if (s.aircraft > 0) break;
    if (i > 120) throw new Error('the live demo produced no aircraft in 60 s');
    await new Promise((r) => setTimeout(r, 500));
  }
  const { page, errors } = await openPage(browser);
  await page.goto(live);
  await page.waitForFunction(() => window.contrail.firstDataPaint !== null, null, { timeout: 20000 });
  const firstPaint = await page.evaluate(() => window.contrail.firstDataPaint);
  figure('first_paint_with_data_ms', Math.round(firstPaint), { target: '<= 1000', from: 'navigation start' });
  await page.waitForFunction(() => window.contrail.firstMapPaint !== null, null, { timeout: 20000 });
  figure('first_map_paint_ms', Math.round(await page.evaluate(() => window.contrail.firstMapPaint)), { from: 'navigation start' });
  for (const id of ['kpi-aircraft', 'kpi-events', 'kpi-altitude', 'kpi-speed']) {
    const v = Number(await kpiValue(page, id));
    check(v > 0, `KPI ${id} is non-zero (${v})`);
  }
  check(await page.getAttribute('#status-pill', 'data-status') === 'live', 'the status pill says live');
  check(!(await page.isVisible('#waiting')), 'the waiting panel is gone once data came');

  // The screenshot (README's docs/dashboard.png), live, with an aircraft selected: the
  // viewport grows to the whole page so the sticky header stays on top.
  await page.click('#table-aircraft tbody tr[data-icao24]');
  await page.waitForSelector('#details-body .title', { timeout: 10000 });
  await nextRender(page);
  const height = await page.evaluate(() => document.documentElement.scrollHeight);
  await page.setViewportSize({ width: 1600, height });
  await page.waitForTimeout(500);
  await page.screenshot({ path: env.SCREENSHOT });
  await page.setViewportSize({ width: 1600, height: 1200 });
  console.log(`screenshot: ${env.SCREENSHOT}`);

  // A bad SQL edit: the pipeline keeps its last good plan and the page says why, until
  // the file is fixed.
  check(!(await page.isVisible('#notices')), 'no notice while the SQL files load');
  const features = join(env.SQL_DIR, 'features.sql');
  const good = readFileSync(features, 'utf8');
  // Renamed into place, so the processor never reads a file half written.
  const replace = (text) => {
    writeFileSync(`${features}.tmp`, text);
    renameSync(`${features}.tmp`, features);
  };
  replace(`${good}\nSELEC broken`);
  await page.waitForSelector('#notices', { state: 'visible', timeout: 30000 });
  const notice = await page.textContent('#notices');
  check(notice.includes('SQL edit rejected') && notice.includes('features.sql'),
    `the rejected edit is on the page, with its file (${notice.slice(0, 80)}…)`);
  replace(good);
  const gone = await page.waitForSelector('#notices', { state: 'hidden', timeout: 30000 })
    .then(() => true, () => false);
  check(gone, 'the notice goes once the file is fixed');

  // Refresh interval: 1 s, then 3 s, as the gaps between snapshots show.
  const gaps = async (count) => {
    const start = await page.evaluate(() => window.contrail.snapshots);
    await page.waitForFunction((n) => window.contrail.snapshots >= n, start + count + 1, { timeout: 40000 });
    return page.evaluate((n) => {
      const a = window.contrail.arrivals.slice(-n);
      return a.slice(1).map((t, i) => t - a[i]);
    }, count + 1);
  };
  await page.fill('#refresh-interval', '1');
  await page.dispatchEvent('#refresh-interval', 'change');
  await page.waitForFunction(() => window.contrail.params?.interval === 1);
  const oneSecond = await gaps(3);
  check(oneSecond.every((g) => g > 600 && g < 2500), `at a 1 s interval snapshots come every ~1 s (${oneSecond.map(Math.round)} ms)`);
  await page.fill('#refresh-interval', '3');
  await page.dispatchEvent('#refresh-interval', 'change');
  await page.waitForFunction(() => window.contrail.params?.interval === 3);
  const threeSeconds = await gaps(2);
  check(threeSeconds.every((g) => g > 2500 && g < 5000), `at a 3 s interval snapshots come every ~3 s (${threeSeconds.map(Math.round)} ms)`);

  // Auto-refresh off: nothing new arrives; on again: snapshots resume.
  await page.uncheck('#auto-refresh');
  check(await page.evaluate(() => window.contrail.streaming) === false, 'auto-refresh off closes the stream');
  const paused = await page.evaluate(() => window.contrail.snapshots);
  await page.waitForTimeout(4000);
  check(await page.evaluate(() => window.contrail.snapshots) === paused, 'no snapshot arrives for 4 s with auto-refresh off');
  check(await page.getAttribute('#status-pill', 'data-status') === 'paused', 'the status pill says paused');
  await page.check('#auto-refresh');
  await page.waitForFunction((n) => window.contrail.snapshots > n, paused, { timeout: 10000 }).catch(() => {});
  const resumed = await page.evaluate(() => window.contrail.snapshots);
  check(resumed > paused && await page.evaluate(() => window.contrail.streaming),
    `auto-refresh on again: the stream reopens and snapshots resume (${paused} -> ${resumed})`);
  await page.fill('#refresh-interval', '1');
  await page.dispatchEvent('#refresh-interval', 'change');

  // 3. The source stopped: stale warning, and values that hold still to compare.
  const summary = await waitForStatic(live);
  await nextRender(page);
  check(await page.isVisible('#banner'), 'a stale warning shows when nothing new arrives');
  check((await page.textContent('#banner')).includes('stale'), 'the warning says the data is stale');
  check(await page.getAttribute('#status-pill', 'data-status') === 'stale', 'the status pill says stale');
  // Paused wins over stale in the pill; the banner keeps the stale warning.
  await page.uncheck('#auto-refresh');
  check(await page.getAttribute('#status-pill', 'data-status') === 'paused', 'paused on stale data: the pill says paused');
  check(await page.isVisible('#banner') && (await page.textContent('#banner')).includes('stale'),
    'paused on stale data: the banner still says stale');
  await page.check('#auto-refresh');
  await nextRender(page);
  check(await page.getAttribute('#status-pill', 'data-status') === 'stale', 'resumed on stale data: the pill says stale again');

  const expect = {
    'kpi-aircraft': summary.aircraft,
    'kpi-events': summary.events_per_s,
    'kpi-anomaly-rate': summary.anomaly_rate,
    'kpi-altitude': summary.avg_altitude_ft,
    'kpi-speed': summary.avg_speed_knots,
  };
  for (const [id, want] of Object.entries(expect)) {
    const got = await kpiValue(page, id);
    check(got === String(want ?? ''), `KPI ${id} = ${got}, /api/summary says ${want}`);
  }
  check(await kpiValue(page, 'kpi-freshness') === summary.newest_record,
    `freshness is the age of the newest record (${summary.newest_record})`);

  const all = await api(live, '/api/aircraft?limit=1000');
  const markers = await markerCount(page);
  const placed = all.aircraft.filter((a) => a.latitude !== null && a.longitude !== null).length;
  check(all.tracked === all.aircraft.length && placed === all.tracked,
    `every tracked aircraft has a position (${placed} of ${all.tracked})`);
  check(markers === all.tracked, `the map shows ${markers} markers; /api/aircraft reports ${all.tracked} aircraft`);
  check(await rowCount(page, 'table-aircraft') === all.tracked, 'the aircraft list has a row per tracked aircraft');
  const cells = await page.$$eval('#table-aircraft tbody td', (tds) => tds.map((td) => td.textContent.trim()));
  const odd = cells.filter((t) => t === '-0' || t.startsWith('–°') || t.startsWith('-0.'));
  check(odd.length === 0, `no negative zero or degree sign without a value in the list (${odd.slice(0, 3)})`);

  const snap = await api(live, '/api/snapshot?limit=1000');
  check(await page.evaluate(() => document.querySelectorAll('#emergencies li.emergency').length) === snap.emergencies.length,
    `the emergencies list has the ${snap.emergencies.length} aircraft squawking 7500/7600/7700`);
  const emergencyLabels = await page.evaluate(() => document.querySelectorAll('#map g.trace.scattergeo text').length);
  check(emergencyLabels === snap.emergencies.length, `emergencies are labelled on the map (${emergencyLabels})`);
  check(await rowCount(page, 'table-anomalies') === snap.anomalies.length && snap.anomalies.length > 0,
    `the anomalies table lists the ${snap.anomalies.length} latest anomalies`);
  const windowRows = await page.evaluate(() => document.querySelectorAll('#table-windows tbody tr').length);
  check(windowRows === snap.windows.length && snap.windows.some((w) => !w.open),
    `the windows table lists ${snap.windows.length} windows, closed ones among them`);

  // Filters: an altitude floor, then a search, each cuts the list to what the API matches.
  await page.fill('#min-alt', '20000');
  await page.waitForFunction(() => window.contrail.params?.min_alt === 20000, null, { timeout: 5000 });
  await nextRender(page);
  const high = await api(live, '/api/aircraft?limit=1000&min_alt=20000');
  const highRows = await rowCount(page, 'table-aircraft');
  check(highRows === high.matched && highRows < all.tracked && highRows > 0,
    `min altitude 20,000 ft: the table shows ${highRows} of ${all.tracked} (API: ${high.matched})`);
  check(await markerCount(page) === high.matched, 'the map shows the filtered aircraft only');
  const prefix = all.aircraft.find((a) => a.callsign)?.callsign.slice(0, 3);
  await page.fill('#min-alt', '');
  await page.fill('#table-search', prefix);
  await page.waitForFunction((q) => window.contrail.params?.q === q && window.contrail.params?.min_alt === null,
    prefix, { timeout: 5000 });
  await nextRender(page);
  const found = await api(live, `/api/aircraft?limit=1000&q=${encodeURIComponent(prefix)}`);
  const foundRows = await rowCount(page, 'table-aircraft');
  check(foundRows === found.matched && foundRows < all.tracked && foundRows > 0,
    `search "${prefix}": the table shows ${foundRows} (API: ${found.matched})`);
  check(await page.inputValue('#search') === prefix, 'the sidebar search mirrors the table search');
  await page.click('#clear-filters');
  await nextRender(page);
  check(await rowCount(page, 'table-aircraft') === all.tracked, 'clearing the filters brings every aircraft back');

  // Buffer: 10 aircraft.
  await page.fill('#buffer', '10');
  await page.dispatchEvent('#buffer', 'change');
  await page.waitForFunction(() => window.contrail.params?.limit === 10, null, { timeout: 5000 });
  await nextRender(page);
  check(await markerCount(page) === 10 && await rowCount(page, 'table-aircraft') === 10, 'a buffer of 10 shows 10 aircraft');
  await page.fill('#buffer', '1000');
  await page.dispatchEvent('#buffer', 'change');
  await page.waitForFunction(() => window.contrail.params?.limit === 1000, null, { timeout: 5000 });
  await nextRender(page);

  // Clicking an aircraft: its details and track.
  const pick = snap.emergencies[0]?.icao24 ?? snap.anomalies[0].icao24;
  await page.click(`#table-aircraft tbody tr[data-icao24="${pick}"]`);
  await page.waitForFunction((icao) => document.querySelector('#details-body')?.textContent.includes(icao), pick, { timeout: 5000 });
  const detail = await api(live, `/api/aircraft/${pick}`);
  // The selected track: the yellow line (web/app/map.js).
  const trackPoints = await page.evaluate(() => {
    const line = [...document.querySelectorAll('#map g.trace.scattergeo path.js-line')]
      .find((p) => getComputedStyle(p).stroke === 'rgb(255, 225, 77)');
    const d = line?.getAttribute('d') ?? '';
    return (d.match(/L/g) ?? []).length + (d ? 1 : 0);
  });
  check(detail.track.length > 1 && trackPoints > 1, `the selected aircraft's track is drawn (${trackPoints} of ${detail.track.length} points)`);
  check(await page.isVisible('#details-chart'), 'its altitude profile is shown');

  figure('js_heap_mib_after_test', Number((await heapMiB(page)).toFixed(1)));
  check(errors.length === 0, `no console errors (${errors.join(' | ')})`);
  await page.close();
}

async function soak(browser) {
  const seconds = Number(env.SOAK_SECONDS ?? 600);
  const { page, errors } = await openPage(browser);
  await page.addInitScript(() => localStorage.setItem('contrail.controls', JSON.stringify({ interval: 1, buffer: 1000, auto: true })));
  await page.goto(env.LIVE_URL);
  await page.waitForFunction(() => window.contrail.firstDataPaint !== null, null, { timeout: 30000 });
  await page.waitForFunction(() => window.contrail.firstMapPaint !== null, null, { timeout: 30000 });
  const paints = await page.evaluate(() => [window.contrail.firstDataPaint, window.contrail.firstMapPaint]);
  figure('first_paint_with_data_ms', Math.round(paints[0]), { target: '<= 1000', from: 'navigation start' });
  figure('first_map_paint_ms', Math.round(paints[1]), { from: 'navigation start' });
  const aircraft = Number(await kpiValue(page, 'kpi-aircraft'));
  const started = Date.now();
  let peak = 0;
  const samples = [];
  const renderMs = [];
  while (Date.now() - started < seconds * 1000) {
    await page.waitForTimeout(Math.min(30000, seconds * 1000));
    const used = await heapMiB(page);
    peak = Math.max(peak, used);
    samples.push(Number(used.toFixed(1)));
    renderMs.push(await page.evaluate(() => ({ total: Math.round(window.contrail.renderMs), ...window.contrail.renderParts })));
  }
  const stats = await page.evaluate(() => ({ snapshots: window.contrail.snapshots, renders: window.contrail.renders }));
  figure('js_heap_mib_peak', Number(peak.toFixed(1)), {
    target: '< 150', seconds, aircraft, samples, render_ms: renderMs, ...stats,
  });
  check(errors.length === 0, `no console errors during the soak (${errors.join(' | ')})`);
  await page.close();
}

const browser = await chromium.launch({
  executablePath: env.CONTRAIL_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox'],
});
try {
  await (mode === 'soak' ? soak(browser) : test(browser));
} catch (e) {
  console.error(String(e.stack ?? e));
  process.exitCode = 1;
} finally {
  await browser.close();
}
