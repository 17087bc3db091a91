package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/client"
	"github.com/f47fa0da/tether/internal/brokertest"
	"github.com/f47fa0da/tether/sessions"
)

// shopServer is a real broker with the shop's handlers, as `serve` runs it.
func shopServer(t *testing.T) *broker.Broker {
	t.Helper()
	b := brokertest.Start(t, brokertest.Config(t))
	registerShop(b)
	return b
}

func shopperConfig(t *testing.T, b *broker.Broker, user string) client.Config {
	t.Helper()
	cfg := client.DefaultConfig()
	cfg.URL, cfg.User, cfg.Token = "tcp://"+b.Addrs().MQTT, user, brokertest.Token(t, b, user, auth.RoleDevice)
	return cfg
}

func onceEach(list []string) map[string]int {
	want := map[string]int{}
	for _, item := range list {
		want[item] = 1
	}
	return want
}

func TestShopperBuysEachItemOnceDespiteCrashes(t *testing.T) {
	tests := []struct {
		name string
		seed uint64
		rate float64
	}{
		{"seed 7", 7, 0.5},
		{"seed 42", 42, 0.6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := shopServer(t)
			cfg := shopperConfig(t, b, "alice")
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()

			var out bytes.Buffer
			s := &Shopper{Client: cfg, List: DefaultList, Plan: NewPlan(tt.seed, tt.rate), Reboot: 50 * time.Millisecond, Out: &out}
			st, err := s.Run(ctx)
			t.Logf("shopper:\n%s", out.String())
			require.NoError(t, err)

			// Every crash point happened, and at least one in-flight buy
			// committed without its reply reaching the shopper.
			require.Positive(t, st.BeforeSend, "crashes before sending")
			require.Positive(t, st.InFlight, "crashes in flight")
			require.Positive(t, st.ReplyLost, "in-flight buys committed whose reply was lost")
			require.Positive(t, st.AfterReply, "crashes after the reply")
			require.Zero(t, st.Errors, "no request failed on its own")
			require.Equal(t, st.Lives-1, st.Crashes(), "every life but the last crashed")

			// No toaster bought twice: the app state has each item once.
			counts, err := Counters(ctx, cfg)
			require.NoError(t, err)
			require.Equal(t, onceEach(DefaultList), counts)

			// A receipt per item, in list order, none twice: each was
			// notified by the buy that committed, with it.
			receipts, err := b.Outq("alice", ReceiptsSession, 0)
			require.NoError(t, err)
			var got []string
			for _, r := range receipts {
				var rc Receipt
				require.NoError(t, json.Unmarshal(r.Data, &rc))
				require.Equal(t, 1, rc.Count, "%s", r.Data)
				got = append(got, rc.Item)
			}
			require.Equal(t, DefaultList, got)

			// The journal: one begin per life, crashed=true after every
			// crash; one committed buy per item, in list order, each with
			// its index as memento; one end.
			events, err := b.Sessions().Log("alice", SessionName, 0, 0)
			require.NoError(t, err)
			var begins, crashed, ends int
			var mementos []string
			for _, e := range events {
				switch e.Kind {
				case "begin":
					begins++
					if e.Detail["crashed"] == true {
						crashed++
					}
				case "call":
					require.Equal(t, methodBuy, e.Detail["method"])
					m, err := json.Marshal(e.Detail["memento"])
					require.NoError(t, err)
					mementos = append(mementos, string(m))
				case "end":
					ends++
				}
			}
			require.Equal(t, st.Lives, begins, "a begin per life")
			require.Equal(t, st.Lives-1, crashed, "a crashed begin after every crash")
			require.Equal(t, []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}, mementos)
			require.Equal(t, 1, ends)

			sess, err := b.Sessions().Get("alice", SessionName)
			require.NoError(t, err)
			require.Equal(t, sessions.StateEnded, sess.State)
		})
	}
}

func TestPlan(t *testing.T) {
	draw := func(p *Plan, n int) []Crash {
		out := make([]Crash, n)
		for i := range out {
			out[i] = p.Next()
		}
		return out
	}
	kinds := func(cs []Crash) map[Crash]int {
		m := map[Crash]int{}
		for _, c := range cs {
			m[c]++
		}
		return m
	}
	tests := []struct {
		name string
		plan *Plan
		want map[Crash]bool // which kinds occur in 200 draws
	}{
		{"nil plan never crashes", nil, map[Crash]bool{NoCrash: true}},
		{"rate 0 never crashes", NewPlan(7, 0), map[Crash]bool{NoCrash: true}},
		{"rate 1 always crashes", NewPlan(7, 1), map[Crash]bool{CrashBeforeSend: true, CrashInFlight: true, CrashAfterReply: true}},
		{"rate 0.5 mixes all", NewPlan(7, 0.5), map[Crash]bool{NoCrash: true, CrashBeforeSend: true, CrashInFlight: true, CrashAfterReply: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := kinds(draw(tt.plan, 200))
			for _, c := range []Crash{NoCrash, CrashBeforeSend, CrashInFlight, CrashAfterReply} {
				require.Equal(t, tt.want[c], got[c] > 0, "%s: %d draws", c, got[c])
			}
		})
	}
	t.Run("same seed, same crash points", func(t *testing.T) {
		require.Equal(t, draw(NewPlan(42, 0.5), 100), draw(NewPlan(42, 0.5), 100))
		require.NotEqual(t, draw(NewPlan(42, 0.5), 100), draw(NewPlan(43, 0.5), 100))
	})
}

// TestCommands runs the commands of the README against a real broker:
// token (through the broker's admin listener), shop, counters.
func TestCommands(t *testing.T) {
	cfg := brokertest.Config(t)
	b := brokertest.Start(t, cfg)
	registerShop(b)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	url := "tcp://" + b.Addrs().MQTT

	var out, errs bytes.Buffer
	require.NoError(t, run(ctx, []string{"token", "--data", cfg.DataDir, "--user", "carol"}, &out, &errs), errs.String())
	token := strings.TrimSpace(out.String())
	require.NotEmpty(t, token)

	out.Reset()
	err := run(ctx, []string{"shop", "--url", url, "--user", "carol", "--token", token,
		"--seed", "3", "--crash-rate", "0.5", "--items", "toaster,kettle,lamp,radio"}, &out, &errs)
	t.Logf("shop:\n%s", out.String())
	require.NoError(t, err, errs.String())
	require.Contains(t, out.String(), "seed 3, crash rate 0.50\n")
	require.Contains(t, out.String(), "begin crashed=true")
	require.Contains(t, out.String(), "done: lives=")
	require.Contains(t, out.String(), "counters:\n  kettle     1\n  lamp       1\n  radio      1\n  toaster    1\n")

	out.Reset()
	require.NoError(t, run(ctx, []string{"counters", "--url", url, "--user", "carol", "--token", token}, &out, &errs), errs.String())
	require.Equal(t, "counters:\n  kettle     1\n  lamp       1\n  radio      1\n  toaster    1\n", out.String())

	err = run(ctx, []string{"shop", "--url", url, "--user", "carol", "--token", "wrong", "--crash-rate", "0"}, &out, &errs)
	require.Error(t, err, "refused credentials are not cured by a restart")

	require.ErrorAs(t, run(ctx, []string{"sell"}, &out, &errs), new(usageError))
}
