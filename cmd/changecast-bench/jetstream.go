package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// ---- 8. the journal on NATS JetStream (docs/scale-out.md) ----

// fleet is the changecast processes (and, with the JetStream journal,
// the NATS server) one measurement runs against.
type fleet struct {
	servers []*server // changecast processes: CPU, metrics, exits
	others  []int     // other processes whose CPU is reported apart (NATS)
}

// metricSum sums the metric over the servers that export it; it fails if
// none does.
func (f fleet) metricSum(ctx context.Context, name string) (float64, error) {
	var sum float64
	var found bool
	var errs []error
	for _, s := range f.servers {
		v, err := s.metric(ctx, name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		sum += v
		found = true
	}
	if !found {
		return 0, errors.Join(errs...)
	}
	return sum, nil
}

// cpu is the CPU-seconds the changecast processes used so far.
func (f fleet) cpu() float64 {
	var sum float64
	for _, s := range f.servers {
		sum += procCPU(s.pid(), false)
	}
	return sum
}

// otherCPU is the CPU-seconds the other processes used so far.
func (f fleet) otherCPU() float64 {
	var sum float64
	for _, pid := range f.others {
		sum += procCPU(pid, false)
	}
	return sum
}

// exited reports whether any changecast process has exited.
func (f fleet) exited() bool {
	for _, s := range f.servers {
		if s.exited() {
			return true
		}
	}
	return false
}

// failure adds the end of each server's log to err.
func (f fleet) failure(err error) error {
	for _, s := range f.servers {
		err = serverFailure(s, err)
	}
	return err
}

// natsProc is a nats-server child process with JetStream.
type natsProc struct {
	cmd  *exec.Cmd
	url  string
	done chan struct{}
}

// startNATS runs the nats-server at bin with JetStream, its store in dir,
// on a free loopback port, and waits until it accepts connections.
func startNATS(ctx context.Context, bin, dir, logPath string) (*natsProc, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start nats-server: %w", err)
	}
	cmd := exec.Command(bin, "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", dir, "-n", "bench")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start nats-server %s: %w", bin, err)
	}
	p := &natsProc{cmd: cmd, url: "nats://127.0.0.1:" + strconv.Itoa(port), done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	err = waitFor(ctx, 30*time.Second, func() (bool, error) {
		select {
		case <-p.done:
			return false, fmt.Errorf("nats-server exited; its log: %s\n%s", logPath, tailFile(logPath, 10))
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false, nil
		}
		c.Close()
		return true, nil
	})
	if err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

func (p *natsProc) pid() int { return p.cmd.Process.Pid }

// stop stops the server (SIGTERM, then SIGKILL after 10 s) and waits.
func (p *natsProc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// startRole runs changecast serve on db with the journal at natsURL in
// role, logging to <db>-<name>.log.
func (h *harness) startRole(ctx context.Context, db, url, slot, natsURL, role, name string) (*server, error) {
	args := append([]string{
		"--database-url", url, "--domain", "garm", "--listen", "127.0.0.1:0", "--data-dir", h.dataDir, "--slot", slot,
		"--journal-url", natsURL, "--role", role,
	}, h.serveArgs...)
	s, err := startServer(ctx, h.cfg.changecast, filepath.Join(h.dir, "logs", db+"-"+name+".log"), args...)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.servers[s] = true
	h.mu.Unlock()
	return s, nil
}

func (h *harness) jetStream(ctx context.Context) *section {
	c := h.cfg
	sec := &section{
		title: "8. The journal on NATS JetStream: drain, and fan-out through one and two gateways",
		setup: fmt.Sprintf("A nats-server (one node, JetStream on disk) on the same machine. (a) %s changes committed while nothing consumes (%s-row transactions), "+
			"then drained by changecast with the PostgreSQL journal and, from its own slot at the same point, by a watcher into the stream (each alone). "+
			"(b) A watcher and one gateway, then two: %d clients (half send-everything, half one type and operation) spread evenly over the gateways; "+
			"a writer commits instance, pool and job changes at %s/s in %d-row transactions for %s after %s of warm-up. %d run(s).",
			thousands(int64(c.jsChanges)), thousands(int64(c.txRows)), c.fanoutClients, thousands(int64(c.fanoutRate)), c.liveTxRows, c.duration, c.warmup, c.repeat),
	}
	for r := 1; r <= c.repeat && ctx.Err() == nil; r++ {
		err := h.withDatabase(ctx, scenarioJetStream, r, func(db, url string) error { return h.jetStreamOnce(ctx, sec, r, db, url) })
		if err != nil {
			sec.fail(ctx, r, err)
		}
	}
	sec.notes = append(sec.notes,
		"Drain rate: changes per second from the process's serving line until its journal head reaches N (changecast_journal_head of the PostgreSQL-journal server, changecast_journal_writer_head of the watcher), polled every 20 ms.",
		"Every process (PostgreSQL, NATS, the watcher, the gateways, the clients) shares the machine's cores; changecast CPU is the watcher's and the gateways' together, NATS CPU the nats-server's.",
		"Every client must receive exactly what its filter selects (checked), whichever gateway it is on.")
	return sec
}

func (h *harness) jetStreamOnce(ctx context.Context, sec *section, r int, db, url string) error {
	c := h.cfg
	ns, err := startNATS(ctx, h.cfg.natsServer, filepath.Join(h.dir, fmt.Sprintf("nats-%d", r)), filepath.Join(h.dir, "logs", db+"-nats.log"))
	if err != nil {
		return err
	}
	defer func() {
		ns.stop()
		_ = os.RemoveAll(filepath.Join(h.dir, fmt.Sprintf("nats-%d", r)))
	}()
	pgSlot, jsSlot := fmt.Sprintf("cc_jspg_%d", r), fmt.Sprintf("cc_js_%d", r)

	// First starts: migrations, the publication, both slots, the stream.
	s, err := h.startServer(ctx, db, url, pgSlot)
	if err != nil {
		return err
	}
	if err := h.stopServer(s); err != nil {
		return err
	}
	w0, err := h.startRole(ctx, db, url, jsSlot, ns.url, "watcher", "watcher")
	if err != nil {
		return err
	}
	if err := w0.waitReady(ctx); err != nil {
		return serverFailure(w0, err)
	}
	if err := h.stopServer(w0); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, benchIndexes); err != nil {
		return fmt.Errorf("create indexes: %w", err)
	}
	h.progress("jetstream %d/%d: committing %s changes", r, c.repeat, thousands(int64(c.jsChanges)))
	wr := &writer{conn: conn, tables: []table{instancesTable}, rows: c.txRows}
	for done := 0; done < c.jsChanges; {
		n := min(c.txRows, c.jsChanges-done)
		if _, _, _, err := wr.commit(ctx, n); err != nil {
			return err
		}
		done += n
	}
	conn.Close(context.Background())

	drain := func(label string, start func() (*server, error), metric string) error {
		h.progress("jetstream %d/%d: %s drains", r, c.repeat, label)
		s, err := start()
		if err != nil {
			return err
		}
		defer func() { _ = h.stopServer(s) }()
		f := fleet{servers: []*server{s}, others: []int{ns.pid()}}
		cc0, n0 := f.cpu(), f.otherCPU()
		var scraped time.Time
		err = waitFor(ctx, c.drainTimeout+time.Duration(c.jsChanges/1000)*time.Second, func() (bool, error) {
			if s.exited() {
				return false, errors.New("changecast exited")
			}
			if time.Since(scraped) < metricsPoll {
				return false, nil
			}
			scraped = time.Now()
			v, err := s.metric(ctx, metric)
			return err == nil && v >= float64(c.jsChanges), nil
		})
		if err != nil {
			return serverFailure(s, fmt.Errorf("%s: draining %s changes: %w", label, thousands(int64(c.jsChanges)), err))
		}
		secs := time.Since(s.ready).Seconds()
		sec.add("(a) "+label+" drain rate", unitRate, nil, float64(c.jsChanges)/secs)
		sec.add("(a) "+label+" changecast CPU", unitCores, nil, (f.cpu()-cc0)/secs)
		if label != "PostgreSQL journal" {
			sec.add("(a) "+label+" NATS CPU", unitCores, nil, (f.otherCPU()-n0)/secs)
		}
		return nil
	}
	if err := drain("PostgreSQL journal", func() (*server, error) { return h.startServer(ctx, db, url, pgSlot) }, "changecast_journal_head"); err != nil {
		return err
	}
	if err := drain("JetStream journal", func() (*server, error) {
		return h.startRole(ctx, db, url, jsSlot, ns.url, "watcher", "watcher")
	}, "changecast_journal_writer_head"); err != nil {
		return err
	}
	watcher, err := h.startRole(ctx, db, url, jsSlot, ns.url, "watcher", "watcher")
	if err != nil {
		return err
	}
	defer func() { _ = h.stopServer(watcher) }()
	if err := watcher.waitReady(ctx); err != nil {
		return serverFailure(watcher, err)
	}

	sub := func(i int) subscription {
		if i%2 == 0 {
			return sendEverything
		}
		k := (i / 2) % 9
		return narrow([]string{"instance", "pool", "job"}[k/3], operations[k%3])
	}
	var gateways []*server
	defer func() {
		for _, g := range gateways {
			_ = h.stopServer(g)
		}
	}()
	for k, n := range []int{1, 2} {
		for len(gateways) < n {
			g, err := h.startRole(ctx, db, url, jsSlot, ns.url, "gateway", fmt.Sprintf("gateway%d", len(gateways)+1))
			if err != nil {
				return err
			}
			gateways = append(gateways, g)
			if err := g.waitReady(ctx); err != nil {
				return serverFailure(g, err)
			}
		}
		rec := &recording{}
		h.progress("jetstream %d/%d: %d gateway(s): connecting %d clients", r, c.repeat, n, c.fanoutClients)
		var clients []*wsClient
		for gi, g := range gateways {
			// Clients gi, gi+n, gi+2n, ... go to gateway gi: both
			// kinds of subscription on each.
			per := (c.fanoutClients - gi + n - 1) / n
			cs, err := h.connectClients(ctx, g, per, func(i int) subscription { return sub(gi + i*n) }, rec, 32)
			if err != nil {
				closeClients(clients)
				return err
			}
			clients = append(clients, cs...)
		}
		h.progress("jetstream %d/%d: %d gateway(s): writing %s changes/s for %s", r, c.repeat, n, thousands(int64(c.fanoutRate)), c.warmup+c.duration)
		f := fleet{servers: append([]*server{watcher}, gateways...), others: []int{ns.pid()}}
		res, err := h.liveRun(ctx, f, url, clients, rec, []table{instancesTable, poolsTable, jobsTable}, c.fanoutRate, c.liveTxRows, int64(k+1)*100_000_000_000)
		closeClients(clients)
		if err != nil {
			return err
		}
		prefix := fmt.Sprintf("(b) %d gateway(s): ", n)
		sec.add(prefix+"deliveries", unitRate, nil, res.deliveries)
		latencyFigures(sec, prefix, res, nil, false)
		sec.add(prefix+"deliveries offered", unitRate, nil, res.offered)
		sec.add(prefix+"queue overflows", unitCount, nil, res.overflows)
		sec.add(prefix+"changecast CPU (watcher + gateways)", unitCores, nil, res.ccCores)
		sec.add(prefix+"NATS CPU", unitCores, nil, res.natsCores)
		sec.add(prefix+"PostgreSQL CPU", unitCores, nil, res.pgCores)
		sec.add(prefix+"harness CPU (clients, writer)", unitCores, nil, res.harnessCores)
		sec.add(prefix+"other processes' CPU (noise)", unitCores, nil, res.otherCores)
	}
	return nil
}
