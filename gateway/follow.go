package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/internal/backoff"
)

// KeyPrefix is where gateways' routing documents live in the config
// center: Key(name) for the gateway started with --name.
const KeyPrefix = "meridian/gateway/"

// Key is the config key of the routing document of the gateway name.
func Key(name string) string { return KeyPrefix + name + "/routes" }

// ConfigWatcher streams config changes; *client.Client satisfies it.
type ConfigWatcher interface {
	WatchConfig(ctx context.Context, prefix string, after uint64, fn func(meridian.ConfigEvent) error) error
}

// Follow keeps the gateway on the latest valid revision of key until ctx
// ends. Each revision is parsed and applied; one that does not validate is
// logged and counted, and the document in force stays. Each applied
// revision is written to stateFile (when not empty) before Follow moves
// on, so a gateway restarted during a control-plane outage serves the last
// good document (LoadState). A deleted key is logged and changes nothing:
// a gateway never drops its routes because a document disappeared.
//
// When the stream breaks, Follow reconnects with capped exponential
// backoff and full jitter; the last good document keeps serving.
func (g *Gateway) Follow(ctx context.Context, w ConfigWatcher, key, stateFile string) error {
	var bo backoff.Backoff
	for {
		err := w.WatchConfig(ctx, key, 0, func(ev meridian.ConfigEvent) error {
			bo.Reset()
			if ev.Entry.Key != key { // the watch is by prefix
				return nil
			}
			switch ev.Type {
			case meridian.EventPut:
				g.offer(ev.Entry, stateFile)
			case meridian.EventDelete:
				g.log.Warn("routing document deleted; serving the last one applied", "key", key, "revision", g.Revision())
			}
			return nil
		})
		if ctx.Err() != nil {
			return nil
		}
		g.log.Warn("config watch broke; serving the last document applied", "key", key, "err", err)
		if !backoff.Sleep(ctx, bo.Next()) {
			return nil
		}
	}
}

// offer applies e when it is newer than the document in force.
func (g *Gateway) offer(e meridian.ConfigEntry, stateFile string) {
	if e.Revision != 0 && e.Revision <= g.Revision() {
		return
	}
	cfg, err := Parse(e.Format, []byte(e.Value))
	if err == nil {
		err = g.Apply(cfg, e.Revision)
	} else {
		g.metrics.reloads.WithLabelValues("invalid").Inc()
	}
	if err != nil {
		g.log.Error("routing document refused; serving the last one applied",
			"key", e.Key, "revision", e.Revision, "in_force", g.Revision(), "err", err)
		return
	}
	if stateFile != "" {
		if err := SaveState(stateFile, e); err != nil {
			g.log.Error("could not keep the routing document on disk", "file", stateFile, "err", err)
		}
	}
}

// SaveState writes e to path atomically (see writeFileAtomic).
func SaveState(path string, e meridian.ConfigEntry) error {
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, b)
}

// writeFileAtomic writes data to path through a temporary file renamed
// over it, so a crash leaves the old content or the new, never half of
// one.
func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".state-*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// LoadState reads the document SaveState kept; (nil, nil) when there is
// none.
func LoadState(path string) (*meridian.ConfigEntry, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var e meridian.ConfigEntry
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &e, nil
}

// Restore applies the document kept in stateFile, if any: what a gateway
// does at start, before the control plane answers. It returns the
// revision applied (0: none was kept).
func (g *Gateway) Restore(stateFile string) (uint64, error) {
	e, err := LoadState(stateFile)
	if err != nil || e == nil {
		return 0, err
	}
	cfg, err := Parse(e.Format, []byte(e.Value))
	if err != nil {
		return 0, fmt.Errorf("%s: revision %d: %w", stateFile, e.Revision, err)
	}
	if err := g.Apply(cfg, e.Revision); err != nil {
		return 0, err
	}
	return e.Revision, nil
}
