// Package web serves Tether's browser demo: a page that keeps a session
// over MQTT-over-WebSocket with the JS client in web/src. The page and the
// client bundle are built by `make web` into web/dist, which is committed
// and embedded, so `go build` needs no npm.
package web

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net"
	"net/http"
	"strings"
)

//go:embed dist
var dist embed.FS

// Handler serves the demo page and its assets at its root ("/" is the
// page). Mount it under a prefix with http.StripPrefix.
func Handler() http.Handler {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		panic(err) // the embed pattern guarantees dist exists
	}
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		// Embedded files carry no modification time: make browsers revalidate,
		// so a new broker binary never runs with an old cached script.
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		// The page talks only to its own origin and to the broker's WebSocket
		// (another port, so not 'self'); mqtt.js runs its timers in a blob worker.
		h.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; worker-src 'self' blob:; "+
			"img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
		files.ServeHTTP(w, r)
	})
}

// Config is what the page reads from config.json.
type Config struct {
	// WSURL is the broker's MQTT-over-WebSocket URL as seen from the page
	// (the page's host, the WebSocket listener's port); empty when the
	// broker has no WebSocket listener.
	WSURL string `json:"ws_url"`
}

// ConfigHandler serves config.json for a broker whose WebSocket listener is
// bound to wsAddr (host:port; empty when disabled), with TLS when secure.
// The URL names the host the page was loaded from: the listener usually
// binds every interface, and the broker's Origin check wants the same host.
func ConfigHandler(wsAddr string, secure bool) http.Handler {
	_, port, _ := net.SplitHostPort(wsAddr)
	scheme := "ws"
	if secure {
		scheme = "wss"
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var c Config
		if port != "" {
			host := r.Host
			if h, _, err := net.SplitHostPort(r.Host); err == nil {
				host = h
			}
			host = strings.Trim(host, "[]")
			c.WSURL = scheme + "://" + net.JoinHostPort(host, port) + "/mqtt"
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(c)
	})
}
