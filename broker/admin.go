package broker

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/persistence"
	"github.com/f47fa0da/tether/queues"
	"github.com/f47fa0da/tether/sessions"
)

// Admin is the operator API: the commands behind `broker token`, `broker
// sessions` and `broker queue`. Each command is an op with JSON arguments
// and a JSON result, so it runs the same in process and over the admin
// listener.
type Admin struct {
	Tokens   *auth.Tokens
	Sessions *sessions.Registry

	store *persistence.Store // the queues queue.peek reads
	// QueueInfo is a queue's state with its effective limits. A running
	// broker's reads through its delivery, which is built after the admin.
	QueueInfo func(user, session string) (QueueInfo, error)
}

// newAdmin builds the operator API over a store no broker is serving.
// Nothing is published: no client is connected to it. Queues without
// limits of their own show DefaultConfig's: the limits an embedding
// application configured are not known here.
func newAdmin(store *persistence.Store) (*Admin, error) {
	reg, err := sessions.New(sessions.DefaultConfig(), store, silentOutbox{})
	if err != nil {
		return nil, err
	}
	// A delivery that never delivers: only info is used, which reads the
	// store and the configured limits.
	readOnly := &delivery{store: store, registry: reg, limits: DefaultConfig().QueueLimits}
	return &Admin{Tokens: auth.NewTokens(store), Sessions: reg, store: store, QueueInfo: readOnly.info}, nil
}

type silentOutbox struct{}

func (silentOutbox) Tick(string, string, sessions.Tick)         {}
func (silentOutbox) Presence(string, string, sessions.Presence) {}

// ErrUnknownOp is returned for an op the admin API does not have.
var ErrUnknownOp = errors.New("broker: unknown admin op")

type adminOp func(a *Admin, args json.RawMessage) (any, error)

// adminOps is the table of operator commands.
var adminOps = map[string]adminOp{
	"token.add": func(a *Admin, args json.RawMessage) (any, error) {
		var n auth.NewToken
		if err := decodeArgs(args, &n); err != nil {
			return nil, err
		}
		secret, tok, err := a.Tokens.Add(n)
		return TokenIssued{Token: secret, Info: tok}, err
	},
	"token.list": func(a *Admin, args json.RawMessage) (any, error) {
		var q struct{ User string }
		if err := decodeArgs(args, &q); err != nil {
			return nil, err
		}
		return a.Tokens.List(q.User)
	},
	"sessions.list": func(a *Admin, args json.RawMessage) (any, error) {
		var q struct{ User string }
		if err := decodeArgs(args, &q); err != nil {
			return nil, err
		}
		return a.Sessions.List(q.User)
	},
	"sessions.show": func(a *Admin, args json.RawMessage) (any, error) {
		var q struct{ User, Session string }
		if err := decodeArgs(args, &q); err != nil {
			return nil, err
		}
		return a.sessionDetail(q.User, q.Session)
	},
	"sessions.log": func(a *Admin, args json.RawMessage) (any, error) {
		var q struct {
			User, Session string
			After         uint64
			Limit         int
		}
		if err := decodeArgs(args, &q); err != nil {
			return nil, err
		}
		return a.Sessions.Log(q.User, q.Session, q.After, q.Limit)
	},
	"queue.peek": func(a *Admin, args json.RawMessage) (any, error) {
		var q struct {
			User, Session string
			After         uint64
			Limit         int
		}
		if err := decodeArgs(args, &q); err != nil {
			return nil, err
		}
		if q.Limit < 0 {
			return nil, fmt.Errorf("%w: limit %d: want 0 (up to %d) or more", queues.ErrInvalid, q.Limit, queues.MaxBatch)
		}
		if _, err := a.Sessions.Get(q.User, q.Session); err != nil {
			return nil, err
		}
		entries := []queues.Entry{} // an empty JSON list, not null
		err := a.store.View(func(tx persistence.Txn) error {
			got, err := queues.Read(tx, q.User, q.Session, q.After, q.Limit, time.Now())
			entries = append(entries, got...)
			return err
		})
		return entries, err
	},
	"queue.limit": func(a *Admin, args json.RawMessage) (any, error) {
		var q struct {
			User, Session string
			Max           int
			MaxBytes      int `json:"max_bytes"`
			Policy        queues.Policy
			Reset         bool // back to the configured limits
		}
		if err := decodeArgs(args, &q); err != nil {
			return nil, err
		}
		var l *queues.Limits
		switch {
		case !q.Reset:
			l = &queues.Limits{MaxMessages: q.Max, MaxBytes: q.MaxBytes, Policy: q.Policy}
		case q.Max != 0 || q.MaxBytes != 0 || q.Policy != "":
			return nil, fmt.Errorf("%w: reset takes no limits", queues.ErrInvalid)
		}
		if err := setQueueLimits(a.Sessions, q.User, q.Session, l); err != nil {
			return nil, err
		}
		return a.sessionDetail(q.User, q.Session)
	},
	"token.revoke": func(a *Admin, args json.RawMessage) (any, error) {
		var q struct{ ID string }
		if err := decodeArgs(args, &q); err != nil {
			return nil, err
		}
		return a.Tokens.Revoke(q.ID)
	},
}

// SessionDetail is the result of sessions.show and queue.limit: the
// session with the state of its queue. Its JSON is the session's fields
// and "queue".
type SessionDetail struct {
	sessions.Session
	Queue QueueInfo `json:"queue"`
}

func (a *Admin) sessionDetail(user, session string) (SessionDetail, error) {
	s, err := a.Sessions.Get(user, session)
	if err != nil {
		return SessionDetail{}, err
	}
	qi, err := a.QueueInfo(user, session)
	if err != nil {
		return SessionDetail{}, err
	}
	return SessionDetail{Session: s, Queue: qi}, nil
}

// TokenIssued is the result of token.add: the secret, shown once, and the stored record.
type TokenIssued struct {
	Token string     `json:"token"`
	Info  auth.Token `json:"info"`
}

// AdminOps lists the op names, sorted.
func AdminOps() []string {
	names := make([]string, 0, len(adminOps))
	for n := range adminOps {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Call runs op with JSON args and returns its JSON result.
func (a *Admin) Call(op string, args json.RawMessage) (json.RawMessage, error) {
	fn, ok := adminOps[op]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownOp, op)
	}
	res, err := fn(a, args)
	if err != nil {
		return nil, err
	}
	return json.Marshal(res)
}

func decodeArgs(args json.RawMessage, v any) error {
	if len(args) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(args))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("broker: admin arguments: %w", err)
	}
	return nil
}

// adminFile is written to the data directory while a broker serves it, so
// that the CLI can reach the broker instead of opening the locked store.
const adminFile = "admin.json"

type adminEndpoint struct {
	Addr   string `json:"addr"`
	Secret string `json:"secret"`
}

func (b *Broker) serveAdmin() error {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return err
	}
	ep := adminEndpoint{Addr: b.adminLn.Addr().String(), Secret: hex.EncodeToString(raw)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/{op}", func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, []byte("Bearer "+ep.Secret)) != 1 {
			http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		args, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, `{"error":"read body"}`, http.StatusBadRequest)
			return
		}
		res, err := b.admin.Call(r.PathValue("op"), args)
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
			return
		}
		_, _ = w.Write(res)
	})
	b.adminSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = b.adminSrv.Serve(b.adminLn) }()
	return writeFileAtomic(filepath.Join(b.cfg.DataDir, adminFile), ep)
}

func removeAdminFile(dir string) { _ = os.Remove(filepath.Join(dir, adminFile)) }

// writeFileAtomic writes v as JSON to path (mode 0600) through a temp file and rename.
func writeFileAtomic(path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("broker: write %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}

// RunAdmin runs an operator command against the data directory dir: in
// process when no broker holds it, otherwise through the running broker's
// admin listener. The JSON result is decoded into out (if non-nil).
func RunAdmin(ctx context.Context, dir, op string, args, out any) error {
	body, err := json.Marshal(args)
	if err != nil {
		return err
	}
	var res json.RawMessage
	// Only issuing a token may start a new data directory; anything else
	// on a missing one is a typo, not an empty broker.
	if _, err := os.Stat(dir); err != nil && op != "token.add" {
		return fmt.Errorf("broker: data directory %s: %w (give the broker's with --data-dir)", dir, err)
	}
	store, err := openForAdmin(dir)
	switch {
	case err == nil:
		var a *Admin
		if a, err = newAdmin(store); err == nil {
			res, err = a.Call(op, body)
			a.Sessions.Close()
		}
		if cerr := store.Close(); err == nil {
			err = cerr
		}
	case errors.Is(err, persistence.ErrLocked):
		res, err = callRemote(ctx, dir, op, body)
	}
	if err != nil {
		return err
	}
	if out != nil {
		return json.Unmarshal(res, out)
	}
	return nil
}

func openForAdmin(dir string) (*persistence.Store, error) {
	cfg := persistence.DefaultConfig()
	cfg.Dir = dir
	return persistence.Open(cfg)
}

func callRemote(ctx context.Context, dir, op string, body []byte) (json.RawMessage, error) {
	data, err := os.ReadFile(filepath.Join(dir, adminFile))
	if err != nil {
		return nil, fmt.Errorf("broker: a broker holds %s but its admin endpoint is unknown: %w", dir, err)
	}
	var ep adminEndpoint
	if err := json.Unmarshal(data, &ep); err != nil {
		return nil, fmt.Errorf("broker: %s: %w", adminFile, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+ep.Addr+"/v1/"+op, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+ep.Secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("broker: reach running broker at %s: %w", ep.Addr, err)
	}
	defer resp.Body.Close()
	res, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(res, &e) == nil && e.Error != "" {
			return nil, errors.New(e.Error)
		}
		return nil, fmt.Errorf("broker: admin %s: %s", op, resp.Status)
	}
	return res, nil
}
