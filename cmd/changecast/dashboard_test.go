package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/jackc/pgx/v5"

	"github.com/changecast/changecast/store/storetest"
	"github.com/changecast/changecast/wire"
)

// The dashboard's end-to-end test: headless Chromium (Debian's chromium,
// driven with chromedp) against a real serve and PostgreSQL, watching the
// shop schema of testdata/config/orders.yaml.

// chromiumHint is what a machine without Chromium needs.
const chromiumHint = "install Chromium (Debian/Ubuntu: apt-get install -y chromium; .ci/run does it) or set CHANGECAST_CHROMIUM to its binary"

// chromiumPath finds the browser the test drives.
func chromiumPath(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("CHANGECAST_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatalf("no Chromium found: %s", chromiumHint)
	return ""
}

// screenshotDir is where a test saves its screenshots, its artifacts: a
// directory named after the test in $CHANGECAST_SCREENSHOTS (.ci/run sets
// it), or else in <temp dir>/changecast-screenshots. It is emptied when the
// test starts and kept after it ends (a test's own temporary directory
// would be removed, and with it the screenshot of a failure).
func screenshotDir(t testing.TB) string {
	base := os.Getenv("CHANGECAST_SCREENSHOTS")
	if base == "" {
		base = filepath.Join(os.TempDir(), "changecast-screenshots")
	}
	d := filepath.Join(base, strings.NewReplacer("/", "_", string(filepath.Separator), "_").Replace(t.Name()))
	if err := os.RemoveAll(d); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestScreenshotDir_KeptAfterTheTest: screenshots outlive the test that
// took them, so they are there to look at, as artifacts, when it failed.
func TestScreenshotDir_KeptAfterTheTest(t *testing.T) {
	for _, env := range []string{"", t.TempDir()} {
		t.Setenv("CHANGECAST_SCREENSHOTS", env)
		var shot string
		t.Run("shoot", func(t *testing.T) {
			shot = filepath.Join(screenshotDir(t), "01-failure.png")
			if err := os.WriteFile(shot, []byte("png"), 0o644); err != nil {
				t.Fatal(err)
			}
		})
		if env != "" && !strings.HasPrefix(shot, env+string(filepath.Separator)) {
			t.Errorf("CHANGECAST_SCREENSHOTS=%s: screenshot saved as %s", env, shot)
		}
		if _, err := os.Stat(shot); err != nil {
			t.Errorf("CHANGECAST_SCREENSHOTS=%q: the screenshot went with its test: %v", env, err)
		}
		_ = os.RemoveAll(filepath.Dir(shot))
	}
}

// browser is one headless Chromium tab on the dashboard.
type browser struct {
	t    testing.TB
	ctx  context.Context
	base string // http://addr
	dir  string // screenshots
	shot int

	mu       sync.Mutex
	problems []string // console errors, exceptions, CSP refusals
}

func newBrowser(t testing.TB, base string) *browser {
	t.Helper()
	path := chromiumPath(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // root in CI and containers: Chromium's sandbox needs user namespaces
		chromedp.DisableGPU,
		chromedp.WindowSize(1400, 1100),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	b := &browser{t: t, ctx: ctx, base: base, dir: screenshotDir(t)}
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	started := make(chan error, 1)
	go func() {
		_, err := chromedp.Run(ctx, chromedp.Evaluate[int](`1`))
		started <- err
	}()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("cannot start Chromium (%s): %v; %s", path, err, chromiumHint)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("Chromium (%s) did not start within 60s; %s", path, chromiumHint)
	}
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			// A 401 is how the page learns it is signed out, or that a
			// password was wrong: expected, not a problem.
			if strings.Contains(m.Text, "status of 401") {
				continue
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleException {
				b.mu.Lock()
				b.problems = append(b.problems, fmt.Sprintf("%s: %s (%s:%d)", m.Type, m.Text, m.URL, m.Line))
				b.mu.Unlock()
			}
		}
	}()
	return b
}

// do runs actions with a deadline.
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.fail("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression into out.
func evalJS[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.fail("evaluate %s: %v", expr, err)
	}
	return v
}

// wait polls a JavaScript expression until it is true.
func (b *browser) wait(what, expr string, within time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`!!(`+expr+`)`))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			b.fail("%s: not within %s (%s; last error %v)", what, within, expr, err)
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not synchronisation
	}
}

// screenshot saves the viewport as NN-name.png and returns its path.
func (b *browser) screenshot(name string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
		return ""
	}
	b.shot++
	p := filepath.Join(b.dir, fmt.Sprintf("%02d-%s.png", b.shot, name))
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Errorf("save screenshot: %v", err)
	}
	return p
}

// fail saves a screenshot and the page's state, then fails the test.
func (b *browser) fail(format string, args ...any) {
	b.t.Helper()
	p := b.screenshot("failure")
	state, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`[document.getElementById('statusbar')?.innerText, document.getElementById('signin-message')?.innerText, document.getElementById('notice')?.innerText].join(' | ')`))
	b.t.Fatalf(format+"\npage: %s\nscreenshot: %s\nconsole: %v", append(args, state, p, b.consoleProblems())...)
}

func (b *browser) consoleProblems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.problems)
}

// feedItems returns the feed's entries, newest first.
type feedItem struct {
	Cursor string `json:"cursor"`
	Op     string `json:"op"`
	Type   string `json:"type"`
	ID     string `json:"id"`
	Text   string `json:"text"`
}

func (b *browser) feed() []feedItem {
	b.t.Helper()
	return evalJS[[]feedItem](b, `[...document.querySelectorAll('#feed li')].map(li => ({cursor: li.dataset.cursor, op: li.dataset.op, type: li.dataset.type, id: li.dataset.id, text: li.innerText}))`)
}

// feedHas is a JavaScript test for a feed entry.
func feedHas(op, typ, id string) string {
	return fmt.Sprintf(`document.querySelector('#feed li[data-op=%q][data-type=%q][data-id=%q]')`, op, typ, id)
}

// rowKeys is the JavaScript list of the table's row keys (those not greyed
// out as deleted).
const rowKeys = `[...document.querySelectorAll('#table-spacer .vrow:not(.deleted)')].map(r => r.dataset.key).sort((a, b) => a - b).join(',')`

func cell(key, col string) string {
	return fmt.Sprintf(`document.querySelector('#table-spacer .vrow[data-key=%q] [data-col=%q]')?.textContent`, key, col)
}

// flashing is a JavaScript test for a table cell highlighted as changed.
func flashing(key, col string) string {
	return fmt.Sprintf(`document.querySelector('#table-spacer .vrow[data-key=%q] [data-col=%q]')?.classList.contains('changed')`, key, col)
}

// TestDashboard_Browser drives the dashboard in headless Chromium against a
// real serve and PostgreSQL: sign-in (a wrong password first), the table
// from a snapshot, inserts, updates and deletes reflected in the table and
// the feed, a filter, a system event marked read, a reload that resumes
// with nothing missed (checked against the journal), a session that ends,
// and sign-out. It fails, never skips, without Chromium.
func TestDashboard_Browser(t *testing.T) {
	url := storetest.NewDatabase(t)
	sql := connect(t, url)
	exec1(t, sql, shopSchema)
	exec1(t, sql, `INSERT INTO customers (id, email, api_key) VALUES (1, 'ada@example.com', 'CANARY-api-key')`)
	exec1(t, sql, `INSERT INTO orders (id, customer_id, total, status, internal_note) VALUES
		(1, 1, 10.00, 'new', 'CANARY-note'), (2, 1, 20.00, 'new', NULL), (3, 1, 30.00, 'new', NULL)`)
	const pw = "correct horse battery"
	addUser(t, url, "ada", pw, true)
	addUser(t, url, "bob", "bob's password", false)
	srv, _, dataDir := readyServerAt(t, url, "cc_dashboard", func(cfg *serveConfig) {
		cfg.configPath = "../../testdata/config/orders.yaml"
	})
	base := "http://" + srv.addr
	b := newBrowser(t, base)
	began := time.Now()

	// The page and its headers.
	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") {
		t.Fatalf("Content-Security-Policy %q", csp)
	}

	// Sign in: a wrong password gets a clear message, the right one the app.
	b.do("open the page", chromedp.Navigate(base+"/"))
	b.wait("the sign-in form", `!document.getElementById('signin').hidden`, 10*time.Second)
	b.do("sign in with a wrong password",
		chromedp.SendKeys(chromedp.CSS("#login-username"), "ada"),
		chromedp.SendKeys(chromedp.CSS("#login-password"), "wrong password"),
		chromedp.Click(chromedp.CSS("#login-submit")))
	b.wait("the wrong-password message", `document.getElementById('signin-message').textContent.includes('Wrong username or password')`, 10*time.Second)
	b.screenshot("wrong-password")
	b.do("sign in",
		chromedp.SendKeys(chromedp.CSS("#login-password"), pw),
		chromedp.Click(chromedp.CSS("#login-submit")))
	b.wait("the app after sign-in", `!document.getElementById('app').hidden && document.getElementById('who-name').textContent === 'ada'`, 10*time.Second)

	// The table of orders, from the snapshot.
	b.do("choose the order table", chromedp.SetValue(chromedp.CSS("#table-type"), "order"))
	evalJS[chromedp.Void](b, `document.getElementById('table-type').dispatchEvent(new Event('change'))`)
	b.wait("the snapshot's rows", rowKeys+` === '1,2,3' && document.getElementById('st-table').textContent.startsWith('live')`, 15*time.Second)
	if got := evalJS[string](b, cell("1", "status")); got != "new" {
		t.Fatalf("order 1 status %q, want new", got)
	}
	if body := evalJS[string](b, `document.body.innerText`); strings.Contains(body, "CANARY") {
		t.Fatalf("a secret column reached the page")
	}
	b.wait("the stream connected", `document.getElementById('st-conn').dataset.state === 'open'`, 10*time.Second)

	// Insert, update, delete: each in the table and the feed.
	exec1(t, sql, `INSERT INTO orders (id, customer_id, total, status) VALUES (4, 1, 40.00, 'new')`)
	b.wait("the insert", rowKeys+` === '1,2,3,4' && `+feedHas("create", "order", "4"), 10*time.Second)
	b.wait("the status bar's row count", `document.getElementById('st-table').textContent === 'live, 4 rows'`, 5*time.Second)
	exec1(t, sql, `UPDATE orders SET status = 'paid' WHERE id = 1`)
	// The changed cell flashes (for 1.5 s), the others do not.
	b.wait("the update in the table, its changed cell flashing", cell("1", "status")+` === 'paid' && `+flashing("1", "status")+` && !`+flashing("1", "customer_id")+` && !`+flashing("1", "total"), 10*time.Second)
	b.wait("the update in the feed", feedHas("update", "order", "1")+`?.innerText.includes('status: new → paid')`, 10*time.Second)
	exec1(t, sql, `DELETE FROM orders WHERE id = 2`)
	b.wait("the delete", rowKeys+` === '1,3,4' && `+feedHas("delete", "order", "2"), 10*time.Second)
	// The details pane shows the payload and the previous row.
	b.do("open the update's details", chromedp.Click(chromedp.CSS(`#feed li[data-op="update"][data-id="1"] button`)))
	b.wait("the details", `document.getElementById('details-previous').textContent.includes('"status": "new"') && document.getElementById('details-payload').textContent.includes('"status": "paid"')`, 5*time.Second)
	b.screenshot("live")

	// A filter: only order updates whose status is shipped.
	before := evalJS[string](b, `document.querySelector('#feed li')?.dataset.cursor || '0'`)
	b.do("set the filter",
		chromedp.Click(chromedp.CSS("#f-everything")),
		chromedp.Click(chromedp.CSS(`#filter-rows tr[data-type="order"] input[data-op="update"]`)),
		chromedp.SendKeys(chromedp.CSS(`#filter-rows tr[data-type="order"] input[data-match]`), "status=shipped"),
		chromedp.Click(chromedp.CSS("#f-apply")))
	b.wait("the filter applied", `document.getElementById('filter-preview').textContent.includes('"shipped"') && document.getElementById('st-table').textContent.startsWith('live')`, 10*time.Second)
	exec1(t, sql, `UPDATE orders SET status = 'refunded' WHERE id = 1`)
	exec1(t, sql, `INSERT INTO orders (id, customer_id, total, status) VALUES (5, 1, 50.00, 'shipped')`)
	exec1(t, sql, `INSERT INTO customers (id, email) VALUES (2, 'bob@example.com')`)
	exec1(t, sql, `UPDATE orders SET status = 'shipped' WHERE id = 3`)
	exec1(t, sql, `UPDATE orders SET status = 'shipped' WHERE id = 4`)
	b.wait("the matching updates", feedHas("update", "order", "4")+` && `+feedHas("update", "order", "3"), 10*time.Second)
	var after []string
	for _, it := range b.feed() {
		if cursorAfter(it.Cursor, before) {
			after = append(after, it.Op+" "+it.Type+" "+it.ID)
		}
	}
	if want := []string{"update order 4", "update order 3"}; !slices.Equal(after, want) {
		t.Fatalf("feed after the filter: %q, want only %q", after, want)
	}
	// The table follows the filter's match: the shipped orders.
	b.wait("the table of shipped orders", rowKeys+` === '3,4,5'`, 10*time.Second)
	b.screenshot("filtered")

	// A system event: replication started, unread; mark it read.
	b.wait("a system event", `document.querySelector('#events li[data-status="unread"]')`, 10*time.Second)
	evID := evalJS[string](b, `document.querySelector('#events li[data-status="unread"]').dataset.id`)
	b.do("mark it read", chromedp.Click(chromedp.CSS(fmt.Sprintf(`#events button[data-id=%q]`, evID))))
	b.wait("the event read", fmt.Sprintf(`document.querySelector('#events li[data-id=%q]')?.dataset.status === 'read'`, evID), 10*time.Second)
	var status string
	if err := sql.QueryRow(context.Background(), `SELECT status FROM changecast.events WHERE id = $1`, evID).Scan(&status); err != nil || status != "read" {
		t.Fatalf("event %s in the database: status %q, %v", evID, status, err)
	}

	// Everything again, then leave the page, write while it is away, and
	// come back: the feed shows every change after its stored cursor.
	b.do("clear the filter", chromedp.Click(chromedp.CSS("#f-everything")), chromedp.Click(chromedp.CSS("#f-apply")))
	exec1(t, sql, `UPDATE orders SET total = 31.00 WHERE id = 3`)
	b.wait("the change after the filter cleared", feedHas("update", "order", "3")+`?.innerText.includes('total: 30.00 → 31.00')`, 10*time.Second)
	b.wait("the cursor stored", `localStorage.getItem('changecast.cursor') === document.getElementById('st-cursor').textContent`, 5*time.Second)
	cursor := evalJS[string](b, `localStorage.getItem('changecast.cursor')`)
	if stored := evalJS[[]string](b, `Object.keys(localStorage)`); !slices.Equal(stored, []string{"changecast.cursor"}) {
		t.Fatalf("localStorage holds %q, want the cursor only", stored)
	}
	b.do("leave the page", chromedp.Navigate("about:blank"))
	// Events for one user each (changecast raises such retention_gap
	// events; written here straight to the table the events REST API
	// lists): the page lists ada's as hers, with its doc link.
	for _, u := range []string{"ada", "bob"} {
		exec1(t, sql, fmt.Sprintf(`INSERT INTO changecast.events (id, user_id, category, action, severity, description, metadata, operation_id)
			SELECT gen_random_uuid(), id::uuid, 'journal', 'retention_gap', 'warning', 'resumed from a removed cursor (%[1]s)',
				'{"doc": "https://changecast.example/docs/events#retention_gap-%[1]s"}', gen_random_uuid()
			FROM changecast.users WHERE username = '%[1]s'`, u))
	}
	exec1(t, sql, `INSERT INTO orders (id, customer_id, total, status) VALUES (6, 1, 60.00, 'new'), (7, 1, 70.00, 'new')`)
	exec1(t, sql, `UPDATE orders SET status = 'paid' WHERE id = 6`)
	exec1(t, sql, `DELETE FROM orders WHERE id = 7`)
	exec1(t, sql, `UPDATE customers SET email = 'ada@example.org' WHERE id = 1`)
	var missed []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) { // polling interval
		if missed = journalAfter(t, sql, cursor); len(missed) >= 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("journal after cursor %s: %v, want the 5 changes made while away", cursor, missed)
		}
	}
	b.do("come back", chromedp.Navigate(base+"/"))
	b.wait("the app again", `!document.getElementById('app').hidden`, 10*time.Second)
	last := missed[len(missed)-1]
	b.wait("the changes made while away", fmt.Sprintf(`document.querySelector('#feed li[data-cursor=%q]')`, last), 15*time.Second)
	// Resumed from its cursor, the page catches up to the journal head of
	// system-state, and the status bar says so with both.
	b.wait("caught up", `document.getElementById('st-mode').textContent === 'caught up' && /^\d+$/.test(document.getElementById('st-head').textContent) && /B$/.test(document.getElementById('st-lag').textContent)`, 15*time.Second)
	var got []string
	for _, it := range b.feed() {
		if cursorAfter(it.Cursor, cursor) {
			got = append(got, it.Cursor)
		}
	}
	slices.Reverse(got) // oldest first, as the journal
	if !slices.Equal(got, missed) {
		t.Fatalf("after the reload the feed shows cursors %v after %s; the journal has %v", got, cursor, missed)
	}
	b.wait("ada's event", `document.querySelector('#events li[data-severity="warning"] .mine')`, 10*time.Second)
	type eventItem struct {
		Desc   string `json:"desc"`
		Mine   string `json:"mine"`
		Doc    string `json:"doc"`
		Colour string `json:"colour"`
	}
	evs := evalJS[[]eventItem](b, `[...document.querySelectorAll('#events li[data-severity="warning"]')].map(li => ({
		desc: li.querySelector('.desc').textContent, mine: li.querySelector('.mine')?.textContent || '',
		doc: li.querySelector('a')?.href || '', colour: getComputedStyle(li.querySelector('.sev')).backgroundColor}))`)
	info := evalJS[string](b, `getComputedStyle(document.querySelector('#events li[data-severity="informational"] .sev')).backgroundColor`)
	if len(evs) != 2 {
		t.Fatalf("warning events listed: %+v, want ada's and bob's (ada is an admin)", evs)
	}
	for _, ev := range evs {
		ada := strings.Contains(ev.Desc, "(ada)")
		if want := map[bool]string{true: " · for you"}[ada]; ev.Mine != want {
			t.Errorf("event %q marked %q, want %q", ev.Desc, ev.Mine, want)
		}
		if want := "https://changecast.example/docs/events#retention_gap-" + map[bool]string{true: "ada", false: "bob"}[ada]; ev.Doc != want {
			t.Errorf("event %q links to %q, want %q", ev.Desc, ev.Doc, want)
		}
		if ev.Colour == info || ev.Colour == "" || ev.Colour == "rgba(0, 0, 0, 0)" {
			t.Errorf("a warning is coloured %q, an informational event %q", ev.Colour, info)
		}
	}
	b.wait("the table after the reload", rowKeys+` === '1,3,4,5,6' && document.getElementById('st-table').textContent.startsWith('live')`, 15*time.Second)
	b.wait("the chart's data", `Chart.getChart(document.getElementById('chart'))?.data.datasets.some(d => d.label === 'order' && d.data.some(p => p.y > 0))`, 10*time.Second)
	b.screenshot("resumed")

	// Keyboard: a feed entry and a table row open their details with Enter;
	// the arrow keys move between rows.
	b.do("Enter on a feed entry", chromedp.SendKeys(chromedp.CSS(`#feed li[data-op="delete"][data-id="7"] button`), kb.Enter))
	b.wait("its details", `document.getElementById('details-what').textContent.startsWith('delete of order 7')`, 5*time.Second)
	b.do("arrow down from row 1, then Enter",
		chromedp.Focus(chromedp.CSS(`#table-spacer .vrow[data-key="1"]`)),
		chromedp.SendKeys(chromedp.CSS(`#table-spacer .vrow[data-key="1"]`), kb.ArrowDown))
	b.wait("row 3 focused", `document.activeElement?.dataset.key === '3'`, 5*time.Second)
	b.do("Enter on row 3", chromedp.SendKeys(chromedp.CSS(`#table-spacer .vrow[data-key="3"]`), kb.Enter))
	b.wait("row 3's details", `document.getElementById('details-what').textContent === 'row of order 3' && document.getElementById('details-payload').textContent.includes('"total": 31.00')`, 5*time.Second)

	// A burst: 3,000 rows in one transaction. The table holds them all
	// with only the rows in view in the DOM, and the feed stays capped.
	exec1(t, sql, `INSERT INTO orders (id, customer_id, total, status) SELECT g, 1, g, 'new' FROM generate_series(100, 3099) g`)
	b.wait("the burst in the table", `document.getElementById('table-count').textContent === 'order: 3005'`, 30*time.Second)
	b.wait("the burst's last change in the feed", feedHas("create", "order", "3099"), 10*time.Second)
	if n := evalJS[int](b, `document.querySelectorAll('#table-spacer .vrow').length`); n > 60 {
		t.Fatalf("the table has %d rows in the DOM for 3,005 rows: not virtualized", n)
	}
	if n := evalJS[int](b, `document.querySelectorAll('#feed li').length`); n != 200 {
		t.Fatalf("the feed has %d entries, want its cap of 200", n)
	}
	b.screenshot("burst")
	// Phone width: one column, nothing wider than the screen.
	b.do("phone width", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	b.wait("one column", `document.getElementById('feed-pane').getBoundingClientRect().left < 40 && document.documentElement.scrollWidth <= 390`, 5*time.Second)
	b.screenshot("phone")
	b.do("desktop width", chromedp.ResetViewport())

	// Pause closes the sockets; resume replays what was committed meanwhile.
	b.do("pause", chromedp.Click(chromedp.CSS("#pause")))
	b.wait("paused", `document.getElementById('st-conn').dataset.state === 'paused' && document.getElementById('pause').getAttribute('aria-pressed') === 'true'`, 5*time.Second)
	exec1(t, sql, `INSERT INTO orders (id, customer_id, total, status) VALUES (8, 1, 80.00, 'new')`)
	b.do("resume", chromedp.Click(chromedp.CSS("#pause")))
	b.wait("the change made while paused", feedHas("create", "order", "8")+` && document.getElementById('st-conn').dataset.state === 'open'`, 10*time.Second)

	// The server restarts: the page says so, counts down to its next
	// attempt, reconnects and shows what was committed while it was down.
	// Failed connections are expected from here on; nothing else is.
	if p := b.consoleProblems(); len(p) > 0 {
		t.Fatalf("the browser reported problems (CSP refusals, exceptions, errors): %v", p)
	}
	srv.stop(t)
	b.wait("the countdown", `document.getElementById('st-conn').dataset.state === 'waiting' && /reconnecting in \d+ s/.test(document.getElementById('st-retry').textContent)`, 10*time.Second)
	b.screenshot("reconnecting")
	exec1(t, sql, `INSERT INTO orders (id, customer_id, total, status) VALUES (9, 1, 90.00, 'new')`)
	srv, _, _ = readyServerAt(t, url, "cc_dashboard", func(cfg *serveConfig) {
		cfg.configPath = "../../testdata/config/orders.yaml"
		cfg.listen = srv.addr
		cfg.dataDir = dataDir
	})
	b.wait("the change made while the server was down", feedHas("create", "order", "9")+` && document.getElementById('st-conn').dataset.state === 'open'`, 45*time.Second)

	// Sign out: the form again, the cookie cleared, the cursor forgotten.
	b.do("sign out", chromedp.Click(chromedp.CSS("#signout")))
	b.wait("the signed-out form", `!document.getElementById('signin').hidden && document.getElementById('signin-message').textContent === 'Signed out.'`, 10*time.Second)
	code, err := chromedp.Run(b.ctx, chromedp.Evaluate[int](`fetch('/api/v1/auth/session').then(r => r.status)`, chromedp.EvalAwaitPromise))
	if err != nil || code != http.StatusUnauthorized {
		t.Fatalf("session after sign-out: %d, %v; want 401", code, err)
	}
	if n := evalJS[int](b, `localStorage.length + sessionStorage.length`); n != 0 {
		t.Fatalf("storage after sign-out holds %d items", n)
	}

	// A pasted token is exchanged for the cookie and kept nowhere; when it
	// expires the server ends the stream with token-expired and the page
	// says so.
	var out, errb strings.Builder
	if err := run(context.Background(), []string{"token", "--data-dir", dataDir, "--user", "ops", "--role", "admin", "--ttl", "4s"}, &out, &errb); err != nil {
		t.Fatalf("token: %v (%s)", err, errb.String())
	}
	b.do("sign in with a token",
		chromedp.Click(chromedp.CSS(".token-signin summary")),
		chromedp.SendKeys(chromedp.CSS("#token-input"), strings.TrimSpace(out.String())),
		chromedp.Click(chromedp.CSS("#token-submit")))
	b.wait("the app after the token", `!document.getElementById('app').hidden && document.getElementById('who-name').textContent === 'ops' && document.getElementById('st-conn').dataset.state === 'open'`, 10*time.Second)
	if leak := evalJS[bool](b, `document.getElementById('token-input').value !== '' || Object.values(localStorage).concat(Object.values(sessionStorage)).some(v => v.includes('eyJ'))`); leak {
		t.Fatalf("the pasted token stayed in the page or its storage")
	}
	b.wait("the session-ended message", `!document.getElementById('signin').hidden && document.getElementById('signin-message').textContent.includes('session ended: token expired')`, 15*time.Second)
	b.screenshot("session-ended")

	// The page loads after the session ended: it says so, whether the
	// browser still sends a cookie the server refuses (here the expired
	// token) or has dropped it (the page still has its cursor); a first
	// visit gets the form alone.
	b.do("the expired token as the cookie", setCookie(base, wire.CookieName, strings.TrimSpace(out.String())))
	b.do("load the page", chromedp.Navigate(base+"/"))
	b.wait("the expired-session message", `!document.getElementById('signin').hidden && document.getElementById('signin-message').textContent === 'Your session has expired or was ended (token expired). Sign in again.'`, 10*time.Second)
	b.do("the cookie dropped", clearCookies)
	evalJS[chromedp.Void](b, `localStorage.setItem('changecast.cursor', '1')`)
	b.do("load the page", chromedp.Navigate(base+"/"))
	b.wait("the expired-session message", `!document.getElementById('signin').hidden && document.getElementById('signin-message').textContent === 'Your session has expired. Sign in again.'`, 10*time.Second)
	evalJS[chromedp.Void](b, `localStorage.clear()`)
	b.do("load the page", chromedp.Navigate(base+"/"))
	b.wait("the sign-in form alone", `!document.getElementById('signin').hidden && document.getElementById('signin-message').hidden`, 10*time.Second)
	var problems []string
	for _, p := range b.consoleProblems() {
		if strings.Contains(p, "WebSocket connection to") || strings.Contains(p, "ERR_CONNECTION_REFUSED") {
			continue
		}
		problems = append(problems, p)
	}
	if len(problems) > 0 {
		t.Fatalf("the browser reported problems (CSP refusals, exceptions, errors): %v", problems)
	}
	t.Logf("browser test took %v; screenshots in %s", time.Since(began).Round(time.Millisecond), b.dir)
}

// setCookie sets a cookie for base's /api/ as the server would (HttpOnly).
func setCookie(base, name, value string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		httpOnly := true
		_, err := cdp.Call(ctx, t, network.SetCookie, network.SetCookieParams{Name: name, Value: value, URL: base + "/api/", Path: "/api/", HTTPOnly: &httpOnly})
		return chromedp.Void{}, err
	}
}

// clearCookies removes the browser's cookies.
func clearCookies(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
	_, err := cdp.Call(ctx, t, network.ClearBrowserCookies, cdp.Empty{})
	return chromedp.Void{}, err
}

// cursorAfter reports whether decimal cursor a is after b.
func cursorAfter(a, b string) bool {
	if len(a) != len(b) {
		return len(a) > len(b)
	}
	return a > b
}

// journalAfter lists the cursors of the row changes (not system events)
// the journal holds after cursor, in order.
func journalAfter(t testing.TB, sql *pgx.Conn, cursor string) []string {
	t.Helper()
	return queryRows(t, sql, pgx.RowTo[string], `SELECT seq::text FROM changecast.journal WHERE seq > $1::bigint AND entity_type <> 'event' ORDER BY journal.seq`, cursor)
}

// TestDashboard_SignInLink: serve on the embedded default with no user
// prints a one-time sign-in link; it works once, from loopback, and the
// page it opens is signed in.
func TestDashboard_SignInLink(t *testing.T) {
	srv := startServe(t, serveConfig{common: common{dataDir: traversableDir(t)}}, nil)
	srv.waitReady(t)
	m := regexp.MustCompile(`dashboard: (http://\S+/)#signin=([A-Za-z0-9_-]+)  \(one-time`).FindStringSubmatch(srv.stdout.String())
	if m == nil {
		t.Fatalf("serve printed no sign-in link:\n%s", srv.stdout.String())
	}
	if strings.Contains(srv.logs.String(), m[2]) {
		t.Fatalf("the sign-in code reached the log")
	}
	b := newBrowser(t, "http://"+srv.addr)
	b.do("open the link", chromedp.Navigate(m[1]+"#signin="+m[2]))
	b.wait("the app", `!document.getElementById('app').hidden && location.hash === ''`, 15*time.Second)
	b.wait("the demo domain's rows table", `document.getElementById('st-table').textContent.startsWith('live')`, 15*time.Second)
	// Used: a second redemption fails with a clear message.
	redeem := func() (int, string) {
		resp, err := http.Post("http://"+srv.addr+"/api/v1/auth/link", "application/json", strings.NewReader(`{"code":"`+m[2]+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var e struct{ Error string }
		_ = json.Unmarshal(body, &e)
		return resp.StatusCode, e.Error
	}
	if code, msg := redeem(); code != http.StatusUnauthorized || !strings.Contains(msg, "already used") {
		t.Fatalf("second use: %d %q", code, msg)
	}
}

// orderLoad writes single-row transactions (autocommit INSERT, UPDATE or
// DELETE of one order) at a steady rate from its own connection, as an
// application would: the sustained load of TestDashboard_SustainedLoad and
// BenchmarkDashboard_1000PerSecond. Its own orders have ids from firstID
// up; of the orders below, it updates the seeded ones (seedOrders).
type orderLoad struct {
	stopc   chan struct{}
	done    chan struct{}
	started time.Time
	n       atomic.Int64 // transactions committed
	// Set when the goroutine ends (done is closed).
	elapsed                   time.Duration
	inserts, updates, deletes int
	err                       error
}

// seedOrders is how many orders (ids 1 to 20) a test seeds before an
// orderLoad: the first rows of the table, in view. The load updates them
// but never deletes them, so rows the page shows keep changing and a test
// can still select them.
const seedOrders = 20

// startOrderLoad starts committing rate transactions a second until
// stop. A ticker paces it: at each tick it commits the transactions due
// by then, so the average rate holds even if one tick runs late. The mix
// is seeded: inserts, updates of status and total, and deletes, about
// 40 / 35 / 25 %, over at least 50 live rows of its own; half of the
// updates go to the seeded orders.
func startOrderLoad(t testing.TB, url string, rate int, firstID int64, seed uint64) *orderLoad {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	conn, err := pgx.Connect(ctx, url)
	cancel()
	if err != nil {
		t.Fatalf("load: connect: %v", err)
	}
	l := &orderLoad{stopc: make(chan struct{}), done: make(chan struct{}), started: time.Now()}
	go func() {
		defer close(l.done)
		defer conn.Close(context.Background())
		rnd := rand.New(rand.NewPCG(seed, 0))
		var live []int64
		next := firstID
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		defer func() { l.elapsed = time.Since(l.started) }()
		for {
			select {
			case <-l.stopc:
				return
			case now := <-tick.C:
				due := int64(now.Sub(l.started).Seconds() * float64(rate))
				for l.n.Load() < due {
					var err error
					switch r := rnd.Float64(); {
					case len(live) < 50 || r < 0.40:
						_, err = conn.Exec(context.Background(), `INSERT INTO orders (id, customer_id, total, status) VALUES ($1, 1, $2, 'new')`, next, next%1000)
						live = append(live, next)
						next++
						l.inserts++
					case r < 0.75:
						id := live[rnd.IntN(len(live))]
						if rnd.IntN(2) == 0 {
							id = 1 + rnd.Int64N(seedOrders)
						}
						_, err = conn.Exec(context.Background(), `UPDATE orders SET status = $2, total = total + 1, updated_at = now() WHERE id = $1`, id, fmt.Sprintf("u%d", l.n.Load()))
						l.updates++
					default:
						i := rnd.IntN(len(live))
						_, err = conn.Exec(context.Background(), `DELETE FROM orders WHERE id = $1`, live[i])
						live[i] = live[len(live)-1]
						live = live[:len(live)-1]
						l.deletes++
					}
					if err != nil {
						l.err = err
						return
					}
					l.n.Add(1)
				}
			}
		}
	}()
	t.Cleanup(l.stop)
	return l
}

// ended reports whether the load's goroutine ended (stopped, or failed
// with err).
func (l *orderLoad) ended() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// stop ends the load (at once if it already ended) and waits for it.
func (l *orderLoad) stop() {
	select {
	case <-l.stopc:
	default:
		close(l.stopc)
	}
	<-l.done
}

func (l *orderLoad) String() string {
	return fmt.Sprintf("%d transactions in %v (%.0f/s): %d inserts, %d updates, %d deletes",
		l.n.Load(), l.elapsed.Round(time.Millisecond), float64(l.n.Load())/l.elapsed.Seconds(), l.inserts, l.updates, l.deletes)
}

// ordersDashboard makes a database holding shopSchema and seedOrders
// orders, serves it through testdata/config/orders.yaml, and returns its
// URL, a connection to it and a browser signed in as an admin with the
// page open on the order table, its snapshot's rows shown and its stream
// connected.
func ordersDashboard(t testing.TB, slot string) (url string, sql *pgx.Conn, b *browser) {
	t.Helper()
	url = storetest.NewDatabase(t)
	sql = connect(t, url)
	exec1(t, sql, shopSchema)
	exec1(t, sql, fmt.Sprintf(`INSERT INTO orders (id, customer_id, total, status) SELECT g, 1, g, 'new' FROM generate_series(1, %d) g`, seedOrders))
	const pw = "sustained load password"
	addUser(t, url, "ada", pw, true)
	srv, _, _ := readyServerAt(t, url, slot, func(cfg *serveConfig) {
		cfg.configPath = "../../testdata/config/orders.yaml"
	})
	b = newBrowser(t, "http://"+srv.addr)
	b.do("open the page", chromedp.Navigate(b.base+"/"))
	b.wait("the sign-in form", `!document.getElementById('signin').hidden`, 10*time.Second)
	b.do("sign in",
		chromedp.SendKeys(chromedp.CSS("#login-username"), "ada"),
		chromedp.SendKeys(chromedp.CSS("#login-password"), pw),
		chromedp.Click(chromedp.CSS("#login-submit")))
	b.wait("the app after sign-in", `!document.getElementById('app').hidden`, 10*time.Second)
	b.do("choose the order table", chromedp.SetValue(chromedp.CSS("#table-type"), "order"))
	evalJS[chromedp.Void](b, `document.getElementById('table-type').dispatchEvent(new Event('change'))`)
	b.wait("the snapshot", `document.getElementById('st-table').textContent.startsWith('live') && document.getElementById('st-conn').dataset.state === 'open'`, 15*time.Second)
	b.wait("the snapshot's rows", fmt.Sprintf(`document.getElementById('table-count').textContent === 'order: %d'`, seedOrders), 10*time.Second)
	return url, sql, b
}

// clickRow clicks the middle of the table row with key (which must be in
// view) with the mouse, as a user would: the page re-creates the rows in
// view whenever the table changes, so a node looked up first may be gone
// by the time the click arrives, while a point on the screen is not.
func (b *browser) clickRow(key string) {
	b.t.Helper()
	xy := evalJS[[]float64](b, fmt.Sprintf(`(() => { const r = document.querySelector('#table-spacer .vrow[data-key=%q]').getBoundingClientRect(); return [r.x + 30, r.y + r.height / 2]; })()`, key))
	b.do("click row "+key, chromedp.MouseClickXY(xy[0], xy[1]))
}

// humanClick presses the left button at the point the JavaScript
// expression at gives ([x, y]; middleOf, feedEnd), holds it as long as a
// person does (100 ms), and releases it in the same place. It returns what
// was under the pointer when the button went down: ("row", its key) or
// ("feed", the entry's cursor). The page redraws both lists as changes
// arrive, so that may not be the item that was there a moment before.
func (b *browser) humanClick(at string) (what, key string) {
	b.t.Helper()
	xy := evalJS[[]float64](b, `(() => {
		window.__ccPressed = null;
		addEventListener('pointerdown', (e) => {
			const row = e.target.closest('.vrow[data-key]'), entry = e.target.closest('#feed li');
			window.__ccPressed = row ? ['row', row.dataset.key] : entry ? ['feed', entry.dataset.cursor] : ['other', e.target.id];
		}, {capture: true, once: true});
		return `+at+`;
	})()`)
	b.do("press", chromedp.MouseEvent(chromedp.MousePressed, xy[0], xy[1], chromedp.ButtonLeft, chromedp.ClickCount(1)))
	time.Sleep(100 * time.Millisecond) // how long a person holds the button, not synchronisation
	b.do("release", chromedp.MouseEvent(chromedp.MouseReleased, xy[0], xy[1], chromedp.ButtonLeft, chromedp.ClickCount(1)))
	p := evalJS[[]string](b, `window.__ccPressed`)
	if len(p) != 2 || p[0] == "other" {
		b.fail("pressed %v at %v (%s), not a row or a feed entry", p, xy, at)
	}
	return p[0], p[1]
}

// middleOf is a point for humanClick: near the left end of the element sel
// matches, half-way down.
func middleOf(sel string) string {
	return fmt.Sprintf(`(r => [r.x + 30, r.y + r.height / 2])(document.querySelector(%q).getBoundingClientRect())`, sel)
}

// feedEnd is a point for humanClick: the feed scrolled to its end, just
// above the bottom of its box, on one of the oldest entries it shows.
const feedEnd = `(f => { f.scrollTop = f.scrollHeight; const r = f.getBoundingClientRect(); return [r.x + 30, r.bottom - 12]; })(document.getElementById('feed'))`

// tableRow is one row of the page's table, as shown.
type tableRow struct {
	ID      string `json:"id"`
	Status  string `json:"status"`
	Total   string `json:"total"`
	Deleted bool   `json:"deleted"`
}

// tableRows reads every row of the page's table from the DOM. Only the
// rows in view are there (the table is virtualized and keeps its model
// in the module), so it scrolls the table from top to bottom, a view at a
// time, waiting at each step for the last row in view to be drawn, then
// scrolls back to the top.
func (b *browser) tableRows() []tableRow {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[[]tableRow](`(async () => {
		const vp = document.getElementById('table-viewport'), sp = document.getElementById('table-spacer');
		const H = 28, frame = () => new Promise((r) => requestAnimationFrame(r));
		const n = Number(document.getElementById('table').getAttribute('aria-rowcount')) - 1;
		const seen = new Map();
		const step = Math.max(H, Math.floor(vp.clientHeight / H) * H - 2 * H);
		for (let top = 0; ; top += step) {
			vp.scrollTop = top;
			const last = Math.min(n, Math.ceil((vp.scrollTop + vp.clientHeight) / H)) + 1; // aria-rowindex of the last row in view
			await frame();
			for (let i = 0; i < 120 && n > 0 && !sp.querySelector('.vrow[aria-rowindex="' + last + '"]'); i++) await frame();
			for (const r of sp.querySelectorAll('.vrow')) {
				seen.set(r.dataset.key, {id: r.dataset.key, status: r.querySelector('[data-col="status"]')?.textContent ?? '',
					total: r.querySelector('[data-col="total"]')?.textContent ?? '', deleted: r.classList.contains('deleted')});
			}
			if (vp.scrollTop + vp.clientHeight >= vp.scrollHeight - 1) break;
		}
		vp.scrollTop = 0;
		return [...seen.values()].sort((a, b) => Number(a.id) - Number(b.id));
	})()`, chromedp.EvalAwaitPromise))
	if err != nil {
		b.fail("read the table: %v", err)
	}
	return rows
}

// dbOrders lists the orders table as the page shows it.
func dbOrders(t testing.TB, sql *pgx.Conn) []tableRow {
	t.Helper()
	return queryRows(t, sql, pgx.RowToStructByPos[tableRow], `SELECT id::text, status, total::text, false FROM orders ORDER BY orders.id`)
}

// journalHead is the journal's last cursor.
func journalHead(t testing.TB, sql *pgx.Conn) string {
	t.Helper()
	var head string
	if err := sql.QueryRow(context.Background(), `SELECT coalesce(max(seq), 0)::text FROM changecast.journal`).Scan(&head); err != nil {
		t.Fatal(err)
	}
	return head
}

// journalLast lists the cursors of the journal's last n row changes, newest
// first, as the feed lists them.
func journalLast(t testing.TB, sql *pgx.Conn, n int) []string {
	t.Helper()
	return queryRows(t, sql, pgx.RowTo[string], `SELECT seq::text FROM changecast.journal WHERE entity_type <> 'event' ORDER BY journal.seq DESC LIMIT $1`, n)
}

// feedReceived is the page's count of changes received ("N received, last
// 200 shown" next to the feed's title).
const feedReceived = `Number((document.getElementById('feed-rate').textContent.match(/^(\d+) received/) || [0, 0])[1])`

// TestDashboard_SustainedLoad: the page open on the order table while
// about 1,000 single-row transactions a second (inserts, updates, deletes)
// are committed to it for 5 s or more. During the load the page answers
// the keyboard (arrow down and Enter on a table row open that row's
// details) and the mouse (a click, held as a person holds it, on a row and
// on a feed entry opens what was pressed, though both lists were redrawn
// under the pointer meanwhile) while it keeps receiving changes; once the
// load ends it catches
// up exactly: the table holds the database's rows with their latest
// status and total, the feed holds its cap of the newest changes (the
// journal's last 200), and the cursor it shows is the journal's head.
// Only behaviour is checked, with generous deadlines: how fast the page
// is at this rate is BenchmarkDashboard_1000PerSecond's figure
// (docs/benchmarks.md).
func TestDashboard_SustainedLoad(t *testing.T) {
	const rate, minLoad = 1000, 5 * time.Second
	url, sql, b := ordersDashboard(t, "cc_sustained")

	load := startOrderLoad(t, url, rate, 1000, 1)
	// The feed is full once 200 of the load's changes reached the page.
	b.wait("the load in the feed", `document.querySelectorAll('#feed li').length === 200`, 20*time.Second)

	// The keyboard during the load: row 1 focused with a click, arrow down
	// to row 2, Enter opens its details; then on to row 3 the same way.
	b.clickRow("1")
	b.wait("row 1 focused by the click", `document.activeElement?.dataset.key === '1'`, 20*time.Second)
	for _, next := range []string{"2", "3"} {
		cursor := evalJS[string](b, `document.getElementById('st-cursor').textContent`)
		b.do("arrow down to row "+next, chromedp.KeyEvent(kb.ArrowDown))
		b.wait("row "+next+" focused", `document.activeElement?.dataset.key === '`+next+`'`, 20*time.Second)
		b.do("Enter on row "+next, chromedp.KeyEvent(kb.Enter))
		b.wait("row "+next+"'s details", `document.getElementById('details-what').textContent === 'row of order `+next+`' && document.getElementById('details-payload').textContent.includes('"id": `+next+`')`, 20*time.Second)
		// Still under load, and the page keeps taking changes.
		if load.ended() {
			t.Fatalf("the load ended while the page answered the keyboard: %v (%v)", load.err, load)
		}
		b.wait("the page's cursor past "+cursor, fmt.Sprintf(`(c => c.length > %[1]d || (c.length === %[1]d && c > %[2]q))(document.getElementById('st-cursor').textContent)`, len(cursor), cursor), 20*time.Second)
	}
	// The mouse during the load: a click held as long as a person holds
	// the button, on a row and on a feed entry, opens what was pressed.
	// The entry is one of the oldest the feed shows (it is scrolled to
	// its end): by the release it has left the feed.
	for _, at := range []string{middleOf(`#table-spacer .vrow[data-key="5"]`), feedEnd} {
		what, key := b.humanClick(at)
		want := fmt.Sprintf(`document.getElementById('details-what').textContent === 'row of order %s'`, key)
		if what == "feed" {
			want = fmt.Sprintf(`document.getElementById('details-what').textContent.includes(' — cursor %s, ')`, key)
		}
		b.wait("the details of the "+what+" item "+key+", clicked", want, 20*time.Second)
		if load.ended() {
			t.Fatalf("the load ended while the page answered the mouse: %v (%v)", load.err, load)
		}
	}
	for !load.ended() && time.Since(load.started) < minLoad {
		time.Sleep(50 * time.Millisecond) // the rest of the load's 5 s; polling interval
	}
	b.screenshot("under-load")
	load.stop()
	if load.err != nil {
		t.Fatalf("load: %v (%v)", load.err, load)
	}
	t.Logf("load: %v; the page had received %d changes when it ended", load, evalJS[int](b, feedReceived))

	// Caught up: the cursor shown is the journal's head, every change
	// reached the feed, and the table shows no row still greyed out as
	// deleted.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) { // polling interval
		head, shown := journalHead(t, sql), evalJS[string](b, `document.getElementById('st-cursor').textContent`)
		if shown == head {
			break
		}
		if time.Now().After(deadline) {
			b.fail("the page shows cursor %s, the journal's head is %s", shown, head)
		}
	}
	want := dbOrders(t, sql)
	b.wait("the table's count", fmt.Sprintf(`document.getElementById('table-count').textContent === 'order: %d' && document.getElementById('table').getAttribute('aria-rowcount') === '%d'`, len(want), len(want)+1), 30*time.Second)
	// The table equals the database: every id with its latest status and
	// total (a lost or reordered update would leave an old value).
	var got []tableRow
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) { // polling interval
		if got = b.tableRows(); slices.Equal(got, want) {
			break
		}
		if time.Now().After(deadline) {
			b.fail("the table differs from the database (%d rows shown, %d in the database): %s", len(got), len(want), diffRows(got, want))
		}
	}
	// The feed holds its cap: the journal's newest 200 row changes, newest
	// first.
	items := b.feed()
	if len(items) != 200 {
		t.Fatalf("the feed has %d entries, want its cap of 200", len(items))
	}
	cursors := make([]string, len(items))
	for i, it := range items {
		cursors[i] = it.Cursor
	}
	if last := journalLast(t, sql, 200); !slices.Equal(cursors, last) {
		t.Fatalf("the feed shows cursors %v...; the journal's newest 200 row changes are %v...", cursors[:5], last[:5])
	}
	if got := evalJS[int](b, feedReceived); got < int(load.n.Load()) {
		t.Fatalf("the feed says it received %d changes, the load committed %d", got, load.n.Load())
	}
	b.screenshot("after-load")
	if p := b.consoleProblems(); len(p) > 0 {
		t.Fatalf("the browser reported problems: %v", p)
	}
}

// diffRows describes the first few differences between the rows shown and
// the rows wanted.
func diffRows(got, want []tableRow) string {
	g := make(map[string]tableRow, len(got))
	for _, r := range got {
		g[r.ID] = r
	}
	var out []string
	for _, w := range want {
		r, ok := g[w.ID]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("order %s missing (want %+v)", w.ID, w))
		case r != w:
			out = append(out, fmt.Sprintf("order %s shown as %+v, want %+v", w.ID, r, w))
		}
		delete(g, w.ID)
	}
	for _, r := range g {
		out = append(out, fmt.Sprintf("order %s shown (%+v), not in the database", r.ID, r))
	}
	slices.Sort(out)
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			out = append(out, fmt.Sprintf("row %d: %+v, want %+v", i, got[i], want[i]))
			break
		}
	}
	if len(out) > 10 {
		out = append(out[:10], fmt.Sprintf("and %d more", len(out)-10))
	}
	return strings.Join(out, "; ")
}
