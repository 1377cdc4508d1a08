package outbound

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/internal/backoff"
	"github.com/meridian-platform/meridian/traffic/resilience"
)

// Scheme is the gRPC target scheme the Transport's resolver serves:
// meridian:///<service> (GRPCTarget).
const Scheme = "meridian"

// GRPCTarget is the gRPC target of a service: "meridian:///<service>".
func GRPCTarget(service string) string { return Scheme + ":///" + service }

// GRPCDialOptions are the options for a gRPC connection to a service
// through the Transport: the meridian resolver (Resolver), round robin
// over the instances it lists, the unary and stream interceptors, and
// plaintext transport credentials (give grpc.WithTransportCredentials
// after these to use TLS). Use them with GRPCTarget:
//
//	conn, err := grpc.NewClient(outbound.GRPCTarget("inventory"), tr.GRPCDialOptions()...)
func (t *Transport) GRPCDialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithResolvers(t.Resolver()),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"round_robin": {}}]}`),
		grpc.WithChainUnaryInterceptor(t.UnaryClientInterceptor()),
		grpc.WithChainStreamInterceptor(t.StreamClientInterceptor()),
	}
}

// grpcService is the service a connection's target names: <service> of
// meridian:///<service>, or a bare service name; "" for anything else.
func grpcService(target string) string {
	s := strings.TrimPrefix(target, Scheme+":///")
	if isServiceName(s) {
		return s
	}
	return ""
}

// UnaryClientInterceptor applies the upstream's policies to unary calls
// on connections whose target is meridian:///<service> (or a bare service
// name; calls on other connections pass through): the target's timeout
// as the call's deadline (unless the caller's is sooner; gRPC sends it as
// grpc-timeout), and per try the breaker, throttle, rate limit, bulkhead
// and per-try timeout; it retries, with the policy's backoff and under the
// upstream's retry budget, a try that failed with UNAVAILABLE when the
// policy's retry_on holds a status gRPC maps to it (429, 502, 503, 504;
// the default does). gRPC has no idempotent methods to tell apart: a
// target whose methods cannot take a duplicate should say retry: none.
//
// Local refusals keep their identity and carry a gRPC status:
// errors.Is(err, breaker.ErrOpen) holds and status.Code(err) is
// UNAVAILABLE (RESOURCE_EXHAUSTED for a rate limit). The balancing and
// outlier ejection of gRPC connections are gRPC's own (round robin over
// the resolver's addresses): the interceptors do not see the instance.
func (t *Transport) UnaryClientInterceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		svc := grpcService(cc.Target())
		if svc == "" {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		u, err := t.Upstream(svc)
		if err != nil {
			return grpcErr(err)
		}
		ctx, cancel := u.withTimeout(ctx)
		defer cancel()
		return u.retryGRPC(ctx, func() error {
			report, err := u.admit(ctx)
			if err != nil {
				return err
			}
			release := func() {}
			if u.bulkhead != nil {
				if release, err = u.bulkhead.Acquire(ctx); err != nil {
					report(ctx, resilience.ErrRejected)
					return grpcErr(err)
				}
			}
			tryCtx, cancel := ctx, context.CancelFunc(func() {})
			if d := u.retry.PerTryTimeout.D(); d > 0 {
				tryCtx, cancel = context.WithTimeout(ctx, d)
			}
			err = invoker(tryCtx, method, req, reply, cc, opts...)
			cancel()
			release()
			report(ctx, err)
			return err
		})
	}
}

// StreamClientInterceptor applies the upstream's policies to streams (see
// UnaryClientInterceptor): the timeout bounds the whole stream; the
// breaker, throttle and rate limit admit its start, and the breaker and
// throttle learn its outcome when it ends (RecvMsg returns an error, or
// the stream's context ends); a start that fails with UNAVAILABLE is
// retried, since nothing has been sent on it. The bulkhead and the per-try
// timeout do not apply: a long-lived stream would hold a slot, or be cut.
func (t *Transport) StreamClientInterceptor() grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		svc := grpcService(cc.Target())
		if svc == "" {
			return streamer(ctx, desc, cc, method, opts...)
		}
		u, err := t.Upstream(svc)
		if err != nil {
			return nil, grpcErr(err)
		}
		ctx, cancel := u.withTimeout(ctx)
		var cs *stream
		err = u.retryGRPC(ctx, func() error {
			report, err := u.admit(ctx)
			if err != nil {
				return err
			}
			s, err := streamer(ctx, desc, cc, method, opts...)
			if err != nil {
				report(ctx, err)
				return err
			}
			cs = &stream{ClientStream: s, ctx: ctx, report: report, cancel: cancel}
			cs.stop = context.AfterFunc(ctx, func() { cs.finish(ctx.Err()) })
			return nil
		})
		if err != nil {
			cancel()
			return nil, err
		}
		return cs, nil
	}
}

// stream reports its outcome to the upstream's breaker and throttle once,
// when it ends, and then releases its timeout.
type stream struct {
	grpc.ClientStream
	ctx    context.Context
	report func(context.Context, error)
	cancel context.CancelFunc
	stop   func() bool
	once   sync.Once
}

func (s *stream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil {
		s.stop()
		if err == io.EOF {
			s.finish(nil)
		} else {
			s.finish(err)
		}
	}
	return err
}

func (s *stream) finish(err error) {
	s.once.Do(func() {
		s.report(s.ctx, err)
		s.cancel()
	})
}

// withTimeout gives ctx the upstream's timeout unless its deadline is
// sooner.
func (u *Upstream) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	d := u.resolved.Timeout
	if d <= 0 {
		return ctx, func() {}
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= d {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, d)
}

// retryGRPC runs try as the upstream's retry policy says: again, after the
// backoff and with the budget's leave, while it fails with UNAVAILABLE.
func (u *Upstream) retryGRPC(ctx context.Context, try func() error) error {
	p := u.retry
	if u.budget != nil {
		u.budget.Request()
	}
	retryable := slices.ContainsFunc(p.RetryOn, func(s int) bool { return s == 429 || s == 502 || s == 503 || s == 504 })
	bo := backoff.Backoff{Base: p.BaseDelay.D(), Max: p.MaxDelay.D()}
	for n := 1; ; n++ {
		err := try()
		if err == nil || ctx.Err() != nil || errors.Is(err, resilience.ErrRejected) ||
			!retryable || status.Code(err) != codes.Unavailable || n >= p.MaxAttempts {
			return err
		}
		delay := bo.Next()
		if dl, ok := ctx.Deadline(); ok && !time.Now().Add(delay).Before(dl) {
			return err
		}
		if u.budget != nil && !u.budget.TryRetry() {
			return err
		}
		if !backoff.Sleep(ctx, delay) {
			return err
		}
	}
}

// admit passes one try through the breaker, the throttle and the rate
// limit. On success, report must be called once with the try's outcome.
func (u *Upstream) admit(ctx context.Context) (report func(context.Context, error), err error) {
	var brDone, thDone func(bool)
	if u.breaker != nil {
		if brDone, err = u.breaker.Allow(); err != nil {
			return nil, grpcErr(err)
		}
	}
	report = func(ctx context.Context, err error) {
		failed := grpcFailed(ctx, err)
		if brDone != nil {
			brDone(!failed)
		}
		if thDone != nil {
			thDone(!failed)
		}
	}
	if u.throttle != nil {
		if thDone, err = u.throttle.Allow(); err != nil {
			report(ctx, resilience.ErrRejected)
			return nil, grpcErr(err)
		}
	}
	if u.limiter != nil {
		if err := allow(ctx, u.limiter, u.service); err != nil {
			report(ctx, resilience.ErrRejected)
			return nil, grpcErr(err)
		}
	}
	return report, nil
}

// grpcFailed reports whether a try's outcome is the upstream's failure,
// as breaker.DefaultClassify judges HTTP: no answer, overload or a server
// error; not the caller's own cancel, nor a local refusal.
func grpcFailed(ctx context.Context, err error) bool {
	switch {
	case err == nil, errors.Is(err, resilience.ErrRejected), errors.Is(err, context.Canceled):
		return false
	case errors.Is(err, context.DeadlineExceeded):
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Internal, codes.Unknown, codes.DataLoss:
		return true
	case codes.Canceled:
		return ctx.Err() == nil
	}
	return false
}

// grpcErr gives a local error (a refusal, a layer that could not be
// made, a context error) a gRPC status, keeping it for errors.Is.
func grpcErr(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	code := codes.Unavailable
	switch meridian.ErrorCode(err) {
	case meridian.CodeRateLimited:
		code = codes.ResourceExhausted
	case meridian.CodeInvalid:
		code = codes.InvalidArgument
	case meridian.CodeInternal:
		code = codes.Internal
	}
	return &statusError{err: err, code: code}
}

// statusError is a local error with a gRPC status.
type statusError struct {
	err  error
	code codes.Code
}

func (e *statusError) Error() string              { return e.err.Error() }
func (e *statusError) Unwrap() error              { return e.err }
func (e *statusError) GRPCStatus() *status.Status { return status.New(e.code, e.err.Error()) }

// Resolver returns the gRPC resolver of the "meridian" scheme:
// meridian:///<service> resolves to the addresses of the service's serving
// instances, kept current from the Transport's discovery source. Give it
// to a connection with grpc.WithResolvers (GRPCDialOptions does); it is
// not registered globally.
func (t *Transport) Resolver() resolver.Builder { return &resolverBuilder{t: t} }

type resolverBuilder struct{ t *Transport }

func (b *resolverBuilder) Scheme() string { return Scheme }

func (b *resolverBuilder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	svc := target.Endpoint()
	if err := meridian.ValidateServiceName("target", svc); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &grpcResolver{cancel: cancel, done: make(chan struct{})}
	go r.run(ctx, b.t, svc, cc) // owned by r: Close stops it and waits
	return r, nil
}

// grpcResolver pushes the service's instance addresses to its connection
// on every discovery snapshot.
type grpcResolver struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (r *grpcResolver) run(ctx context.Context, t *Transport, svc string, cc resolver.ClientConn) {
	defer close(r.done)
	bo := backoff.Backoff{Base: 100 * time.Millisecond, Max: 5 * time.Second}
	for {
		snap, err := t.src.Wait(ctx, svc)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			cc.ReportError(err)
			if !backoff.Sleep(ctx, bo.Next()) {
				return
			}
			continue
		}
		bo.Reset()
		addrs := make([]resolver.Address, len(snap.Instances))
		for i, in := range snap.Instances {
			addrs[i] = resolver.Address{Addr: in.HostPort()}
		}
		if err := cc.UpdateState(resolver.State{Addresses: addrs}); err != nil {
			t.log.Debug("outbound: gRPC connection rejected the instance list", "upstream", svc, "err", err)
		}
		select {
		case <-snap.Changed():
		case <-ctx.Done():
			return
		}
	}
}

// ResolveNow does nothing: the list follows discovery's pushes.
func (r *grpcResolver) ResolveNow(resolver.ResolveNowOptions) {}

func (r *grpcResolver) Close() {
	r.cancel()
	<-r.done
}
