package stack

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Sample is one Prometheus sample: a metric name, its labels and value.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Metrics is a scrape of a /metrics endpoint.
type Metrics []Sample

// Sum adds the values of every sample named name whose labels include
// every pair of match ("k", "v", …).
func (m Metrics) Sum(name string, match ...string) float64 {
	total := 0.0
	for _, s := range m {
		if s.Name != name {
			continue
		}
		ok := true
		for i := 0; i+1 < len(match); i += 2 {
			if s.Labels[match[i]] != match[i+1] {
				ok = false
				break
			}
		}
		if ok {
			total += s.Value
		}
	}
	return total
}

// Add answers the samples of m and o together, so that Sum totals both.
func (m Metrics) Add(o Metrics) Metrics { return append(append(Metrics(nil), m...), o...) }

// Scrape reads a Prometheus text-format endpoint.
func Scrape(ctx context.Context, url string) (Metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("stack: scrape %s: %w", url, err)
	}
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("stack: scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("stack: scrape %s: status %d", url, resp.StatusCode)
	}
	return ParseMetrics(resp.Body)
}

// ParseMetrics parses the Prometheus text exposition format; comments and
// malformed lines are skipped.
func ParseMetrics(r io.Reader) (Metrics, error) {
	var m Metrics
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		s := Sample{Labels: map[string]string{}}
		var rest string
		if i := strings.IndexAny(line, "{ "); i >= 0 && line[i] == '{' {
			s.Name = line[:i]
			j := strings.LastIndexByte(line, '}')
			if j < i {
				continue
			}
			parseLabels(line[i+1:j], s.Labels)
			rest = strings.TrimSpace(line[j+1:])
		} else {
			name, value, ok := strings.Cut(line, " ")
			if !ok {
				continue
			}
			s.Name, rest = name, strings.TrimSpace(value)
		}
		value, _, _ := strings.Cut(rest, " ") // drop a timestamp
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		s.Value = v
		m = append(m, s)
	}
	if err := sc.Err(); err != nil {
		return m, fmt.Errorf("stack: parse metrics: %w", err)
	}
	return m, nil
}

// parseLabels parses `a="x",b="y\"z"` into labels.
func parseLabels(s string, labels map[string]string) {
	for s != "" {
		eq := strings.IndexByte(s, '=')
		if eq < 0 || eq+1 >= len(s) || s[eq+1] != '"' {
			return
		}
		key := strings.TrimSpace(strings.TrimPrefix(s[:eq], ","))
		var val strings.Builder
		i := eq + 2
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
				switch s[i] {
				case 'n':
					val.WriteByte('\n')
					continue
				}
			}
			val.WriteByte(s[i])
		}
		labels[key] = val.String()
		if i+1 >= len(s) {
			return
		}
		s = strings.TrimPrefix(s[i+1:], ",")
	}
}

// CPUTime answers the user plus system CPU time a process has used, from
// /proc (Linux). It assumes the usual 100 clock ticks per second.
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("stack: cpu time of %d: %w", pid, err)
	}
	// The command name may hold spaces; fields resume after its ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("stack: cpu time of %d: malformed /proc stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// After ')': state(3) … utime is field 14, stime 15 (1-based overall).
	if len(f) < 13 {
		return 0, fmt.Errorf("stack: cpu time of %d: malformed /proc stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("stack: cpu time of %d: malformed /proc stat", pid)
	}
	const tick = 10 * time.Millisecond
	return time.Duration(ut+st) * tick, nil
}

// SelfCPUTime answers the CPU time this process has used.
func SelfCPUTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
