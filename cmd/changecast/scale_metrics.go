package main

import (
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/changecast/changecast/natsjournal"
	"github.com/changecast/changecast/pipeline"
	"github.com/changecast/changecast/wsapi"
)

// natsMetricsHandler serves /metrics of a process whose journal is in
// JetStream: the watcher's metrics when it is one (p set), the gateway's
// when it is one (hub set), and the stream's. No label or value comes
// from row data.
func natsMetricsHandler(p *pipeline.Pipeline, hub *wsapi.Server, nj *natsjournal.Journal, active *atomic.Bool, replica *readReplica) http.Handler {
	reg := prometheus.NewRegistry()
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "changecast", Name: name, Help: help}, f))
	}
	counter := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "changecast", Name: name, Help: help}, f))
	}
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	if p != nil {
		gauge("watcher_active", "1 while this watcher is the active one (holds the slot and writes the stream), 0 while it stands by.", func() float64 { return b(active.Load()) })
		gauge("watcher_standby", "1 while this watcher waits for the active one to stop.", func() float64 { return b(p.Stats().Standby) })
		gauge("replication_streaming", "1 while the watcher is streaming from the slot.", func() float64 { return b(p.Streaming()) })
		gauge("replication_lag_bytes", "Bytes of WAL between the server's WAL end and the position confirmed to the slot.", func() float64 {
			return float64(p.Stats().Replication.LagBytes)
		})
		gauge("replication_confirmed_lsn", "The LSN last confirmed to the slot, as a number.", func() float64 {
			return float64(p.Stats().Replication.Confirmed)
		})
		counter("pipeline_restarts_total", "Times the replication pipeline was rebuilt after a failure.", func() float64 { return float64(p.Stats().Restarts) })
		gauge("journal_writer_head", "The highest cursor this watcher wrote or loaded.", func() float64 { return float64(p.Stats().JournalHead) })
		counter("sanitize_stripped_by_name_total", "Columns stripped only because their name looks secret (not marked or declared): review them with 'changecast secrets'.", func() float64 {
			return float64(p.SanitizeStats().NameColumns)
		})
	}
	if hub != nil {
		gauge("journal_head", "The highest cursor delivered to this gateway's clients.", func() float64 { return float64(hub.Head()) })
		gauge("stream_readable", "1 while this gateway follows the journal stream and the stream answers.", func() float64 { return b(nj.Readable()) })
		gauge("stream_lag_messages", "Messages in the stream this gateway has not yet delivered (stream last sequence at the last check minus delivered).", func() float64 {
			st := nj.TailStats()
			return float64(max(int64(st.StreamLast)-st.Delivered, 0))
		})
		gauge("stream_consumer_pending", "Messages the gateway's stream consumer had yet to receive, at its last message.", func() float64 {
			return float64(nj.TailStats().Pending)
		})
		gauge("ws_clients", "Connected WebSocket clients.", func() float64 { return float64(hub.Clients()) })
		counter("ws_overflows_total", "Client queues that overflowed (the client then catches up from the journal).", func() float64 { return float64(hub.Overflows()) })
		counter("ws_catchups_total", "Catch-up episodes: a client served from the journal.", func() float64 { return float64(hub.CatchUps()) })
		gauge("ws_catching_up", "Clients currently served from the journal rather than live.", func() float64 { return float64(hub.CatchingUp()) })
		counter("login_throttled_total", "Login attempts refused with 429.", func() float64 { return float64(hub.LoginsThrottled()) })
	}
	if replica != nil {
		gauge("read_replica_fresh", "1 while the read replica is within --read-max-lag of the primary (users and events are read from it), 0 while they are read from the primary.", func() float64 { return b(!replica.lagging()) })
		counter("read_replica_reads_total", "Reads of users and events the read replica answered.", func() float64 { return float64(replica.fromReplica.Load()) })
		counter("read_primary_reads_total", "Reads of users and events the primary answered although a read replica is configured (it lagged, had not replayed a fence yet, or failed).", func() float64 { return float64(replica.fromPrimary.Load()) })
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
