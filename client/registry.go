package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"time"

	"github.com/meridian-platform/meridian"
)

// instancePath is /v1/services/{service}/instances/{id}, after checking
// both so that a bad name fails here, naming the field, rather than as a
// confusing 404.
func instancePath(service, id string) (string, error) {
	if err := meridian.ValidateServiceName("service", service); err != nil {
		return "", err
	}
	if err := meridian.ValidateInstanceID("id", id); err != nil {
		return "", err
	}
	return "/v1/services/" + url.PathEscape(service) + "/instances/" + url.PathEscape(id), nil
}

// registration is the body of a register call: the fields a caller sets,
// and none of those the registry owns (health, registered_at, revision),
// since the server rejects fields it does not expect.
type registration struct {
	Service  string              `json:"service"`
	ID       string              `json:"id"`
	Address  string              `json:"address"`
	Port     int                 `json:"port"`
	Protocol meridian.Protocol   `json:"protocol,omitempty"`
	Version  string              `json:"version,omitempty"`
	Zone     string              `json:"zone,omitempty"`
	Weight   int                 `json:"weight,omitempty"`
	Tags     []string            `json:"tags,omitempty"`
	Metadata map[string]string   `json:"metadata,omitempty"`
	TTL      meridian.Duration   `json:"ttl,omitempty"`
	Check    *meridian.CheckSpec `json:"check,omitempty"`
}

// Register registers inst (or replaces its registration) and returns the
// instance as stored, with defaults filled in and its health and revision.
// inst.Service and inst.ID name it; the other registry-owned fields
// (Health, RegisteredAt, Revision) are not sent.
func (c *Client) Register(ctx context.Context, inst *meridian.Instance) (*meridian.Instance, error) {
	path, err := instancePath(inst.Service, inst.ID)
	if err != nil {
		return nil, err
	}
	body := registration{
		Service: inst.Service, ID: inst.ID, Address: inst.Address, Port: inst.Port,
		Protocol: inst.Protocol, Version: inst.Version, Zone: inst.Zone, Weight: inst.Weight,
		Tags: inst.Tags, Metadata: inst.Metadata, TTL: inst.TTL, Check: inst.Check,
	}
	var out meridian.Instance
	if _, err := c.do(ctx, request{method: http.MethodPut, path: path, body: body}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Deregister removes an instance. An unknown instance is CodeNotFound.
func (c *Client) Deregister(ctx context.Context, service, id string) error {
	path, err := instancePath(service, id)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, request{method: http.MethodDelete, path: path}, nil)
	return err
}

// Heartbeat renews an instance's lease. CodeNotFound means the instance is
// not registered (its lease expired, or it never was): register it again.
func (c *Client) Heartbeat(ctx context.Context, service, id string) error {
	path, err := instancePath(service, id)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, request{method: http.MethodPut, path: path + "/heartbeat"}, nil)
	return err
}

// Services lists the service catalogue and the index it reflects.
func (c *Client) Services(ctx context.Context) ([]meridian.ServiceSummary, uint64, error) {
	var out struct {
		Index    uint64                    `json:"index"`
		Services []meridian.ServiceSummary `json:"services"`
	}
	index, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/services"}, &out)
	if err != nil {
		return nil, 0, err
	}
	return out.Services, pickIndex(index, out.Index), nil
}

// InstancesQuery refines an Instances call.
type InstancesQuery struct {
	// Healthy lists only the instances discovery serves (passing or
	// warning); otherwise critical ones are listed too, with their reason.
	Healthy bool
	// Index, when not zero, makes the call block until the service changes
	// after this index, or until Wait passes (then the answer carries the
	// same index).
	Index uint64
	// Wait bounds a blocking call; zero is the server's default, at most 5m.
	Wait time.Duration
	// Stale lets the serving replica answer without first catching up with
	// writes made on other replicas.
	Stale bool
}

// Instances lists a service's instances and the index the answer reflects.
// An unknown service has no instances (the list is empty, not an error).
func (c *Client) Instances(ctx context.Context, service string, q InstancesQuery) ([]meridian.Instance, uint64, error) {
	if err := meridian.ValidateServiceName("service", service); err != nil {
		return nil, 0, err
	}
	query := url.Values{}
	if q.Healthy {
		query.Set("healthy", "true")
	}
	if q.Index > 0 {
		query.Set("index", u64(q.Index))
	}
	if q.Wait > 0 {
		query.Set("wait", q.Wait.String())
	}
	if q.Stale {
		query.Set("stale", "true")
	}
	var out struct {
		Index     uint64              `json:"index"`
		Instances []meridian.Instance `json:"instances"`
	}
	path := "/v1/services/" + url.PathEscape(service) + "/instances"
	index, err := c.do(ctx, request{method: http.MethodGet, path: path, query: query}, &out)
	if err != nil {
		return nil, 0, err
	}
	return out.Instances, pickIndex(index, out.Index), nil
}

// Instance returns one instance; CodeNotFound if it is not registered.
func (c *Client) Instance(ctx context.Context, service, id string) (*meridian.Instance, error) {
	path, err := instancePath(service, id)
	if err != nil {
		return nil, err
	}
	var out meridian.Instance
	if _, err := c.do(ctx, request{method: http.MethodGet, path: path}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// WatchRegistry streams the registry's changes (of one service, or of all
// when service is "") from GET /v1/registry/watch and calls fn with each,
// in order, from the calling goroutine.
//
// With after = 0 the stream starts with every current instance as a put
// event, then an EventSync event; with after = N it starts with every
// change after index N. Either way an EventSync event (only Type and Index
// set) marks that the backlog has been delivered, and live changes follow.
//
// It blocks until ctx ends (returning ctx.Err()), fn returns an error
// (returning that error unchanged) or the stream breaks (returning a
// *meridian.Error, CodeUnavailable when the connection was lost or the
// server ended the stream). To resume, call again with the last Index fn
// saw: no change is lost or repeated.
func (c *Client) WatchRegistry(ctx context.Context, service string, after uint64, fn func(meridian.InstanceEvent) error) error {
	query := url.Values{}
	if service != "" {
		if err := meridian.ValidateServiceName("service", service); err != nil {
			return err
		}
		query.Set("service", service)
	}
	return c.watch(ctx, "/v1/registry/watch", query, after, func(ev sseEvent, index uint64) error {
		var ie meridian.InstanceEvent
		if err := c.decodeEvent(ev, &ie); err != nil {
			return err
		}
		if ie.Type == "" {
			ie.Type = meridian.EventType(ev.name)
		}
		if ie.Index == 0 {
			ie.Index = index
		}
		if !knownEvent(ie.Type) {
			return nil // a kind of event this client does not know: skip it
		}
		if err := fn(ie); err != nil {
			return errCallback{err}
		}
		return nil
	})
}

// decodeEvent decodes an event's JSON data into v. Only sync events may
// come without data.
func (c *Client) decodeEvent(ev sseEvent, v any) error {
	if len(ev.data) == 0 {
		if ev.name == string(meridian.EventSync) {
			return nil
		}
		return c.badEvent(ev, "it has no data")
	}
	if err := json.Unmarshal(ev.data, v); err != nil {
		return c.badEvent(ev, err.Error())
	}
	return nil
}

func (c *Client) badEvent(ev sseEvent, why string) error {
	return meridian.Errorf(meridian.CodeInternal, "bad %q event (id %s) from %s: %s", ev.name, ev.id, c.addr, why)
}

func knownEvent(t meridian.EventType) bool {
	return t == meridian.EventPut || t == meridian.EventDelete || t == meridian.EventSync
}

// pickIndex prefers the index header and falls back on the body's.
func pickIndex(header, body uint64) uint64 {
	if header != 0 {
		return header
	}
	return body
}
