// Package shed is adaptive load shedding for servers: when a server is
// overloaded it answers the requests beyond its capacity at once with 503
// and Retry-After, instead of queueing them until every request is slow
// (the collapse where a server is busy with requests whose callers have
// already given up).
//
// # The rule
//
// It follows Kratos' BBR limiter and go-zero's shedder. A rolling window
// (Window, in Buckets buckets) records per bucket the requests that
// completed ("passes") and their total latency. Over the complete buckets
// of the window:
//
//	maxPass     = the most passes in one bucket (the best throughput seen)
//	minRT       = the lowest mean latency of one bucket (the latency without queueing)
//	maxInFlight = ceil(maxPass × minRT / bucket width)
//
// maxInFlight is Little's law: the concurrency the server sustains at its
// best throughput without queueing. A request is shed when
//
//	in flight ≥ maxInFlight  and  the server is overloaded
//
// and the server is overloaded when any of these holds:
//
//   - latency: the mean latency of the requests completed in the current
//     and the previous bucket exceeds LatencyFactor × minRT (requests
//     are queueing);
//   - CPU, when Options.CPU is set (see CPUSampler): usage at or above
//     CPUThreshold;
//   - cool-off: a request was shed less than CoolOff ago, so shedding does
//     not flap on and off with every bucket.
//
// The overload gate matters: in-flight counts alone would shed the bursts
// of a lightly loaded server, whose maxPass is only the traffic it has
// had. Until a complete bucket has passes there is no estimate and nothing
// is shed. If nothing at all completes (every request stuck) the latency
// signal is silent; the CPU signal, or the caller's deadline, has to act.
package shed

import (
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/internal/problem"
)

// ErrOverloaded is the error a shed request is answered with: 503, with
// Retry-After.
var ErrOverloaded = &meridian.Error{Code: meridian.CodeUnavailable, Message: "server overloaded; retry later"}

// Config is a shedding policy. The zero value means the defaults.
type Config struct {
	// Window is the rolling window of passes and latencies. Default 5s.
	Window meridian.Duration `json:"window,omitempty"`
	// Buckets splits the window. Default 50 (100ms buckets by default).
	Buckets int `json:"buckets,omitempty"`
	// LatencyFactor is how far above minRT recent latency must rise to
	// signal overload. Default 2.
	LatencyFactor float64 `json:"latency_factor,omitempty"`
	// CPUThreshold is the CPU usage, in (0, 1] of the CPUs the process may
	// use, that signals overload when Options.CPU is set. Default 0.8.
	CPUThreshold float64 `json:"cpu_threshold,omitempty"`
	// CoolOff keeps the server overloaded this long after a shed request.
	// Default 1s.
	CoolOff meridian.Duration `json:"cool_off,omitempty"`
	// RetryAfter is sent with every shed answer, rounded up to seconds.
	// Default 1s.
	RetryAfter meridian.Duration `json:"retry_after,omitempty"`
}

// Validate reports the first field out of range.
func (c Config) Validate() error {
	switch {
	case c.Window < 0:
		return meridian.FieldError("window", "must not be negative")
	case c.Buckets < 0:
		return meridian.FieldError("buckets", "must not be negative")
	case c.LatencyFactor != 0 && c.LatencyFactor <= 1:
		return meridian.FieldError("latency_factor", "must be greater than 1")
	case c.CPUThreshold < 0 || c.CPUThreshold > 1:
		return meridian.FieldError("cpu_threshold", "must be in (0, 1]")
	case c.CoolOff < 0:
		return meridian.FieldError("cool_off", "must not be negative")
	case c.RetryAfter < 0:
		return meridian.FieldError("retry_after", "must not be negative")
	}
	return nil
}

// Options are a Shedder's collaborators. The zero value works.
type Options struct {
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// CPU returns the CPU usage in [0, 1], e.g. (*CPUSampler).Usage. Nil
	// turns the CPU signal off.
	CPU func() float64
	// OnShed is called for every request shed.
	OnShed func()
	// Log receives internal errors of shed answers (none expected). Nil
	// discards them.
	Log *slog.Logger
}

type bucket struct {
	passes int64
	rtSum  time.Duration
}

// Shedder decides which requests to shed. Safe for concurrent use.
type Shedder struct {
	cfg      Config
	opts     Options
	inflight atomic.Int64

	mu       sync.Mutex
	origin   time.Time
	width    time.Duration
	buckets  []bucket
	last     int64 // absolute index of the current bucket
	lastDrop time.Time
	est      struct {
		at          int64 // bucket the estimate was computed in; -1 for none
		maxInFlight int64 // 0: no estimate
		minRT       time.Duration
	}
}

// New returns a shedder with an empty window.
func New(cfg Config, opts Options) (*Shedder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Window == 0 {
		cfg.Window = meridian.Duration(5 * time.Second)
	}
	if cfg.Buckets == 0 {
		cfg.Buckets = 50
	}
	if cfg.LatencyFactor == 0 {
		cfg.LatencyFactor = 2
	}
	if cfg.CPUThreshold == 0 {
		cfg.CPUThreshold = 0.8
	}
	if cfg.CoolOff == 0 {
		cfg.CoolOff = meridian.Duration(time.Second)
	}
	if cfg.RetryAfter == 0 {
		cfg.RetryAfter = meridian.Duration(time.Second)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Shedder{cfg: cfg, opts: opts, origin: opts.Now(), buckets: make([]bucket, cfg.Buckets)}
	s.width = max(cfg.Window.D()/time.Duration(cfg.Buckets), 1)
	s.est.at = -1
	return s, nil
}

// advance moves the window to now and returns the current bucket's index
// in s.buckets. Called with mu held.
func (s *Shedder) advance(now time.Time) int {
	cur := int64(now.Sub(s.origin) / s.width)
	if cur < s.last {
		cur = s.last
	}
	n := int64(len(s.buckets))
	if cur-s.last >= n {
		clear(s.buckets)
	} else {
		for i := s.last + 1; i <= cur; i++ {
			s.buckets[i%n] = bucket{}
		}
	}
	s.last = cur
	return int(cur % n)
}

// estimate recomputes maxInFlight and minRT over the complete buckets,
// once per bucket. Called with mu held, after advance.
func (s *Shedder) estimate() {
	if s.est.at == s.last {
		return
	}
	s.est.at = s.last
	n := int64(len(s.buckets))
	var maxPass int64
	minRT := time.Duration(math.MaxInt64)
	for i := int64(1); i < n; i++ { // skip the current bucket
		b := s.buckets[(s.last-i+n)%n]
		if b.passes == 0 {
			continue
		}
		maxPass = max(maxPass, b.passes)
		minRT = min(minRT, b.rtSum/time.Duration(b.passes))
	}
	if maxPass == 0 {
		s.est.maxInFlight, s.est.minRT = 0, 0
		return
	}
	minRT = max(minRT, 1)
	s.est.minRT = minRT
	s.est.maxInFlight = max(int64(math.Ceil(float64(maxPass)*float64(minRT)/float64(s.width))), 1)
}

// recentRT is the mean latency over the current and previous bucket.
func (s *Shedder) recentRT() time.Duration {
	n := int64(len(s.buckets))
	cur := s.buckets[s.last%n]
	prev := s.buckets[(s.last-1+n)%n]
	if p := cur.passes + prev.passes; p > 0 {
		return (cur.rtSum + prev.rtSum) / time.Duration(p)
	}
	return 0
}

// Allow admits a request or sheds it. An admitted request must be ended
// with Done(start), start being the time returned.
func (s *Shedder) Allow() (start time.Time, err error) {
	now := s.opts.Now()
	inflight := s.inflight.Load()
	s.mu.Lock()
	s.advance(now)
	s.estimate()
	shed := false
	if m := s.est.maxInFlight; m > 0 && inflight >= m {
		overloaded := now.Sub(s.lastDrop) < s.cfg.CoolOff.D() ||
			float64(s.recentRT()) > s.cfg.LatencyFactor*float64(s.est.minRT) ||
			s.opts.CPU != nil && s.opts.CPU() >= s.cfg.CPUThreshold
		if overloaded {
			shed = true
			s.lastDrop = now
		}
	}
	s.mu.Unlock()
	if shed {
		if s.opts.OnShed != nil {
			s.opts.OnShed()
		}
		return time.Time{}, ErrOverloaded
	}
	s.inflight.Add(1)
	return now, nil
}

// Done ends a request admitted at start.
func (s *Shedder) Done(start time.Time) {
	now := s.opts.Now()
	s.inflight.Add(-1)
	s.mu.Lock()
	b := &s.buckets[s.advance(now)]
	b.passes++
	b.rtSum += now.Sub(start)
	s.mu.Unlock()
}

// Stats is a snapshot of the shedder's view.
type Stats struct {
	InFlight    int64
	MaxInFlight int64 // 0 while there is no estimate
	MinRT       time.Duration
	RecentRT    time.Duration
}

// Stats returns the current view.
func (s *Shedder) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(s.opts.Now())
	s.estimate()
	return Stats{InFlight: s.inflight.Load(), MaxInFlight: s.est.maxInFlight, MinRT: s.est.minRT, RecentRT: s.recentRT()}
}

// Middleware sheds requests to next as Allow decides, answering them with
// problem+json 503 and Retry-After. Place it outermost on the server (after
// only the deadline middleware and telemetry), so a shed request costs
// as little as possible.
func Middleware(s *Shedder) func(next http.Handler) http.Handler {
	retryAfter := strconv.FormatInt(int64(math.Ceil(s.cfg.RetryAfter.D().Seconds())), 10)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start, err := s.Allow()
			if err != nil {
				problem.Write(retryAfterWriter{w, retryAfter}, r, s.opts.Log, err)
				return
			}
			defer s.Done(start)
			next.ServeHTTP(w, r)
		})
	}
}

// retryAfterWriter sets Retry-After as the header is written, overriding
// problem.Write's fixed value.
type retryAfterWriter struct {
	http.ResponseWriter
	v string
}

func (w retryAfterWriter) WriteHeader(code int) {
	w.Header().Set("Retry-After", w.v)
	w.ResponseWriter.WriteHeader(code)
}
