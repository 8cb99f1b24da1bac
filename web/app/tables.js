// The three tables: latest anomalies (with the fields that matter for the signal that
// stands out), recent windows, and the aircraft list (sortable by any column).

import { clock, degrees, escape, label, num, percent } from './format.js';

function rows(table, html, columns, emptyText) {
  table.tBodies[0].innerHTML = html || `<tr><td class="empty" colspan="${columns}">${emptyText}</td></tr>`;
}

// What made the report stand out, in words, from the fields the signal depends on.
function anomalyDetails(a) {
  switch (a.signal) {
    case 'emergency squawk':
      return `squawk ${escape(a.squawk)} at ${num(a.altitude_ft)} ft`;
    case 'position jump':
      return `jumped ${num(a.position_jump_km, 1)} km in ${num(a.seconds_since_previous, 0)} s (${num(a.speed_mismatch_knots)} kn over reported speed)`;
    case 'speed mismatch':
      return `reports ${num(a.speed_knots)} kn; track implies ${num(a.speed_mismatch_knots)} kn more`;
    case 'climb mismatch':
      return `altitude change ${num(a.climb_mismatch_fpm)} ft/min off the reported ${num(a.vertical_rate_fpm)} ft/min`;
    case 'reporting gap':
      return `no report for ${num(a.seconds_since_previous)} s`;
    default:
      return `${escape(a.phase)}, ${num(a.speed_knots)} kn at ${num(a.altitude_ft)} ft, ${num(a.vertical_rate_fpm)} ft/min`;
  }
}

export function renderAnomalies(table, anomalies) {
  rows(table, anomalies.map((a) => `<tr data-icao24="${escape(a.icao24)}">
    <td>${clock(a.time)}</td>
    <td>${escape(label(a))}</td>
    <td class="num">${num(a.score, 3)}</td>
    <td><span class="badge bad">${escape(a.signal)}</span></td>
    <td class="wrap">${anomalyDetails(a)}</td></tr>`).join(''), 5, 'No anomalies yet');
}

export function renderWindows(table, windows) {
  const newestFirst = [...windows].reverse();
  rows(table, newestFirst.map((w) => `<tr>
    <td>${clock(w.start)}–${clock(w.end)}${w.open ? ' <span class="badge open">open</span>' : ''}</td>
    <td class="num">${num(w.events)}</td>
    <td class="num">${num(w.anomalies)}</td>
    <td class="num">${w.events ? percent(w.anomalies / w.events) : '–'}</td>
    <td class="num">${num(w.aircraft)}</td>
    <td class="num">${w.avg_speed_knots === null ? '–' : `${num(w.avg_speed_knots)} kn`}</td>
    <td class="num">${w.avg_altitude_ft === null ? '–' : `${num(w.avg_altitude_ft)} ft`}</td>
    <td class="num">${num(w.avg_score, 3)}</td></tr>`).join(''), 8, 'No windows yet');
}

export class AircraftTable {
  constructor(table, onSelect) {
    this.table = table;
    this.sort = { key: 'time', dir: -1 };
    this.items = [];
    this.selected = null;
    table.tHead.addEventListener('click', (e) => {
      const th = e.target.closest('th[data-key]');
      if (!th) return;
      const key = th.dataset.key;
      this.sort = { key, dir: this.sort.key === key ? -this.sort.dir : (key === 'time' || key === 'score' ? -1 : 1) };
      this.draw();
    });
    table.tBodies[0].addEventListener('click', (e) => {
      const tr = e.target.closest('tr[data-icao24]');
      if (tr) onSelect(tr.dataset.icao24);
    });
  }

  update(items, selected) {
    this.items = items;
    this.selected = selected;
    this.draw();
  }

  draw() {
    const { key, dir } = this.sort;
    for (const th of this.table.tHead.querySelectorAll('th[data-key]')) {
      th.classList.toggle('asc', th.dataset.key === key && dir === 1);
      th.classList.toggle('desc', th.dataset.key === key && dir === -1);
    }
    const value = (a) => a[key] ?? (typeof this.items[0]?.[key] === 'number' ? -Infinity : '');
    const sorted = [...this.items].sort((a, b) => {
      const x = value(a);
      const y = value(b);
      return (x < y ? -1 : x > y ? 1 : a.icao24.localeCompare(b.icao24)) * dir;
    });
    rows(this.table, sorted.map((a) => {
      const cls = [a.recent_anomaly ? 'anomalous' : '', a.emergency ? 'emergency' : '',
        a.icao24 === this.selected ? 'selected' : ''].join(' ');
      return `<tr data-icao24="${escape(a.icao24)}" class="${cls}">
        <td>${escape(a.callsign ?? '–')}</td><td>${escape(a.icao24)}</td><td>${escape(a.country)}</td>
        <td class="num">${a.on_ground ? 'ground' : num(a.altitude_ft)}</td>
        <td class="num">${num(a.speed_knots)}</td><td class="num">${num(a.vertical_rate_fpm)}</td>
        <td class="num">${degrees(a.heading)}</td><td>${escape(a.phase)}</td>
        <td>${a.emergency ? `<span class="badge bad">${escape(a.squawk)}</span>` : escape(a.squawk ?? '')}</td>
        <td class="num">${num(a.score, 3)}</td><td>${clock(a.time)}</td></tr>`;
    }).join(''), 11, 'No aircraft match');
  }
}
