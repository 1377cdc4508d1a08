// Package balance picks the instance each request goes to. It is the
// second stage of the data path shared by the gateway, the sidecar and the
// SDK: discovery supplies each service's instances as immutable snapshots,
// a Balancer turns every snapshot into a picker, and the resilience layer
// (retries, outlier ejection) steers it through Request.Avoid and
// Endpoint.SetEjected.
//
// # Shape
//
// A Balancer serves one service. Update (or Run, which follows a
// *discovery.Cache) compiles each snapshot into an immutable picker, as
// gRPC's balancer.Picker, and swaps it in atomically. Pick reads the
// current picker and returns a Picked; the caller sends the request to
// Picked.Endpoint().Instance() and calls Picked.Done with the outcome:
//
//	p, err := b.Pick(balance.Request{Hash: balance.HashHeader(r.Header, "X-User-Id"), Avoid: failed})
//	if err != nil {
//		return err // wraps ErrNoEndpoints; a *meridian.Error, CodeUnavailable
//	}
//	resp, err := send(p.Endpoint().Instance().HostPort())
//	p.Done(err)
//
// Pick and Done take no lock (atomics only) and allocate nothing. A Pick
// with its Done costs 10–25 ns, about 90 ns under PeakEWMA, most of it two
// reads of the clock (docs/traffic.md, "Balancers", has the figures beside
// a mutex-guarded round robin).
//
// Each instance is an *Endpoint with live state: requests in flight, a
// peak-EWMA latency estimate and an ejected flag. The state lives in a set
// keyed by instance ID, so an instance that stays in the next snapshot
// keeps its Endpoint (and its pointer); only instances new to the set start
// fresh. Balancer.Endpoint(id) finds an instance's Endpoint for callers
// that know instances by ID (the outlier detector, the retry layer).
//
// # Policies
//
//   - RoundRobin cycles through the endpoints in ID order, starting at a
//     random position so that clients started together do not all begin
//     with the same instance. Weights are ignored.
//   - WeightedRoundRobin is nginx's smooth weighted round robin on
//     Instance.Weight (default 100): weights 5, 1, 1 give a a b a c a a.
//     One cycle is computed per snapshot and walked with an atomic
//     counter, which gives nginx's exact sequence without its lock.
//   - LeastRequest is power of two choices: two distinct random endpoints,
//     the one with fewer requests in flight per unit of weight wins. It
//     adapts to uneven request costs and instance speeds with no shared
//     state beyond the counters, and avoids the herding of "always the
//     least loaded".
//   - PeakEWMA (the default) is power of two choices on Finagle's and
//     Linkerd's cost: latency estimate × (requests in flight + 1) ÷
//     (weight / 100). It moves traffic off a slow instance within a few of
//     its answers and brings it back as the instance recovers.
//   - RingHash is consistent hashing with bounded loads, keyed by
//     Request.Hash (see HashString, HashHeader, HashCookie,
//     HashPathValue): the same key reaches the same instance while loads
//     are even, removing one of N instances moves about 1/N of the keys,
//     and no instance carries more than ⌈BalanceFactor × average⌉ requests
//     in flight (default factor 1.25), a hot key spilling to its ring
//     neighbours. The ring depends only on the instance IDs and weights, so
//     every gateway and client agrees on it.
//
// Zone preference (Config.Zone) wraps any policy: the local zone's
// endpoints first, the other zones' when the local zone has none
// available, has lost too many (Envoy's overprovisioning factor, default
// 1.4, decides the share that spills), or when the local choice has
// more than Overload (default 4) times the requests in flight of the other zones'
// choice. Discovery leaves instances failing their health checks out of
// the snapshot, so the local zone's health here is its share of endpoints
// not ejected by the outlier detector; a zone shrunk by failed checks shows
// up as load instead.
//
// # Peak EWMA
//
// Under PeakEWMA the balancer measures each request's latency from Pick to
// Done by its clock (Config.Now, for tests; the monotonic clock by
// default); the other policies read no clock. An answer slower than the
// stored estimate replaces it (peak sensitivity: a sudden slowdown counts
// at once); a faster one is averaged in with weight 1 − e^(−Δt/τ), Δt
// being the time since the previous update and τ Config.Decay (default
// 10s, half-life 6.9s). Between answers the estimate is read decayed
// toward zero by e^(−idle/τ), so an instance avoided for a while is tried
// again and can earn its traffic back. Failures never lower
// the estimate (a fast error is not a fast answer); canceled requests
// leave it alone. A new endpoint starts at the median estimate of the
// endpoints already in the set, so it competes as a typical member from
// its first request.
//
// # Ejection and retries
//
// Every policy skips ejected endpoints while another is available, and
// fails open when all are ejected: it then picks among them as if none
// were. The outlier detector caps the share of endpoints it ejects (Envoy's
// max_ejection_percent), so "all ejected" means its view is stale rather
// than that every instance is bad, and refusing all traffic would turn a
// detection error into an outage. Request.Avoid (the endpoint a retry just
// failed on) is never returned while any other endpoint exists, ejected or
// not; with zone preference the other zones count. Request.AvoidIDs widens
// that to every endpoint earlier tries failed on, by ID: they are returned
// only when every other endpoint has failed too, and still before Avoid.
//
// # Concurrency
//
// Update, Reconfigure and Run serialize among themselves; Pick and Done
// run concurrently with them and with each other. Under concurrency the
// counters are read without a snapshot of the whole set, so limits that
// depend on them (bounded load, zone overload) hold approximately: two
// picks racing may both take the last slot. No goroutine is started by
// this package; Run runs on its caller's.
package balance
