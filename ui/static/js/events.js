// EventsPanel lists system events: loaded through the events REST API,
// then kept current by the stream's event frames (create, update when one
// is marked read or unread, delete). Read/unread goes through the REST API;
// the update comes back on the stream.

import {el, timeOf, message} from './util.js';
import * as api from './api.js';

const CAP = 200;

export class EventsPanel {
  constructor({list, unread, msg, schedule}) {
    Object.assign(this, {list, unread, msg, schedule});
    this.events = new Map(); // id -> event
    this.subject = '';
    this.dirty = false;
    this.list.addEventListener('click', (e) => {
      const b = e.target.closest('button[data-id]');
      if (b) this.toggle(b.dataset.id);
    });
  }

  setUser(subject) {
    this.subject = subject;
    this.events.clear();
    this.markDirty();
  }

  markDirty() {
    this.dirty = true;
    this.schedule();
  }

  async load() {
    try {
      const page = await api.listEvents(100);
      for (const ev of page.events || []) this.upsert(ev);
      message(this.msg, '');
    } catch (e) {
      message(this.msg, `Cannot list system events: ${e.message}`);
    }
  }

  upsert(ev) {
    const old = this.events.get(ev.id);
    if (old && old.updated_at > ev.updated_at) return; // an older copy
    this.events.set(ev.id, ev);
    this.markDirty();
  }

  // apply takes an event frame from the stream.
  apply(f) {
    if (f.operation === 'delete') this.events.delete(f.payload?.id);
    else if (f.payload?.id) this.upsert(f.payload);
    this.markDirty();
  }

  async toggle(id) {
    const ev = this.events.get(id);
    if (!ev) return;
    const status = ev.status === 'read' ? 'unread' : 'read';
    try {
      await api.setEventStatus(id, status);
      // The stream delivers the update too; show it now.
      this.events.set(id, {...ev, status});
      message(this.msg, '');
      this.markDirty();
    } catch (e) {
      message(this.msg, `Cannot mark the event ${status}: ${e.message}`);
    }
  }

  render() {
    if (!this.dirty) return;
    this.dirty = false;
    const evs = [...this.events.values()].sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0));
    if (evs.length > CAP) {
      for (const ev of evs.slice(CAP)) this.events.delete(ev.id);
      evs.length = CAP;
    }
    let unread = 0;
    const hadFocus = this.list.contains(document.activeElement) ? document.activeElement.dataset.id : null;
    const frag = document.createDocumentFragment();
    for (const ev of evs) {
      if (ev.status !== 'read') unread++;
      const doc = typeof ev.metadata?.doc === 'string' && /^https?:\/\//.test(ev.metadata.doc) ? ev.metadata.doc : null;
      const mine = ev.user_id && ev.user_id === this.subject;
      const meta = [`${ev.category}/${ev.action}`, timeOf(ev.created_at)];
      const b = el('button', {type: 'button', dataset: {id: ev.id}, 'aria-pressed': ev.status === 'read' ? 'true' : 'false'},
        ev.status === 'read' ? 'Mark unread' : 'Mark read');
      frag.append(el('li', {class: `${ev.status === 'read' ? 'read' : 'unread'} sevb-${ev.severity}`, dataset: {id: ev.id, status: ev.status, severity: ev.severity}},
        el('span', {class: `sev sev-${ev.severity}`, text: ev.severity}),
        el('span', {class: 'desc', text: ev.description || `${ev.category} ${ev.action}`}),
        b,
        el('span', {class: 'meta'}, meta.join(' · '),
          mine ? el('span', {class: 'mine', text: ' · for you'}) : null,
          doc ? ' · ' : null,
          doc ? el('a', {href: doc, target: '_blank', rel: 'noopener noreferrer', text: 'what to do'}) : null)));
    }
    this.list.replaceChildren(frag);
    if (hadFocus) this.list.querySelector(`button[data-id="${CSS.escape(hadFocus)}"]`)?.focus();
    this.unread.textContent = evs.length ? `${unread} unread of ${evs.length}` : 'none';
  }
}
