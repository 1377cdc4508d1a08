package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/url"
	"os"
	"slices"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/traffic/discovery"
)

// The routing document on disk lets a gateway start during a control-plane
// outage; the instances of the services its routes use, kept beside it,
// let those routes serve too, instead of answering 503 until discovery
// answers. They are a seed (discovery.Cache.Seed): the first sync of each
// service's watch replaces them.

// keepInterval is how often KeepInstances looks for changed instance lists.
const keepInterval = 2 * time.Second

// KeepInstances writes the instances of the services the routes in force
// use to file whenever they change (looked at every 2 s), until ctx ends.
// Only synced views are written, never a seed. Options.Discovery must be
// set.
func (g *Gateway) KeepInstances(ctx context.Context, file string) error {
	if g.opts.Discovery == nil {
		return errors.New("gateway: KeepInstances needs Options.Discovery")
	}
	written := map[string]uint64{}
	t := time.NewTicker(keepInterval)
	defer t.Stop()
	for {
		kept := map[string][]*meridian.Instance{}
		indexes := map[string]uint64{}
		for _, svc := range g.cur.Load().services {
			if s := g.opts.Discovery.Snapshot(svc); s != nil && s.Index > 0 {
				kept[svc] = s.Instances
				indexes[svc] = s.Index
			}
		}
		if len(kept) > 0 && !maps.Equal(indexes, written) {
			b, err := json.Marshal(kept)
			if err == nil {
				err = writeFileAtomic(file, b)
			}
			if err != nil {
				g.log.Error("could not keep the instances on disk", "file", file, "err", err)
			} else {
				written = indexes
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// SeedInstances gives cache the instances KeepInstances kept in file, if
// any, and returns how many services it seeded.
func SeedInstances(cache *discovery.Cache, file string) (int, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var kept map[string][]*meridian.Instance
	if err := json.Unmarshal(b, &kept); err != nil {
		return 0, fmt.Errorf("%s: %w", file, err)
	}
	for svc, in := range kept {
		if err := cache.Seed(svc, in); err != nil {
			return 0, fmt.Errorf("%s: %w", file, err)
		}
	}
	return len(kept), nil
}

// usedServices are the registry services cfg's routes send to: upstreams,
// split backends, mirrors, and aggregation branches whose host is a
// service name.
func usedServices(cfg *Config) []string {
	set := map[string]bool{}
	add := func(u *Upstream) {
		if u != nil && u.Service != "" {
			set[u.Service] = true
		}
	}
	for i := range cfg.Routes {
		r := &cfg.Routes[i]
		add(r.Upstream)
		for j := range r.Split {
			add(&r.Split[j].Upstream)
		}
		if r.Mirror != nil {
			add(&r.Mirror.Upstream)
		}
		if r.Aggregate != nil {
			for _, b := range r.Aggregate.Branches {
				if u, err := url.Parse(b.URL); err == nil && meridian.ValidateServiceName("", u.Host) == nil {
					set[u.Host] = true
				}
			}
		}
	}
	return slices.Sorted(maps.Keys(set))
}
