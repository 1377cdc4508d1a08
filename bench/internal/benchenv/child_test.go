package benchenv

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// gone reports whether pid has ended: no such process, or a zombie.
func gone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i >= 0 && strings.HasPrefix(string(b[i+1:]), " Z")
}

// waitFor polls cond for up to 5s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestChildStartStop(t *testing.T) {
	if _, err := exec.LookPath("sleep"); err != nil {
		t.Skip("no sleep binary:", err)
	}
	cpu := -1
	if _, err := exec.LookPath("taskset"); err == nil {
		cpu = 0
	}
	dir := t.TempDir()
	pids := filepath.Join(dir, "pids")
	c, err := StartChild(ChildSpec{Name: "sleeper", Dir: dir, CPU: cpu, PIDsFile: pids, Argv: []string{"sleep", "30"}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Stop(time.Second) }()
	pid := c.PID()
	if err := c.Alive(); err != nil {
		t.Fatalf("Alive after start: %v", err)
	}
	// taskset execs the program in place: the pid is sleep's own.
	waitFor(t, "taskset to exec sleep", func() bool {
		comm, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		return strings.TrimSpace(string(comm)) == "sleep"
	})
	if b, _ := os.ReadFile(pids); strings.TrimSpace(string(b)) != strconv.Itoa(pid) {
		t.Errorf("pids file holds %q, want %d", b, pid)
	}
	if c.LogPath() != filepath.Join(dir, "sleeper.log") {
		t.Errorf("LogPath() = %s", c.LogPath())
	}

	if err := c.Stop(5 * time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := c.Alive(); err == nil {
		t.Error("Alive after Stop returned nil")
	}
	if !gone(pid) {
		t.Errorf("pid %d still runs after Stop", pid)
	}
	if err := c.Stop(time.Second); err != nil {
		t.Errorf("a second Stop: %v", err)
	}
}

// TestChildStopKillsItsGroup: a program that ignores SIGTERM is killed
// after the grace period, and so is what it started.
func TestChildStopKillsItsGroup(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh:", err)
	}
	c, err := StartChild(ChildSpec{Name: "stubborn", Dir: t.TempDir(), CPU: -1, Env: []string{"BENCHENV_TEST=from-env"},
		Argv: []string{"sh", "-c", `trap '' TERM; echo "$BENCHENV_TEST"; sleep 30 & echo "sleep $!"; wait`}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Stop(time.Second) }()
	var sleepPID int
	waitFor(t, "the log to name the sleep", func() bool {
		_, after, ok := strings.Cut(c.LogTail(), "sleep ")
		sleepPID, _ = strconv.Atoi(strings.TrimSpace(after))
		return ok && sleepPID > 0
	})
	if !strings.HasPrefix(c.LogTail(), "from-env\n") {
		t.Errorf("the child did not get its environment; its log: %q", c.LogTail())
	}
	if err := c.Stop(200 * time.Millisecond); err == nil {
		t.Error("Stop of a program that ignores SIGTERM returned nil")
	}
	if !gone(c.PID()) {
		t.Errorf("the program, pid %d, still runs", c.PID())
	}
	waitFor(t, "the program's own child to end", func() bool { return gone(sleepPID) })
}

func TestChildWaitReady(t *testing.T) {
	if _, err := exec.LookPath("sleep"); err != nil {
		t.Skip("no sleep binary:", err)
	}
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	c, err := StartChild(ChildSpec{Name: "sleeper", Dir: t.TempDir(), CPU: -1, Argv: []string{"sleep", "30"}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Stop(time.Second) }()
	ctx := context.Background()
	if err := c.WaitReady(ctx, srv.URL, 5*time.Second); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	if err := c.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	err = c.WaitReady(ctx, srv.URL, 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "exited") {
		t.Errorf("WaitReady of a stopped child: %v, want that it exited", err)
	}
}
