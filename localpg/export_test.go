package localpg

import (
	"net"
	"net/url"
	"strconv"
)

// Accessors only the tests use: they check TCP authentication through the
// pass file and read the server log, which the package's callers reach only
// through PsqlCommand and the errors of Start.

// TCPURL returns the URL of database db over TCP on 127.0.0.1, with
// scram-sha-256 authentication through PassFile (the URL holds no password).
func (l *Cluster) TCPURL(db string) string {
	q := url.Values{}
	q.Set("passfile", l.passPath)
	u := url.URL{Scheme: "postgres", User: url.User(l.cfg.User), Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(l.Port())), Path: "/" + db, RawQuery: q.Encode()}
	return u.String()
}

// PassFile returns the path of the pgpass file (mode 0600, owned by the
// calling user) that holds the superuser's password for TCP connections.
func (l *Cluster) PassFile() string { return l.passPath }

// LogPath returns the server log's path.
func (l *Cluster) LogPath() string { return l.logPath }
