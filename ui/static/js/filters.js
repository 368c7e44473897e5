// The filter editor. Its state maps one to one onto the protocol's GARM
// filter (docs/protocol.md, "Choosing what to receive"): "everything" is
// {"send-everything": true}; otherwise each checked row is one filter
// object with its entity type, the operations ticked and its match.

import {el} from './util.js';

export const OPS = ['create', 'update', 'delete', 'truncate'];

// parseMatch reads "field=value, field2=a|b" into a match object. Each
// value is JSON when it parses as JSON (5, true, null, "quoted"), else a
// string; a|b is any of several values.
export function parseMatch(text) {
  const out = {};
  const s = text.trim();
  if (!s) return null;
  for (const part of splitTop(s, ',')) {
    const p = part.trim();
    if (!p) continue;
    const eq = p.indexOf('=');
    if (eq <= 0) throw new Error(`"${p}": write field=value`);
    const field = p.slice(0, eq).trim();
    const vals = splitTop(p.slice(eq + 1), '|').map((v) => jsonish(v.trim()));
    if (field in out) throw new Error(`field "${field}" given twice; use a|b for several values`);
    out[field] = vals.length === 1 ? vals[0] : vals;
  }
  return Object.keys(out).length ? out : null;
}

function jsonish(v) {
  if (v === '') return '';
  try {
    const x = JSON.parse(v);
    if (x === null || ['string', 'number', 'boolean'].includes(typeof x)) return x;
  } catch { /* a bare string */ }
  return v;
}

// splitTop splits on sep outside double quotes.
function splitTop(s, sep) {
  const out = [];
  let cur = '', q = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === '"' && s[i - 1] !== '\\') q = !q;
    if (c === sep && !q) { out.push(cur); cur = ''; continue; }
    cur += c;
  }
  out.push(cur);
  return out;
}

export function matchText(m) {
  if (!m) return '';
  const v1 = (v) => (typeof v === 'string' && !/^[\s"]|[,|=]|\s$/.test(v) && jsonish(v) === v ? v : JSON.stringify(v));
  return Object.entries(m).map(([k, v]) => `${k}=${Array.isArray(v) ? v.map(v1).join('|') : v1(v)}`).join(', ');
}

export class FilterEditor {
  // decorate(filter) returns the filter as it is sent (the page adds the
  // system events clause its events panel needs).
  constructor({rows, everything, grid, preview, error, decorate}) {
    Object.assign(this, {rows, everything, grid, preview, error, decorate});
    this.types = [];
    this.everything.addEventListener('change', () => this.sync());
    this.rows.addEventListener('input', () => this.sync());
    this.rows.addEventListener('change', () => this.sync());
  }

  setTypes(types) {
    this.types = types;
    this.rows.replaceChildren(...types.map((t) => el('tr', {dataset: {type: t.name}},
      el('th', {scope: 'row', text: t.name}),
      ...OPS.map((op) => el('td', {}, el('input', {type: 'checkbox', 'aria-label': `${t.name} ${op}`, dataset: {op}}))),
      el('td', {}, el('input', {type: 'text', 'aria-label': `${t.name} match`, placeholder: 'field=value', dataset: {match: '1'}, spellcheck: 'false'})))));
    this.sync();
  }

  // state is the editor's content: {everything, clauses: [{type, ops, match}]}.
  get state() {
    const clauses = [];
    for (const tr of this.rows.children) {
      const ops = OPS.filter((op) => tr.querySelector(`input[data-op="${op}"]`).checked);
      const match = tr.querySelector('input[data-match]').value;
      if (ops.length) clauses.push({type: tr.dataset.type, ops, match});
    }
    return {everything: this.everything.checked, clauses};
  }

  set state(st) {
    this.everything.checked = st.everything !== false;
    const byType = new Map((st.clauses || []).map((c) => [c.type, c]));
    for (const tr of this.rows.children) {
      const c = byType.get(tr.dataset.type);
      for (const op of OPS) tr.querySelector(`input[data-op="${op}"]`).checked = !!c?.ops?.includes(op);
      tr.querySelector('input[data-match]').value = c?.match || '';
    }
    this.sync();
  }

  // protocol returns the GARM filter object for st (throws on a bad match).
  static protocol(st) {
    if (st.everything) return {'send-everything': true};
    return {
      'send-everything': false,
      filters: st.clauses.map((c) => {
        const f = {'entity-type': c.type, operations: c.ops};
        const m = parseMatch(c.match || '');
        if (m) f.match = m;
        return f;
      }),
    };
  }

  sync() {
    const everything = this.everything.checked;
    this.grid.classList.toggle('disabled', everything);
    for (const i of this.rows.querySelectorAll('input')) i.disabled = everything;
    try {
      this.preview.textContent = JSON.stringify(this.decorate(FilterEditor.protocol(this.state)), null, 2);
      this.error.hidden = true;
      return true;
    } catch (e) {
      this.error.textContent = `Match: ${e.message}`;
      this.error.hidden = false;
      return false;
    }
  }
}
