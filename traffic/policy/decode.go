package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/internal/jsonbody"
	"github.com/meridian-platform/meridian/traffic/ratelimit"
	"github.com/meridian-platform/meridian/traffic/resilience/breaker"
	"github.com/meridian-platform/meridian/traffic/resilience/bulkhead"
	"github.com/meridian-platform/meridian/traffic/resilience/outlier"
	"github.com/meridian-platform/meridian/traffic/resilience/retry"
)

// UnmarshalJSON decodes a spec strictly (unknown fields are errors at
// every level) and names the full path of what it rejects. It decodes
// only: Validate checks the values. encoding/json names neither map keys
// nor the path of an unknown field, so each level is decoded on its own
// and its errors are prefixed with where it sits.
func (s *Spec) UnmarshalJSON(data []byte) error {
	if bytes.Equal(bytes.TrimSpace(data), []byte("null")) {
		*s = Spec{}
		return nil
	}
	var top struct {
		Policies json.RawMessage            `json:"policies"`
		Default  json.RawMessage            `json:"default"`
		Targets  map[string]json.RawMessage `json:"targets"`
	}
	if err := decode(data, &top, ""); err != nil {
		return err
	}
	var out Spec
	if len(top.Policies) > 0 {
		var p struct {
			Timeouts         map[string]json.RawMessage `json:"timeouts"`
			Retries          map[string]json.RawMessage `json:"retries"`
			CircuitBreakers  map[string]json.RawMessage `json:"circuit_breakers"`
			Throttles        map[string]json.RawMessage `json:"throttles"`
			Bulkheads        map[string]json.RawMessage `json:"bulkheads"`
			RateLimits       map[string]json.RawMessage `json:"rate_limits"`
			Balancers        map[string]json.RawMessage `json:"balancers"`
			OutlierDetectors map[string]json.RawMessage `json:"outlier_detectors"`
		}
		if err := decode(top.Policies, &p, "policies"); err != nil {
			return err
		}
		var err error
		o := &out.Policies
		if o.Timeouts, err = decodeEach[meridian.Duration](p.Timeouts, "policies.timeouts"); err != nil {
			return err
		}
		if o.Retries, err = decodeEachWith(p.Retries, "policies.retries", decodeRetry); err != nil {
			return err
		}
		if o.CircuitBreakers, err = decodeEach[breaker.Config](p.CircuitBreakers, "policies.circuit_breakers"); err != nil {
			return err
		}
		if o.Throttles, err = decodeEach[breaker.ThrottleConfig](p.Throttles, "policies.throttles"); err != nil {
			return err
		}
		if o.Bulkheads, err = decodeEach[bulkhead.Config](p.Bulkheads, "policies.bulkheads"); err != nil {
			return err
		}
		if o.RateLimits, err = decodeEach[ratelimit.Limit](p.RateLimits, "policies.rate_limits"); err != nil {
			return err
		}
		if o.Balancers, err = decodeEachWith(p.Balancers, "policies.balancers", decodeBalancer); err != nil {
			return err
		}
		if o.OutlierDetectors, err = decodeEach[outlier.Config](p.OutlierDetectors, "policies.outlier_detectors"); err != nil {
			return err
		}
	}
	if len(top.Default) > 0 {
		if err := decode(top.Default, &out.Default, "default"); err != nil {
			return err
		}
	}
	var err error
	if out.Targets, err = decodeEach[Target](top.Targets, "targets"); err != nil {
		return err
	}
	*s = out
	return nil
}

// decodeEach decodes every value of raws into a T, naming path.<key> in
// errors; in key order, so the first error reported is stable.
func decodeEach[T any](raws map[string]json.RawMessage, path string) (map[string]T, error) {
	return decodeEachWith(raws, path, func(data []byte, v *T, path string) error { return decode(data, v, path) })
}

func decodeEachWith[T any](raws map[string]json.RawMessage, path string, dec func([]byte, *T, string) error) (map[string]T, error) {
	if raws == nil {
		return nil, nil
	}
	out := make(map[string]T, len(raws))
	for _, k := range sortedKeys(raws) {
		var v T
		if err := dec(raws[k], &v, path+"."+k); err != nil {
			return nil, err
		}
		out[k] = v
	}
	return out, nil
}

// decodeRetry decodes a Retry, its budget on its own so that errors in it
// carry their path.
func decodeRetry(data []byte, r *Retry, path string) error {
	var raw struct {
		retry.Policy
		Budget json.RawMessage `json:"budget"`
	}
	if err := decodeEmbedded(data, &raw, path, "Policy"); err != nil {
		return err
	}
	r.Policy = raw.Policy
	if len(raw.Budget) > 0 {
		return decode(raw.Budget, &r.Budget, path+".budget")
	}
	return nil
}

// decodeBalancer decodes a Balancer, its zone on its own.
func decodeBalancer(data []byte, b *Balancer, path string) error {
	type plain Balancer
	var raw struct {
		plain
		Zone json.RawMessage `json:"zone"`
	}
	if err := decodeEmbedded(data, &raw, path, "plain"); err != nil {
		return err
	}
	*b = Balancer(raw.plain)
	if len(raw.Zone) > 0 && string(raw.Zone) != "null" {
		b.Zone = new(Zone)
		return decode(raw.Zone, b.Zone, path+".zone")
	}
	return nil
}

// decodeEmbedded is decode into a struct that embeds the struct named
// embedded: encoding/json names that struct's fields after it in type
// errors, which the path must not show.
func decodeEmbedded(data []byte, v any, path, embedded string) error {
	err := decode(data, v, path)
	var me *meridian.Error
	if errors.As(err, &me) {
		me.Field = strings.Replace(me.Field, path+"."+embedded+".", path+".", 1)
	}
	return err
}

// decode is jsonbody.Unmarshal (strict, errors naming the field) with the
// field made absolute under path.
func decode(data []byte, v any, path string) error {
	err := jsonbody.Unmarshal(data, v)
	if err == nil || path == "" {
		return err
	}
	var me *meridian.Error
	if !errors.As(err, &me) {
		return err
	}
	c := *me
	switch c.Field {
	case "", "body":
		c.Field = path
	default:
		c.Field = path + "." + c.Field
	}
	return &c
}
