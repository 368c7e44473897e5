package wsapi

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/changecast/changecast/internal/xidsnap"
)

// This file holds the two opaque tokens of REST snapshots (docs/protocol.md,
// "Entities REST API"):
//
//   - a snapshot cursor ("s1.…"), which GET /api/v1/entities/{type} returns
//     with its last page and a WebSocket accepts as since=: the journal
//     cursor the seam is read from (the snapshot's mark), the cursor it
//     ends at (Snapshot.Complete), the snapshot's xmin, xmax and
//     transactions in progress, and the types it covers;
//   - a page token ("p1.…"), the after= of the next page: the REST
//     snapshot's id and the key of the last row sent.
//
// Both are sealed: prefix, then base64url(payload), ".", base64url(MAC),
// where the MAC is HMAC-SHA256 over prefix and payload, under a key derived
// from the server's token secret, truncated to 16 bytes. The MAC makes a
// token one this server issued; it is not what keeps a client within its
// rights: a snapshot cursor lets a client read only what since=<cursor>
// already lets it read (journaled changes after a cursor, of the types its
// token's scope allows, checked again on every change), its types must all
// be in the scope of the token that brings it back (403 otherwise), and a
// page token names a REST snapshot only its owner may continue. Payloads
// are parsed strictly (canonical varints, ascending lists, bounded sizes,
// no trailing bytes), so each value has exactly one encoding.

// Token prefixes (versions).
const (
	seamTokenPrefix = "s1."
	pageTokenPrefix = "p1."
)

// Bounds of the tokens' contents, well above what a server produces: a
// snapshot taken with thousands of transactions in progress still fits.
const (
	maxTokenLen      = 32 << 10 // characters of a token
	maxTokenXip      = 8192     // transactions in progress
	maxTokenTypes    = 256      // entity types covered
	maxTokenTypeName = 128      // bytes of one type name
	maxTokenKeyCols  = 32       // key columns
	maxTokenKeyBytes = 8 << 10  // bytes of a key, all columns together
	tokenMACBytes    = 16
	restSnapIDBytes  = 16
)

// seamCursor is a snapshot cursor's content.
type seamCursor struct {
	from  int64            // the seam is read after this cursor
	end   int64            // and up to this one; the stream continues after it
	vis   xidsnap.Snapshot // which journaled transactions the rows contain
	types []string         // ascending, distinct
}

// pageToken is a page token's content.
type pageToken struct {
	id  [restSnapIDBytes]byte // the REST snapshot
	key [][]byte              // the last row sent, one text value per key column
}

// tokenKey derives the tokens' MAC key from the token secret, so a token
// MAC can never be confused with a JWT signature.
func (a *Auth) tokenKey() []byte {
	m := hmac.New(sha256.New, a.secret)
	m.Write([]byte("changecast snapshot tokens v1"))
	return m.Sum(nil)
}

// sealToken returns prefix + base64url(payload) + "." + base64url(MAC).
func sealToken(key []byte, prefix string, payload []byte) string {
	return prefix + base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(tokenMAC(key, prefix, payload))
}

func tokenMAC(key []byte, prefix string, payload []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(prefix))
	m.Write(payload)
	return m.Sum(nil)[:tokenMACBytes]
}

// openToken checks a sealed token's form and MAC and returns its payload.
// what names the token in errors.
func openToken(key []byte, prefix, s, what string) ([]byte, error) {
	if len(s) > maxTokenLen {
		return nil, fmt.Errorf("%s is too long (%d characters, at most %d)", what, len(s), maxTokenLen)
	}
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok {
		return nil, fmt.Errorf("%s must start with %q", what, prefix)
	}
	p, m, ok := strings.Cut(rest, ".")
	if !ok {
		return nil, fmt.Errorf("%s is malformed", what)
	}
	// The decoder skips CR and LF even in strict mode; a token holding them
	// is not one this server issued, and accepting it would give one
	// payload many spellings.
	if strings.ContainsAny(rest, "\r\n") {
		return nil, fmt.Errorf("%s is malformed", what)
	}
	payload, err1 := base64.RawURLEncoding.Strict().DecodeString(p)
	mac, err2 := base64.RawURLEncoding.Strict().DecodeString(m)
	if err1 != nil || err2 != nil || len(mac) != tokenMACBytes {
		return nil, fmt.Errorf("%s is malformed", what)
	}
	if !hmac.Equal(mac, tokenMAC(key, prefix, payload)) {
		return nil, fmt.Errorf("%s was not issued by this server (or its token secret has changed)", what)
	}
	return payload, nil
}

// encode returns the payload of a snapshot cursor: uvarints from, end-from,
// xmin, xmax-xmin, the number of ids in progress and each one's distance
// from the previous (from xmin for the first), then the number of types
// and each as a length and its bytes.
func (sc seamCursor) encode() []byte {
	var b []byte
	b = binary.AppendUvarint(b, uint64(sc.from))
	b = binary.AppendUvarint(b, uint64(sc.end-sc.from))
	b = binary.AppendUvarint(b, sc.vis.Xmin)
	b = binary.AppendUvarint(b, sc.vis.Xmax-sc.vis.Xmin)
	b = binary.AppendUvarint(b, uint64(len(sc.vis.Xip)))
	prev := sc.vis.Xmin
	for _, x := range sc.vis.Xip {
		b = binary.AppendUvarint(b, x-prev)
		prev = x
	}
	b = binary.AppendUvarint(b, uint64(len(sc.types)))
	for _, t := range sc.types {
		b = binary.AppendUvarint(b, uint64(len(t)))
		b = append(b, t...)
	}
	return b
}

// decodeSeamCursor parses encode's form strictly.
func decodeSeamCursor(b []byte) (seamCursor, error) {
	var sc seamCursor
	r := tokenReader{b: b}
	from, span := r.uvarint(), r.uvarint()
	xmin, xspan := r.uvarint(), r.uvarint()
	if r.err != nil {
		return sc, r.err
	}
	if from > math.MaxInt64 || span > math.MaxInt64-from {
		return sc, errors.New("cursor out of range")
	}
	if xspan > math.MaxUint64-xmin {
		return sc, errors.New("xmax out of range")
	}
	sc.from, sc.end = int64(from), int64(from+span)
	sc.vis.Xmin, sc.vis.Xmax = xmin, xmin+xspan
	n := r.count(maxTokenXip, "transactions in progress")
	prev := xmin
	for i := 0; i < n && r.err == nil; i++ {
		d := r.uvarint()
		if r.err == nil && ((i > 0 && d == 0) || d >= sc.vis.Xmax-prev) {
			return sc, errors.New("transactions in progress not ascending within [xmin, xmax)")
		}
		prev += d
		sc.vis.Xip = append(sc.vis.Xip, prev)
	}
	nt := r.count(maxTokenTypes, "types")
	if r.err == nil && nt == 0 {
		return sc, errors.New("no type")
	}
	for i := 0; i < nt && r.err == nil; i++ {
		t := string(r.bytes(maxTokenTypeName, "type name"))
		if r.err == nil && (t == "" || (i > 0 && t <= sc.types[i-1])) {
			return sc, errors.New("types empty or not ascending")
		}
		sc.types = append(sc.types, t)
	}
	if err := r.end(); err != nil {
		return sc, err
	}
	return sc, nil
}

// encode returns a page token's payload: the id, the number of key values,
// then each as a length and its bytes.
func (pt pageToken) encode() []byte {
	b := append([]byte(nil), pt.id[:]...)
	b = binary.AppendUvarint(b, uint64(len(pt.key)))
	for _, v := range pt.key {
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	return b
}

// decodePageToken parses encode's form strictly.
func decodePageToken(b []byte) (pageToken, error) {
	var pt pageToken
	if len(b) < restSnapIDBytes {
		return pt, errors.New("too short")
	}
	copy(pt.id[:], b)
	r := tokenReader{b: b[restSnapIDBytes:]}
	n := r.count(maxTokenKeyCols, "key values")
	if r.err == nil && n == 0 {
		return pt, errors.New("no key value")
	}
	total := 0
	for i := 0; i < n && r.err == nil; i++ {
		v := r.bytes(maxTokenKeyBytes-total, "key")
		total += len(v)
		pt.key = append(pt.key, bytes.Clone(v))
	}
	if err := r.end(); err != nil {
		return pt, err
	}
	return pt, nil
}

// tokenReader reads a payload; the first error sticks.
type tokenReader struct {
	b   []byte
	err error
}

// uvarint reads a canonical (shortest) uvarint.
func (r *tokenReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 || n != len(binary.AppendUvarint(nil, v)) {
		r.err = errors.New("bad number")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// count reads a list length of at most limit.
func (r *tokenReader) count(limit int, what string) int {
	v := r.uvarint()
	if r.err == nil && v > uint64(limit) {
		r.err = fmt.Errorf("more than %d %s", limit, what)
		return 0
	}
	return int(v)
}

// bytes reads a length of at most limit and that many bytes.
func (r *tokenReader) bytes(limit int, what string) []byte {
	n := r.count(limit, "bytes of "+what)
	if r.err != nil {
		return nil
	}
	if n > len(r.b) {
		r.err = errors.New("truncated")
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

// end reports the first error, or trailing bytes.
func (r *tokenReader) end() error {
	if r.err == nil && len(r.b) > 0 {
		r.err = errors.New("trailing bytes")
	}
	return r.err
}

// parseSeamCursor opens and decodes a snapshot cursor. Its errors say what
// to do.
func parseSeamCursor(key []byte, s string) (seamCursor, error) {
	const what = "since: the snapshot cursor"
	payload, err := openToken(key, seamTokenPrefix, s, what)
	if err == nil {
		var sc seamCursor
		if sc, err = decodeSeamCursor(payload); err == nil {
			return sc, nil
		}
		err = fmt.Errorf("%s is malformed: %w", what, err)
	}
	return seamCursor{}, fmt.Errorf("%w; pass the \"cursor\" of the last page of GET /api/v1/entities/{type} unchanged, or a frame's numeric cursor", err)
}

// parsePageToken opens and decodes a page token.
func parsePageToken(key []byte, s string) (pageToken, error) {
	const what = "after: the page token"
	payload, err := openToken(key, pageTokenPrefix, s, what)
	if err == nil {
		var pt pageToken
		if pt, err = decodePageToken(payload); err == nil {
			return pt, nil
		}
		err = fmt.Errorf("%s is malformed: %w", what, err)
	}
	return pageToken{}, fmt.Errorf("%w; pass the \"next\" of the previous page unchanged", err)
}
