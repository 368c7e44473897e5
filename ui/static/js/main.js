// The dashboard: sign-in, then two WebSockets to the event stream.
//
//  - The stream socket drives the feed, the chart, the system events panel
//    and the status bar. It sends the filter the editor shows and resumes
//    with ?since=<cursor> after a reload, a pause or a lost connection, so
//    nothing committed in between is missed. The cursor is the only thing
//    the page keeps in localStorage.
//  - The table socket drives the live table: on each connect it asks for a
//    snapshot of the chosen entity type ("snapshot": true), then applies
//    the changes that follow, so the table is exact without replaying
//    history. A snapshot folds the changes it already contains into its
//    rows, which is why the feed has its own socket.
//
// Rendering is batched: frames only update state and schedule one
// requestAnimationFrame, in which each component redraws if it changed.

import {$, el, message, bytes, cursorGt, timeOf, pretty} from './util.js';
import * as api from './api.js';
import {Conn} from './conn.js';
import {RowTable, keyOf} from './table.js';
import {Feed} from './feed.js';
import {EventsPanel} from './events.js';
import {RateChart} from './chart.js';
import {FilterEditor, parseMatch} from './filters.js';

const CURSOR_KEY = 'changecast.cursor';   // localStorage: the stream's cursor, nothing else
const VIEW_KEY = 'changecast.view';       // sessionStorage: table type, filter, pause (no secret)

const S = {
  session: null,
  types: new Map(),
  cursor: localStorage.getItem(CURSOR_KEY) || '',
  savedCursor: '',
  mode: '—',
  head: null,
  position: null,
  lag: null,
  slot: '',
  tableState: '—',
  tableType: '',
  paused: false,
  sessionEnded: null,
  resync: false,
  filterReq: '',
  tableReq: '',
  tableNoSnapshot: false,
  streamInfo: {},
};
S.savedCursor = S.cursor;

// ---- rendering ----

let framePending = false;
function schedule() {
  if (!framePending) {
    framePending = true;
    requestAnimationFrame(drawFrame);
  }
}

function drawFrame(now) {
  framePending = false;
  table.render(now);
  feed.render(now);
  events.render();
  drawStatus();
  persistCursor();
}

function persistCursor() {
  if (S.cursor && S.cursor !== S.savedCursor) {
    localStorage.setItem(CURSOR_KEY, S.cursor);
    S.savedCursor = S.cursor;
  }
}

function noteCursor(c) {
  if (typeof c === 'string' && /^\d+$/.test(c) && cursorGt(c, S.cursor)) S.cursor = c;
}

// ---- components ----

const table = new RowTable({
  viewport: $('table-viewport'), head: $('table-head'), spacer: $('table-spacer'), table: $('table'),
  count: $('table-count'), empty: $('table-empty'), onSelect: showDetails, schedule,
});
const feed = new Feed({list: $('feed'), rate: $('feed-rate'), types: S.types, onSelect: showDetails, schedule});
const events = new EventsPanel({list: $('events'), unread: $('events-unread'), msg: $('events-message'), schedule});
let chart = null;
const filters = new FilterEditor({
  rows: $('filter-rows'), everything: $('f-everything'), grid: $('filter-grid'),
  preview: $('filter-preview'), error: $('filter-error'), decorate: withEvents,
});

function showDetails(sel) {
  if (sel.kind === 'change') {
    const f = sel.frame;
    const id = keyOf(S.types.get(f['entity-type']), f.payload);
    $('details-what').textContent = `${f.operation} of ${f['entity-type']} ${id} — cursor ${f.cursor}, committed ${timeOf(f['committed-at'])}` +
      (f.unchanged?.length ? ` — not sent (unchanged): ${f.unchanged.join(', ')}` : '');
    $('details-payload').textContent = pretty(f.payload);
    $('details-previous').textContent = pretty(f.previous);
  } else {
    $('details-what').textContent = `row of ${sel.type} ${sel.key}${sel.deleted ? ' (deleted)' : ''}`;
    $('details-payload').textContent = pretty(sel.payload);
    $('details-previous').textContent = sel.previous ? pretty(sel.previous) : '— (not updated since the page loaded it)';
  }
}

// ---- status bar ----

const ST_TEXT = {idle: 'idle', connecting: 'connecting…', open: 'connected', waiting: 'disconnected', paused: 'paused', closed: 'closed'};

function drawStatus() {
  const st = stream.state;
  const c = $('st-conn');
  c.textContent = ST_TEXT[st] || st;
  c.dataset.state = st;
  let retry = '';
  if (st === 'waiting' && S.streamInfo.retryAt) {
    const s = Math.max(0, Math.ceil((S.streamInfo.retryAt - Date.now()) / 1000));
    const why = S.streamInfo.code && S.streamInfo.code !== 1006 ? ` (${S.streamInfo.code}${S.streamInfo.reason ? ' ' + S.streamInfo.reason : ''})` : '';
    retry = `${why} — reconnecting in ${s} s`;
  }
  $('st-retry').textContent = retry;
  $('st-mode').textContent = st === 'open' ? S.mode : '—';
  // 'live' is followed by the row count as it is now, not as it was when
  // the snapshot completed.
  $('st-table').textContent = S.tableState === 'live' ? `live, ${table.liveCount()} rows` : S.tableState;
  $('st-cursor').textContent = S.cursor || '—';
  $('st-head').textContent = S.head ?? '—';
  $('st-lag').textContent = S.lag === null ? '—' : bytes(S.lag);
  $('st-slot').textContent = S.slot || '—';
}
setInterval(() => { if (stream.state === 'waiting') drawStatus(); }, 500);

function notice(text) {
  const n = $('notice');
  n.textContent = text || '';
  n.hidden = !text;
}

// ---- filters ----

// withEvents adds the system events clause the events panel needs.
function withEvents(f) {
  if (f['send-everything'] || !S.session?.events) return f;
  return {...f, filters: [...f.filters, {'entity-type': 'event'}]};
}

function streamFilter() {
  return withEvents(FilterEditor.protocol(filters.state));
}

function tableFilter() {
  const clause = {'entity-type': S.tableType};
  const st = filters.state;
  if (!st.everything) {
    const c = st.clauses.find((x) => x.type === S.tableType);
    const m = c && parseMatch(c.match || '');
    if (m) clause.match = m;
  }
  return {'send-everything': false, filters: [clause]};
}

function saveView() {
  sessionStorage.setItem(VIEW_KEY, JSON.stringify({tableType: S.tableType, filter: filters.state, paused: S.paused}));
}

function loadView() {
  try { return JSON.parse(sessionStorage.getItem(VIEW_KEY) || 'null'); } catch { return null; }
}

// ---- the stream socket ----

const stream = new Conn({
  name: 'stream',
  query: () => (S.cursor ? new URLSearchParams({since: S.cursor}) : null),
  onOpen: (conn) => {
    S.mode = S.cursor ? 'catching up' : 'live';
    S.filterReq = conn.request('filter', streamFilter());
    if (S.session.events) {
      conn.request('subscribe', ['system-state']);
      events.load();
    }
    notice('');
    schedule();
  },
  onFrame: onStreamFrame,
  onState: (st, info) => { S.streamInfo = info; schedule(); },
  onClose: (code, reason, wasOpen) => afterClose(code, wasOpen, () => {
    if (S.resync) {
      S.resync = false;
      return 'now';
    }
    return 'retry';
  }),
});

function onStreamFrame(f) {
  if (f['entity-type']) {
    noteCursor(f.cursor);
    if (f['entity-type'] === 'event') {
      events.apply(f);
    } else {
      feed.push(f);
      chart?.add(f['entity-type'], f['committed-at']);
    }
    schedule();
    return;
  }
  if (f.namespace === 'error') {
    const msg = f.args?.message || 'error';
    if (f.id && f.id === S.filterReq) message($('filter-error'), `The server refused the filter: ${msg}`);
    else notice(`The server answered: ${msg}`);
    return;
  }
  if (f.namespace !== 'events') return;
  const a = f.args || {};
  switch (f.name) {
    case 'response':
      if (f.id === S.filterReq) message($('filter-error'), '');
      if (f.id?.startsWith('stream-') && a.cursor !== undefined) {
        S.position = a.cursor;
        if (S.mode === 'catching up' && S.head !== null && !cursorGt(String(S.head), String(a.cursor))) S.mode = 'caught up';
      }
      break;
    case 'system_state':
      S.head = a.journal_head ?? S.head;
      S.lag = typeof a.lag_bytes === 'number' ? a.lag_bytes : S.lag;
      S.slot = a.slot ? `${a.slot} (${a.slot_health || '?'})` : S.slot;
      // Where is this connection now? The answer comes after every frame
      // already queued, so compared with this head it tells catching up
      // from caught up.
      stream.request('ping');
      break;
    case 'control':
      onControl(a, 'stream');
      break;
  }
  schedule();
}

function onControl(a, which) {
  switch (a.type) {
    case 'lagging':
      if (which === 'stream') { noteCursor(a.cursor); S.mode = 'lagging: catching up from the journal'; } else S.tableState = 'lagging';
      break;
    case 'caught-up':
      if (which === 'stream') { noteCursor(a.cursor); S.mode = 'caught up'; } else S.tableState = 'live';
      break;
    case 'snapshot-complete':
      if (which === 'table') S.tableState = 'live';
      break;
    case 'resync-required':
      if (which === 'stream') {
        S.resync = true;
        S.cursor = '';
        localStorage.removeItem(CURSOR_KEY);
        S.savedCursor = '';
        notice(`${a.message} — continuing from now: changes from before this point are not shown.`);
      }
      break;
    case 'token-expired':
      S.sessionEnded = a.message || 'token expired';
      break;
    case 'shutdown':
      notice('changecast is shutting down; the page reconnects when it is back and shows what it missed.');
      break;
  }
  schedule();
}

// afterClose decides what a closed socket does next: a session that ended
// stops everything with a message; a connection refused before it opened
// may be a session that expired, which GET /api/v1/auth/session tells.
async function afterClose(code, wasOpen, otherwise) {
  if (S.sessionEnded) {
    endSession(`Your session ended: ${S.sessionEnded}. Sign in again.`, false);
    return 'stop';
  }
  if (!wasOpen || code === 1008) {
    try {
      await api.session();
    } catch (e) {
      if (e.status === 401) {
        endSession(`Your session has expired or was ended (${e.message}). Sign in again.`, false);
        return 'stop';
      }
    }
  }
  return otherwise();
}

// ---- the table socket ----

const tableConn = new Conn({
  name: 'table',
  query: () => null,
  onOpen: (conn) => {
    const f = tableFilter();
    if (!S.tableNoSnapshot) f.snapshot = true;
    S.tableReq = conn.request('filter', f);
    S.tableState = S.tableNoSnapshot ? 'live (no snapshot)' : 'requesting snapshot…';
    schedule();
  },
  onFrame: onTableFrame,
  onState: (st) => {
    if (st === 'waiting') S.tableState = 'disconnected';
    if (st === 'paused') S.tableState = 'paused';
    schedule();
  },
  onClose: (code, reason, wasOpen) => afterClose(code, wasOpen, () => (S.tableResync ? ((S.tableResync = false), 'now') : 'retry')),
});

function onTableFrame(f) {
  if (f['entity-type']) {
    if (f['entity-type'] === S.tableType) table.apply(f);
    return;
  }
  const a = f.args || {};
  if (f.namespace === 'error') {
    if (f.id === S.tableReq && !S.tableNoSnapshot && /snapshot/i.test(a.message || '')) {
      // A server without snapshots: show live changes only.
      S.tableNoSnapshot = true;
      table.reset();
      S.tableReq = tableConn.request('filter', tableFilter());
      S.tableState = 'live (this server offers no snapshot: rows appear as they change)';
    } else {
      S.tableState = `error: ${a.message}`;
    }
    schedule();
    return;
  }
  if (f.namespace !== 'events') return;
  if (f.name === 'response' && f.id === S.tableReq) {
    table.reset();
    S.tableState = S.tableNoSnapshot ? 'live (no snapshot)' : 'loading snapshot…';
  } else if (f.name === 'control') {
    if (a.type === 'resync-required') S.tableResync = true;
    onControl(a, 'table');
  }
  schedule();
}

// ---- app lifecycle ----

function start() {
  S.paused = false;
  $('pause').setAttribute('aria-pressed', 'false');
  $('pause').textContent = 'Pause';
  stream.start();
  tableConn.start();
}

function pause() {
  S.paused = true;
  $('pause').setAttribute('aria-pressed', 'true');
  $('pause').textContent = 'Resume';
  stream.stop('paused');
  tableConn.stop('paused');
  S.tableState = 'paused';
  schedule();
}

function restartTable() {
  tableConn.stop('idle');
  table.setType(S.types.get(S.tableType));
  if (!S.paused && S.session) tableConn.start();
}

function startApp(sess) {
  S.session = sess;
  S.sessionEnded = null;
  S.types.clear();
  for (const t of sess.entity_types) S.types.set(t.name, t);
  $('who-name').textContent = sess.name || sess.subject;
  $('who-role').textContent = sess.role;
  $('who').hidden = false;
  $('signin').hidden = true;
  $('app').hidden = false;
  $('events-pane').hidden = !sess.events;
  events.setUser(sess.subject);
  feed.clear();
  chart ||= new RateChart($('chart'), (m) => { $('chart-pane').append(el('p', {class: 'message', text: m})); });
  chart?.clear?.();

  const sel = $('table-type');
  sel.replaceChildren(...sess.entity_types.map((t) => el('option', {value: t.name, text: t.name})));
  filters.setTypes(sess.entity_types);
  const view = loadView();
  if (view?.filter) filters.state = view.filter;
  const names = sess.entity_types.map((t) => t.name);
  S.tableType = names.includes(view?.tableType) ? view.tableType : names.includes('instance') ? 'instance' : names[0] || '';
  sel.value = S.tableType;
  table.setType(S.types.get(S.tableType));
  if (!names.length) S.tableState = 'no entity type visible to this user';
  if (view?.paused) {
    pause();
  } else {
    start();
  }
  schedule();
}

// endSession stops the sockets and shows the sign-in form with msg.
// signOut also forgets the cursor (a signed-out page resumes nothing).
function endSession(msg, signOut) {
  stream.stop('closed');
  tableConn.stop('closed');
  S.session = null;
  S.sessionEnded = null;
  if (signOut) {
    localStorage.removeItem(CURSOR_KEY);
    sessionStorage.removeItem(VIEW_KEY);
    S.cursor = '';
    S.savedCursor = '';
  }
  $('app').hidden = true;
  $('who').hidden = true;
  $('signin').hidden = false;
  notice('');
  message($('signin-message'), msg, !signOut);
  $('login-username').focus();
}

function signinError(e) {
  switch (e.status) {
    case 401: return 'Wrong username or password.';
    case 429: return `Too many failed sign-ins; try again in ${e.retryAfter || 'a few'} s.`;
    case 403: return `Refused: ${e.message}.`;
    case 0: return 'Cannot reach changecast. Is it running?';
    default: return `Sign-in failed: ${e.message}`;
  }
}

$('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const u = $('login-username').value, p = $('login-password');
  $('login-submit').disabled = true;
  try {
    const sess = await api.login(u, p.value);
    p.value = '';
    message($('signin-message'), '');
    startApp(sess);
  } catch (e) {
    p.value = '';
    message($('signin-message'), signinError(e));
    p.focus();
  } finally {
    $('login-submit').disabled = false;
  }
});

$('token-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const input = $('token-input');
  const tok = input.value.trim();
  input.value = '';
  try {
    const sess = await api.exchangeToken(tok);
    message($('signin-message'), '');
    startApp(sess);
  } catch (e) {
    message($('signin-message'), e.status === 401 ? `That token was refused: ${e.message}.` : signinError(e));
  }
});

$('signout').addEventListener('click', async () => {
  try { await api.logout(); } catch { /* the cookie is gone or the server is; either way */ }
  endSession('Signed out.', true);
});

$('pause').addEventListener('click', () => {
  if (S.paused) start(); else pause();
  saveView();
});

$('table-type').addEventListener('change', (e) => {
  S.tableType = e.target.value;
  saveView();
  restartTable();
});

$('f-apply').addEventListener('click', () => {
  if (!filters.sync()) return;
  saveView();
  if (stream.state === 'open') S.filterReq = stream.request('filter', streamFilter());
  restartTable();
});

window.addEventListener('pagehide', persistCursor);

// On load: a one-time sign-in link (#signin=<code>, printed by serve or
// demo) is redeemed and removed from the address bar; otherwise the login
// cookie, if any, says who is signed in.
async function boot() {
  const m = /^#signin=([A-Za-z0-9_-]+)$/.exec(location.hash);
  if (m) {
    history.replaceState(null, '', location.pathname + location.search);
    try {
      startApp(await api.redeemLink(m[1]));
      return;
    } catch (e) {
      // Perhaps already signed in with this browser: try the cookie.
      try {
        startApp(await api.session());
        return;
      } catch { /* show the link's problem */ }
      endSession(e.status === 401 || e.status === 403 ? e.message : signinError(e), false);
      return;
    }
  }
  try {
    startApp(await api.session());
  } catch (e) {
    endSession(e.status === 401 ? signedOutReason(e) : signinError(e), false);
  }
}

// signedOutReason is what the sign-in form says when the page loads without
// a valid session (a 401 from GET /api/v1/auth/session): nothing on a first
// visit; that the session expired or was ended when the browser sent a
// cookie the server refused (an expired or revoked token, one signed with
// another key), or sent none but the page kept a cursor, which only a
// session that was not signed out leaves (sign-out forgets it; the browser
// drops the cookie when its token expires).
function signedOutReason(e) {
  if (!/^missing token/.test(e.message)) return `Your session has expired or was ended (${e.message}). Sign in again.`;
  return S.cursor ? 'Your session has expired. Sign in again.' : '';
}

boot();
