// Package redis is the distributed ratelimit engine: the GCRA of package
// ratelimit run in one Lua script on a Redis shared by every process that
// enforces the limit, so the limit holds across all of them.
//
// Each Allow is one round trip: EVALSHA of the script (go-redis' Script
// sends the cached SHA and falls back to EVAL, which caches it again, when
// Redis answers NOSCRIPT after a restart or SCRIPT FLUSH). The script reads
// the clock with Redis' TIME, so the callers' clocks may disagree as much as
// they like; it stores one value per key, the key's TAT in microseconds,
// with an expiry at that TAT, so an idle key costs Redis nothing. It touches
// one key, so it runs unchanged on Redis Cluster.
//
// Redis failing is part of the contract. Each call has a short timeout
// (Config.Timeout, 50ms by default); when Redis does not answer in it, or
// refuses the connection, or answers an error, the declared FailPolicy
// decides, and the Decision's StoreErr (and, for FailClosed, the returned
// error) says so. go-redis only honours context deadlines on the socket
// when its ContextTimeoutEnabled option is set, so New requires it: without
// it a stalled Redis would hold callers for the client's ReadTimeout
// (seconds), not the limiter's Timeout.
//
// Import it under another name, as its name is go-redis' too:
//
//	import redislimit "github.com/meridian-platform/meridian/traffic/ratelimit/redis"
package redis

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/traffic/ratelimit"
)

//go:embed gcra.lua
var gcraLua string

// script is shared by every Limiter: its SHA is a function of its source.
var script = goredis.NewScript(gcraLua)

// Defaults for Config's zero fields.
const (
	DefaultPrefix  = "meridian:ratelimit:"
	DefaultTimeout = 50 * time.Millisecond
)

// Config configures a Limiter.
type Config struct {
	// Limit applies to every key. Required.
	Limit ratelimit.Limit `json:"limit"`
	// Prefix is put before every key in Redis. Limiters that share a prefix
	// share keys, and so limits: give each policy its own. A key's state is
	// a time, not a count, so changing a policy's Limit in place carries its
	// keys over sensibly. Default DefaultPrefix.
	Prefix string `json:"prefix,omitempty"`
	// Timeout bounds each Allow's round trip to Redis, after which the
	// FailPolicy decides. Default 50ms; at most 10s.
	Timeout meridian.Duration `json:"timeout,omitempty"`
	// FailPolicy is what Allow does when Redis does not decide in time:
	// ratelimit.FailOpen or ratelimit.FailClosed. Required; there is no
	// default, because the right answer depends on what the limit guards.
	FailPolicy ratelimit.FailPolicy `json:"fail_policy"`
	// Observe, if set, is called after every decision with the time the
	// call took, for metrics: count d.Allowed, d.StoreErr != nil (a decision
	// by the FailPolicy) and the latency. It runs on the caller's goroutine
	// and must not block. It is not called when the caller's own ctx ended
	// first, since nothing was decided.
	Observe func(d ratelimit.Decision, took time.Duration) `json:"-"`
}

// Normalize fills defaults into c and checks it; errors name the field
// ("limit.rate", "timeout", "fail_policy").
func (c *Config) Normalize() error {
	if err := c.Limit.Normalize(); err != nil {
		var me *meridian.Error
		if errors.As(err, &me) {
			me.Field = "limit." + me.Field
		}
		return err
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Timeout == 0 {
		c.Timeout = meridian.Duration(DefaultTimeout)
	}
	if c.Timeout.D() < time.Millisecond || c.Timeout.D() > 10*time.Second {
		return meridian.FieldError("timeout", "%s is out of range 1ms-10s", c.Timeout)
	}
	return c.FailPolicy.Validate("fail_policy")
}

// Limiter is the Redis engine. It is safe for concurrent use.
type Limiter struct {
	client  goredis.Scripter
	limit   ratelimit.Limit
	prefix  string
	timeout time.Duration
	policy  ratelimit.FailPolicy
	observe func(ratelimit.Decision, time.Duration)
	// The script's fixed arguments, boxed once rather than on every call.
	intervalUS, burst any
}

var _ ratelimit.Limiter = (*Limiter)(nil)

// New returns a Limiter deciding on client, which the caller owns and
// closes. A *goredis.Client, *goredis.ClusterClient or *goredis.Ring must
// have ContextTimeoutEnabled set; for another Scripter that is the
// caller's to ensure.
func New(client goredis.Scripter, cfg Config) (*Limiter, error) {
	if err := cfg.Normalize(); err != nil {
		return nil, err
	}
	if !honoursDeadlines(client) {
		return nil, &meridian.Error{Code: meridian.CodeInvalid, Field: "client",
			Message: "go-redis client needs ContextTimeoutEnabled, or a stalled Redis holds callers past the limiter's timeout"}
	}
	return &Limiter{
		client:     client,
		limit:      cfg.Limit,
		prefix:     cfg.Prefix,
		timeout:    cfg.Timeout.D(),
		policy:     cfg.FailPolicy,
		observe:    cfg.Observe,
		intervalUS: cfg.Limit.Interval().Microseconds(),
		burst:      cfg.Limit.Burst,
	}, nil
}

func honoursDeadlines(c goredis.Scripter) bool {
	switch c := c.(type) {
	case *goredis.Client:
		return c.Options().ContextTimeoutEnabled
	case *goredis.ClusterClient:
		return c.Options().ContextTimeoutEnabled
	case *goredis.Ring:
		return c.Options().ContextTimeoutEnabled
	}
	return true
}

// Allow decides a request of n units under key, in one round trip to Redis
// bounded by the configured Timeout. See ratelimit.Limiter for the
// contract; when Redis does not decide, the FailPolicy does and StoreErr
// holds why. If ctx ends first, Allow returns its error, denied, with no
// StoreErr: the caller gave up, the store did not fail.
func (l *Limiter) Allow(ctx context.Context, key string, n int) (ratelimit.Decision, error) {
	if err := l.limit.CheckCost(n); err != nil {
		return ratelimit.Decision{Limit: l.limit}, err
	}
	start := time.Now()
	callCtx, cancel := context.WithTimeout(ctx, l.timeout)
	reply, err := script.Run(callCtx, l.client, []string{l.prefix + key}, l.intervalUS, l.burst, n).Int64Slice()
	cancel()
	if err == nil && len(reply) != 4 {
		err = fmt.Errorf("script answered %v, want 4 integers", reply)
	}
	if err != nil && ctx.Err() != nil {
		return ratelimit.Decision{Limit: l.limit}, ctx.Err()
	}
	var d ratelimit.Decision
	if err != nil {
		d, err = l.policy.Apply(l.limit, fmt.Errorf("redis rate limiter: %w", err))
	} else {
		d = ratelimit.Decision{
			Allowed:    reply[0] == 1,
			Limit:      l.limit,
			Remaining:  int(reply[1]),
			RetryAfter: time.Duration(reply[2]) * time.Microsecond,
			ResetAfter: time.Duration(reply[3]) * time.Microsecond,
		}
	}
	if l.observe != nil {
		l.observe(d, time.Since(start))
	}
	return d, err
}
