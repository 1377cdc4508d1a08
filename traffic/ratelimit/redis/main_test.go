package redis

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// go-redis logs each failed dial; the outage tests cause hundreds.
	goredis.SetLogger(quiet{})
	goleak.VerifyTestMain(m)
}

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

// addrEnv names the shared Redis the tests may use. They never flush,
// stop or reconfigure it: every key they write is under a prefix unique to
// the run, deleted when the test ends (and expiring anyway).
const addrEnv = "MERIDIAN_TEST_REDIS"

func requireRedis(t testing.TB) string {
	t.Helper()
	addr := os.Getenv(addrEnv)
	if addr == "" {
		t.Skip("set MERIDIAN_TEST_REDIS=127.0.0.1:6379 to run the Redis limiter tests")
	}
	return addr
}

// newClient is a go-redis client that honours context deadlines, closed
// when the test ends.
func newClient(t testing.TB, addr string) *goredis.Client {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// sharedRedis is a client of the machine's Redis.
func sharedRedis(t testing.TB) *goredis.Client {
	t.Helper()
	c := newClient(t, requireRedis(t))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("%s=%s: %v", addrEnv, c.Options().Addr, err)
	}
	return c
}

// testPrefix is a key prefix unique to this run whose keys are deleted when
// the test ends.
func testPrefix(t testing.TB, c *goredis.Client) string {
	t.Helper()
	prefix := fmt.Sprintf("meridian-test:ratelimit:%d-%d:", os.Getpid(), time.Now().UnixNano())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		iter := c.Scan(ctx, 0, prefix+"*", 100).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
		if err := iter.Err(); err != nil {
			t.Errorf("deleting keys under %s: %v", prefix, err)
		}
	})
	return prefix
}
