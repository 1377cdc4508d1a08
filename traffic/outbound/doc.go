// Package outbound is the client side of the data path, assembled: it
// turns a service name into a request to one of its instances, through
// the resiliency policies of that upstream. The SDK's HTTP client and gRPC
// connections use it; the gateway and the sidecar forward through it.
//
// Transport is an http.RoundTripper for URLs such as
// http://orders/v1/orders/42: it finds the instances of "orders" in the
// discovery cache, and sends each request through the chain the current
// resiliency spec (package policy) compiles for that upstream:
//
//	deadline.Timeout       the target's timeout, unless the caller's deadline is sooner
//	retry (budget)         tries again elsewhere, under the upstream's retry budget
//	breaker                fails fast while the upstream is failing
//	throttle               the SRE book's adaptive client throttle (when a policy asks)
//	rate limit             client-side calls per second to the upstream (when a policy asks)
//	bulkhead               requests in flight to the upstream (when a policy asks)
//	Balance                picks the instance, avoiding those this request failed on
//	outlier                records each try against its instance; ejects outliers
//	deadline.Propagate     tells the instance how long the caller still waits
//	base transport         *http.Transport
//
// The balancer stage (Balance) and the rate limit stage (RateLimit) are
// also usable on their own in a chain of the caller's making.
//
// Apply swaps in a new spec without dropping requests: every upstream's
// new chain is built first, then all replace the old at once with one
// atomic store, and requests in flight finish on the chain they started
// on. Layers whose policy did not change keep their state across the swap
// (an open breaker stays open, a budget keeps its window), and every
// balancer keeps its endpoints and their latency estimates.
//
// The gRPC side (UnaryClientInterceptor, StreamClientInterceptor,
// Resolver) applies the same upstream's timeout, retries and budget,
// breaker, throttle, rate limit and bulkhead to gRPC calls, and resolves
// meridian:///<service> targets through the same discovery cache.
package outbound
