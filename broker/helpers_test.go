package broker_test

import "github.com/f47fa0da/tether/broker"

func brokerOpen(cfg broker.Config) (*broker.Broker, error) {
	b, err := broker.Open(cfg)
	if err == nil {
		_ = b.Close()
	}
	return b, err
}
