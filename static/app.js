// KPI dashboard: tiles, trend and leaderboard of kpi-service, live over the
// Connect protocol (JSON). No libraries; every piece of service data reaches
// the DOM through textContent / attributes, never as HTML.

// ---------------------------------------------------------------- constants

const KEY_STORAGE = 'kpi-key';
const BROWSER_TZ = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
const ROTATE_MS = 15_000; // TV mode: next KPI every 15 s
const IDLE_CURSOR_MS = 3_000; // TV mode: hide the cursor after this
// Trend / leaderboard refetch after a scorecard change.
const REFETCH_DEBOUNCE_MS = 1_000;
const BACKOFF_MIN_MS = 1_000;
const BACKOFF_MAX_MS = 30_000;
// Errors a retry cannot fix: the watch stops and says so.
const FATAL_CODES = new Set(['unauthenticated', 'permission_denied', 'invalid_argument']);

const PERIODS = {
  month: { relative: 'RELATIVE_PERIOD_CURRENT_MONTH' },
  quarter: { relative: 'RELATIVE_PERIOD_CURRENT_QUARTER' },
  year: { relative: 'RELATIVE_PERIOD_CURRENT_YEAR' },
  last30: { relative: 'RELATIVE_PERIOD_LAST_N_DAYS', lastNDays: 30 },
  custom: null, // startDate / endDate from the two date inputs
};
const GRANULARITIES = {
  day: 'GRANULARITY_DAY',
  week: 'GRANULARITY_WEEK',
  month: 'GRANULARITY_MONTH',
  quarter: 'GRANULARITY_QUARTER',
};
const COMMON_ZONES = [
  'UTC', 'Europe/London', 'Europe/Dublin', 'Europe/Lisbon', 'Europe/Paris', 'Europe/Berlin',
  'Europe/Madrid', 'Europe/Rome', 'Europe/Amsterdam', 'Europe/Stockholm', 'Europe/Warsaw',
  'Europe/Athens', 'Europe/Istanbul', 'Europe/Moscow', 'Africa/Johannesburg', 'Africa/Lagos',
  'Asia/Dubai', 'Asia/Kolkata', 'Asia/Singapore', 'Asia/Shanghai', 'Asia/Hong_Kong',
  'Asia/Tokyo', 'Asia/Seoul', 'Australia/Sydney', 'Australia/Perth', 'Pacific/Auckland',
  'America/New_York', 'America/Toronto', 'America/Chicago', 'America/Denver',
  'America/Phoenix', 'America/Los_Angeles', 'America/Anchorage', 'Pacific/Honolulu',
  'America/Mexico_City', 'America/Bogota', 'America/Sao_Paulo', 'America/Santiago',
  'America/Argentina/Buenos_Aires',
];

// -------------------------------------------------------------------- state

const state = {
  key: null,
  kpis: [], // KpiDefinition[] in ListKpis order
  kpiDefs: new Map(), // kpi name -> KpiDefinition
  teams: new Map(), // teamId -> Team
  children: new Map(), // teamId ('' for roots) -> Team[]
  repsTeam: '', // the team whose tree's reps the subject select lists
  reps: [], // those reps
  repCache: new Map(), // teamId -> Rep[] (with sub-teams)
  // The selection, mirrored in the query string.
  subject: '', // 'team:<id>' | 'rep:<id>'
  period: 'quarter',
  start: '',
  end: '',
  tz: BROWSER_TZ,
  kpi: '',
  granularity: '', // '' = automatic
  tv: false,
  // Rendering.
  selectionGen: 0, // bumped on every subject/period change
  tilesGen: -1, // the generation the tiles show
  ready: false, // the tiles show the current selection
  renders: 0,
  currency: '', // the reporting currency, as last seen
  lastTiles: new Map(), // kpi -> data-value shown
};

const controllers = {}; // name -> AbortController of a running stream/fetch
const streamStatus = new Map(); // stream name -> connecting|live|reconnecting|offline
const errors = new Map(); // source -> message shown in #error
let trendTimer = 0;
let leaderboardTimer = 0;
let rotateTimer = 0;
let idleTimer = 0;

// -------------------------------------------------------------- DOM helpers

const $ = (id) => document.getElementById(id);

/** An element with attributes ('class', 'text' or any attribute) and children (nodes or strings). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  node.append(...children.filter((c) => c != null && c !== false));
  return node;
}

const SVG_NS = 'http://www.w3.org/2000/svg';
function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  node.append(...children.filter((c) => c != null && c !== false));
  return node;
}

function setAttrs(node, attrs) {
  for (const [name, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (name === 'text') node.textContent = value;
    else node.setAttribute(name, value === true ? '' : String(value));
  }
}

const clamp = (x, lo, hi) => Math.min(hi, Math.max(lo, x));

// ---------------------------------------------------------------------- api

class ApiError extends Error {
  constructor(code, message, details = []) {
    super(message || code);
    this.code = code;
    this.details = details;
  }
}

const HTTP_CODES = { 400: 'invalid_argument', 401: 'unauthenticated', 403: 'permission_denied', 404: 'unimplemented', 429: 'resource_exhausted', 503: 'unavailable', 504: 'deadline_exceeded' };

/** A Connect error from its JSON ({code, message, details}), or from the HTTP status alone. */
function connectError(json, httpStatus) {
  const code = json?.code || HTTP_CODES[httpStatus] || 'unknown';
  let message = json?.message || `HTTP ${httpStatus}`;
  // Name the fields a BadRequest detail blames.
  const violations = (json?.details ?? []).flatMap((d) => d?.debug?.fieldViolations ?? []);
  if (violations.length) message += ` (${violations.map((v) => `${v.field}: ${v.description}`).join('; ')})`;
  return new ApiError(code, message, json?.details ?? []);
}

async function errorFromResponse(res) {
  let json = null;
  try { json = await res.json(); } catch { /* not JSON */ }
  return connectError(json, res.status);
}

function headers(contentType) {
  return { 'Content-Type': contentType, Authorization: `Bearer ${state.key}` };
}

/** A unary call: `method` is "kpi.v1.KpiService/ListKpis". */
async function call(method, request, signal) {
  const res = await fetch(`/${method}`, {
    method: 'POST', headers: headers('application/json'), body: JSON.stringify(request), signal, cache: 'no-store',
  });
  if (!res.ok) throw await errorFromResponse(res);
  return res.json();
}

/** Every page of a paged list (AIP-158). */
async function listAll(method, request, field) {
  const out = [];
  let pageToken = '';
  for (let page = 0; page < 1000; page++) {
    const res = await call(method, { ...request, pageSize: 1000, ...(pageToken && { pageToken }) });
    out.push(...(res[field] ?? []));
    pageToken = res.nextPageToken ?? '';
    if (!pageToken) break;
  }
  return out;
}

const isAbort = (err) => err?.name === 'AbortError';

// -------------------------------------------------------------------- watch

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** One Connect envelope: flags, 4-byte big-endian length, the message. */
function envelope(json) {
  const payload = encoder.encode(json);
  const out = new Uint8Array(5 + payload.length);
  new DataView(out.buffer).setUint32(1, payload.length);
  out.set(payload, 5);
  return out;
}

/**
 * One server-streaming call: resolves on a clean end of stream, rejects with
 * an ApiError (end-of-stream error, non-200 status) or a network error.
 */
async function streamOnce(path, request, signal, onMessage) {
  const res = await fetch(path, {
    method: 'POST',
    headers: { ...headers('application/connect+json'), 'Connect-Protocol-Version': '1' },
    body: envelope(JSON.stringify(request)),
    signal,
    cache: 'no-store',
  });
  if (!res.ok) throw await errorFromResponse(res);
  const reader = res.body.getReader();
  let buf = new Uint8Array(0);
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) throw new ApiError('unavailable', 'the stream closed without an end message');
      // Envelopes may be split across chunks, or several may share one.
      const joined = new Uint8Array(buf.length + value.length);
      joined.set(buf);
      joined.set(value, buf.length);
      buf = joined;
      while (buf.length >= 5) {
        const flags = buf[0];
        const length = new DataView(buf.buffer, buf.byteOffset, 5).getUint32(1);
        if (buf.length < 5 + length) break;
        const text = decoder.decode(buf.subarray(5, 5 + length));
        buf = buf.slice(5 + length);
        const json = text ? JSON.parse(text) : {};
        if (flags & 0x02) {
          if (json.error) throw connectError(json.error, 200);
          return;
        }
        onMessage(json);
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

/** The retry delay the service asked for (RetryInfo), in ms, or 0. */
function retryDelayMs(err) {
  for (const d of err?.details ?? []) {
    const s = d?.debug?.retryDelay;
    if (typeof s === 'string' && s.endsWith('s')) return Math.min(BACKOFF_MAX_MS, parseFloat(s) * 1000 || 0);
  }
  return 0;
}

/**
 * A server stream kept open: reconnects with backoff (1 s doubling to 30 s,
 * back to 1 s once a message arrives) whenever it ends or fails, until
 * `signal` aborts or an error no retry can fix (FATAL_CODES) is reported
 * through `onError`. `onStatus` hears connecting / live / reconnecting / offline.
 */
function watch(path, request, onMessage, { signal, onStatus = () => {}, onError = () => {} }) {
  (async () => {
    let delay = BACKOFF_MIN_MS;
    onStatus('connecting');
    while (!signal.aborted) {
      let connected = false;
      try {
        await streamOnce(path, request, signal, (msg) => {
          connected = true;
          delay = BACKOFF_MIN_MS;
          onStatus('live');
          onMessage(msg);
        });
        if (signal.aborted) return;
        onStatus('reconnecting', 'the stream ended');
      } catch (err) {
        if (signal.aborted || isAbort(err)) return;
        if (err instanceof ApiError && FATAL_CODES.has(err.code)) {
          onStatus('offline', err.message);
          onError(err);
          return;
        }
        // fetch itself failing (a TypeError) means the service is out of reach.
        const unreachable = !(err instanceof ApiError) && !connected;
        onStatus(unreachable || !navigator.onLine ? 'offline' : 'reconnecting', err.message);
        delay = Math.max(delay, retryDelayMs(err));
      }
      await sleep(delay, signal);
      delay = Math.min(delay * 2, BACKOFF_MAX_MS);
    }
  })();
}

// --------------------------------------------------------------- formatting

const numberFormats = new Map();
function nf(options) {
  const cacheKey = JSON.stringify(options);
  let f = numberFormats.get(cacheKey);
  if (!f) numberFormats.set(cacheKey, (f = new Intl.NumberFormat(undefined, options)));
  return f;
}
const fixed = (digits, extra = {}) => nf({ minimumFractionDigits: digits, maximumFractionDigits: digits, ...extra });

function formatMoney(n, currency, extra = {}) {
  const digits = Math.abs(n) >= 1000 ? 0 : 2;
  if (currency) {
    try {
      return nf({ style: 'currency', currency, minimumFractionDigits: digits, maximumFractionDigits: digits, ...extra }).format(n);
    } catch { /* an unknown code: fall through */ }
  }
  return fixed(digits, extra).format(n) + (currency ? ` ${currency}` : '');
}

/** A number in a KPI's unit: "1,234", "51.6 %", "+12.5", "€1,235", "3.5 d", "42 min". */
function formatUnit(unit, n, currency = state.currency) {
  if (n == null || !Number.isFinite(n)) return '—';
  switch (unit) {
    case 'UNIT_COUNT': return nf({ maximumFractionDigits: 0 }).format(n);
    case 'UNIT_PERCENT': return `${fixed(1).format(n)} %`;
    case 'UNIT_NPS': return fixed(1, { signDisplay: 'exceptZero' }).format(n);
    case 'UNIT_MONEY': return formatMoney(n, currency);
    case 'UNIT_DAYS': return `${fixed(1).format(n)} d`;
    case 'UNIT_MINUTES': return `${fixed(0).format(n)} min`;
    default: return nf({ maximumFractionDigits: 2 }).format(n);
  }
}

/** The size of a change, unsigned: percentages in percentage points. */
function formatDelta(unit, n, currency) {
  const abs = Math.abs(n);
  switch (unit) {
    case 'UNIT_PERCENT': return `${fixed(1).format(abs)} pp`;
    case 'UNIT_NPS': return `${fixed(1).format(abs)} pts`;
    default: return formatUnit(unit, abs, currency);
  }
}

const formatPercent = (ratio) => `${nf({ maximumFractionDigits: 0 }).format(ratio * 100)} %`;
const formatInterval = (iv) => `${fixed(1).format(iv.low ?? 0)}–${fixed(1).format(iv.high ?? 0)}`;

const dateFormat = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short', year: 'numeric', timeZone: 'UTC' });
const toDate = (ymd) => {
  const [y, m, d] = String(ymd).split('-').map(Number);
  return new Date(Date.UTC(y, m - 1, d));
};
const formatDate = (ymd) => (ymd ? dateFormat.format(toDate(ymd)) : '');
function formatDateRange(start, end) {
  if (!start) return '';
  if (!end || start === end) return formatDate(start);
  try { return dateFormat.formatRange(toDate(start), toDate(end)); } catch { return `${formatDate(start)} – ${formatDate(end)}`; }
}

/** good / bad / neutral for a change, by the KPI's direction. */
function sentiment(change, direction) {
  if (!change) return 'neutral';
  if (direction === 'DIRECTION_LOWER_IS_BETTER') return change < 0 ? 'good' : 'bad';
  if (direction === 'DIRECTION_HIGHER_IS_BETTER') return change > 0 ? 'good' : 'bad';
  return 'neutral';
}

const hasValue = (v) => v?.value != null && Number.isFinite(Number(v.value));
const currencyOf = (v) => v?.money?.currencyCode || state.currency;

// ------------------------------------------------------------- status/errors

const STATUS_TEXT = { connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…', offline: 'Offline' };

function setStreamStatus(name, status, detail = '') {
  streamStatus.set(name, { status, detail });
  renderStatus();
}

/** The worst status of the open streams, shown in the header. */
function renderStatus() {
  const all = [...streamStatus.values()];
  const worst = ['offline', 'reconnecting', 'connecting', 'live'].find((s) => all.some((x) => x.status === s));
  const status = !navigator.onLine || !state.key ? 'offline' : worst || 'connecting';
  const node = $('status');
  if (node.dataset.status !== status) {
    node.dataset.status = status;
    node.textContent = STATUS_TEXT[status];
  }
  node.title = all.map((x) => x.detail).filter(Boolean).join('; ');
}

function setError(source, message) {
  errors.set(source, message);
  renderErrors();
}

function clearError(...sources) {
  if (sources.map((s) => errors.delete(s)).some(Boolean)) renderErrors();
}

function renderErrors() {
  const box = $('error');
  box.replaceChildren(...[...errors.values()].map((m) => el('p', { text: m })));
  box.hidden = errors.size === 0;
  updateBodyState();
}

function updateBodyState() {
  document.body.dataset.state = errors.size ? 'error' : !state.key ? 'signed-out' : state.ready ? 'ready' : 'loading';
}

const SOURCE_NAMES = { setup: 'Loading', scorecard: 'KPIs', trend: 'Trend', leaderboard: 'Leaderboard', reps: 'Reps' };

/** Any failure: an unknown key sends the user back to the key form. */
function handleError(source, err) {
  if (isAbort(err)) return;
  if (err?.code === 'unauthenticated') {
    signOut(`The key was not accepted: ${err.message}`);
    return;
  }
  setError(source, `${SOURCE_NAMES[source] ?? source}: ${err?.message || err}`);
}

// ---------------------------------------------------------------- selection

/** The selection from the query string (?subject=team:emea&period=quarter&tz=…&kpi=…&tv=1). */
function readQuery() {
  const q = new URLSearchParams(location.search);
  const date = (s) => (/^\d{4}-\d{2}-\d{2}$/.test(s ?? '') ? s : '');
  state.subject = /^(team|rep):./.test(q.get('subject') ?? '') ? q.get('subject') : '';
  state.period = Object.hasOwn(PERIODS, q.get('period') ?? '') ? q.get('period') : 'quarter';
  state.start = date(q.get('start'));
  state.end = date(q.get('end'));
  state.tz = q.has('tz') ? q.get('tz').trim() : BROWSER_TZ;
  state.kpi = q.get('kpi') ?? '';
  state.granularity = Object.hasOwn(GRANULARITIES, q.get('granularity') ?? '') ? q.get('granularity') : '';
  state.tv = q.get('tv') === '1';
}

/** Writes the selection (never the key) to the query string. */
function writeQuery() {
  const parts = [['subject', state.subject], ['period', state.period]];
  if (state.period === 'custom') parts.push(['start', state.start], ['end', state.end]);
  parts.push(['tz', state.tz], ['kpi', state.kpi], ['granularity', state.granularity]);
  if (state.tv) parts.push(['tv', '1']);
  // ':' and '/' are fine in a query and keep the link readable.
  const enc = (v) => encodeURIComponent(v).replace(/%3A/gi, ':').replace(/%2F/gi, '/');
  const qs = parts.filter(([, v]) => v).map(([k, v]) => `${k}=${enc(v)}`).join('&');
  history.replaceState(null, '', `${location.pathname}?${qs}`);
}

function subjectMessage(subject = state.subject) {
  const [kind, ...rest] = subject.split(':');
  const id = rest.join(':'); // ids may contain ':'
  return kind === 'rep' ? { repId: id } : { teamId: id };
}

/** The Period message of the selection, or null when custom dates are incomplete. */
function periodMessage() {
  const tz = state.tz ? { timeZone: state.tz } : {};
  if (state.period !== 'custom') return { ...PERIODS[state.period], ...tz };
  if (!state.start || !state.end) return null;
  return { startDate: state.start, endDate: state.end, ...tz };
}

function granularity() {
  if (state.granularity) return state.granularity;
  if (state.period === 'year') return 'month';
  if (state.period === 'custom' && state.start && state.end && toDate(state.end) - toDate(state.start) > 366 * 86_400_000) return 'month';
  return 'week';
}

const kpiDef = (kpi = state.kpi) => state.kpiDefs.get(kpi) ?? { kpi, name: kpi, unit: 'UNIT_UNSPECIFIED' };

/** The team of the leaderboard: the subject team, or the rep's team. */
function leaderboardTeam() {
  const { teamId, repId } = subjectMessage();
  if (teamId) return teamId;
  return state.reps.find((r) => r.repId === repId)?.teamId || state.repsTeam;
}

// ------------------------------------------------------------------- access

/** A share link (#key=…) stores its key in this tab and leaves the address bar at once. */
function takeKeyFromHash() {
  const match = /(?:^#|&)key=([^&]*)/.exec(location.hash);
  if (!match) return false;
  let key = '';
  try { key = decodeURIComponent(match[1]).trim(); } catch { /* malformed: ignore */ }
  history.replaceState(null, '', location.pathname + location.search);
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  return Boolean(key);
}

function stopAll() {
  for (const ctl of Object.values(controllers)) ctl.abort();
  clearTimeout(trendTimer);
  clearTimeout(leaderboardTimer);
  streamStatus.clear();
}

/** Forgets the key, clears the data off the screen and shows the key form (with `message`). */
function signOut(message = '') {
  stopAll();
  sessionStorage.removeItem(KEY_STORAGE);
  state.key = null;
  state.ready = false;
  setTv(false); // the query keeps tv=1 for after the key is given again
  errors.clear();
  if (message) errors.set('auth', message);
  $('tiles').replaceChildren();
  $('chart').replaceChildren();
  $('leaderboard-body').replaceChildren();
  $('trend-table').tBodies[0].replaceChildren();
  state.lastTiles.clear();
  for (const id of ['dashboard', 'controls', 'sign-out', 'tv-toggle', 'status']) $(id).hidden = true;
  $('access').hidden = false;
  renderErrors();
  renderStatus();
  $('key-input').focus();
}

function showDashboard() {
  $('access').hidden = true;
  for (const id of ['dashboard', 'controls', 'sign-out', 'tv-toggle', 'status']) $(id).hidden = false;
}

// ---------------------------------------------------------------- directory

async function loadDirectory() {
  const teams = await listAll('kpi.v1.DirectoryService/ListTeams', {}, 'teams');
  state.teams = new Map(teams.map((t) => [t.teamId, t]));
  state.children = new Map();
  for (const team of teams) {
    // A team whose parent is out of view (a team-scoped key) is a root here.
    const parent = state.teams.has(team.parentTeamId ?? '') ? team.parentTeamId : '';
    if (!state.children.has(parent)) state.children.set(parent, []);
    state.children.get(parent).push(team);
  }
  const byName = (a, b) => teamName(a).localeCompare(teamName(b));
  for (const list of state.children.values()) list.sort(byName);
}

const teamName = (t) => t?.displayName || t?.teamId || '';
const roots = () => state.children.get('') ?? [];

async function repsOf(teamId) {
  if (!state.repCache.has(teamId)) {
    const reps = await listAll('kpi.v1.DirectoryService/ListReps', { teamId, includeSubTeams: true }, 'reps');
    reps.sort((a, b) => (a.displayName || a.repId).localeCompare(b.displayName || b.repId));
    state.repCache.set(teamId, reps);
  }
  return state.repCache.get(teamId);
}

/** Lists the reps of `teamId`'s tree under the subject select. */
async function loadReps(teamId) {
  state.repsTeam = teamId;
  try {
    const reps = await repsOf(teamId);
    if (state.repsTeam !== teamId) return; // another team was chosen meanwhile
    state.reps = reps;
    clearError('reps');
  } catch (err) {
    handleError('reps', err);
    state.reps = [];
  }
  renderSubjectSelect();
}

/** For a rep in the query string: the root tree it is in, to list its team's reps. */
async function findRepTeam(repId) {
  for (const root of roots()) {
    const rep = (await repsOf(root.teamId)).find((r) => r.repId === repId);
    if (rep) return state.teams.has(rep.teamId) ? rep.teamId : root.teamId;
  }
  return roots()[0]?.teamId ?? '';
}

/** Teams as an indented tree, then the reps of the current team's tree. */
function renderSubjectSelect() {
  const options = [];
  const seen = new Set();
  const walk = (team, depth) => {
    if (seen.has(team.teamId)) return; // a cycle would be a directory bug; never loop
    seen.add(team.teamId);
    const indent = depth ? `${'\u00a0\u00a0\u00a0'.repeat(depth - 1)}\u00a0└\u00a0` : '';
    options.push(el('option', { value: `team:${team.teamId}`, text: indent + teamName(team) }));
    for (const child of state.children.get(team.teamId) ?? []) walk(child, depth + 1);
  };
  roots().forEach((root) => walk(root, 0));
  const repOptions = state.reps.map((r) => el('option', {
    value: `rep:${r.repId}`, text: (r.displayName || r.repId) + (r.active ? '' : ' (inactive)'),
  }));
  if (state.subject.startsWith('rep:') && !state.reps.some((r) => `rep:${r.repId}` === state.subject)) {
    repOptions.unshift(el('option', { value: state.subject, text: state.subject.slice(4) }));
  }
  if (repOptions.length) {
    options.push(el('optgroup', { label: `Reps of ${teamName(state.teams.get(state.repsTeam)) || 'the team'}` }, ...repOptions));
  }
  const select = $('subject');
  select.replaceChildren(...options);
  select.value = state.subject;
}

// -------------------------------------------------------------------- tiles

function renderTileSkeletons() {
  $('tiles').replaceChildren(...state.kpis.map((def) => el('article', {
    class: 'tile', 'data-kpi': def.kpi, 'data-value': '', tabindex: 0,
    'aria-labelledby': `tile-name-${def.kpi} tile-value-${def.kpi} tile-change-${def.kpi}`,
  })));
  state.lastTiles.clear();
  markSelectedTile();
}

/** Renders one scorecard into the tiles; `flash` marks values a watch update changed. */
function renderTiles(scorecard, flash) {
  const entries = new Map((scorecard.entries ?? []).map((e) => [e.current?.kpi, e]));
  for (const entry of entries.values()) if (entry.current?.money?.currencyCode) state.currency = entry.current.money.currencyCode;
  for (const tile of $('tiles').querySelectorAll('.tile')) {
    const def = kpiDef(tile.dataset.kpi);
    const entry = entries.get(def.kpi) ?? { current: { kpi: def.kpi } };
    const raw = hasValue(entry.current) ? String(entry.current.value) : '';
    tile.dataset.value = raw;
    tile.replaceChildren(...tileContent(def, entry).filter(Boolean));
    if (flash && state.lastTiles.has(def.kpi) && state.lastTiles.get(def.kpi) !== raw) {
      tile.classList.remove('flash');
      void tile.offsetWidth; // restart the animation
      tile.classList.add('flash');
    }
    state.lastTiles.set(def.kpi, raw);
  }
  const { period, previousPeriod } = scorecard;
  $('period-label').textContent = period
    ? `${formatDateRange(period.startDate, period.endDate)} · ${period.timeZone || 'service time zone'}`
      + (previousPeriod ? ` · compared with ${formatDateRange(previousPeriod.startDate, previousPeriod.endDate)}` : '')
    : '';
  $('tiles').dataset.renders = String(++state.renders);
}

function tileContent(def, entry) {
  const cur = entry.current ?? {};
  const currency = currencyOf(cur);
  const defined = hasValue(cur);
  const name = el('h3', { class: 'tile-name', id: `tile-name-${def.kpi}`, text: def.name || def.kpi, title: [def.description, def.formula].filter(Boolean).join('\n\n') });
  const value = el('p', {
    id: `tile-value-${def.kpi}`,
    class: `tile-value${defined ? '' : ' undefined'}`, text: defined ? formatUnit(def.unit, cur.value, currency) : '—',
    title: defined ? null : cur.undefinedReason || 'No value',
  });
  const reason = defined ? null : el('p', { class: 'tile-reason small', text: cur.undefinedReason || 'No value for this period' });
  return [name, value, reason, tileChange(def, entry, currency), tileMeta(def, cur), tileProgress(def, entry, currency)];
}

/** "▲ 3.2 pp vs previous period, better": the colour is never the only cue. */
function tileChange(def, entry, currency) {
  const { change } = entry;
  const prev = entry.previous;
  const id = `tile-change-${def.kpi}`;
  const prevText = `Previous period: ${hasValue(prev) ? formatUnit(def.unit, prev.value, currencyOf(prev)) : `no value${prev?.undefinedReason ? ` (${prev.undefinedReason})` : ''}`}`;
  if (change == null) {
    return el('p', { id, class: 'tile-change neutral small', 'data-sentiment': 'neutral', title: prevText, text: 'No comparison with the previous period' });
  }
  const mood = sentiment(change, def.direction);
  const arrow = change > 0 ? '▲' : change < 0 ? '▼' : '=';
  const text = change === 0
    ? '= no change vs previous period'
    : `${arrow} ${formatDelta(def.unit, change, currency)} vs previous period${mood === 'neutral' ? '' : mood === 'good' ? ', better' : ', worse'}`;
  return el('p', { id, class: `tile-change ${mood}`, 'data-sentiment': mood, title: prevText, text });
}

/** Small print: interval, sample, numerator / denominator, missing exchange rates. */
function tileMeta(def, cur) {
  const bits = [];
  if (cur.interval) bits.push(`95% CI ${formatInterval(cur.interval)}`);
  if (def.unit !== 'UNIT_COUNT') bits.push(`n = ${nf({}).format(Number(cur.sampleSize ?? 0))}`);
  if (def.unit === 'UNIT_PERCENT' && cur.denominator) bits.push(`${cur.numerator ?? '0'} / ${cur.denominator}`);
  if (def.unit === 'UNIT_NPS' && cur.denominator) bits.push(`${cur.promoters ?? '0'} promoters, ${cur.detractors ?? '0'} detractors`);
  const missing = cur.missingRates;
  const warn = missing?.deals ? el('p', {
    class: 'tile-warning small',
    text: `⚠ ${missing.deals} won deal(s) left out: no exchange rate for ${(missing.currencyCodes ?? []).join(', ')}`,
  }) : null;
  if (!bits.length && !warn) return null;
  const frag = document.createDocumentFragment();
  if (bits.length) frag.append(el('p', { class: 'tile-meta small', text: bits.join(' · ') }));
  if (warn) frag.append(warn);
  return frag;
}

/** Target attainment: a bar (capped at 100 %), the expected-to-date marker and a badge. */
function tileProgress(def, entry, currency) {
  const p = entry.progress;
  if (!p) return null;
  const target = p.target ?? 0;
  const att = p.attainment;
  const expected = p.expectedToDate != null && target ? p.expectedToDate / target : p.elapsedFraction ?? 0;
  const fill = el('div', { class: 'progress-fill' });
  fill.style.width = `${clamp(att ?? 0, 0, 1) * 100}%`;
  const marker = el('div', { class: 'progress-expected', title: `Expected to date: ${formatPercent(expected)}` });
  marker.style.left = `${clamp(expected, 0, 1) * 100}%`;
  const bar = el('div', {
    class: 'progress', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100,
    'aria-valuenow': Math.round(clamp(att ?? 0, 0, 1) * 100),
    'aria-valuetext': att != null ? `${formatPercent(att)} of target` : 'no value yet',
    'aria-label': `${def.name}: attainment of target`,
  }, fill, marker);
  const status = p.actual == null ? ['none', 'No value yet'] : p.onTrack ? ['ok', 'On track'] : ['behind', 'Behind'];
  const projected = p.projected != null ? ` · projected ${formatUnit(def.unit, p.projected, currency)}` : '';
  const text = el('p', { class: 'progress-text small' },
    el('span', { class: `badge ${status[0]}`, text: status[1] }),
    ` ${att != null ? formatPercent(att) : '—'} of target ${formatUnit(def.unit, target, currency)}${projected}`);
  return el('div', { class: 'tile-progress', 'data-on-track': String(Boolean(p.onTrack)) }, bar, text);
}

function markSelectedTile() {
  for (const tile of $('tiles').querySelectorAll('.tile')) {
    const selected = tile.dataset.kpi === state.kpi;
    tile.classList.toggle('selected', selected);
    if (selected) tile.setAttribute('aria-current', 'true');
    else tile.removeAttribute('aria-current');
  }
}

// -------------------------------------------------------------------- trend

function scheduleTrendRefresh() {
  clearTimeout(trendTimer);
  trendTimer = setTimeout(loadTrend, REFETCH_DEBOUNCE_MS);
}

async function loadTrend() {
  clearTimeout(trendTimer);
  controllers.trend?.abort();
  const period = periodMessage();
  if (!period || !state.kpi || !state.subject) return;
  const ctl = (controllers.trend = new AbortController());
  const gran = granularity();
  const def = kpiDef();
  $('trend').setAttribute('aria-busy', 'true');
  try {
    const res = await call('kpi.v1.KpiService/GetKpiSeries', {
      subject: subjectMessage(), kpi: state.kpi, period, granularity: GRANULARITIES[gran],
    }, ctl.signal);
    if (ctl.signal.aborted) return;
    clearError('trend');
    renderChart(def, gran, res);
  } catch (err) {
    if (!ctl.signal.aborted) handleError('trend', err);
  } finally {
    if (!ctl.signal.aborted) $('trend').removeAttribute('aria-busy');
  }
}

/** A line chart of the series: interval band, line with gaps, points, min/max and date labels. */
function renderChart(def, gran, series) {
  const W = 640, H = 260, M = { top: 14, right: 16, bottom: 30, left: 80 };
  const points = (series.points ?? []).map((p) => ({
    ...p, v: hasValue(p.value) ? Number(p.value.value) : null, iv: hasValue(p.value) ? p.value.interval : null,
  }));
  const currency = points.map((p) => p.value?.money?.currencyCode).find(Boolean) || state.currency;
  const fmt = (n) => formatUnit(def.unit, n, currency);
  const range = formatDateRange(series.period?.startDate, series.period?.endDate);
  const defined = points.filter((p) => p.v != null);
  const summary = `${def.name} by ${gran}, ${range}: ${defined.length} of ${points.length} ${gran}s with a value`
    + (defined.length ? `, latest ${fmt(defined.at(-1).v)}` : '');

  const chart = svg('svg', {
    id: 'trend-chart', class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': summary,
    'data-points': points.length, 'data-kpi': def.kpi,
  }, svg('title', { text: summary }));

  if (!defined.length) {
    chart.append(svg('text', { x: W / 2, y: H / 2, class: 'chart-empty', 'text-anchor': 'middle', text: points.length ? 'No values in this period' : 'No data' }));
  } else {
    // The y domain spans values and intervals; counts and money start at 0.
    const ys = defined.flatMap((p) => (p.iv ? [p.v, p.iv.low ?? 0, p.iv.high ?? 0] : [p.v]));
    let lo = Math.min(...ys), hi = Math.max(...ys);
    if (['UNIT_COUNT', 'UNIT_MONEY'].includes(def.unit)) lo = Math.min(0, lo);
    if (hi === lo) { hi += Math.abs(hi) * 0.1 || 1; lo -= Math.abs(lo) * 0.1 || (lo === 0 ? 0 : 1); }
    const x = (i) => M.left + ((i + 0.5) * (W - M.left - M.right)) / points.length;
    const y = (v) => M.top + (1 - (v - lo) / (hi - lo)) * (H - M.top - M.bottom);

    // Grid and y labels (max, min).
    for (const v of [hi, lo]) {
      chart.append(svg('line', { class: 'grid', x1: M.left, x2: W - M.right, y1: y(v), y2: y(v) }));
      chart.append(svg('text', { class: 'axis', x: M.left - 8, y: y(v) + 4, 'text-anchor': 'end', text: fmt(v) }));
    }
    // The interval band: one polygon per run of consecutive points with an interval.
    for (const run of runs(points, (p) => p.iv)) {
      if (run.length === 1) {
        const [p] = run;
        chart.append(svg('line', { class: 'band-line', x1: x(p.i), x2: x(p.i), y1: y(p.iv.low ?? 0), y2: y(p.iv.high ?? 0) }));
      } else {
        const upper = run.map((p) => `${x(p.i)},${y(p.iv.high ?? 0)}`);
        const lower = run.map((p) => `${x(p.i)},${y(p.iv.low ?? 0)}`).reverse();
        chart.append(svg('polygon', { class: 'band', points: [...upper, ...lower].join(' ') }));
      }
    }
    // The line, broken where a point is undefined.
    const d = runs(points, (p) => p.v != null).map((run) => run.map((p, k) => `${k ? 'L' : 'M'}${x(p.i)},${y(p.v)}`).join('')).join('');
    chart.append(svg('path', { class: 'line', d }));
    // Points, each with a tooltip; undefined ones as hollow marks on the baseline.
    points.forEach((p, i) => {
      const dates = formatDateRange(p.startDate, p.endDate);
      const tip = p.v != null
        ? `${dates}: ${fmt(p.v)}${p.iv ? ` (95% CI ${formatInterval(p.iv)})` : ''}`
        : `${dates}: no value${p.value?.undefinedReason ? ` (${p.value.undefinedReason})` : ''}`;
      chart.append(svg('circle', {
        class: p.v != null ? 'point' : 'point missing', cx: x(i), cy: p.v != null ? y(p.v) : H - M.bottom, r: p.v != null ? 4 : 3,
        'data-start': p.startDate, 'data-value': p.v != null ? String(p.value.value) : '',
      }, svg('title', { text: tip })));
    });
    // First / middle / last date labels.
    const labelAt = [...new Set([0, Math.floor((points.length - 1) / 2), points.length - 1])];
    labelAt.forEach((i, k) => {
      const anchor = labelAt.length === 1 ? 'middle' : k === 0 ? 'start' : k === labelAt.length - 1 ? 'end' : 'middle';
      const px = anchor === 'start' ? Math.max(M.left, x(i) - 20) : anchor === 'end' ? Math.min(W - M.right, x(i) + 20) : x(i);
      chart.append(svg('text', { class: 'axis', x: px, y: H - 8, 'text-anchor': anchor, text: formatDate(points[i].startDate) }));
    });
  }
  $('chart').replaceChildren(chart);
  renderTrendTable(points, fmt);
  const section = $('trend');
  section.dataset.renders = String(Number(section.dataset.renders || 0) + 1);
}

/** Consecutive points (with their index `i`) for which `test` holds. */
function runs(points, test) {
  const out = [];
  let run = [];
  points.forEach((p, i) => {
    if (test(p)) run.push({ ...p, i });
    else if (run.length) { out.push(run); run = []; }
  });
  if (run.length) out.push(run);
  return out;
}

function renderTrendTable(points, fmt) {
  $('trend-table').tBodies[0].replaceChildren(...points.map((p) => el('tr', {},
    el('td', { text: formatDateRange(p.startDate, p.endDate) }),
    el('td', { class: 'num', text: p.v != null ? fmt(p.v) : `— ${p.value?.undefinedReason ?? ''}`.trim() }),
    el('td', { class: 'num', text: p.iv ? formatInterval(p.iv) : '' }))));
}

// -------------------------------------------------------------- leaderboard

/**
 * The leaderboard of the selection, restarted on a new selection or KPI.
 * Browsers speak HTTP/1.1 to a plain-http service and open 6 connections per
 * host, so a tab holds as few streams as it can: for a team subject the
 * leaderboard is fetched, and fetched again whenever the team's scorecard
 * watch reports a change (the team's scorecard moves whenever any member's
 * records do). A rep's scorecard misses changes of the rep's teammates: for a
 * rep subject the leaderboard of the rep's team is watched.
 */
function startLeaderboard() {
  controllers.leaderboard?.abort();
  clearTimeout(leaderboardTimer);
  // Only a watched leaderboard has a stream status.
  if (streamStatus.delete('leaderboard')) renderStatus();
  const request = leaderboardRequest();
  if (!request) return;
  $('leaderboard-caption').textContent = leaderboardCaption(request.teamId);
  $('leaderboard').setAttribute('aria-busy', 'true');
  if (subjectMessage().teamId) loadLeaderboard();
  else watchLeaderboard(request);
}

/** The GetLeaderboardRequest of the selection, or null when it has none. */
function leaderboardRequest() {
  const period = periodMessage();
  const teamId = leaderboardTeam();
  if (!period || !state.kpi || !teamId) return null;
  return { kpi: state.kpi, teamId, period, limit: 50 };
}

const leaderboardCaption = (teamId) => `${kpiDef().name} · ${teamName(state.teams.get(teamId)) || teamId}`;

/** A leaderboard after a scorecard change (team subject): the changes of a second are fetched once. */
function scheduleLeaderboardRefresh() {
  clearTimeout(leaderboardTimer);
  leaderboardTimer = setTimeout(loadLeaderboard, REFETCH_DEBOUNCE_MS);
}

/** Fetches the leaderboard (team subject); a newer fetch or selection aborts it. */
async function loadLeaderboard() {
  clearTimeout(leaderboardTimer);
  controllers.leaderboard?.abort();
  const request = leaderboardRequest();
  if (!request) return;
  const ctl = (controllers.leaderboard = new AbortController());
  const def = kpiDef();
  const caption = leaderboardCaption(request.teamId);
  $('leaderboard').setAttribute('aria-busy', 'true');
  try {
    const board = await call('kpi.v1.KpiService/GetLeaderboard', request, ctl.signal);
    if (ctl.signal.aborted) return;
    showLeaderboard(def, caption, board);
  } catch (err) {
    if (!ctl.signal.aborted) handleError('leaderboard', err);
  } finally {
    if (!ctl.signal.aborted) $('leaderboard').removeAttribute('aria-busy');
  }
}

/** Watches the leaderboard of a rep subject's team (WatchLeaderboard). */
function watchLeaderboard(request) {
  const ctl = (controllers.leaderboard = new AbortController());
  const def = kpiDef();
  const caption = leaderboardCaption(request.teamId);
  watch('/kpi.v1.KpiService/WatchLeaderboard', { ...request, minInterval: '1s' }, (msg) => {
    showLeaderboard(def, caption, msg.leaderboard ?? {});
  }, {
    signal: ctl.signal,
    onStatus: (s, detail) => setStreamStatus('leaderboard', s, detail),
    onError: (err) => handleError('leaderboard', err),
  });
}

/** One answer (a GetLeaderboardResponse), fetched or watched, on the screen. */
function showLeaderboard(def, caption, board) {
  clearError('leaderboard');
  $('leaderboard').removeAttribute('aria-busy');
  $('leaderboard-caption').textContent = `${caption} · ${formatDateRange(board.period?.startDate, board.period?.endDate)}`;
  renderLeaderboard(def, board.entries ?? []);
}

function renderLeaderboard(def, entries) {
  const body = $('leaderboard-body');
  // One scale for every row's interval bar and value tick.
  const xs = entries.flatMap(({ value: v }) => (!hasValue(v) ? [] : v.interval ? [v.value, v.interval.low ?? 0, v.interval.high ?? 0] : [v.value]));
  let lo = Math.min(...xs, ['UNIT_COUNT', 'UNIT_MONEY'].includes(def.unit) ? 0 : Infinity);
  let hi = Math.max(...xs);
  if (!(hi > lo)) { lo = Number.isFinite(lo) ? lo - 1 : 0; hi = lo + 2; }
  const pos = (v) => clamp((v - lo) / (hi - lo), 0, 1) * 100; // percent of the track
  const { repId: subjectRep } = subjectMessage();

  const rows = entries.map((e) => {
    const v = e.value ?? {};
    const defined = hasValue(v);
    const who = el('div', { class: 'who' }, el('span', { class: 'rep-name', text: e.displayName || e.repId }));
    const name = el('td', { class: 'name' }, who);
    if (e.statisticallyTiedWithPrevious) {
      who.append(el('span', { class: 'tie small', title: 'The 95% intervals overlap: the data cannot tell these two apart', text: '≈ tied with the rep above' }));
    }
    if (!e.ranked) {
      const small = /sample/i.test(e.notRankedReason ?? '');
      who.append(el('span', { class: `badge ${small ? 'small-sample' : 'none'}`, text: small ? 'small sample' : 'not ranked' }));
      if (e.notRankedReason) who.append(el('span', { class: 'reason small', text: e.notRankedReason }));
    }
    const ci = el('td', { class: 'col-ci' });
    if (defined) {
      const track = el('div', { class: 'ci', 'aria-hidden': 'true' });
      if (v.interval) {
        const range = el('span', { class: 'ci-range' });
        range.style.left = `${pos(v.interval.low ?? 0)}%`;
        range.style.width = `${pos(v.interval.high ?? 0) - pos(v.interval.low ?? 0)}%`;
        track.append(range);
      }
      const tick = el('span', { class: 'ci-value' });
      tick.style.left = `${pos(Number(v.value))}%`;
      track.append(tick);
      ci.append(track);
      if (v.interval) ci.append(el('span', { class: 'vh', text: `95% CI ${formatInterval(v.interval)}` }));
      ci.title = v.interval ? `95% CI ${formatInterval(v.interval)}` : '';
    }
    return el('tr', {
      'data-rep': e.repId, 'data-rank': e.rank ?? 0, 'data-ranked': String(Boolean(e.ranked)),
      'data-tied': e.statisticallyTiedWithPrevious ? 'true' : null,
      class: `${e.ranked ? '' : 'unranked'}${subjectRep && e.repId === subjectRep ? ' current' : ''}`.trim() || null,
      'aria-current': subjectRep && e.repId === subjectRep ? 'true' : null,
    },
    el('td', { class: 'col-rank', text: e.ranked ? String(e.rank ?? '') : '—', title: e.ranked ? null : e.notRankedReason || 'Not ranked' }),
    name,
    el('td', {
      class: 'num value', 'data-value': defined ? String(v.value) : '',
      text: defined ? formatUnit(def.unit, v.value, currencyOf(v)) : '—', title: defined ? `n = ${v.sampleSize ?? 0}` : v.undefinedReason || null,
    }),
    ci,
    el('td', { class: 'num', text: e.attainment != null ? formatPercent(e.attainment) : '' }));
  });
  if (!rows.length) rows.push(el('tr', {}, el('td', { colspan: 5, class: 'muted', text: 'No reps in this team for the period.' })));
  body.replaceChildren(...rows);
  const section = $('leaderboard');
  section.dataset.renders = String(Number(section.dataset.renders || 0) + 1);
}

// ---------------------------------------------------------------- scorecard

function startScorecard() {
  controllers.scorecard?.abort();
  const period = periodMessage();
  if (!period || !state.subject) return;
  const ctl = (controllers.scorecard = new AbortController());
  const gen = state.selectionGen;
  const teamSubject = Boolean(subjectMessage().teamId);
  watch('/kpi.v1.KpiService/WatchScorecard', { subject: subjectMessage(), period, minInterval: '1s' }, (msg) => {
    const again = state.tilesGen === gen; // not the first answer for this selection
    renderTiles(msg.scorecard ?? {}, again);
    state.tilesGen = gen;
    state.ready = true;
    $('tiles').classList.remove('stale');
    $('tiles').removeAttribute('aria-busy');
    clearError('scorecard');
    updateBodyState();
    // A change, a rollover or a reconnect (which may have missed changes):
    // the trend may have moved too, and so may a team's leaderboard, which
    // no stream of its own watches (startLeaderboard). After the first
    // answer too: a change between the first fetches and the watch's start
    // would otherwise wait for the next change.
    scheduleTrendRefresh();
    if (teamSubject) scheduleLeaderboardRefresh();
  }, {
    signal: ctl.signal,
    onStatus: (s, detail) => setStreamStatus('scorecard', s, detail),
    onError: (err) => handleError('scorecard', err),
  });
}

/** The subject, period or zone changed: everything restarts. */
function applySelection() {
  state.selectionGen++;
  state.ready = false;
  clearError('scorecard', 'trend', 'leaderboard');
  $('tiles').classList.add('stale');
  $('tiles').setAttribute('aria-busy', 'true');
  syncControls();
  writeQuery();
  if (!periodMessage()) {
    stopAll();
    $('period-label').textContent = 'Choose the start and end dates.';
    renderStatus();
    updateBodyState();
    return;
  }
  updateBodyState();
  startScorecard();
  loadTrend();
  startLeaderboard();
}

/** A KPI chosen by a tile, the trend select or (`rotating`) the TV rotation. */
function selectKpi(kpi, rotating = false) {
  if (!state.key || !state.kpiDefs.has(kpi)) return;
  // A KPI picked by hand on the TV stays its full 15 s.
  if (state.tv && !rotating) setTv(true);
  state.kpi = kpi;
  markSelectedTile();
  $('trend-kpi').value = kpi;
  writeQuery();
  loadTrend();
  startLeaderboard();
  if (state.tv) {
    const reduce = matchMedia('(prefers-reduced-motion: reduce)').matches;
    document.querySelector('.tile.selected')?.scrollIntoView({ block: 'nearest', behavior: reduce ? 'auto' : 'smooth' });
  }
}

/** The controls show the state. */
function syncControls() {
  $('subject').value = state.subject;
  $('period').value = state.period;
  $('custom-dates').hidden = state.period !== 'custom';
  $('start-date').value = state.start;
  $('end-date').value = state.end;
  $('tz').value = state.tz;
  $('granularity').value = granularity();
  $('trend-kpi').value = state.kpi;
}

// ----------------------------------------------------------------------- tv

function setTv(on) {
  state.tv = on;
  document.body.classList.toggle('tv', on);
  $('tv-toggle').setAttribute('aria-pressed', String(on));
  clearInterval(rotateTimer);
  clearTimeout(idleTimer);
  document.body.classList.remove('idle');
  if (on) {
    rotateTimer = setInterval(rotateKpi, ROTATE_MS);
    wakeCursor();
  }
}

function rotateKpi() {
  if (!state.kpis.length) return;
  const i = state.kpis.findIndex((d) => d.kpi === state.kpi);
  selectKpi(state.kpis[(i + 1) % state.kpis.length].kpi, true);
}

/** Shows the cursor, and hides it again after a while without moving (TV only). */
function wakeCursor() {
  document.body.classList.remove('idle');
  clearTimeout(idleTimer);
  if (state.tv) idleTimer = setTimeout(() => document.body.classList.add('idle'), IDLE_CURSOR_MS);
}

function toggleTv(on = !state.tv) {
  setTv(on);
  if (state.key) writeQuery();
}

// --------------------------------------------------------------------- boot

/** With a key: the catalog and directory, then the watches. */
async function start() {
  state.key = sessionStorage.getItem(KEY_STORAGE);
  if (!state.key) { signOut(); return; }
  stopAll();
  errors.clear();
  renderErrors();
  showDashboard();
  state.ready = false;
  state.repCache.clear();
  state.reps = [];
  updateBodyState();
  try {
    const [catalog] = await Promise.all([call('kpi.v1.KpiService/ListKpis', {}), loadDirectory()]);
    state.kpis = catalog.kpis ?? [];
    state.kpiDefs = new Map(state.kpis.map((d) => [d.kpi, d]));
    if (!state.kpiDefs.has(state.kpi)) state.kpi = state.kpis[0]?.kpi ?? '';
    $('trend-kpi').replaceChildren(...state.kpis.map((d) => el('option', { value: d.kpi, text: d.name || d.kpi })));
    renderTileSkeletons();

    // The subject: from the query if visible to this key, else the first top-level team.
    const [kind, ...rest] = state.subject.split(':');
    const id = rest.join(':');
    if (kind === 'team' && state.teams.has(id)) {
      state.repsTeam = id;
    } else if (kind === 'rep' && id) {
      state.repsTeam = await findRepTeam(id);
    } else {
      state.subject = roots()[0] ? `team:${roots()[0].teamId}` : '';
      state.repsTeam = roots()[0]?.teamId ?? '';
    }
    if (!state.subject) {
      setError('setup', 'This key sees no team.');
      return;
    }
    clearError('setup');
    renderSubjectSelect();
    // A TV bookmark (?tv=1) that had to ask for the key goes back to TV mode.
    if (new URLSearchParams(location.search).get('tv') === '1') setTv(true);
    applySelection();
    loadReps(state.repsTeam);
  } catch (err) {
    handleError('setup', err);
  }
}

function bindEvents() {
  $('key-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const key = $('key-input').value.trim().replace(/^Bearer\s+/i, '');
    if (!key) return;
    sessionStorage.setItem(KEY_STORAGE, key);
    $('key-input').value = '';
    start();
  });
  $('sign-out').addEventListener('click', () => signOut());

  $('subject').addEventListener('change', (event) => {
    state.subject = event.target.value;
    const { teamId } = subjectMessage();
    if (teamId && teamId !== state.repsTeam) loadReps(teamId);
    applySelection();
  });
  $('period').addEventListener('change', (event) => {
    state.period = event.target.value;
    $('custom-dates').hidden = state.period !== 'custom';
    if (state.period === 'custom' && (!state.start || !state.end)) $('start-date').focus();
    applySelection();
  });
  for (const id of ['start-date', 'end-date']) {
    $(id).addEventListener('change', () => {
      state.start = $('start-date').value;
      state.end = $('end-date').value;
      if (state.start && state.end) applySelection();
    });
  }
  $('tz').addEventListener('change', (event) => {
    state.tz = event.target.value.trim();
    applySelection();
  });
  $('trend-kpi').addEventListener('change', (event) => selectKpi(event.target.value));
  $('granularity').addEventListener('change', (event) => {
    state.granularity = event.target.value;
    writeQuery();
    loadTrend();
  });

  // Tiles: a click, Enter or Space selects the tile's KPI.
  $('tiles').addEventListener('click', (event) => {
    const tile = event.target.closest('.tile');
    if (tile) selectKpi(tile.dataset.kpi);
  });
  $('tiles').addEventListener('keydown', (event) => {
    const tile = event.target.closest('.tile');
    if (!tile || event.target !== tile || (event.key !== 'Enter' && event.key !== ' ')) return;
    event.preventDefault();
    selectKpi(tile.dataset.kpi);
  });

  $('tv-toggle').addEventListener('click', () => toggleTv());
  $('tv-exit').addEventListener('click', () => toggleTv(false));
  document.addEventListener('keydown', (event) => {
    const t = event.target;
    const typing = t instanceof HTMLElement && (t.isContentEditable || ['INPUT', 'SELECT', 'TEXTAREA'].includes(t.tagName));
    if (typing || event.ctrlKey || event.metaKey || event.altKey || !state.key) return;
    if (event.key === 't' || event.key === 'T') toggleTv();
    else if (event.key === 'Escape' && state.tv) toggleTv(false);
  });
  for (const type of ['mousemove', 'pointerdown', 'keydown']) document.addEventListener(type, wakeCursor, { passive: true });

  // A share link pasted into an open tab.
  window.addEventListener('hashchange', () => { if (takeKeyFromHash()) start(); });
  // Back online: reconnect now rather than at the end of the backoff.
  window.addEventListener('online', () => { if (state.key && state.kpis.length) applySelection(); });
  window.addEventListener('offline', renderStatus);
}

function init() {
  for (const zone of new Set([BROWSER_TZ, ...COMMON_ZONES])) $('tz-list').append(el('option', { value: zone }));
  takeKeyFromHash();
  readQuery();
  bindEvents();
  setTv(state.tv);
  syncControls();
  start();
}

init();
