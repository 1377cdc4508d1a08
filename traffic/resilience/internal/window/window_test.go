package window

import (
	"testing"
	"time"
)

func TestWindowForgetsOldBuckets(t *testing.T) {
	t0 := time.Unix(1000, 0)
	w := New(10*time.Second, 10, t0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

	w.Add(at(0.5), 1, 0)
	w.Add(at(3.2), 1, 1)
	w.Add(at(9.9), 1, 1)
	if got := w.Sum(at(9.9)); got != (Counts{3, 2}) {
		t.Fatalf("at 9.9s: %+v", got)
	}
	// 10.0s starts bucket 10, which reuses the slot of bucket 0.
	if got := w.Sum(at(10.0)); got != (Counts{2, 2}) {
		t.Fatalf("at 10s: %+v", got)
	}
	if got := w.Sum(at(13.5)); got != (Counts{1, 1}) {
		t.Fatalf("at 13.5s: %+v", got)
	}
	// A jump longer than the window clears everything.
	if got := w.Sum(at(60)); got != (Counts{}) {
		t.Fatalf("at 60s: %+v", got)
	}
	w.Add(at(60), 5, 0)
	// A clock that goes back counts into the newest bucket.
	w.Add(at(59), 1, 0)
	if got := w.Sum(at(60)); got != (Counts{6, 0}) {
		t.Fatalf("after a clock step back: %+v", got)
	}
	w.Reset()
	if got := w.Sum(at(60)); got != (Counts{}) {
		t.Fatalf("after Reset: %+v", got)
	}
}
