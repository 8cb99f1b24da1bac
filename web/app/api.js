// The dashboard's JSON API and its server-sent event stream (see src/dashboard/mod.rs).

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== '' && v !== false) q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

export async function getJson(path) {
  const response = await fetch(path, { cache: 'no-store' });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${path}: HTTP ${response.status}`);
  return body;
}

// Opens /api/stream; `onSnapshot` gets each parsed snapshot, `onState` 'open' or 'error'.
export function openStream(params, onSnapshot, onState) {
  const source = new EventSource(`/api/stream${query(params)}`);
  source.addEventListener('snapshot', (e) => onSnapshot(JSON.parse(e.data)));
  source.onopen = () => onState('open');
  source.onerror = () => onState(source.readyState === EventSource.CLOSED ? 'closed' : 'error');
  return source;
}
