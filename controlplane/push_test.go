package controlplane

import (
	"net/http"
	"testing"
	"time"

	"github.com/meridian-platform/meridian/bus"
)

func TestVerdictOfATargetsAnswer(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name       string
		status     int
		retryAfter string
		want       string // ack, retry or dead-letter
		pause      time.Duration
	}{
		{"200 acknowledges", 200, "", "ack", 0},
		{"204 acknowledges", 204, "", "ack", 0},
		{"500 retries", 500, "", "retry", 0},
		{"502 retries", 502, "", "retry", 0},
		{"503 with seconds pauses", 503, "7", "retry", 7 * time.Second},
		{"429 with a date pauses until it", 429, now.Add(90 * time.Second).Format(http.TimeFormat), "retry", 90 * time.Second},
		{"429 with a past date does not pause", 429, now.Add(-time.Minute).Format(http.TimeFormat), "retry", 0},
		{"408 retries", 408, "", "retry", 0},
		{"unreadable Retry-After is ignored", 503, "soon", "retry", 0},
		{"400 dead-letters at once", 400, "", "dead-letter", 0},
		{"404 dead-letters at once", 404, "", "dead-letter", 0},
		{"422 dead-letters at once", 422, "", "dead-letter", 0},
		{"a 3xx is a wrong URL", 301, "", "dead-letter", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.retryAfter != "" {
				h.Set("Retry-After", tc.retryAfter)
			}
			pause, err := verdict(tc.status, h, now)
			got := "ack"
			switch {
			case bus.IsPermanent(err):
				got = "dead-letter"
			case err != nil:
				got = "retry"
			}
			if got != tc.want || pause != tc.pause {
				t.Errorf("verdict(%d, %q) = %s after %s (%v), want %s after %s", tc.status, tc.retryAfter, got, pause, err, tc.want, tc.pause)
			}
		})
	}
}

func TestRedactURLDropsTheQuery(t *testing.T) {
	if got := redactURL("http://user:pw@svc:8080/hook?token=secret"); got != "http://svc:8080/hook" {
		t.Fatalf("redactURL = %q", got)
	}
}
