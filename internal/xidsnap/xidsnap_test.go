package xidsnap

import "testing"

// Visible follows pg_visible_in_snapshot: below xmin, or below xmax and
// not in progress; a 32-bit id is widened around xmax, across an epoch.
func TestVisible(t *testing.T) {
	const epoch = uint64(3) << 32
	s := Snapshot{Xmin: epoch + 100, Xmax: epoch + 110, Xip: []uint64{epoch + 100, epoch + 105}}
	for xid, want := range map[uint32]bool{
		99: true, 100: false, 101: true, 105: false, 109: true, 110: false, 500: false,
		0xFFFFFF00: true, // the previous epoch: long committed
	} {
		if got := s.Visible(xid); got != want {
			t.Errorf("xid %d: visible = %v, want %v", xid, got, want)
		}
	}
	// Xmax just after an epoch boundary: ids just below it are from the
	// previous epoch.
	if got := Widen(0xFFFFFFFE, epoch+5); got != epoch-2 {
		t.Errorf("Widen(0xFFFFFFFE, epoch+5) = %d, want %d", got, epoch-2)
	}
	if got := Widen(7, 3); got != 7 {
		t.Errorf("Widen(7, 3) = %d, want 7", got)
	}
}
