package redis

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/traffic/ratelimit"
	"github.com/meridian-platform/meridian/traffic/ratelimit/ratelimittest"
)

func TestConformance(t *testing.T) {
	c := sharedRedis(t)
	prefix := testPrefix(t, c)
	ratelimittest.Run(t, func(t *testing.T, lim ratelimit.Limit) ratelimit.Limiter {
		l, err := New(c, Config{Limit: lim, Prefix: prefix, FailPolicy: ratelimit.FailClosed})
		if err != nil {
			t.Fatal(err)
		}
		return l
	})
}

// The second process of TestLimitHoldsAcrossProcesses is this test binary
// again, told by these variables what to do.
const (
	childEnv       = "MERIDIAN_RATELIMIT_TEST_CHILD"
	childPrefixEnv = "MERIDIAN_RATELIMIT_TEST_PREFIX"
	childStartEnv  = "MERIDIAN_RATELIMIT_TEST_START"
)

var crossProcessLimit = ratelimit.Limit{Rate: 1, Period: meridian.Duration(time.Hour), Burst: 200}

// Two processes hammer one key at the same moment: between them they are
// allowed exactly the burst, not a request more.
func TestLimitHoldsAcrossProcesses(t *testing.T) {
	c := sharedRedis(t)
	if os.Getenv(childEnv) != "" {
		start, err := strconv.ParseInt(os.Getenv(childStartEnv), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		allowed, errs := hammer(t, c, os.Getenv(childPrefixEnv), time.Unix(0, start))
		fmt.Printf("second process: allowed=%d errors=%d\n", allowed, errs)
		return
	}

	prefix := testPrefix(t, c)
	start := time.Now().Add(time.Second) // both begin then, the child having started
	child := exec.Command(os.Args[0], "-test.run=^TestLimitHoldsAcrossProcesses$", "-test.count=1")
	child.Env = append(os.Environ(), childEnv+"=1", childPrefixEnv+"="+prefix, childStartEnv+"="+strconv.FormatInt(start.UnixNano(), 10))
	var out bytes.Buffer
	child.Stdout, child.Stderr = &out, &out
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	allowed, errs := hammer(t, c, prefix, start)
	if err := child.Wait(); err != nil {
		t.Fatalf("second process: %v\n%s", err, out.Bytes())
	}
	m := regexp.MustCompile(`second process: allowed=(\d+) errors=(\d+)`).FindSubmatch(out.Bytes())
	if m == nil {
		t.Fatalf("second process did not report:\n%s", out.Bytes())
	}
	childAllowed, _ := strconv.Atoi(string(m[1]))
	childErrs, _ := strconv.Atoi(string(m[2]))
	t.Logf("this process was allowed %d, the other %d, of %d requests each; limit %d", allowed, childAllowed, hammerRequests, crossProcessLimit.Burst)
	if errs+childErrs > 0 {
		t.Fatalf("%d errors here, %d in the other process", errs, childErrs)
	}
	if allowed == 0 || childAllowed == 0 {
		t.Fatalf("one process was allowed nothing (%d, %d): they did not overlap, so the test proves nothing", allowed, childAllowed)
	}
	if total := allowed + childAllowed; total != crossProcessLimit.Burst {
		t.Fatalf("two processes were allowed %d in total, want exactly %d", total, crossProcessLimit.Burst)
	}
}

const hammerWorkers, hammerRequests = 4, 300

// hammer sends hammerRequests requests on one key from several goroutines,
// paced a little so that two processes overlap, starting at start.
func hammer(t *testing.T, c *goredis.Client, prefix string, start time.Time) (allowed, errs int) {
	l, err := New(c, Config{Limit: crossProcessLimit, Prefix: prefix, Timeout: meridian.Duration(time.Second), FailPolicy: ratelimit.FailClosed})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(start))
	var (
		wg sync.WaitGroup
		a  atomic.Int64
		e  atomic.Int64
	)
	for range hammerWorkers {
		wg.Go(func() {
			for range hammerRequests / hammerWorkers {
				d, err := l.Allow(context.Background(), "shared", 1)
				switch {
				case err != nil:
					e.Add(1)
				case d.Allowed:
					a.Add(1)
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
	wg.Wait()
	return int(a.Load()), int(e.Load())
}

func TestObserve(t *testing.T) {
	c := sharedRedis(t)
	var calls []time.Duration
	var mu sync.Mutex
	l, err := New(c, Config{Limit: ratelimit.PerMinute(1, 1), Prefix: testPrefix(t, c), FailPolicy: ratelimit.FailOpen,
		Observe: func(d ratelimit.Decision, took time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			if d.StoreErr != nil {
				t.Errorf("StoreErr %v", d.StoreErr)
			}
			calls = append(calls, took)
		}})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := l.Allow(context.Background(), "k", 1)
	b, _ := l.Allow(context.Background(), "k", 1)
	if !a.Allowed || b.Allowed || len(calls) != 2 || calls[0] <= 0 {
		t.Fatalf("decisions %v %v, observed %v", a.Allowed, b.Allowed, calls)
	}
	// A caller that gives up is not the store failing: no policy, no hook.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d, err := l.Allow(ctx, "k", 1)
	if !errors.Is(err, context.Canceled) || d.Allowed || d.StoreErr != nil || len(calls) != 2 {
		t.Fatalf("cancelled caller: %+v, %v, %d observed", d, err, len(calls))
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	c := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1", ContextTimeoutEnabled: true})
	defer c.Close()
	good := Config{Limit: ratelimit.PerSecond(10, 10), FailPolicy: ratelimit.FailOpen}
	for _, tc := range []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"no fail policy", func(c *Config) { c.FailPolicy = "" }, "fail_policy"},
		{"unknown fail policy", func(c *Config) { c.FailPolicy = "sometimes" }, "fail_policy"},
		{"no rate", func(c *Config) { c.Limit = ratelimit.Limit{} }, "limit.rate"},
		{"negative burst", func(c *Config) { c.Limit.Burst = -1 }, "limit.burst"},
		{"timeout too long", func(c *Config) { c.Timeout = meridian.Duration(time.Minute) }, "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.edit(&cfg)
			_, err := New(c, cfg)
			var me *meridian.Error
			if !errors.As(err, &me) || me.Code != meridian.CodeInvalid || me.Field != tc.field {
				t.Fatalf("New: %v; want CodeInvalid naming %s", err, tc.field)
			}
		})
	}
	if _, err := New(c, good); err != nil {
		t.Fatalf("good config: %v", err)
	}
	lax := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1"})
	defer lax.Close()
	if _, err := New(lax, good); !meridian.IsCode(err, meridian.CodeInvalid) {
		t.Fatalf("client without ContextTimeoutEnabled: %v; want CodeInvalid", err)
	}
}
