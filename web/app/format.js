// Number and time formatting shared by the panels. Values the API leaves out (null) show
// as an en dash.

const DASH = '–';

export function num(v, digits = 0) {
  if (v === null || v === undefined || Number.isNaN(v)) return DASH;
  // A value that rounds to zero shows as 0, not -0 (a level flight's -0.3 ft/min).
  const shown = Math.abs(v) < 0.5 * 10 ** -digits ? 0 : v;
  return shown.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function degrees(v) {
  return v === null || v === undefined ? DASH : `${num(v)}°`;
}

export function percent(fraction, digits = 2) {
  if (fraction === null || fraction === undefined) return DASH;
  return `${num(fraction * 100, digits)} %`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return DASH;
  const s = Math.max(0, seconds);
  const parts = (big, bigUnit, small, smallUnit) => (small ? `${big} ${bigUnit} ${small} ${smallUnit}` : `${big} ${bigUnit}`);
  if (s < 60) return `${num(s, s < 10 ? 1 : 0)} s`;
  if (s < 3600) return parts(Math.floor(s / 60), 'min', Math.round(s % 60), 's');
  if (s < 86400) return parts(Math.floor(s / 3600), 'h', Math.round((s % 3600) / 60), 'min');
  return `${num(s / 86400, 1)} days`;
}

export function clock(iso) {
  if (!iso) return DASH;
  return iso.slice(11, 19);
}

export function escape(text) {
  return String(text ?? '').replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  }[c]));
}

export function label(a) {
  return a.callsign || a.icao24;
}
