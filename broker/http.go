package broker

import (
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/f47fa0da/tether/web"
)

// serveHTTP serves the operator endpoints:
//
//	/healthz  200 while the process runs
//	/readyz   200 once serving, 503 while starting or stopping
//	/metrics  Prometheus text format
//	/demo/    the browser demo page (package web); "/" redirects to it
func (b *Broker) serveHTTP() {
	if b.httpLn == nil {
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !b.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(b.metrics.reg, promhttp.HandlerOpts{}))
	mux.Handle("GET /demo/", http.StripPrefix("/demo", web.Handler()))
	mux.Handle("GET /demo/config.json", web.ConfigHandler(addrOf(b.wsLn), b.cfg.TLSCertFile != ""))
	mux.Handle("GET /{$}", http.RedirectHandler("/demo/", http.StatusFound))
	b.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := b.httpSrv.Serve(b.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			b.log.Error("http listener stopped", "error", err)
		}
	}()
}
