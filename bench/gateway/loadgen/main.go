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
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/meridian-platform/meridian/bench/internal/benchenv"
)

func main() { benchenv.Main("loadgen", run) }

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
	SendLag50 float64 `json:"send_lag_p50_ms"` // p50 of (actual send − intended): this program's own delay, or waiting for a free connection
	SendLag99 float64 `json:"send_lag_p99_ms"`
	Error     string  `json:"error,omitempty"` // why the run could not happen
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
		tick     = fs.Duration("tick", 100*time.Microsecond, "shortest time between two wake-ups of the schedule; at higher rates each wake-up sends every request due by then, up to this late (counted in their latency)")
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
		duration: *duration, conns: *conns, timeout: *timeout, tick: *tick})
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
	tick             time.Duration // the shortest time between two wake-ups of the schedule
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
	// The schedule: wake at each due time, then hand out every request due
	// by now. A late wake-up sends several at once, each keeping its own
	// intended time.
	tick, err := newTicker(start, max(time.Duration(interval), c.tick))
	if err != nil {
		cancel()
		close(due)
		wg.Wait()
		return Report{Rate: c.rate, Intended: total - skip, Unsent: total - skip, Error: err.Error()}
	}
	defer tick.Close()
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
			if err := tick.wait(); err != nil {
				break
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
			return readResponse(br)
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

// ticker wakes the schedule at start, start+interval, start+2·interval, …
// A Go timer cannot: the runtime sleeps in epoll_wait, whose timeout is
// in whole milliseconds, so a wake-up less than 1 ms away comes up to 1 ms
// late whenever no I/O arrives first, and every request would carry that
// lag. A timerfd is an I/O event to epoll, delivered at its expiry by the
// kernel's high-resolution timer; as an *os.File on a non-blocking fd it
// is read through the runtime's poller, so waiting holds no thread.
type ticker struct{ f *os.File }

func newTicker(start time.Time, interval time.Duration) (*ticker, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("timerfd_create: %w", err)
	}
	// Go's monotonic clock is CLOCK_MONOTONIC; the first expiry is start
	// on it, a few µs late so that no wake-up comes before its due time.
	var now unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &now); err != nil {
		unix.Close(fd)
		return nil, err
	}
	first := time.Duration(now.Nano()) + time.Until(start) + 5*time.Microsecond
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(first)), Interval: unix.NsecToTimespec(int64(max(interval, time.Microsecond)))}
	if err := unix.TimerfdSettime(fd, unix.TFD_TIMER_ABSTIME, &spec, nil); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("timerfd_settime: %w", err)
	}
	return &ticker{f: os.NewFile(uintptr(fd), "timerfd")}, nil
}

// wait blocks until the next expiry (or returns at once if one passed).
func (t *ticker) wait() error {
	var b [8]byte // the count of expirations since the last read
	_, err := t.f.Read(b[:])
	return err
}

func (t *ticker) Close() error { return t.f.Close() }

// readResponse reads one HTTP/1.1 response from br and discards its body:
// the status code, and errClosed when the server says it closes the
// connection. It reads only what it needs (the status, Content-Length,
// Transfer-Encoding and Connection), far cheaper than http.ReadResponse,
// since its CPU comes out of the core the upstream shares.
func readResponse(br *bufio.Reader) (int, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, fmt.Errorf("malformed status line %q", line)
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, fmt.Errorf("malformed status line %q", line)
	}
	length, chunked, closing := int64(-1), false, false
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return 0, fmt.Errorf("malformed header %q", line)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.ParseInt(string(value), 10, 64); err != nil {
				return 0, fmt.Errorf("Content-Length %q", value)
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			closing = bytes.EqualFold(value, []byte("close"))
		}
	}
	switch {
	case chunked:
		_, err = io.Copy(io.Discard, httputil.NewChunkedReader(br))
		if err == nil {
			err = skipTrailer(br)
		}
	case length > 0:
		_, err = br.Discard(int(length))
	case length < 0 && status >= 200 && status != 204 && status != 304:
		// No length: the body runs to the end of the connection.
		_, err = io.Copy(io.Discard, br)
		closing = true
	}
	if err == nil && closing {
		err = errClosed
	}
	return status, err
}

// skipTrailer reads the trailer section after a chunked body's last chunk,
// up to its empty line.
func skipTrailer(br *bufio.Reader) error {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			return nil
		}
	}
}

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
	rep.SendLag50, rep.SendLag99 = ms(pct(lags, 50)), ms(pct(lags, 99))
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
