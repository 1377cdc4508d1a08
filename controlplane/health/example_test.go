package health_test

import (
	"fmt"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/controlplane/health"
)

// A Tracker turns probe results into status transitions; the caller
// persists the transitions.
func ExampleTracker() {
	spec := meridian.CheckSpec{Kind: meridian.CheckHTTP, FailuresBeforeCritical: 2}
	if err := spec.Normalize(); err != nil {
		panic(err)
	}
	tr := health.NewTracker(spec, meridian.Health{Status: meridian.StatusPassing})

	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, r := range []health.Result{
		{OK: false, Output: "HTTP 503 Service Unavailable"},
		{OK: false, Output: "HTTP 503 Service Unavailable"},
		{OK: true, Output: "HTTP 200 OK"},
	} {
		now = now.Add(10 * time.Second)
		if h, changed := tr.Step(r, now); changed {
			fmt.Println(h.Since.Format(time.TimeOnly), h.Status, h.Output)
		}
	}
	// Output:
	// 12:00:10 warning HTTP 503 Service Unavailable
	// 12:00:20 critical HTTP 503 Service Unavailable
	// 12:00:30 passing HTTP 200 OK
}

// Each control-plane replica checks only the instances it owns.
func ExampleOwner() {
	members := []string{"cp-0", "cp-1", "cp-2"}
	self := "cp-1"
	inst := &meridian.Instance{Service: "orders", ID: "orders-1"}
	if health.Owner(inst.Service+"/"+inst.ID, members) == self {
		fmt.Println("checked here")
	} else {
		fmt.Println("checked by another replica")
	}
	// Output: checked here
}
