package wsapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/wire"
)

// This file holds envelope requests (docs/protocol.md, "Envelope requests";
// SysAdm style):
// {"namespace": "events", "name": "subscribe" | "unsubscribe" | "filter" |
// "ping", "id": "...", "args": ...}. Each gets exactly one frame back with
// the same id: a response carrying the connection's filters and cursor, or
// an error frame.

// Envelope request names: short local names for wire's.
const (
	reqSubscribe   = wire.RequestSubscribe
	reqUnsubscribe = wire.RequestUnsubscribe
	reqFilter      = wire.RequestFilter
	reqPing        = wire.RequestPing

	envelopeNamespace = wire.NamespaceEvents
	requestNames      = reqSubscribe + ", " + reqUnsubscribe + ", " + reqFilter + ", " + reqPing
)

// maxIDLen bounds a request id: it is echoed in the reply.
const maxIDLen = 128

// message is a parsed client message: a GARM filter (envelope false) or an
// envelope request.
type message struct {
	envelope bool
	id       string // envelope only
	// next is the connection's filter after the message (nil: none yet).
	next *filter
	// systemState, when set, turns the system-state subscription on or
	// off (envelope subscribe/unsubscribe of "system-state").
	systemState *bool
	// snapshot, when not nil, lists the entity types the request asked
	// a snapshot of (snapshot.go), sorted.
	snapshot []string
}

// isEnvelope reports whether data is a JSON object with a top-level
// "namespace" key, seen before any syntax error (so a truncated request
// still gets the request's error). Anything else is parsed as a GARM
// filter, so GARM clients see exactly the errors they always did.
func isEnvelope(data []byte) bool {
	if !bytes.Contains(data, []byte(`namespace`)) {
		return false // fast path: every GARM filter message
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return false
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		if key, _ := tok.(string); key == "namespace" {
			return true
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return false
		}
	}
	return false
}

// applyMessage parses a client message and computes the filter that
// replaces cur. On error the returned message still carries the request id
// when it could be read, for the error frame; cur stays in force.
func (pc parseCtx) applyMessage(cur *filter, data []byte) (message, error) {
	if !isEnvelope(data) {
		f, err := pc.parseFilter(data)
		return message{next: f}, err
	}
	msg := message{envelope: true, next: cur}
	m, err := objectMembers(data, "request", "namespace", "name", "id", "args")
	if err != nil {
		return msg, err
	}
	rawID, ok := m["id"]
	if !ok {
		return msg, filterErrorf(`request: "id" is required`)
	}
	if err := decodeMember(rawID, &msg.id); err != nil || isNull(rawID) || msg.id == "" || len(msg.id) > maxIDLen {
		msg.id = ""
		return msg, filterErrorf(`request: "id" must be a non-empty string of at most %d bytes`, maxIDLen)
	}
	var ns, name string
	if raw, ok := m["namespace"]; !ok || decodeMember(raw, &ns) != nil || isNull(raw) {
		return msg, filterErrorf(`request: "namespace" must be a string; known: %s`, envelopeNamespace)
	}
	if ns != envelopeNamespace {
		return msg, filterErrorf("unknown namespace %s; known: %s", quote(ns), envelopeNamespace)
	}
	rawName, ok := m["name"]
	if !ok || decodeMember(rawName, &name) != nil || isNull(rawName) {
		return msg, filterErrorf(`request: "name" must be a string; known: %s`, requestNames)
	}
	args, hasArgs := m["args"]
	if hasArgs && isNull(args) {
		hasArgs = false
	}
	switch name {
	case reqPing:
		if hasArgs {
			return msg, filterErrorf(`ping: "args" must be absent or null`)
		}
	case reqFilter:
		if !hasArgs {
			return msg, filterErrorf(`filter: "args" is required: a GARM filter object such as {"send-everything": true}`)
		}
		f, snap, err := pc.parseFilterArgs(args, "args", true)
		if err != nil {
			return msg, err
		}
		if snap {
			if msg.snapshot, err = pc.snapshotTypes(f, nil); err != nil {
				return msg, err
			}
		}
		msg.next = f
	case reqSubscribe:
		f, state, snap, err := pc.subscribe(cur, args, hasArgs)
		if err != nil {
			return msg, err
		}
		msg.next, msg.systemState, msg.snapshot = f, state, snap
	case reqUnsubscribe:
		f, state, err := pc.unsubscribe(cur, args, hasArgs)
		if err != nil {
			return msg, err
		}
		msg.next, msg.systemState = f, state
	default:
		return msg, filterErrorf("unknown request name %s; known: %s", quote(name), requestNames)
	}
	return msg, nil
}

// subscribe adds args (entity type names or filter objects) to cur. A
// clause for a type and match already present widens that clause's
// operations. A send-everything filter already selects everything, so it
// stays as it is. The name "system-state" starts the system_state frames
// instead (state is then non-nil).
//
// args may also be an object, {"filters": [...], "snapshot": true}: the
// same list under "filters", and a snapshot of the types it names
// (snapshot, sorted; nil when not asked).
func (pc parseCtx) subscribe(cur *filter, args json.RawMessage, hasArgs bool) (next *filter, state *bool, snapshot []string, err error) {
	if t := bytes.TrimSpace(args); hasArgs && len(t) > 0 && t[0] == '{' {
		return pc.subscribeObject(cur, t)
	}
	elems, err := argsArray(args, hasArgs, "subscribe", "entity type names, filter objects or \""+wire.SystemStateTopic+"\"")
	if err != nil {
		return nil, nil, nil, err
	}
	next, state, _, err = pc.subscribeClauses(cur, elems)
	return next, state, nil, err
}

// subscribeObject is subscribe's object form.
func (pc parseCtx) subscribeObject(cur *filter, args json.RawMessage) (*filter, *bool, []string, error) {
	m, err := objectMembers(args, "subscribe: args", "filters", wire.SnapshotArg)
	if err != nil {
		return nil, nil, nil, err
	}
	var elems []json.RawMessage
	if raw, ok := m["filters"]; !ok || decodeMember(raw, &elems) != nil || isNull(raw) {
		return nil, nil, nil, filterErrorf(`subscribe: "args.filters" must be an array of entity type names, filter objects or %s`, quote(wire.SystemStateTopic))
	}
	snap, err := snapshotFlag(m)
	if err != nil {
		return nil, nil, nil, err
	}
	next, state, add, err := pc.subscribeClauses(cur, elems)
	if err != nil || !snap {
		return next, state, nil, err
	}
	if add == nil {
		add = []clause{} // named no type: snapshotTypes says so
	}
	types, err := pc.snapshotTypes(next, add)
	return next, state, types, err
}

// snapshotFlag reads the optional "snapshot" member.
func snapshotFlag(m map[string]json.RawMessage) (bool, error) {
	raw, ok := m[wire.SnapshotArg]
	if !ok {
		return false, nil
	}
	var on bool
	if err := decodeMember(raw, &on); err != nil || isNull(raw) {
		return false, filterErrorf(`"snapshot" must be true or false`)
	}
	return on, nil
}

func setOf(list []string) map[string]bool {
	m := make(map[string]bool, len(list))
	for _, s := range list {
		m[s] = true
	}
	return m
}

// subscribeClauses adds elems to cur; add is the clauses elems named.
func (pc parseCtx) subscribeClauses(cur *filter, elems []json.RawMessage) (*filter, *bool, []clause, error) {
	var state *bool
	var add []clause
	for i, raw := range elems {
		what := fmt.Sprintf("args[%d]", i)
		t := bytes.TrimSpace(raw)
		switch {
		case len(t) > 0 && t[0] == '"':
			var name string
			if err := json.Unmarshal(t, &name); err != nil {
				return nil, nil, nil, filterErrorf("%s: invalid string", what)
			}
			if name == wire.SystemStateTopic {
				if !pc.systemState {
					return nil, nil, nil, filterErrorf("%s is not available on this server", quote(name))
				}
				state = ptrTo(true)
				continue
			}
			if _, err := pc.lookupType(name); err != nil {
				return nil, nil, nil, err
			}
			add = append(add, clause{entityType: name, ops: opAll})
		case len(t) > 0 && t[0] == '{':
			cl, err := pc.parseClause(t, what)
			if err != nil {
				return nil, nil, nil, err
			}
			add = append(add, cl)
		default:
			return nil, nil, nil, filterErrorf("%s must be an entity type name, a filter object or %s", what, quote(wire.SystemStateTopic))
		}
	}
	if len(add) == 0 && state != nil || cur != nil && cur.all {
		return cur, state, add, nil
	}
	next := &filter{}
	if cur != nil {
		next.clauses = append(next.clauses, cur.clauses...)
	}
	for _, cl := range add {
		merged := false
		for j := range next.clauses {
			if next.clauses[j].entityType == cl.entityType && sameMatch(next.clauses[j].match, cl.match) {
				next.clauses[j].ops |= cl.ops
				merged = true
				break
			}
		}
		if !merged {
			next.clauses = append(next.clauses, cl)
		}
	}
	return next, state, add, nil
}

func ptrTo[T any](v T) *T { return &v }

// unsubscribe removes every clause for the named types. A type with no
// clause is a no-op; an unregistered name is an error. A send-everything
// filter has no per-type clauses to remove, so it is refused. The name
// "system-state" stops the system_state frames instead.
func (pc parseCtx) unsubscribe(cur *filter, args json.RawMessage, hasArgs bool) (*filter, *bool, error) {
	elems, err := argsArray(args, hasArgs, "unsubscribe", "entity type names or \""+wire.SystemStateTopic+"\"")
	if err != nil {
		return nil, nil, err
	}
	var state *bool
	drop := map[string]bool{}
	for i, raw := range elems {
		var name string
		if err := decodeMember(raw, &name); err != nil || isNull(raw) {
			return nil, nil, filterErrorf("args[%d] must be an entity type name or %s", i, quote(wire.SystemStateTopic))
		}
		if name == wire.SystemStateTopic {
			state = ptrTo(false)
			continue
		}
		if _, err := pc.knownType(name); err != nil {
			return nil, nil, err
		}
		drop[name] = true
	}
	if cur == nil || len(drop) == 0 {
		return cur, state, nil
	}
	if cur.all {
		return nil, nil, filterErrorf(`unsubscribe: the current filter is send-everything; send a "filter" request listing the entity types wanted`)
	}
	next := &filter{}
	for _, cl := range cur.clauses {
		if !drop[cl.entityType] {
			next.clauses = append(next.clauses, cl)
		}
	}
	return next, state, nil
}

func argsArray(args json.RawMessage, hasArgs bool, name, of string) ([]json.RawMessage, error) {
	var elems []json.RawMessage
	if !hasArgs || decodeMember(args, &elems) != nil {
		return nil, filterErrorf(`%s: "args" must be an array of %s`, name, of)
	}
	return elems, nil
}

func sameMatch(a, b []fieldMatch) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].field != b[i].field || !bytes.Equal(a[i].raw, b[i].raw) {
			return false
		}
	}
	return true
}

// responseFrame answers an envelope request.
type responseFrame struct {
	Namespace string       `json:"namespace"`
	Name      string       `json:"name"`
	ID        string       `json:"id"`
	Args      responseArgs `json:"args"`
}

type responseArgs struct {
	SendEverything bool         `json:"send-everything"`
	Filters        []clauseJSON `json:"filters"`
	SystemState    bool         `json:"system-state,omitempty"`
	Cursor         string       `json:"cursor"`
}

type clauseJSON struct {
	EntityType string                     `json:"entity-type"`
	Operations []string                   `json:"operations,omitempty"`
	Match      map[string]json.RawMessage `json:"match,omitempty"`
}

// encodeResponse encodes the response to request id: the connection's
// filter f (nil: none yet), whether it receives system_state frames, and
// its position.
func encodeResponse(id string, f *filter, systemState bool, cursor int64) []byte {
	args := responseArgs{Filters: []clauseJSON{}, SystemState: systemState, Cursor: strconv.FormatInt(cursor, 10)}
	if f != nil {
		args.SendEverything = f.all
		for _, cl := range f.clauses {
			cj := clauseJSON{EntityType: cl.entityType}
			if cl.ops != opAll {
				for _, op := range entities.Operations {
					if cl.ops&maskOf(op) != 0 {
						cj.Operations = append(cj.Operations, string(op))
					}
				}
			}
			if len(cl.match) > 0 {
				cj.Match = make(map[string]json.RawMessage, len(cl.match))
				for _, fm := range cl.match {
					cj.Match[fm.field] = fm.raw
				}
			}
			args.Filters = append(args.Filters, cj)
		}
	}
	return mustJSON(responseFrame{Namespace: envelopeNamespace, Name: wire.NameResponse, ID: id, Args: args})
}
