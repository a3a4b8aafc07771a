// promqlcheck loads scrapes of a /metrics endpoint into a Prometheus TSDB the way Prometheus's
// scrape loop does (its own exposition parser, strictly; the target's labels attached; `up`),
// then evaluates PromQL queries with Prometheus's own engine at the last scrape's time and says
// for each how many series it returned and their values.
//
//	promqlcheck --scrape t0=FILE --scrape t60=FILE --labels job=kube-dns,pod=kdns-0 --queries FILE
//
// The queries file has one query a line. A comment line before a query names it (the last one
// before the query is printed with it); a comment starting with a mark says what the query may
// return:
//
//	# optional: REASON   it may return nothing (REASON is printed)
//	# empty: REASON      it must return nothing (an alert that must not fire, e.g. absent(up))
//	# gap: REASON        kdns is known to lack what it needs: reported, not failed, until it
//	                     returns data (then the mark is stale and that fails)
//
// Every other query must return at least one series with a value that is not NaN. The exit
// status is 1 when a scrape does not parse, a query does not parse or fails, or a query's
// result is not what its mark says; 2 for bad arguments.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
)

// The scrapes' timestamps are offsets from this instant (any fixed time would do).
var base = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type scrape struct {
	at   time.Duration
	file string
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(s string) error { *m = append(*m, s); return nil }

func main() {
	var scrapeArgs multi
	flag.Var(&scrapeArgs, "scrape", "TIME=FILE: a scrape taken at TIME (t60, 60s, 1m, 60: seconds from the first); repeat, two or more")
	targetLabels := flag.String("labels", "", "the target's labels, NAME=VALUE,... (as service discovery and relabelling give them: job, instance, pod, ...)")
	queriesFile := flag.String("queries", "", "the queries file")
	contentType := flag.String("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8", "the Content-Type the endpoint answered with (picks Prometheus's parser)")
	flag.Parse()
	if len(scrapeArgs) < 2 || *queriesFile == "" {
		fmt.Fprintln(os.Stderr, "usage: promqlcheck --scrape TIME=FILE --scrape TIME=FILE... --labels job=...,pod=... --queries FILE")
		os.Exit(2)
	}
	scrapes, err := parseScrapes(scrapeArgs)
	if err != nil {
		fail(2, err)
	}
	target, err := parseLabels(*targetLabels)
	if err != nil {
		fail(2, err)
	}
	queries, err := readQueries(*queriesFile)
	if err != nil {
		fail(2, err)
	}

	dir, err := os.MkdirTemp("", "promqlcheck-")
	if err != nil {
		fail(1, err)
	}
	defer os.RemoveAll(dir)
	db, err := tsdb.Open(dir, nil, nil, tsdb.DefaultOptions(), nil)
	if err != nil {
		fail(1, err)
	}
	defer db.Close()

	bad := 0
	for _, s := range scrapes {
		n, err := load(db, s, target, *contentType)
		if err != nil {
			fmt.Printf("scrape %s at %s: REJECTED: %v\n", s.file, s.at, err)
			bad++
			continue
		}
		fmt.Printf("scrape %s at %s: %d samples\n", s.file, s.at, n)
	}
	if bad > 0 {
		os.Exit(1)
	}

	engine := promql.NewEngine(promql.EngineOpts{
		MaxSamples:           50_000_000,
		Timeout:              time.Minute,
		LookbackDelta:        5 * time.Minute,
		EnableAtModifier:     true,
		EnableNegativeOffset: true,
	})
	at := base.Add(scrapes[len(scrapes)-1].at)
	failed, gaps, passed := 0, 0, 0
	for _, q := range queries {
		ok, gap := evaluate(engine, db, q, at)
		switch {
		case !ok:
			failed++
		case gap:
			gaps++
		default:
			passed++
		}
	}
	fmt.Printf("promqlcheck: %d queries: %d as expected, %d failed, %d known gaps\n", len(queries), passed, failed, gaps)
	if failed > 0 {
		os.Exit(1)
	}
}

func fail(code int, err error) {
	fmt.Fprintln(os.Stderr, "promqlcheck:", err)
	os.Exit(code)
}

func parseScrapes(args []string) ([]scrape, error) {
	var out []scrape
	for _, a := range args {
		at, file, ok := strings.Cut(a, "=")
		if !ok || file == "" {
			return nil, fmt.Errorf("--scrape %q: want TIME=FILE", a)
		}
		at = strings.TrimPrefix(at, "t")
		d, err := time.ParseDuration(at)
		if err != nil {
			secs, err2 := strconv.ParseFloat(at, 64)
			if err2 != nil {
				return nil, fmt.Errorf("--scrape %q: time %q is neither a duration nor seconds", a, at)
			}
			d = time.Duration(secs * float64(time.Second))
		}
		out = append(out, scrape{at: d, file: file})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].at < out[j].at })
	for i := 1; i < len(out); i++ {
		if out[i].at == out[i-1].at {
			return nil, fmt.Errorf("two scrapes at %s", out[i].at)
		}
	}
	return out, nil
}

func parseLabels(s string) (labels.Labels, error) {
	b := labels.NewScratchBuilder(0)
	if s != "" {
		for _, kv := range strings.Split(s, ",") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || !model.LegacyValidation.IsValidLabelName(k) {
				return labels.EmptyLabels(), fmt.Errorf("--labels: %q is not NAME=VALUE", kv)
			}
			b.Add(k, v)
		}
	}
	b.Sort()
	return b.Labels(), nil
}

// load parses one scrape as Prometheus's scrape loop does and appends its samples at its time.
// Stricter than the scrape loop only in refusing what the loop would log and drop: a series
// given twice, a name that is not a legacy (pre-UTF-8) name, anything after a parse error.
func load(db *tsdb.DB, s scrape, target labels.Labels, contentType string) (int, error) {
	body, err := os.ReadFile(s.file)
	if err != nil {
		return 0, err
	}
	if len(body) == 0 {
		return 0, errors.New("empty")
	}
	p, err := textparse.New(body, contentType, labels.NewSymbolTable(), textparse.ParserOptions{})
	if p == nil {
		return 0, fmt.Errorf("no parser for Content-Type %q: %v", contentType, err)
	}
	if err != nil {
		return 0, fmt.Errorf("Content-Type %q: %v", contentType, err)
	}
	t := base.Add(s.at).UnixMilli()
	app := db.Appender(context.Background())
	seen := map[string]bool{}
	n := 0
	for {
		et, err := p.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			app.Rollback()
			return n, fmt.Errorf("parse: %w", err)
		}
		switch et {
		case textparse.EntrySeries:
		case textparse.EntryHistogram:
			app.Rollback()
			return n, errors.New("a native histogram: not expected from a text exposition")
		default:
			continue
		}
		met, ts, v := p.Series()
		if ts != nil {
			app.Rollback()
			return n, fmt.Errorf("%s carries its own timestamp", met)
		}
		var lset labels.Labels
		p.Labels(&lset)
		if !lset.IsValid(model.UTF8Validation) || !lset.IsValid(model.LegacyValidation) {
			app.Rollback()
			return n, fmt.Errorf("invalid metric or label name in %s", lset)
		}
		lset = withTarget(lset, target)
		key := lset.String()
		if seen[key] {
			app.Rollback()
			return n, fmt.Errorf("%s given twice", key)
		}
		seen[key] = true
		if _, err := app.Append(0, lset, t, v); err != nil {
			app.Rollback()
			return n, fmt.Errorf("append %s: %w", key, err)
		}
		n++
	}
	// The scrape loop's own series for the target.
	up := labels.NewBuilder(target).Set(model.MetricNameLabel, "up").Labels()
	if _, err := app.Append(0, up, t, 1); err != nil {
		app.Rollback()
		return n, err
	}
	if n == 0 {
		app.Rollback()
		return 0, errors.New("no samples")
	}
	return n, app.Commit()
}

// withTarget attaches the target's labels as Prometheus does without honor_labels: the target's
// value wins and a scraped label of the same name is kept as exported_NAME.
func withTarget(lset, target labels.Labels) labels.Labels {
	b := labels.NewBuilder(lset)
	target.Range(func(l labels.Label) {
		if old := lset.Get(l.Name); old != "" {
			name := l.Name
			for {
				name = model.ExportedLabelPrefix + name
				if lset.Get(name) == "" && target.Get(name) == "" {
					break
				}
			}
			b.Set(name, old)
		}
		b.Set(l.Name, l.Value)
	})
	return b.Labels()
}

type query struct {
	line int
	name string
	mark string // "", "optional", "empty", "gap"
	why  string
	expr string
}

func readQueries(path string) ([]query, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []query
	var cur query
	for i, line := range strings.Split(string(text), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if c, ok := strings.CutPrefix(line, "#"); ok {
			c = strings.TrimSpace(c)
			mark, why, _ := strings.Cut(c, ":")
			switch mark {
			case "optional", "empty", "gap":
				if cur.mark != "" {
					return nil, fmt.Errorf("%s:%d: a second mark for one query", path, i+1)
				}
				cur.mark, cur.why = mark, strings.TrimSpace(why)
			default:
				cur.name = c
			}
			continue
		}
		cur.line, cur.expr = i+1, line
		out = append(out, cur)
		cur = query{name: cur.name}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no queries", path)
	}
	return out, nil
}

// evaluate runs one query and prints its result; ok is false when the result contradicts the
// query's mark.
func evaluate(engine *promql.Engine, db storage.Queryable, q query, at time.Time) (ok, gap bool) {
	fmt.Printf("\n# %s (line %d)\n%s\n", q.name, q.line, q.expr)
	if _, err := parser.NewParser(parser.Options{}).ParseExpr(q.expr); err != nil {
		fmt.Printf("  FAIL: does not parse: %v\n", err)
		return false, false
	}
	qry, err := engine.NewInstantQuery(context.Background(), db, nil, q.expr, at)
	if err != nil {
		fmt.Printf("  FAIL: %v\n", err)
		return false, false
	}
	defer qry.Close()
	res := qry.Exec(context.Background())
	if res.Err != nil {
		fmt.Printf("  FAIL: %v\n", res.Err)
		return false, false
	}
	series, values := 0, 0
	switch v := res.Value.(type) {
	case promql.Vector:
		series = len(v)
		for _, s := range v {
			fmt.Printf("  %s => %s\n", s.Metric, formatValue(s))
			if s.H != nil || !math.IsNaN(s.F) {
				values++
			}
		}
	case promql.Scalar:
		series = 1
		fmt.Printf("  scalar => %g\n", v.V)
		if !math.IsNaN(v.V) {
			values++
		}
	case promql.Matrix:
		series = len(v)
		for _, s := range v {
			fmt.Printf("  %s => %d points\n", s.Metric, len(s.Floats)+len(s.Histograms))
			values++
		}
	case promql.String:
		series, values = 1, 1
		fmt.Printf("  string => %q\n", v.V)
	}
	for _, w := range res.Warnings.AsErrors() {
		fmt.Printf("  warning: %v\n", w)
	}
	nan := series - values
	switch q.mark {
	case "empty":
		if series > 0 {
			fmt.Printf("  FAIL: %d series, want none (%s)\n", series, q.why)
			return false, false
		}
		fmt.Printf("  ok: no series, as expected (%s)\n", q.why)
	case "optional":
		fmt.Printf("  ok: %d series, %d NaN (optional: %s)\n", series, nan, q.why)
	case "gap":
		if values > 0 {
			fmt.Printf("  FAIL: %d series: the known gap is closed (%s); remove the gap mark\n", series, q.why)
			return false, false
		}
		fmt.Printf("  GAP: %d series (%s)\n", series, q.why)
		return true, true
	default:
		if values == 0 {
			fmt.Printf("  FAIL: %d series, %d NaN: no data\n", series, nan)
			return false, false
		}
		fmt.Printf("  ok: %d series, %d NaN\n", series, nan)
	}
	return true, false
}

func formatValue(s promql.Sample) string {
	if s.H != nil {
		return s.H.String()
	}
	return strconv.FormatFloat(s.F, 'g', 6, 64)
}
