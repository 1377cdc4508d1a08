package gateway

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/traffic/discovery"
	"github.com/meridian-platform/meridian/traffic/resilience"
)

// The gateway sends every request through traffic/outbound, whose
// Transport keys each upstream's chain (balancer, breaker, retry budget,
// outlier detector) by the host of the request URL, a DNS label. A route
// upstream is not always a plain service: it may be a subset of one (the
// canary's version v2), fixed URLs, or a service under the route's own
// policies. Each of those gets an upstream key of its own, and source
// tells the Transport what instances a key stands for. A plain service
// under the document's default policies is keyed by its own name, so every
// route to it shares one balancer and one breaker, as a mesh's cluster
// does.

// discoveryWait bounds how long a request waits for a service's first
// instance list.
const discoveryWait = 3 * time.Second

// target is what an upstream key stands for.
type target struct {
	service string              // "" for fixed URLs
	subset  map[string]string   // nil: every instance
	fixed   *discovery.Snapshot // fixed URLs
}

// source resolves upstream keys for the outbound Transports. Keys are
// only ever added: a request started under an older document still finds
// its key after a reload.
type source struct {
	cache *discovery.Cache // nil: no control plane; services are unavailable

	mu   sync.Mutex // serializes add
	keys atomic.Pointer[map[string]*target]
}

func newSource(cache *discovery.Cache) *source {
	s := &source{cache: cache}
	s.keys.Store(&map[string]*target{})
	return s
}

// add makes keys known; existing keys keep their target (a key is a hash
// of what it stands for, so the same key always means the same thing).
func (s *source) add(keys map[string]*target) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := *s.keys.Load()
	next := maps.Clone(cur)
	for k, t := range keys {
		if _, ok := cur[k]; !ok {
			next[k] = t
		}
	}
	s.keys.Store(&next)
}

// Wait implements balance.Source.
func (s *source) Wait(ctx context.Context, key string) (*discovery.Snapshot, error) {
	t := (*s.keys.Load())[key]
	if t != nil && t.fixed != nil {
		return t.fixed, nil
	}
	service := key
	if t != nil {
		service = t.service
	}
	if s.cache == nil {
		return nil, meridian.Errorf(meridian.CodeUnavailable,
			"service %q: this gateway runs without a control plane, so it can only reach upstreams given by urls", service)
	}
	// The first request to a service waits for its instance list, but
	// not for ever: with the control plane unreachable it would hang
	// every client. After discoveryWait it is a 503 naming the cause.
	wctx, cancel := context.WithTimeout(ctx, discoveryWait)
	defer cancel()
	snap, err := s.cache.Wait(wctx, service)
	if err != nil && ctx.Err() == nil {
		// Another try would wait for the same list: not retried.
		return nil, fmt.Errorf("%w (%w)", err, resilience.ErrRejected)
	}
	if err != nil || t == nil || len(t.subset) == 0 {
		return snap, err
	}
	return snap.Subset(key, t.keep), nil
}

func (t *target) keep(i *meridian.Instance) bool {
	for k, v := range t.subset {
		var have string
		switch k {
		case "version":
			have = i.Version
		case "zone":
			have = i.Zone
		default:
			have = i.Metadata[k]
		}
		if have != v {
			return false
		}
	}
	return true
}

// upstreamKey is the key of u for a route: the service's own name when
// it is a plain service under the default policies (scope ""), else a DNS
// label made of the service name and a hash of everything that sets the
// key apart.
func upstreamKey(u *Upstream, scope string) string {
	if len(u.URLs) == 0 && len(u.Subset) == 0 && scope == "" {
		return u.Service
	}
	var b strings.Builder
	b.WriteString(scope)
	b.WriteByte(0)
	b.WriteString(u.Service)
	for _, k := range sortedKeys(u.Subset) {
		fmt.Fprintf(&b, "\x00%s=%s", k, u.Subset[k])
	}
	urls := slices.Clone(u.URLs)
	slices.Sort(urls)
	for _, raw := range urls {
		b.WriteByte(0)
		b.WriteString(raw)
	}
	base := u.Service
	if base == "" {
		base = "urls"
	}
	const hashLen = 8 + 1 // "-" and 8 hex digits
	if len(base) > 63-hashLen {
		base = strings.TrimRight(base[:63-hashLen], "-")
	}
	return fmt.Sprintf("%s-%08x", base, uint32(xxhash.Sum64String(b.String())))
}

// targetOf is what key stands for; nil for a plain service.
func targetOf(key string, u *Upstream) *target {
	if key == u.Service {
		return nil
	}
	if len(u.URLs) == 0 {
		return &target{service: u.Service, subset: u.Subset}
	}
	inst := make([]*meridian.Instance, 0, len(u.URLs))
	for _, raw := range u.URLs {
		pu, _ := parseStaticURL(raw) // validated
		port, _ := strconv.Atoi(pu.Port())
		if port == 0 {
			port = 80
			if pu.Scheme == "https" {
				port = 443
			}
		}
		inst = append(inst, &meridian.Instance{
			Service:  key,
			ID:       net.JoinHostPort(pu.Hostname(), strconv.Itoa(port)),
			Address:  pu.Hostname(),
			Port:     port,
			Protocol: meridian.ProtocolHTTP,
			Weight:   1,
			Health:   meridian.Health{Status: meridian.StatusPassing},
		})
	}
	slices.SortFunc(inst, func(a, b *meridian.Instance) int { return strings.Compare(a.ID, b.ID) })
	return &target{fixed: discovery.Fixed(key, inst)}
}

// overH2C reports whether the gateway speaks HTTP/2 without TLS to u.
func (u *Upstream) overH2C() bool { return u.Protocol == "h2c" || u.Protocol == "grpc" }

// schemeOf is the scheme the gateway speaks to u: https for https URLs.
func schemeOf(u *Upstream) string {
	if len(u.URLs) > 0 && strings.HasPrefix(u.URLs[0], "https:") {
		return "https"
	}
	return "http"
}
