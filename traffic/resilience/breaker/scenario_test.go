package breaker

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

// TestScenarios runs the scripts in testdata/*.txt against Core, in the
// spirit of etcd-raft's datadriven tests. After each command, a line
// starting with "> " holds what the step did and the state it left. Blank
// lines and lines starting with "#" are comments. Commands:
//
//	config [mode=consecutive|error_rate] [failures=N] [rate=F] [window=D]
//	       [min=N] [open=D] [growth=F] [max-open=D] [probes=N] [close-after=N]
//	    a new closed breaker; the clock restarts at 0s.
//	allow
//	    ask to send a request.
//	ok [gen=N] / fail [gen=N]
//	    report an outcome under generation N (default: the generation of
//	    the last allowed request).
//	tick
//	    only let time act.
//	wait D
//	    advance the clock by D (a Go duration).
//
// Each command except wait also advances the clock by 1ms, so that
// events are ordered. The state line reads
//
//	> [allowed|rejected] [CHANGE] state=S gen=N [consecutive=N] [probes=N ok=N] [until=T]
//
// with CHANGE as "from->to(reason, open D)" and T relative to the start.
// Run with -update to rewrite the state lines, then review the diff.
func TestScenarios(t *testing.T) {
	scenario.RunDir(t, filepath.Join("testdata", "*.txt"), func() scenario.Exec {
		var s scenarioState
		return s.exec
	})
}

type scenarioState struct {
	c       *Core
	start   time.Time
	now     time.Time
	lastGen uint64
}

func (s *scenarioState) exec(cmd string) (string, error) {
	name, rest, _ := strings.Cut(cmd, " ")
	args := map[string]string{}
	for _, a := range strings.Fields(rest) {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			if name == "wait" {
				args["d"] = a
				continue
			}
			return "", fmt.Errorf("argument %q is not key=value", a)
		}
		args[k] = v
	}
	if name != "config" && s.c == nil {
		return "", fmt.Errorf("%s before config", name)
	}
	var out Output
	prefix := ""
	switch name {
	case "config":
		var cfg Config
		for k, v := range args {
			var err error
			switch k {
			case "mode":
				cfg.Mode = Mode(v)
			case "failures":
				cfg.ConsecutiveFailures, err = strconv.Atoi(v)
			case "rate":
				cfg.FailureRate, err = strconv.ParseFloat(v, 64)
			case "window":
				err = parseDur(v, &cfg.Window)
			case "min":
				cfg.MinRequests, err = strconv.Atoi(v)
			case "open":
				err = parseDur(v, &cfg.OpenFor)
			case "growth":
				cfg.OpenForGrowth, err = strconv.ParseFloat(v, 64)
			case "max-open":
				err = parseDur(v, &cfg.MaxOpenFor)
			case "probes":
				cfg.HalfOpenProbes, err = strconv.Atoi(v)
			case "close-after":
				cfg.CloseAfter, err = strconv.Atoi(v)
			default:
				return "", fmt.Errorf("unknown argument %q", k)
			}
			if err != nil {
				return "", fmt.Errorf("%s: %w", k, err)
			}
		}
		s.start = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
		s.now = s.start
		c, err := NewCore(cfg, s.now)
		if err != nil {
			return "", err
		}
		s.c, s.lastGen = c, 0
	case "allow":
		s.now = s.now.Add(time.Millisecond)
		out = s.c.Step(Event{Kind: EventAllow, Now: s.now})
		if out.Allowed {
			s.lastGen = out.Gen
			prefix = "allowed "
		} else {
			prefix = "rejected "
		}
	case "ok", "fail":
		gen := s.lastGen
		if v, ok := args["gen"]; ok {
			g, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return "", err
			}
			gen = g
		}
		s.now = s.now.Add(time.Millisecond)
		out = s.c.Step(Event{Kind: EventResult, Now: s.now, Gen: gen, Success: name == "ok"})
		if gen != out.Gen && !out.Changed {
			prefix = "stale "
		}
	case "tick":
		s.now = s.now.Add(time.Millisecond)
		out = s.c.Step(Event{Kind: EventTick, Now: s.now})
	case "wait":
		d, err := time.ParseDuration(args["d"])
		if err != nil {
			return "", err
		}
		s.now = s.now.Add(d)
		return fmt.Sprintf("now=%s", s.now.Sub(s.start)), nil
	default:
		return "", fmt.Errorf("unknown command %q", name)
	}
	return prefix + s.state(out), nil
}

func parseDur(v string, d *meridian.Duration) error {
	x, err := time.ParseDuration(v)
	*d = meridian.Duration(x)
	return err
}

func (s *scenarioState) state(out Output) string {
	var b strings.Builder
	if out.Changed {
		tr := out.Transition
		fmt.Fprintf(&b, "%s->%s(%s", tr.From, tr.To, tr.Reason)
		if tr.To == Open {
			fmt.Fprintf(&b, ", open %s", tr.OpenFor)
		}
		b.WriteString(") ")
	}
	c := s.c
	fmt.Fprintf(&b, "state=%s gen=%d", c.state, c.gen)
	switch c.state {
	case Closed:
		if c.cfg.Mode == ModeErrorRate {
			sum := c.rate.Sum(s.now)
			fmt.Fprintf(&b, " window=%d/%d", sum.B, sum.A)
		} else {
			fmt.Fprintf(&b, " consecutive=%d", c.consecutive)
		}
	case HalfOpen:
		fmt.Fprintf(&b, " probes=%d ok=%d", c.probes, c.probeSuccess)
	case Open:
		fmt.Fprintf(&b, " until=%s", c.openUntil.Sub(s.start))
	}
	return b.String()
}
