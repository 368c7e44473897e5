// Feed is the list of recent changes, newest first, capped. Frames are
// queued as they arrive and drawn at most every 100 ms, so a fast stream
// costs one DOM update per batch instead of one per change.

import {el, cell, timeOf, sameJSON, onPick} from './util.js';
import {keyOf} from './table.js';

export const FEED_CAP = 200;
const MIN_RENDER_MS = 100;

// changedFields describes an update: "field: old → new" for a few fields.
export function changedFields(f) {
  if (f.operation !== 'update') return '';
  if (!f.previous) {
    return f.unchanged?.length ? `previous row unknown; not sent: ${f.unchanged.join(', ')}` : 'previous row unknown';
  }
  const out = [];
  const keys = new Set([...Object.keys(f.previous), ...Object.keys(f.payload || {})]);
  for (const k of keys) {
    if (k === 'updated_at') continue;
    const a = f.previous[k], b = f.payload?.[k];
    if (!sameJSON(a, b)) out.push(`${k}: ${short(a)} → ${short(b)}`);
  }
  return out.length ? out.join(', ') : 'no visible field changed';
}

function short(v) {
  const s = cell(v);
  return s.length > 40 ? s.slice(0, 39) + '…' : s;
}

export class Feed {
  constructor({list, rate, types, onSelect, schedule}) {
    Object.assign(this, {list, rate, types, onSelect, schedule});
    this.items = [];   // newest first
    this.pending = [];
    this.lastRender = 0;
    this.seen = 0;     // changes received, for the rate
    // The change is looked up as the button goes down: at 1,000 changes/s
    // an entry leaves the capped feed a fifth of a second after it came.
    onPick(this.list, 'button', (b) => this.items.find((x) => x.frame.cursor === b.dataset.cursor)?.frame, (frame) => {
      if (frame) this.onSelect({kind: 'change', frame});
    });
  }

  push(f) {
    this.pending.push(f);
    this.seen++;
    if (this.pending.length > FEED_CAP) this.pending.splice(0, this.pending.length - FEED_CAP);
    this.schedule();
  }

  clear() {
    this.seen = 0;
    this.rate.textContent = '';
    this.items = [];
    this.pending = [];
    this.list.replaceChildren();
  }

  render(now) {
    if (!this.pending.length) return;
    if (now - this.lastRender < MIN_RENDER_MS) {
      setTimeout(() => this.schedule(), MIN_RENDER_MS);
      return;
    }
    this.lastRender = now;
    const fresh = this.pending.reverse().map((f) => ({frame: f}));
    this.pending = [];
    this.items = fresh.concat(this.items).slice(0, FEED_CAP);
    const frag = document.createDocumentFragment();
    for (const {frame: f} of this.items) {
      const info = this.types.get(f['entity-type']);
      const id = keyOf(info, f.payload);
      const fields = changedFields(f);
      frag.append(el('li', {dataset: {cursor: f.cursor, op: f.operation, type: f['entity-type'], id}},
        el('button', {type: 'button', dataset: {cursor: f.cursor},
          'aria-label': `${f.operation} ${f['entity-type']} ${id}${fields ? ', ' + fields : ''}`},
          el('span', {class: 'time', text: timeOf(f['committed-at'])}),
          el('span', {class: `op op-${f.operation}`, text: f.operation}),
          el('span', {class: 'type', text: f['entity-type']}),
          el('span', {class: 'id mono', text: id, title: id}),
          fields ? el('span', {class: 'fields', text: fields, title: fields}) : null)));
    }
    this.list.replaceChildren(frag);
    this.rate.textContent = `${this.seen} received, last ${this.items.length} shown`;
  }
}
