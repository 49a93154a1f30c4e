package idempotency_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxcombine/orderworker/idempotency"
	"github.com/wxcombine/orderworker/idempotency/storetest"
	"github.com/wxcombine/orderworker/internal/testenv"
)

// TestMain silences go-redis, which logs every failed dial of the outage
// tests to stderr.
func TestMain(m *testing.M) {
	redis.SetLogger(quietLogger{})
	os.Exit(m.Run())
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// testRedisClient answers a client that gives up on a stopped server
// quickly (one dial, one retry) while its timeouts leave room for a
// machine loaded by the race detector and parallel servers.
func testRedisClient(tb testing.TB, cfg idempotency.RedisClientConfig) redis.UniversalClient {
	tb.Helper()
	cfg.DialTimeout = time.Second
	cfg.ReadTimeout = 2 * time.Second
	cfg.DialAttempts = 1
	cfg.MaxRetries = 1
	client, err := idempotency.NewRedisClient(cfg)
	if err != nil {
		tb.Fatalf("NewRedisClient: %v", err)
	}
	tb.Cleanup(func() { _ = client.Close() })
	return client
}

func newRedisBackend(t *testing.T) storetest.Backend {
	srv := testenv.StartRedis(t)
	client := testRedisClient(t, idempotency.RedisClientConfig{Addrs: []string{srv.Addr}})
	s, err := idempotency.NewRedis(client, idempotency.RedisConfig{Prefix: "test"})
	if err != nil {
		t.Fatalf("NewRedis: %v", err)
	}
	return storetest.Backend{Store: s, Stop: srv.Stop, Start: srv.Start}
}

func TestRedis(t *testing.T) {
	t.Parallel()
	storetest.Run(t, newRedisBackend)
}

func TestRedis_ScriptCacheFlushed(t *testing.T) {
	srv := testenv.StartRedis(t)
	client := testRedisClient(t, idempotency.RedisClientConfig{Addrs: []string{srv.Addr}})
	s, err := idempotency.NewRedis(client, idempotency.RedisConfig{})
	if err != nil {
		t.Fatalf("NewRedis: %v", err)
	}
	ctx := t.Context()
	k := idempotency.Key{MchID: "1900000109", OutTradeNo: "flush"}
	c, err := s.Claim(ctx, k, "fp", time.Minute)
	if err != nil || c.State != idempotency.StateClaimed {
		t.Fatalf("Claim = %+v, %v, want claimed", c, err)
	}
	// A failover or restart empties the script cache: EVALSHA must fall
	// back to EVAL.
	if err := client.ScriptFlush(ctx).Err(); err != nil {
		t.Fatalf("SCRIPT FLUSH: %v", err)
	}
	if err := s.Complete(ctx, k, c.Token, []byte("ok"), time.Minute); err != nil {
		t.Fatalf("Complete after SCRIPT FLUSH = %v, want nil", err)
	}
	if got, err := s.Claim(ctx, k, "fp", time.Minute); err != nil || string(got.Outcome) != "ok" {
		t.Fatalf("Claim after SCRIPT FLUSH = %+v, %v, want done with %q", got, err, "ok")
	}
}

func TestRedis_KeysExpire(t *testing.T) {
	srv := testenv.StartRedis(t)
	client := testRedisClient(t, idempotency.RedisClientConfig{Addrs: []string{srv.Addr}})
	s, err := idempotency.NewRedis(client, idempotency.RedisConfig{Prefix: "p", FenceGrace: time.Minute})
	if err != nil {
		t.Fatalf("NewRedis: %v", err)
	}
	ctx := t.Context()
	k := idempotency.Key{MchID: "1900000109", OutTradeNo: "o1"}
	c, err := s.Claim(ctx, k, "fp", 10*time.Second)
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	if err := s.Complete(ctx, k, c.Token, []byte("ok"), 2*time.Hour); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	// Nothing is kept forever, and the fence outlives the outcome.
	keys, err := client.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatalf("KEYS: %v", err)
	}
	ttls := map[string]time.Duration{}
	for _, key := range keys {
		ttls[key] = client.PTTL(ctx, key).Val()
	}
	want := map[string]time.Duration{"{p:1900000109:o1}:done": 2 * time.Hour, "{p:1900000109:o1}:fence": 2 * time.Hour}
	if len(ttls) != len(want) {
		t.Fatalf("keys after Complete = %v, want %v", ttls, want)
	}
	for key, w := range want {
		if got, ok := ttls[key]; !ok || got <= w-time.Minute || got > w {
			t.Errorf("PTTL(%s) = %v, want about %v", key, got, w)
		}
	}
}

func TestRedis_ACL(t *testing.T) {
	srv := testenv.StartRedisWith(t, "--user", "orderworker", "on", ">s3cret-pass", "~*", "+@all")
	tests := []struct {
		name     string
		user     string
		password string
		wantErr  error
	}{
		{"right password", "orderworker", "s3cret-pass", nil},
		{"wrong password", "orderworker", "wrong", idempotency.ErrUnavailable},
		{"unknown user", "nobody", "s3cret-pass", idempotency.ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := testRedisClient(t, idempotency.RedisClientConfig{Addrs: []string{srv.Addr}, Username: tt.user, Password: tt.password})
			s, err := idempotency.NewRedis(client, idempotency.RedisConfig{})
			if err != nil {
				t.Fatalf("NewRedis: %v", err)
			}
			_, err = s.Claim(t.Context(), idempotency.Key{MchID: "1", OutTradeNo: tt.name}, "fp", time.Minute)
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("Claim as %s error = %v, want %v", tt.user, err, tt.wantErr)
			}
			if err != nil && regexp.MustCompile(`s3cret`).MatchString(err.Error()) {
				t.Errorf("Claim error %q shows the password", err)
			}
		})
	}
}

func TestNewRedisClient(t *testing.T) {
	tests := []struct {
		name     string
		cfg      idempotency.RedisClientConfig
		wantType string // %T of the client; "" means an error
	}{
		{"single", idempotency.RedisClientConfig{Addrs: []string{"127.0.0.1:1"}, DB: 2}, "*redis.Client"},
		{"sentinel", idempotency.RedisClientConfig{Addrs: []string{"127.0.0.1:1", "127.0.0.1:2"}, MasterName: "mymaster", DB: 1}, "*redis.Client"},
		{"cluster by addrs", idempotency.RedisClientConfig{Addrs: []string{"127.0.0.1:1", "127.0.0.1:2"}}, "*redis.ClusterClient"},
		{"cluster forced", idempotency.RedisClientConfig{Addrs: []string{"127.0.0.1:1"}, Cluster: true}, "*redis.ClusterClient"},
		{"tls system roots", idempotency.RedisClientConfig{Addrs: []string{"127.0.0.1:1"}, TLS: true}, "*redis.Client"},
		{"no addrs", idempotency.RedisClientConfig{}, ""},
		{"empty addr", idempotency.RedisClientConfig{Addrs: []string{""}}, ""},
		{"cluster with db", idempotency.RedisClientConfig{Addrs: []string{"a:1", "b:1"}, DB: 3}, ""},
		{"negative db", idempotency.RedisClientConfig{Addrs: []string{"a:1"}, DB: -1}, ""},
		{"ca without tls", idempotency.RedisClientConfig{Addrs: []string{"a:1"}, CAFile: "ca.pem"}, ""},
		{"missing ca file", idempotency.RedisClientConfig{Addrs: []string{"a:1"}, TLS: true, CAFile: "testdata/absent.pem"}, ""},
		{"negative timeout", idempotency.RedisClientConfig{Addrs: []string{"a:1"}, ReadTimeout: -time.Second}, ""},
		{"max retries below -1", idempotency.RedisClientConfig{Addrs: []string{"a:1"}, MaxRetries: -2}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, err := idempotency.NewRedisClient(tt.cfg)
			if tt.wantType == "" {
				if err == nil {
					_ = client.Close()
					t.Fatalf("NewRedisClient(%s) error = nil, want one", tt.name)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewRedisClient(%s) error = %v", tt.name, err)
			}
			defer client.Close()
			if got := typeName(client); got != tt.wantType {
				t.Errorf("NewRedisClient(%s) = %s, want %s", tt.name, got, tt.wantType)
			}
		})
	}
}

func typeName(v any) string {
	switch v.(type) {
	case *redis.Client:
		return "*redis.Client"
	case *redis.ClusterClient:
		return "*redis.ClusterClient"
	}
	return "other"
}

func TestNewRedis(t *testing.T) {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer client.Close()
	tests := []struct {
		name    string
		client  redis.UniversalClient
		cfg     idempotency.RedisConfig
		wantErr bool
	}{
		{"defaults", client, idempotency.RedisConfig{}, false},
		{"nil client", nil, idempotency.RedisConfig{}, true},
		{"brace in prefix", client, idempotency.RedisConfig{Prefix: "a{b"}, true},
		{"negative fence grace", client, idempotency.RedisConfig{FenceGrace: -time.Second}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := idempotency.NewRedis(tt.client, tt.cfg)
			if (err != nil) != tt.wantErr {
				t.Errorf("NewRedis(%+v) error = %v, want error %t", tt.cfg, err, tt.wantErr)
			}
		})
	}
}

func TestRedis_Unreachable(t *testing.T) {
	port := testenv.FreePort(t) // nothing listens here
	client := testRedisClient(t, idempotency.RedisClientConfig{Addrs: []string{net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}})
	s, err := idempotency.NewRedis(client, idempotency.RedisConfig{})
	if err != nil {
		t.Fatalf("NewRedis: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := s.Ping(ctx); !errors.Is(err, idempotency.ErrUnavailable) {
		t.Errorf("Ping() error = %v, want ErrUnavailable", err)
	}
	_, err = s.Claim(ctx, idempotency.Key{MchID: "1", OutTradeNo: "2"}, "fp", time.Minute)
	if !errors.Is(err, idempotency.ErrUnavailable) {
		t.Errorf("Claim() error = %v, want ErrUnavailable", err)
	}
}

// BenchmarkRedisClaimComplete claims and completes distinct keys from 50
// goroutines, like redis-benchmark's 50 clients, and runs
// "redis-benchmark -t set" on the same server for comparison.
func BenchmarkRedisClaimComplete(b *testing.B) {
	srv := testenv.StartRedis(b)
	client, err := idempotency.NewRedisClient(idempotency.RedisClientConfig{Addrs: []string{srv.Addr}, PoolSize: 64})
	if err != nil {
		b.Fatalf("NewRedisClient: %v", err)
	}
	defer client.Close()
	s, err := idempotency.NewRedis(client, idempotency.RedisConfig{})
	if err != nil {
		b.Fatalf("NewRedis: %v", err)
	}
	perSec := benchClaimComplete(b, s, 25)
	// Run redis-benchmark only in the long final rounds, where it counts.
	if b.N < 5000 {
		return
	}
	if set, ok := redisBenchmarkSET(b, srv.Addr); ok {
		b.ReportMetric(set, "SET/s")
		b.ReportMetric(perSec/set, "ratio")
	}
}

// benchClaimComplete runs the benchmark loop with parallelism × GOMAXPROCS
// goroutines and reports claim+complete pairs per second.
func benchClaimComplete(b *testing.B, s idempotency.Store, parallelism int) float64 {
	b.Helper()
	ctx := context.Background()
	outcome := []byte(`{"prepay_id":"wx201410272009395522657a690389285100"}`)
	var n atomic.Uint64
	b.SetParallelism(parallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			k := idempotency.Key{MchID: "1900000109", OutTradeNo: "bench" + strconv.FormatUint(n.Add(1), 10)}
			c, err := s.Claim(ctx, k, "sha256:bench", idempotency.LeaseDefault)
			if err != nil || c.State != idempotency.StateClaimed {
				b.Errorf("Claim(%s) = %v, %v, want claimed", k, c.State, err)
				return
			}
			if err := s.Complete(ctx, k, c.Token, outcome, time.Hour); err != nil {
				b.Errorf("Complete(%s) = %v", k, err)
				return
			}
		}
	})
	b.StopTimer()
	perSec := float64(b.N) / b.Elapsed().Seconds()
	b.ReportMetric(perSec, "claim+complete/s")
	return perSec
}

var setRate = regexp.MustCompile(`SET: ([0-9.]+) requests per second`)

// redisBenchmarkSET runs redis-benchmark -t set against addr and answers its
// requests per second.
func redisBenchmarkSET(b *testing.B, addr string) (float64, bool) {
	b.Helper()
	if _, err := exec.LookPath("redis-benchmark"); err != nil {
		b.Logf("redis-benchmark not installed: no SET figure")
		return 0, false
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		b.Fatalf("redis address %s: %v", addr, err)
	}
	out, err := exec.Command("redis-benchmark", "-h", host, "-p", port, "-t", "set", "-n", "100000", "-q").CombinedOutput()
	if err != nil {
		b.Fatalf("redis-benchmark: %v: %s", err, out)
	}
	m := setRate.FindSubmatch(out)
	if m == nil {
		b.Fatalf("redis-benchmark output has no SET rate: %q", out)
	}
	set, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		b.Fatalf("redis-benchmark SET rate %q: %v", m[1], err)
	}
	return set, true
}

func TestRedis_TLS(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile := writeTestCerts(t, dir)
	tlsPort := strconv.Itoa(testenv.FreePort(t))
	testenv.StartRedisWith(t, "--tls-port", tlsPort, "--tls-cert-file", certFile, "--tls-key-file", keyFile,
		"--tls-ca-cert-file", caFile, "--tls-auth-clients", "no")
	addr := net.JoinHostPort("127.0.0.1", tlsPort)
	tests := []struct {
		name    string
		cfg     idempotency.RedisClientConfig
		wantErr error
	}{
		{"tls with the CA", idempotency.RedisClientConfig{Addrs: []string{addr}, TLS: true, CAFile: caFile}, nil},
		{"tls with the CA and server name", idempotency.RedisClientConfig{Addrs: []string{addr}, TLS: true, CAFile: caFile, ServerName: "redis.test"}, nil},
		{"tls with a wrong server name", idempotency.RedisClientConfig{Addrs: []string{addr}, TLS: true, CAFile: caFile, ServerName: "other.test"}, idempotency.ErrUnavailable},
		{"tls with system roots", idempotency.RedisClientConfig{Addrs: []string{addr}, TLS: true}, idempotency.ErrUnavailable},
		{"plain text to the tls port", idempotency.RedisClientConfig{Addrs: []string{addr}}, idempotency.ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := idempotency.NewRedis(testRedisClient(t, tt.cfg), idempotency.RedisConfig{})
			if err != nil {
				t.Fatalf("NewRedis: %v", err)
			}
			err = s.Ping(t.Context())
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("Ping() error = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// writeTestCerts writes a fresh CA and a server certificate for 127.0.0.1
// and redis.test into dir.
func writeTestCerts(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "idempotency test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "redis.test"},
		DNSNames:     []string{"redis.test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caTmpl, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", srvDER), write("server.key", "PRIVATE KEY", keyDER)
}

func TestRedis_Unresponsive(t *testing.T) {
	t.Parallel()
	// A server that accepts connections and never answers, like a hung
	// redis-server: calls must time out as ErrUnavailable.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	var conns sync.WaitGroup
	t.Cleanup(func() { _ = l.Close(); conns.Wait() })
	conns.Go(func() { // Ends when the listener closes; holds each connection until then.
		var held []net.Conn
		defer func() {
			for _, c := range held {
				_ = c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	})
	s, err := idempotency.NewRedis(testRedisClient(t, idempotency.RedisClientConfig{Addrs: []string{l.Addr().String()}}), idempotency.RedisConfig{})
	if err != nil {
		t.Fatalf("NewRedis: %v", err)
	}
	start := time.Now()
	_, err = s.Claim(t.Context(), idempotency.Key{MchID: "1", OutTradeNo: "2"}, "fp", time.Minute)
	if !errors.Is(err, idempotency.ErrUnavailable) {
		t.Fatalf("Claim() error = %v, want ErrUnavailable", err)
	}
	t.Logf("Claim against a silent server: %v after %v", err, time.Since(start).Round(time.Millisecond))
}
