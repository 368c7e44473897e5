package wsapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/changecast/changecast/entities"
)

// This file holds the client's subscription: what the token allows (scope)
// and what the client asked for (filter), and the strict parser for GARM
// filter messages (docs/protocol.md, "Choosing what to receive").
//
// A filter is a list of clauses rather than a map so that later extensions
// (field "match" clauses, envelope subscribe/unsubscribe) add fields to a
// clause or edit the list without changing how delivery asks the question.

// scope is what a connection's token allows it to see. It is fixed for the
// life of the connection and consulted both when a filter is accepted and
// again for every change delivered.
type scope struct {
	admin bool
	// types, when non-nil, lists the only entity types allowed (the
	// token's scope claim). nil means every type the role allows.
	types map[string]bool
}

// userEntityType is the one type viewers never see, whatever their scope
// says (docs/protocol.md, "Authentication").
const userEntityType = "user"

func newScope(c *Claims) scope {
	s := scope{admin: c.Role == RoleAdmin}
	if len(c.Scope) > 0 {
		s.types = make(map[string]bool, len(c.Scope))
		for _, t := range c.Scope {
			s.types[t] = true
		}
	}
	return s
}

// allows reports whether the connection may see entityType.
func (s scope) allows(entityType string) bool {
	if !s.admin && entityType == userEntityType {
		return false
	}
	if s.types != nil {
		return s.types[entityType]
	}
	return true
}

// allowedNames lists the types the scope allows, for error messages.
func (s scope) allowedNames(reg *entities.Registry) []string {
	var out []string
	for _, n := range knownNames(reg) {
		if s.allows(n) {
			out = append(out, n)
		}
	}
	return out
}

// knownNames lists every type a filter may name: the registry's and
// system events, sorted.
func knownNames(reg *entities.Registry) []string {
	names := append(reg.Names(), entities.EventEntityType)
	slices.Sort(names)
	return names
}

// opMask is a set of operations. opAll is what a clause without
// operations selects: every row operation. truncate is selected only when
// named (or by send-everything), so GARM clients, which do not know it,
// never receive it unasked.
type opMask uint8

const (
	opCreate opMask = 1 << iota
	opUpdate
	opDelete
	opTruncate

	opAll = opCreate | opUpdate | opDelete
)

func maskOf(op entities.Operation) opMask {
	switch op {
	case entities.OpCreate:
		return opCreate
	case entities.OpUpdate:
		return opUpdate
	case entities.OpDelete:
		return opDelete
	case entities.OpTruncate:
		return opTruncate
	}
	return 0
}

// clause is one GARM filter entry: the entity type must match, the
// operation must be in ops, and every field condition in match must hold.
type clause struct {
	entityType string
	ops        opMask
	match      []fieldMatch // AND-ed, sorted by field; nil = no conditions
}

// filter is a parsed, validated client filter. It is immutable once built,
// so the publisher can read it through an atomic pointer while the reader
// goroutine swaps in a replacement.
type filter struct {
	all     bool     // send-everything: every type the scope allows
	clauses []clause // OR-ed; ignored when all is set
}

// matches reports whether the filter selects c. It does not consult the
// scope; delivery checks both.
func (f *filter) matches(c *entities.Change) bool {
	if f == nil {
		return false
	}
	if f.all {
		return true
	}
	m := maskOf(c.Operation)
	for i := range f.clauses {
		cl := &f.clauses[i]
		if cl.entityType == c.EntityType && cl.ops&m != 0 && matchFields(cl.match, c) {
			return true
		}
	}
	return false
}

// parseCtx is what validating a client message needs: the registry, the
// token's scope and the secret-field rule.
type parseCtx struct {
	reg *entities.Registry
	sc  scope
	// secret reports whether a column may not be matched on (see
	// Config.SecretField); nil means entities.EntityType.IsSecret only.
	secret func(entities.EntityType, string) bool
	// systemState reports whether the server offers system_state frames.
	systemState bool
	// snapshots reports whether the server offers snapshots.
	snapshots bool
}

func (pc parseCtx) isSecret(et entities.EntityType, col string) bool {
	return et.IsSecret(col) || (pc.secret != nil && pc.secret(et, col))
}

// Error frame codes (args.code). A client tells a message it must fix
// (400) from a request its token can never make (403) by the code alone.
const (
	codeBadRequest = 400
	codeForbidden  = 403
)

// filterError is a problem with a client message; its text goes back to the
// client in an error frame with its code.
type filterError struct {
	code int // codeBadRequest or codeForbidden
	msg  string
}

func (e *filterError) Error() string { return e.msg }

// filterErrorf reports a malformed or unknown request (code 400).
func filterErrorf(format string, args ...any) error {
	return &filterError{code: codeBadRequest, msg: fmt.Sprintf(format, args...)}
}

// forbiddenf reports a well-formed request the token may not make (code
// 403): an entity type outside its role or scope.
func forbiddenf(format string, args ...any) error {
	return &filterError{code: codeForbidden, msg: fmt.Sprintf(format, args...)}
}

// maxEchoLen bounds how much of a client's value an error message quotes
// back, so a 1 MiB entity type name does not come back as a 1 MiB error.
const maxEchoLen = 64

func quote(s string) string {
	if len(s) > maxEchoLen {
		s = s[:maxEchoLen] + "..."
	}
	return fmt.Sprintf("%q", s)
}

// parseFilter parses a GARM filter message strictly: keys are matched
// exactly (encoding/json would accept any case) and may appear once, values
// must have the right JSON type, entity types must be registered and allowed
// by sc, operations must be known. Null is accepted for the two arrays
// because GARM's Go client encodes empty slices that way.
func (pc parseCtx) parseFilter(data []byte) (*filter, error) {
	return pc.parseFilterObject(data, "message")
}

// parseFilterObject parses a GARM filter object; what names it in error
// messages ("message", or "args" inside an envelope).
func (pc parseCtx) parseFilterObject(data []byte, what string) (*filter, error) {
	f, _, err := pc.parseFilterArgs(data, what, false)
	return f, err
}

// parseFilterArgs is parseFilterObject that, with snapshot, also accepts a
// "snapshot" member (an envelope filter request's args) and reports it.
func (pc parseCtx) parseFilterArgs(data []byte, what string, snapshot bool) (*filter, bool, error) {
	keys := []string{"send-everything", "filters"}
	if snapshot {
		keys = append(keys, "snapshot")
	}
	top, err := objectMembers(data, what, keys...)
	if err != nil {
		return nil, false, err
	}
	snap, err := snapshotFlag(top)
	if err != nil {
		return nil, false, err
	}
	f, err := pc.filterFromMembers(top)
	return f, snap, err
}

func (pc parseCtx) filterFromMembers(top map[string]json.RawMessage) (*filter, error) {
	f := &filter{}
	if raw, ok := top["send-everything"]; ok {
		if err := decodeMember(raw, &f.all); err != nil || isNull(raw) {
			return nil, filterErrorf(`"send-everything" must be true or false`)
		}
	}
	var entries []json.RawMessage
	if raw, ok := top["filters"]; ok && !isNull(raw) {
		if err := decodeMember(raw, &entries); err != nil {
			return nil, filterErrorf(`"filters" must be an array of objects`)
		}
	}
	// GARM ignores filters when send-everything is set; they are still
	// validated so a mistake is reported rather than silently kept.
	for i, raw := range entries {
		cl, err := pc.parseClause(raw, fmt.Sprintf("filters[%d]", i))
		if err != nil {
			return nil, err
		}
		f.clauses = append(f.clauses, cl)
	}
	if f.all {
		f.clauses = nil
	}
	return f, nil
}

// parseClause parses one filter object; what names it in error messages.
func (pc parseCtx) parseClause(raw json.RawMessage, what string) (clause, error) {
	m, err := objectMembers(raw, what, "entity-type", "operations", "match")
	if err != nil {
		return clause{}, err
	}
	var cl clause
	rawType, ok := m["entity-type"]
	if !ok {
		return clause{}, filterErrorf(`%s: "entity-type" is required`, what)
	}
	if err := decodeMember(rawType, &cl.entityType); err != nil || isNull(rawType) {
		return clause{}, filterErrorf(`%s: "entity-type" must be a string`, what)
	}
	et, err := pc.lookupType(cl.entityType)
	if err != nil {
		return clause{}, err
	}
	var ops []json.RawMessage
	if rawOps, ok := m["operations"]; ok && !isNull(rawOps) {
		if err := decodeMember(rawOps, &ops); err != nil {
			return clause{}, filterErrorf(`%s: "operations" must be an array of strings`, what)
		}
	}
	for _, rawOp := range ops {
		var s string
		if err := decodeMember(rawOp, &s); err != nil || isNull(rawOp) {
			return clause{}, filterErrorf(`%s: "operations" must be an array of strings`, what)
		}
		op, err := entities.ParseOperation(s)
		if err != nil {
			return clause{}, filterErrorf("unknown operation %s; known: %s", quote(s), joinOperations())
		}
		cl.ops |= maskOf(op)
	}
	if cl.ops == 0 {
		cl.ops = opAll
	}
	if rawMatch, ok := m["match"]; ok && !isNull(rawMatch) {
		if cl.match, err = pc.parseMatch(rawMatch, what, et); err != nil {
			return clause{}, err
		}
	}
	return cl, nil
}

// lookupType checks that name is a registered type the scope allows.
func (pc parseCtx) lookupType(name string) (entities.EntityType, error) {
	et, err := pc.knownType(name)
	if err != nil {
		return entities.EntityType{}, err
	}
	if !pc.sc.allows(name) {
		allowed := pc.sc.allowedNames(pc.reg)
		list := strings.Join(allowed, ", ")
		if len(allowed) == 0 {
			list = "none"
		}
		return entities.EntityType{}, forbiddenf("entity type %s is not allowed for this token; allowed: %s", quote(name), list)
	}
	return et, nil
}

// knownType returns the entity type called name: a registered type, or
// system events.
func (pc parseCtx) knownType(name string) (entities.EntityType, error) {
	if name == entities.EventEntityType {
		return entities.EventType(), nil
	}
	et, err := pc.reg.Lookup(name)
	if err != nil {
		return entities.EntityType{}, filterErrorf("unknown entity type %s; known: %s", quote(name), strings.Join(knownNames(pc.reg), ", "))
	}
	return et, nil
}

func joinOperations() string {
	names := make([]string, len(entities.Operations))
	for i, op := range entities.Operations {
		names[i] = string(op)
	}
	return strings.Join(names, ", ")
}

// objectMembers decodes data as one JSON object whose keys are all in
// allowed, each at most once, and returns the raw members. what names the
// object in error messages. With no allowed keys, any key is accepted.
func objectMembers(data []byte, what string, allowed ...string) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, invalidJSON(what, err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, filterErrorf("%s must be a JSON object", what)
	}
	out := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, invalidJSON(what, err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, filterErrorf("%s: invalid JSON", what)
		}
		if allowed != nil && !slices.Contains(allowed, key) {
			return nil, filterErrorf("%s: unknown key %s; known: %s", what, quote(key), strings.Join(allowed, ", "))
		}
		if _, dup := out[key]; dup {
			return nil, filterErrorf("%s: duplicate key %s", what, quote(key))
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, invalidJSON(what, err)
		}
		out[key] = v
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, invalidJSON(what, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, filterErrorf("%s: unexpected data after the JSON object", what)
	}
	return out, nil
}

func invalidJSON(what string, err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return filterErrorf("%s: invalid JSON at byte %d: %s", what, se.Offset, se.Error())
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return filterErrorf("%s: invalid JSON: unexpected end of input", what)
	}
	return filterErrorf("%s: invalid JSON", what)
}

// decodeMember decodes a raw member into v. The members come out of a
// decoder that already checked their syntax, so an error here is a JSON
// type mismatch.
func decodeMember(raw json.RawMessage, v any) error {
	return json.Unmarshal(raw, v)
}

func isNull(raw json.RawMessage) bool {
	return string(bytes.TrimSpace(raw)) == "null"
}
