// Package backoff computes reconnect delays: capped exponential backoff with
// full jitter, as described in the AWS Architecture Blog's "Exponential
// Backoff and Jitter". Full jitter spreads the reconnects of many clients
// after a control-plane outage instead of letting them arrive in waves.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff yields the delay before each retry. The zero value uses the
// defaults on the fields. It is not safe for concurrent use: each retry loop
// owns one.
type Backoff struct {
	// Base is the ceiling of the first delay. Default 100ms.
	Base time.Duration
	// Max caps the ceiling. Default 10s.
	Max time.Duration

	attempt int
}

// Next returns the delay before the next attempt: a uniformly random
// duration in [0, min(Max, Base*2^n)) where n counts the calls since the
// last Reset.
func (b *Backoff) Next() time.Duration {
	base, maxd := b.Base, b.Max
	if base <= 0 {
		base = 100 * time.Millisecond
	}
	if maxd <= 0 {
		maxd = 10 * time.Second
	}
	ceil := maxd
	if b.attempt < 62 && base<<b.attempt > 0 && base<<b.attempt < maxd {
		ceil = base << b.attempt
	}
	b.attempt++
	return rand.N(ceil) + 1 // never 0, so a tight failure loop always yields
}

// Reset starts the sequence again; call it after a success.
func (b *Backoff) Reset() { b.attempt = 0 }

// Sleep waits for d or until ctx ends; it reports whether the full delay
// passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
