// Command gateway is the API gateway benchmark: Meridian's gateway beside
// nginx, HAProxy and Caddy as plain reverse proxies to one upstream on
// loopback, and a direct-to-upstream baseline. It measures, in
// interleaved rounds, the peak rate under wrk with the proxy's CPU time
// per request, then the latency at a fixed rate (half of nginx's peak)
// with an open-loop load generator, then the memory each proxy holds per
// idle keep-alive connection. It prints medians, ratios to nginx and the
// targets, and writes the raw per-round figures to a file.
//
// The proxy under test is pinned to -cpu-proxy; the upstream, wrk, the
// load generator and this program to -cpu-load. run.sh installs the peers,
// builds the binaries first and runs this; see README.md.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meridian-platform/meridian/bench/internal/benchenv"
)

func main() { benchenv.Main("gateway bench", run) }

type options struct {
	only                      string
	rounds, openRounds        int
	conns, wrkThreads         int
	duration, warmup, openDur time.Duration
	rate                      float64
	idleConns                 int
	cpuProxy, cpuLoad         int
	maxNoise                  float64
	quietWait, timeout        time.Duration
	dir                       string
}

// bench is one run of the whole benchmark.
type bench struct {
	options
	systems      []string
	bins         bins
	log          io.Writer
	pidsFile     string // the children's process groups, for run.sh to end should this program die first
	nofile       int    // the open-files limit of this process and the ones it starts
	upstreamPort int
	upstreamPID  int
	upstreamBody string
	token        string
	results      io.Writer // raw figures, one per line: phase round system figure value
	traceExports string    // OTLP export batches the upstream received from meridian-full
	disturbed    []string
	failures     []string
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		o     options
		b     bins
		quick bool
	)
	fs.StringVar(&o.only, "only", "", "comma-separated systems to run, of "+strings.Join(allSystems, ",")+` ("meridian" for both of Meridian's); default all`)
	fs.IntVar(&o.rounds, "rounds", 5, "peak-rate rounds; each runs every system once, and the table shows medians")
	fs.IntVar(&o.openRounds, "open-rounds", 3, "rounds at the fixed rate (open loop)")
	fs.IntVar(&o.conns, "conns", 50, "wrk's connections, and the load generator's")
	fs.IntVar(&o.wrkThreads, "wrk-threads", 1, "wrk's threads (its core is shared with the upstream)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured length of each wrk run (whole seconds)")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "load before each measurement, not counted")
	fs.DurationVar(&o.openDur, "open-duration", 10*time.Second, "measured length of each fixed-rate run")
	fs.Float64Var(&o.rate, "rate", 0, "the fixed rate, req/s (0: half of nginx's median peak, or of the slowest system's without nginx)")
	fs.IntVar(&o.idleConns, "idle-conns", 10000, "idle keep-alive connections opened for the memory figure (0: skip it)")
	fs.BoolVar(&quick, "quick", false, "a short run: 2 peak rounds and 1 fixed-rate round of 5s each, 1s warm-up (flags given explicitly win)")
	fs.IntVar(&o.cpuProxy, "cpu-proxy", 0, "CPU the proxy under test is pinned to (-1: no pinning)")
	fs.IntVar(&o.cpuLoad, "cpu-load", 1, "CPU of the upstream, wrk, the load generator and this program (-1: no pinning)")
	fs.Float64Var(&o.maxNoise, "max-noise", 0.3, "CPU (cores) other processes may use during a run before its figures are called noisy")
	fs.DurationVar(&o.quietWait, "quiet-wait", 3*time.Minute, "how long, in all, to wait before runs for Go builds to end")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Minute, "deadline of the whole run")
	fs.StringVar(&o.dir, "dir", "", "directory for configs, logs and the results file (default: a new temp dir, kept)")
	fs.StringVar(&b.wrk, "wrk", "wrk", "wrk binary")
	fs.StringVar(&b.nginx, "nginx", "nginx", "nginx binary")
	fs.StringVar(&b.haproxy, "haproxy", "haproxy", "haproxy binary")
	fs.StringVar(&b.caddy, "caddy", "caddy", "caddy binary")
	fs.StringVar(&b.meridian, "meridian-bin", "", "meridian binary (built from ./cmd/meridian)")
	fs.StringVar(&b.meridianMissing, "meridian-missing", "", "why there is no meridian binary (set by run.sh when the build failed)")
	fs.StringVar(&b.upstream, "upstream-bin", "", "bench/gateway/upstream binary")
	fs.StringVar(&b.loadgen, "loadgen-bin", "", "bench/gateway/loadgen binary")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for name, v := range map[string]string{"rounds": "2", "open-rounds": "1", "duration": "5s", "open-duration": "5s", "warmup": "1s"} {
			if !set[name] {
				_ = fs.Set(name, v)
			}
		}
	}
	switch {
	case o.rounds < 1 || o.openRounds < 0 || o.conns < 1 || o.wrkThreads < 1 || o.idleConns < 0:
		return errors.New("-rounds, -conns and -wrk-threads must be positive, -open-rounds and -idle-conns not negative")
	case o.duration < time.Second || o.openDur <= 0 || o.warmup < 0:
		return errors.New("-duration must be at least 1s, -open-duration positive, -warmup not negative")
	case b.upstream == "" || (o.openRounds > 0 && b.loadgen == ""):
		return errors.New("-upstream-bin and -loadgen-bin are needed (run.sh builds them)")
	}
	systems, err := selectSystems(o.only)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	if o.dir == "" {
		if o.dir, err = os.MkdirTemp("", "bench-gateway-"); err != nil {
			return err
		}
	}
	resultsPath := filepath.Join(o.dir, "results.tsv")
	rf, err := os.Create(resultsPath)
	if err != nil {
		return err
	}
	defer rf.Close()
	fmt.Fprintln(rf, "phase\tround\tsystem\tfigure\tvalue")

	if o.cpuLoad >= 0 {
		if err := benchenv.PinSelf(o.cpuLoad); err != nil {
			return fmt.Errorf("pin to cpu %d: %w", o.cpuLoad, err)
		}
		runtime.GOMAXPROCS(1)
	}
	if b.meridianMissing == "" && (slices.Contains(systems, meridianPlain) || slices.Contains(systems, meridianFull)) {
		b.meridianMissing = gatewayMissing(ctx, b.meridian)
	}
	for _, s := range systems {
		if p := peerBin(b, s); p != "" {
			if _, err := exec.LookPath(p); err != nil {
				return fmt.Errorf("%s: %w (run.sh installs it)", s, err)
			}
		}
	}
	if _, err := exec.LookPath(b.wrk); err != nil {
		return fmt.Errorf("wrk: %w (run.sh installs it)", err)
	}

	bn := &bench{options: o, systems: systems, bins: b, log: stderr, pidsFile: filepath.Join(o.dir, "pids"), results: rf, nofile: 1024}
	// The Go runtime has raised this process's soft limit to the hard one;
	// the processes it starts get the soft limit it was started with, which
	// run.sh raised to the hard one too.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil {
		bn.nofile = int(min(lim.Max, 1<<20))
	}
	facts := machineFacts(ctx, b)
	for _, f := range facts {
		logf(stderr, "%s", f)
	}
	if b.meridianMissing != "" && (slices.Contains(systems, meridianPlain) || slices.Contains(systems, meridianFull)) {
		logf(stderr, "MERIDIAN NOT MEASURED: %s", b.meridianMissing)
	}
	nz := benchenv.WatchNoise()
	time.Sleep(2 * time.Second)
	idle, build := nz.End()
	logf(stderr, "before starting: other processes use %.2f cores%s", idle, ifThen(build != "", ", a build is running ("+build+")"))

	up, err := bn.startUpstream(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if err := up.Stop(10 * time.Second); err != nil {
			logf(stderr, "%v", err)
		}
	}()

	peaks := bn.peakPhase(ctx)
	var opens []openRun
	var rate float64
	var rateWhy string
	if o.openRounds > 0 && ctx.Err() == nil {
		rate, rateWhy = bn.fixedRate(peaks)
		if rate > 0 {
			opens = bn.openPhase(ctx, rate)
		} else {
			bn.failures = append(bn.failures, "fixed-rate phase skipped: "+rateWhy)
		}
	}
	var mems []memRun
	if o.idleConns > 0 && ctx.Err() == nil {
		mems = bn.memoryPhase(ctx)
	}

	if slices.Contains(systems, meridianFull) && bn.bins.meridianMissing == "" {
		_, n, err := get(ctx, fmt.Sprintf("http://127.0.0.1:%d/v1/traces", bn.upstreamPort), "")
		if err == nil {
			bn.traceExports = strings.TrimSpace(n)
		}
	}
	report(stdout, bn, facts, peaks, opens, rate, rateWhy, mems)
	fmt.Fprintf(stdout, "\nraw per-round figures: %s\n", resultsPath)
	if ctx.Err() != nil {
		return fmt.Errorf("stopped before the end: %w", ctx.Err())
	}
	if len(bn.failures) > 0 {
		return fmt.Errorf("%d run(s) failed (see above)", len(bn.failures))
	}
	return nil
}

// startUpstream starts the upstream pinned to the load core and waits for
// its token and its first answer.
func (b *bench) startUpstream(ctx context.Context) (*benchenv.Child, error) {
	ports, err := benchenv.FreePorts(1)
	if err != nil {
		return nil, err
	}
	b.upstreamPort = ports[0]
	tokenFile := filepath.Join(b.dir, "token")
	c, err := benchenv.StartChild(benchenv.ChildSpec{
		Name: "upstream", CPU: b.cpuLoad, Dir: b.dir, Env: []string{"GOMAXPROCS=1"}, PIDsFile: b.pidsFile,
		Argv: []string{b.bins.upstream, "-listen", fmt.Sprintf("127.0.0.1:%d", b.upstreamPort), "-token-file", tokenFile},
	})
	if err != nil {
		return nil, err
	}
	b.upstreamPID = c.PID()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := c.Alive(); err != nil {
			return nil, err
		}
		tok, _ := os.ReadFile(tokenFile)
		if len(tok) > 0 {
			status, body, err := get(ctx, fmt.Sprintf("http://127.0.0.1:%d/bench", b.upstreamPort), "")
			if err == nil && status == 200 {
				b.token, b.upstreamBody = string(tok), body
				return c, nil
			}
		}
		if time.Now().After(deadline) {
			_ = c.Stop(time.Second)
			return nil, fmt.Errorf("the upstream did not answer within 10s; its log: %s\n%s", c.LogPath(), c.LogTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// peakRun is one system's wrk run in one round.
type peakRun struct {
	round          int
	system         string
	rps            float64
	p50, p99       float64 // ms
	cpuPerReq      float64 // proxy µs per request; NaN for direct
	proxyCores     float64 // proxy CPU time ÷ wall time; NaN for direct
	upstreamPerReq float64 // upstream µs per request
	upstreamConns  float64 // connections the upstream accepted during the run
	errors         int64   // non-2xx answers and socket errors
	otherCores     float64
}

func (b *bench) peakPhase(ctx context.Context) []peakRun {
	var out []peakRun
	for r := 1; r <= b.rounds && ctx.Err() == nil; r++ {
		for i := range b.systems {
			if ctx.Err() != nil {
				break
			}
			// Each round starts one system further along.
			s := b.systems[(i+r-1)%len(b.systems)]
			b.waitNoBuild(ctx)
			logf(b.log, "peak round %d/%d: %s", r, b.rounds, s)
			pr, err := b.peakOnce(ctx, r, s)
			if err != nil {
				b.fail("peak round %d, %s: %v", r, s, err)
				continue
			}
			out = append(out, pr)
		}
	}
	return out
}

func (b *bench) peakOnce(ctx context.Context, round int, system string) (peakRun, error) {
	pr := peakRun{round: round, system: system, cpuPerReq: math.NaN(), proxyCores: math.NaN()}
	t, err := b.startSystem(ctx, system, filepath.Join(b.dir, fmt.Sprintf("peak-r%d-%s", round, system)))
	if err != nil {
		return pr, err
	}
	defer func() {
		if err := t.stop(); err != nil {
			logf(b.log, "%v", err)
		}
	}()
	url := fmt.Sprintf("http://127.0.0.1:%d/bench", t.port)
	auth := ""
	if authed(system) {
		auth = "Bearer " + b.token
	}
	if b.warmup > 0 {
		if _, err := runWrk(ctx, b.bins.wrk, b.cpuLoad, b.wrkThreads, b.conns, b.warmup, url, auth); err != nil {
			return pr, fmt.Errorf("warm-up: %w", err)
		}
	}
	var before, after benchenv.Usage
	if t.proc != nil {
		if before, err = benchenv.TreeUsage(t.proc.PID()); err != nil {
			return pr, err
		}
	}
	upBefore, err := benchenv.TreeUsage(b.upstreamPID)
	if err != nil {
		return pr, err
	}
	connsBefore, err := b.upstreamConns(ctx)
	if err != nil {
		return pr, err
	}
	nz := benchenv.WatchNoise()
	start := time.Now()
	w, err := runWrk(ctx, b.bins.wrk, b.cpuLoad, b.wrkThreads, b.conns, b.duration, url, auth)
	wall := time.Since(start)
	other, build := nz.End()
	if err != nil {
		return pr, err
	}
	if t.proc != nil {
		if err := t.proc.Alive(); err != nil {
			return pr, err
		}
		if after, err = benchenv.TreeUsage(t.proc.PID()); err != nil {
			return pr, err
		}
	}
	upAfter, err := benchenv.TreeUsage(b.upstreamPID)
	if err != nil {
		return pr, err
	}
	connsAfter, err := b.upstreamConns(ctx)
	if err != nil {
		return pr, err
	}
	// Less the connection that asked.
	pr.upstreamConns = float64(connsAfter - connsBefore - 1)
	if w.requests == 0 {
		return pr, errors.New("wrk completed no request")
	}
	pr.rps, pr.p50, pr.p99, pr.errors, pr.otherCores = w.rps, w.p50, w.p99, w.non2xx+w.socketErrors, other
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) / float64(w.requests) }
	if t.proc != nil {
		pr.cpuPerReq = us(after.CPU - before.CPU)
		pr.proxyCores = (after.CPU - before.CPU).Seconds() / wall.Seconds()
	}
	pr.upstreamPerReq = us(upAfter.CPU - upBefore.CPU)
	b.noteNoise(fmt.Sprintf("peak round %d %s", round, system), other, build)
	if pr.errors > 0 {
		logf(b.log, "  %s: %d errors (%d non-2xx; %s)", system, pr.errors, w.non2xx, w.socketSummary)
	}
	logf(b.log, "  %.0f req/s, p50 %.2f ms, p99 %.2f ms, proxy %s µs/req (%s of its core), upstream %.1f µs/req and %.0f connections opened, others %.2f cores",
		pr.rps, pr.p50, pr.p99, num(pr.cpuPerReq, 1), pctStr(pr.proxyCores), pr.upstreamPerReq, pr.upstreamConns, other)
	for _, f := range []struct {
		name string
		v    float64
	}{{"req_per_s", pr.rps}, {"p50_ms", pr.p50}, {"p99_ms", pr.p99}, {"proxy_cpu_us_per_req", pr.cpuPerReq},
		{"proxy_cores", pr.proxyCores}, {"upstream_cpu_us_per_req", pr.upstreamPerReq}, {"upstream_conns_opened", pr.upstreamConns},
		{"requests", float64(w.requests)},
		{"errors", float64(pr.errors)}, {"other_cores", other}} {
		b.record("peak", round, system, f.name, f.v)
	}
	return pr, nil
}

// upstreamConns is how many connections the upstream has accepted,
// counting the one this asks on.
func (b *bench) upstreamConns(ctx context.Context) (int, error) {
	status, body, err := get(ctx, fmt.Sprintf("http://127.0.0.1:%d/conns", b.upstreamPort), "")
	if err != nil || status != 200 {
		return 0, fmt.Errorf("the upstream's connection count: %d %v", status, err)
	}
	return strconv.Atoi(strings.TrimSpace(body))
}

// fixedRate is the open-loop rate: -rate, or half of nginx's median peak,
// or, without nginx, half of the slowest system's.
func (b *bench) fixedRate(peaks []peakRun) (float64, string) {
	if b.rate > 0 {
		return b.rate, "set with -rate"
	}
	if m := median(pick(peaks, nginxName, func(p peakRun) float64 { return p.rps })); !math.IsNaN(m) {
		return m / 2, "half of nginx's median peak"
	}
	slowest, name := math.Inf(1), ""
	for _, s := range b.systems {
		if m := median(pick(peaks, s, func(p peakRun) float64 { return p.rps })); m < slowest {
			slowest, name = m, s
		}
	}
	if name == "" {
		return 0, "no peak rate was measured"
	}
	return slowest / 2, "half of " + name + "'s median peak (nginx not run)"
}

// openRun is one system's fixed-rate run in one round.
type openRun struct {
	round     int
	system    string
	rep       loadgenReport
	cpuPerReq float64
}

// loadgenReport is bench/gateway/loadgen's JSON.
type loadgenReport struct {
	Rate      float64 `json:"rate"`
	Intended  int     `json:"intended"`
	Completed int     `json:"completed"`
	Non2xx    int     `json:"non2xx"`
	Errors    int     `json:"errors"`
	Unsent    int     `json:"unsent"`
	Achieved  float64 `json:"achieved"`
	P50       float64 `json:"p50_ms"`
	P99       float64 `json:"p99_ms"`
	P999      float64 `json:"p999_ms"`
	Max       float64 `json:"max_ms"`
	SendLag50 float64 `json:"send_lag_p50_ms"`
	SendLag99 float64 `json:"send_lag_p99_ms"`
	Error     string  `json:"error"`
}

func (r loadgenReport) failed() int { return r.Non2xx + r.Errors + r.Unsent }

func (b *bench) openPhase(ctx context.Context, rate float64) []openRun {
	var out []openRun
	for r := 1; r <= b.openRounds && ctx.Err() == nil; r++ {
		for i := range b.systems {
			if ctx.Err() != nil {
				break
			}
			s := b.systems[(i+r-1)%len(b.systems)]
			b.waitNoBuild(ctx)
			logf(b.log, "fixed rate %.0f req/s, round %d/%d: %s", rate, r, b.openRounds, s)
			or, err := b.openOnce(ctx, r, s, rate)
			if err != nil {
				b.fail("fixed-rate round %d, %s: %v", r, s, err)
				continue
			}
			out = append(out, or)
		}
	}
	return out
}

func (b *bench) openOnce(ctx context.Context, round int, system string, rate float64) (openRun, error) {
	or := openRun{round: round, system: system, cpuPerReq: math.NaN()}
	t, err := b.startSystem(ctx, system, filepath.Join(b.dir, fmt.Sprintf("open-r%d-%s", round, system)))
	if err != nil {
		return or, err
	}
	defer func() {
		if err := t.stop(); err != nil {
			logf(b.log, "%v", err)
		}
	}()
	args := []string{b.bins.loadgen, "-url", fmt.Sprintf("http://127.0.0.1:%d/bench", t.port),
		"-rate", strconv.FormatFloat(rate, 'f', 0, 64), "-duration", b.openDur.String(),
		"-warmup", b.warmup.String(), "-conns", strconv.Itoa(b.conns)}
	if authed(system) {
		args = append(args, "-header", "Authorization: Bearer "+b.token)
	}
	args = benchenv.PinnedArgv(b.cpuLoad, args...)
	var before benchenv.Usage
	if t.proc != nil {
		if before, err = benchenv.TreeUsage(t.proc.PID()); err != nil {
			return or, err
		}
	}
	lctx, cancel := context.WithTimeout(ctx, b.warmup+b.openDur+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(lctx, args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	nz := benchenv.WatchNoise()
	err = cmd.Run()
	other, build := nz.End()
	if err != nil {
		return or, fmt.Errorf("loadgen: %w: %s", err, errb.String())
	}
	if err := json.Unmarshal(out.Bytes(), &or.rep); err != nil {
		return or, fmt.Errorf("loadgen's report %q: %w", out.String(), err)
	}
	if or.rep.Error != "" {
		return or, fmt.Errorf("loadgen: %s", or.rep.Error)
	}
	if t.proc != nil {
		if err := t.proc.Alive(); err != nil {
			return or, err
		}
		after, err := benchenv.TreeUsage(t.proc.PID())
		if err != nil {
			return or, err
		}
		// The warm-up's requests are in the CPU time too.
		if n := float64(or.rep.Completed) * (b.warmup + b.openDur).Seconds() / b.openDur.Seconds(); n > 0 {
			or.cpuPerReq = float64(after.CPU-before.CPU) / float64(time.Microsecond) / n
		}
	}
	b.noteNoise(fmt.Sprintf("fixed-rate round %d %s", round, system), other, build)
	rp := or.rep
	logf(b.log, "  p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, achieved %.0f req/s, %d failed, send lag p99 %.2f ms, others %.2f cores",
		rp.P50, rp.P99, rp.P999, rp.Achieved, rp.failed(), rp.SendLag99, other)
	for _, f := range []struct {
		name string
		v    float64
	}{{"rate", rate}, {"p50_ms", rp.P50}, {"p99_ms", rp.P99}, {"p999_ms", rp.P999}, {"max_ms", rp.Max},
		{"achieved_req_per_s", rp.Achieved}, {"failed", float64(rp.failed())}, {"send_lag_p50_ms", rp.SendLag50}, {"send_lag_p99_ms", rp.SendLag99},
		{"proxy_cpu_us_per_req", or.cpuPerReq}, {"other_cores", other}} {
		b.record("fixed-rate", round, system, f.name, f.v)
	}
	return or, nil
}

// waitNoBuild waits while a Go build runs on the machine, so that no
// measurement starts beside one. The waits of the whole run share one
// budget, -quiet-wait, so that a machine that keeps building cannot
// stretch the run without bound; past it the run goes on, and the runs
// beside a build are named as noisy at the end.
func (b *bench) waitNoBuild(ctx context.Context) {
	build := benchenv.BuildRunning()
	if build == "" {
		return
	}
	if b.quietWait <= 0 {
		logf(b.log, "a Go build is running (%s); the wait budget (-quiet-wait) is spent: measuring anyway", build)
		return
	}
	logf(b.log, "a Go build is running (%s): waiting for it (%s left of -quiet-wait)", build, b.quietWait.Round(time.Second))
	start := time.Now()
	for build != "" && time.Since(start) < b.quietWait && ctx.Err() == nil {
		time.Sleep(time.Second)
		build = benchenv.BuildRunning()
	}
	b.quietWait -= time.Since(start)
	if build != "" {
		logf(b.log, "WARNING: measuring beside a build (%s); the figures will be noisy", build)
	}
}

// noteNoise remembers a run during which a build ran or other processes
// used more than -max-noise cores.
func (b *bench) noteNoise(run string, otherCores float64, build string) {
	switch {
	case build != "":
		b.disturbed = append(b.disturbed, fmt.Sprintf("%s (a build ran: %s)", run, build))
	case otherCores > b.maxNoise:
		b.disturbed = append(b.disturbed, fmt.Sprintf("%s (other processes used %.2f cores)", run, otherCores))
	}
}

func (b *bench) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	logf(b.log, "FAILED: %s", msg)
	b.failures = append(b.failures, msg)
}

func (b *bench) record(phase string, round int, system, figure string, v float64) {
	if math.IsNaN(v) {
		return
	}
	fmt.Fprintf(b.results, "%s\t%d\t%s\t%s\t%s\n", phase, round, system, figure, strconv.FormatFloat(v, 'g', 8, 64))
}

// gatewayMissing says why `meridian gateway` cannot run, or "" if it can:
// it is there when its help names --routes-file.
func gatewayMissing(ctx context.Context, bin string) string {
	if bin == "" {
		return "no meridian binary (-meridian-bin)"
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, bin, "gateway", "--help").CombinedOutput()
	if !bytes.Contains(out, []byte("--routes-file")) {
		return "`meridian gateway --help` does not offer --routes-file: the gateway command is not in this build of ./cmd/meridian yet"
	}
	return ""
}

func peerBin(b bins, system string) string {
	switch system {
	case nginxName:
		return b.nginx
	case haproxyName:
		return b.haproxy
	case caddyName:
		return b.caddy
	}
	return ""
}

func ifThen(c bool, s string) string {
	if c {
		return s
	}
	return ""
}

func logf(w io.Writer, format string, args ...any) {
	fmt.Fprintf(w, "%s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}
