package client

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"github.com/meridian-platform/meridian"
)

// keyPath checks a config key and escapes it for the URL: its "/"s stay
// separators and each segment is path-escaped.
func keyPath(key string) (string, error) {
	if err := meridian.ValidateConfigKey("key", key); err != nil {
		return "", err
	}
	segs := strings.Split(key, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/"), nil
}

// GetConfig returns a key's latest entry (revision 0) or the given revision
// of it. CodeNotFound when the key, or that revision of it, does not exist.
func (c *Client) GetConfig(ctx context.Context, key string, revision uint64) (*meridian.ConfigEntry, error) {
	kp, err := keyPath(key)
	if err != nil {
		return nil, err
	}
	query := url.Values{}
	if revision > 0 {
		query.Set("revision", u64(revision))
	}
	var out meridian.ConfigEntry
	if _, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/config/keys/" + kp, query: query}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PutConfigRequest is the body of a config write.
type PutConfigRequest struct {
	Value string `json:"value"`
	// Format is json, yaml or text (the default); json and yaml values must
	// parse.
	Format  meridian.ConfigFormat `json:"format,omitempty"`
	Message string                `json:"message,omitempty"`
	// ExpectRevision, when set, makes the write a compare-and-set: 0 means
	// the key must not exist, N that its latest revision is N. A lost race
	// is CodeConflict with the current revision in Error.Current.
	ExpectRevision *uint64 `json:"expect_revision,omitempty"`
}

// PutConfig writes a new revision of key and returns it.
func (c *Client) PutConfig(ctx context.Context, key string, req PutConfigRequest) (*meridian.ConfigEntry, error) {
	kp, err := keyPath(key)
	if err != nil {
		return nil, err
	}
	var out meridian.ConfigEntry
	if _, err := c.do(ctx, request{method: http.MethodPut, path: "/v1/config/keys/" + kp, body: req}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteConfig deletes key, keeping its history. A non-nil expectRevision
// makes it a compare-and-delete (CodeConflict when the latest revision is
// another).
func (c *Client) DeleteConfig(ctx context.Context, key string, expectRevision *uint64) error {
	kp, err := keyPath(key)
	if err != nil {
		return err
	}
	query := url.Values{}
	if expectRevision != nil {
		query.Set("expect_revision", u64(*expectRevision))
	}
	_, err = c.do(ctx, request{method: http.MethodDelete, path: "/v1/config/keys/" + kp, query: query}, nil)
	return err
}

// ListConfig returns the live keys under prefix ("" for all) and the index
// the answer reflects.
func (c *Client) ListConfig(ctx context.Context, prefix string) ([]meridian.ConfigEntry, uint64, error) {
	if err := meridian.ValidateConfigPrefix("prefix", prefix); err != nil {
		return nil, 0, err
	}
	query := url.Values{}
	if prefix != "" {
		query.Set("prefix", prefix)
	}
	var out struct {
		Index   uint64                 `json:"index"`
		Entries []meridian.ConfigEntry `json:"entries"`
	}
	index, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/config/keys", query: query}, &out)
	if err != nil {
		return nil, 0, err
	}
	return out.Entries, pickIndex(index, out.Index), nil
}

// ConfigHistory returns every kept revision of key, oldest first, deletes
// included.
func (c *Client) ConfigHistory(ctx context.Context, key string) ([]meridian.ConfigEntry, error) {
	kp, err := keyPath(key)
	if err != nil {
		return nil, err
	}
	var out struct {
		Entries []meridian.ConfigEntry `json:"entries"`
	}
	if _, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/config/history/" + kp}, &out); err != nil {
		return nil, err
	}
	return out.Entries, nil
}

// DiffConfig returns the unified diff of key's value from revision `from`
// to revision `to` (0 = the latest).
func (c *Client) DiffConfig(ctx context.Context, key string, from, to uint64) (string, error) {
	kp, err := keyPath(key)
	if err != nil {
		return "", err
	}
	query := url.Values{"from": {u64(from)}}
	if to > 0 {
		query.Set("to", u64(to))
	}
	var out struct {
		Diff string `json:"diff"`
	}
	if _, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/config/diff/" + kp, query: query}, &out); err != nil {
		return "", err
	}
	return out.Diff, nil
}

// RollbackConfig writes revision's value of key again, as a new revision,
// and returns that new revision.
func (c *Client) RollbackConfig(ctx context.Context, key string, revision uint64, message string) (*meridian.ConfigEntry, error) {
	kp, err := keyPath(key)
	if err != nil {
		return nil, err
	}
	body := struct {
		Revision uint64 `json:"revision"`
		Message  string `json:"message,omitempty"`
	}{revision, message}
	var out meridian.ConfigEntry
	if _, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/config/rollback/" + kp, body: body}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// WatchConfig streams the config changes under prefix ("" for all) from
// GET /v1/config/watch, as WatchRegistry does for the registry: after = 0
// starts with the live keys as put events, then EventSync; sync events
// carry only Type and Index.
func (c *Client) WatchConfig(ctx context.Context, prefix string, after uint64, fn func(meridian.ConfigEvent) error) error {
	if err := meridian.ValidateConfigPrefix("prefix", prefix); err != nil {
		return err
	}
	query := url.Values{}
	if prefix != "" {
		query.Set("prefix", prefix)
	}
	return c.watch(ctx, "/v1/config/watch", query, after, func(ev sseEvent, index uint64) error {
		var ce meridian.ConfigEvent
		if err := c.decodeEvent(ev, &ce); err != nil {
			return err
		}
		if ce.Type == "" {
			ce.Type = meridian.EventType(ev.name)
		}
		if ce.Index == 0 {
			ce.Index = index
		}
		if !knownEvent(ce.Type) {
			return nil
		}
		if err := fn(ce); err != nil {
			return errCallback{err}
		}
		return nil
	})
}
