package client

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// CursorStore persists a subscription's position, so that a restarted
// program resumes where the previous one stopped. A Subscription calls Load
// once, in Dial, and Save after each change its Handler accepted (and when
// the server reports that the position moved past changes the filter did
// not select), always from one goroutine.
type CursorStore interface {
	// Load returns the saved cursor; ok is false when none was saved
	// yet. An error fails Dial.
	Load() (cursor int64, ok bool, err error)
	// Save records cursor: everything up to it has been processed. An
	// error is logged and the subscription carries on (the next Save
	// records a later cursor; a restart in between re-delivers, never
	// loses).
	Save(cursor int64) error
}

// FileCursorStore returns a CursorStore keeping the cursor in the file at
// path, as a decimal number and a newline. Save writes a temporary file in
// the same directory, syncs it and renames it over path, so a crash leaves
// either the old cursor or the new one, never a torn file. A missing file
// means no cursor yet.
func FileCursorStore(path string) CursorStore { return fileStore{path: path} }

type fileStore struct{ path string }

func (s fileStore) Load() (int64, bool, error) {
	b, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read cursor file: %w", err)
	}
	text := strings.TrimSpace(string(b))
	n, err := strconv.ParseInt(text, 10, 64)
	if err != nil || n < 0 {
		return 0, false, fmt.Errorf("cursor file %s does not hold a cursor (a non-negative integer); delete it to start from the newest change", s.path)
	}
	return n, true, nil
}

func (s fileStore) Save(cursor int64) (err error) {
	dir, base := filepath.Split(s.path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("save cursor: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(f.Name())
		}
	}()
	if _, err := f.WriteString(strconv.FormatInt(cursor, 10) + "\n"); err != nil {
		f.Close()
		return fmt.Errorf("save cursor: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("save cursor: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save cursor: %w", err)
	}
	if err := os.Rename(f.Name(), s.path); err != nil {
		return fmt.Errorf("save cursor: %w", err)
	}
	// Make the rename itself durable. Not every platform can sync a
	// directory; the rename is still atomic there.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// CursorFuncs returns a CursorStore calling load and save, e.g. to keep the
// cursor in the same database transaction as the work it records. A nil
// load means nothing was saved; a nil save discards cursors.
func CursorFuncs(load func() (int64, bool, error), save func(int64) error) CursorStore {
	return funcStore{load: load, save: save}
}

type funcStore struct {
	load func() (int64, bool, error)
	save func(int64) error
}

func (s funcStore) Load() (int64, bool, error) {
	if s.load == nil {
		return 0, false, nil
	}
	return s.load()
}

func (s funcStore) Save(cursor int64) error {
	if s.save == nil {
		return nil
	}
	return s.save(cursor)
}
