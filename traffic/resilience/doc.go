// Package resilience is the client side of Meridian's data path policies,
// shared by the SDK client, the gateway and the sidecar, and the server
// side's overload protection. Each policy is a subpackage with a pure core
// (time passed in, no I/O) where it decides something, and an HTTP
// middleware of one shape:
//
//	func(next http.RoundTripper) http.RoundTripper   // client side
//	func(next http.Handler) http.Handler             // server side
//
//	retry     tries again, with jittered exponential backoff, under a per-upstream retry budget
//	deadline  carries the caller's deadline across HTTP (Meridian-Timeout); gRPC does it natively
//	breaker   circuit breaker per upstream, and the SRE book's adaptive client throttle
//	bulkhead  concurrency limit per upstream with a bounded FIFO queue
//	outlier   passive health: ejects endpoints that fail or lag behind their group
//	shed      server-side adaptive load shedding (BBR-style), 503 + Retry-After
//	metrics   Prometheus metrics and log lines from the layers' callbacks
//
// # The order of the client chain
//
// One chain is built per upstream (service) when its policy is loaded, and
// reused for every request. Outermost first:
//
//	deadline.Timeout(d)          overall deadline, if the caller's context has none sooner
//	retry.New(policy, budget)    tries; makes the Attempt every layer below shares
//	breaker.RoundTripper(b)      per upstream: counts every try, fails fast when open
//	breaker.RoundTripper(thr)    optional adaptive throttle, same shape
//	bulkhead.RoundTripper(bh)    per upstream: a slot per try, held until the body is closed
//	  balancer stage             outbound.Balance: picks the endpoint, sets Attempt.Endpoint, avoids Attempt.Failed
//	outlier.RoundTripper(d)      per endpoint: records the try's outcome and latency
//	deadline.Propagate           writes Meridian-Timeout from what is left of this try
//	transport                    *http.Transport
//
// Why this order: retry sits above the breaker so that each try is counted
// and a retry of a failing upstream meets the open breaker at once (local
// rejections, resilience.ErrRejected, are never retried). The bulkhead sits
// below the breaker so a request that fails fast takes no slot. The
// balancer comes after the per-upstream layers and before the per-endpoint
// ones, since it turns an upstream into an endpoint; it reads the
// Attempt (AttemptFrom) to avoid the endpoints earlier tries failed on,
// which is how "never retry on the instance that just failed" holds when
// another exists. Propagate is last so that each try carries the time left
// for it, per-try timeout included.
//
// resilience.Chain(transport, mws...) applies a list in this order;
// package traffic/outbound compiles it per upstream from a resiliency
// spec, with a client-side rate limit beside the throttle.
//
// # Errors
//
// Every local refusal is a *meridian.Error with CodeUnavailable (the HTTP
// edge, internal/problem, answers 503 with Retry-After) that wraps
// ErrRejected: breaker.ErrOpen, breaker.ErrThrottled, bulkhead.ErrFull,
// bulkhead.ErrQueueTimeout. net/http's client wraps them in *url.Error;
// errors.Is sees through it.
package resilience
