package main

import (
	"math"
	"testing"
)

func TestParseWrk(t *testing.T) {
	tests := []struct {
		name string
		out  string
		want wrkResult
	}{
		{
			name: "clean run",
			out: `Running 3s test @ http://127.0.0.1:18181/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.23ms    1.90ms  17.74ms   88.10%
    Req/Sec    84.94k     5.86k   91.68k    83.33%
  Latency Distribution
     50%  421.00us
     75%    1.51ms
     90%    3.50ms
     99%    8.93ms
  253217 requests in 3.00s, 30.43MB read
Requests/sec:  84390.34
Transfer/sec:     10.14MB
`,
			want: wrkResult{requests: 253217, seconds: 3, rps: 84390.34, p50: 0.421, p99: 8.93},
		},
		{
			name: "errors and refusals",
			out: `Running 10s test @ http://127.0.0.1:1/
  1 threads and 50 connections
  Latency Distribution
     50%    1.00s
     75%    1.10s
     90%    1.20s
     99%    1.50m
  1200 requests in 10.01s, 1.00MB read
  Socket errors: connect 3, read 2, write 0, timeout 7
  Non-2xx or 3xx responses: 1200
Requests/sec:    119.88
`,
			want: wrkResult{requests: 1200, seconds: 10.01, rps: 119.88, p50: 1000, p99: 90000,
				non2xx: 1200, socketErrors: 12, socketSummary: "Socket errors: connect 3, read 2, write 0, timeout 7"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseWrk(tc.out)
			if err != nil {
				t.Fatal(err)
			}
			near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9*max(1, math.Abs(b)) }
			if got.requests != tc.want.requests || !near(got.seconds, tc.want.seconds) || !near(got.rps, tc.want.rps) ||
				!near(got.p50, tc.want.p50) || !near(got.p99, tc.want.p99) || got.non2xx != tc.want.non2xx ||
				got.socketErrors != tc.want.socketErrors || got.socketSummary != tc.want.socketSummary {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
	if _, err := parseWrk("Running 1s test\n  10 requests in 1.00s, 1KB read\n"); err == nil {
		t.Error("a report without --latency's distribution parsed")
	}
}
