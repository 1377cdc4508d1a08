package bushttp

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/bus"
)

// ServiceScheme is the URL scheme of a push target named by its service:
// "meridian://orders/events" is POST /events on a healthy instance of the
// registered service "orders", picked in turn for each delivery.
const ServiceScheme = "meridian"

// Defaults and bounds of a Subscription.
const (
	DefaultPushTimeout = 10 * time.Second
	MaxPushTimeout     = 5 * time.Minute
	MaxPushConcurrency = 256
)

// Subscription is a push subscription: the control plane reads Topic as
// the group Name and POSTs each event to URL, with the bus's retry,
// backoff and dead-letter rules. The target's answer decides: 2xx
// acknowledges; 408, 429, 5xx, a timeout or a connection error retries
// after a backoff (after Retry-After, when the answer has one, up to
// MaxBackOff); any other status dead-letters the event at once.
type Subscription struct {
	// Name names the subscription across the control plane, and is its
	// group on the topic: 1-64 letters, digits, '-' and '_', starting with
	// a letter. Required.
	Name string `json:"name"`
	// Topic is the topic it reads. Required.
	Topic string `json:"topic"`
	// URL receives the events: http(s)://host[:port]/path, or
	// meridian://SERVICE/path for a healthy instance of a registered
	// service (ServiceScheme). Required.
	URL string `json:"url"`
	// Service is the service the subscription belongs to. A service
	// token may only manage its own service's subscriptions, and those
	// deliver to its own service (meridian://SERVICE/…). Default: the host
	// of a meridian:// URL.
	Service string `json:"service,omitempty"`
	// Types, when not empty, delivers only events of these types; the
	// others are acknowledged without a POST.
	Types []string `json:"types,omitempty"`
	// Mode is how events are POSTed: Structured (default, as Dapr does) or
	// Binary.
	Mode Mode `json:"mode,omitempty"`
	// MaxDeliveries is how many times an event is POSTed before it is
	// dead-lettered. Default 5; -1 retries for ever.
	MaxDeliveries int `json:"max_deliveries,omitempty"`
	// BackOff lists the delays after attempt 1, 2, …, the last repeating;
	// without it the delay is exponential with full jitter between
	// MinBackOff and MaxBackOff (bus.RetryPolicy).
	BackOff []meridian.Duration `json:"backoff,omitempty"`
	// MinBackOff is the ceiling of the first delay. Default 1s.
	MinBackOff meridian.Duration `json:"min_backoff,omitempty"`
	// MaxBackOff caps the delays, and how long a Retry-After is honoured.
	// Default 1m.
	MaxBackOff meridian.Duration `json:"max_backoff,omitempty"`
	// Timeout bounds one POST. Default 10s, at most 5m.
	Timeout meridian.Duration `json:"timeout,omitempty"`
	// Concurrency is how many POSTs may be in flight at once. Default 1,
	// at most 256. Ignored when Ordered.
	Concurrency int `json:"concurrency,omitempty"`
	// Ordered delivers the events of one key (bus.OrderingKey) one at a
	// time, in order; different keys in parallel.
	Ordered bool `json:"ordered,omitempty"`
	// StartAt is where delivery starts. Default: the events published
	// after the subscription was created (the server records the
	// sequence).
	StartAt bus.StartAt `json:"start_at,omitzero"`
}

// SubscriptionInfo is a subscription as the control plane keeps and shows
// it.
type SubscriptionInfo struct {
	Subscription
	CreatedBy string    `json:"created_by,omitempty"`
	CreatedAt time.Time `json:"created_at,omitzero"`
	// Revision is the store revision of the subscription.
	Revision uint64 `json:"revision,omitempty"`
	// Owner is the control-plane replica that delivers it, as the
	// answering replica sees the cluster.
	Owner string `json:"owner,omitempty"`
	// Group is the subscription's group on the topic (pending and in-flight
	// counts), on GET of one subscription once delivery has started.
	Group *bus.GroupInfo `json:"group,omitempty"`
}

// SubscriptionList is the answer of GET /v1/subscriptions.
type SubscriptionList struct {
	Subscriptions []SubscriptionInfo `json:"subscriptions"`
}

// WithDefaults returns s with its zero fields set to their defaults.
func (s Subscription) WithDefaults() Subscription {
	if s.Mode == "" {
		s.Mode = Structured
	}
	if s.MaxDeliveries == 0 {
		s.MaxDeliveries = bus.DefaultMaxDeliveries
	}
	if s.MinBackOff == 0 {
		s.MinBackOff = meridian.Duration(bus.DefaultMinBackOff)
	}
	if s.MaxBackOff == 0 {
		s.MaxBackOff = meridian.Duration(bus.DefaultMaxBackOff)
	}
	if s.Timeout == 0 {
		s.Timeout = meridian.Duration(DefaultPushTimeout)
	}
	if s.Concurrency == 0 {
		s.Concurrency = 1
	}
	if s.Service == "" {
		if svc, ok := TargetService(s.URL); ok {
			s.Service = svc
		}
	}
	return s
}

// Validate checks s after WithDefaults, naming the field at fault.
func (s Subscription) Validate() error {
	if s.Name == "" {
		return meridian.FieldError("name", "is required")
	}
	if err := bus.ValidateGroup(s.Name); err != nil {
		return meridian.FieldError("name", "%s", err.(*meridian.Error).Message)
	}
	if s.Topic == "" {
		return meridian.FieldError("topic", "is required")
	}
	if err := bus.ValidateTopic(s.Topic); err != nil {
		return err
	}
	if err := validateURL(s.URL); err != nil {
		return err
	}
	if s.Service != "" {
		if err := meridian.ValidateServiceName("service", s.Service); err != nil {
			return err
		}
		if svc, ok := TargetService(s.URL); ok && svc != s.Service {
			return meridian.FieldError("url", "%q delivers to service %q, not to the subscription's service %q", s.URL, svc, s.Service)
		}
	}
	for i, t := range s.Types {
		if strings.TrimSpace(t) == "" {
			return meridian.FieldError(fmt.Sprintf("types[%d]", i), "is empty")
		}
	}
	switch {
	case s.Mode != Structured && s.Mode != Binary:
		return meridian.FieldError("mode", "%q is not %q or %q", s.Mode, Structured, Binary)
	case s.MaxDeliveries < -1:
		return meridian.FieldError("max_deliveries", "%d is out of range: at least 1, or -1 for ever", s.MaxDeliveries)
	case s.Timeout <= 0 || s.Timeout.D() > MaxPushTimeout:
		return meridian.FieldError("timeout", "%s is out of range: more than 0, at most %s", s.Timeout, MaxPushTimeout)
	case s.Concurrency < 1 || s.Concurrency > MaxPushConcurrency:
		return meridian.FieldError("concurrency", "%d is out of range 1-%d", s.Concurrency, MaxPushConcurrency)
	}
	o := s.SubscribeOptions()
	return o.WithDefaults(s.Topic).Validate()
}

// SubscribeOptions are the bus options a push subscription runs with.
// AckWait leaves room for a POST that takes the whole Timeout; the
// delivery heartbeats while it waits out a Retry-After. Each member
// fetches only as many events as it POSTs at once, so none waits in a
// buffer while its ack wait runs.
func (s Subscription) SubscribeOptions() bus.SubscribeOptions {
	backoff := make([]time.Duration, len(s.BackOff))
	for i, d := range s.BackOff {
		backoff[i] = d.D()
	}
	return bus.SubscribeOptions{
		Ordered:       s.Ordered,
		Concurrency:   s.Concurrency,
		MaxDeliveries: s.MaxDeliveries,
		RetryPolicy:   bus.RetryPolicy{BackOff: backoff, MinBackOff: s.MinBackOff.D(), MaxBackOff: s.MaxBackOff.D()},
		AckWait:       max(bus.DefaultAckWait, 2*s.Timeout.D()+5*time.Second),
		Batch:         s.Concurrency,
		StartAt:       s.StartAt,
	}
}

func validateURL(raw string) error {
	if raw == "" {
		return meridian.FieldError("url", "is required: http(s)://host[:port]/path or %s://SERVICE/path", ServiceScheme)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return meridian.FieldError("url", "%q is not a URL: %v", raw, err)
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return meridian.FieldError("url", "%q has no host", raw)
		}
	case ServiceScheme:
		if err := meridian.ValidateServiceName("url", u.Host); err != nil {
			return meridian.FieldError("url", "%q does not name a service after %s://: %s", raw, ServiceScheme, err.(*meridian.Error).Message)
		}
	default:
		return meridian.FieldError("url", "%q is not http(s)://host[:port]/path or %s://SERVICE/path", raw, ServiceScheme)
	}
	if u.User != nil || u.Fragment != "" {
		return meridian.FieldError("url", "%q may not have user info or a fragment", raw)
	}
	return nil
}

// TargetService returns the service a meridian:// URL names.
func TargetService(raw string) (string, bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != ServiceScheme || u.Host == "" {
		return "", false
	}
	return u.Host, true
}
