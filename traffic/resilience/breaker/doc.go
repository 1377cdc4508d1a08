// Package breaker is a circuit breaker per upstream, and the Google SRE
// book's client-side adaptive throttle.
//
// # Breaker
//
// Core is the state machine: Step(Event) → Output, with the time inside
// the event, no clock and no I/O, tested by the scripts in testdata/ (run
// the tests with -update to rewrite their expected lines). Breaker runs it
// for concurrent callers:
//
//	done, err := b.Allow() // err is ErrOpen: fail fast
//	...
//	done(success)
//
// States and rules:
//
//   - closed: requests pass. ModeConsecutive opens after
//     ConsecutiveFailures failures in a row. ModeErrorRate opens on a
//     failure when the rolling Window (10 buckets) holds at least
//     MinRequests outcomes of which at least FailureRate failed.
//   - open: every request fails fast with ErrOpen for the open time:
//     OpenFor the first time, multiplied by OpenForGrowth at each
//     reopening from half-open, capped at MaxOpenFor; a close resets it.
//   - half-open: once the open time is over, up to HalfOpenProbes
//     requests at a time pass as probes; CloseAfter successful probes
//     close the breaker, any failed probe opens it again.
//
// Every transition starts a new generation; an outcome reported for a
// request allowed in an earlier generation is ignored, so a slow request
// sent before the breaker opened cannot close it or count in the new
// window (as in sony/gobreaker).
//
// Allow and done allocate nothing: the done functions are made once per
// generation slot. A closed, healthy ModeConsecutive breaker does not even
// read the clock. OnStateChange is called in order under the breaker's
// lock, for metrics and log lines (see package metrics).
//
// # Throttle
//
// Throttle drops requests locally with probability
// max(0, (requests − K·accepts)/(requests + 1)) over a rolling window
// ("Handling Overload", Site Reliability Engineering, ch. 21). It has the
// same Allow shape, so RoundTripper takes either.
package breaker
