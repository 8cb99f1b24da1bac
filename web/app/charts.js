// The six charts under the map. Distributions are over the aircraft shown (the buffer,
// after the filters); the window chart is the pipeline's closed windows plus the open ones
// counted live (lighter bars).

const COLORS = { accent: '#4cc3ff', bad: '#ff5470', good: '#3ddc97', muted: '#8a98b3', grid: '#24314d' };
const PHASE_COLORS = {
  ground: '#6c7a96', takeoff: '#f9d649', climb: '#f98c2b', cruise: '#4cc3ff',
  descent: '#9b4dca', approach: '#3ddc97', unknown: '#3a4a6b',
};
const PHASES = ['ground', 'takeoff', 'climb', 'cruise', 'descent', 'approach', 'unknown'];

const config = { responsive: true, displayModeBar: false };

function layout(extra = {}) {
  const axis = (a = {}) => ({
    gridcolor: COLORS.grid, zerolinecolor: COLORS.grid, color: COLORS.muted, automargin: true, ...a,
  });
  return {
    margin: { l: 44, r: 12, t: 6, b: 36 },
    paper_bgcolor: 'rgba(0,0,0,0)',
    plot_bgcolor: 'rgba(0,0,0,0)',
    font: { color: '#e6ecf7', size: 11 },
    bargap: 0.08,
    showlegend: false,
    ...extra,
    xaxis: axis(extra.xaxis),
    yaxis: axis(extra.yaxis),
  };
}

function histogram(el, values, title, color, size) {
  return Plotly.react(el, [{
    type: 'histogram', x: values, marker: { color },
    xbins: { size }, hovertemplate: `%{x}: %{y} aircraft<extra></extra>`,
  }], layout({ xaxis: { title: { text: title } }, yaxis: { title: { text: 'aircraft' } } }), config);
}

export function render(aircraft, windows) {
  const airborne = aircraft.filter((a) => !a.on_ground);
  const jobs = [
    histogram('chart-altitude', airborne.map((a) => a.altitude_ft).filter((v) => v !== null),
      'altitude (ft)', COLORS.accent, 2500),
    histogram('chart-speed', airborne.map((a) => a.speed_knots).filter((v) => v !== null),
      'ground speed (kn)', COLORS.good, 25),
  ];

  const scored = aircraft.filter((a) => a.score !== null);
  jobs.push(Plotly.react('chart-score', [
    { type: 'histogram', name: 'normal', x: scored.filter((a) => !a.anomaly).map((a) => a.score),
      marker: { color: COLORS.accent }, xbins: { size: 0.01 } },
    { type: 'histogram', name: 'anomaly', x: scored.filter((a) => a.anomaly).map((a) => a.score),
      marker: { color: COLORS.bad }, xbins: { size: 0.01 } },
  ], layout({
    barmode: 'stack', showlegend: true,
    legend: { orientation: 'h', y: 1.12, x: 0 },
    xaxis: { title: { text: 'latest anomaly score' } }, yaxis: { title: { text: 'aircraft' } },
  }), config));

  const counts = Object.fromEntries(PHASES.map((p) => [p, 0]));
  for (const a of aircraft) counts[a.phase] = (counts[a.phase] ?? 0) + 1;
  const phases = PHASES.filter((p) => counts[p] > 0);
  jobs.push(Plotly.react('chart-phase', [{
    type: 'bar', orientation: 'h', y: phases, x: phases.map((p) => counts[p]),
    marker: { color: phases.map((p) => PHASE_COLORS[p]) },
    text: phases.map((p) => counts[p]), textposition: 'auto',
    hovertemplate: '%{y}: %{x} aircraft<extra></extra>',
  }], layout({ yaxis: { autorange: 'reversed' }, xaxis: { title: { text: 'aircraft' } } }), config));

  // Bars span their window: x is the start, offset 0, width the window's length.
  const starts = windows.map((w) => w.start);
  const mids = windows.map((w) => new Date((Date.parse(w.start) + Date.parse(w.end)) / 2).toISOString());
  const lengths = windows.map((w) => Date.parse(w.end) - Date.parse(w.start));
  const range = windows.length
    ? [starts[0], new Date(Math.max(Date.parse(windows.at(-1).end), Date.parse(starts[0]) + 6 * lengths[0])).toISOString()]
    : undefined;
  jobs.push(Plotly.react('chart-windows', [
    {
      type: 'bar', name: 'events', x: starts, y: windows.map((w) => w.events),
      offset: 0, width: lengths.map((l) => l * 0.92),
      marker: { color: windows.map((w) => (w.open ? 'rgba(76,195,255,0.35)' : COLORS.accent)) },
      customdata: windows.map((w) => (w.open ? 'open, counted live' : 'closed')),
      hovertemplate: '%{x|%H:%M}: %{y} events (%{customdata})<extra></extra>',
    },
    {
      type: 'scatter', mode: 'lines+markers', name: 'anomalies', yaxis: 'y2',
      x: mids, y: windows.map((w) => w.anomalies), line: { color: COLORS.bad },
      hovertemplate: '%{x|%H:%M}: %{y} anomalies<extra></extra>',
    },
  ], layout({
    showlegend: true, legend: { orientation: 'h', y: 1.12, x: 0 },
    xaxis: { type: 'date', range, title: { text: 'window (UTC)' } },
    yaxis: { title: { text: 'events' } },
    yaxis2: { overlaying: 'y', side: 'right', title: { text: 'anomalies' }, color: COLORS.bad, gridcolor: 'rgba(0,0,0,0)', rangemode: 'tozero' },
    margin: { l: 50, r: 50, t: 6, b: 40 },
  }), config));

  const points = airborne.filter((a) => a.altitude_ft !== null && a.speed_knots !== null);
  jobs.push(Plotly.react('chart-scatter', [{
    type: 'scatter', mode: 'markers',
    x: points.map((a) => a.speed_knots), y: points.map((a) => a.altitude_ft),
    text: points.map((a) => a.callsign || a.icao24),
    marker: {
      size: 5, color: points.map((a) => a.score ?? 0), colorscale: 'YlOrRd', reversescale: true,
      cmin: 0.3, cmax: 0.8, line: { width: points.map((a) => (a.anomaly ? 1.5 : 0)), color: COLORS.bad },
    },
    hovertemplate: '%{text}: %{x} kn at %{y} ft<extra></extra>',
  }], layout({ xaxis: { title: { text: 'ground speed (kn)' } }, yaxis: { title: { text: 'altitude (ft)' } } }), config));
  return Promise.all(jobs);
}

export function renderProfile(el, track) {
  return Plotly.react(el, [{
    type: 'scatter', mode: 'lines', x: track.map((p) => p.time), y: track.map((p) => p.altitude_ft),
    line: { color: '#ffe14d' }, hovertemplate: '%{x|%H:%M:%S}: %{y:,.0f} ft<extra></extra>',
  }, {
    type: 'scatter', mode: 'markers', x: track.filter((p) => p.anomaly).map((p) => p.time),
    y: track.filter((p) => p.anomaly).map((p) => p.altitude_ft),
    marker: { color: COLORS.bad, size: 8 }, hovertemplate: 'anomaly at %{x|%H:%M:%S}<extra></extra>',
  }], layout({
    margin: { l: 50, r: 8, t: 4, b: 30 },
    xaxis: { type: 'date' }, yaxis: { title: { text: 'ft' } },
  }), config);
}
