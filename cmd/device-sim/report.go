package main

import (
	"bytes"
	"fmt"
	"html/template"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is the outcome of a run, as the table, --json and --html show it.
type Report struct {
	Scenario     Scenario       `json:"scenario"`
	LoadSeconds  float64        `json:"load_seconds"`
	DrainSeconds float64        `json:"drain_seconds"`
	Totals       Totals         `json:"totals"`
	Latency      []NamedLatency `json:"latency"`
	Invariants   []Invariant    `json:"invariants"`
	Passed       bool           `json:"passed"`
}

// Totals are the run's counts and rates.
type Totals struct {
	Calls            int64   `json:"calls_acknowledged"`
	CallsPerSec      float64 `json:"calls_per_s"`
	Notified         int64   `json:"notifications_pubacked"`
	Delivered        int64   `json:"notifications_delivered"`
	NotesPerSec      float64 `json:"notifications_per_s"`
	Begins           int64   `json:"begins"`
	Crashes          int64   `json:"crashes"`
	Switches         int64   `json:"switches"`
	Restarts         int64   `json:"broker_restarts"`
	UnexpectedErrors int64   `json:"unexpected_errors"`
}

// NamedLatency is one latency distribution of the report.
type NamedLatency struct {
	Name string `json:"name"`
	Summary
}

func (s *sim) report(load, drain time.Duration, inv []Invariant) *Report {
	r := &Report{Scenario: s.sc, LoadSeconds: load.Seconds(), DrainSeconds: drain.Seconds(), Invariants: inv, Passed: true}
	r.Totals = Totals{
		Calls: s.calls.Load(), Notified: s.notified.Load(), Delivered: s.delivered.Load(),
		Begins: s.begins.Load(), Crashes: s.crashes.Load(), Switches: s.switches.Load(), Restarts: s.restarts.Load(),
		UnexpectedErrors: s.unexpected.Load(),
	}
	r.Totals.CallsPerSec = float64(r.Totals.Calls) / load.Seconds()
	r.Totals.NotesPerSec = float64(r.Totals.Delivered) / (load + drain).Seconds()
	for _, l := range []struct {
		name string
		lat  *Latency
	}{
		{"begin", &s.lat.begin}, {"call", &s.lat.call}, {"ping", &s.lat.ping}, {"notify->deliver", &s.lat.notify},
		{"reconnect after broker restart", &s.lat.reconnect}, {"broker restart (kill -9 -> listening)", &s.lat.restart},
	} {
		r.Latency = append(r.Latency, NamedLatency{Name: l.name, Summary: l.lat.Summary()})
	}
	for _, i := range inv {
		r.Passed = r.Passed && (i.Pass || i.Advisory)
	}
	return r
}

// Table is the report for a person.
func (r *Report) Table() string {
	var b strings.Builder
	sc := r.Scenario
	fmt.Fprintf(&b, "\ndevice-sim run: preset %s, %d devices over %s, %s, crash-mode %s", sc.Preset, sc.Devices, sc.Transport, sc.Duration, sc.CrashMode)
	if sc.KillEvery > 0 {
		fmt.Fprintf(&b, ", broker kill -9 every %s", sc.KillEvery)
	}
	fmt.Fprintf(&b, ", seed %d\n\n", sc.Seed)
	t := r.Totals
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "calls acknowledged\t%s\t(%s/s over %.1fs)\n", thousands(t.Calls), formatFloat(t.CallsPerSec, 1), r.LoadSeconds)
	fmt.Fprintf(tw, "notifications\t%s PUBACKed, %s delivered\t(%s/s; drain %.1fs)\n", thousands(t.Notified), thousands(t.Delivered), formatFloat(t.NotesPerSec, 1), r.DrainSeconds)
	fmt.Fprintf(tw, "devices\t%s begins, %s crashes, %s switches\t\n", thousands(t.Begins), thousands(t.Crashes), thousands(t.Switches))
	fmt.Fprintf(tw, "broker restarts\t%d\t\n", t.Restarts)
	tw.Flush()
	b.WriteString("\n")
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "latency\tcount\tp50 ms\tp95 ms\tp99 ms\tmax ms\t")
	for _, l := range r.Latency {
		if l.Count == 0 {
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", l.Name, thousands(l.Count), ms(l.P50), ms(l.P95), ms(l.P99), ms(l.Max))
	}
	tw.Flush()
	b.WriteString("\ninvariants\n")
	failed := 0
	for _, i := range r.Invariants {
		mark := "PASS"
		switch {
		case !i.Pass && i.Advisory:
			mark = "WARN"
		case !i.Pass:
			mark = "FAIL"
			failed++
		}
		fmt.Fprintf(&b, "  %s  %-62s %s %s, %d violations\n", mark, i.Name, thousands(i.Checked), i.Unit, i.Violations)
		for _, e := range i.Examples {
			fmt.Fprintf(&b, "          e.g. %s\n", e)
		}
	}
	if failed == 0 {
		b.WriteString("\nRESULT: PASS (every invariant holds)\n")
	} else {
		fmt.Fprintf(&b, "\nRESULT: FAIL (%d invariants violated)\n", failed)
	}
	return b.String()
}

var htmlReport = template.Must(template.New("report").Funcs(template.FuncMap{
	"ms":   ms,
	"bars": bars,
}).Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>device-sim report</title>
<style>body{font:14px system-ui,sans-serif;margin:2em;max-width:60em}table{border-collapse:collapse}td,th{padding:.2em .8em;text-align:right}
td:first-child,th:first-child{text-align:left}.pass{color:#070}.fail{color:#b00;font-weight:bold}svg{background:#fafafa;margin:.3em 0 1em}</style></head>
<body><h1>device-sim: {{if .Passed}}<span class="pass">PASS</span>{{else}}<span class="fail">FAIL</span>{{end}}</h1>
<p>preset {{.Scenario.Preset}}, {{.Scenario.Devices}} devices, {{.Scenario.Duration}}, {{.Scenario.Transport}}, crash mode {{.Scenario.CrashMode}}, broker kill every {{.Scenario.KillEvery}}, seed {{.Scenario.Seed}}</p>
<h2>Invariants</h2><table><tr><th>invariant</th><th>result</th><th>checked</th><th>violations</th></tr>
{{range .Invariants}}<tr><td>{{.Name}}</td><td>{{if .Pass}}<span class="pass">pass</span>{{else if .Advisory}}<span class="fail">warn</span>{{else}}<span class="fail">FAIL</span>{{end}}</td><td>{{.Checked}} {{.Unit}}</td><td>{{.Violations}}</td></tr>
{{range .Examples}}<tr><td colspan="4" style="text-align:left;color:#b00">e.g. {{.}}</td></tr>{{end}}{{end}}</table>
<h2>Throughput</h2><p>{{.Totals.Calls}} calls acknowledged ({{printf "%.1f" .Totals.CallsPerSec}}/s); {{.Totals.Notified}} notifications PUBACKed, {{.Totals.Delivered}} delivered ({{printf "%.1f" .Totals.NotesPerSec}}/s); {{.Totals.Begins}} begins, {{.Totals.Crashes}} crashes, {{.Totals.Switches}} switches, {{.Totals.Restarts}} broker restarts.</p>
<h2>Latency</h2><table><tr><th></th><th>count</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>max ms</th></tr>
{{range .Latency}}{{if .Count}}<tr><td>{{.Name}}</td><td>{{.Count}}</td><td>{{ms .P50}}</td><td>{{ms .P95}}</td><td>{{ms .P99}}</td><td>{{ms .Max}}</td></tr>{{end}}{{end}}</table>
{{range .Latency}}{{if .Count}}<h3>{{.Name}}</h3>{{bars .Buckets}}{{end}}{{end}}
</body></html>
`))

// bars draws a histogram as an SVG bar chart (log-spaced latency buckets).
func bars(bs []Bucket) template.HTML {
	if len(bs) == 0 {
		return ""
	}
	const w, h, pad = 640, 160, 30
	peak := 1
	for _, b := range bs {
		peak = max(peak, b.Count)
	}
	bw := float64(w-2*pad) / float64(len(bs))
	var s strings.Builder
	fmt.Fprintf(&s, `<svg width="%d" height="%d" xmlns="http://www.w3.org/2000/svg">`, w, h+40)
	for i, b := range bs {
		bh := float64(h-10) * float64(b.Count) / float64(peak)
		x := float64(pad) + float64(i)*bw
		fmt.Fprintf(&s, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#4a7"><title>≤ %s ms: %d</title></rect>`,
			x, float64(h)-bh, bw-1, bh, ms(time.Duration(b.UpperNs)), b.Count)
		if i%4 == 0 {
			fmt.Fprintf(&s, `<text x="%.1f" y="%d" font-size="10">%s</text>`, x, h+14, ms(time.Duration(b.UpperNs)))
		}
	}
	fmt.Fprintf(&s, `<text x="%d" y="%d" font-size="11">ms (upper bound of each bar)</text></svg>`, pad, h+32)
	return template.HTML(s.String())
}

// HTML is the report as a page with latency histograms.
func (r *Report) HTML() []byte {
	var b bytes.Buffer
	if err := htmlReport.Execute(&b, r); err != nil {
		return []byte("report: " + err.Error())
	}
	return b.Bytes()
}
