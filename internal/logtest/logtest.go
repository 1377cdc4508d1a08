// Package logtest has a slog.Handler for tests that assert what a component
// logged, e.g. that a watch broke and was retried.
package logtest

import (
	"context"
	"log/slog"
	"sync"
)

// Counter counts records by message. Safe for concurrent use.
type Counter struct {
	mu sync.Mutex
	n  map[string]int
}

// NewCounter returns an empty Counter.
func NewCounter() *Counter { return &Counter{n: map[string]int{}} }

func (h *Counter) Enabled(context.Context, slog.Level) bool { return true }

func (h *Counter) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n[r.Message]++
	return nil
}

func (h *Counter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *Counter) WithGroup(string) slog.Handler      { return h }

// Count is how many records had message msg.
func (h *Counter) Count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n[msg]
}
