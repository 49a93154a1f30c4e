package main

import (
	"context"
	"os"

	"github.com/wxcombine/orderworker/chaos"
)

// natsServer builds nats-server at the version go.mod requires into a new
// temporary directory and answers its path and a function removing it.
// Every run that starts a nats-server process uses it: the one on PATH may
// be older than the worker accepts (Debian's is 2.9.10; the worker needs
// 2.10.4), and figures should come from the server users are told to run.
func natsServer(ctx context.Context, say func(string, ...any)) (string, func(), error) {
	dir, err := os.MkdirTemp("", "bench-nats-")
	if err != nil {
		return "", nil, err
	}
	say("building nats-server %s (the go.mod version) …", chaos.NATSServerModule)
	bin, err := chaos.BuildNATSServer(ctx, dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return "", nil, err
	}
	return bin, func() { _ = os.RemoveAll(dir) }, nil
}

// builtNATS describes, for Machine.NATS, the nats-server natsServer builds,
// run as how (one "process", or "processes").
func builtNATS(how string) string {
	return "nats-server " + chaos.NATSServerModule + " (go.mod version), " + how
}
