package main

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// counts formats a count map as "a 1, b 2", keys sorted.
func counts[K ~string, V int | int64](m map[K]V) string {
	keys := slices.SortedFunc(maps.Keys(m), func(a, b K) int { return cmp.Compare(a, b) })
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// paren answers " (s)", or "" for an empty s.
func paren(s string) string {
	if s == "" {
		return ""
	}
	return " (" + s + ")"
}
