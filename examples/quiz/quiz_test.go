package quiz_test

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/client"
	"github.com/f47fa0da/tether/examples/quiz"
	"github.com/f47fa0da/tether/internal/brokertest"
	"github.com/f47fa0da/tether/sessions"
)

const (
	user     = "alice"
	tick     = 200 * time.Millisecond
	liveness = 5 * time.Second
	waitLong = 15 * time.Second
)

// quizServer is a real broker with the quiz's rule, as `quiz serve` runs it
// but with a window of seconds, and a token for the candidate.
type quizServer struct {
	b     *broker.Broker
	cfg   broker.Config
	url   string
	token string
}

func startServer(t *testing.T, window time.Duration) quizServer {
	t.Helper()
	rule := sessions.Rule{Pattern: "quiz", Policy: sessions.Policy{Mode: sessions.Exclusive, Window: window, Liveness: liveness}}
	require.Equal(t, rule, quiz.Rule(window, liveness), "the test's rule is the one `quiz serve` installs")
	cfg := brokertest.Config(t)
	cfg.Sessions.TickInterval = tick
	cfg.Sessions.Rules = []sessions.Rule{rule}
	b := brokertest.Start(t, cfg)
	return quizServer{b: b, cfg: cfg, url: "tcp://" + b.Addrs().MQTT, token: brokertest.Token(t, b, user, auth.RoleDevice)}
}

func (s quizServer) clientConfig() client.Config {
	cfg := client.DefaultConfig()
	cfg.URL, cfg.User, cfg.Token, cfg.Session, cfg.TickInterval = s.url, user, s.token, quiz.SessionName, tick
	return cfg
}

func (s quizServer) session(t *testing.T) sessions.Session {
	t.Helper()
	sess, err := s.b.Sessions().Get(user, quiz.SessionName)
	require.NoError(t, err)
	return sess
}

func TestQuiz(t *testing.T) {
	t.Run("crash mid-test and resume", func(t *testing.T) {
		t.Parallel()
		bin := buildQuiz(t)
		srv := startServer(t, 30*time.Second)
		ctx := context.Background()

		// Run 1: the candidate goes through the demo into the test.
		run1 := startCandidate(t, bin, srv)
		run1.waitLine(t, "ask t2:")

		// While run 1 is live, a second device cannot begin the quiz.
		other, err := client.Dial(ctx, srv.clientConfig())
		require.NoError(t, err)
		_, err = other.Begin(ctx)
		require.ErrorIs(t, err, client.ErrSessionBusy)
		other.Close()

		// Crash: kill -9 after the third test answer; nothing local survives.
		run1.waitLine(t, "answer t3:")
		require.NoError(t, run1.cmd.Process.Kill())
		require.Error(t, run1.cmd.Wait())
		require.Contains(t, run1.cmd.ProcessState.String(), "killed")

		// The broker sees the socket close: the instance is detached, not ended.
		brokertest.WaitFor(t, waitLong, "the crashed instance to be detached", func() bool {
			return srv.session(t).State == sessions.StateDetached
		})
		require.NotEmpty(t, srv.session(t).Nonce, "a crash does not end the instance")

		// Run 2: a fresh process resumes and finishes.
		run2 := startCandidate(t, bin, srv)
		done := make(chan error, 1)
		go func() { done <- run2.cmd.Wait() }()
		select {
		case err := <-done:
			require.NoError(t, err, "run 2:\n%s", run2.out.String())
		case <-time.After(waitLong):
			t.Fatalf("run 2 did not finish:\n%s", run2.out.String())
		}
		lines1, lines2 := run1.out.lines(), run2.out.lines()
		t.Logf("run 1:\n%s\nrun 2:\n%s", strings.Join(lines1, "\n"), strings.Join(lines2, "\n"))

		// Begin tells each run where to start.
		require.True(t, strings.HasPrefix(find(t, lines1, "begin:"), "begin: crashed=false phase=demo_not_taken left="))
		require.True(t, strings.HasPrefix(find(t, lines2, "begin:"), "begin: crashed=true phase=test_started left="))
		for _, l := range lines2 {
			require.False(t, strings.HasPrefix(l, "ask d") || strings.HasPrefix(l, "screen:"), "run 2 resumed in the test, not at %q", l)
		}

		// No question is ever shown twice; every one was shown or forfeited.
		asked := append(ids(lines1, "ask "), ids(lines2, "ask ")...)
		skipped := ids(lines2, "skip ")
		seen := map[string]int{}
		for _, id := range asked {
			seen[id]++
			require.Equal(t, 1, seen[id], "question %s asked twice; asked: %v", id, asked)
		}
		require.Subset(t, ids(lines1, "ask "), []string{"d1", "d2", "t1", "t2", "t3"})
		require.NotContains(t, ids(lines2, "ask "), "t3")
		require.LessOrEqual(t, len(skipped), 1, "at most the question on screen at the crash is forfeited")
		for _, id := range skipped {
			require.NotContains(t, ids(lines2, "ask "), id)
			seen[id]++
		}
		for _, q := range append(append([]quiz.Question{}, quiz.Demo...), quiz.Test...) {
			require.NotZero(t, seen[q.ID], "question %s never reached", q.ID)
		}

		// The score carried over the crash: the last answer's running score is final.
		last := lastWith(lines2, "answer ")
		var score int
		_, err = fmt.Sscanf(last[strings.LastIndex(last, "score "):], "score %d)", &score)
		require.NoError(t, err, last)
		require.Contains(t, lines2, fmt.Sprintf("finished: score %d of %d", score, len(quiz.Test)*quiz.PointsRight))

		// The phase is stored with the session; the instance ended cleanly.
		s := srv.session(t)
		require.Equal(t, string(quiz.TestFinished), s.Phase)
		require.Equal(t, sessions.StateEnded, s.State)

		// Every tick showed the time left, counting down across the crash:
		// the window runs from the first begin, not from the restart.
		t1, t2 := ticks(t, lines1), ticks(t, lines2)
		require.GreaterOrEqual(t, len(t1), 3)
		require.GreaterOrEqual(t, len(t2), 3)
		all := append(t1, t2...)
		for i := 1; i < len(all); i++ { // ticks and ping replies may pass each other by a few ms
			require.LessOrEqual(t, all[i], all[i-1]+2*tick, "time left went up: %v", all)
		}
		require.Less(t, t1[len(t1)-1], t1[0])
		require.Less(t, t2[0], t1[0])
		require.Less(t, t2[len(t2)-1], 30*time.Second-time.Second)

		// The report, through the running broker's admin endpoint.
		out, err := exec.Command(bin, "report", "--data", srv.cfg.DataDir, "--user", user).CombinedOutput()
		require.NoError(t, err, "%s", out)
		report := strings.Split(strings.TrimSpace(string(out)), "\n")
		t.Logf("report:\n%s", out)
		var begins []string
		for _, l := range report {
			if f := strings.Fields(l); len(f) > 1 && f[1] == "begin" {
				begins = append(begins, l)
			}
		}
		require.Len(t, begins, 2)
		require.Contains(t, begins[0], " crashed=false ")
		require.Contains(t, begins[1], " crashed=true ")
		require.Contains(t, begins[1], " policy=exclusive")
		var testIDs []string
		for _, q := range quiz.Test {
			testIDs = append(testIDs, q.ID)
		}
		require.Equal(t, fmt.Sprintf("summary: user=%s phase=test_finished begins=2 crashed=1 busy=1 shown=%s score=%d",
			user, strings.Join(testIDs, ","), score), report[len(report)-1])
	})

	t.Run("window closes", func(t *testing.T) {
		t.Parallel()
		srv := startServer(t, 1500*time.Millisecond)
		ctx := context.Background()
		var out lineBuffer
		c := &quiz.Candidate{Client: srv.clientConfig(), Pace: 200 * time.Millisecond, Out: &out}
		err := c.Run(ctx) // 12 questions at 200 ms do not fit in 1.5 s
		require.ErrorIs(t, err, quiz.ErrTimeUp)
		require.ErrorIs(t, err, client.ErrExpired)
		lines := out.lines()
		t.Logf("candidate:\n%s", strings.Join(lines, "\n"))
		require.Contains(t, lines, "time is up: the test is closed")
		require.NotContains(t, lines, "phase: test_finished")

		// After the window, begin fails on any device.
		cl, err := client.Dial(ctx, srv.clientConfig())
		require.NoError(t, err)
		defer cl.Close()
		_, err = cl.Begin(ctx)
		require.ErrorIs(t, err, client.ErrExpired)
		require.Equal(t, sessions.StateExpired, srv.session(t).State)
	})
}

// buildQuiz builds cmd/quiz, so the candidate runs as a real process that
// can be killed with SIGKILL.
func buildQuiz(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "quiz")
	out, err := exec.Command("go", "build", "-o", bin, "./cmd/quiz").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return bin
}

type candidateProc struct {
	cmd *exec.Cmd
	out *lineBuffer
}

func startCandidate(t *testing.T, bin string, srv quizServer) *candidateProc {
	t.Helper()
	p := &candidateProc{out: &lineBuffer{}}
	p.cmd = exec.Command(bin, "candidate", "--url", srv.url, "--user", user, "--token", srv.token,
		"--pace", "150ms", "--tick", tick.String(), "--busy-wait", "0s")
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	require.NoError(t, p.cmd.Start())
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
	})
	return p
}

func (p *candidateProc) waitLine(t *testing.T, prefix string) {
	t.Helper()
	brokertest.WaitFor(t, waitLong, "a line "+prefix, func() bool {
		return lastWith(p.out.lines(), prefix) != ""
	})
}

// lineBuffer collects a process's output; safe for concurrent writes.
type lineBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lineBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lineBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// lines returns the complete lines written so far.
func (l *lineBuffer) lines() []string {
	s := strings.Split(l.String(), "\n")
	return s[:len(s)-1]
}

func lastWith(lines []string, prefix string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], prefix) {
			return lines[i]
		}
	}
	return ""
}

func find(t *testing.T, lines []string, prefix string) string {
	t.Helper()
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	t.Fatalf("no line %q in:\n%s", prefix, strings.Join(lines, "\n"))
	return ""
}

// ids returns the question ids of lines like "ask t3: …", in order.
func ids(lines []string, prefix string) []string {
	var out []string
	for _, l := range lines {
		if rest, ok := strings.CutPrefix(l, prefix); ok {
			id, _, _ := strings.Cut(rest, ":")
			out = append(out, id)
		}
	}
	return out
}

// ticks returns the time left of lines like "tick: 29.4s left (…)", in order.
func ticks(t *testing.T, lines []string) []time.Duration {
	t.Helper()
	var out []time.Duration
	for _, l := range lines {
		rest, ok := strings.CutPrefix(l, "tick: ")
		if !ok {
			continue
		}
		s, _, _ := strings.Cut(rest, " left")
		d, err := time.ParseDuration(s)
		require.NoError(t, err, l)
		out = append(out, d)
	}
	return out
}
