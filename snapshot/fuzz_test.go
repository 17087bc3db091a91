package snapshot

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Golden blobs, sealed once by Seal with the keys below at goldenIssued
// with a 24h ttl. They are constants so that every fuzz worker process
// agrees on them (Seal draws a random nonce), and so that a change of the
// blob format that would strand blobs held by clients fails a test.
var (
	goldenIssued = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	goldenKeyNew = testKey("gold-new", 0x11)
	goldenKeyOld = testKey("gold-old", 0x22)
)

var goldenFullState = State{
	Nonce: "n1", Memento: json.RawMessage(`{"step":3,"items":["a","b"]}`), Phase: "pay",
	FirstBegin: goldenIssued.Add(-time.Hour), Deadline: goldenIssued.Add(2 * time.Hour),
	LastCallSeq: 5, Acked: 2, NextNotify: 3, Policy: json.RawMessage(`{"max":1}`),
}

type golden struct {
	text, user, session, keyID string
	version                    uint64
	state                      State
}

// goldens are format 2 blobs (what Seal writes now) followed by format 1
// blobs, which Open still accepts until they have expired.
var goldens = []golden{
	{
		text: "ts1.Aghnb2xkLW5ld8GecpYzPToHzZIjl2Fhy62B2A8r7mrHfQx4mKU45PyL7TSA4Y7NLT8H9C0kNLIa6NYLjzyoXoW69ipdKp6MiegoIg_jUlYwF82DudqarSS7jNahE3m5su9TyfQ_sXQaIC1U3-syrKrjFODoqmnlkTuZMGgWXlZnf6GirshVZeQVwxBg3-08kMr_iXc-XeOawZsiaV5K21whcCSujALKYfuMXrCtyHAFh3G4aT2izlvGO_ge8c5HGil2V7RagMg1MDSQeoTx6RAkmK7CKBAkD5uhpWBQmW5LzRLw_Ygvg356EYlvLCLoUkO6RfewFWt4iZz11yafQIn8EHp9EccmcZ6etTiTq81hgdMVoFpdzFVzQuo0cGz-k5E-oqjqC0RMuw4swA-p8U4lQPRKAx6WAjjQ2iBvTiQbOgtS4Dy37O57U4PMEqDHRJSW7PeWes2w2QyhbQxD3MxnwGAuUln2Z-kY0cCxB1ZQQw",
		user: "alice", session: "main", keyID: "gold-new", version: 7,
		state: goldenFullState,
	},
	{
		text: "ts1.Aghnb2xkLW5ld5xFnI0Aq6TkGnL9WCSfmZEhaUr3EqWRV3oSOJvfJajJ0L3OSIkdEtmIF7AVF_aD8wVEB9DihFsqViRAUTJwFcYoJn45k3_k01l9-87qiZwAv_D_CUpNisW6VaCjTZmJiRqMEaZvlgL3mje7ir6A6_IWmEWk2UiTJmlLWYTEmpAAnXylDdF3rkZOfB20NlEQyn5a0XTWubVGO1emZJCf22njXJ9N",
		user: "alice", session: "scratch", keyID: "gold-new", version: 1,
	},
	{
		text: "ts1.Aghnb2xkLW9sZOpuMdvIw4x_R4UIReP1KpDwM6_UIY038TxksO2qN_DYtxXcmPsBWHkisoWaWPPcMNcaDCYGMYYdQRAYVEtGE8fq-evjPqqMSV5pxg8mH67ZM36-xBb4UuYPsee6xJ5g9go3X4AL1td9weWCAJ_GBD9zJK-Oo3dS9-ZNC1PMctojbIe67luXKQBjdNsgy1Hmfd1n6ZpOUc4AfIF5Jhl1P5uRSmlbvAEBfDrBS-ZcIyB7yq9H6yRMBUcQlg",
		user: "bob", session: "main", keyID: "gold-old", version: 2,
		state: State{Phase: "idle", Memento: json.RawMessage(`[]`)},
	},
	{
		text: "ts1.AQhnb2xkLW5ld4LIXiFaBa_k_tvwhAa06rwagcoE-TsOz1nOhgKWWWkyJUbzHdADK3mOav6EyfN9xDbmE-08OTQJz2NBveFsSzSpb6OfhCTyzA6kuIp9Tj6mJY-Dds_FUQPgxLAMx4AD3A55LH6ZgdjqZcwE_ZN_zU7t1IyB9OYzE0-e2OeznXS34nN15o1pNoFd5SFdtaMN5vlLpAsDkkyP5PKzj8Wf_PWgxX4qlgBOqCR5B7nhB-URSTfn8NTUKzFUQIxMVKp5e4etxX4GshiURqfZIK5JtxtGj7m4rQJB5h0K-uW4xDREGCLU_P-T439mkEV1HD_Ie_3o3eiDUpX3WIsUL1BjaTBCk3LdlVIC-FX2qS6Mx4M1cAJWuxtUm14eNxY-cId_Le61Cpmdke9Y87GS27LMxW7D9rbgt1ZF96HTYnRZoFcS1gON-1ZlTTU2oNYBhpvO5IOYj_OnNTOsWu24ZykUxDYzs8wHzwajJA",
		user: "alice", session: "main", keyID: "gold-new", version: 7,
		state: goldenFullState,
	},
	{
		text: "ts1.AQhnb2xkLW5ldz8y8QUe_xPdWU-Kf6ZBG3HRrQo976zaehTFn2pqbr-faRXfbnc_atkP-4g1SxS3QKcZN-vpUtBUOJ2_Fttf6sCdcyS1XB5Hb9FZfS3cds2TmvcDp_KHhBSlX5vpTFGtvZIkB6dDZo-xNYxCkAtXTnWLUYKURlI40BjRPYeWStGufvY-0Nil8IJibeQvazeIyhTAYjFgBWuAaDsYAIVIxLjoqEla",
		user: "alice", session: "scratch", keyID: "gold-new", version: 1,
	},
	{
		text: "ts1.AQhnb2xkLW9sZDpUNFvXxnmsjL3S5oFwGT_Ep8iSEaZ1QmOEMUYZEmyLLB3dpVDL6C6iBL5SFq8KxDs7x798cOlTZMUXqxPhKbWFuP9mMYwUs5W-YViaA-gmrfyZpGSJujf5Tngv2MrsMAUT5l-0wQNHQuO4eNe5C1s_yXEbOigZIWpNjjBwibYmNoL40NSImHocy407XZyAe6YfMt9Pqq34wTQ4A6SUnsc-PJuHwuxbpKK3i1gMLR3UCOyzJlZbtsy-BQ",
		user: "bob", session: "main", keyID: "gold-old", version: 2,
		state: State{Phase: "idle", Memento: json.RawMessage(`[]`)},
	},
}

// goldenSealer holds both golden keys, its clock an hour after issue.
func goldenSealer(tb testing.TB) *Sealer {
	tb.Helper()
	s, err := NewSealer([]Key{goldenKeyNew, goldenKeyOld}, 24*time.Hour)
	require.NoError(tb, err)
	s.now = func() time.Time { return goldenIssued.Add(time.Hour) }
	return s
}

func requireGolden(tb testing.TB, g golden, snap Snapshot) {
	tb.Helper()
	require.Equal(tb, g.user, snap.User)
	require.Equal(tb, g.session, snap.Session)
	require.Equal(tb, g.version, snap.Version)
	require.Equal(tb, g.keyID, snap.KeyID)
	require.True(tb, snap.Issued.Equal(goldenIssued))
	require.True(tb, snap.Expires.Equal(goldenIssued.Add(24*time.Hour)))
	requireStateEqual(tb, g.state, snap.State)
}

func TestGoldenBlobsOpen(t *testing.T) {
	s := goldenSealer(t)
	for _, g := range goldens {
		snap, err := s.Open(g.text, g.user, g.session)
		require.NoError(t, err, "%s/%s", g.user, g.session)
		requireGolden(t, g, snap)
	}
}

// FuzzOpen: Open never panics, refuses with a documented error and an
// empty Snapshot, and accepts only a text Seal produced for exactly the
// user and session asked: any other input cannot authenticate, so the
// only texts that may open are the golden ones, for their owners; and
// only a golden text is ever refused as another user's or session's.
func FuzzOpen(f *testing.F) {
	s := goldenSealer(f)
	byText := map[string]golden{}
	for _, g := range goldens {
		byText[g.text] = g
		f.Add(g.text, g.user, g.session)
		f.Add(g.text, "mallory", g.session)
		f.Add(g.text, g.user, "other")
		f.Add(g.text, g.user+"/"+g.session, "")

		raw := decodeText(f, g.text)
		r := regionsOf(f, raw)
		for _, i := range []int{0, 1, 2, r.idEnd - 1, r.idEnd, r.nonceEnd - 1, r.nonceEnd, len(raw) - 17, len(raw) - 1} {
			mut := bytes.Clone(raw)
			mut[i] ^= 0x01
			f.Add(encodeText(mut), g.user, g.session)
		}
		f.Add(encodeText(raw[:len(raw)-1]), g.user, g.session)
		f.Add(encodeText(raw[:r.nonceEnd]), g.user, g.session)
		f.Add(encodeText(append(bytes.Clone(raw), 0)), g.user, g.session)
		f.Add(g.text[:len(g.text)/2], g.user, g.session)
		f.Add(g.text+"A", g.user, g.session)
		f.Add("TS1."+g.text[len(prefix):], g.user, g.session)
		f.Add(g.text[:len(g.text)/2]+"\n"+g.text[len(g.text)/2:], g.user, g.session)
	}
	f.Add("", "", "")
	f.Add(prefix, "alice", "main")
	f.Add(prefix+"AQA", "alice", "main")
	f.Add(prefix+strings.Repeat("A", MaxBlob), "alice", "main")

	f.Fuzz(func(t *testing.T, text, user, session string) {
		snap, err := s.Open(text, user, session)
		if err != nil {
			requireIsOneOf(t, err, documented)
			require.Zero(t, snap)
			g, golden := byText[text]
			switch {
			case golden && decodeText(t, text)[0] == format:
				// An intact blob for someone else is called that, and only that.
				require.ErrorIs(t, err, ErrWrongOwner)
				require.NotErrorIs(t, err, ErrTampered)
				require.False(t, g.user == user && g.session == session)
			case errors.Is(err, ErrWrongOwner):
				// Otherwise wrong owner only with tampered: a format 1 blob
				// that did not authenticate, which may be either.
				require.ErrorIs(t, err, ErrTampered, "%q is not a sealed blob: it cannot be called another session's", text)
			}
			return
		}
		g, ok := byText[text]
		require.True(t, ok, "Open accepted %q for %q/%q: Seal never produced that text", text, user, session)
		require.Equal(t, g.user, user, "opened for another user")
		require.Equal(t, g.session, session, "opened for another session")
		requireGolden(t, g, snap)
	})
}
