package sanitize

import "github.com/changecast/changecast/entities"

// This file holds entry points only the tests use. Production code
// sanitizes through (*Sanitizer).Change and strips JSON inside it.

// Row returns a copy of row with every rule of the package applied for et,
// deciding without the Sanitizer's cache; (*Sanitizer).Change documents
// the rules.
func Row(et entities.EntityType, row *entities.Row) *entities.Row {
	return sanitizeRow(uncached{et}, row, nil)
}

// uncached decides from the entity type on every call.
type uncached struct{ et entities.EntityType }

func (u uncached) reason(col string) Reason { return reason(u.et, col) }

// StripJSON is stripJSON reporting whether anything was removed (or
// invalid JSON replaced by null).
func StripJSON(raw []byte) (out []byte, stripped bool) {
	out, res := stripJSON(raw)
	return out, res != jsonKept
}
