package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-platform/meridian/bench/internal/benchenv"
)

// wrkResult is what one wrk run printed.
type wrkResult struct {
	requests      int64   // "N requests in ..."
	seconds       float64 // the run's length as wrk measured it
	rps           float64 // "Requests/sec:"
	p50, p99      float64 // ms, from "Latency Distribution"
	non2xx        int64   // "Non-2xx or 3xx responses:"
	socketErrors  int64   // connect + read + write + timeout
	socketSummary string  // wrk's line, when it printed one
}

// runWrk runs wrk pinned to cpu against url for d with conns keep-alive
// connections on threads threads, with --latency.
func runWrk(ctx context.Context, bin string, cpu, threads, conns int, d time.Duration, url, auth string) (wrkResult, error) {
	args := []string{bin, "-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns),
		"-d", fmt.Sprintf("%ds", max(1, int(d.Round(time.Second)/time.Second))), "--latency", "--timeout", "5s"}
	if auth != "" {
		args = append(args, "-H", "Authorization: "+auth)
	}
	args = append(args, url)
	args = benchenv.PinnedArgv(cpu, args...)
	// wrk stops by itself after d; the context is a backstop.
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return wrkResult{}, fmt.Errorf("wrk: %w: %s%s", err, out.String(), errb.String())
	}
	r, err := parseWrk(out.String())
	if err != nil {
		return r, fmt.Errorf("%w; wrk printed:\n%s", err, out.String())
	}
	return r, nil
}

// parseWrk reads wrk 4's report (with --latency).
func parseWrk(s string) (wrkResult, error) {
	var r wrkResult
	var haveP50, haveP99, haveTotal bool
	inDist := false
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		f := strings.Fields(line)
		switch {
		case line == "Latency Distribution":
			inDist = true
			continue
		case inDist && len(f) == 2 && strings.HasSuffix(f[0], "%"):
			v, err := wrkDuration(f[1])
			if err != nil {
				return r, err
			}
			switch f[0] {
			case "50%":
				r.p50, haveP50 = v, true
			case "99%":
				r.p99, haveP99 = v, true
			}
			continue
		case len(f) >= 4 && f[1] == "requests" && f[2] == "in":
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return r, fmt.Errorf("wrk: requests %q: %w", f[0], err)
			}
			sec, err := wrkDuration(strings.TrimSuffix(f[3], ","))
			if err != nil {
				return r, err
			}
			r.requests, r.seconds, haveTotal = n, sec/1000, true
		case strings.HasPrefix(line, "Socket errors:"):
			r.socketSummary = line
			// "Socket errors: connect 0, read 0, write 0, timeout 0"
			for i := 2; i+1 < len(f); i += 2 {
				n, err := strconv.ParseInt(strings.TrimSuffix(f[i+1], ","), 10, 64)
				if err != nil {
					return r, fmt.Errorf("wrk: %q: %w", line, err)
				}
				r.socketErrors += n
			}
		case strings.HasPrefix(line, "Non-2xx or 3xx responses:"):
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimPrefix(line, "Non-2xx or 3xx responses:")), 10, 64)
			if err != nil {
				return r, fmt.Errorf("wrk: %q: %w", line, err)
			}
			r.non2xx = n
		case strings.HasPrefix(line, "Requests/sec:"):
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, "Requests/sec:")), 64)
			if err != nil {
				return r, fmt.Errorf("wrk: %q: %w", line, err)
			}
			r.rps = v
		}
		inDist = false
	}
	if !haveP50 || !haveP99 || !haveTotal {
		return r, fmt.Errorf("wrk: no latency distribution or request count in its report (was --latency given?)")
	}
	if r.rps == 0 && r.seconds > 0 {
		r.rps = float64(r.requests) / r.seconds
	}
	return r, nil
}

// wrkDuration parses wrk's time format ("812.00us", "1.23ms", "10.00s",
// "1.50m") into milliseconds.
func wrkDuration(s string) (float64, error) {
	for _, u := range []struct {
		suffix string
		ms     float64
	}{{"us", 1e-3}, {"ms", 1}, {"s", 1e3}, {"m", 60e3}, {"h", 3600e3}} {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(num, 64)
			if err != nil {
				continue
			}
			return v * u.ms, nil
		}
	}
	return 0, fmt.Errorf("wrk: duration %q", s)
}
