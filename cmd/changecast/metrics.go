package main

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/changecast/changecast/pipeline"
	"github.com/changecast/changecast/wsapi"
)

// metricsHandler serves /metrics. Every metric is read from the running
// parts when scraped, and none carries a label taken from row data, so
// nothing a table holds can reach a scrape.
func metricsHandler(p *pipeline.Pipeline, hub *wsapi.Server) http.Handler {
	reg := prometheus.NewRegistry()
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "changecast", Name: name, Help: help}, f))
	}
	counter := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "changecast", Name: name, Help: help}, f))
	}
	gauge("replication_streaming", "1 while the watcher is streaming from the slot.", func() float64 {
		if p.Streaming() {
			return 1
		}
		return 0
	})
	gauge("replication_lag_bytes", "Bytes of WAL between the server's WAL end and the position confirmed to the slot.", func() float64 {
		return float64(p.Stats().Replication.LagBytes)
	})
	gauge("replication_confirmed_lsn", "The LSN last confirmed to the slot, as a number.", func() float64 {
		return float64(p.Stats().Replication.Confirmed)
	})
	counter("pipeline_restarts_total", "Times the replication pipeline was rebuilt after a failure.", func() float64 {
		return float64(p.Stats().Restarts)
	})
	gauge("journal_head", "The journal's highest cursor.", func() float64 { return float64(hub.Head()) })
	gauge("journal_appender_high_water_changes", "Most changes the journal appender held in memory at once.", func() float64 {
		return float64(p.Stats().WriterHighWater)
	})
	gauge("ws_clients", "Connected WebSocket clients.", func() float64 { return float64(hub.Clients()) })
	counter("ws_overflows_total", "Client queues that overflowed (the client then catches up from the journal).", func() float64 {
		return float64(hub.Overflows())
	})
	counter("ws_catchups_total", "Catch-up episodes: a client served from the journal after an overflow, an oversized commit or a resume.", func() float64 {
		return float64(hub.CatchUps())
	})
	gauge("ws_catching_up", "Clients currently served from the journal rather than live.", func() float64 {
		return float64(hub.CatchingUp())
	})
	gauge("ws_queue_high_water_frames", "Most frames any client has had queued at once (bounded by the queue length).", func() float64 {
		return float64(hub.QueueHighWater())
	})
	counter("login_throttled_total", "Login attempts refused with 429: too many recent failures for their username or address.", func() float64 {
		return float64(hub.LoginsThrottled())
	})
	counter("sanitize_stripped_by_name_total", "Columns stripped only because their name looks secret (not marked or declared): review them with 'changecast secrets'.", func() float64 {
		return float64(p.SanitizeStats().NameColumns)
	})
	counter("sanitize_json_rewritten_total", "json values rewritten because a secret-named key was removed.", func() float64 {
		return float64(p.SanitizeStats().JSONRewritten)
	})
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
