package broker

import (
	"sync/atomic"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/persistence"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the broker's Prometheus series, on a registry of its own so
// that several brokers can live in one process (tests do).
type metrics struct {
	reg        *prometheus.Registry
	authOK     *prometheus.CounterVec
	authFailed *prometheus.CounterVec
	aclDenied  *prometheus.CounterVec

	responseTopicRefused prometheus.Counter
	badRequestTopic      *prometheus.CounterVec
	memoryTrims          prometheus.Counter
}

func newMetrics(srv *mqtt.Server, store *persistence.Store) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		authOK: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_auth_success_total", Help: "Connections authenticated, by role.",
		}, []string{"role"}),
		authFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_auth_failures_total",
			Help: "Authentication failures by reason; live_* reasons cut an already connected client.",
		}, []string{"reason"}),
		aclDenied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_acl_denied_total", Help: "Packets refused by the ACL, by action.",
		}, []string{"action"}),
		responseTopicRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_response_topic_refused_total",
			Help: "MQTT 5 requests whose response topic the requester may not be answered on; the reply went to sessions/U/S/res.",
		}),
		badRequestTopic: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_request_bad_topic_total",
			Help: "Requests on sessions/U/<name>/req that name no session: session_name (answered bad_request), wildcard (+ or # in the topic: the connection is closed, no reply).",
		}, []string{"reason"}),
		memoryTrims: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_memory_trims_total",
			Help: "Times the broker returned memory to the OS after the number of connected clients changed by a tenth and held still.",
		}),
	}
	// Every label value from the start, so a dashboard sees 0, not nothing.
	for _, r := range authFailureReasons {
		m.authFailed.WithLabelValues(r)
	}
	for _, r := range []string{"expired", "revoked", "unknown"} { // what a live recheck can find
		m.authFailed.WithLabelValues("live_" + r)
	}
	for _, r := range []auth.Role{auth.RoleDevice, auth.RoleService, "anonymous"} {
		m.authOK.WithLabelValues(string(r))
	}
	for _, a := range []string{"publish", "subscribe"} {
		m.aclDenied.WithLabelValues(a)
	}
	for _, r := range []string{"session_name", "wildcard"} {
		m.badRequestTopic.WithLabelValues(r)
	}
	info := srv.Info
	gauge := func(name, help string, v *int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help},
			func() float64 { return float64(atomic.LoadInt64(v)) })
	}
	counter := func(name, help string, v *int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(atomic.LoadInt64(v)) })
	}
	m.reg.MustRegister(
		m.authOK, m.authFailed, m.aclDenied, m.responseTopicRefused, m.badRequestTopic, m.memoryTrims,
		gauge("tether_connections", "Clients connected now.", &info.ClientsConnected),
		gauge("tether_mqtt_sessions", "MQTT client sessions held, connected or not.", &info.ClientsTotal),
		gauge("tether_subscriptions", "MQTT subscriptions held.", &info.Subscriptions),
		gauge("tether_retained_messages", "Retained messages held.", &info.Retained),
		counter("tether_messages_received_total", "PUBLISH packets received.", &info.MessagesReceived),
		counter("tether_messages_sent_total", "PUBLISH packets sent.", &info.MessagesSent),
		counter("tether_messages_dropped_total", "Messages dropped because a client's write queue was full.", &info.MessagesDropped),
		counter("tether_bytes_received_total", "Bytes received from clients.", &info.BytesReceived),
		counter("tether_bytes_sent_total", "Bytes sent to clients.", &info.BytesSent),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tether_store_commits_total", Help: "Durable commits that wrote to the store.",
		}, func() float64 { c, _ := store.Stats(); return float64(c) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tether_store_syncs_total", Help: "Sync rounds (fsyncs) that made commits durable; commits per sync is the group-commit factor.",
		}, func() float64 { _, n := store.Stats(); return float64(n) }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}
