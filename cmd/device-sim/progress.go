package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// progress prints a live status line: rewritten in place on a terminal,
// a plain line every few seconds otherwise.
type progress struct {
	s     *sim
	w     io.Writer
	tty   bool
	start time.Time
	stage atomic.Value // string
	done  chan struct{}
	wg    sync.WaitGroup
}

func startProgress(s *sim, w io.Writer, quiet bool) *progress {
	p := &progress{s: s, w: w, tty: isTerminal(w), start: time.Now(), done: make(chan struct{})}
	p.stage.Store("load")
	if quiet {
		return p
	}
	every := 5 * time.Second
	if p.tty {
		every = 500 * time.Millisecond
	}
	p.wg.Add(1)
	go p.loop(every)
	return p
}

func (p *progress) loop(every time.Duration) {
	defer p.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	var lastCalls, lastNotes int64
	last := time.Now()
	for {
		select {
		case <-p.done:
			if p.tty {
				fmt.Fprintln(p.w)
			}
			return
		case now := <-t.C:
			calls, notes := p.s.calls.Load(), p.s.delivered.Load()
			dt := now.Sub(last).Seconds()
			up := 0
			for _, sl := range p.s.slots {
				if sl.cur.Load() != nil {
					up++
				}
			}
			line := fmt.Sprintf("%6.1fs %-5s devices up %d/%d  calls/s %6.0f  notifications/s %6.0f  pending %d  crashes %d  switches %d  restarts %d",
				now.Sub(p.start).Seconds(), p.stage.Load(), up, len(p.s.slots), float64(calls-lastCalls)/dt, float64(notes-lastNotes)/dt,
				p.s.pending.Load(), p.s.crashes.Load(), p.s.switches.Load(), p.s.restarts.Load())
			lastCalls, lastNotes, last = calls, notes, now
			if p.tty {
				fmt.Fprintf(p.w, "\r\033[K%s", line)
			} else {
				fmt.Fprintln(p.w, line)
			}
		}
	}
}

func (p *progress) phase(name string) { p.stage.Store(name) }

func (p *progress) stop() {
	select {
	case <-p.done:
	default:
		close(p.done)
	}
	p.wg.Wait()
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
