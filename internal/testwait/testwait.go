// Package testwait waits, in tests, for something to happen: it asserts
// that it happens within a generous deadline, never how fast.
package testwait

import (
	"testing"
	"time"
)

// Until polls cond every 10ms until it holds, failing t if it still does
// not hold after within.
func Until(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
