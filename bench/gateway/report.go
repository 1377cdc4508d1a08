package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// machineFacts are the lines that say what the figures were measured on.
func machineFacts(ctx context.Context, b bins) []string {
	model := "unknown CPU"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	load, _ := os.ReadFile("/proc/loadavg")
	version := func(re func(string) string, argv ...string) string {
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		out, _ := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput() // wrk -v exits 1
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		if line == "" {
			return "not found"
		}
		return re(line)
	}
	field := func(i int) func(string) string {
		return func(s string) string {
			if f := strings.Fields(s); len(f) > i {
				return f[i]
			}
			return s
		}
	}
	meridian := "not built"
	if b.meridian != "" {
		meridian = version(func(s string) string { return strings.TrimPrefix(s, "meridian ") }, b.meridian, "version")
	}
	// meridian is built from the work tree, which may hold changes not
	// committed yet: say which.
	if head, err := exec.CommandContext(ctx, "git", "rev-parse", "--short=12", "HEAD").Output(); err == nil {
		tree := strings.TrimSpace(string(head))
		if st, err := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
			tree += " with uncommitted changes"
		}
		meridian += ", work tree at " + tree
	}
	return []string{
		fmt.Sprintf("machine: %d CPUs, %s; kernel %s; load average %s", runtime.NumCPU(), model,
			strings.TrimSpace(string(kernel)), strings.Join(strings.Fields(string(load))[:min(3, len(strings.Fields(string(load))))], " ")),
		fmt.Sprintf("versions: nginx %s, HAProxy %s, Caddy %s, wrk %s, meridian %s; Go %s",
			version(func(s string) string { return strings.TrimPrefix(s, "nginx version: nginx/") }, b.nginx, "-v"),
			version(field(2), b.haproxy, "-v"), version(field(0), b.caddy, "version"), version(field(1), b.wrk, "-v"),
			meridian, runtime.Version()),
	}
}

func report(w io.Writer, b *bench, facts []string, peaks []peakRun, opens []openRun, rate float64, rateWhy string, mems []memRun) {
	fmt.Fprintf(w, "\nbench/gateway: %s as reverse proxies to one upstream on loopback\n", strings.Join(b.systems, ", "))
	for _, f := range facts {
		fmt.Fprintln(w, f)
	}
	fmt.Fprintf(w, "pinning: proxy under test on cpu %d; upstream, wrk, load generator and this program on cpu %d\n", b.cpuProxy, b.cpuLoad)
	fmt.Fprintln(w, "one worker each: nginx worker_processes 1, HAProxy nbthread 1, Caddy, Meridian and the upstream GOMAXPROCS=1;")
	fmt.Fprintln(w, "access logs off for all (Meridian --access-log=false); keep-alive to the upstream for all")
	fmt.Fprintln(w, "meridian-full: route match + JWT (RS256) + rate limit + metrics + tracing at 1%; its requests carry the token, the others' do not")
	if b.traceExports != "" {
		fmt.Fprintf(w, "meridian-full exported its sampled spans over OTLP/HTTP to the upstream, which dropped them: %s batches\n", b.traceExports)
	}
	if b.bins.meridianMissing != "" && (slices.Contains(b.systems, meridianPlain) || slices.Contains(b.systems, meridianFull)) {
		fmt.Fprintf(w, "MERIDIAN NOT MEASURED: %s\n", b.bins.meridianMissing)
	}

	fmt.Fprintf(w, "\nPeak: wrk -t%d -c%d -d%s --latency after a %s warm-up; medians of %d round(s), ratios of medians\n\n",
		b.wrkThreads, b.conns, b.duration, b.warmup, b.rounds)
	peakMed := func(s string, get func(peakRun) float64) float64 { return median(pick(peaks, s, get)) }
	nginxRPS := peakMed(nginxName, func(p peakRun) float64 { return p.rps })
	nginxCPU := peakMed(nginxName, func(p peakRun) float64 { return p.cpuPerReq })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "system\treq/s\t×nginx\tp50 ms\tp99 ms\tproxy CPU µs/req\t×nginx\tproxy core busy\tupstream µs/req\tupstream conns opened\terrors\truns\t")
	for _, s := range b.systems {
		n := len(pick(peaks, s, func(p peakRun) float64 { return 0 }))
		if n == 0 {
			fmt.Fprintf(tw, "%s\t—\t—\t—\t—\t—\t—\t—\t—\t—\t—\t0\t\n", s)
			continue
		}
		rps := peakMed(s, func(p peakRun) float64 { return p.rps })
		cpu := peakMed(s, func(p peakRun) float64 { return p.cpuPerReq })
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t\n", s,
			num(rps, 0), ratio(rps, nginxRPS),
			num(peakMed(s, func(p peakRun) float64 { return p.p50 }), 2),
			num(peakMed(s, func(p peakRun) float64 { return p.p99 }), 2),
			num(cpu, 1), ratio(cpu, nginxCPU),
			pctStr(peakMed(s, func(p peakRun) float64 { return p.proxyCores })),
			num(peakMed(s, func(p peakRun) float64 { return p.upstreamPerReq }), 1),
			num(peakMed(s, func(p peakRun) float64 { return p.upstreamConns }), 0),
			num(sum(pick(peaks, s, func(p peakRun) float64 { return float64(p.errors) })), 0), n)
	}
	tw.Flush()

	var openMed func(string, func(openRun) float64) float64
	if len(opens) > 0 {
		fmt.Fprintf(w, "\nFixed rate: %.0f req/s (%s), open loop over %d keep-alive connections, %s after a %s warm-up;\n",
			rate, rateWhy, b.conns, b.openDur, b.warmup)
		fmt.Fprintf(w, "latency from each request's intended send time; medians of %d round(s)\n\n", b.openRounds)
		openMed = func(s string, get func(openRun) float64) float64 { return median(pickOpen(opens, s, get)) }
		nginx99 := openMed(nginxName, func(o openRun) float64 { return o.rep.P99 })
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "system\tp50 ms\tp99 ms\tp99.9 ms\tp99 − nginx's ms\tachieved req/s\tproxy CPU µs/req\tfailed\tsend lag p99 ms\truns\t")
		for _, s := range b.systems {
			n := len(pickOpen(opens, s, func(openRun) float64 { return 0 }))
			if n == 0 {
				fmt.Fprintf(tw, "%s\t—\t—\t—\t—\t—\t—\t—\t—\t0\t\n", s)
				continue
			}
			p99 := openMed(s, func(o openRun) float64 { return o.rep.P99 })
			diff := "—"
			if !math.IsNaN(nginx99) {
				diff = fmt.Sprintf("%+.2f", p99-nginx99)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t\n", s,
				num(openMed(s, func(o openRun) float64 { return o.rep.P50 }), 2), num(p99, 2),
				num(openMed(s, func(o openRun) float64 { return o.rep.P999 }), 2), diff,
				num(openMed(s, func(o openRun) float64 { return o.rep.Achieved }), 0),
				num(openMed(s, func(o openRun) float64 { return o.cpuPerReq }), 1),
				num(sum(pickOpen(opens, s, func(o openRun) float64 { return float64(o.rep.failed()) })), 0),
				num(openMed(s, func(o openRun) float64 { return o.rep.SendLag99 }), 2), n)
		}
		tw.Flush()
		var behind []string
		for _, s := range b.systems {
			if a := openMed(s, func(o openRun) float64 { return o.rep.Achieved }); a < 0.98*rate {
				behind = append(behind, s)
			}
		}
		if len(behind) > 0 {
			fmt.Fprintf(w, "\nBehind the rate: %s. Requests queued for a connection, so those percentiles are mostly queueing;\n", strings.Join(behind, ", "))
			fmt.Fprintln(w, "if direct is among them, the load core (upstream + generator) was short of CPU, not the proxy.")
		}
	}

	memOf := map[string]memRun{}
	if len(mems) > 0 {
		fmt.Fprintf(w, "\nMemory: VmRSS of the proxy's processes before and after opening %d keep-alive connections\n", b.idleConns)
		fmt.Fprintln(w, "that each made one request and were left idle (direct: the upstream itself; fewer where ulimit -n allows fewer)")
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "system\tconnections\tRSS before MiB\tRSS with them MiB\tKiB per connection\tsockets held\t")
		for _, m := range mems {
			memOf[m.system] = m
			fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.1f\t%.2f\t%d\t\n", m.system, m.conns, float64(m.rssBefore)/(1<<20), float64(m.rssAfter)/(1<<20), m.kibPerConn, m.openSockets)
		}
		tw.Flush()
	}

	if len(b.disturbed) > 0 {
		fmt.Fprintf(w, "\nWARNING: the machine was busy during %d run(s), whose figures are noisy: %s\n", len(b.disturbed), strings.Join(b.disturbed, "; "))
	}
	if len(b.failures) > 0 {
		fmt.Fprintf(w, "\nFAILED runs:\n")
		for _, f := range b.failures {
			first, _, _ := strings.Cut(f, "\n")
			fmt.Fprintf(w, "  %s\n", first)
		}
	}

	fmt.Fprintln(w, "\nTargets")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	target := func(label, value string, met bool, measured bool) {
		verdict := "not measured"
		if measured {
			verdict = map[bool]string{true: "met", false: "MISSED"}[met]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", label, value, verdict)
	}
	for _, c := range []struct {
		system string
		limit  float64
	}{{meridianPlain, 1.5}, {meridianFull, 2}} {
		cpu := peakMed(c.system, func(p peakRun) float64 { return p.cpuPerReq })
		ok := !math.IsNaN(cpu) && !math.IsNaN(nginxCPU)
		target(fmt.Sprintf("%s CPU per request ≤ %g× nginx's", c.system, c.limit),
			ifThen(ok, fmt.Sprintf("%.2f× (%.1f vs %.1f µs)", cpu/nginxCPU, cpu, nginxCPU)), ok && cpu <= c.limit*nginxCPU, ok)
	}
	for _, s := range []string{meridianPlain, meridianFull} {
		p99, n99 := math.NaN(), math.NaN()
		if openMed != nil {
			p99, n99 = openMed(s, func(o openRun) float64 { return o.rep.P99 }), openMed(nginxName, func(o openRun) float64 { return o.rep.P99 })
		}
		ok := !math.IsNaN(p99) && !math.IsNaN(n99)
		target(fmt.Sprintf("%s p99 at half nginx's peak ≤ nginx's + 1 ms", s),
			ifThen(ok, fmt.Sprintf("%.2f ms vs %.2f + 1 ms", p99, n99)), ok && p99 <= n99+1, ok)
	}
	for _, s := range []string{meridianPlain, meridianFull} {
		m, ok := memOf[s]
		target(fmt.Sprintf("%s memory per idle keep-alive connection ≤ 20 KiB", s),
			ifThen(ok, fmt.Sprintf("%.2f KiB", m.kibPerConn)), ok && m.kibPerConn <= 20, ok)
	}
	tw.Flush()
	if b.bins.meridianMissing != "" {
		fmt.Fprintf(w, "(Meridian not measured: %s)\n", b.bins.meridianMissing)
	}

}

func pick(runs []peakRun, system string, get func(peakRun) float64) []float64 {
	var out []float64
	for _, r := range runs {
		if r.system == system {
			out = append(out, get(r))
		}
	}
	return out
}

func pickOpen(runs []openRun, system string, get func(openRun) float64) []float64 {
	var out []float64
	for _, r := range runs {
		if r.system == system {
			out = append(out, get(r))
		}
	}
	return out
}

// median of per-round figures, leaving NaNs out; NaN when none is left.
// With an even count it is the mean of the middle two.
func median(xs []float64) float64 {
	s := slices.DeleteFunc(slices.Clone(xs), math.IsNaN)
	if len(s) == 0 {
		return math.NaN()
	}
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func sum(xs []float64) float64 {
	t := 0.0
	for _, x := range xs {
		t += x
	}
	return t
}

func num(v float64, prec int) string {
	if math.IsNaN(v) {
		return "—"
	}
	return strconv.FormatFloat(v, 'f', prec, 64)
}

func ratio(v, base float64) string {
	if math.IsNaN(v) || math.IsNaN(base) || base == 0 {
		return "—"
	}
	return strconv.FormatFloat(v/base, 'f', 2, 64)
}

func pctStr(v float64) string {
	if math.IsNaN(v) {
		return "—"
	}
	return strconv.FormatFloat(100*v, 'f', 0, 64) + "%"
}
