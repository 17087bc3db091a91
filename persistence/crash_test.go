package persistence_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/persistence"
)

// crashDirEnv tells the re-executed test binary to act as the crash writer
// on the given data directory.
const crashDirEnv = "TETHER_CRASH_WRITER_DIR"

var crashPrefix = persistence.Prefix("crash")

// TestHelperCrashWriter is not a test on its own: TestDurableAcrossKill runs
// the test binary again with only this test selected. It commits one key per
// Update and reports each acknowledged commit on stdout, until it is killed.
func TestHelperCrashWriter(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("helper process for TestDurableAcrossKill")
	}
	cfg := testConfig(dir)
	cfg.SyncWrites = true
	s, err := persistence.Open(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	for i := uint64(0); ; i++ {
		err := s.Update(func(tx persistence.Txn) error {
			return tx.Set(persistence.Uint64Key(crashPrefix, i), []byte(strconv.FormatUint(i, 10)))
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "update:", err)
			os.Exit(2)
		}
		// os.Stdout is unbuffered: the line is in the pipe once Println returns.
		fmt.Println("committed", i)
	}
}

// TestDurableAcrossKill kills a writer process with SIGKILL in the middle of
// a stream of commits and checks that every commit it acknowledged is there
// after reopening. (SIGKILL proves nothing is held back in the process; it
// cannot prove the fsync itself, which only a power cut would.)
func TestDurableAcrossKill(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a process")
	}
	dir := t.TempDir()
	const killAfter = 200

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperCrashWriter$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})

	// The reader goroutine only passes lines on; the test goroutine decides.
	lines, stop := make(chan string), make(chan struct{})
	t.Cleanup(func() { close(stop) })
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-stop:
				return
			}
		}
	}()
	acked := map[uint64]bool{}
	timeout := time.After(2 * time.Minute)
read:
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				break read // EOF: the writer is dead (killed, or exited early: caught below)
			}
			rest, ok := strings.CutPrefix(line, "committed ")
			if !ok {
				continue // anything the test framework prints
			}
			n, err := strconv.ParseUint(rest, 10, 64)
			require.NoError(t, err, "line %q", line)
			acked[n] = true
			if len(acked) == killAfter {
				require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
				killed = true
			}
		case <-timeout:
			t.Fatalf("writer acknowledged only %d commits in 2m; stderr:\n%s", len(acked), stderr.String())
		}
	}
	require.True(t, killed, "writer exited before it was killed; stderr:\n%s", stderr.String())
	err = cmd.Wait()
	require.Error(t, err)
	require.Contains(t, err.Error(), "killed")
	// Lines already in the pipe when the kill landed were read too.
	require.GreaterOrEqual(t, len(acked), killAfter)

	s, err := persistence.Open(testConfig(dir))
	require.NoError(t, err, "reopen after the crash")
	defer s.Close()
	stored := map[uint64]bool{}
	require.NoError(t, s.View(func(tx persistence.Txn) error {
		return tx.Scan(crashPrefix, nil, func(k, v []byte) (bool, error) {
			n, err := persistence.Uint64Suffix(k)
			require.NoError(t, err)
			require.Equal(t, strconv.FormatUint(n, 10), string(v))
			stored[n] = true
			return true, nil
		})
	}))
	for n := range acked {
		require.True(t, stored[n], "commit %d was acknowledged but is missing after the crash", n)
	}
	// Commits are sequential, so at most the one in flight at the kill may
	// be stored without having been acknowledged.
	require.LessOrEqual(t, len(stored), len(acked)+1)
	t.Logf("acknowledged %d commits, found %d after SIGKILL", len(acked), len(stored))
}
