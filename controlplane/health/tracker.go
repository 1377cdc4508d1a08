package health

import (
	"time"

	"github.com/meridian-platform/meridian"
)

// Result is the outcome of one probe.
type Result struct {
	OK bool
	// Output says what the probe saw ("HTTP 200 OK", "connected",
	// "NOT_SERVING", or the error); it becomes Health.Output.
	Output string
}

// Tracker turns a sequence of probe results into a health status according
// to the rules in the package documentation. It is a pure state machine:
// time comes in as an argument and nothing leaves it but return values, so
// the caller decides when to probe and what to do with a transition.
//
// A Tracker is not safe for concurrent use; the Runner serializes the steps
// of each instance.
type Tracker struct {
	successes int // consecutive successes, reset by a failure
	failures  int // consecutive failures, reset by a success
	needPass  int // SuccessesBeforePassing
	needCrit  int // FailuresBeforeCritical
	health    meridian.Health
}

// NewTracker starts tracking from current, the health stored for the
// instance. spec must already be normalized (see meridian.CheckSpec.Normalize).
// When current.Status is empty the tracker starts from spec.InitialStatus;
// Since is then left as given (usually zero) until the first transition,
// because the tracker has no clock of its own.
//
// Counters start at zero: a restarted control plane does not know how many
// consecutive results led to the stored status, and starting afresh errs on
// the side of needing the full threshold again.
func NewTracker(spec meridian.CheckSpec, current meridian.Health) *Tracker {
	if current.Status == "" {
		current.Status = spec.InitialStatus
	}
	if current.Status == "" {
		// An unnormalized spec; keep the documented default.
		current.Status = meridian.StatusCritical
	}
	return &Tracker{
		needPass: max(spec.SuccessesBeforePassing, 1),
		needCrit: max(spec.FailuresBeforeCritical, 1),
		health:   current,
	}
}

// Health returns the current health.
func (t *Tracker) Health() meridian.Health { return t.health }

// Step records one probe result observed at now and returns the resulting
// health. changed reports a status transition, in which case h.Since is now;
// a new output under an unchanged status is returned in h but is not a
// change, so callers can persist only transitions.
func (t *Tracker) Step(r Result, now time.Time) (h meridian.Health, changed bool) {
	next := t.health.Status
	if r.OK {
		t.successes++
		t.failures = 0
		if next != meridian.StatusPassing && t.successes >= t.needPass {
			next = meridian.StatusPassing
		}
	} else {
		t.failures++
		t.successes = 0
		switch {
		case t.failures >= t.needCrit:
			next = meridian.StatusCritical
		case next == meridian.StatusPassing:
			next = meridian.StatusWarning
		}
	}
	t.health.Output = r.Output
	if next != t.health.Status {
		t.health.Status = next
		t.health.Since = now
		changed = true
	}
	return t.health, changed
}
