// Package xidsnap holds PostgreSQL's transaction visibility rule, the one
// pg_visible_in_snapshot applies, for journaled changes: a snapshot is
// xmin, xmax and the transaction ids in progress when it was taken, and a
// committed transaction is visible in it if its id is below xmin, or below
// xmax and not in progress (docs/guarantees.md, "Snapshots and the seam").
// Package snapshot reads the rows under such a snapshot; wsapi decides
// with the same rule which journaled changes a client still needs after
// them, also from a snapshot cursor a client brings back later.
package xidsnap

import "slices"

// Snapshot is one PostgreSQL snapshot with full (epoch-extended)
// transaction ids. Xip is ascending, every id in [Xmin, Xmax).
type Snapshot struct {
	Xmin, Xmax uint64
	Xip        []uint64
}

// Visible reports whether the committed transaction xid (32 bits, as the
// journal records it) is visible in s. The 32-bit id is widened with the
// epoch of Xmax (Widen).
func (s Snapshot) Visible(xid uint32) bool {
	full := Widen(xid, s.Xmax)
	if full < s.Xmin {
		return true
	}
	if full >= s.Xmax {
		return false
	}
	_, running := slices.BinarySearch(s.Xip, full)
	return !running
}

// Widen returns the full transaction id whose low 32 bits are xid and
// which is nearest to ref: a journaled transaction is within 2^31 of any
// recent snapshot's xmax, as PostgreSQL's own wraparound protection
// guarantees for any id still in use.
func Widen(xid uint32, ref uint64) uint64 {
	d := int64(int32(xid - uint32(ref)))
	full := int64(ref) + d
	if full < 0 {
		return 0
	}
	return uint64(full)
}
