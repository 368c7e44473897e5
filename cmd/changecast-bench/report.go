package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// unit says how a figure's values are printed.
type unit string

const (
	unitRate    unit = "/s"    // changes or deliveries per second
	unitRatio   unit = "ratio" // a plain ratio, two decimals
	unitMillis  unit = "ms"    // milliseconds
	unitMicros  unit = "µs"    // microseconds
	unitKB      unit = "KB"    // kibibytes
	unitMiB     unit = "MiB"   // mebibytes
	unitCores   unit = "cores" // CPU seconds per wall-clock second
	unitSeconds unit = "s"     // seconds
	unitCount   unit = ""      // a plain number
)

// target is what a figure must reach: at least (atLeast) or at most Value.
type target struct {
	atLeast bool
	value   float64
}

// atLeast and atMost build targets.
func atLeast(v float64) *target { return &target{atLeast: true, value: v} }
func atMost(v float64) *target  { return &target{value: v} }

// figure is one measured quantity of a scenario, one sample per repetition.
type figure struct {
	name    string
	unit    unit
	samples []float64
	target  *target // nil: reported for information, no target
}

// median returns the median sample (the mean of the middle two for an even
// count), NaN without samples.
func (f *figure) median() float64 {
	if len(f.samples) == 0 {
		return math.NaN()
	}
	s := slices.Clone(f.samples)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// spread returns the smallest and largest sample.
func (f *figure) spread() (lo, hi float64) {
	if len(f.samples) == 0 {
		return math.NaN(), math.NaN()
	}
	return slices.Min(f.samples), slices.Max(f.samples)
}

// verdict is PASS or MISS for a figure with a target (judged on the
// median), "" otherwise.
func (f *figure) verdict() string {
	if f.target == nil || len(f.samples) == 0 {
		return ""
	}
	m := f.median()
	if (f.target.atLeast && m >= f.target.value) || (!f.target.atLeast && m <= f.target.value) {
		return "PASS"
	}
	return "MISS"
}

// section is one scenario's results: its figures in order, and notes.
type section struct {
	title   string
	setup   string // one line: what was run
	figures []*figure
	notes   []string
	failed  []string // repetitions that could not be measured, with why
}

// fig returns the figure called name, adding it (with u and t) on first use.
func (s *section) fig(name string, u unit, t *target) *figure {
	for _, f := range s.figures {
		if f.name == name {
			return f
		}
	}
	f := &figure{name: name, unit: u, target: t}
	s.figures = append(s.figures, f)
	return f
}

// add records one sample of the figure called name.
func (s *section) add(name string, u unit, t *target, v float64) {
	f := s.fig(name, u, t)
	f.samples = append(f.samples, v)
}

// formatValue prints v in unit u.
func formatValue(v float64, u unit) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	switch u {
	case unitRate:
		return thousands(int64(math.Round(v))) + "/s"
	case unitRatio:
		return strconv.FormatFloat(v, 'f', 2, 64)
	case unitMillis:
		return strconv.FormatFloat(v, 'f', 1, 64) + " ms"
	case unitMicros:
		return strconv.FormatFloat(v, 'f', 1, 64) + " µs"
	case unitKB:
		return strconv.FormatFloat(v, 'f', 1, 64) + " KB"
	case unitMiB:
		return strconv.FormatFloat(v, 'f', 1, 64) + " MiB"
	case unitCores:
		return strconv.FormatFloat(v, 'f', 2, 64) + " cores"
	case unitSeconds:
		return strconv.FormatFloat(v, 'f', 1, 64) + " s"
	default:
		if v == math.Trunc(v) && math.Abs(v) < 1e15 {
			return thousands(int64(v))
		}
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

// formatTarget prints t in unit u ("≥ 0.50", "≤ 20.0 ms"), "—" for none.
func formatTarget(t *target, u unit) string {
	if t == nil {
		return "—"
	}
	op := "≤ "
	if t.atLeast {
		op = "≥ "
	}
	return op + formatValue(t.value, u)
}

// thousands formats n with comma separators: 270000 → "270,000".
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// row is one figure's printed cells.
type row struct{ name, median, spread, target, verdict string }

func (s *section) rows() []row {
	out := make([]row, 0, len(s.figures))
	for _, f := range s.figures {
		lo, hi := f.spread()
		spread := formatValue(lo, f.unit) + " – " + formatValue(hi, f.unit)
		if len(f.samples) == 1 {
			spread = "(1 run)"
		}
		out = append(out, row{f.name, formatValue(f.median(), f.unit), spread, formatTarget(f.target, f.unit), f.verdict()})
	}
	return out
}

// writeText prints the section as an aligned table.
func (s *section) writeText(w io.Writer) {
	fmt.Fprintf(w, "\n== %s ==\n", s.title)
	if s.setup != "" {
		fmt.Fprintf(w, "%s\n", s.setup)
	}
	rows := append([]row{{"figure", "median", "spread (min – max)", "target", "result"}}, s.rows()...)
	width := [4]int{}
	for _, r := range rows {
		for i, c := range []string{r.name, r.median, r.spread, r.target} {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	for _, r := range rows {
		fmt.Fprintf(w, "  %s  %s  %s  %s  %s\n", pad(r.name, width[0]), padLeft(r.median, width[1]), pad(r.spread, width[2]), pad(r.target, width[3]), r.verdict)
	}
	for _, n := range s.notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	for _, f := range s.failed {
		fmt.Fprintf(w, "  FAILED: %s\n", f)
	}
}

// writeMarkdown prints the section as a Markdown table.
func (s *section) writeMarkdown(w io.Writer) {
	fmt.Fprintf(w, "\n### %s\n\n", s.title)
	if s.setup != "" {
		fmt.Fprintf(w, "%s\n\n", s.setup)
	}
	fmt.Fprintln(w, "| figure | median | spread (min – max) | target | result |")
	fmt.Fprintln(w, "|---|--:|---|---|---|")
	for _, r := range s.rows() {
		v := r.verdict
		if v != "" {
			v = "**" + v + "**"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", mdEscape(r.name), r.median, r.spread, r.target, v)
	}
	if len(s.notes)+len(s.failed) > 0 {
		fmt.Fprintln(w)
	}
	for _, n := range s.notes {
		fmt.Fprintf(w, "- %s\n", mdEscape(n))
	}
	for _, f := range s.failed {
		fmt.Fprintf(w, "- **failed:** %s\n", mdEscape(f))
	}
}

func mdEscape(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

func pad(s string, n int) string {
	return s + strings.Repeat(" ", max(0, n-len([]rune(s))))
}

func padLeft(s string, n int) string {
	return strings.Repeat(" ", max(0, n-len([]rune(s)))) + s
}

// report is a whole run: the machine, the command, every section.
type report struct {
	started  time.Time
	elapsed  time.Duration
	machine  []string // "key: value" lines
	command  string
	sections []*section
}

// misses counts figures that missed their target.
func (r *report) misses() int {
	n := 0
	for _, s := range r.sections {
		for _, f := range s.figures {
			if f.verdict() == "MISS" {
				n++
			}
		}
	}
	return n
}

// failures counts repetitions that could not be measured.
func (r *report) failures() int {
	n := 0
	for _, s := range r.sections {
		n += len(s.failed)
	}
	return n
}

func (r *report) writeText(w io.Writer) {
	for _, s := range r.sections {
		s.writeText(w)
	}
	fmt.Fprintf(w, "\n%d figure(s) missed their target, %d repetition(s) failed; total time %s\n", r.misses(), r.failures(), r.elapsed.Round(time.Second))
}

func (r *report) writeMarkdown(w io.Writer) {
	fmt.Fprintf(w, "## Results of %s\n\n", r.started.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(w, "Command: `%s` (total time %s)\n\n", r.command, r.elapsed.Round(time.Second))
	for _, m := range r.machine {
		fmt.Fprintf(w, "- %s\n", mdEscape(m))
	}
	for _, s := range r.sections {
		s.writeMarkdown(w)
	}
}

// percentile returns the p-th percentile (0 < p <= 100) of sorted values,
// nearest rank.
func percentile(sorted []int32, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return float64(sorted[rank-1])
}
