package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestStallCountsFromIntendedTime: over one connection, the server stalls
// once for 300 ms in a 1 s run at 1000/s. About 300 requests fall due
// during the stall and wait for the connection; each one's latency counts
// from when it was due, so the p99 shows the stall, though only one
// request ever waited on the server itself.
func TestStallCountsFromIntendedTime(t *testing.T) {
	const stall = 300 * time.Millisecond
	var n atomic.Int64
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 300 {
			once.Do(func() { time.Sleep(stall) })
		}
		_, _ = w.Write([]byte("ok"))
	}))
	defer srv.Close()

	rep := runAgainst(t, srv.URL, 1)
	if rep.Intended != 1000 || rep.Completed != 1000 || rep.Errors != 0 || rep.Unsent != 0 {
		t.Fatalf("counts: %+v", rep)
	}
	if rep.P99 < float64(stall/time.Millisecond)*0.8 {
		t.Errorf("p99 %.1f ms does not show the %s stall: %+v", rep.P99, stall, rep)
	}
	if rep.P50 > 50 {
		t.Errorf("p50 %.1f ms: most requests were not delayed", rep.P50)
	}
}

func TestSteadyServer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer t" {
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	defer srv.Close()
	rep := runAgainst(t, srv.URL, 4)
	if rep.Completed != 1000 || rep.Non2xx != 0 || rep.Errors != 0 {
		t.Fatalf("counts: %+v", rep)
	}
	if rep.Achieved < 900 || rep.Achieved > 1100 {
		t.Errorf("achieved %.0f/s at 1000/s", rep.Achieved)
	}
}

func runAgainst(t *testing.T, raw string, conns int) Report {
	t.Helper()
	u, err := url.Parse(raw + "/x")
	if err != nil {
		t.Fatal(err)
	}
	return generate(context.Background(), genConfig{
		addr: u.Host, request: buildRequest(u, "Authorization: Bearer t"), rate: 1000,
		warmup: 0, duration: time.Second, conns: conns, timeout: 5 * time.Second,
	})
}
