package quiz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/f47fa0da/tether/client"
)

// Candidate takes the quiz as one user on one device, answering by itself
// (deterministically) and printing every screen, answer and tick. It keeps
// no state of its own: everything it needs to resume is in the session.
type Candidate struct {
	// Client says where and as whom to connect; Session is always SessionName.
	Client client.Config
	// Pace is how long the candidate looks at each question before answering.
	Pace time.Duration
	// BusyWait is how long to keep retrying a begin refused because the quiz
	// is live on another device (e.g. this device before it crashed, until
	// the broker notices); 0 gives up at once.
	BusyWait time.Duration
	// Out receives what the candidate sees and does; nil means os.Stdout.
	Out io.Writer

	mu sync.Mutex // serialises lines on Out
}

// ErrTimeUp is returned by Run when the window closed before the test was done.
var ErrTimeUp = errors.New("quiz: time is up")

// Run takes the quiz from wherever the session says the candidate is, to
// the end of the test. It returns an error matching ErrTimeUp and
// client.ErrExpired when the window closes first, and one matching
// client.ErrSessionBusy when another device holds the quiz.
func (c *Candidate) Run(ctx context.Context) error {
	cfg := c.Client
	cfg.Session = SessionName
	cl, err := client.Dial(ctx, cfg)
	if err != nil {
		return err
	}
	defer cl.Close()

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); c.watch(ctx, cl) }()
	defer func() { cancel(); wg.Wait() }()

	err = c.take(ctx, cl)
	if errors.Is(err, client.ErrExpired) {
		c.printf("time is up: the test is closed")
		return fmt.Errorf("%w: %w", ErrTimeUp, err)
	}
	return err
}

// take runs the phases from the one begin returns.
func (c *Candidate) take(ctx context.Context, cl *client.Client) error {
	b, err := c.begin(ctx, cl)
	if err != nil {
		return err
	}
	phase := Phase(b.Phase)
	if phase == "" {
		phase = DemoNotTaken
	}
	var p Progress
	if len(b.Memento) > 0 && string(b.Memento) != "null" {
		if err := json.Unmarshal(b.Memento, &p); err != nil {
			return fmt.Errorf("quiz: memento %s: %w", b.Memento, err)
		}
	}
	c.printf("begin: crashed=%t phase=%s left=%s", b.Crashed, phase, left(b.RemainingMs))
	for {
		switch phase {
		case DemoNotTaken:
			c.printf("screen: demo instructions")
			phase, p = DemoStarted, Progress{}
		case DemoStarted:
			if err := c.answer(ctx, cl, Demo, &p, false); err != nil {
				return err
			}
			phase, p = TestNotTaken, Progress{}
		case TestNotTaken:
			c.printf("screen: test instructions (%d questions, %+d right, %+d wrong)", len(Test), PointsRight, PointsWrong)
			phase, p = TestStarted, Progress{}
		case TestStarted:
			if err := c.answer(ctx, cl, Test, &p, true); err != nil {
				return err
			}
			phase = TestFinished
		case TestFinished:
			if b.Phase == string(TestFinished) && p.Asked == nil {
				c.printf("screen: results (the test was already submitted)")
			} else {
				c.printf("finished: score %d of %d", p.Score, len(Test)*PointsRight)
			}
			if err := cl.End(ctx); err != nil {
				return fmt.Errorf("quiz: end: %w", err)
			}
			return nil
		default:
			return fmt.Errorf("quiz: unknown phase %q", phase)
		}
		// The new phase and its fresh progress commit together.
		if err := remember(ctx, cl, p, &phase); err != nil {
			return err
		}
		c.printf("phase: %s", phase)
	}
}

// begin begins the session, retrying for BusyWait while another device holds it.
func (c *Candidate) begin(ctx context.Context, cl *client.Client) (client.Begun, error) {
	give := time.Now().Add(c.BusyWait)
	for {
		b, err := cl.Begin(ctx)
		if !errors.Is(err, client.ErrSessionBusy) || time.Now().After(give) {
			return b, err
		}
		c.printf("busy: the quiz is open on another device; retrying")
		if err := sleep(ctx, 500*time.Millisecond); err != nil {
			return b, err
		}
	}
}

// answer asks the questions of qs not yet asked, committing each to the
// memento before it is shown and again with its answer.
func (c *Candidate) answer(ctx context.Context, cl *client.Client, qs []Question, p *Progress, scored bool) error {
	if p.Current != "" {
		c.printf("skip %s: shown before the crash, not answered (0 points)", p.Current)
		p.Current = ""
		if err := remember(ctx, cl, *p, nil); err != nil {
			return err
		}
	}
	for {
		q, ok := next(qs, p.Asked)
		if !ok {
			return nil
		}
		p.Asked, p.Current = append(p.Asked, q.ID), q.ID
		if err := remember(ctx, cl, *p, nil); err != nil { // before it is shown
			return err
		}
		_ = cl.SetCursor(map[string]string{"question": q.ID}) // the next ping journals what is on screen
		c.printf("ask %s: %s [%s]", q.ID, q.Text, strings.Join(q.Choices, " | "))
		if err := sleep(ctx, c.Pace); err != nil {
			return err
		}
		choice := c.choose(q)
		verdict, pts := "wrong", PointsWrong
		if choice == q.Answer {
			verdict, pts = "right", PointsRight
		}
		p.Current = ""
		if scored {
			p.Score += pts
		} else {
			verdict, pts = "demo", 0
		}
		if err := remember(ctx, cl, *p, nil); err != nil {
			return err
		}
		c.printf("answer %s: %s (%s, %+d, score %d)", q.ID, q.Choices[choice], verdict, pts, p.Score)
	}
}

// choose is the candidate's answer: the same for the same user and
// question, right about two times in three.
func (c *Candidate) choose(q Question) int {
	h := fnv.New32a()
	h.Write([]byte(c.Client.User + "/" + q.ID))
	if h.Sum32()%3 != 0 {
		return q.Answer
	}
	return (q.Answer + 1) % len(q.Choices)
}

// watch prints the time left on every tick, and changes in the link.
func (c *Candidate) watch(ctx context.Context, cl *client.Client) {
	for {
		select {
		case <-ctx.Done():
			return
		case t := <-cl.Ticks():
			if d, ok := t.Remaining(); ok {
				c.printf("tick: %s left (%s, %s)", d.Round(100*time.Millisecond), t.State, t.Phase)
			}
		case e := <-cl.Events():
			c.printf("link: %s", e)
		}
	}
}

func remember(ctx context.Context, cl *client.Client, p Progress, phase *Phase) error {
	var ph *string
	if phase != nil {
		s := string(*phase)
		ph = &s
	}
	if err := cl.Remember(ctx, p, ph); err != nil {
		return fmt.Errorf("quiz: remember: %w", err)
	}
	return nil
}

func (c *Candidate) printf(format string, a ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.Out
	if out == nil {
		out = os.Stdout
	}
	fmt.Fprintf(out, format+"\n", a...)
}

func left(ms *int64) string {
	if ms == nil {
		return "unlimited"
	}
	return (time.Duration(*ms) * time.Millisecond).Round(100 * time.Millisecond).String()
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
