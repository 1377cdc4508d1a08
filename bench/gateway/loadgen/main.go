// Command loadgen sends GET requests at a constant arrival rate over a
// fixed pool of keep-alive connections (open loop, as wrk2 does) and
// prints the latency percentiles as JSON.
//
// Request i is due at start + i/rate whatever happened to the ones before
// it, and its latency runs from that intended time to the end of its
// response. A request that waits for a free connection, or for this
// program to get round to sending it, has that wait in its latency: a
// proxy that stalls cannot hide the stall by slowing the arrivals
// (coordinated omission). The lag between intended and actual send is
// reported separately, so that a load generator short of CPU shows.
//
// Run it with GOMAXPROCS=1 and pinned to a core (bench/gateway does).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

// Report is what loadgen prints: the measured part of the run only.
type Report struct {
	Rate      float64 `json:"rate"`       // intended arrivals per second
	Duration  float64 `json:"duration_s"` // measured part, seconds
	Intended  int     `json:"intended"`   // requests due in the measured part
	Completed int     `json:"completed"`  // of those, answered with any status
	Non2xx    int     `json:"non2xx"`     // of those, answered with a status outside 200–299
	Errors    int     `json:"errors"`     // failed: connection or protocol errors, timeouts
	Unsent    int     `json:"unsent"`     // still queued when the drain deadline passed
	Achieved  float64 `json:"achieved"`   // completed ÷ the time from the first due request to the last answer
	P50       float64 `json:"p50_ms"`
	P99       float64 `json:"p99_ms"`
	P999      float64 `json:"p999_ms"`
	Max       float64 `json:"max_ms"`
	SendLag99 float64 `json:"send_lag_p99_ms"` // p99 of (actual send − intended), this program's own delay
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		target   = fs.String("url", "", "http://host:port/path to GET")
		rate     = fs.Float64("rate", 1000, "requests per second (constant arrival rate)")
		duration = fs.Duration("duration", 10*time.Second, "measured part of the run")
		warmup   = fs.Duration("warmup", 2*time.Second, "part of the run before it, at the same rate, not measured")
		conns    = fs.Int("conns", 50, "keep-alive connections (the most requests in flight at once)")
		header   = fs.String("header", "", `one extra request header, "Name: value"`)
		timeout  = fs.Duration("timeout", 5*time.Second, "per-request deadline; also how long queued requests may drain after the last is due")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	u, err := url.Parse(*target)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return fmt.Errorf("-url %q: want http://host:port/path", *target)
	}
	if *rate <= 0 || *conns < 1 || *duration <= 0 || *warmup < 0 {
		return errors.New("-rate, -conns and -duration must be positive, -warmup not negative")
	}
	req := buildRequest(u, *header)
	rep := generate(ctx, genConfig{addr: u.Host, request: req, rate: *rate, warmup: *warmup,
		duration: *duration, conns: *conns, timeout: *timeout})
	return json.NewEncoder(stdout).Encode(rep)
}

func buildRequest(u *url.URL, header string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: bench-loadgen\r\n", u.RequestURI(), u.Host)
	if header != "" {
		b.WriteString(header + "\r\n")
	}
	b.WriteString("\r\n")
	return []byte(b.String())
}

type genConfig struct {
	addr             string
	request          []byte
	rate             float64
	warmup, duration time.Duration
	conns            int
	timeout          time.Duration
}

// sample is one measured request's outcome.
type sample struct {
	latency, lag time.Duration
	done         time.Time
	status       int // 0: failed
}

// generate runs the schedule: one goroutine hands out intended send times,
// conns workers each own a connection and take the next due time when
// they are free. Only requests due after the warm-up are measured.
func generate(ctx context.Context, c genConfig) Report {
	interval := float64(time.Second) / c.rate
	total := int(math.Ceil((c.warmup + c.duration).Seconds() * c.rate))
	skip := int(math.Ceil(c.warmup.Seconds() * c.rate))
	due := make(chan time.Time, total) // never blocks the schedule: a backlog waits here, and counts
	start := time.Now().Add(10 * time.Millisecond)
	measureFrom := start.Add(time.Duration(float64(skip) * interval))

	stopAt := start.Add(c.warmup + c.duration + c.timeout) // drain deadline
	ctx, cancel := context.WithDeadline(ctx, stopAt)
	defer cancel()

	results := make([][]sample, c.conns)
	var wg sync.WaitGroup
	for w := range c.conns {
		wg.Go(func() { results[w] = worker(ctx, c, due, measureFrom) })
	}
	// The schedule: sleep to the next due time, then hand out every request
	// due by now. A late wake-up sends several at once, each keeping its own
	// intended time.
	for i := 0; i < total && ctx.Err() == nil; {
		now := time.Now()
		for ; i < total; i++ {
			t := start.Add(time.Duration(float64(i) * interval))
			if t.After(now) {
				break
			}
			due <- t
		}
		if i < total {
			next := start.Add(time.Duration(float64(i) * interval))
			select {
			case <-ctx.Done():
			case <-time.After(time.Until(next)):
			}
		}
	}
	close(due)
	wg.Wait()

	var all []sample
	for _, r := range results {
		all = append(all, r...)
	}
	return summarize(all, total-skip, c, measureFrom)
}

func worker(ctx context.Context, c genConfig, due <-chan time.Time, measureFrom time.Time) []sample {
	var (
		out  []sample
		conn net.Conn
		br   *bufio.Reader
	)
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for t := range due {
		if ctx.Err() != nil {
			return out // the rest stay unsent
		}
		sent := time.Now()
		status, err := func() (int, error) {
			if conn == nil {
				var d net.Dialer
				nc, err := d.DialContext(ctx, "tcp", c.addr)
				if err != nil {
					return 0, err
				}
				conn, br = nc, bufio.NewReaderSize(nc, 16<<10)
			}
			_ = conn.SetDeadline(sent.Add(c.timeout))
			if _, err := conn.Write(c.request); err != nil {
				return 0, err
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				return 0, err
			}
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err == nil && resp.Close {
				err = errClosed // answered, but the connection goes
			}
			return resp.StatusCode, err
		}()
		end := time.Now()
		if err != nil && conn != nil {
			conn.Close()
			conn = nil
		}
		if errors.Is(err, errClosed) {
			err = nil
		}
		if t.Before(measureFrom) {
			continue
		}
		s := sample{latency: end.Sub(t), lag: sent.Sub(t), done: end, status: status}
		if err != nil {
			s.status = 0
		}
		out = append(out, s)
	}
	return out
}

var errClosed = errors.New("server closed the connection")

func summarize(all []sample, intended int, c genConfig, measureFrom time.Time) Report {
	rep := Report{Rate: c.rate, Duration: c.duration.Seconds(), Intended: intended}
	var lats, lags []time.Duration
	var last time.Time
	for _, s := range all {
		lags = append(lags, s.lag)
		if s.done.After(last) {
			last = s.done
		}
		if s.status == 0 {
			rep.Errors++
			continue
		}
		rep.Completed++
		if s.status < 200 || s.status > 299 {
			rep.Non2xx++
		}
		lats = append(lats, s.latency)
	}
	rep.Unsent = intended - len(all)
	slices.Sort(lats)
	slices.Sort(lags)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	rep.P50, rep.P99, rep.P999 = ms(pct(lats, 50)), ms(pct(lats, 99)), ms(pct(lats, 99.9))
	if len(lats) > 0 {
		rep.Max = ms(lats[len(lats)-1])
	}
	rep.SendLag99 = ms(pct(lags, 99))
	// The measured part ends with its last answer, past c.duration when
	// requests queue: a proxy that cannot keep up achieves less than the rate.
	if span := last.Sub(measureFrom); span > 0 {
		rep.Achieved = float64(rep.Completed) / span.Seconds()
	}
	return rep
}

// pct is the nearest-rank p-th percentile of sorted xs, 0 for none.
func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}
