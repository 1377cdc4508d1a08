package benchenv

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// PinnedArgv is argv run under `taskset -c cpu`, which execs it in place,
// so that the process started is the program itself; argv as it is when
// cpu < 0.
func PinnedArgv(cpu int, argv ...string) []string {
	if cpu < 0 {
		return argv
	}
	return append([]string{"taskset", "-c", strconv.Itoa(cpu)}, argv...)
}

// ChildSpec is what StartChild starts, and how.
type ChildSpec struct {
	Name string   // names the log (<Dir>/<Name>.log) and the child in errors
	Dir  string   // directory of the log; it must exist
	CPU  int      // core the child is pinned to (taskset -c); -1: not pinned. The zero value is core 0
	Env  []string // "KEY=value" added to this process's environment
	Argv []string // the program and its arguments
	// PIDsFile, if set, gets the child's process group appended as a line,
	// so that a wrapper script can end the group should the benchmark die
	// without stopping it. Best effort: a failure to write it is ignored.
	PIDsFile string
}

// Child is a program a benchmark started and measures. It runs under
// `taskset -c`, which execs it in place: PID is the program itself. It runs
// in its own process group, so that a ^C at the terminal reaches only the
// benchmark, which stops it in order, and so that Stop can end its whole
// tree (a master's workers, say).
type Child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{} // closed once the process has been waited for
	waitErr error         // set before exited is closed
}

// StartChild starts s.Argv pinned to s.CPU, its output going to its log.
func StartChild(s ChildSpec) (*Child, error) {
	if len(s.Argv) == 0 {
		return nil, fmt.Errorf("start %s: no program", s.Name)
	}
	logPath := filepath.Join(s.Dir, s.Name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	argv := PinnedArgv(s.CPU, s.Argv...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), s.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", s.Name, err)
	}
	if s.PIDsFile != "" {
		if f, err := os.OpenFile(s.PIDsFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
			fmt.Fprintln(f, cmd.Process.Pid)
			f.Close()
		}
	}
	c := &Child{name: s.Name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		c.waitErr = cmd.Wait()
		logf.Close()
		close(c.exited)
	}()
	return c, nil
}

// PID is the program's process id, which is also its process group's.
func (c *Child) PID() int { return c.cmd.Process.Pid }

// LogPath is the file the program's stdout and stderr go to.
func (c *Child) LogPath() string { return c.logPath }

// Alive returns nil while the program runs, and once it has exited an
// error with its exit status and the end of its log.
func (c *Child) Alive() error {
	select {
	case <-c.exited:
		return fmt.Errorf("%s exited (%v); its log: %s\n%s", c.name, c.waitErr, c.logPath, c.LogTail())
	default:
		return nil
	}
}

// Stop sends SIGTERM and waits up to grace for the program to exit, then
// kills its process group; either way it then kills whatever is left in
// the group (a worker its master did not take down). It returns an error
// if it had to kill the program. Stopping a child that has exited does
// nothing more than that last kill.
func (c *Child) Stop(grace time.Duration) error {
	pgid := c.cmd.Process.Pid
	defer func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) }()
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
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-c.exited
		return fmt.Errorf("%s did not stop within %s of SIGTERM; killed", c.name, grace)
	}
}

// LogTail is the last 2000 bytes of the program's log, for error messages.
func (c *Child) LogTail() string {
	b, _ := os.ReadFile(c.logPath)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// WaitReady polls url until it answers 200, and returns an error if the
// program exits, ctx ends or timeout passes first.
func (c *Child) WaitReady(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hc := &http.Client{Timeout: time.Second}
	for {
		if err := c.Alive(); err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := hc.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready at %s within %s; its log: %s\n%s", c.name, url, timeout, c.logPath, c.LogTail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
