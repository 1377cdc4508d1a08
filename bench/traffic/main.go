// Command traffic measures the SDK's HTTP client against real upstreams:
// three instances of a service on loopback, one of them 10× slower than
// the other two, called by name through sdk.Service.HTTPClient, with
// round robin and with peak EWMA (P2C), in interleaved rounds. It prints
// each policy's throughput, p50 and p99 latency and the slow instance's
// share of requests, as medians over the rounds.
//
// The upstreams (and the control plane the client discovers them
// through) run in a child process pinned to -upstream-cpu; run.sh pins
// this process, the load generator, to another core. Loopback only;
// bounded by -timeout. See run.sh.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/client"
	"github.com/meridian-platform/meridian/controlplane"
	"github.com/meridian-platform/meridian/controlplane/store/jetstream"
	"github.com/meridian-platform/meridian/internal/loadtest"
	"github.com/meridian-platform/meridian/internal/natsembed"
	"github.com/meridian-platform/meridian/sdk"
	"github.com/meridian-platform/meridian/traffic/policy"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "traffic bench:", err)
		os.Exit(1)
	}
}

type options struct {
	role        string
	rounds      int
	warmup      time.Duration
	measure     time.Duration
	workers     int
	fast        time.Duration
	slowFactor  int
	upstreamCPU int
	timeout     time.Duration
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("traffic", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.role, "role", "load", "load (the benchmark) or upstreams (the child it starts)")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; each runs both policies, in alternating order")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "load before each measurement, not counted")
	fs.DurationVar(&o.measure, "measure", 3*time.Second, "measured load per policy per round")
	fs.IntVar(&o.workers, "workers", 16, "concurrent callers (closed loop)")
	fs.DurationVar(&o.fast, "fast", 2*time.Millisecond, "service time of the two fast instances")
	fs.IntVar(&o.slowFactor, "slow-factor", 10, "how many times slower the third instance is")
	fs.IntVar(&o.upstreamCPU, "upstream-cpu", 1, "CPU the upstreams' process is pinned to (-1: not pinned)")
	fs.DurationVar(&o.timeout, "timeout", 3*time.Minute, "bound on the whole run")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if o.role == "upstreams" {
		return serveUpstreams(ctx, o, stdout)
	}
	return load(ctx, o, stdout, stderr)
}

// The two services the client calls: the same three instances, balanced
// by round robin under one name and by peak EWMA under the other, so
// that each policy keeps its own state from round to round.
const (
	svcRR   = "up-rr"
	svcEWMA = "up-ewma"
)

// spec turns outlier detection off, so that the slow instance is never
// ejected and the comparison is of the balancers alone; the rest is
// built in (retries, error-rate breaker).
const spec = `policies:
  balancers: {rr: {policy: round_robin}}
default: {outlier_detector: none}
targets:
  up-rr: {balancer: rr}
`

// serveUpstreams runs a control plane on an embedded JetStream and the
// three instances, registers them under both names, prints
// "ready <control plane address> <admin token>" and serves until ctx ends.
func serveUpstreams(ctx context.Context, o options, stdout io.Writer) error {
	dir, err := os.MkdirTemp("", "traffic-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ns, err := natsembed.Start(natsembed.Options{StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		return err
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	nc, err := natsembed.Connect(ns, "traffic-bench")
	if err != nil {
		return err
	}
	defer nc.Close()
	st, err := jetstream.New(nc, jetstream.Config{})
	if err != nil {
		return err
	}
	cp, err := controlplane.Open(ctx, controlplane.Config{Store: st, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	cpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { _ = cp.Serve(ctx, cpLn) })

	c, err := client.New(cpLn.Addr().String(), cp.AdminSecret())
	if err != nil {
		return err
	}
	for i, d := range []time.Duration{o.fast, o.fast, time.Duration(o.slowFactor) * o.fast} {
		id := fmt.Sprintf("i%d", i+1)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(d)
			w.Header().Set("X-Instance", id)
			io.WriteString(w, "ok")
		})}
		wg.Go(func() { _ = srv.Serve(ln) })
		defer srv.Close()
		port := ln.Addr().(*net.TCPAddr).Port
		for _, svc := range []string{svcRR, svcEWMA} {
			if _, err := c.Register(ctx, &meridian.Instance{Service: svc, ID: id, Address: "127.0.0.1", Port: port}); err != nil {
				return fmt.Errorf("register %s/%s: %w", svc, id, err)
			}
		}
	}
	fmt.Fprintf(stdout, "ready %s %s\n", cpLn.Addr(), cp.AdminSecret())
	<-ctx.Done()
	return nil
}

// load starts the upstreams' process, a client service, and the rounds.
func load(ctx context.Context, o options, stdout, stderr io.Writer) error {
	child, addr, token, err := startUpstreams(ctx, o, stderr)
	if err != nil {
		return err
	}
	defer child()

	svc, err := sdk.New(sdk.Config{
		Name: "traffic-bench", ControlPlane: addr, Token: token, Listen: "127.0.0.1:0",
		NoCheck: true, NoResiliencySpec: true, DrainDelay: -1, ShutdownTimeout: 5 * time.Second,
	}, sdk.WithoutSignals())
	if err != nil {
		return err
	}
	s, err := policy.Parse(meridian.FormatYAML, []byte(spec))
	if err != nil {
		return err
	}
	if err := svc.Outbound().Apply(s); err != nil {
		return err
	}
	svcCtx, stopSvc := context.WithCancel(ctx)
	svcDone := make(chan error, 1)
	go func() { svcDone <- svc.Run(svcCtx, nil) }()
	defer func() { stopSvc(); <-svcDone }()
	for _, name := range []string{svcRR, svcEWMA} {
		for {
			snap, err := svc.Discovery().Wait(ctx, name)
			if err != nil {
				return err
			}
			if len(snap.Instances) == 3 {
				break
			}
			select {
			case <-snap.Changed():
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}

	fmt.Fprintf(stdout, "traffic bench: %d callers (closed loop) → 3 instances, service time %v, %v, %v (one %d× slower)\n",
		o.workers, o.fast, o.fast, time.Duration(o.slowFactor)*o.fast, o.slowFactor)
	fmt.Fprintf(stdout, "%s, %s/%s, load generator on CPU %s, upstreams + control plane on CPU %d; %d rounds of %v (after %v warm-up) per policy; load average %s\n",
		runtime.Version(), runtime.GOOS, runtime.GOARCH, affinity(), o.upstreamCPU, o.rounds, o.measure, o.warmup, loadavg())
	results := map[string][]roundResult{}
	policies := []string{svcRR, svcEWMA}
	for r := range o.rounds {
		order := policies
		if r%2 == 1 {
			order = []string{svcEWMA, svcRR}
		}
		for _, name := range order {
			res, err := round(ctx, svc.HTTPClient(), name, o)
			if err != nil {
				return err
			}
			fmt.Fprintf(stderr, "round %d %-8s %7.0f req/s  p50 %-9v p99 %-9v slow share %5.1f%%  errors %d\n",
				r+1, label(name), res.throughput, res.p50, res.p99, 100*res.slowShare, res.errors)
			results[name] = append(results[name], res)
		}
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "policy\treq/s\tp50\tp99\tslow share\terrors\t")
	for _, name := range policies {
		rs := results[name]
		fmt.Fprintf(tw, "%s\t%.0f\t%v\t%v\t%.1f%%\t%d\t\n", label(name),
			median(rs, func(r roundResult) float64 { return r.throughput }),
			time.Duration(median(rs, func(r roundResult) float64 { return float64(r.p50) })).Round(10*time.Microsecond),
			time.Duration(median(rs, func(r roundResult) float64 { return float64(r.p99) })).Round(10*time.Microsecond),
			100*median(rs, func(r roundResult) float64 { return r.slowShare }),
			int(median(rs, func(r roundResult) float64 { return float64(r.errors) })))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "(medians over %d rounds; load average at the end %s)\n", o.rounds, loadavg())
	return nil
}

func label(svc string) string {
	if svc == svcRR {
		return "round_robin"
	}
	return "peak_ewma"
}

type roundResult struct {
	throughput float64
	p50, p99   time.Duration
	slowShare  float64
	errors     int
}

// round runs the warm-up, then the measured load, against service.
func round(ctx context.Context, hc *http.Client, service string, o options) (roundResult, error) {
	url := "http://" + service + "/"
	type tally struct {
		lat    []time.Duration
		slow   int
		errors int
	}
	do := func(ctx context.Context, t *tally) {
		for ctx.Err() == nil {
			t0 := time.Now()
			resp, err := hc.Get(url)
			if err != nil {
				if ctx.Err() == nil {
					t.errors++
				}
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.errors++
				continue
			}
			t.lat = append(t.lat, time.Since(t0))
			if resp.Header.Get("X-Instance") == "i3" {
				t.slow++
			}
		}
	}
	warm, stop := context.WithTimeout(ctx, o.warmup)
	loadtest.Loop(warm, o.workers, func() { do(warm, &tally{}) })
	stop()
	if ctx.Err() != nil {
		return roundResult{}, ctx.Err()
	}
	tallies := make([]tally, o.workers)
	measure, stop := context.WithTimeout(ctx, o.measure)
	defer stop()
	var wg sync.WaitGroup
	start := time.Now()
	for i := range tallies {
		wg.Go(func() { do(measure, &tallies[i]) })
	}
	wg.Wait()
	elapsed := time.Since(start)
	if ctx.Err() != nil {
		return roundResult{}, ctx.Err()
	}
	var all []time.Duration
	var res roundResult
	slow := 0
	for _, t := range tallies {
		all = append(all, t.lat...)
		slow += t.slow
		res.errors += t.errors
	}
	if len(all) == 0 {
		return res, errors.New("no request succeeded")
	}
	res.throughput = float64(len(all)) / elapsed.Seconds()
	res.slowShare = float64(slow) / float64(len(all))
	res.p50 = loadtest.Quantile(all, 0.50)
	res.p99 = loadtest.Quantile(all, 0.99)
	return res, nil
}

func median(rs []roundResult, f func(roundResult) float64) float64 {
	vs := make([]float64, len(rs))
	for i, r := range rs {
		vs[i] = f(r)
	}
	slices.Sort(vs)
	return vs[len(vs)/2]
}

// startUpstreams starts this program as the upstreams' child, pinned to
// o.upstreamCPU with taskset, and reads its ready line. The returned
// function stops it.
func startUpstreams(ctx context.Context, o options, stderr io.Writer) (stop func(), addr, token string, err error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", "", err
	}
	args := []string{"-role", "upstreams", "-fast", o.fast.String(), "-slow-factor", strconv.Itoa(o.slowFactor), "-timeout", o.timeout.String()}
	cmd := exec.Command(self, args...)
	if o.upstreamCPU >= 0 {
		cmd = exec.Command("taskset", append([]string{"-c", strconv.Itoa(o.upstreamCPU), self}, args...)...)
	}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", "", err
	}
	stop = func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		io.Copy(io.Discard, out)
	}()
	select {
	case line, ok := <-lines:
		f := strings.Fields(line)
		if !ok || len(f) != 3 || f[0] != "ready" {
			stop()
			return nil, "", "", fmt.Errorf("the upstreams' process said %q", line)
		}
		return stop, f[1], f[2], nil
	case <-time.After(60 * time.Second):
	case <-ctx.Done():
	}
	stop()
	return nil, "", "", errors.New("the upstreams' process did not get ready")
}

// affinity is the CPU list this process may run on.
func affinity() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
