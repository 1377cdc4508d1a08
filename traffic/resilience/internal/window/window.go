// Package window is a rolling window of two counters split into time
// buckets, the sliding window behind the breaker's error rate, the retry
// budget and the adaptive throttle. Time comes in as an argument, so the
// owners stay pure; none of it is safe for concurrent use.
package window

import "time"

// Counts are the two counters of a bucket or of the whole window. What A
// and B mean is up to the owner (requests and failures, requests and
// retries, requests and accepts).
type Counts struct{ A, B int64 }

// Window sums Counts over the last Size, in Buckets steps: an event is
// forgotten between Size-Size/Buckets and Size after it happened.
type Window struct {
	origin  time.Time
	width   int64 // ns per bucket
	buckets []Counts
	last    int64 // absolute number of the newest bucket touched
	sum     Counts
}

// New returns an empty window. size and buckets must be positive; origin
// is any time not after the first one the window will see.
func New(size time.Duration, buckets int, origin time.Time) *Window {
	w := &Window{}
	w.Init(size, buckets, origin)
	return w
}

// Init sets up a zero Window in place, so an owner can embed one.
func (w *Window) Init(size time.Duration, buckets int, origin time.Time) {
	w.origin = origin
	w.width = max(int64(size)/int64(buckets), 1)
	w.buckets = make([]Counts, buckets)
	w.last = 0
	w.sum = Counts{}
}

// advance drops the buckets that fell out of the window by now and
// returns the index of the current bucket.
func (w *Window) advance(now time.Time) int {
	cur := int64(now.Sub(w.origin)) / w.width
	if cur < w.last { // a clock that went back: count into the newest bucket
		cur = w.last
	}
	n := int64(len(w.buckets))
	if cur-w.last >= n {
		clear(w.buckets)
		w.sum = Counts{}
	} else {
		for i := w.last + 1; i <= cur; i++ {
			b := &w.buckets[i%n]
			w.sum.A -= b.A
			w.sum.B -= b.B
			*b = Counts{}
		}
	}
	w.last = cur
	return int(cur % n)
}

// Add counts a and b at now.
func (w *Window) Add(now time.Time, a, b int64) {
	i := w.advance(now)
	w.buckets[i].A += a
	w.buckets[i].B += b
	w.sum.A += a
	w.sum.B += b
}

// Sum returns the counts over the window ending at now.
func (w *Window) Sum(now time.Time) Counts {
	w.advance(now)
	return w.sum
}

// Reset forgets everything counted so far.
func (w *Window) Reset() {
	clear(w.buckets)
	w.sum = Counts{}
}
