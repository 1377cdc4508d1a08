package benchenv

import (
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"
)

func TestTreeUsageCountsChildren(t *testing.T) {
	cmd := exec.Command("sleep", "10")
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep binary:", err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	self := os.Getpid()
	tree := Tree(self)
	if tree[0] != self || !slices.Contains(tree, cmd.Process.Pid) {
		t.Fatalf("Tree(%d) = %v, want this process first and its child %d in it", self, tree, cmd.Process.Pid)
	}
	alone, err := TreeUsage(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	all, err := TreeUsage(self)
	if err != nil {
		t.Fatal(err)
	}
	if alone.Procs != 1 || alone.RSS <= 0 {
		t.Errorf("the child alone: %+v", alone)
	}
	if all.Procs < 2 || all.RSS <= alone.RSS || all.CPU < alone.CPU {
		t.Errorf("this process and its child: %+v, the child alone: %+v", all, alone)
	}
	if _, err := TreeUsage(-1); err == nil {
		t.Error("TreeUsage of no process succeeded")
	}
}

// TestNoiseLeavesOwnTreeOut: a benchmark's children are what it
// measures, so their CPU is not noise; everyone else's is.
func TestNoiseLeavesOwnTreeOut(t *testing.T) {
	cmd := exec.Command("sleep", "10")
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep binary:", err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	others := othersCPU()
	if _, ok := others[cmd.Process.Pid]; ok {
		t.Error("this process's child is counted among the others")
	}
	if _, ok := others[os.Getpid()]; ok {
		t.Error("this process is counted among the others")
	}
	if _, ok := others[1]; !ok {
		t.Error("pid 1 is not counted among the others")
	}
	n := WatchNoise()
	time.Sleep(100 * time.Millisecond)
	if cores, _ := n.End(); cores < 0 {
		t.Fatalf("negative noise %v", cores)
	}
}
