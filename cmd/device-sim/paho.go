package main

import (
	"context"

	paho "github.com/eclipse/paho.mqtt.golang"
)

func waitTok(ctx context.Context, tok paho.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}
