// RowTable is the live table of one entity type: rows from a snapshot, then
// changes applied in place. Only the rows in view are in the DOM
// (virtualized), and the DOM is touched at most once per animation frame.

import {el, cell, sameJSON, onPick} from './util.js';

const ROW_H = 28;          // px, as --row-h in app.css
const COL_W = 10;          // rem per column
const FLASH_MS = 1500;     // how long changed cells stay highlighted
const GONE_MS = 3000;      // how long a deleted row stays, greyed
const OVERSCAN = 6;

// keyOf returns a row's key as a string: the key column's value, or the
// JSON of the key columns' values for a composite key.
export function keyOf(info, payload) {
  if (!payload) return '';
  const cols = info?.key?.length ? info.key : ['id'];
  if (cols.length === 1) return cell(payload[cols[0]]);
  return JSON.stringify(cols.map((c) => payload[c] ?? null));
}

function compareKeys(a, b) {
  const na = Number(a), nb = Number(b);
  if (a !== '' && b !== '' && Number.isFinite(na) && Number.isFinite(nb) && na !== nb) return na - nb;
  return a < b ? -1 : a > b ? 1 : 0;
}

export class RowTable {
  constructor({viewport, head, spacer, table, count, empty, onSelect, schedule}) {
    Object.assign(this, {viewport, head, spacer, table, count, empty, onSelect, schedule});
    this.info = null;
    this.rows = new Map();  // key -> row
    this.keys = [];         // sorted keys
    this.columns = [];
    this.selected = null;
    this.dirty = true;
    this.viewport.addEventListener('scroll', () => this.markDirty(), {passive: true});
    onPick(this.spacer, '.vrow', (r) => r.dataset.key, (key) => this.select(key, false));
    this.spacer.addEventListener('keydown', (e) => this.onKey(e));
  }

  setType(info) {
    this.info = info;
    this.columns = this.orderColumns(info?.columns || []);
    this.reset();
  }

  orderColumns(cols) {
    const key = this.info?.key || ['id'];
    return [...key.filter((k) => cols.includes(k) || cols.length === 0), ...cols.filter((c) => !key.includes(c))];
  }

  reset() {
    this.rows.clear();
    this.keys = [];
    this.markDirty();
  }

  markDirty() {
    this.dirty = true;
    this.schedule();
  }

  // learnColumns adds payload columns a type without declared columns has.
  learnColumns(payload) {
    if (this.info?.columns?.length) return;
    let added = false;
    for (const k of Object.keys(payload)) {
      if (!this.columns.includes(k)) { this.columns.push(k); added = true; }
    }
    if (added) this.columns = this.orderColumns(this.columns);
  }

  upsert(payload, previous, op) {
    const key = keyOf(this.info, payload);
    const now = performance.now();
    let row = this.rows.get(key);
    this.learnColumns(payload);
    if (!row) {
      row = {key, payload, previous: previous ?? null, changed: new Map(), created: op === 'create' ? now : 0, deletedAt: 0, op};
      this.rows.set(key, row);
      this.insertKey(key);
    } else {
      if (op !== 'snapshot') {
        const before = row.deletedAt ? {} : row.payload;
        for (const c of new Set([...Object.keys(before), ...Object.keys(payload)])) {
          if (!sameJSON(before[c], payload[c])) row.changed.set(c, now);
        }
      }
      row.previous = previous ?? (op === 'update' ? row.payload : row.previous);
      row.payload = payload;
      row.deletedAt = 0;
      row.op = op;
    }
    this.markDirty();
  }

  insertKey(key) {
    let lo = 0, hi = this.keys.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (compareKeys(this.keys[mid], key) < 0) lo = mid + 1; else hi = mid;
    }
    this.keys.splice(lo, 0, key);
  }

  removeKey(key) {
    const i = this.keys.indexOf(key);
    if (i >= 0) this.keys.splice(i, 1);
    this.rows.delete(key);
  }

  // apply takes a snapshot row or a change frame of this table's type.
  apply(f) {
    switch (f.operation) {
      case 'snapshot':
      case 'create':
      case 'update':
        this.upsert(f.payload || {}, f.previous, f.operation);
        break;
      case 'delete': {
        const row = this.rows.get(keyOf(this.info, f.payload));
        if (row) {
          row.deletedAt = performance.now();
          row.op = 'delete';
          this.markDirty();
        }
        break;
      }
      case 'truncate':
        for (const row of this.rows.values()) row.deletedAt = performance.now();
        this.markDirty();
        break;
    }
  }

  liveCount() {
    let n = 0;
    for (const r of this.rows.values()) if (!r.deletedAt) n++;
    return n;
  }

  select(key, focus) {
    this.selected = key;
    const row = this.rows.get(key);
    if (row) this.onSelect({kind: 'row', type: this.info?.name, key, payload: row.payload, previous: row.previous, deleted: !!row.deletedAt});
    this.markDirty();
    if (focus) this.focusKey = key;
  }

  onKey(e) {
    const r = e.target.closest('.vrow');
    if (!r) return;
    const i = this.keys.indexOf(r.dataset.key);
    let j = i;
    if (e.key === 'ArrowDown') j = Math.min(this.keys.length - 1, i + 1);
    else if (e.key === 'ArrowUp') j = Math.max(0, i - 1);
    else if (e.key === 'Home') j = 0;
    else if (e.key === 'End') j = this.keys.length - 1;
    else if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); this.select(r.dataset.key, true); return; }
    else return;
    e.preventDefault();
    this.focusKey = this.keys[j];
    const top = j * ROW_H, vh = this.viewport.clientHeight - ROW_H;
    if (top < this.viewport.scrollTop) this.viewport.scrollTop = top;
    else if (top + ROW_H > this.viewport.scrollTop + vh) this.viewport.scrollTop = top + ROW_H - vh;
    this.markDirty();
  }

  render(now) {
    // Deleted rows go once greyed long enough; flashes end.
    let pending = false;
    for (const row of [...this.rows.values()]) {
      if (row.deletedAt) {
        if (now - row.deletedAt > GONE_MS) { this.removeKey(row.key); this.dirty = true; } else pending = true;
      }
      for (const [c, t] of row.changed) {
        if (now - t > FLASH_MS) { row.changed.delete(c); this.dirty = true; } else pending = true;
      }
      if (row.created && now - row.created > FLASH_MS) { row.created = 0; this.dirty = true; } else if (row.created) pending = true;
    }
    if (pending) setTimeout(() => this.markDirty(), 250);
    if (!this.dirty) return;
    this.dirty = false;

    const cols = this.columns;
    const template = `repeat(${cols.length || 1}, ${COL_W}rem)`;
    const width = `${(cols.length || 1) * COL_W}rem`;
    if (this.head.dataset.cols !== cols.join(',')) {
      this.head.replaceChildren(...cols.map((c) => el('div', {role: 'columnheader', title: c, text: c})));
      this.head.dataset.cols = cols.join(',');
      this.head.style.gridTemplateColumns = template;
      this.head.style.width = width;
      this.spacer.style.width = width;
    }
    const n = this.keys.length;
    this.spacer.style.height = `${n * ROW_H}px`;
    this.table.setAttribute('aria-rowcount', String(n + 1));
    this.count.textContent = this.info ? `${this.info.name}: ${this.liveCount()}` : '';
    this.empty.hidden = n > 0;

    const hadFocus = this.spacer.contains(document.activeElement);
    const focusKey = this.focusKey ?? (hadFocus ? document.activeElement.closest('.vrow')?.dataset.key : undefined);
    const top = this.viewport.scrollTop;
    const vh = this.viewport.clientHeight || 420;
    const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
    const last = Math.min(n, Math.ceil((top + vh) / ROW_H) + OVERSCAN);
    const frag = document.createDocumentFragment();
    let focusEl = null;
    for (let i = first; i < last; i++) {
      const row = this.rows.get(this.keys[i]);
      const cls = ['vrow'];
      if (row.deletedAt) cls.push('deleted');
      if (row.created) cls.push('created');
      if (row.key === this.selected) cls.push('selected');
      const r = el('div', {class: cls.join(' '), role: 'row', tabindex: '0', 'aria-rowindex': String(i + 2),
        'aria-selected': row.key === this.selected ? 'true' : 'false', dataset: {key: row.key, op: row.op}});
      r.style.top = `${i * ROW_H}px`;
      r.style.gridTemplateColumns = template;
      for (const c of cols) {
        const v = cell(row.payload[c]);
        const d = el('div', {role: 'gridcell', title: v, text: v, dataset: {col: c}});
        if (row.changed.has(c)) d.className = 'changed';
        r.append(d);
      }
      if (row.key === focusKey) focusEl = r;
      frag.append(r);
    }
    this.spacer.replaceChildren(frag);
    if (focusEl && (hadFocus || this.focusKey !== undefined)) focusEl.focus({preventScroll: true});
    this.focusKey = undefined;
  }
}
