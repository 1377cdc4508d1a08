package sdk

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/internal/backoff"
	"github.com/meridian-platform/meridian/traffic/outbound"
	"github.com/meridian-platform/meridian/traffic/policy"
	"github.com/meridian-platform/meridian/traffic/resilience/deadline"
	"github.com/meridian-platform/meridian/traffic/resilience/shed"
)

// HTTPClient returns the service's client for calling other services by
// name. A URL whose host is a service name,
//
//	resp, err := svc.HTTPClient().Get("http://orders/v1/orders/42")
//
// goes to one of that service's instances, found in the discovery cache,
// through the resiliency policies of that upstream (Config.ResiliencyKey;
// package traffic/outbound has the chain): the target's timeout, retries
// of idempotent requests on another instance under a retry budget, a
// circuit breaker, outlier ejection, peak-EWMA balancing, the caller's
// deadline sent along in Meridian-Timeout. Other URLs are sent as by a
// plain client. Errors of the data path (no instance, breaker open, …) are
// *meridian.Error with CodeUnavailable, wrapped in *url.Error.
//
// The client is shared and safe for concurrent use; it has no overall
// Timeout, since the policies and the request's context bound each call.
// Run runs what it needs (discovery, the balancers' followers): a call
// made before Run waits for it, within the request's context.
func (s *Service) HTTPClient() *http.Client { return s.httpc }

// GRPCClient returns a gRPC connection to service, its target
// meridian:///<service> resolved through the discovery cache (round robin
// over the instances), the upstream's policies applied by interceptors:
// the timeout as the call's deadline (sent as grpc-timeout), retries of
// UNAVAILABLE under the retry budget, the breaker, throttle, rate limit
// and bulkhead. Plaintext unless opts, appended after Meridian's, give
// grpc.WithTransportCredentials. The caller closes the connection.
func (s *Service) GRPCClient(service string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	if err := meridian.ValidateServiceName("service", service); err != nil {
		return nil, err
	}
	return grpc.NewClient(outbound.GRPCTarget(service), append(s.out.GRPCDialOptions(), opts...)...)
}

// Outbound returns the Transport behind HTTPClient and GRPCClient: its
// upstreams' state for inspection, its interceptors for connections made
// by hand, and Apply for a program that sets its resiliency spec itself
// (with Config.NoResiliencySpec).
func (s *Service) Outbound() *outbound.Transport { return s.out }

// serverMiddleware wraps the service's handler in deadline parsing and
// load shedding, as Config says: the deadline first, so that a shed
// request costs as little as possible and a served one sees its caller's
// deadline.
func (s *Service) serverMiddleware(h http.Handler) http.Handler {
	if !s.cfg.NoShed {
		sh, err := shed.New(s.cfg.Shed, shed.Options{Log: s.log})
		if err != nil {
			panic("sdk: shed config passed validation but not shed.New: " + err.Error())
		}
		h = shed.Middleware(sh)(h)
	}
	if !s.cfg.NoDeadline {
		h = deadline.Middleware(deadline.MiddlewareConfig{Max: meridian.Duration(s.cfg.MaxDeadline)})(h)
	}
	return h
}

// followResiliency binds the resiliency spec's key and applies every
// revision to the Transport until ctx ends. While the control plane cannot
// be read it retries, and the policies in force stay.
func (s *Service) followResiliency(ctx context.Context) {
	key := s.cfg.ResiliencyKey
	var (
		bound   atomic.Pointer[Binding[policy.Spec]]
		mu      sync.Mutex
		applied uint64
	)
	// catchUp applies the binding's latest value unless it is in force:
	// from onChange and once BindConfig returns, whichever sees it first.
	catchUp := func() {
		b := bound.Load()
		if b == nil {
			return // BindConfig has not returned; its caller syncs next
		}
		mu.Lock()
		defer mu.Unlock()
		cur := b.cur.Load()
		if cur.rev == applied {
			return
		}
		spec := cur.v
		if err := s.out.Apply(&spec); err != nil {
			s.log.Error("cannot apply the resiliency spec; the previous one stays", "key", key, "revision", cur.rev, "err", err)
			return
		}
		applied = cur.rev
		s.log.Info("resiliency spec applied", "key", key, "revision", cur.rev, "spec", spec.String())
	}
	bo := backoff.Backoff{Base: 100 * time.Millisecond, Max: 10 * time.Second}
	for {
		b, err := BindConfig(ctx, s.cp, key, func(_, _ policy.Spec) { catchUp() }, AllowMissing(), BindLogger(s.log))
		if err == nil {
			bound.Store(b)
			catchUp()
			<-ctx.Done()
			b.Close()
			return
		}
		if ctx.Err() != nil {
			return
		}
		d := bo.Next()
		s.log.Warn("cannot read the resiliency spec; the policies in force stay, retrying", "key", key, "retry_in", d, "err", err)
		if !backoff.Sleep(ctx, d) {
			return
		}
	}
}
