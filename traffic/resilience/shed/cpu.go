package shed

import (
	"bytes"
	"context"
	"errors"
	"math"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"
)

// CPUSampler measures the process's CPU usage from /proc/self/stat (Linux;
// no cgo), as a share of the CPUs it may use (GOMAXPROCS), smoothed with
// an exponentially weighted moving average. Its Usage is the Options.CPU
// signal.
type CPUSampler struct {
	interval time.Duration
	usage    atomic.Uint64 // math.Float64bits
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc: 100 on every
// Linux architecture Go supports (it is fixed by the kernel ABI, unlike
// the kernel's HZ).
const clockTicks = 100

// NewCPUSampler returns a sampler that reads every interval (default
// 250ms) once Run is running.
func NewCPUSampler(interval time.Duration) *CPUSampler {
	if interval <= 0 {
		interval = 250 * time.Millisecond
	}
	return &CPUSampler{interval: interval}
}

// Usage is the smoothed CPU usage in [0, 1]; 0 until Run has sampled twice.
func (c *CPUSampler) Usage() float64 { return math.Float64frombits(c.usage.Load()) }

// Run samples until ctx ends. It fails at once where /proc/self/stat
// cannot be read.
func (c *CPUSampler) Run(ctx context.Context) error {
	prev, err := processCPU()
	if err != nil {
		return err
	}
	prevAt := time.Now()
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		cur, err := processCPU()
		if err != nil {
			return err
		}
		now := time.Now()
		wall := now.Sub(prevAt).Seconds() * float64(runtime.GOMAXPROCS(0))
		if wall > 0 {
			u := min(max((cur-prev).Seconds()/wall, 0), 1)
			// β = 0.8 per sample: about a second of memory at 250ms.
			old := c.Usage()
			c.usage.Store(math.Float64bits(0.8*old + 0.2*u))
		}
		prev, prevAt = cur, now
	}
}

// processCPU returns the user plus system CPU time of the process.
func processCPU() (time.Duration, error) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces;
	// the fields after the last ')' start at field 3 (state).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("shed: /proc/self/stat: no command name")
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 13 {
		return 0, errors.New("shed: /proc/self/stat: too few fields")
	}
	utime, err1 := strconv.ParseUint(string(f[11]), 10, 64) // field 14
	stime, err2 := strconv.ParseUint(string(f[12]), 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, errors.New("shed: /proc/self/stat: bad utime or stime")
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}
