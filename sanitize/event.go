package sanitize

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"

	"github.com/changecast/changecast/entities"
)

// Event returns ev with every metadata member whose key is a SecretName
// removed, at any depth, by the same rule as json columns (StripJSON):
// {"err": "...", "password": "x", "conn": {"token": "y"}} keeps only err
// and an empty conn. Events are persisted and sent only after this, so
// metadata cannot carry a secret to the journal, the events table, the
// REST API or a client. ev is not modified.
func Event(ev entities.Event) (entities.Event, error) {
	if len(ev.Metadata) == 0 {
		return ev, nil
	}
	raw, err := json.Marshal(ev.Metadata)
	if err != nil {
		return entities.Event{}, fmt.Errorf("sanitize event %s: metadata does not encode: %w", ev.ID, err)
	}
	out, stripped := StripJSON(raw)
	if !stripped {
		ev.Metadata = maps.Clone(ev.Metadata)
		return ev, nil
	}
	var meta map[string]any
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber()
	if err := dec.Decode(&meta); err != nil || meta == nil {
		return entities.Event{}, fmt.Errorf("sanitize event %s: stripped metadata is not an object", ev.ID)
	}
	ev.Metadata = meta
	return ev, nil
}
