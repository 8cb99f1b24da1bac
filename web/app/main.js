// Contrail's dashboard: controls, the server-sent event stream, and rendering of each
// snapshot into KPIs, map, charts and tables. `window.contrail` exposes what the browser
// test checks (snapshots received, when data was first painted, whether it is streaming).

import { getJson, openStream, query } from './api.js';
import * as charts from './charts.js';
import { clock, degrees, duration, escape, label, num, percent } from './format.js';
import * as map from './map.js';
import { AircraftTable, renderAnomalies, renderWindows } from './tables.js';

const $ = (id) => document.getElementById(id);

const probe = {
  snapshots: 0,
  renders: 0,
  // probe.snapshots as of the snapshot drawn last.
  renderedSnapshot: 0,
  // How long the last full render took.
  renderMs: null,
  arrivals: [],
  // performance.now() when figures from data were first painted, and when the map was.
  firstDataPaint: null,
  firstMapPaint: null,
  streaming: false,
  params: null,
  error: null,
};
window.contrail = probe;

const controls = {
  auto: $('auto-refresh'),
  interval: $('refresh-interval'),
  buffer: $('buffer'),
  search: $('search'),
  tableSearch: $('table-search'),
  minAlt: $('min-alt'),
  maxAlt: $('max-alt'),
  anomaliesOnly: $('anomalies-only'),
};

let stream = null;
let latest = null;
let drawing = false;
let pending = false;
let selected = null;
let selectedTrack = null;
let connection = 'connecting';

const table = new AircraftTable($('table-aircraft'), select);

function restoreSettings() {
  try {
    const saved = JSON.parse(localStorage.getItem('contrail.controls') || '{}');
    if (saved.interval) controls.interval.value = saved.interval;
    if (saved.buffer) controls.buffer.value = saved.buffer;
    if (saved.auto === false) controls.auto.checked = false;
  } catch { /* a broken entry is ignored */ }
}

function saveSettings() {
  localStorage.setItem('contrail.controls', JSON.stringify({
    interval: Number(controls.interval.value),
    buffer: Number(controls.buffer.value),
    auto: controls.auto.checked,
  }));
}

// The API's parameters from the controls, or null with the problem shown.
function params() {
  const minAlt = controls.minAlt.value === '' ? null : Number(controls.minAlt.value);
  const maxAlt = controls.maxAlt.value === '' ? null : Number(controls.maxAlt.value);
  const error = $('filter-error');
  if (minAlt !== null && maxAlt !== null && minAlt > maxAlt) {
    error.textContent = 'Min altitude is above max altitude.';
    error.hidden = false;
    return null;
  }
  error.hidden = true;
  return {
    limit: Number(controls.buffer.value),
    min_alt: minAlt,
    max_alt: maxAlt,
    q: controls.search.value.trim(),
    anomalies: controls.anomaliesOnly.checked,
  };
}

// (Re)opens the stream for the current controls; with auto-refresh off, fetches one
// snapshot instead when `fetchWhenPaused` (a filter changed) and keeps what is shown
// otherwise (auto-refresh was just turned off).
function connect(fetchWhenPaused = true) {
  if (stream) { stream.close(); stream = null; }
  probe.streaming = false;
  const p = params();
  if (!p) return;
  if (!controls.auto.checked) {
    connection = 'paused';
    if (fetchWhenPaused) refreshOnce(p);
    return;
  }
  const streamParams = { ...p, interval: Number(controls.interval.value) };
  probe.params = streamParams;
  stream = openStream(streamParams, receive, (state) => {
    connection = state === 'open' ? 'open' : 'offline';
    showStatus();
  });
  probe.streaming = true;
}

async function refreshOnce(p = params()) {
  if (!p) return;
  try {
    receive(await getJson(`/api/snapshot${query(p)}`));
  } catch (e) {
    probe.error = String(e);
    connection = 'offline';
    showStatus();
  }
}

function receive(snapshot) {
  probe.snapshots += 1;
  probe.arrivals.push(performance.now());
  if (probe.arrivals.length > 50) probe.arrivals.shift();
  if (connection !== 'paused') connection = 'open';
  latest = snapshot;
  if (drawing) { pending = true; return; }
  draw();
}

// Plotly.js (4.8 MB) is loaded after the first snapshot's figures and tables are on
// screen, so that parsing it does not hold back the first paint with data.
let plotlyLoading = null;
function plotly() {
  if (typeof Plotly !== 'undefined') return Promise.resolve();
  plotlyLoading ??= new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = '/vendor/plotly.js';
    script.onload = resolve;
    script.onerror = () => reject(new Error('Plotly.js did not load (/vendor/plotly.js): run `npm ci --prefix web` and reload.'));
    document.head.append(script);
  });
  return plotlyLoading;
}

async function draw() {
  drawing = true;
  try {
    do {
      pending = false;
      const s = latest;
      const number = probe.snapshots;
      const began = performance.now();
      if (selected) await loadTrack();
      const aircraft = s.aircraft.aircraft;
      showStatus();
      showKpis(s.summary);
      showEmergencies(s.emergencies);
      $('map-count').textContent = `${num(aircraft.length)} shown · ${num(s.aircraft.matched)} match · ${num(s.aircraft.tracked)} tracked`;
      $('aircraft-count').textContent = `${num(aircraft.length)} of ${num(s.aircraft.matched)}`;
      renderAnomalies($('table-anomalies'), s.anomalies);
      renderWindows($('table-windows'), s.windows);
      table.update(aircraft, selected);
      if (probe.firstDataPaint === null && s.summary.aircraft > 0) {
        requestAnimationFrame(() => { probe.firstDataPaint ??= performance.now(); });
      }
      const tablesDone = performance.now();
      await plotly();
      const mapStart = performance.now();
      await map.render($('map'), aircraft, selectedTrack);
      hookMap();
      const mapDone = performance.now();
      await charts.render(aircraft, s.windows);
      showDetails(aircraft);
      probe.renderParts = {
        tables: Math.round(tablesDone - began),
        map: Math.round(mapDone - mapStart),
        charts: Math.round(performance.now() - mapDone),
      };
      if (probe.firstMapPaint === null && aircraft.length > 0) probe.firstMapPaint = performance.now();
      probe.renders += 1;
      probe.renderedSnapshot = number;
      probe.renderMs = performance.now() - began;
    } while (pending);
  } catch (e) {
    probe.error = String(e);
    console.error(e);
    const banner = $('banner');
    banner.textContent = String(e.message ?? e);
    banner.className = 'banner offline';
    banner.hidden = false;
  } finally {
    drawing = false;
  }
}

function kpi(id, value, text, cls = '') {
  const card = $(id);
  const el = card.querySelector('.value');
  el.textContent = text;
  el.dataset.value = value === null || value === undefined ? '' : String(value);
  card.className = `kpi ${cls}`;
}

function showKpis(k) {
  kpi('kpi-aircraft', k.aircraft, num(k.aircraft));
  kpi('kpi-events', k.events_per_s, num(k.events_per_s, 1));
  kpi('kpi-anomaly-rate', k.anomaly_rate, percent(k.anomaly_rate), k.anomaly_rate > 0.05 ? 'alert' : '');
  kpi('kpi-altitude', k.avg_altitude_ft, k.avg_altitude_ft === null ? '–' : `${num(k.avg_altitude_ft)} ft`);
  kpi('kpi-speed', k.avg_speed_knots, k.avg_speed_knots === null ? '–' : `${num(k.avg_speed_knots)} kn`);
  kpi('kpi-freshness', k.newest_record, duration(k.freshness_s), k.status === 'stale' ? 'stale' : '');
  $('kpi-aircraft').querySelector('.sub').textContent = `reported in the last ${duration(k.track_timeout_s)}`;
}

function showStatus() {
  const pill = $('status-pill');
  const summary = latest?.summary;
  // Offline and paused describe the connection and win over what the last snapshot said;
  // a stale warning still shows in the banner while paused.
  let status = summary ? summary.status : 'waiting';
  if (connection === 'offline') status = 'offline';
  else if (connection === 'paused') status = 'paused';
  const text = {
    live: 'live', stale: 'stale', waiting: 'waiting for data', paused: 'paused', offline: 'offline',
  }[status];
  pill.textContent = text;
  pill.className = `pill pill-${status}`;
  pill.dataset.status = status;
  $('updated').textContent = summary ? `updated ${clock(summary.generated_at)} UTC` : '';

  $('waiting').hidden = !(summary && summary.status === 'waiting');
  const banner = $('banner');
  if (connection === 'offline') {
    banner.textContent = 'Lost the connection to Contrail — retrying…';
    banner.className = 'banner offline';
    banner.hidden = false;
  } else if (summary && summary.status === 'stale') {
    banner.textContent = `Data is stale: nothing new for ${duration(summary.last_received_s)}; the newest record is ${duration(summary.freshness_s)} old.`;
    banner.className = 'banner';
    banner.hidden = false;
  } else {
    banner.hidden = true;
  }

  // Edits the pipeline rejected (it runs on the last good ones until they are fixed).
  const notices = summary?.notices ?? [];
  const box = $('notices');
  box.replaceChildren(...notices.map((text) => {
    const p = document.createElement('p');
    p.textContent = text;
    return p;
  }));
  box.hidden = notices.length === 0;
}

function showEmergencies(list) {
  const ul = $('emergencies');
  if (!list.length) { ul.innerHTML = '<li class="muted">none</li>'; return; }
  ul.innerHTML = list.map((a) => `<li class="emergency" data-icao24="${escape(a.icao24)}">
    <span class="code">${escape(a.squawk)}</span> ${escape(label(a))} · ${escape(a.emergency)}<br>
    <span class="muted">${num(a.altitude_ft)} ft · ${num(a.speed_knots)} kn</span></li>`).join('');
}

async function loadTrack() {
  try {
    const detail = await getJson(`/api/aircraft/${selected}`);
    selectedTrack = detail.track;
    selected = detail.icao24;
    return detail;
  } catch (e) {
    selectedTrack = null;
    return null;
  }
}

async function select(icao24) {
  selected = icao24;
  const detail = await loadTrack();
  if (!detail) {
    $('details-body').innerHTML = `<p class="muted">${escape(icao24)} is no longer in the live store.</p>`;
    return;
  }
  if (latest) {
    showDetails(latest.aircraft.aircraft, detail.latest);
    await map.render($('map'), latest.aircraft.aircraft, selectedTrack);
    table.update(latest.aircraft.aircraft, selected);
  }
}

function showDetails(aircraft, fallback = null) {
  const body = $('details-body');
  const chart = $('details-chart');
  if (!selected) {
    chart.hidden = true;
    $('close-details').hidden = true;
    return;
  }
  const a = aircraft.find((x) => x.icao24 === selected) ?? fallback;
  $('close-details').hidden = false;
  if (!a) {
    body.innerHTML = `<p class="muted">${escape(selected)} is not among the aircraft shown.</p>`;
    chart.hidden = true;
    return;
  }
  const row = (k, v) => `<dt>${k}</dt><dd>${v}</dd>`;
  body.innerHTML = `<div class="title">${escape(label(a))}
      ${a.emergency ? `<span class="badge bad">${escape(a.squawk)} ${escape(a.emergency)}</span>` : ''}
      ${a.recent_anomaly ? '<span class="badge bad">anomaly</span>' : ''}</div>
    <dl>
      ${row('ICAO24', escape(a.icao24))}
      ${row('Country', escape(a.country))}
      ${row('Last report', `${clock(a.time)} UTC`)}
      ${row('Position', a.latitude === null ? '–' : `${num(a.latitude, 4)}, ${num(a.longitude, 4)}`)}
      ${row('Altitude', a.on_ground ? 'on the ground' : `${num(a.altitude_ft)} ft`)}
      ${row('Speed', `${num(a.speed_knots)} kn`)}
      ${row('Vertical rate', `${num(a.vertical_rate_fpm)} ft/min`)}
      ${row('Heading', degrees(a.heading))}
      ${row('Phase', escape(a.phase))}
      ${row('Squawk', escape(a.squawk ?? '–'))}
      ${row('Anomaly score', num(a.score, 3))}
      ${row('Track points', selectedTrack ? num(selectedTrack.length) : '–')}
    </dl>`;
  if (selectedTrack && selectedTrack.length && typeof Plotly !== 'undefined') {
    chart.hidden = false;
    charts.renderProfile(chart, selectedTrack);
  }
}

function wire() {
  const debounce = (fn, ms) => {
    let t;
    return () => { clearTimeout(t); t = setTimeout(fn, ms); };
  };
  const reconnect = debounce(connect, 250);
  controls.auto.addEventListener('change', () => { saveSettings(); connect(false); showStatus(); });
  controls.interval.addEventListener('input', () => { $('refresh-interval-value').textContent = controls.interval.value; });
  controls.interval.addEventListener('change', () => { saveSettings(); connect(); });
  controls.buffer.addEventListener('input', () => { $('buffer-value').textContent = controls.buffer.value; });
  controls.buffer.addEventListener('change', () => { saveSettings(); connect(); });
  for (const [from, to] of [[controls.search, controls.tableSearch], [controls.tableSearch, controls.search]]) {
    from.addEventListener('input', () => { to.value = from.value; reconnect(); });
  }
  for (const el of [controls.minAlt, controls.maxAlt]) el.addEventListener('input', reconnect);
  controls.anomaliesOnly.addEventListener('change', connect);
  $('clear-filters').addEventListener('click', () => {
    controls.search.value = '';
    controls.tableSearch.value = '';
    controls.minAlt.value = '';
    controls.maxAlt.value = '';
    controls.anomaliesOnly.checked = false;
    connect();
  });
  $('refresh-now').addEventListener('click', () => refreshOnce());
  $('fit-map').addEventListener('click', () => { map.fit(); if (latest) draw(); });
  $('close-details').addEventListener('click', () => {
    selected = null;
    selectedTrack = null;
    $('details-body').innerHTML = '<p class="muted">Click an aircraft on the map or in the list to see its details and track.</p>';
    if (latest) draw();
  });
  $('emergencies').addEventListener('click', (e) => {
    const li = e.target.closest('li[data-icao24]');
    if (li) select(li.dataset.icao24);
  });
  $('table-anomalies').tBodies[0].addEventListener('click', (e) => {
    const tr = e.target.closest('tr[data-icao24]');
    if (tr) select(tr.dataset.icao24);
  });
}

// Plotly gives the map div its `.on` with the first plot.
let mapHooked = false;
function hookMap() {
  const el = $('map');
  if (mapHooked || !el.on) return;
  el.on('plotly_click', (e) => {
    const icao24 = e.points?.find((p) => p.customdata)?.customdata;
    if (icao24) select(icao24);
  });
  mapHooked = true;
}

function start() {
  restoreSettings();
  $('refresh-interval-value').textContent = controls.interval.value;
  $('buffer-value').textContent = controls.buffer.value;
  wire();
  connect();
}

start();
