// Small DOM and formatting helpers. Data from the server is only ever put
// into the page with textContent, never as HTML.

export const $ = (id) => document.getElementById(id);

// el builds an element: el('li', {class: 'x', dataset: {id: 1}}, 'text', child).
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// onPick calls pick(key) when the user picks an item of a live list: the
// element in list matching sel, named by keyOf(item), which is read as the
// button goes down (for a click with no press before it, such as the
// keyboard's, at the click). A click picks, and
// so does a press and release of the primary button in one place during
// which the list redrew the item: a live list re-creates its items as
// changes arrive (the table every frame, the feed every 100 ms), and the
// browser fires no click when the element pressed is gone by the release,
// or fires it on the list, so under load most clicks would do nothing.
// Only a press that ends where it began picks: a drag or a touch scroll
// (which cancels the pointer) does not.
export function onPick(list, sel, keyOf, pick) {
  let down = null;
  let pressed = null; // the press whose click is still to come
  list.addEventListener('pointerdown', (e) => {
    pressed = null;
    const item = e.isPrimary && e.button === 0 ? e.target.closest(sel) : null;
    down = item ? {item, key: keyOf(item), x: e.clientX, y: e.clientY} : null;
  });
  list.addEventListener('pointercancel', () => { down = null; });
  list.addEventListener('pointerup', (e) => {
    const d = down;
    down = null;
    if (!d || !e.isPrimary || Math.abs(e.clientX - d.x) > 6 || Math.abs(e.clientY - d.y) > 6) return;
    // Released on the item pressed: the click that follows picks it,
    // with the key read as the button went down.
    if (d.item.isConnected && e.target.closest(sel) === d.item) {
      pressed = d;
      return;
    }
    pressed = null;
    pick(d.key);
  });
  list.addEventListener('click', (e) => {
    const item = e.target.closest(sel);
    const p = pressed;
    pressed = null;
    if (item) pick(p && p.item === item ? p.key : keyOf(item));
  });
}

export function show(node, on) { node.hidden = !on; }

export function message(node, text, isError = true) {
  node.textContent = text || '';
  node.classList.toggle('error', !!text && isError);
  node.hidden = !text;
}

// timeOf formats an RFC 3339 time as HH:MM:SS.mmm, local time.
export function timeOf(s) {
  const d = new Date(s);
  if (Number.isNaN(d.getTime())) return '';
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

export function bytes(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

// cell renders one payload value for a table cell or a list.
export function cell(v) {
  if (v === undefined) return '';
  if (v === null) return 'null';
  if (typeof JSON.isRawJSON === 'function' && JSON.isRawJSON(v)) return v.rawJSON;
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

export function pretty(v) {
  return v === undefined ? '—' : JSON.stringify(v, null, 2);
}

// sameJSON compares two payload values structurally.
export function sameJSON(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

// cursorBig compares decimal cursor strings without losing precision.
export function cursorGt(a, b) {
  if (b === null || b === undefined || b === '') return true;
  if (a.length !== b.length) return a.length > b.length;
  return a > b;
}
