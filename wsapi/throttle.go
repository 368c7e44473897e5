package wsapi

import (
	"crypto/sha256"
	"net"
	"net/netip"
	"sync"
	"time"
)

// This file holds the login throttle (issue 17): failed logins are counted
// per username and per remote address; past a free allowance within
// LoginWindow, each further attempt for that key must wait a lock-out that
// doubles with every failure, up to LoginMaxDelay. A locked-out attempt is
// refused with 429 before any password comparison, so guessing costs the
// guesser time and the server no bcrypt.

// Defaults of the login throttle in Config.
const (
	DefaultLoginFailuresPerUser = 5
	DefaultLoginFailuresPerAddr = 20
	DefaultLoginWindow          = 15 * time.Minute
	DefaultLoginMaxDelay        = 5 * time.Minute
)

// loginBaseDelay is the first lock-out once a key has used its free
// failures; every further failure doubles it, up to LoginMaxDelay.
const loginBaseDelay = time.Second

// maxLoginKeys bounds the throttle's table: at about 100 bytes an entry,
// a few MiB however many names and addresses are tried.
const maxLoginKeys = 50_000

// limitKind says what a throttle key counts failures of.
type limitKind uint8

const (
	limitUser limitKind = iota
	limitAddr
	numLimitKinds
)

// limitKey names a username or an address by its SHA-256: every entry has
// the same small size however long the name sent (it may be a password
// typed into the wrong field, which is then not kept either).
type limitKey struct {
	kind limitKind
	sum  [sha256.Size]byte
}

func newLimitKey(kind limitKind, s string) limitKey {
	return limitKey{kind: kind, sum: sha256.Sum256([]byte(s))}
}

// limitEntry is one key's recent failures.
type limitEntry struct {
	failures    int       // failed attempts since the entry was (re)started
	last        time.Time // the last failure
	lockedUntil time.Time // attempts before this are refused
}

// expiry is when the entry is forgotten: a whole window after its last
// failure or the end of its lock-out, whichever is later, so a lock-out
// longer than the window does not give the free allowance back the moment
// it ends.
func (e *limitEntry) expiry(window time.Duration) time.Time {
	t := e.last
	if e.lockedUntil.After(t) {
		t = e.lockedUntil
	}
	return t.Add(window)
}

// loginLimiter counts failed logins per key and says how long a key must
// wait. It starts no goroutine: expired entries are dropped when looked up,
// and all of them when the table is full. Safe for concurrent use.
type loginLimiter struct {
	now      func() time.Time
	allow    [numLimitKinds]int // free failures per key; negative: kind not tracked
	window   time.Duration
	maxDelay time.Duration
	maxKeys  int

	mu struct {
		sync.Mutex
		entries map[limitKey]*limitEntry
	}
}

func newLoginLimiter(perUser, perAddr int, window, maxDelay time.Duration, now func() time.Time) *loginLimiter {
	l := &loginLimiter{
		now:      now,
		allow:    [numLimitKinds]int{limitUser: perUser, limitAddr: perAddr},
		window:   window,
		maxDelay: maxDelay,
		maxKeys:  maxLoginKeys,
	}
	l.mu.entries = map[limitKey]*limitEntry{}
	return l
}

// keys returns the tracked keys of an attempt.
func (l *loginLimiter) keys(user, addr string) []limitKey {
	ks := make([]limitKey, 0, numLimitKinds)
	if l.allow[limitUser] >= 0 {
		ks = append(ks, newLimitKey(limitUser, user))
	}
	if l.allow[limitAddr] >= 0 {
		ks = append(ks, newLimitKey(limitAddr, addr))
	}
	return ks
}

// wait returns how long an attempt for user from addr must still wait: 0
// when it may go ahead, else the longest lock-out among its keys.
func (l *loginLimiter) wait(user, addr string) time.Duration {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	var d time.Duration
	for _, k := range l.keys(user, addr) {
		e := l.lookupLocked(k, now)
		if e != nil && now.Before(e.lockedUntil) {
			d = max(d, e.lockedUntil.Sub(now))
		}
	}
	return d
}

// failed records a failed attempt for user from addr, and returns the
// longest lock-out it started (0 if none).
func (l *loginLimiter) failed(user, addr string) time.Duration {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	var locked time.Duration
	for _, k := range l.keys(user, addr) {
		e := l.lookupLocked(k, now)
		if e == nil {
			l.makeRoomLocked(now)
			e = &limitEntry{}
			l.mu.entries[k] = e
		}
		e.failures++
		e.last = now
		if over := e.failures - l.allow[k.kind]; over >= 0 {
			d := l.delay(over)
			e.lockedUntil = now.Add(d)
			locked = max(locked, d)
		}
	}
	return locked
}

// succeeded forgets user's failures. The address's are kept: otherwise
// whoever holds one account could clear its address's count between
// guesses at the others.
func (l *loginLimiter) succeeded(user string) {
	if l.allow[limitUser] < 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.mu.entries, newLimitKey(limitUser, user))
}

// delay is the lock-out after over failures beyond the free ones (0 for
// the last free failure): loginBaseDelay doubled over times, at most
// maxDelay.
func (l *loginLimiter) delay(over int) time.Duration {
	if over >= 30 { // 2^30 s is past any sensible cap; avoid overflow
		return l.maxDelay
	}
	return min(loginBaseDelay<<over, l.maxDelay)
}

// lookupLocked returns k's entry, dropping it if it has expired.
func (l *loginLimiter) lookupLocked(k limitKey, now time.Time) *limitEntry {
	e := l.mu.entries[k]
	if e != nil && !now.Before(e.expiry(l.window)) {
		delete(l.mu.entries, k)
		return nil
	}
	return e
}

// makeRoomLocked makes room for one entry: when the table is full it drops
// every expired entry and, if none had, the one that would expire first
// (the least recently active: evicting it forgives the least).
func (l *loginLimiter) makeRoomLocked(now time.Time) {
	if len(l.mu.entries) < l.maxKeys {
		return
	}
	var oldest limitKey
	var oldestAt time.Time
	for k, e := range l.mu.entries {
		exp := e.expiry(l.window)
		if !now.Before(exp) {
			delete(l.mu.entries, k)
			continue
		}
		if oldestAt.IsZero() || exp.Before(oldestAt) {
			oldest, oldestAt = k, exp
		}
	}
	if len(l.mu.entries) >= l.maxKeys {
		delete(l.mu.entries, oldest)
	}
}

// size returns the number of tracked keys.
func (l *loginLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.mu.entries)
}

// remoteKey returns the address a login is counted against: the host of
// r.RemoteAddr (a proxy's X-Forwarded-For is not trusted), with IPv6
// addresses grouped by /64, the block one host usually holds whole.
func remoteKey(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.WithZone("").Prefix(64)
		return p.String()
	}
	return ip.String()
}
