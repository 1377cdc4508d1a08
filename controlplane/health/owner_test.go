package health

import (
	"fmt"
	"math"
	"slices"
	"testing"
)

func keys(n int) []string {
	ks := make([]string, n)
	for i := range ks {
		ks[i] = fmt.Sprintf("orders/orders-%d", i)
	}
	return ks
}

// Each of 3 replicas checks about a third of 10,000 instances.
func TestOwnerDistribution(t *testing.T) {
	members := []string{"cp-0", "cp-1", "cp-2"}
	counts := map[string]int{}
	ks := keys(10_000)
	for _, k := range ks {
		counts[Owner(k, members)]++
	}
	want := float64(len(ks)) / float64(len(members))
	for _, m := range members {
		if dev := math.Abs(float64(counts[m])-want) / want; dev > 0.10 {
			t.Errorf("%s owns %d keys, %.1f%% off the fair %.0f", m, counts[m], 100*dev, want)
		}
	}
	if len(counts) != len(members) {
		t.Errorf("owners outside the member list: %v", counts)
	}
}

// When a replica leaves, only its keys move; when one joins, keys move only
// to it, about 1/N of them.
func TestOwnerMinimalMovement(t *testing.T) {
	ks := keys(10_000)
	three := []string{"cp-0", "cp-1", "cp-2"}
	two := []string{"cp-0", "cp-2"}
	four := []string{"cp-0", "cp-1", "cp-2", "cp-3"}

	for _, k := range ks {
		before, after := Owner(k, three), Owner(k, two)
		if before != "cp-1" && after != before {
			t.Fatalf("%s moved from %s to %s although %s stayed", k, before, after, before)
		}
		if after == "cp-1" {
			t.Fatalf("%s still owned by the departed cp-1", k)
		}
	}

	moved := 0
	for _, k := range ks {
		before, after := Owner(k, three), Owner(k, four)
		if before != after {
			if after != "cp-3" {
				t.Fatalf("%s moved from %s to %s, not to the new member", k, before, after)
			}
			moved++
		}
	}
	if share := float64(moved) / float64(len(ks)); share < 0.15 || share > 0.35 {
		t.Errorf("%.1f%% of keys moved to the 4th member, want about 25%%", 100*share)
	}
}

func TestOwnerEdgeCases(t *testing.T) {
	if got := Owner("k", nil); got != "" {
		t.Errorf("Owner with no members = %q, want empty", got)
	}
	if got := Owner("k", []string{"only"}); got != "only" {
		t.Errorf("Owner with one member = %q", got)
	}
	// Every replica must agree whatever order its member list is in.
	members := []string{"cp-0", "cp-1", "cp-2", "cp-3"}
	reversed := slices.Clone(members)
	slices.Reverse(reversed)
	for _, k := range keys(1000) {
		if a, b := Owner(k, members), Owner(k, reversed); a != b {
			t.Fatalf("%s: %s with one order, %s with the other", k, a, b)
		}
	}
}

func BenchmarkOwner(b *testing.B) {
	members := []string{"cp-0", "cp-1", "cp-2", "cp-3", "cp-4"}
	b.ReportAllocs()
	for b.Loop() {
		Owner("orders/orders-12345", members)
	}
}
