// Command deadletter lists, inspects, replays and deletes the jobs in the
// dead-letter stream (events.StreamDeadLetters), and pauses and resumes
// consumption.
//
//	deadletter list    [--reason R] [--mchid M] [--since 24h|RFC3339] [--limit N] [--json] [--every-entry]
//	deadletter inspect [--reveal-personal-data] SEQ
//	deadletter replay  (--seq N | --reason R | --mchid M | --since T | --all)
//	                   [--rate 10] [--dry-run] [--keep] [--force]
//	deadletter delete  (--seq N | --reason R | --mchid M | --since T | --all) [--dry-run]
//	deadletter pause   --reason TEXT [--consumer orderworker]
//	deadletter resume  [--consumer orderworker]
//	deadletter status  [--consumer orderworker]
//
// list shows one line per order: the repeats of one order (dead-lettered
// again after a replay, or published twice beyond the duplicate window) are
// collapsed into its newest entry with their count and sequences.
//
// Replay republishes each entry's original job bytes and headers to its
// original job subject, at most --rate per second, with Nats-Msg-Id
// "replay:<dead-letter stream>:<seq>" (see ReplayMsgID for why not the
// producer's id), checks that the jobs stream stored it, and then deletes
// the entry (unless --keep). Without --force it replays only reasons that
// can succeed unchanged: max_deliveries and rejected.
//
// pause sets the switch every worker of the consumer watches
// (pipeline.Pause): each drains its jobs in flight and pulls nothing until
// resume, whatever scales the Deployment.
//
// Connection settings come from the same variable names as the worker's
// (NATS_URL, NATS_CREDS_FILE, NATS_NKEY_FILE, NATS_TLS_CA_FILE,
// NATS_TLS_CERT_FILE, NATS_TLS_KEY_FILE, SUBJECT_PREFIX), or from flags; use
// the dead-letter tool's own NATS user (docs/operations.md#nats-users-and-permissions).
//
// Exit status: 0 on success, 1 when something failed, 2 on a usage error.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcombine/orderworker/events"
	envconfig "github.com/wxcombine/orderworker/internal/config"
)

// version is set by the linker (-X main.version).
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage: deadletter <command> [flags]

commands:
  list      list dead letters (filters: --reason, --mchid, --since, --limit)
  inspect   show one dead letter in full: deadletter inspect SEQ
  replay    republish dead-lettered jobs to their job subjects
            (--seq N | --reason R | --mchid M | --since T | --all) [--rate 10] [--dry-run] [--keep] [--force]
  delete    delete dead letters that were dealt with
            (--seq N | --reason R | --mchid M | --since T | --all) [--dry-run]
  pause     pause consumption on every worker of a consumer: --reason TEXT
  resume    resume consumption
  status    show whether consumption is paused

Run "deadletter <command> -h" for the flags of a command.
`

// errUsage marks a usage error (exit status 2); the message was printed.
var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "list":
		err = runList(ctx, rest, getenv, stdout, stderr)
	case "inspect":
		err = runInspect(ctx, rest, getenv, stdout, stderr)
	case "replay":
		err = runReplay(ctx, rest, getenv, stdout, stderr)
	case "delete":
		err = runDelete(ctx, rest, getenv, stdout, stderr)
	case "pause", "resume", "status":
		err = runPause(ctx, cmd, rest, getenv, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "deadletter: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage), errors.Is(err, flag.ErrHelp):
		return 2
	default:
		fmt.Fprintf(stderr, "deadletter: %v\n", err)
		return 1
	}
}

// conn holds the connection flags shared by every command.
type conn struct {
	url, creds, nkey, inbox    string
	tlsCA, tlsCert, tlsKey     string
	prefix, stream, jobsStream string
	timeout                    time.Duration
}

func (c *conn) register(fs *flag.FlagSet, getenv func(string) string) {
	fs.StringVar(&c.url, "nats-url", or(getenv("NATS_URL"), nats.DefaultURL), "NATS server URLs, comma-separated (env NATS_URL)")
	fs.StringVar(&c.creds, "nats-creds", getenv("NATS_CREDS_FILE"), "NATS user credentials file (env NATS_CREDS_FILE)")
	fs.StringVar(&c.nkey, "nats-nkey", getenv("NATS_NKEY_FILE"), "NATS user nkey seed file (env NATS_NKEY_FILE)")
	fs.StringVar(&c.inbox, "nats-inbox-prefix", "_INBOX_deadletter", "prefix of the tool's reply subjects (its NATS user may subscribe to these only)")
	fs.StringVar(&c.tlsCA, "nats-tls-ca", getenv("NATS_TLS_CA_FILE"), "CA bundle that verifies the NATS servers (env NATS_TLS_CA_FILE)")
	fs.StringVar(&c.tlsCert, "nats-tls-cert", getenv("NATS_TLS_CERT_FILE"), "client certificate for NATS (env NATS_TLS_CERT_FILE)")
	fs.StringVar(&c.tlsKey, "nats-tls-key", getenv("NATS_TLS_KEY_FILE"), "client key for NATS (env NATS_TLS_KEY_FILE)")
	fs.StringVar(&c.prefix, "subject-prefix", or(getenv("SUBJECT_PREFIX"), events.SubjectPrefixDefault), "first token of every subject (env SUBJECT_PREFIX)")
	fs.StringVar(&c.stream, "stream", events.StreamDeadLetters, "dead-letter stream")
	fs.StringVar(&c.jobsStream, "jobs-stream", events.StreamJobs, "stream a replayed job must land in")
	fs.DurationVar(&c.timeout, "timeout", RequestTimeoutDefault, "timeout of one JetStream request")
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// open connects and answers the tool and a function that closes the
// connection. Unlike the services, it fails at once when NATS is down.
func (c *conn) open() (*Tool, func(), error) {
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return nil, nil, errors.New("NATS TLS: give both the client certificate and its key, or neither")
	}
	n := envconfig.NATS{URL: c.url, CredsFile: c.creds, NkeyFile: c.nkey, InboxPrefix: c.inbox, CAFile: c.tlsCA, CertFile: c.tlsCert, KeyFile: c.tlsKey}
	nc, err := n.Connect("orderworker-deadletter "+version, slog.New(slog.DiscardHandler),
		nats.RetryOnFailedConnect(false), nats.MaxReconnects(3))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS: %w", err)
	}
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(c.timeout))
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	t := &Tool{JS: js, Stream: c.stream, JobsStream: c.jobsStream, Subjects: events.Subjects{Prefix: c.prefix}}
	return t, func() { _ = nc.Drain() }, nil
}

// filterFlags registers the selection flags.
type filterFlags struct {
	reason, mchid, since string
}

func (ff *filterFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&ff.reason, "reason", "", "only this reason: "+reasonList())
	fs.StringVar(&ff.mchid, "mchid", "", "only this combine_mchid")
	fs.StringVar(&ff.since, "since", "", "only entries stored since a duration ago (24h) or an RFC 3339 time")
}

// selectFlags adds --seq and --all to the filter flags, for the commands
// that change entries: one of them, or a filter, must say which.
type selectFlags struct {
	filterFlags
	seq uint64
	all bool
}

func (sf *selectFlags) register(fs *flag.FlagSet, verb string) {
	sf.filterFlags.register(fs)
	fs.Uint64Var(&sf.seq, "seq", 0, verb+" only the entry at this sequence")
	fs.BoolVar(&sf.all, "all", false, verb+" every entry (no filter)")
}

// selection answers the entries the flags select, or a usage error when
// they select none or contradict each other.
func (sf *selectFlags) selection(fs *flag.FlagSet, stderr io.Writer, now time.Time) (Filter, error) {
	f, err := sf.filter(now)
	if err != nil {
		return f, usageErr(stderr, fs, "%v", err)
	}
	f.Seq = sf.seq
	filtered := f.Reason != "" || f.MchID != "" || !f.Since.IsZero()
	switch {
	case sf.all && (filtered || f.Seq != 0):
		return f, usageErr(stderr, fs, "--all selects every entry; drop --seq, --reason, --mchid and --since")
	case f.Seq != 0 && filtered:
		return f, usageErr(stderr, fs, "--seq selects one entry; drop --reason, --mchid and --since")
	case !sf.all && f.Seq == 0 && !filtered:
		return f, usageErr(stderr, fs, "select entries with --seq, --reason, --mchid, --since, or --all")
	}
	return f, nil
}

func reasonList() string {
	s := make([]string, len(events.Reasons))
	for i, r := range events.Reasons {
		s[i] = string(r)
	}
	return strings.Join(s, ", ")
}

func (ff *filterFlags) filter(now time.Time) (Filter, error) {
	f := Filter{MchID: ff.mchid}
	if ff.reason != "" {
		r := events.Reason(ff.reason)
		if !isReason(r) {
			return f, fmt.Errorf("--reason %q is not one of %s", ff.reason, reasonList())
		}
		f.Reason = r
	}
	if ff.since != "" {
		t, err := parseSince(ff.since, now)
		if err != nil {
			return f, err
		}
		f.Since = t
	}
	return f, nil
}

func isReason(r events.Reason) bool {
	for _, known := range events.Reasons {
		if r == known {
			return true
		}
	}
	return false
}

func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("--since %s: duration must not be negative", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--since %q is neither a duration (24h) nor an RFC 3339 time", s)
	}
	return t, nil
}

// parse parses args, which must hold no positional arguments, and reports
// usage errors on stderr.
func parse(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	if err := parseWithArgs(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr(stderr, fs, "unexpected arguments %q", fs.Args())
	}
	return nil
}

// parseWithArgs is parse for a command that takes positional arguments.
func parseWithArgs(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return err // flag printed it
	}
	return nil
}

func usageErr(stderr io.Writer, fs *flag.FlagSet, format string, a ...any) error {
	fmt.Fprintf(stderr, "deadletter %s: %s\n", fs.Name(), fmt.Sprintf(format, a...))
	fs.Usage()
	return errUsage
}

func runList(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("list", flag.ContinueOnError)
	var c conn
	var ff filterFlags
	c.register(fs, getenv)
	ff.register(fs)
	limit := fs.Int("limit", 0, "stop after this many entries (0: no limit)")
	asJSON := fs.Bool("json", false, "one JSON object per line instead of a table")
	every := fs.Bool("every-entry", false, "one line per entry instead of one per order")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	f, err := ff.filter(time.Now())
	if err != nil {
		return usageErr(stderr, fs, "%v", err)
	}
	f.Limit = *limit
	t, closeConn, err := c.open()
	if err != nil {
		return err
	}
	defer closeConn()
	return list(ctx, t, f, *asJSON, !*every, stdout)
}

// listLine is one entry of list --json: everything but the job's bytes.
type listLine struct {
	Seq               uint64        `json:"seq"`
	Stored            time.Time     `json:"stored"`
	Reason            events.Reason `json:"reason"`
	CombineMchID      string        `json:"combine_mchid,omitempty"`
	CombineOutTradeNo string        `json:"combine_out_trade_no,omitempty"`
	CorrelationID     string        `json:"correlation_id,omitempty"`
	OriginalSubject   string        `json:"original_subject"`
	DeliveryCount     uint64        `json:"delivery_count"`
	Error             string        `json:"error"`
	// Count and Seqs are the entries of this order (one without collapsing).
	Count int      `json:"count"`
	Seqs  []uint64 `json:"seqs"`
}

// list prints the entries f selects; with collapse, one line per order
// (the newest entry, with the count and sequences of all).
func list(ctx context.Context, t *Tool, f Filter, asJSON, collapse bool, w io.Writer) error {
	var groups []Group
	var err error
	if collapse {
		groups, err = t.Groups(ctx, f)
	} else {
		err = t.Scan(ctx, f, func(e Entry) error {
			groups = append(groups, Group{Latest: e, Seqs: []uint64{e.Seq}})
			return nil
		})
	}
	if err != nil {
		return err
	}
	enc := json.NewEncoder(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if !asJSON {
		fmt.Fprintln(tw, "SEQ\tSTORED\tREASON\tCOMBINE_MCHID\tCOMBINE_OUT_TRADE_NO\tDELIVERIES\tREPEATS\tSUBJECT\tERROR")
	}
	entries := 0
	for _, g := range groups {
		e := g.Latest
		entries += len(g.Seqs)
		l := listLine{
			Seq: e.Seq, Stored: e.Stored.UTC(), Reason: e.Letter.Reason,
			CombineMchID: e.Letter.CombineMchID, CombineOutTradeNo: e.Letter.CombineOutTradeNo,
			CorrelationID: e.Letter.CorrelationID, OriginalSubject: e.Letter.OriginalSubject,
			DeliveryCount: e.Letter.DeliveryCount, Error: redactText(e.Letter.Error), Count: len(g.Seqs), Seqs: g.Seqs,
		}
		if e.DecodeErr != nil {
			l.Error = e.DecodeErr.Error()
		}
		if asJSON {
			if err := enc.Encode(l); err != nil {
				return err
			}
			continue
		}
		repeats := "-"
		if len(g.Seqs) > 1 {
			repeats = fmt.Sprintf("%d (seq %s)", len(g.Seqs), joinSeqs(g.Seqs))
		}
		if _, err := fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", l.Seq, l.Stored.Format(time.RFC3339),
			dash(string(l.Reason)), dash(l.CombineMchID), dash(l.CombineOutTradeNo), l.DeliveryCount, repeats,
			dash(l.OriginalSubject), oneLine(l.Error, 80)); err != nil {
			return err
		}
	}
	if asJSON {
		return nil
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%d dead letters, %d orders\n", entries, len(groups))
	return err
}

func joinSeqs(seqs []uint64) string {
	s := make([]string, len(seqs))
	for i, q := range seqs {
		s[i] = strconv.FormatUint(q, 10)
	}
	return strings.Join(s, ",")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine shortens s to one line of at most n runes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return dash(s)
}

func runInspect(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	var c conn
	c.register(fs, getenv)
	reveal := fs.Bool("reveal-personal-data", false, "show openids in the job instead of REDACTED")
	if err := parseWithArgs(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageErr(stderr, fs, "want exactly one sequence number, got %d arguments", fs.NArg())
	}
	seq, err := strconv.ParseUint(fs.Arg(0), 10, 64)
	if err != nil || seq == 0 {
		return usageErr(stderr, fs, "sequence %q is not a positive integer", fs.Arg(0))
	}
	t, closeConn, err := c.open()
	if err != nil {
		return err
	}
	defer closeConn()
	return inspect(ctx, t, seq, *reveal, stdout)
}

// inspection is what inspect prints.
type inspection struct {
	Seq     uint64    `json:"seq"`
	Subject string    `json:"subject"`
	Stored  time.Time `json:"stored"`
	// DecodeError is set when the entry is not a DeadLetter.
	DecodeError       string              `json:"decode_error,omitempty"`
	Reason            events.Reason       `json:"reason,omitempty"`
	Error             string              `json:"error,omitempty"`
	CombineMchID      string              `json:"combine_mchid,omitempty"`
	CombineOutTradeNo string              `json:"combine_out_trade_no,omitempty"`
	CorrelationID     string              `json:"correlation_id,omitempty"`
	OriginalSubject   string              `json:"original_subject,omitempty"`
	OriginalHeaders   map[string][]string `json:"original_headers,omitempty"`
	StreamSequence    uint64              `json:"stream_sequence,omitempty"`
	DeliveryCount     uint64              `json:"delivery_count"`
	FirstFailedAt     time.Time           `json:"first_failed_at"`
	DeadAt            time.Time           `json:"dead_at"`
	ReplayMsgID       string              `json:"replay_msg_id"`
	// Job is the original job: JSON as stored (openids redacted) when it is
	// JSON, else JobBase64 holds its bytes.
	Job       json.RawMessage `json:"job,omitempty"`
	JobBase64 string          `json:"job_base64,omitempty"`
	// JobRedacted says JobBase64 holds the job with its openids replaced.
	JobRedacted bool `json:"job_redacted,omitempty"`
	JobBytes    int  `json:"job_bytes"`
}

func inspect(ctx context.Context, t *Tool, seq uint64, reveal bool, w io.Writer) error {
	e, err := t.Get(ctx, seq)
	if err != nil {
		return err
	}
	l := e.Letter
	out := inspection{
		Seq: e.Seq, Subject: e.Subject, Stored: e.Stored.UTC(),
		Reason: l.Reason, Error: l.Error, CombineMchID: l.CombineMchID, CombineOutTradeNo: l.CombineOutTradeNo,
		CorrelationID: l.CorrelationID, OriginalSubject: l.OriginalSubject, OriginalHeaders: l.OriginalHeaders,
		StreamSequence: l.StreamSequence, DeliveryCount: l.DeliveryCount, FirstFailedAt: l.FirstFailedAt,
		DeadAt: l.DeadAt, ReplayMsgID: ReplayMsgID(t.stream(), e.Seq), JobBytes: len(l.OriginalData),
	}
	if e.DecodeErr != nil {
		out.DecodeError = e.DecodeErr.Error()
	}
	if !reveal {
		out.Error = redactText(out.Error)
	}
	if len(l.OriginalData) > 0 {
		if job, ok := redactJSON(l.OriginalData, reveal); ok {
			out.Job = job
		} else if reveal {
			out.JobBase64 = base64.StdEncoding.EncodeToString(l.OriginalData)
		} else {
			// Not JSON: its bytes still may hold openids, which base64 would
			// only hide from a reader, not from a log.
			out.JobBase64 = base64.StdEncoding.EncodeToString([]byte(redactText(string(l.OriginalData))))
			out.JobRedacted = true
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// isPersonalKey reports whether a JSON key holds personal data: any key
// naming an openid, in any spelling (openid, sub_openid, payer_openid,
// OpenID, openId…).
func isPersonalKey(k string) bool {
	return strings.Contains(strings.ToLower(strings.ReplaceAll(k, "_", "")), "openid")
}

// redactJSON answers data with every personal value replaced by "REDACTED"
// (or unchanged when reveal), and whether data is JSON at all.
func redactJSON(data []byte, reveal bool) (json.RawMessage, bool) {
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, false
	}
	if reveal {
		return json.RawMessage(data), true
	}
	out, err := json.Marshal(redact(v))
	if err != nil {
		return nil, false
	}
	return out, true
}

func redact(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if isPersonalKey(k) {
				x[k] = "REDACTED"
				continue
			}
			x[k] = redact(val)
		}
	case []any:
		for i := range x {
			x[i] = redact(x[i])
		}
	case string:
		return redactText(x)
	}
	return v
}

// personalPair matches a key naming an openid and its string value in text
// that is not valid JSON (a truncated or mangled job): "openid":"o…",
// OpenID = o…, open_id: o….
var personalPair = regexp.MustCompile(`(?i)("?[a-z_]*open_?id"?\s*[:=]\s*"?)([^"\s,}&]+)`)

// openIDShape matches a bare WeChat openid: 28 characters of base64url
// starting with "o".
var openIDShape = regexp.MustCompile(`\bo[A-Za-z0-9_-]{27}\b`)

// redactText replaces openids in free text: values of keys naming an
// openid and anything shaped like one.
func redactText(s string) string {
	s = personalPair.ReplaceAllString(s, "${1}REDACTED")
	return openIDShape.ReplaceAllString(s, "REDACTED")
}

func runReplay(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	var c conn
	var sf selectFlags
	c.register(fs, getenv)
	sf.register(fs, "replay")
	var opts ReplayOptions
	fs.Float64Var(&opts.Rate, "rate", RateDefault, "jobs published per second")
	fs.BoolVar(&opts.DryRun, "dry-run", false, "show what would be replayed; change nothing")
	fs.BoolVar(&opts.Keep, "keep", false, "keep replayed entries in the dead-letter stream")
	fs.BoolVar(&opts.Force, "force", false, "also replay reasons that fail again unchanged ("+
		"malformed, unsupported_version, too_large, invalid)")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	f, err := sf.selection(fs, stderr, time.Now())
	if err != nil {
		return err
	}
	if opts.Rate <= 0 {
		return usageErr(stderr, fs, "--rate must be positive, got %v", opts.Rate)
	}
	opts.Filter, opts.All = f, sf.all
	t, closeConn, err := c.open()
	if err != nil {
		return err
	}
	defer closeConn()
	return replay(ctx, t, opts, stdout)
}

func replay(ctx context.Context, t *Tool, opts ReplayOptions, w io.Writer) error {
	counts := map[Action]int{}
	err := t.Replay(ctx, opts, func(o Outcome) {
		counts[o.Action]++
		l := o.Entry.Letter
		line := fmt.Sprintf("%s seq=%d reason=%s combine_mchid=%s combine_out_trade_no=%s subject=%s msg_id=%s",
			o.Action, o.Entry.Seq, dash(string(l.Reason)), dash(l.CombineMchID), dash(l.CombineOutTradeNo),
			dash(l.OriginalSubject), o.MsgID)
		switch o.Action {
		case ActionReplayed, ActionDuplicate:
			line += fmt.Sprintf(" job_seq=%d deleted=%t", o.JobSeq, o.Deleted)
		case ActionSkipped:
			line += ": " + o.Detail
		case ActionFailed:
			line += ": " + o.Err.Error()
		}
		fmt.Fprintln(w, line)
	})
	fmt.Fprintf(w, "replayed %d, duplicate %d, would replay %d, skipped %d, failed %d\n",
		counts[ActionReplayed], counts[ActionDuplicate], counts[ActionWouldReplay], counts[ActionSkipped], counts[ActionFailed])
	if err != nil {
		return err
	}
	if counts[ActionFailed] > 0 {
		return fmt.Errorf("%d dead letters failed to replay", counts[ActionFailed])
	}
	return nil
}
