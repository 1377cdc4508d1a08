package benchenv

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of the times in /proc/<pid>/stat. The
// kernel fixes it at 100 for the user ABI on every architecture Go builds
// for, whatever CONFIG_HZ is.
const clockTicks = 100

// Usage is what /proc says about a process tree at one moment.
type Usage struct {
	CPU   time.Duration // utime+stime of every live process in the tree
	RSS   int64         // VmRSS summed over the tree, bytes; pages shared between its processes count once per process
	Procs int           // processes in the tree
}

// TreeUsage sums utime+stime and VmRSS over pid and every live descendant
// (nginx's master and workers, say). A descendant that has exited is not
// counted: read it again before the tree changes if that matters.
func TreeUsage(pid int) (Usage, error) {
	var u Usage
	for _, p := range Tree(pid) {
		pu, err := ProcUsage(p)
		if err != nil {
			if p == pid {
				return u, err
			}
			continue // exited since the listing
		}
		u.CPU += pu.CPU
		u.RSS += pu.RSS
		u.Procs++
	}
	return u, nil
}

// ProcUsage is the Usage of pid alone, without its descendants.
func ProcUsage(pid int) (Usage, error) {
	st, err := readStat(pid)
	if err != nil {
		return Usage{}, err
	}
	rss, err := vmRSS(pid)
	if err != nil {
		return Usage{}, err
	}
	return Usage{CPU: st.cpu, RSS: rss, Procs: 1}, nil
}

// Tree lists pid and its live descendants, pid first. It is a snapshot:
// a process forked while /proc is read may be missed.
func Tree(pid int) []int {
	children := map[int][]int{}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		id, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		st, err := readStat(id)
		if err != nil {
			continue
		}
		children[st.ppid] = append(children[st.ppid], id)
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

type stat struct {
	ppid     int
	cpu      time.Duration // utime + stime
	children time.Duration // cutime + cstime: children it has waited for
}

func readStat(pid int) (stat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return stat{}, err
	}
	// The command name is in parentheses and may hold spaces and ')': the
	// fields that follow start after the last ')'. Counting from the state
	// (field 3 in proc(5)) as 0, ppid is 1, utime 11, stime 12, cutime 13
	// and cstime 14.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return stat{}, errors.New("malformed /proc/<pid>/stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return stat{}, errors.New("short /proc/<pid>/stat")
	}
	var n [5]int64
	for j, k := range []int{1, 11, 12, 13, 14} {
		if n[j], err = strconv.ParseInt(f[k], 10, 64); err != nil {
			return stat{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
	}
	tick := time.Second / clockTicks
	return stat{ppid: int(n[0]), cpu: time.Duration(n[1]+n[2]) * tick, children: time.Duration(n[3]+n[4]) * tick}, nil
}

// vmRSS is the VmRSS line of /proc/<pid>/status in bytes (0 for a kernel
// thread, which has none).
func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("VmRSS %q: %w", v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, sc.Err()
}

// Noise watches the rest of the machine while a benchmark measures: the
// CPU time used by every process outside this one's own tree (its
// children are what it measures), and whether a Go build ran. The CPU
// time is summed from /proc/<pid>/stat, the accounting a benchmark's own
// figures use (/proc/stat's totals, sampled by the tick, disagree with it
// on a loaded VM). A process that started during the watch counts in
// full; one that ended counts through its parent's cutime+cstime once
// reaped. It is an estimate: a process not yet reaped when it ended is
// missed, and one reaped by a parent that also ended is counted against
// the wrong baseline.
type Noise struct {
	start  time.Time
	before map[int]time.Duration
	stop   chan struct{}
	done   chan struct{}
	build  string // the first build process seen, "" if none
}

// WatchNoise starts watching; call End to stop.
func WatchNoise() *Noise {
	n := &Noise{start: time.Now(), before: othersCPU(), stop: make(chan struct{}), done: make(chan struct{})}
	n.build = BuildRunning()
	go func() {
		defer close(n.done)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for n.build == "" {
			select {
			case <-n.stop:
				return
			case <-t.C:
			}
			n.build = BuildRunning()
		}
	}()
	return n
}

// End stops watching and returns the other processes' mean CPU use in
// cores over the watch, and a build process seen during it ("" if none).
func (n *Noise) End() (otherCores float64, build string) {
	close(n.stop)
	<-n.done
	after := othersCPU()
	var other time.Duration
	for pid, cpu := range after {
		if was, ok := n.before[pid]; ok {
			other += max(cpu-was, 0)
		} else {
			other += cpu
		}
	}
	// One that ended during the watch comes back whole in its parent's
	// cutime+cstime: take off what it had used before.
	for pid, was := range n.before {
		if _, ok := after[pid]; !ok {
			other -= was
		}
	}
	return max(other.Seconds(), 0) / time.Since(n.start).Seconds(), n.build
}

// othersCPU is, for every process outside this one's tree, its CPU time
// including the children it has waited for.
func othersCPU() map[int]time.Duration {
	mine := map[int]bool{}
	for _, p := range Tree(os.Getpid()) {
		mine[p] = true
	}
	out := map[int]time.Duration{}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || mine[pid] {
			continue
		}
		if st, err := readStat(pid); err == nil {
			out[pid] = st.cpu + st.children
		}
	}
	return out
}
