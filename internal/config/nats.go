package config

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// NATSURLDefault is the NATS URL when NATS_URL is unset: the loopback
// interface, never every interface.
const NATSURLDefault = "nats://127.0.0.1:4222"

// NATS is how a service reaches NATS.
type NATS struct {
	URL, CredsFile            string
	CAFile, CertFile, KeyFile string
	// NkeyFile holds the service's NATS user nkey seed (NATS_NKEY_FILE).
	NkeyFile string
	// InboxPrefix starts the service's reply subjects (default "_INBOX"):
	// with its own prefix per service, NATS permissions can let each
	// subscribe to its own replies only, so no one reads the jobs a worker
	// pulls or the acks another receives.
	InboxPrefix string
}

// LoadNATS reads NATS_URL, NATS_CREDS_FILE, NATS_NKEY_FILE,
// NATS_TLS_CA_FILE, NATS_TLS_CERT_FILE, NATS_TLS_KEY_FILE and
// NATS_INBOX_PREFIX through l, whose Settings must list them.
func LoadNATS(l *Loader) NATS {
	n := NATS{
		URL: l.Str("NATS_URL"), CredsFile: l.File("NATS_CREDS_FILE"), NkeyFile: l.File("NATS_NKEY_FILE"),
		CAFile: l.File("NATS_TLS_CA_FILE"), CertFile: l.File("NATS_TLS_CERT_FILE"), KeyFile: l.File("NATS_TLS_KEY_FILE"),
		InboxPrefix: l.Str("NATS_INBOX_PREFIX"),
	}
	if (n.CertFile == "") != (n.KeyFile == "") {
		l.Fail("NATS_TLS_CERT_FILE", "and NATS_TLS_KEY_FILE must be set together")
	}
	if n.CredsFile != "" && n.NkeyFile != "" {
		l.Fail("NATS_NKEY_FILE", "and NATS_CREDS_FILE are two ways to name the user; set one")
	}
	if strings.ContainsAny(n.InboxPrefix, " \t*>") || strings.HasSuffix(n.InboxPrefix, ".") {
		l.Fail("NATS_INBOX_PREFIX", "%q is not a subject prefix", n.InboxPrefix)
	}
	return n
}

// Options answers the connection options: the client name, reconnection
// forever every second, a first connection that is retried the same way
// (RetryOnFailedConnect: a service started while NATS is down or being
// upgraded waits for it, unready, instead of exiting and crash-looping),
// no reconnect buffer (a publish while disconnected fails at once instead
// of being sent later behind the caller's back), credentials and TLS.
func (n NATS) Options(name string, log *slog.Logger) ([]nats.Option, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.ReconnectBufSize(-1),
		nats.RetryOnFailedConnect(true),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info("nats connected", slog.String("server", nc.ConnectedUrlRedacted()), slog.String("server_version", nc.ConnectedServerVersion()))
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", slog.Any("error", err))
			}
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("nats connection attempt failed", slog.Any("error", err))
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", slog.String("server", nc.ConnectedUrlRedacted()))
		}),
	}
	if n.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(n.CredsFile))
	}
	if n.NkeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(n.NkeyFile)
		if err != nil {
			return nil, fmt.Errorf("NATS_NKEY_FILE: %w", err)
		}
		opts = append(opts, o)
	}
	if n.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(n.InboxPrefix))
	}
	if n.CAFile != "" || n.CertFile != "" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if n.CAFile != "" {
			pem, err := os.ReadFile(n.CAFile)
			if err != nil {
				return nil, fmt.Errorf("NATS_TLS_CA_FILE: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("NATS_TLS_CA_FILE %s: no PEM certificate", n.CAFile)
			}
			cfg.RootCAs = pool
		}
		if n.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(n.CertFile, n.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("NATS_TLS_CERT_FILE: %w", err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, nats.Secure(cfg))
	}
	return opts, nil
}

// Connect answers a connection that keeps trying until a server answers;
// it fails only on a bad URL or option. Use WaitConnected before the first
// JetStream call.
func (n NATS) Connect(name string, log *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	opts, err := n.Options(name, log)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(n.URL, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("nats: connect %s: %w", redactURL(n.URL), err)
	}
	return nc, nil
}

// WaitConnected blocks until nc is connected (it answers nil), nc is
// closed, or ctx ends.
func WaitConnected(ctx context.Context, nc *nats.Conn) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		switch {
		case nc.IsConnected():
			return nil
		case nc.IsClosed():
			return errors.New("nats: connection closed")
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nats: not connected (%s): %w", nc.Status(), context.Cause(ctx))
		case <-t.C:
		}
	}
}

// CheckServerVersion answers an error naming min and what needs it when the
// connected server is older than min (major.minor.patch).
func CheckServerVersion(nc *nats.Conn, min, needs string) error {
	return CompareVersion(nc.ConnectedServerVersion(), min, needs)
}

// CompareVersion answers an error naming min and what needs it when server
// version v is older than min.
func CompareVersion(v, min, needs string) error {
	got, ok := parseVersion(v)
	want, ok2 := parseVersion(min)
	if !ok2 {
		return fmt.Errorf("nats: bad minimum version %q", min)
	}
	if !ok {
		return fmt.Errorf("nats: server version %q cannot be read; this service needs nats-server %s or later (%s)", v, min, needs)
	}
	for i := range got {
		if got[i] != want[i] {
			if got[i] < want[i] {
				return fmt.Errorf("nats: server %s is too old: this service needs nats-server %s or later (%s)", v, min, needs)
			}
			return nil
		}
	}
	return nil
}

// parseVersion reads "2.10.4", "v2.11.0-RC.1" or "2.12" into its numbers.
func parseVersion(s string) ([3]int, bool) {
	var out [3]int
	s = strings.TrimPrefix(strings.TrimSpace(s), "v")
	if i := strings.IndexAny(s, "-+"); i >= 0 {
		s = s[:i]
	}
	parts := strings.Split(s, ".")
	if len(parts) < 2 || len(parts) > 3 {
		return out, false
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return out, false
		}
		out[i] = n
	}
	return out, true
}

// redactURL drops user information from a comma-separated URL list.
func redactURL(urls string) string {
	var out []string
	for u := range strings.SplitSeq(urls, ",") {
		u = strings.TrimSpace(u)
		if at := strings.LastIndex(u, "@"); at >= 0 {
			if s := strings.Index(u, "://"); s >= 0 && s < at {
				u = u[:s+3] + "REDACTED@" + u[at+1:]
			}
		}
		out = append(out, u)
	}
	return strings.Join(out, ",")
}
