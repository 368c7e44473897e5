// Package natstest starts real NATS servers with JetStream in the test
// process, on loopback: one server, or a cluster of three. Only tests
// link it.
package natstest

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Server starts one NATS server with JetStream, stopped at the end of the
// test, and returns it.
func Server(t testing.TB) *server.Server {
	t.Helper()
	opts := &server.Options{
		ServerName: "n1",
		Host:       "127.0.0.1",
		Port:       -1,
		JetStream:  true,
		StoreDir:   t.TempDir(),
		NoLog:      true,
		NoSigs:     true,
	}
	s := start(t, opts)
	t.Cleanup(s.Shutdown)
	return s
}

// URL returns a client URL of s.
func URL(s *server.Server) string { return s.ClientURL() }

// Cluster is a JetStream cluster of three servers on loopback.
type Cluster struct {
	t       testing.TB
	Servers []*server.Server
	opts    []*server.Options
}

// NewCluster starts three clustered NATS servers with JetStream, stopped
// at the end of the test, and waits until JetStream has a meta leader.
func NewCluster(t testing.TB) *Cluster {
	t.Helper()
	const n = 3
	clientPorts, routePorts := freePorts(t, n), freePorts(t, n)
	var routes []*url.URL
	for _, p := range routePorts {
		routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", p)})
	}
	c := &Cluster{t: t}
	for i := range n {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1",
			Port:       clientPorts[i],
			JetStream:  true,
			StoreDir:   t.TempDir(),
			NoLog:      true,
			NoSigs:     true,
			Cluster: server.ClusterOpts{
				Name: "changecast-test",
				Host: "127.0.0.1",
				Port: routePorts[i],
			},
			Routes: routes,
		}
		c.opts = append(c.opts, opts)
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatalf("nats server %d: %v", i+1, err)
		}
		go s.Start()
		c.Servers = append(c.Servers, s)
	}
	t.Cleanup(func() {
		for _, s := range c.Servers {
			if s != nil {
				s.Shutdown()
			}
		}
	})
	for _, s := range c.Servers {
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatalf("nats server %s did not start", s.Name())
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, s := range c.Servers {
			if s.JetStreamIsLeader() {
				return c
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("the NATS cluster elected no JetStream meta leader")
	return nil
}

// URL returns the client URLs of the running servers, comma-separated.
func (c *Cluster) URL() string {
	var us []string
	for i, s := range c.Servers {
		if s != nil {
			us = append(us, fmt.Sprintf("nats://127.0.0.1:%d", c.opts[i].Port))
		}
	}
	return strings.Join(us, ",")
}

// Stop shuts server i down.
func (c *Cluster) Stop(i int) {
	c.Servers[i].Shutdown()
	c.Servers[i].WaitForShutdown()
	c.Servers[i] = nil
}

// Restart starts server i again with its store.
func (c *Cluster) Restart(i int) {
	s, err := server.NewServer(c.opts[i])
	if err != nil {
		c.t.Fatalf("restart nats server %d: %v", i+1, err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		c.t.Fatalf("nats server %d did not restart", i+1)
	}
	c.Servers[i] = s
}

func start(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server did not start")
	}
	return s
}

func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}
