package outlier

import (
	"context"
	"net/http"
	"testing"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/traffic/resilience"
)

type rtFunc func(*http.Request) (*http.Response, error)

func (f rtFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// The recorder counts against the endpoint the balancer stage chose, and
// leaves out what is not the endpoint's doing.
func TestRoundTripperRecordsPerEndpoint(t *testing.T) {
	var ejected []string
	d, _ := New(Config{ConsecutiveGatewayFailure: 2}, Options{Eject: func(id string, e bool) {
		if e {
			ejected = append(ejected, id)
		}
	}})
	d.SetEndpoints([]string{"10.0.0.1:80", "10.0.0.2:80"})
	var answer func() (*http.Response, error)
	rt := RoundTripper(d, nil, nil)(rtFunc(func(r *http.Request) (*http.Response, error) {
		resilience.AttemptFrom(r.Context()).Endpoint = "10.0.0.2:80" // the balancer's pick
		return answer()
	}))
	send := func() {
		ctx, _ := resilience.NewAttempt(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://orders/", nil)
		if resp, err := rt.RoundTrip(req); err == nil {
			resp.Body.Close()
		}
	}
	answer = func() (*http.Response, error) {
		return nil, &meridian.Error{Code: meridian.CodeUnavailable, Err: resilience.ErrRejected}
	}
	send()
	send() // local rejections: not counted
	answer = func() (*http.Response, error) { return &http.Response{StatusCode: 503, Body: http.NoBody}, nil }
	send()
	if len(ejected) != 0 {
		t.Fatalf("ejected %v after one countable failure", ejected)
	}
	send()
	if len(ejected) != 1 || ejected[0] != "10.0.0.2:80" {
		t.Fatalf("ejected %v, want the balancer's pick", ejected)
	}
}
