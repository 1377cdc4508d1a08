package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-platform/meridian/bench/internal/benchenv"
)

// instance is one registered instance as the load generator tracks it.
type instance struct {
	service, id string
	key         string // "service/id": how events of both registries are matched

	registered atomic.Bool
	regAt      atomic.Int64 // unix ns of the registration's answer
	// lastBeat is the unix ns at which the last heartbeat was acknowledged.
	lastBeat atomic.Int64
	// stopAfterNext makes the instance fall silent right after its next
	// acknowledged heartbeat, which then is its last: the start of the
	// failure-detection clock.
	stopAfterNext atomic.Bool
	stopped       atomic.Bool

	peer any // the system's own state for the instance (etcd: its lease)
}

// system is one registry under test, driven the way its users' frameworks
// drive it. Each call blocks at most until its ctx ends.
type system interface {
	name() string
	// start launches the server process pinned to cpu (>= 0), waits until
	// it serves and connects the clients. Its state lives in dir.
	start(ctx context.Context, dir string, cpu int) error
	// pid is the server process.
	pid() int
	// metricsURL is the server's Prometheus exposition.
	metricsURL() string
	// watch watches every service and calls onEvent with each change seen,
	// from one goroutine, until ctx ends or the stream breaks; ready is
	// called once the watch is established.
	watch(ctx context.Context, ready func(), onEvent func(key string, deleted bool, at time.Time)) error
	register(ctx context.Context, in *instance) error
	deregister(ctx context.Context, in *instance) error
	// heartbeat keeps the leases of insts alive every period until ctx ends,
	// each instance from its registration on (and not after it stopped).
	heartbeat(ctx context.Context, insts []*instance, period time.Duration)
	// beats counts acknowledged and failed heartbeats so far.
	beats() (ok, failed uint64)
	// close stops the clients and then the server, cleanly.
	close() error
}

// params are the scenario's knobs (see the flags in main.go).
type params struct {
	instances, services int
	ttl                 time.Duration
	changes             int
	changeRate          float64 // changes per second
	failures            int     // instances made to stop heartbeating
	workers             int     // concurrent requests of the registration
	hbWindow            time.Duration
	cpuServer           int
	log                 io.Writer
}

// period is the heartbeat interval: TTL/3, as etcd's client and Meridian's
// SDK both renew.
func (p params) period() time.Duration { return p.ttl / 3 }

// result is one run of the scenario against one system. NaN: not measured.
type result struct {
	regRate       float64 // instances/s
	regCPU        float64 // server µs per registration
	rssPerInst    float64 // bytes
	heapPerInst   float64 // bytes
	propPut50     float64 // ms
	propPut99     float64
	propDel50     float64
	propDel99     float64
	detect50      float64 // s
	detect99      float64
	detectMax     float64
	hbRate        float64 // acknowledged heartbeats/s
	hbCPU         float64 // server µs per heartbeat
	hbFailed      float64 // failed heartbeats in the whole run
	lost          float64 // instances removed that should not have been
	missedChanges float64 // changes whose event never came
	undetected    float64 // silenced instances whose delete never came
	rssBase       float64 // bytes, for the log
	rssLoaded     float64
	otherCores    float64 // mean CPU use of the other processes on the machine during the run, in cores
	build         string  // a build process seen during the run, "" if none
}

// tracker matches the watcher's events with what the scenario did.
type tracker struct {
	mu       sync.Mutex
	puts     int                  // put events seen
	pending  map[string]time.Time // "put:key" / "del:key" → when the change was issued
	putLat   []time.Duration
	delLat   []time.Duration
	failing  map[string]bool      // keys of instances made silent
	detected map[string]time.Time // failing key → when its delete was seen
	lost     int                  // deletes nobody asked for
}

func newTracker() *tracker {
	return &tracker{pending: map[string]time.Time{}, failing: map[string]bool{}, detected: map[string]time.Time{}}
}

func (t *tracker) onEvent(key string, deleted bool, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !deleted {
		t.puts++
		if issued, ok := t.pending["put:"+key]; ok {
			delete(t.pending, "put:"+key)
			t.putLat = append(t.putLat, at.Sub(issued))
		}
		return
	}
	if issued, ok := t.pending["del:"+key]; ok {
		delete(t.pending, "del:"+key)
		t.delLat = append(t.delLat, at.Sub(issued))
		return
	}
	if t.failing[key] {
		if _, dup := t.detected[key]; !dup {
			t.detected[key] = at
		}
		return
	}
	t.lost++
}

func (t *tracker) issue(kind, key string) {
	t.mu.Lock()
	t.pending[kind+":"+key] = time.Now()
	t.mu.Unlock()
}

// wait polls cond (under the lock) until it holds or d passes.
func (t *tracker) wait(ctx context.Context, d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		t.mu.Lock()
		ok := cond()
		t.mu.Unlock()
		if ok {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func logf(w io.Writer, format string, args ...any) {
	fmt.Fprintf(w, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

// runScenario runs the whole scenario against sys, which it starts and
// closes. Phases, in order: baseline memory; registration of every
// instance (throughput); a heartbeat window (load, CPU per heartbeat, then
// memory after a GC); a few hundred registers and deregisters at a modest
// rate (propagation); some instances fall silent (failure detection).
func runScenario(ctx context.Context, sys system, p params, dir string) (res result, err error) {
	nan := math.NaN()
	res = result{otherCores: nan, regRate: nan, regCPU: nan, rssPerInst: nan, heapPerInst: nan, propPut50: nan, propPut99: nan,
		propDel50: nan, propDel99: nan, detect50: nan, detect99: nan, detectMax: nan, hbRate: nan, hbCPU: nan}
	name := sys.name()
	logf(p.log, "%s: starting the server on cpu %d", name, p.cpuServer)
	if err := sys.start(ctx, dir, p.cpuServer); err != nil {
		return res, err
	}
	defer func() {
		if cerr := sys.close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	pid := sys.pid()
	nz := benchenv.WatchNoise()
	defer func() {
		res.otherCores, res.build = nz.End()
		logf(p.log, "%s: other processes used %.2f cores during the run", name, res.otherCores)
		if res.build != "" {
			logf(p.log, "%s: WARNING: a build ran during the run (%s)", name, res.build)
		}
	}()

	// Baseline: the idle server, a moment after it became ready.
	time.Sleep(time.Second)
	base, err := readProc(pid)
	if err != nil {
		return res, err
	}
	baseHeap := scrapeHeap(ctx, sys.metricsURL())
	res.rssBase = float64(base.rss)
	logf(p.log, "%s: pid %d (%s) idle RSS %.1f MiB, heap in use %.1f MiB", name, pid, base.comm, mib(base.rss), baseHeap/(1<<20))

	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	var bg sync.WaitGroup
	defer bg.Wait()
	defer stopRun() // runs before bg.Wait

	// The watcher of all services, as a gateway or a framework's resolver.
	tr := newTracker()
	watchReady := make(chan struct{})
	watchErr := make(chan error, 1)
	bg.Go(func() {
		var once sync.Once
		err := sys.watch(runCtx, func() { once.Do(func() { close(watchReady) }) }, tr.onEvent)
		if runCtx.Err() == nil {
			watchErr <- fmt.Errorf("%s: the watch ended: %v", name, err)
		}
	})
	select {
	case <-watchReady:
	case err := <-watchErr:
		return res, err
	case <-time.After(10 * time.Second):
		return res, fmt.Errorf("%s: the watch was not established within 10s", name)
	}
	watchBroke := func() error {
		select {
		case err := <-watchErr:
			return err
		default:
			return nil
		}
	}

	insts := make([]*instance, p.instances)
	for i := range insts {
		svc := fmt.Sprintf("svc-%04d", i%p.services)
		id := fmt.Sprintf("%s-%05d", svc, i/p.services)
		insts[i] = &instance{service: svc, id: id, key: svc + "/" + id}
	}
	bg.Go(func() { sys.heartbeat(runCtx, insts, p.period()) })

	// Registration: every instance, through a bounded pool.
	logf(p.log, "%s: registering %d instances of %d services, %d at a time", name, p.instances, p.services, p.workers)
	before, err := readProc(pid)
	if err != nil {
		return res, err
	}
	regStart := time.Now()
	if err := forEach(runCtx, insts, p.workers, 2*time.Minute, func(ctx context.Context, in *instance) error {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := sys.register(rctx, in); err != nil {
			return fmt.Errorf("register %s: %w", in.key, err)
		}
		in.regAt.Store(time.Now().UnixNano())
		in.registered.Store(true)
		return nil
	}); err != nil {
		return res, fmt.Errorf("%s: %w", name, err)
	}
	regTime := time.Since(regStart)
	after, err := readProc(pid)
	if err != nil {
		return res, err
	}
	res.regRate = float64(p.instances) / regTime.Seconds()
	res.regCPU = usPer(after.cpu-before.cpu, p.instances)
	logf(p.log, "%s: registered in %s: %.0f instances/s, server CPU %.0f µs each", name, regTime.Round(time.Millisecond), res.regRate, res.regCPU)
	if !tr.wait(runCtx, 15*time.Second, func() bool { return tr.puts >= p.instances }) {
		logf(p.log, "%s: WARNING: the watcher saw %d of %d registrations", name, tr.puts, p.instances)
	}
	if err := watchBroke(); err != nil {
		return res, err
	}

	// Heartbeat window: steady state, nothing but heartbeats (and the
	// server's own background work). Skip one period first so that every
	// instance's heartbeat is under way.
	time.Sleep(p.period())
	ok0, _ := sys.beats()
	hb0, err := readProc(pid)
	if err != nil {
		return res, err
	}
	time.Sleep(p.hbWindow)
	ok1, _ := sys.beats()
	hb1, err := readProc(pid)
	if err != nil {
		return res, err
	}
	window := hb1.at.Sub(hb0.at)
	res.hbRate = float64(ok1-ok0) / window.Seconds()
	res.hbCPU = usPer(hb1.cpu-hb0.cpu, int(ok1-ok0))
	logf(p.log, "%s: heartbeats: %.0f/s over %s, server CPU %.0f µs each (%.0f%% of its core)", name, res.hbRate,
		window.Round(time.Millisecond), res.hbCPU, 100*(hb1.cpu-hb0.cpu).Seconds()/window.Seconds())

	// Memory: after the server has finished a GC cycle under this load.
	rss, heap := settledMemory(runCtx, pid, sys.metricsURL(), 10*time.Second)
	res.rssLoaded = float64(rss)
	res.rssPerInst = float64(rss-base.rss) / float64(p.instances)
	res.heapPerInst = (heap - baseHeap) / float64(p.instances)
	logf(p.log, "%s: RSS %.1f MiB (+%.0f B/instance), heap in use %.1f MiB (+%.0f B/instance)", name,
		mib(rss), res.rssPerInst, heap/(1<<20), res.heapPerInst)

	// Propagation: register a new instance, then deregister it, one change
	// at a time at a modest rate, while everything else heartbeats.
	logf(p.log, "%s: %d changes at %.0f/s", name, p.changes, p.changeRate)
	tick := time.NewTicker(time.Duration(float64(time.Second) / p.changeRate))
	var pendingChange *instance // registered by the previous change
	changeDeadline := time.Now().Add(time.Duration(float64(p.changes)/p.changeRate*float64(time.Second)) + 30*time.Second)
	for k := 0; k < p.changes; k++ {
		select {
		case <-tick.C:
		case <-runCtx.Done():
			tick.Stop()
			return res, runCtx.Err()
		}
		if time.Now().After(changeDeadline) {
			logf(p.log, "%s: WARNING: change phase out of time after %d changes", name, k)
			break
		}
		pair := k / 2
		svc := fmt.Sprintf("svc-%04d", pair%p.services)
		in := &instance{service: svc, id: fmt.Sprintf("%s-chg-%d", svc, pair)}
		in.key = svc + "/" + in.id
		cctx, cancel := context.WithTimeout(runCtx, 5*time.Second)
		var err error
		if k%2 == 0 {
			tr.issue("put", in.key)
			err = sys.register(cctx, in)
			// Kept for the deregister that follows.
			pendingChange = in
		} else {
			tr.issue("del", pendingChange.key)
			err = sys.deregister(cctx, pendingChange)
		}
		cancel()
		if err != nil {
			tick.Stop()
			return res, fmt.Errorf("%s: change %d: %w", name, k, err)
		}
	}
	tick.Stop()
	tr.wait(runCtx, 5*time.Second, func() bool { return len(tr.pending) == 0 })
	tr.mu.Lock()
	res.missedChanges = float64(len(tr.pending))
	res.propPut50, res.propPut99 = percentileMS(tr.putLat, 50), percentileMS(tr.putLat, 99)
	res.propDel50, res.propDel99 = percentileMS(tr.delLat, 50), percentileMS(tr.delLat, 99)
	tr.mu.Unlock()
	logf(p.log, "%s: propagation register p50 %.1f ms p99 %.1f ms, deregister p50 %.1f ms p99 %.1f ms, %v missed", name,
		res.propPut50, res.propPut99, res.propDel50, res.propDel99, res.missedChanges)
	if err := watchBroke(); err != nil {
		return res, err
	}

	// Failure detection: some instances, spread over the services, stop
	// right after their next acknowledged heartbeat.
	silent := make([]*instance, 0, p.failures)
	tr.mu.Lock()
	for j := range p.failures {
		in := insts[j*p.instances/p.failures]
		tr.failing[in.key] = true
		silent = append(silent, in)
	}
	tr.mu.Unlock()
	for _, in := range silent {
		in.stopAfterNext.Store(true)
	}
	logf(p.log, "%s: %d instances stop heartbeating after their next heartbeat", name, len(silent))
	tr.wait(runCtx, p.period()+p.ttl+10*time.Second, func() bool { return len(tr.detected) == len(silent) })
	var detect []time.Duration
	tr.mu.Lock()
	for _, in := range silent {
		at, ok := tr.detected[in.key]
		last := in.lastBeat.Load()
		if !ok || !in.stopped.Load() || last == 0 {
			res.undetected++
			continue
		}
		detect = append(detect, at.Sub(time.Unix(0, last)))
	}
	res.lost = float64(tr.lost)
	tr.mu.Unlock()
	if len(detect) > 0 {
		res.detect50 = percentileMS(detect, 50) / 1000
		res.detect99 = percentileMS(detect, 99) / 1000
		res.detectMax = percentileMS(detect, 100) / 1000
	}
	_, failed := sys.beats()
	res.hbFailed = float64(failed)
	logf(p.log, "%s: failure detection p50 %.2f s p99 %.2f s max %.2f s (%v undetected); %v instances lost unasked; %d failed heartbeats",
		name, res.detect50, res.detect99, res.detectMax, res.undetected, res.lost, failed)
	if err := watchBroke(); err != nil {
		return res, err
	}
	return res, nil
}

// forEach runs fn for every instance with at most n at a time, stopping at
// the first error or when d has passed.
func forEach(ctx context.Context, insts []*instance, n int, d time.Duration, fn func(context.Context, *instance) error) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	work := make(chan *instance)
	var (
		wg       sync.WaitGroup
		firstErr error
		once     sync.Once
	)
	for range n {
		wg.Go(func() {
			for in := range work {
				if err := fn(ctx, in); err != nil {
					once.Do(func() { firstErr = err; cancel() })
				}
			}
		})
	}
feed:
	for _, in := range insts {
		select {
		case work <- in:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("not done within %s: %w", d, err)
	}
	return nil
}

// settledMemory waits (up to d) for the server to complete a GC cycle and
// then samples its RSS and Go heap in use. The heap is NaN when the server
// does not export it.
func settledMemory(ctx context.Context, pid int, metricsURL string, d time.Duration) (rss int64, heap float64) {
	const gcCount = "go_gc_duration_seconds_count"
	m0, err := scrapeMetrics(ctx, metricsURL, gcCount)
	if err == nil {
		if n0, ok := m0[gcCount]; ok {
			deadline := time.Now().Add(d)
			for time.Now().Before(deadline) && ctx.Err() == nil {
				m, err := scrapeMetrics(ctx, metricsURL, gcCount)
				if err != nil || m[gcCount] > n0 {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	s, err := readProc(pid)
	if err == nil {
		rss = s.rss
	}
	return rss, scrapeHeap(ctx, metricsURL)
}

func scrapeHeap(ctx context.Context, url string) float64 {
	const name = "go_memstats_heap_inuse_bytes"
	m, err := scrapeMetrics(ctx, url, name)
	if err != nil {
		return math.NaN()
	}
	if v, ok := m[name]; ok {
		return v
	}
	return math.NaN()
}

func usPer(cpu time.Duration, n int) float64 {
	if n <= 0 {
		return math.NaN()
	}
	return float64(cpu.Microseconds()) / float64(n)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
