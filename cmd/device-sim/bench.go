package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"
)

// benchFlags are the flags every benchmark shares.
type benchFlags struct {
	timeout   time.Duration
	jsonFile  string
	docFile   string
	brokerBin string
	keep      bool
	cpuprof   string
}

func (b *benchFlags) register(fs *flag.FlagSet) {
	fs.DurationVar(&b.timeout, "timeout", 3*time.Minute, "bound on each measured run")
	fs.StringVar(&b.jsonFile, "json", "", "also write the results as JSON to this file")
	fs.StringVar(&b.docFile, "doc", "", "write the results as a Markdown section into this file (e.g. docs/benchmarks.md), replacing the previous one")
	fs.StringVar(&b.brokerBin, "broker-bin", "", "Tether broker binary for subprocess runs (default: go build ./cmd/broker)")
	fs.BoolVar(&b.keep, "keep", false, "keep the temporary data directories")
	fs.StringVar(&b.cpuprof, "cpuprofile", "", "write a CPU profile of this process (in-process brokers included) to this file")
}

// profile starts the CPU profile asked for, if any; the returned func stops it.
func (b *benchFlags) profile() (func(), error) {
	if b.cpuprof == "" {
		return func() {}, nil
	}
	f, err := os.Create(b.cpuprof)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// benchCmd dispatches `device-sim bench <what>`.
func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("bench: want pubsub, calls, idle, connect or all")
	}
	switch args[0] {
	case "pubsub":
		return benchPubsubCmd(ctx, args[1:], stdout, stderr)
	case "calls":
		return benchCallsCmd(ctx, args[1:], stdout, stderr)
	case "idle":
		return benchIdleCmd(ctx, args[1:], stdout, stderr)
	case "connect":
		return benchConnectCmd(ctx, args[1:], stdout, stderr)
	case "all":
		for _, sub := range []func(context.Context, []string, io.Writer, io.Writer) error{benchPubsubCmd, benchCallsCmd, benchIdleCmd, benchConnectCmd} {
			if err := sub(ctx, args[1:], stdout, stderr); err != nil {
				return err
			}
		}
		return nil
	}
	return usagef("bench: unknown benchmark %q (want pubsub, calls, idle, connect or all)", args[0])
}

// publish writes a benchmark's results: table to stdout, results as JSON
// (--json), and the section doc returns into the doc file (--doc, which
// alone calls doc).
func (b *benchFlags) publish(stdout io.Writer, section, table string, results any, doc func() string) error {
	fmt.Fprint(stdout, table)
	if b.jsonFile != "" {
		if err := writeJSON(b.jsonFile, results); err != nil {
			return err
		}
	}
	if b.docFile != "" {
		return updateDoc(b.docFile, "device-sim bench "+section, doc())
	}
	return nil
}

// parseCounts parses a comma-separated list of numbers in 1..max, the
// value of flag what.
func parseCounts(what, list string, max int) ([]int, error) {
	var out []int
	for _, f := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > max {
			return nil, usagef("%s: %q is not a number in 1..%d", what, f, max)
		}
		out = append(out, n)
	}
	return out, nil
}

// tempDir makes a scratch directory, removed by the returned func unless keep.
func tempDir(prefix string, keep bool, stderr io.Writer) (string, func(), error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", nil, err
	}
	return dir, func() {
		if keep {
			fmt.Fprintln(stderr, "kept", dir)
			return
		}
		_ = os.RemoveAll(dir)
	}, nil
}

// writeJSON writes v to file, indented.
func writeJSON(file string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(file, append(b, '\n'), 0o644)
}

// commandLine is how the user ran this, for the docs.
func commandLine() string {
	args := append([]string{"device-sim"}, os.Args[1:]...)
	tmp := filepath.Clean(os.TempDir()) + string(filepath.Separator)
	for i, a := range args {
		if strings.HasPrefix(a, tmp) { // a scratch build: its name says enough
			a = "$TMP/" + filepath.Base(a)
			args[i] = a
		}
		if strings.ContainsAny(a, " \"'") {
			args[i] = strconv.Quote(a)
		}
	}
	return strings.Join(args, " ")
}

// machine describes where a benchmark ran.
func machine() string {
	return fmt.Sprintf("%d CPUs, %s/%s, %s", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
}

// updateDoc replaces the section between `<!-- begin NAME -->` and
// `<!-- end NAME -->` in file with body, or appends it when absent.
func updateDoc(file, name, body string) error {
	old, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	begin, end := "<!-- begin "+name+" -->", "<!-- end "+name+" -->"
	section := begin + "\n" + strings.TrimRight(body, "\n") + "\n" + end
	i, j := bytes.Index(old, []byte(begin)), bytes.Index(old, []byte(end))
	var out []byte
	if i >= 0 && j > i {
		out = append(append(bytes.Clone(old[:i]), section...), old[j+len(end):]...)
	} else {
		out = append(bytes.TrimRight(old, "\n"), "\n\n"+section+"\n"...)
	}
	return os.WriteFile(file, out, 0o644)
}

func formatFloat(f float64, prec int) string { return strconv.FormatFloat(f, 'f', prec, 64) }

// thousands formats n with thin separators: 12,345.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// today is the date benchmarks are stamped with.
func today() string { return time.Now().Format("2006-01-02") }
