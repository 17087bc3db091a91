package web_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/web"
)

func TestHandlerServesThePage(t *testing.T) {
	srv := httptest.NewServer(http.StripPrefix("/demo", web.Handler()))
	defer srv.Close()
	for _, tc := range []struct {
		path, contentType, contains string
	}{
		{"/demo/", "text/html; charset=utf-8", `<script type="module" src="demo.js">`},
		{"/demo/demo.js", "text/javascript; charset=utf-8", `from "./tether.js"`},
		{"/demo/tether.js", "text/javascript; charset=utf-8", "connect"},
		{"/demo/demo.css", "text/css; charset=utf-8", ".countdown"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			res, err := http.Get(srv.URL + tc.path)
			require.NoError(t, err)
			defer res.Body.Close()
			require.Equal(t, http.StatusOK, res.StatusCode)
			require.Equal(t, tc.contentType, res.Header.Get("Content-Type"))
			require.Equal(t, "no-cache", res.Header.Get("Cache-Control"))
			require.Contains(t, res.Header.Get("Content-Security-Policy"), "connect-src 'self' ws: wss:")
			body, err := io.ReadAll(res.Body)
			require.NoError(t, err)
			require.Contains(t, string(body), tc.contains)
		})
	}
	res, err := http.Get(srv.URL + "/demo/nope.js")
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusNotFound, res.StatusCode)
}

func TestConfigHandlerNamesThePageHost(t *testing.T) {
	for _, tc := range []struct {
		name, wsAddr string
		secure       bool
		host, want   string
	}{
		{"every interface", ":8083", false, "example.com:8080", "ws://example.com:8083/mqtt"},
		{"loopback", "127.0.0.1:40000", false, "127.0.0.1:8080", "ws://127.0.0.1:40000/mqtt"},
		{"tls", "[::]:8083", true, "broker.example:443", "wss://broker.example:8083/mqtt"},
		{"ipv6 page host", ":8083", false, "[::1]:8080", "ws://[::1]:8083/mqtt"},
		{"host without port", ":8083", false, "example.com", "ws://example.com:8083/mqtt"},
		{"no websocket listener", "", false, "example.com:8080", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/demo/config.json", nil)
			req.Host = tc.host
			rec := httptest.NewRecorder()
			web.ConfigHandler(tc.wsAddr, tc.secure).ServeHTTP(rec, req)
			require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
			var c web.Config
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &c))
			require.Equal(t, tc.want, c.WSURL)
		})
	}
}

// TestJSUnit runs the JS unit tests (the client's notification inbox and
// snapshot keeping, the demo's countdown) with node's test runner.
func TestJSUnit(t *testing.T) {
	node, err := exec.LookPath("node")
	require.NoError(t, err, "node is not installed: run `make deps`")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, node, "--test", "test/unit/").CombinedOutput()
	require.NoError(t, err, "node --test test/unit/:\n%s", out)
}

// TestDistIsBuilt checks that the committed dist/ (what the broker embeds)
// is what `make web` builds from src/ and demo/ now.
func TestDistIsBuilt(t *testing.T) {
	node, err := exec.LookPath("node")
	require.NoError(t, err, "node is not installed: run `make deps`")
	if _, err := os.Stat(filepath.Join("node_modules", "esbuild")); err != nil {
		t.Fatal("web/node_modules is missing: run `make deps` (npm ci in web/)")
	}
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	msg, err := exec.CommandContext(ctx, node, "build.mjs", out).CombinedOutput()
	require.NoError(t, err, "node build.mjs:\n%s", msg)
	built, err := os.ReadDir(out)
	require.NoError(t, err)
	committed, err := os.ReadDir("dist")
	require.NoError(t, err)
	require.Equal(t, names(built), names(committed), "dist/ is stale: run `make web`")
	for _, e := range built {
		want, err := os.ReadFile(filepath.Join(out, e.Name()))
		require.NoError(t, err)
		got, err := os.ReadFile(filepath.Join("dist", e.Name()))
		require.NoError(t, err)
		require.True(t, string(want) == string(got), "dist/%s is stale: run `make web`", e.Name())
	}
}

func names(es []os.DirEntry) []string {
	var n []string
	for _, e := range es {
		n = append(n, e.Name())
	}
	return n
}
