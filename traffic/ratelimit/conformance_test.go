package ratelimit_test

import (
	"testing"

	"github.com/meridian-platform/meridian/traffic/ratelimit"
	"github.com/meridian-platform/meridian/traffic/ratelimit/ratelimittest"
)

func TestLocalConformance(t *testing.T) {
	ratelimittest.Run(t, func(t *testing.T, lim ratelimit.Limit) ratelimit.Limiter {
		l, err := ratelimit.NewLocal(ratelimit.LocalConfig{Limit: lim})
		if err != nil {
			t.Fatal(err)
		}
		return l
	})
}
