// Package config is what cmd/worker and cmd/notifier share to read their
// configuration and reach NATS: one table-driven loader for environment
// variables (each also a flag) that reports every problem at once, the NATS
// connection settings with a connection that retries until the server
// answers and a check of the server's version, and the JSON logger.
package config

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// Setting is one configuration variable: its environment name, its default
// and what it means. Every setting is also a flag: NATS_URL is -nats-url.
type Setting struct {
	Env, Def, Usage string
}

// FlagName answers the flag of an environment name: NATS_URL → nats-url.
func FlagName(env string) string { return strings.ReplaceAll(strings.ToLower(env), "_", "-") }

// WithFlags answers a getenv in which every setting given as a flag
// (-nats-url for NATS_URL) overrides the environment. -h prints the
// settings with their defaults to output and answers flag.ErrHelp.
func WithFlags(name string, settings []Setting, args []string, getenv func(string) string, output io.Writer) (func(string) string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(output)
	vals := map[string]*string{}
	for _, s := range settings {
		vals[s.Env] = fs.String(FlagName(s.Env), "", s.Usage+" (env "+s.Env+", default "+strconv.Quote(s.Def)+")")
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[strings.ReplaceAll(strings.ToUpper(f.Name), "-", "_")] = true })
	return func(k string) string {
		if set[k] {
			return *vals[k]
		}
		return getenv(k)
	}, nil
}

// Loader reads settings through Getenv and collects every problem, so a
// service reports all of them in one message at start.
type Loader struct {
	// Settings are the variables the service reads, with their defaults.
	Settings []Setting
	// Getenv answers a variable's value ("" when unset).
	Getenv func(string) string

	errs []string
}

// Str answers k's trimmed value, else its default. It panics on a k that
// is not in Settings: a typo in the code, not in the configuration.
func (l *Loader) Str(k string) string {
	if v := strings.TrimSpace(l.Getenv(k)); v != "" {
		return v
	}
	for _, s := range l.Settings {
		if s.Env == k {
			return s.Def
		}
	}
	panic("config: unknown setting " + k)
}

// Fail records a problem with k.
func (l *Loader) Fail(k, format string, args ...any) {
	l.errs = append(l.errs, k+": "+fmt.Sprintf(format, args...))
}

// Duration answers k as a positive duration.
func (l *Loader) Duration(k string) time.Duration {
	v := l.Str(k)
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		l.Fail(k, "%q is not a positive duration such as 30s", v)
	}
	return d
}

// DurationIn answers k as a duration from lo to hi; why explains hi.
func (l *Loader) DurationIn(k string, lo, hi time.Duration, why string) time.Duration {
	v := l.Str(k)
	if v == "" {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < lo || d > hi {
		l.Fail(k, "%q is not a duration from %s to %s%s", v, lo, hi, why)
	}
	return d
}

// Durations answers k as a comma-separated list of positive durations.
func (l *Loader) Durations(k string) []time.Duration {
	v := l.Str(k)
	if v == "" {
		return nil
	}
	var out []time.Duration
	for p := range strings.SplitSeq(v, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(p))
		if err != nil || d <= 0 {
			l.Fail(k, "%q is not a comma-separated list of positive durations", v)
			return nil
		}
		out = append(out, d)
	}
	return out
}

// Integer answers k as an integer from lo to hi; an empty default answers 0.
func (l *Loader) Integer(k string, lo, hi int) int {
	v := l.Str(k)
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		l.Fail(k, "%q is not an integer from %d to %d", v, lo, hi)
	}
	return n
}

// Boolean answers k as true or false.
func (l *Loader) Boolean(k string) bool {
	v := l.Str(k)
	b, err := strconv.ParseBool(v)
	if err != nil {
		l.Fail(k, "%q is not true or false", v)
	}
	return b
}

// File answers k, a file that must exist; "" is allowed.
func (l *Loader) File(k string) string {
	v := l.Str(k)
	if v != "" {
		if _, err := os.Stat(v); err != nil {
			l.Fail(k, "file %s cannot be read", v)
		}
	}
	return v
}

// List answers k as a comma-separated list without empty items; a repeated
// item is a problem.
func (l *Loader) List(k string) []string {
	var out []string
	for it := range strings.SplitSeq(l.Str(k), ",") {
		it = strings.TrimSpace(it)
		switch {
		case it == "":
		case contains(out, it):
			l.Fail(k, "lists %s twice", it)
		default:
			out = append(out, it)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Err answers every problem recorded, one per line, or nil.
func (l *Loader) Err() error {
	if len(l.errs) == 0 {
		return nil
	}
	return fmt.Errorf("configuration: %d problem(s):\n  %s", len(l.errs), strings.Join(l.errs, "\n  "))
}
