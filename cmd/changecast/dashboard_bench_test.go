package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/performance"
	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"
)

// BenchmarkDashboard_1000PerSecond measures the dashboard in headless
// Chromium, open on the order table, while about 1,000 single-row
// transactions a second are committed to that table (the load of
// TestDashboard_SustainedLoad): frames per second, the longest gap between
// two animation frames, the share of the time spent in long tasks
// (PerformanceObserver 'longtask': tasks over 50 ms), the share of the
// time the page's main thread was busy (DevTools' Performance metrics),
// and the time to handle a click on a table row or a feed entry: from the
// release of the button to the end of the first frame after it, which
// shows the details of what was pressed. Each iteration is one run: 1 s
// of load to warm up, then 5 s measured, with a click (the button held
// 100 ms) every 0.7 s. It reports the median of the runs, and their
// minimum and maximum (-min, -max); make bench runs it 3 times
// (-benchtime 3x). It logs each run with the CPU each side took while it
// was measured (Chromium's processes by type, this process, which is
// changecast serve plus the load's client and the browser's driver,
// PostgreSQL's processes, and the rest of the machine) and the load
// average. Not part of make test (which runs no benchmarks);
// docs/benchmarks.md has its figures.
func BenchmarkDashboard_1000PerSecond(b *testing.B) {
	const (
		rate    = 1000
		warmup  = time.Second
		measure = 5 * time.Second
		clicks  = 6
	)
	url, sql, br := ordersDashboard(b, "cc_bench_dashboard")
	evalJS[chromedp.Void](br, pageMeter)
	br.do("enable the Performance domain", chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, performance.Enable, performance.EnableParams{})
		return err
	}))
	pids := benchPIDs(b, br, sql)

	var runs []dashboardRun
	for b.Loop() {
		i := len(runs)
		load := startOrderLoad(b, url, rate, int64(1000+i*1_000_000), uint64(i+1))
		time.Sleep(warmup) // the feed fills and the rate settles
		load1, cpu1 := loadAvg(b), sampleCPU(b, pids)
		received1 := evalJS[int](br, feedReceived)
		evalJS[chromedp.Void](br, `__ccMeter.start()`)
		began, main1 := time.Now(), br.mainThread()
		var handled []float64
		var missed []string
		for c := range clicks {
			time.Sleep(time.Until(began.Add(time.Duration(c+1) * measure / (clicks + 1))))
			if ms, miss := br.measuredClick(clickTarget(c)); miss != "" {
				missed = append(missed, miss)
			} else {
				handled = append(handled, ms)
			}
		}
		time.Sleep(time.Until(began.Add(measure)))
		m := evalJS[pageMeasure](br, `__ccMeter.stop()`)
		main2, measured := br.mainThread(), time.Since(began) // longer than measure if the clicks were slow
		cpu2, load2 := sampleCPU(b, pids), loadAvg(b)
		received2 := evalJS[int](br, feedReceived)
		offered := load.rate()
		load.stop()
		if load.err != nil {
			b.Fatalf("load: %v", load.err)
		}
		r := m.run()
		r.offered, r.received = offered, float64(received2-received1)/measured.Seconds()
		r.cpu, r.load = cpu2.minus(cpu1), [2]string{load1, load2}
		r.clicks, r.missed = handled, missed
		if len(handled) > 0 {
			r.click = median(handled)
		}
		for k, v := range main2 {
			r.main[k] = (v - main1[k]) / (main2["Timestamp"] - main1["Timestamp"])
		}
		runs = append(runs, r)
		b.Logf("run %d: %v", i+1, r)
		// Before the next run: caught up, as TestDashboard_SustainedLoad
		// checks in full.
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) { // polling interval
			head := journalHead(b, sql)
			if evalJS[string](br, `document.getElementById('st-cursor').textContent`) == head {
				break
			}
			if time.Now().After(deadline) {
				br.fail("the page did not catch up with the journal's head %s", head)
			}
		}
	}
	b.StopTimer()
	report := func(unit string, f func(dashboardRun) float64, spread bool) {
		v := make([]float64, len(runs))
		for i, r := range runs {
			v[i] = f(r)
		}
		slices.Sort(v)
		b.ReportMetric(v[len(v)/2], unit)
		if spread {
			b.ReportMetric(v[0], unit+"-min")
			b.ReportMetric(v[len(v)-1], unit+"-max")
		}
	}
	report("frames/s", func(r dashboardRun) float64 { return r.fps }, true)
	report("max-frame-gap-ms", func(r dashboardRun) float64 { return r.maxGap }, true)
	report("longtask-%", func(r dashboardRun) float64 { return r.longTask * 100 }, true)
	report("click-ms", func(r dashboardRun) float64 { return r.click }, true)
	report("main-thread-busy-%", func(r dashboardRun) float64 { return r.main["TaskDuration"] * 100 }, true)
	report("clicks-missed", func(r dashboardRun) float64 { return float64(len(r.missed)) }, false)
	report("changes/s", func(r dashboardRun) float64 { return r.received }, false)
	report("chromium-cores", func(r dashboardRun) float64 { return r.cpu.chromium }, false)
	report("test-process-cores", func(r dashboardRun) float64 { return r.cpu.self }, false)
	report("postgres-cores", func(r dashboardRun) float64 { return r.cpu.postgres }, false)
	report("other-cores", func(r dashboardRun) float64 { return r.cpu.others() }, false)
	if p := br.consoleProblems(); len(p) > 0 {
		b.Fatalf("the browser reported problems: %v", p)
	}
}

// pageMeter is the benchmark's instrument, evaluated in the page (as
// DevTools evaluates, so the page's Content-Security-Policy is unchanged
// and the page itself has no hook): a requestAnimationFrame loop noting
// each frame's time, a PerformanceObserver for long tasks, and, for each
// click, the time from the button's release (the pointerup event's time
// stamp; the page picks on that or on the click right after it) to the
// end of the first frame after it (a task posted from that frame's
// animation-frame callback runs once the frame is rendered), with what
// the details pane then says.
const pageMeter = `(() => {
	const m = window.__ccMeter = {on: false, frames: [], tasks: [], clicks: []};
	const loop = (t) => { if (m.on) m.frames.push(t); requestAnimationFrame(loop); };
	requestAnimationFrame(loop);
	new PerformanceObserver((list) => {
		for (const e of list.getEntries()) m.tasks.push([e.startTime, e.duration]);
	}).observe({type: 'longtask'});
	addEventListener('pointerup', (e) => {
		if (!m.on) return;
		const t0 = e.timeStamp;
		requestAnimationFrame(() => {
			const ch = new MessageChannel();
			ch.port1.onmessage = () => m.clicks.push({ms: performance.now() - t0, what: document.getElementById('details-what').textContent});
			ch.port2.postMessage(0);
		});
	}, true);
	m.start = () => { m.frames = []; m.tasks = []; m.clicks = []; m.t0 = performance.now(); m.on = true; };
	m.stop = () => {
		m.on = false;
		const t1 = performance.now();
		const tasks = m.tasks.map(([s, d]) => Math.max(0, Math.min(s + d, t1) - Math.max(s, m.t0))).filter((d) => d > 0);
		return {start: m.t0, end: t1, frames: m.frames, longTaskMs: tasks.reduce((a, b) => a + b, 0), longTasks: tasks.length};
	};
})()`

// pageMeasure is what the instrument returns for one run.
type pageMeasure struct {
	Start, End float64   // ms, performance.now()
	Frames     []float64 // each animation frame's time
	LongTaskMs float64   `json:"longTaskMs"`
	LongTasks  int       `json:"longTasks"`
}

// dashboardRun is one run's figures.
type dashboardRun struct {
	fps, maxGap, longTask float64 // frames/s; ms; share of the time
	longTasks             int
	click                 float64   // median ms of the clicks handled
	clicks                []float64 // ms, each click handled
	missed                []string  // clicks whose details did not show
	offered, received     float64   // transactions/s committed; changes/s the page received
	cpu                   cpuUse
	load                  [2]string          // /proc/loadavg at the start and the end
	main                  map[string]float64 // the page's main thread: share of the time in tasks, script, style, layout
}

func (m pageMeasure) run() dashboardRun {
	r := dashboardRun{main: map[string]float64{}}
	span := m.End - m.Start
	if n := len(m.Frames); n > 1 {
		r.fps = float64(n-1) / (m.Frames[n-1] - m.Frames[0]) * 1000
		// Gaps include the window's edges: a frame that was late when the
		// measurement began or ended counts.
		last := m.Start
		for _, f := range append(m.Frames, m.End) {
			r.maxGap = max(r.maxGap, f-last)
			last = f
		}
	} else {
		r.maxGap = span
	}
	r.longTask = m.LongTaskMs / span
	r.longTasks = m.LongTasks
	return r
}

// median is the middle value of v (of an even count, the upper one).
func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	return s[len(s)/2]
}

func (r dashboardRun) String() string {
	clicks := make([]string, len(r.clicks))
	for i, c := range r.clicks {
		clicks[i] = fmt.Sprintf("%.0f", c)
	}
	return fmt.Sprintf("%.0f transactions/s committed, %.0f changes/s received by the page; %.1f frames/s, longest frame gap %.1f ms, long tasks %.1f %% of the time (%d), click %.1f ms (each: %s ms; missed: %q); the page's main thread busy %.0f %% of the time (script %.0f %%, style %.0f %%, layout %.0f %%); CPU (cores): Chromium %.2f (%s), this process %.2f, PostgreSQL %.2f, others %.2f (machine %.2f) of %d; load average %s -> %s",
		r.offered, r.received, r.fps, r.maxGap, r.longTask*100, r.longTasks, r.click, strings.Join(clicks, ", "), r.missed,
		r.main["TaskDuration"]*100, r.main["ScriptDuration"]*100, r.main["RecalcStyleDuration"]*100, r.main["LayoutDuration"]*100,
		r.cpu.chromium, r.cpu.chromiumTypes(), r.cpu.self, r.cpu.postgres, r.cpu.others(), r.cpu.machine, r.cpu.cores, r.load[0], r.load[1])
}

// mainThread reads the page's cumulative durations (seconds) from the
// DevTools Performance domain: TaskDuration (every task of the page's main
// thread), ScriptDuration, RecalcStyleDuration, LayoutDuration, and
// Timestamp, the time they were read.
func (b *browser) mainThread() map[string]float64 {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	res, err := chromedp.Run(ctx, chromedp.Action[performance.GetMetricsResult](func(ctx context.Context, t *chromedp.Target) (performance.GetMetricsResult, error) {
		return cdp.Call(ctx, t, performance.GetMetrics, cdp.Empty{})
	}))
	if err != nil {
		b.fail("Performance.getMetrics: %v", err)
	}
	out := map[string]float64{}
	for _, m := range res.Metrics {
		switch m.Name {
		case "Timestamp", "TaskDuration", "ScriptDuration", "RecalcStyleDuration", "LayoutDuration":
			out[m.Name] = m.Value
		}
	}
	return out
}

// clickTarget is the c-th point of the benchmark's cycle of clicks
// (humanClick): table rows 2 to 4 and the feed's 3rd, 6th and 9th entries.
func clickTarget(c int) string {
	if c%2 == 0 {
		return middleOf(`#table-spacer .vrow[data-key="` + strconv.Itoa(2+c/2) + `"]`)
	}
	return `(f => { f.scrollTop = 0; return ` + middleOf(`#feed li:nth-child(`+strconv.Itoa(3*(c/2+1))+`) button`) + `; })(document.getElementById('feed'))`
}

// measuredClick clicks at as a person would (browser.humanClick) and
// returns the time the instrument measured for the click, or what went
// wrong: the frame after the release did not show the details of what was
// pressed.
func (b *browser) measuredClick(at string) (ms float64, miss string) {
	b.t.Helper()
	before := evalJS[int](b, `__ccMeter.clicks.length`)
	what, key := b.humanClick(at)
	want := "row of order " + key
	if what == "feed" {
		want = " — cursor " + key + ", "
	}
	type click struct {
		Ms   float64 `json:"ms"`
		What string  `json:"what"`
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) { // polling interval
		if clicks := evalJS[[]click](b, `__ccMeter.clicks`); len(clicks) > before {
			if got := clicks[before].What; !strings.Contains(got, want) {
				return 0, fmt.Sprintf("%s %s: the details said %q", what, key, got)
			}
			return clicks[before].Ms, ""
		}
	}
	return 0, fmt.Sprintf("%s %s: no frame after the release within 10 s", what, key)
}

// rate is the transactions committed per second so far.
func (l *orderLoad) rate() float64 {
	return float64(l.n.Load()) / time.Since(l.started).Seconds()
}

// benchProcs are the processes whose CPU the benchmark reports.
type benchProcs struct{ chromium, postmaster int }

func benchPIDs(t testing.TB, b *browser, sql *pgx.Conn) benchProcs {
	t.Helper()
	var p benchProcs
	if proc := chromedp.FromContext(b.ctx).Browser.Process(); proc != nil {
		p.chromium = proc.Pid
	}
	var backend int
	if err := sql.QueryRow(context.Background(), `SELECT pg_backend_pid()`).Scan(&backend); err != nil {
		t.Fatal(err)
	}
	st, err := readStat(backend)
	if err != nil {
		t.Fatalf("PostgreSQL backend %d: %v", backend, err)
	}
	p.postmaster = st.ppid
	return p
}

// cpuUse is CPU time in seconds (a sample), or in cores (a difference).
type cpuUse struct {
	wall                              float64
	self, chromium, postgres, machine float64
	byType                            map[string]float64 // Chromium's, by process type (--type=; "browser" without)
	cores                             int
}

// others is the CPU the rest of the machine took.
func (c cpuUse) others() float64 {
	return max(0, c.machine-c.self-c.chromium-c.postgres)
}

func (c cpuUse) minus(o cpuUse) cpuUse {
	d := c.wall - o.wall
	r := cpuUse{wall: d, cores: c.cores, byType: map[string]float64{},
		self: (c.self - o.self) / d, chromium: (c.chromium - o.chromium) / d,
		postgres: (c.postgres - o.postgres) / d, machine: (c.machine - o.machine) / d}
	for k, v := range c.byType {
		r.byType[k] = (v - o.byType[k]) / d
	}
	return r
}

// chromiumTypes formats the Chromium CPU by process type.
func (c cpuUse) chromiumTypes() string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(c.byType)) {
		out = append(out, fmt.Sprintf("%s %.2f", k, c.byType[k]))
	}
	return strings.Join(out, ", ")
}

type procStat struct {
	ppid int
	cpu  float64 // user + system, seconds
}

// clockTick is USER_HZ, the unit of /proc's CPU times (100 on Linux).
const clockTick = 100

func readStat(pid int) (procStat, error) {
	return parseStat(fmt.Sprintf("/proc/%d/stat", pid))
}

func readTaskStat(pid, tid int) (procStat, error) {
	return parseStat(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
}

func parseStat(path string) (procStat, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return procStat{}, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]) // after "pid (comm)": state, ppid, ...
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("%s: %q", path, s)
	}
	ppid, _ := strconv.Atoi(f[1])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return procStat{ppid: ppid, cpu: (ut + st) / clockTick}, nil
}

// sampleCPU reads the CPU time so far of this process, of the browser's
// and PostgreSQL's process trees, and of the whole machine.
func sampleCPU(t testing.TB, p benchProcs) cpuUse {
	t.Helper()
	stats := map[int]procStat{}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, _ := strconv.Atoi(filepath.Base(d))
		if st, err := readStat(pid); err == nil {
			stats[pid] = st
		}
	}
	// under reports whether pid is root or descends from it.
	under := func(pid, root int) bool {
		for i := 0; pid > 1 && i < 64; i++ {
			if pid == root {
				return true
			}
			pid = stats[pid].ppid
		}
		return false
	}
	c := cpuUse{wall: float64(time.Now().UnixNano()) / 1e9, byType: map[string]float64{}}
	self := os.Getpid()
	for pid, st := range stats {
		switch {
		case pid == self:
			c.self = st.cpu
		case p.chromium != 0 && under(pid, p.chromium):
			c.chromium += st.cpu
			typ := "browser"
			if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
				// Chromium rewrites its title: arguments apart by spaces, not NULs.
				for _, a := range strings.Fields(strings.ReplaceAll(string(cmd), "\x00", " ")) {
					if v, ok := strings.CutPrefix(a, "--type="); ok {
						typ = v
					}
				}
			}
			c.byType[typ] += st.cpu
			if typ == "renderer" {
				// Its main thread (the task with the process's id),
				// where the page's JavaScript, style, layout and paint
				// run.
				if ts, err := readTaskStat(pid, pid); err == nil {
					c.byType["renderer main thread"] += ts.cpu
				}
			}
		case under(pid, p.postmaster):
			c.postgres += st.cpu
		}
	}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	for i, f := range strings.Fields(line)[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest time is in user already
			continue
		}
		v, _ := strconv.ParseFloat(f, 64)
		c.machine += v / clockTick
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "cpu") && !strings.HasPrefix(l, "cpu ") {
			c.cores++
		}
	}
	return c
}

// loadAvg is the 1-, 5- and 15-minute load averages.
func loadAvg(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}
