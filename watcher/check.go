package watcher

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Check verifies, on an ordinary connection, what Run needs: wal_level is
// logical, the role is superuser or has REPLICATION, the publication
// exists, and either the slot exists as a pgoutput slot of this database
// and no other process is using it, or a replication slot is free for it;
// and a WAL sender is free. It returns the first problem as a
// *PrerequisiteError whose message says what to do (errors.Is with ErrWALLevel,
// ErrReplicationPrivilege, ErrPublicationMissing, ErrSlotMismatch,
// ErrSlotInUse, ErrNoFreeSlot, ErrNoFreeWALSender), or a connection error.
//
// Check is a preflight: called while this Watcher's own Run is streaming it
// reports ErrSlotInUse. It uses its own short-lived ordinary connection,
// never Run's replication connection.
func (w *Watcher) Check(ctx context.Context) error {
	cc, err := pgx.ParseConfig(w.cfg.URL)
	if err != nil {
		return fmt.Errorf("database URL: %w", err)
	}
	delete(cc.RuntimeParams, "replication") // an ordinary session, whatever the URL says
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", w.redactedURL(), err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	var walLevel string
	if err := conn.QueryRow(ctx, "SELECT current_setting('wal_level')").Scan(&walLevel); err != nil {
		return fmt.Errorf("read wal_level: %w", err)
	}
	if walLevel != "logical" {
		return prerequisite(ErrWALLevel, fmt.Sprintf("wal_level is %s; set wal_level=logical in postgresql.conf and restart PostgreSQL", walLevel))
	}

	var role string
	var canReplicate bool
	if err := conn.QueryRow(ctx, "SELECT rolname, rolreplication OR rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user").Scan(&role, &canReplicate); err != nil {
		return fmt.Errorf("read role attributes: %w", err)
	}
	if !canReplicate {
		return prerequisite(ErrReplicationPrivilege, fmt.Sprintf("role %q may not use replication; run ALTER ROLE %s REPLICATION as a superuser", role, pgx.Identifier{role}.Sanitize()))
	}

	var pubExists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1)", w.cfg.Publication).Scan(&pubExists); err != nil {
		return fmt.Errorf("look up publication: %w", err)
	}
	if !pubExists {
		return publicationMissing(w.cfg.Publication)
	}

	var (
		found                    bool
		plugin, slotType, slotDB string
		temporary, active        bool
		activePID                int32
		currentDB                string
		maxSlots, usedSlots      int
		maxSenders, usedSenders  int
	)
	err = conn.QueryRow(ctx, `
		SELECT s.slot_name IS NOT NULL, coalesce(s.plugin, ''), coalesce(s.slot_type, ''), coalesce(s.database, ''),
		       coalesce(s.temporary, false), coalesce(s.active, false), coalesce(s.active_pid, 0),
		       current_database(),
		       current_setting('max_replication_slots')::int, (SELECT count(*) FROM pg_catalog.pg_replication_slots),
		       current_setting('max_wal_senders')::int, (SELECT count(*) FROM pg_catalog.pg_stat_replication)
		FROM (SELECT 1) AS one
		LEFT JOIN pg_catalog.pg_replication_slots s ON s.slot_name = $1`, w.cfg.Slot).Scan(
		&found, &plugin, &slotType, &slotDB, &temporary, &active, &activePID, &currentDB,
		&maxSlots, &usedSlots, &maxSenders, &usedSenders)
	if err != nil {
		return fmt.Errorf("look up replication slot: %w", err)
	}
	if found {
		if err := slotFits(w.cfg.Slot, plugin, slotType, slotDB, temporary, currentDB); err != nil {
			return err
		}
		if active {
			return slotInUse(w.cfg.Slot, fmt.Sprintf("replication slot %q is active for PID %d", w.cfg.Slot, activePID))
		}
	} else if usedSlots >= maxSlots {
		return prerequisite(ErrNoFreeSlot, fmt.Sprintf("replication slot %q does not exist and all %d replication slots are taken; raise max_replication_slots in postgresql.conf and restart PostgreSQL, or drop an unused slot with SELECT pg_drop_replication_slot('name')", w.cfg.Slot, maxSlots))
	}
	if usedSenders >= maxSenders {
		return prerequisite(ErrNoFreeWALSender, fmt.Sprintf("all %d WAL senders are busy; raise max_wal_senders in postgresql.conf and restart PostgreSQL", maxSenders))
	}
	return nil
}

func publicationMissing(name string) error {
	return prerequisite(ErrPublicationMissing, fmt.Sprintf("publication %q does not exist in this database; create it before starting the watcher (changecast serve does), e.g. CREATE PUBLICATION %s FOR TABLE ...", name, name))
}

func slotInUse(slot, detail string) error {
	return prerequisite(ErrSlotInUse, fmt.Sprintf("%s; another process is streaming from it: stop that changecast (or pg_recvlogical), or give this one another slot name", detail))
}

// slotFits checks that an existing slot is one the watcher can stream from.
func slotFits(slot, plugin, slotType, slotDB string, temporary bool, currentDB string) error {
	drop := fmt.Sprintf("drop it with SELECT pg_drop_replication_slot('%s') or configure another slot name", slot)
	switch {
	case slotType != "logical":
		return prerequisite(ErrSlotMismatch, fmt.Sprintf("replication slot %q is a %s slot, not a logical one; %s", slot, slotType, drop))
	case plugin != "pgoutput":
		return prerequisite(ErrSlotMismatch, fmt.Sprintf("replication slot %q uses output plugin %q, not pgoutput; %s", slot, plugin, drop))
	case slotDB != currentDB:
		return prerequisite(ErrSlotMismatch, fmt.Sprintf("replication slot %q belongs to database %q, not %q; configure another slot name", slot, slotDB, currentDB))
	case temporary:
		return prerequisite(ErrSlotMismatch, fmt.Sprintf("replication slot %q is temporary and would lose changes committed while disconnected; configure another slot name", slot))
	}
	return nil
}
