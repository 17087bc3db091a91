package wire

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDecodeRequest(t *testing.T) {
	tests := []struct {
		name, payload string
		code          Code // "" = valid
		op            string
	}{
		{"begin", `{"id":1,"op":"begin"}`, "", OpBegin},
		{"string id", `{"id":"a-1","op":"begin"}`, "", OpBegin},
		{"ping", `{"id":1,"op":"ping","nonce":"n","cursor":{"q":3}}`, "", OpPing},
		{"remember", `{"id":1,"op":"remember","nonce":"n","memento":0,"phase":"p"}`, "", OpRemember},
		{"call", `{"id":1,"op":"call","nonce":"n","seq":1,"method":"buy","args":["x"]}`, "", OpCall},
		{"ack", `{"id":1,"op":"ack","nonce":"n","upto":0}`, "", OpAck},
		{"end", `{"id":1,"op":"end","nonce":"n"}`, "", OpEnd},
		{"empty", ``, CodeBadRequest, ""},
		{"null", `null`, CodeBadRequest, ""},
		{"bool id", `{"id":true,"op":"begin"}`, CodeBadRequest, ""},
		{"null id", `{"id":null,"op":"begin"}`, CodeBadRequest, ""},
		{"long id", `{"id":"` + strings.Repeat("i", 200) + `","op":"begin"}`, CodeBadRequest, ""},
		{"call without seq", `{"id":1,"op":"call","nonce":"n","method":"m"}`, CodeBadRequest, ""},
		{"call seq 0", `{"id":1,"op":"call","nonce":"n","seq":0,"method":"m"}`, CodeBadRequest, ""},
		{"call negative seq", `{"id":1,"op":"call","nonce":"n","seq":-1,"method":"m"}`, CodeBadRequest, ""},
		{"call without method", `{"id":1,"op":"call","nonce":"n","seq":1}`, CodeBadRequest, ""},
		{"ack without upto", `{"id":1,"op":"ack","nonce":"n"}`, CodeBadRequest, ""},
		{"end without nonce", `{"id":1,"op":"end"}`, CodeBadRequest, ""},
		{"wrong type", `{"id":1,"op":5}`, CodeBadRequest, ""},
		{"too large", `{"id":1,"op":"begin","restore":"` + strings.Repeat("r", MaxRequestSize) + `"}`, CodeTooLarge, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := DecodeRequest([]byte(tc.payload))
			if tc.code == "" {
				require.Nil(t, err)
				require.Equal(t, tc.op, req.Op)
				return
			}
			require.NotNil(t, err)
			require.Equal(t, tc.code, err.Code)
			require.NotEmpty(t, err.Message)
		})
	}
}

func TestResponseJSON(t *testing.T) {
	b, err := json.Marshal(Response{})
	require.NoError(t, err)
	require.JSONEq(t, `{"id":null,"ok":{}}`, string(b))
	b, err = json.Marshal(Response{ID: json.RawMessage(`"x"`), Error: Errorf(CodeStaleNonce, "old")})
	require.NoError(t, err)
	require.JSONEq(t, `{"id":"x","error":{"code":"stale_nonce","message":"old"}}`, string(b))
}

// TestResponseAppendJSON: a success with an encoded ok value is appended
// as json.Marshal writes it; anything else is left to json.Marshal.
func TestResponseAppendJSON(t *testing.T) {
	for _, r := range []Response{
		{ID: json.RawMessage(`"conn.7"`), OK: json.RawMessage(`{"count":3,"list":[1,"a"]}`)},
		{ID: json.RawMessage(`12`), OK: json.RawMessage(`null`)},
		{OK: json.RawMessage(`"x"`)},
	} {
		got, ok := r.AppendJSON([]byte("p:"))
		require.True(t, ok)
		want, err := json.Marshal(r)
		require.NoError(t, err)
		require.Equal(t, "p:"+string(want), string(got))
	}
	for _, r := range []Response{
		{ID: json.RawMessage(`1`), OK: map[string]int{"a": 1}},
		{ID: json.RawMessage(`1`), OK: json.RawMessage(`1`), Error: Errorf(CodeInternal, "x")},
		{ID: json.RawMessage(`1`)},
		{ID: json.RawMessage(`1`), OK: json.RawMessage(nil)},
	} {
		got, ok := r.AppendJSON(nil)
		require.False(t, ok, "%+v", r)
		require.Empty(t, got)
	}
}

// FuzzDecodeRequest: any payload gets a request or a well-formed error, and
// never a panic; accepted requests satisfy the per-op contract; what the
// fast path takes, it decodes as encoding/json does.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"id":1,"op":"begin"}`, `{"id":"x","op":"ping","nonce":"n","cursor":[1]}`,
		`{"id":2,"op":"call","nonce":"n","seq":3,"method":"buy","args":{"item":"toaster"},"memento":4}`,
		`{"id":3,"op":"ack","nonce":"n","upto":9}`, `{"id":4,"op":"remember","nonce":"n","memento":null,"phase":""}`,
		`{"id":5,"op":"begin","restore":"blob"}`, `{"id":{},"op":"x"}`, `[`, `{"id":1}{"id":2}`, "\x00",
		`{"id":6,"op":"ack","nonce":"n","upto":18446744073709551615,"resend":true}`, `{"ID":7,"Op":"begin"}`,
		`{"id":8,"op":"call","nonce":"n\u0041","seq":1,"method":"m","args":[1, 2]}`, `{"id":9,"op":"begin","op":"ping"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		if fast, ok := decodeRequestFast(payload); ok {
			var slow Request
			if e := decodeRequestSlow(payload, &slow); e != nil || !reflect.DeepEqual(fast, slow) {
				t.Fatalf("fast path gave %+v; encoding/json %+v, %v", fast, slow, e)
			}
		}
		req, err := DecodeRequest(payload)
		if err != nil {
			if err.Code != CodeBadRequest && err.Code != CodeTooLarge {
				t.Fatalf("unexpected code %q", err.Code)
			}
			if err.Message == "" {
				t.Fatal("empty error message")
			}
			if req.ID != nil && !validID(req.ID) {
				t.Fatalf("invalid id %q returned for correlation", req.ID)
			}
			return
		}
		if !validID(req.ID) {
			t.Fatalf("accepted invalid id %q", req.ID)
		}
		switch req.Op {
		case OpBegin:
		case OpPing, OpEnd, OpRemember, OpAck:
			if req.Nonce == "" {
				t.Fatal("accepted without nonce")
			}
		case OpCall:
			if req.Nonce == "" || req.Seq == 0 || req.Method == "" {
				t.Fatalf("accepted incomplete call %+v", req)
			}
		default:
			t.Fatalf("accepted unknown op %q", req.Op)
		}
		if _, err := json.Marshal(Response{ID: req.ID}); err != nil {
			t.Fatalf("reply cannot echo id %q: %v", req.ID, err)
		}
	})
}

// BenchmarkDecodeRequest decodes a typical call, by the fast path and by
// encoding/json alone.
func BenchmarkDecodeRequest(b *testing.B) {
	p := []byte(`{"id":"3f2a9c1e.17","op":"call","nonce":"5b7e0d2c9a8f41e6b3c2d1a0f9e8d7c6","seq":17,"method":"buy","args":{"item":"toaster"},"memento":16}`)
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := DecodeRequest(p); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			var r Request
			if err := decodeRequestSlow(p, &r); err != nil {
				b.Fatal(err)
			}
		}
	})
}
