// Conn is one WebSocket to the event stream that reconnects by itself with
// capped, jittered backoff and reports its state (for the status bar).
// The login cookie authenticates it: the browser sends it with the
// upgrade, as it is scoped to /api/ and the socket is same-origin.
//
// States: 'connecting', 'open', 'waiting' (retryAt set), 'paused',
// 'closed' (stopped for good, e.g. the session ended).

const EVENTS_PATH = '/api/v1/ws/events';

// exact keeps a number whose JSON text a float64 would change (12.50,
// 9007199254740993) as that text (JSON.rawJSON), so the page shows and
// compares what the server sent. Browsers without rawJSON get floats.
const exact = typeof JSON.rawJSON === 'function'
  ? (k, v, ctx) => (typeof v === 'number' && ctx?.source !== undefined && String(v) !== ctx.source ? JSON.rawJSON(ctx.source) : v)
  : undefined;

export class Conn {
  // opts: name, query() -> URLSearchParams|null, onOpen(conn),
  // onFrame(obj), onState(state, info), onClose(code, reason, wasOpen) ->
  // 'retry' | 'now' | 'stop'.
  constructor(opts) {
    this.opts = opts;
    this.ws = null;
    this.state = 'idle';
    this.attempt = 0;
    this.timer = null;
    this.gen = 0;
    this.nextID = 1;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  // stop closes the socket and schedules nothing; state says why.
  stop(state = 'closed', info = {}) {
    this.stopped = true;
    clearTimeout(this.timer);
    this.gen++;
    if (this.ws) {
      try { this.ws.close(1000, 'client stopped'); } catch { /* already closed */ }
      this.ws = null;
    }
    this.setState(state, info);
  }

  setState(state, info = {}) {
    this.state = state;
    this.opts.onState?.(state, info);
  }

  connect() {
    clearTimeout(this.timer);
    const gen = ++this.gen;
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const q = this.opts.query?.();
    const url = `${proto}//${location.host}${EVENTS_PATH}${q && [...q].length ? '?' + q : ''}`;
    this.setState('connecting');
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      this.retry(0, String(e), false);
      return;
    }
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      if (gen !== this.gen) return;
      opened = true;
      this.attempt = 0;
      this.setState('open');
      this.opts.onOpen?.(this);
    };
    ws.onmessage = (ev) => {
      if (gen !== this.gen) return;
      let obj;
      try { obj = JSON.parse(ev.data, exact); } catch { return; }
      this.opts.onFrame(obj);
    };
    ws.onclose = (ev) => {
      if (gen !== this.gen) return;
      this.ws = null;
      this.retry(ev.code, ev.reason, opened);
    };
  }

  async retry(code, reason, wasOpen) {
    if (this.stopped) return;
    const gen = this.gen;
    const what = (await this.opts.onClose?.(code, reason, wasOpen)) || 'retry';
    if (this.stopped || gen !== this.gen) return;
    if (what === 'stop') {
      this.stop('closed', {code, reason});
      return;
    }
    if (what === 'now') {
      this.attempt = 0;
      this.connect();
      return;
    }
    // 1 s, 2 s, 4 s ... up to 30 s, each with up to 30 % jitter.
    const base = Math.min(30000, 1000 * 2 ** Math.min(this.attempt, 5));
    const delay = Math.round(base * (0.7 + Math.random() * 0.3));
    this.attempt++;
    const retryAt = Date.now() + delay;
    this.setState('waiting', {retryAt, code, reason});
    this.timer = setTimeout(() => this.connect(), delay);
  }

  send(obj) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(obj));
      return true;
    }
    return false;
  }

  // request sends an envelope request and returns its id.
  request(name, args) {
    const id = `${this.opts.name}-${this.nextID++}`;
    const req = {namespace: 'events', name, id};
    if (args !== undefined) req.args = args;
    this.send(req);
    return id;
  }
}
