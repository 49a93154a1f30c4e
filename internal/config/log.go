package config

import (
	"io"
	"log/slog"
)

// NewLogger answers the services' JSON logger at level. Durations are
// written as Go duration strings ("1.5s", "250ms") rather than slog's
// integer nanoseconds, which nobody reads correctly at 3 a.m.
func NewLogger(w io.Writer, level slog.Leveler) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level, ReplaceAttr: durationString}))
}

func durationString(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}
