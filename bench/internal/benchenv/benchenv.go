// Package benchenv holds what every benchmark program under bench/ needs
// from the machine: pinning itself and the programs it measures to cores
// (Child), free ports for them, their CPU time and memory from /proc, and
// noticing a build or other processes that would disturb the figures.
package benchenv

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// PinSelf binds every thread of this process to cpu. Threads the Go runtime
// starts later are cloned from these and inherit the binding; going over
// the list twice catches one started while the first pass ran.
func PinSelf(cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	for range 2 {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
				return err
			}
		}
	}
	return nil
}

// BuildRunning names a Go toolchain process running on the machine
// ("compile pid 123"), or returns "" when there is none.
func BuildRunning() string {
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", p.Name(), "comm"))
		if err != nil {
			continue
		}
		switch c := strings.TrimSpace(string(comm)); c {
		case "compile", "link", "asm", "cgo", "vet":
			return c + " pid " + p.Name()
		}
	}
	return ""
}
