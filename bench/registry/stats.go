package main

import (
	"math"
	"slices"
	"time"
)

// percentile is the nearest-rank p-th percentile (0 < p <= 100) of xs: the
// smallest sample that at least p% of the samples are less than or equal
// to. It does not modify xs. Callers check for no samples; it is 0 then.
func percentile(xs []time.Duration, p float64) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	rank = min(max(rank, 1), len(s))
	return s[rank-1]
}

// median of per-round figures; NaN figures (not measured in a round) are
// left out, and NaN is returned when none is left. With an even count it is
// the mean of the middle two.
func median(xs []float64) float64 {
	s := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) {
			s = append(s, x)
		}
	}
	if len(s) == 0 {
		return math.NaN()
	}
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// percentileMS is percentile in milliseconds, NaN for no samples (shown as
// "n/a" in the table).
func percentileMS(xs []time.Duration, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	return float64(percentile(xs, p)) / float64(time.Millisecond)
}
