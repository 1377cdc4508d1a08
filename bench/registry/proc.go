package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-platform/meridian/bench/internal/benchenv"
)

// procSample is what /proc says about a process at one moment.
type procSample struct {
	at   time.Time
	rss  int64         // VmRSS, bytes
	cpu  time.Duration // utime + stime
	comm string
}

// readProc samples pid alone: the server, which taskset execs in place.
func readProc(pid int) (procSample, error) {
	at := time.Now()
	u, err := benchenv.ProcUsage(pid)
	if err != nil {
		return procSample{at: at}, err
	}
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return procSample{at: at, rss: u.RSS, cpu: u.CPU, comm: strings.TrimSpace(string(comm))}, nil
}

// scrapeMetrics reads the named unlabelled samples from a Prometheus text
// exposition at url. Names that are absent are missing from the map.
func scrapeMetrics(ctx context.Context, url string, names ...string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || !want[name] {
			continue
		}
		// A sample line may end with a timestamp.
		value, _, _ = strings.Cut(strings.TrimSpace(value), " ")
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %q: %w", name, value, err)
		}
		out[name] = v
	}
	return out, sc.Err()
}
