package breaker

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
)

var update = flag.Bool("update", false, "rewrite the expected lines of testdata/*.txt from the actual results")

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
	files, err := filepath.Glob(filepath.Join("testdata", "*.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no scenarios in testdata")
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) { runScenario(t, f) })
	}
}

func runScenario(t *testing.T, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	var (
		s   scenario
		out []string
	)
	for i, line := range lines {
		if strings.HasPrefix(line, ">") {
			continue
		}
		out = append(out, line)
		cmd := strings.TrimSpace(line)
		if cmd == "" || strings.HasPrefix(cmd, "#") {
			continue
		}
		got, err := s.exec(cmd)
		if err != nil {
			t.Fatalf("%s:%d: %s: %v", path, i+1, cmd, err)
		}
		got = "> " + got
		out = append(out, got)
		var want string
		if i+1 < len(lines) && strings.HasPrefix(lines[i+1], ">") {
			want = lines[i+1]
		}
		if !*update && got != want {
			t.Errorf("%s:%d: %s\n got: %s\nwant: %s", path, i+1, cmd, got, want)
		}
	}
	if *update {
		if err := os.WriteFile(path, []byte(strings.Join(out, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

type scenario struct {
	c       *Core
	start   time.Time
	now     time.Time
	lastGen uint64
}

func (s *scenario) exec(cmd string) (string, error) {
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

func (s *scenario) state(out Output) string {
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
