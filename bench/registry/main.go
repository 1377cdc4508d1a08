// Command registry is the control-plane benchmark: N instances across S
// services register and heartbeat against one `meridian server`, and the
// same scenario runs against an embedded etcd (the registry go-zero, Kratos
// and go-micro use) measured in the same run. It prints, for each, the
// registration throughput, memory per instance, change-propagation latency
// to a watcher of all services, failure-detection time, and the heartbeat
// load handled with the server's CPU time per request, beside the targets.
//
// Each server runs as a child process pinned to -cpu-server; this program
// pins itself to -cpu-load. Build the binaries first (run.sh does), so no
// build runs while it measures. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meridian-platform/meridian/bench/internal/benchenv"
)

func main() { benchenv.Main("registry bench", run) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("registry", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		instances   = fs.Int("instances", 10000, "instances registered and heartbeating")
		services    = fs.Int("services", 1000, "services the instances are spread over")
		ttl         = fs.Duration("ttl", 10*time.Second, "lease TTL of every instance (whole seconds for etcd); heartbeats every TTL/3")
		changes     = fs.Int("changes", 300, "changes whose propagation is timed: half registers, half deregisters")
		changeRate  = fs.Float64("change-rate", 50, "changes per second during the propagation phase")
		failures    = fs.Int("failures", 100, "instances made to stop heartbeating, for failure detection")
		workers     = fs.Int("workers", 64, "concurrent requests of the registration phase and of Meridian's heartbeats")
		conns       = fs.Int("conns", 256, "idle HTTP connections kept to Meridian (MaxIdleConnsPerHost)")
		etcdClients = fs.Int("etcd-clients", 16, "etcd clients (gRPC connections) the instances are spread over")
		etcdNoFsync = fs.Bool("etcd-unsafe-no-fsync", false, "run etcd with --unsafe-no-fsync (default: fsync on, as deployed)")
		hbWindow    = fs.Duration("hb-window", 0, "length of the heartbeat measurement window (default: the TTL, three heartbeat periods)")
		rounds      = fs.Int("rounds", 2, "rounds; each runs Meridian then etcd, and the table shows medians across rounds")
		retries     = fs.Int("retries", 1, "times a system's round is run again when a Go build ran during it or other processes used more than -max-noise")
		maxNoise    = fs.Float64("max-noise", 0.5, "CPU (in cores) other processes may use during a run before it counts as disturbed")
		quietWait   = fs.Duration("quiet-wait", time.Minute, "how long to wait before each run for builds to end and the machine to calm down")
		meridianBin = fs.String("meridian-bin", "", "path of the meridian binary (empty: skip Meridian)")
		etcdBin     = fs.String("etcd-bin", "", "path of the etcdpeer binary (empty: skip etcd)")
		cpuServer   = fs.Int("cpu-server", 0, "CPU the server under test is pinned to (-1: no pinning)")
		cpuLoad     = fs.Int("cpu-load", 1, "CPU this load generator is pinned to (-1: no pinning)")
		timeout     = fs.Duration("timeout", 20*time.Minute, "the whole run's deadline")
		keep        = fs.Bool("keep", false, "keep the temp dir (data dirs and server logs)")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case *instances < 1 || *services < 1 || *services > *instances:
		return errors.New("-instances and -services must be positive, with no more services than instances")
	case *ttl < time.Second:
		return errors.New("-ttl must be at least 1s")
	case *changes < 2 || *changeRate <= 0:
		return errors.New("-changes must be at least 2 and -change-rate positive")
	case *failures < 1 || *failures > *instances:
		return errors.New("-failures must be between 1 and -instances")
	case *workers < 1 || *conns < 1 || *etcdClients < 1 || *rounds < 1 || *retries < 0:
		return errors.New("-workers, -conns, -etcd-clients and -rounds must be positive, -retries not negative")
	case *meridianBin == "" && *etcdBin == "":
		return errors.New("nothing to run: give -meridian-bin and/or -etcd-bin")
	}
	if *hbWindow <= 0 {
		*hbWindow = *ttl
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	pinned := "not pinned"
	if *cpuLoad >= 0 {
		if err := benchenv.PinSelf(*cpuLoad); err != nil {
			return fmt.Errorf("pin the load generator to cpu %d: %w", *cpuLoad, err)
		}
		runtime.GOMAXPROCS(1)
		pinned = fmt.Sprintf("load generator on cpu %d", *cpuLoad)
	}
	if *cpuServer >= 0 {
		pinned += fmt.Sprintf(", server on cpu %d (taskset)", *cpuServer)
	}

	tmp, err := os.MkdirTemp("", "bench-registry-")
	if err != nil {
		return err
	}
	if *keep {
		fmt.Fprintf(stderr, "keeping %s\n", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}

	p := params{
		instances: *instances, services: *services, ttl: *ttl, changes: *changes, changeRate: *changeRate,
		failures: *failures, workers: *workers, hbWindow: *hbWindow, cpuServer: *cpuServer, log: stderr,
	}
	type sysMaker struct {
		name string
		make func() system
	}
	var makers []sysMaker
	if *meridianBin != "" {
		makers = append(makers, sysMaker{"meridian", func() system {
			return &meridianSys{bin: *meridianBin, ttl: *ttl, workers: *workers, conns: *conns}
		}})
	}
	if *etcdBin != "" {
		makers = append(makers, sysMaker{"etcd", func() system {
			return &etcdSys{bin: *etcdBin, ttl: *ttl, nclients: *etcdClients, noFsync: *etcdNoFsync}
		}})
	}

	results := map[string][]result{}
	var errs, disturbed []string
	for r := 1; r <= *rounds && ctx.Err() == nil; r++ {
		for _, m := range makers {
			for attempt := 0; attempt <= *retries && ctx.Err() == nil; attempt++ {
				waitQuiet(ctx, stderr, *quietWait, *maxNoise)
				logf(stderr, "round %d/%d: %s", r, *rounds, m.name)
				dir := filepath.Join(tmp, fmt.Sprintf("r%d-%s-%d", r, m.name, attempt))
				if err := os.MkdirAll(dir, 0o700); err != nil {
					return err
				}
				res, err := runScenario(ctx, m.make(), p, dir)
				if err != nil {
					logf(stderr, "round %d: %s failed: %v", r, m.name, err)
					errs = append(errs, fmt.Sprintf("round %d, %s: %v", r, m.name, err))
					break
				}
				why := ""
				switch {
				case res.build != "":
					why = "a build ran: " + res.build
				case res.otherCores > *maxNoise:
					why = fmt.Sprintf("other processes used %.2f cores", res.otherCores)
				}
				if why != "" && attempt < *retries {
					logf(stderr, "round %d: %s: discarded (%s); running it again", r, m.name, why)
					continue
				}
				if why != "" {
					disturbed = append(disturbed, fmt.Sprintf("round %d %s (%s)", r, m.name, why))
				}
				results[m.name] = append(results[m.name], res)
				break
			}
		}
	}

	fmt.Fprintf(stdout, "\nbench/registry: %d instances across %d services, TTL %s (heartbeat every %s), %d changes at %.0f/s, %d silenced\n",
		*instances, *services, *ttl, p.period().Round(time.Millisecond), *changes, *changeRate, *failures)
	fmt.Fprintf(stdout, "%s; %s/%s, %s; medians over rounds (%s); etcd: %d clients, fsync %s\n\n",
		pinned, runtime.GOOS, runtime.GOARCH, runtime.Version(), roundsDone(results), *etcdClients, onOff(!*etcdNoFsync))
	printTable(stdout, results, *ttl)
	if len(disturbed) > 0 {
		fmt.Fprintf(stdout, "\nWARNING: the machine was busy during %s: those figures are noisy.\n", strings.Join(disturbed, "; "))
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func roundsDone(results map[string][]result) string {
	var parts []string
	for _, name := range []string{"meridian", "etcd"} {
		if rs, ok := results[name]; ok {
			parts = append(parts, fmt.Sprintf("%d %s", len(rs), name))
		}
	}
	if len(parts) == 0 {
		return "none completed"
	}
	return strings.Join(parts, ", ")
}

// figure is one row of the table.
type figure struct {
	label  string
	get    func(result) float64
	format func(float64) string
	target string
	meets  func(float64) bool // nil: no target
}

func printTable(w io.Writer, results map[string][]result, ttl time.Duration) {
	f0 := func(v float64) string { return strconv.FormatFloat(v, 'f', 0, 64) }
	f1 := func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }
	f2 := func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }
	kib := func(v float64) string { return strconv.FormatFloat(v/1024, 'f', 2, 64) }
	detectTarget := (ttl + time.Second).Seconds()
	atMost := func(limit float64) func(float64) bool { return func(v float64) bool { return v <= limit } }
	zero := func(v float64) bool { return v == 0 }
	rows := []figure{
		{"registration throughput (instances/s)", func(r result) float64 { return r.regRate }, f0, "", nil},
		{"server CPU per registration (µs)", func(r result) float64 { return r.regCPU }, f0, "", nil},
		{"memory per instance, RSS growth (KiB)", func(r result) float64 { return r.rssPerInst }, kib, "≤ 4 KiB", atMost(4096)},
		{"memory per instance, Go heap in use (KiB)", func(r result) float64 { return r.heapPerInst }, kib, "", nil},
		{"propagation of a register, p50 (ms)", func(r result) float64 { return r.propPut50 }, f1, "", nil},
		{"propagation of a register, p99 (ms)", func(r result) float64 { return r.propPut99 }, f1, "≤ 50 ms", atMost(50)},
		{"propagation of a deregister, p50 (ms)", func(r result) float64 { return r.propDel50 }, f1, "", nil},
		{"propagation of a deregister, p99 (ms)", func(r result) float64 { return r.propDel99 }, f1, "≤ 50 ms", atMost(50)},
		{"failure detection, p50 (s)", func(r result) float64 { return r.detect50 }, f2, "", nil},
		{"failure detection, p99 (s)", func(r result) float64 { return r.detect99 }, f2, fmt.Sprintf("≤ %.1f s (TTL + 1 s)", detectTarget), atMost(detectTarget)},
		{"failure detection, max (s)", func(r result) float64 { return r.detectMax }, f2, fmt.Sprintf("≤ %.1f s (TTL + 1 s)", detectTarget), atMost(detectTarget)},
		{"heartbeats handled (req/s)", func(r result) float64 { return r.hbRate }, f0, "", nil},
		{"server CPU per heartbeat (µs)", func(r result) float64 { return r.hbCPU }, f1, "", nil},
		{"failed heartbeats (count)", func(r result) float64 { return r.hbFailed }, f0, "0", zero},
		{"instances lost unasked (count)", func(r result) float64 { return r.lost }, f0, "0", zero},
		{"changes never seen by the watcher", func(r result) float64 { return r.missedChanges }, f0, "0", zero},
		{"silenced instances never removed", func(r result) float64 { return r.undetected }, f0, "0", zero},
		{"other processes' CPU during the run (cores)", func(r result) float64 { return r.otherCores }, f2, "", nil},
	}
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	fmt.Fprintln(tw, "figure\t| meridian\t| etcd\t| target")
	fmt.Fprintln(tw, "------\t| --------\t| ----\t| ------")
	cell := func(name string, f figure) (string, float64) {
		rs, ok := results[name]
		if !ok {
			return "n/a", math.NaN()
		}
		vs := make([]float64, len(rs))
		for i, r := range rs {
			vs[i] = f.get(r)
		}
		v := median(vs)
		if math.IsNaN(v) {
			return "n/a", v
		}
		return f.format(v), v
	}
	for _, f := range rows {
		m, mv := cell("meridian", f)
		e, _ := cell("etcd", f)
		target := f.target
		if target == "" {
			target = "—"
		} else if f.meets != nil && !math.IsNaN(mv) {
			if f.meets(mv) {
				target += " (met)"
			} else {
				target += " (MISSED)"
			}
		}
		fmt.Fprintf(tw, "%s\t| %s\t| %s\t| %s\n", f.label, m, e, target)
	}
	tw.Flush()
}

// waitQuiet waits (up to d) until no Go build runs on the machine (a
// compile, link, asm, cgo or vet process) and the other processes used
// less than maxNoise cores over the last two seconds, so that we do not
// measure beside a build; it says so if it had to wait, and warns if it
// gave up.
func waitQuiet(ctx context.Context, log io.Writer, d time.Duration, maxNoise float64) {
	deadline := time.Now().Add(d)
	warned := false
	for {
		nz := benchenv.WatchNoise()
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
		cores, build := nz.End()
		if build == "" {
			build = benchenv.BuildRunning()
		}
		why := ""
		switch {
		case build != "":
			why = "a build is running (" + build + ")"
		case cores > maxNoise:
			why = fmt.Sprintf("other processes use %.2f cores", cores)
		}
		if why == "" {
			if warned {
				logf(log, "the machine is quiet enough now (other processes: %.2f cores)", cores)
			}
			return
		}
		if !warned {
			logf(log, "%s: waiting up to %s before measuring", why, d)
			warned = true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			logf(log, "WARNING: measuring anyway: %s; figures will be noisy", why)
			return
		}
	}
}
