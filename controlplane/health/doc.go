// Package health is the control plane's active health checking: it probes
// registered instances over HTTP, TCP or gRPC and turns the probe results
// into a passing, warning or critical status.
//
// The package has three layers, kept apart so that the part that decides can
// be tested without sockets or clocks:
//
//   - Tracker is a pure state machine. It takes one probe Result and the
//     current time and returns the new Health. It does no I/O and reads no
//     clock.
//   - Probe performs one check against one instance and returns a Result.
//   - Runner schedules probes for many instances on a fixed pool of workers
//     and reports status transitions through a callback; the caller (the
//     registry) persists them.
//
// Which replica of the control plane checks which instance is decided by the
// caller with Owner, so that every instance is checked by exactly one
// replica and a membership change moves only about 1/N of them.
//
// # Status rules
//
// The rules follow Consul's check thresholds. Consecutive successes and
// consecutive failures are counted; a failure resets the success count and a
// success resets the failure count. With S = SuccessesBeforePassing and
// F = FailuresBeforeCritical:
//
//   - passing: the first failure makes the instance warning, so discovery
//     keeps serving it while operators see the problem; F consecutive
//     failures make it critical. With F = 1 the first failure makes it
//     critical directly.
//   - warning: F consecutive failures (counted from the last success) make it
//     critical; S consecutive successes make it passing; anything short of
//     either leaves it warning.
//   - critical: S consecutive successes make it passing; failures keep it
//     critical. A single success below S does not promote it to warning,
//     because a critical instance should earn traffic back only by
//     sustained success.
//
// A flapping check (alternating success and failure) with S > 1 and F > 1
// therefore settles instead of oscillating: a passing instance drops to
// warning on its first failure and stays there, a critical one stays
// critical. With S = 1 a single success is by definition enough to pass,
// so such a check does follow every flap.
//
// Health.Output always carries the last probe's output. Health.Since is the
// time of the last status change; an output change alone is not a change.
package health
