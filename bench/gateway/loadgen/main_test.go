package main

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
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
	if rep.P50 > 100 {
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
	if rep.Achieved < 500 || rep.Achieved > 1100 { // wide: a loaded machine stretches the last answers
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

// TestReadResponse reads each answer followed by a second one, so that a
// parser that reads too much or too little of the first fails on the
// second.
func TestReadResponse(t *testing.T) {
	const next = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	tests := []struct {
		name       string
		raw        string
		wantStatus int
		wantClosed bool
	}{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ncontent-length: 5\r\n\r\nhello", 200, false},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\n!!!\r\n0\r\n\r\n", 200, false},
		{"chunked with trailer", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-T: 1\r\n\r\n", 200, false},
		{"no body", "HTTP/1.1 204 No Content\r\n\r\n", 204, false},
		{"401, empty", "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n", 401, false},
		{"closing", "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye", 503, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(tc.raw + next))
			status, err := readResponse(br)
			if status != tc.wantStatus || errors.Is(err, errClosed) != tc.wantClosed || (err != nil && !errors.Is(err, errClosed)) {
				t.Fatalf("got %d, %v; want %d, closed %v", status, err, tc.wantStatus, tc.wantClosed)
			}
			if status, err := readResponse(br); status != 200 || err != nil {
				t.Fatalf("the next response: %d, %v", status, err)
			}
		})
	}
	if _, err := readResponse(bufio.NewReader(strings.NewReader("garbage\r\n\r\n"))); err == nil {
		t.Error("garbage parsed")
	}
}

func TestChunkedServer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.(http.Flusher).Flush() // no length known: chunked
		_, _ = w.Write([]byte("streamed"))
	}))
	defer srv.Close()
	rep := runAgainst(t, srv.URL, 2)
	if rep.Completed != 1000 || rep.Errors != 0 {
		t.Fatalf("counts: %+v", rep)
	}
}
