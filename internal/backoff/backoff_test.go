package backoff

import (
	"context"
	"testing"
	"time"
)

func TestNextStaysUnderTheCeiling(t *testing.T) {
	b := Backoff{Base: 10 * time.Millisecond, Max: 80 * time.Millisecond}
	ceilings := []time.Duration{10, 20, 40, 80, 80, 80}
	for round := 0; round < 200; round++ {
		b.Reset()
		for i, c := range ceilings {
			c *= time.Millisecond
			if d := b.Next(); d <= 0 || d > c {
				t.Fatalf("attempt %d: delay %v outside (0, %v]", i, d, c)
			}
		}
	}
}

func TestNextDoesNotOverflow(t *testing.T) {
	b := Backoff{Base: time.Second, Max: time.Hour}
	for i := 0; i < 1000; i++ {
		if d := b.Next(); d <= 0 || d > time.Hour {
			t.Fatalf("attempt %d: delay %v", i, d)
		}
	}
}

func TestSleepStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep reported a full delay after cancel")
	}
	if !Sleep(context.Background(), time.Millisecond) {
		t.Fatal("Sleep did not report the full delay")
	}
}
