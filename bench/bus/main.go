// Command bus is the event bus benchmark: publish→consume throughput and
// end-to-end latency through Meridian's SDK (sdk.OpenBus, bus.PublishAsync
// and bus.Subscribe with typed JSON events, CloudEvents binary mode on the
// wire, dedup ids, explicit acks) beside raw nats.go JetStream doing the
// same work (JSON payload, a Nats-Msg-Id, async publish, one durable pull
// consumer, explicit acks), measured in the same run against the same
// server, alternating rounds.
//
// The server (natsd, the embedded NATS Meridian runs) is a child process
// pinned to -cpu-server; this program pins itself to -cpu-client. Build
// first (run.sh does), so no build runs while it measures. Loopback only.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/meridian-platform/meridian/bench/internal/benchenv"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bus bench:", err)
		os.Exit(1)
	}
}

// payload is the application's event data, the same on both sides.
type payload struct {
	Seq  int    `json:"seq"`
	Sent int64  `json:"sent"` // UnixNano at publish
	Pad  string `json:"pad"`
}

// system is one side of the comparison.
type system interface {
	name() string
	setup(ctx context.Context, topic string) error
	// consume starts one group member; onEvent runs for each event.
	consume(ctx context.Context, topic string, onEvent func(payload)) (stop func(), err error)
	publish(ctx context.Context, topic string, p payload) error
	flush(ctx context.Context) error
	teardown(ctx context.Context, topic string) error
	close()
}

type result struct {
	throughput float64 // events/s, first publish to last consumed
	serverCPU  float64 // server CPU seconds per 100k events, throughput run
	clientCPU  float64 // this process's CPU seconds per 100k events, throughput run
	pubRate    float64 // events/s, publishes acknowledged
	p50, p99   time.Duration
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bus", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		events    = fs.Int("events", 100_000, "events per throughput run")
		size      = fs.Int("size", 256, "bytes of padding in each event's JSON payload")
		batch     = fs.Int("batch", 500, "events a consumer fetches at once")
		latEvents = fs.Int("latency-events", 5000, "events per latency run")
		latRate   = fs.Int("latency-rate", 2000, "events per second in the latency run (paced, below saturation)")
		rounds    = fs.Int("rounds", 5, "rounds; each runs both systems, in alternating order; the table shows medians")
		natsd     = fs.String("natsd", "", "natsd binary (run.sh builds it)")
		cpuServer = fs.Int("cpu-server", 1, "CPU the server is pinned to (-1: not pinned)")
		cpuClient = fs.Int("cpu-client", 0, "CPU this program is pinned to (-1: not pinned)")
		timeout   = fs.Duration("timeout", 10*time.Minute, "bound on the whole run")
		only      = fs.String("only", "", "run one system only (raw or sdk), to profile it")
		cpuProf   = fs.String("cpuprofile", "", "write a CPU profile of this program here")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *natsd == "" {
		return errors.New("-natsd is required (run bench/bus/run.sh)")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if *cpuClient >= 0 {
		if err := benchenv.PinSelf(*cpuClient); err != nil {
			return fmt.Errorf("pin to CPU %d: %w", *cpuClient, err)
		}
	}
	waitQuiet(ctx, stderr, time.Minute)

	dir, err := os.MkdirTemp("", "bus-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	url, serverPID, stopServer, err := startServer(ctx, *natsd, dir, *cpuServer)
	if err != nil {
		return err
	}
	defer stopServer()

	raw, err := newRaw(url, *batch)
	if err != nil {
		return err
	}
	defer raw.close()
	sdkSys, err := newSDK(ctx, url, *batch)
	if err != nil {
		return err
	}
	defer sdkSys.close()
	systems := []system{raw, sdkSys}
	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	results := map[string][]result{}
	for r := range *rounds {
		order := systems
		if r%2 == 1 {
			order = []system{systems[1], systems[0]}
		}
		for _, sys := range order {
			if *only != "" && sys.name() != *only {
				continue
			}
			topic := fmt.Sprintf("bench%d", r)
			res, err := measure(ctx, sys, topic, *events, *size, *latEvents, *latRate, serverPID)
			if err != nil {
				return fmt.Errorf("%s, round %d: %w", sys.name(), r+1, err)
			}
			fmt.Fprintf(stderr, "round %d %-4s: %8.0f ev/s end to end, %8.0f ev/s published, CPU per 100k events: server %.2fs client %.2fs; latency p50 %s p99 %s\n",
				r+1, sys.name(), res.throughput, res.pubRate, res.serverCPU, res.clientCPU, res.p50, res.p99)
			results[sys.name()] = append(results[sys.name()], res)
		}
	}

	if *only != "" {
		return nil
	}
	med := func(name string, f func(result) float64) float64 {
		var v []float64
		for _, r := range results[name] {
			v = append(v, f(r))
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	fmt.Fprintf(stdout, "\nbus: %d events of a %d-byte-padded JSON payload, file storage, one publisher and one consumer (batch %d); server on CPU %d, client on CPU %d; medians of %d rounds\n\n",
		*events, *size, *batch, *cpuServer, *cpuClient, *rounds)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\traw nats.go JetStream\tMeridian SDK\tSDK / raw\t")
	row := func(label string, f func(result) float64, format func(float64) string, ratio bool) {
		r, s := med("raw", f), med("sdk", f)
		q := ""
		if ratio {
			q = fmt.Sprintf("%.2f×", s/r)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", label, format(r), format(s), q)
	}
	perSec := func(v float64) string { return fmt.Sprintf("%.0f ev/s", v) }
	dur := func(v float64) string { return time.Duration(v).Round(time.Microsecond).String() }
	row("publish→consume throughput", func(r result) float64 { return r.throughput }, perSec, true)
	row("publish (acknowledged) rate", func(r result) float64 { return r.pubRate }, perSec, true)
	cpu := func(v float64) string { return fmt.Sprintf("%.2f s", v) }
	row("client CPU per 100k events", func(r result) float64 { return r.clientCPU }, cpu, true)
	row("server CPU per 100k events", func(r result) float64 { return r.serverCPU }, cpu, true)
	row(fmt.Sprintf("end-to-end latency p50 at %d ev/s", *latRate), func(r result) float64 { return float64(r.p50) }, dur, false)
	row(fmt.Sprintf("end-to-end latency p99 at %d ev/s", *latRate), func(r result) float64 { return float64(r.p99) }, dur, false)
	tw.Flush()
	ratio := med("sdk", func(r result) float64 { return r.throughput }) / med("raw", func(r result) float64 { return r.throughput })
	verdict := "meets"
	if ratio < 0.8 {
		verdict = "MISSES"
	}
	fmt.Fprintf(stdout, "\nSDK throughput is %.2f× raw: %s the target of ≥ 0.80×\n", ratio, verdict)
	return nil
}

// measure runs one throughput run and one paced latency run of sys.
func measure(ctx context.Context, sys system, topic string, n, size, latN, latRate int, serverPID int) (result, error) {
	var res result
	pad := strings.Repeat("x", size)

	// Throughput: publish n as fast as acks allow while one member consumes.
	srv0, self0 := cpuTime(serverPID), cpuTime(os.Getpid())
	ph, err := runPhase(ctx, sys, topic, n, pad, 0, func(payload) {})
	if err != nil {
		return res, err
	}
	res.pubRate = float64(n) / ph.published.Sub(ph.start).Seconds()
	res.throughput = float64(n) / ph.consumed.Sub(ph.start).Seconds()
	res.serverCPU = (cpuTime(serverPID) - srv0).Seconds() * 100_000 / float64(n)
	res.clientCPU = (cpuTime(os.Getpid()) - self0).Seconds() * 100_000 / float64(n)

	// Latency: a steady rate well below saturation.
	lat := make([]time.Duration, latN)
	if _, err := runPhase(ctx, sys, topic+"lat", latN, pad, time.Second/time.Duration(latRate), func(p payload) {
		lat[p.Seq] = time.Since(time.Unix(0, p.Sent))
	}); err != nil {
		return res, err
	}
	slices.Sort(lat)
	res.p50, res.p99 = lat[len(lat)/2], lat[len(lat)*99/100]
	return res, nil
}

type phase struct{ start, published, consumed time.Time }

// runPhase makes topic, starts one consumer, publishes n events (one per
// interval, or as fast as acks allow when it is 0), waits until all are
// consumed, and deletes the topic.
func runPhase(ctx context.Context, sys system, topic string, n int, pad string, interval time.Duration, onEvent func(payload)) (phase, error) {
	var ph phase
	if err := sys.setup(ctx, topic); err != nil {
		return ph, err
	}
	var got atomic.Int64
	done := make(chan time.Time, 1)
	stop, err := sys.consume(ctx, topic, func(p payload) {
		onEvent(p)
		if got.Add(1) == int64(n) {
			done <- time.Now()
		}
	})
	if err != nil {
		return ph, err
	}
	defer stop()
	ph.start = time.Now()
	for i := range n {
		if d := time.Until(ph.start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		if err := sys.publish(ctx, topic, payload{Seq: i, Sent: time.Now().UnixNano(), Pad: pad}); err != nil {
			return ph, err
		}
	}
	if err := sys.flush(ctx); err != nil {
		return ph, err
	}
	ph.published = time.Now()
	select {
	case ph.consumed = <-done:
	case <-time.After(time.Minute):
		return ph, fmt.Errorf("consumed %d of %d events in a minute", got.Load(), n)
	}
	stop()
	return ph, sys.teardown(ctx, topic)
}

func encodePayload(p payload) ([]byte, error) { return json.Marshal(p) }

// cpuTime is the user+system CPU time of a process so far.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}

// startServer runs natsd pinned to cpu and waits until it accepts clients.
// taskset execs natsd in place, so the pid is the server's.
func startServer(ctx context.Context, bin, dir string, cpu int) (url string, pid int, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", 0, nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	argv := []string{bin, "-listen", addr, "-store", filepath.Join(dir, "js")}
	if cpu >= 0 {
		argv = append([]string{"taskset", "-c", strconv.Itoa(cpu)}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", 0, nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", 0, nil, fmt.Errorf("start natsd: %w", err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-done
			}
		})
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "ready "); ok {
				ready <- u
			}
		}
	}()
	select {
	case u := <-ready:
		return u, cmd.Process.Pid, stop, nil
	case <-time.After(20 * time.Second):
	case <-ctx.Done():
	}
	stop()
	return "", 0, nil, errors.New("natsd did not start")
}

// waitQuiet waits (up to d) until no Go build runs on the machine, so that
// we do not measure beside one; it warns if it gave up.
func waitQuiet(ctx context.Context, log io.Writer, d time.Duration) {
	deadline := time.Now().Add(d)
	for {
		b := benchenv.BuildRunning()
		if b == "" {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			fmt.Fprintf(log, "WARNING: measuring beside a build (%s); figures will be noisy\n", b)
			return
		}
		fmt.Fprintf(log, "a build is running (%s): waiting\n", b)
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
}
