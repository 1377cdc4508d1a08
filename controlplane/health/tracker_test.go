package health

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/internal/scenario"
)

// TestTrackerScenarios runs the scripts in testdata/*.txt, in the spirit of
// etcd-raft's datadriven tests. A script is a sequence of commands; after
// each, a line starting with "> " holds the tracker's state. Blank lines
// and lines starting with "#" are comments. Commands:
//
//	spec [successes=N] [failures=N] [initial=STATUS] [current=STATUS]
//	    a new tracker for an http check with these thresholds (zero values
//	    take the defaults of CheckSpec.Normalize), starting from a stored
//	    health with status current (none when omitted) and resetting the
//	    clock to 0s.
//	ok [OUTPUT...]
//	fail [OUTPUT...]
//	    one probe result, one second after the previous step.
//
// The state line reads
//
//	> STATUS [changed] successes=N failures=N since=D output="..."
//
// where since is the time of the last transition relative to the start of
// the scenario ("-" for never). Run with -update to rewrite the state lines
// after an intended change, then review the diff.
func TestTrackerScenarios(t *testing.T) {
	scenario.RunDir(t, filepath.Join("testdata", "*.txt"), func() scenario.Exec {
		var s scenarioState
		return s.exec
	})
}

// scenarioState is the state of one script: the tracker under test and a
// logical clock.
type scenarioState struct {
	tr      *Tracker
	start   time.Time
	now     time.Time
	changed bool
}

func (s *scenarioState) exec(cmd string) (string, error) {
	name, rest, _ := strings.Cut(cmd, " ")
	switch name {
	case "spec":
		spec := meridian.CheckSpec{Kind: meridian.CheckHTTP}
		var current meridian.Health
		s.start = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
		s.now = s.start
		for _, arg := range strings.Fields(rest) {
			k, v, ok := strings.Cut(arg, "=")
			if !ok {
				return "", fmt.Errorf("argument %q is not key=value", arg)
			}
			var err error
			switch k {
			case "successes":
				spec.SuccessesBeforePassing, err = strconv.Atoi(v)
			case "failures":
				spec.FailuresBeforeCritical, err = strconv.Atoi(v)
			case "initial":
				spec.InitialStatus = meridian.HealthStatus(v)
			case "current":
				current = meridian.Health{Status: meridian.HealthStatus(v), Since: s.start}
			default:
				return "", fmt.Errorf("unknown argument %q", k)
			}
			if err != nil {
				return "", fmt.Errorf("%s: %w", k, err)
			}
		}
		if err := spec.Normalize(); err != nil {
			return "", err
		}
		s.tr = NewTracker(spec, current)
		s.changed = false
	case "ok", "fail":
		if s.tr == nil {
			return "", fmt.Errorf("%s before spec", name)
		}
		s.now = s.now.Add(time.Second)
		_, s.changed = s.tr.Step(Result{OK: name == "ok", Output: rest}, s.now)
	default:
		return "", fmt.Errorf("unknown command %q", name)
	}
	return s.state(), nil
}

func (s *scenarioState) state() string {
	h := s.tr.Health()
	var b strings.Builder
	b.WriteString(string(h.Status))
	if s.changed {
		b.WriteString(" changed")
	}
	since := "-"
	if !h.Since.IsZero() {
		since = h.Since.Sub(s.start).String()
	}
	fmt.Fprintf(&b, " successes=%d failures=%d since=%s output=%q",
		s.tr.successes, s.tr.failures, since, h.Output)
	return b.String()
}

// Step's return value must be the state it leaves behind, so callers can
// persist what they are given.
func TestTrackerStepReturnsHealth(t *testing.T) {
	spec := meridian.CheckSpec{Kind: meridian.CheckTCP}
	if err := spec.Normalize(); err != nil {
		t.Fatal(err)
	}
	tr := NewTracker(spec, meridian.Health{})
	now := time.Unix(100, 0)
	h, changed := tr.Step(Result{OK: true, Output: "connected"}, now)
	want := meridian.Health{Status: meridian.StatusPassing, Output: "connected", Since: now}
	if !changed || h != want || tr.Health() != want {
		t.Fatalf("Step = %+v, %v; Health() = %+v; want %+v, true", h, changed, tr.Health(), want)
	}
}
