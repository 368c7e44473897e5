package sanitize

import (
	"maps"

	"github.com/changecast/changecast/entities"
)

// Event returns ev with every metadata member whose key is a SecretName
// removed, at any depth, by the rule that strips json column values:
// {"err": "...", "password": "x", "conn": {"token": "y"}} keeps only err
// and an empty conn. Events are persisted and sent only after this, so
// metadata cannot carry a secret to the journal, the events table, the
// REST API or a client. ev is not modified; the result never shares its
// metadata map with ev.
func Event(ev entities.Event) (entities.Event, error) {
	meta, changed := stripMap(ev.Metadata, nil)
	if !changed {
		meta = maps.Clone(ev.Metadata)
	}
	ev.Metadata = meta
	return ev, nil
}
