package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meridian-platform/meridian/bench/internal/benchenv"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat.
// It is 100 on every Linux architecture Go builds for (the kernel fixes it
// for the user ABI whatever CONFIG_HZ is).
const clockTicks = 100

// child is a server under test: a process started under `taskset -c`, so
// that taskset execs the server in place and pid is the server itself.
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{} // closed when the process has been waited for
	waitErr error
}

// startChild runs bin with args pinned to cpu (when cpu >= 0), its output
// going to a log file in dir.
func startChild(name string, cpu int, dir, bin string, args ...string) (*child, error) {
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	argv := append([]string{bin}, args...)
	if cpu >= 0 {
		argv = append([]string{"taskset", "-c", strconv.Itoa(cpu)}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so that a ^C at the terminal reaches only the
	// benchmark, which then stops the child in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		c.waitErr = cmd.Wait()
		logf.Close()
		close(c.exited)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// alive reports an error if the process has exited.
func (c *child) alive() error {
	select {
	case <-c.exited:
		return fmt.Errorf("%s exited (%v); its log: %s\n%s", c.name, c.waitErr, c.logPath, c.logTail())
	default:
		return nil
	}
}

// stop sends SIGTERM and waits up to grace for the process to exit, then
// kills it. It returns an error if it had to kill.
func (c *child) stop(grace time.Duration) error {
	select {
	case <-c.exited:
		return nil
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
		return nil
	case <-time.After(grace):
		_ = c.cmd.Process.Kill()
		<-c.exited
		return fmt.Errorf("%s did not stop within %s of SIGTERM; killed", c.name, grace)
	}
}

// logTail is the end of the child's log, for error messages.
func (c *child) logTail() string {
	b, _ := os.ReadFile(c.logPath)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// waitReady polls url until it answers 200, the child exits, or timeout.
func (c *child) waitReady(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hc := &http.Client{Timeout: time.Second}
	for {
		if err := c.alive(); err != nil {
			return err
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := hc.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready at %s within %s; its log: %s\n%s", c.name, url, timeout, c.logPath, c.logTail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// procSample is what /proc says about a process at one moment.
type procSample struct {
	at   time.Time
	rss  int64         // VmRSS, bytes
	cpu  time.Duration // utime + stime
	comm string
}

func readProc(pid int) (procSample, error) {
	s := procSample{at: time.Now()}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return s, fmt.Errorf("VmRSS %q: %w", v, err)
			}
			s.rss = kb << 10
		}
		if v, ok := strings.CutPrefix(line, "Name:"); ok {
			s.comm = strings.TrimSpace(v)
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// The command name is in parentheses and may hold spaces: the fields
	// that follow start after the last ')'. utime and stime are fields 14
	// and 15 (proc(5)), i.e. the 12th and 13th after the name.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, errors.New("malformed /proc/<pid>/stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return s, errors.New("short /proc/<pid>/stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return s, fmt.Errorf("/proc/<pid>/stat times: %w", err)
	}
	s.cpu = time.Duration(ut+st) * time.Second / clockTicks
	return s, nil
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

// freePorts returns n distinct free TCP ports on 127.0.0.1. They are free
// when chosen; the server binds them a moment later (a small race that a
// benchmark can live with).
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// statCPU is a process's utime+stime and, in the second result, that
// plus cutime+cstime: the CPU time of its children it has waited for.
func statCPU(pid int) (own, withChildren time.Duration, err error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, 0, errors.New("malformed /proc/<pid>/stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 15 {
		return 0, 0, errors.New("short /proc/<pid>/stat")
	}
	var t [4]int64
	for j := range t {
		if t[j], err = strconv.ParseInt(f[11+j], 10, 64); err != nil {
			return 0, 0, fmt.Errorf("/proc/<pid>/stat times: %w", err)
		}
	}
	tick := time.Second / clockTicks
	return time.Duration(t[0]+t[1]) * tick, time.Duration(t[0]+t[1]+t[2]+t[3]) * tick, nil
}

// othersCPU is, for every process but this one and skip, its CPU time
// including the children it has waited for.
func othersCPU(skip int) map[int]time.Duration {
	out := map[int]time.Duration{}
	self := os.Getpid()
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == self || pid == skip {
			continue
		}
		if _, all, err := statCPU(pid); err == nil {
			out[pid] = all
		}
	}
	return out
}

// noise watches the rest of the machine while one system is measured: the
// CPU time the other processes use, and whether a Go build runs at any
// moment. The CPU time is summed from /proc/<pid>/stat, the same
// accounting as the server's figures (/proc/stat's totals, sampled by the
// tick, disagree with it on this VM under load). A process that started
// during the watch counts in full; one that ended counts through its
// parent's cutime+cstime once reaped. It is an estimate: a process whose
// parent has not reaped it yet is missed, and one reaped by a parent that
// also ended is counted against the wrong baseline.
type noise struct {
	start     time.Time
	serverPID int
	before    map[int]time.Duration
	stop      chan struct{}
	done      chan struct{}
	build     string // the first build process seen, "" if none
}

func watchNoise(serverPID int) *noise {
	n := &noise{start: time.Now(), serverPID: serverPID, before: othersCPU(serverPID),
		stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(n.done)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-n.stop:
				return
			case <-t.C:
			}
			if n.build == "" {
				n.build = benchenv.BuildRunning()
			}
		}
	}()
	return n
}

// end stops watching and returns the other processes' mean CPU use in
// cores over the watch, and the build seen, if any.
func (n *noise) end() (otherCores float64, build string) {
	close(n.stop)
	<-n.done
	var other time.Duration
	after := othersCPU(n.serverPID)
	for pid, cpu := range after {
		if was, ok := n.before[pid]; ok {
			other += max(cpu-was, 0)
		} else {
			other += cpu
		}
	}
	// A process that ended during the watch comes back whole in its
	// parent's cutime+cstime: take off what it had used before the watch.
	for pid, was := range n.before {
		if _, ok := after[pid]; !ok {
			other -= was
		}
	}
	return max(other.Seconds(), 0) / time.Since(n.start).Seconds(), n.build
}
