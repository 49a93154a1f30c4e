// Package configtest turns fuzz input into environments for the services'
// configuration loaders (cmd/worker, cmd/notifier), and checks what every
// loader promises about its errors.
package configtest

import (
	"slices"
	"strings"

	"github.com/wxcombine/orderworker/internal/config"
)

// Env answers base with the settings data names: each line of data sets
// one setting, chosen by the line's first byte (modulo len(settings)), to
// the rest of the line. Lines thus reach every setting whatever bytes the
// fuzzer writes, and a value may hold anything but a newline.
func Env(settings []config.Setting, base map[string]string, data []byte) map[string]string {
	env := make(map[string]string, len(base))
	for k, v := range base {
		env[k] = v
	}
	if len(settings) == 0 {
		return env
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if line == "" {
			continue
		}
		env[settings[int(line[0])%len(settings)].Env] = line[1:]
	}
	return env
}

// Seed answers the fuzz input that sets each setting named in kv (name,
// value, name, value…) to its value: the inverse of Env, for seeds. It
// panics on a name that is not in settings, or a settings list longer than
// the 256 values of a line's first byte.
func Seed(settings []config.Setting, kv ...string) []byte {
	if len(settings) > 256 {
		panic("configtest: more settings than a byte can name")
	}
	var b strings.Builder
	for i := 0; i < len(kv); i += 2 {
		idx := slices.IndexFunc(settings, func(s config.Setting) bool { return s.Env == kv[i] })
		if idx < 0 {
			panic("configtest: unknown setting " + kv[i])
		}
		b.WriteByte(byte(idx)) //nolint:gosec // G115: 0 <= idx < 256, checked above
		b.WriteString(kv[i+1])
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// Unattributed answers the problems of a Loader's error that name no
// setting: every problem must start with the variable an operator has to
// fix ("WORKER_IN_FLIGHT: …").
func Unattributed(err error, settings []config.Setting) []string {
	if err == nil {
		return nil
	}
	lines := strings.Split(err.Error(), "\n")
	var out []string
	for _, p := range lines[1:] {
		name, _, ok := strings.Cut(strings.TrimSpace(p), ":")
		known := false
		for _, s := range settings {
			known = known || s.Env == name
		}
		if !ok || !known {
			out = append(out, p)
		}
	}
	if len(lines) == 1 {
		out = append(out, lines[0])
	}
	return out
}
