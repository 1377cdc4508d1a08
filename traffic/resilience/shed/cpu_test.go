package shed

import (
	"context"
	"runtime"
	"testing"
	"time"
)

func TestCPUSamplerSeesWork(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc/self/stat")
	}
	c := NewCPUSampler(20 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	// Keep one CPU busy for a while.
	deadline := time.Now().Add(300 * time.Millisecond)
	x := 0
	for time.Now().Before(deadline) {
		x++
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if u := c.Usage(); u <= 0 || u > 1 {
		t.Fatalf("usage %v after a busy loop, want in (0, 1]", u)
	}
}
