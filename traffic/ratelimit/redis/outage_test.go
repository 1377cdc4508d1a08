package redis

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/traffic/ratelimit"
)

// ownRedis is a redis-server the test starts on a free port, and may stall,
// kill and restart: never the machine's shared one.
type ownRedis struct {
	port int
	cmd  *exec.Cmd
}

func startOwnRedis(t *testing.T, port int) *ownRedis {
	t.Helper()
	requireRedis(t) // the Redis tests run together, or not at all
	path, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed; the outage tests start, stall and kill their own")
	}
	if port == 0 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	r := &ownRedis{port: port}
	r.cmd = exec.Command(path, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", t.TempDir(), "--loglevel", "warning")
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("starting redis-server: %v", err)
	}
	t.Cleanup(r.kill)
	for deadline := time.Now().Add(5 * time.Second); !r.ping(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on port %d did not answer PING within 5s", port)
		}
	}
	return r
}

func (r *ownRedis) addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

func (r *ownRedis) ping() bool {
	c, err := net.DialTimeout("tcp", r.addr(), 200*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

// stall stops the server without closing its socket: connections are
// accepted by the kernel and then nothing answers, as with an overloaded
// or partitioned Redis.
func (r *ownRedis) stall(t *testing.T) {
	if err := r.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
}

func (r *ownRedis) resume(t *testing.T) {
	if err := r.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
}

// kill ends this test's server (only it: by its own process handle).
func (r *ownRedis) kill() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}

// The declared policy decides, promptly, while Redis is stalled and while
// it is down; when Redis is back the limiter decides again.
func TestFailPolicyWhenRedisIsStalledOrDown(t *testing.T) {
	requireRedis(t)
	const timeout = 100 * time.Millisecond
	// How late past the timeout a call may return: scheduling, the race
	// detector, a loaded machine.
	const late = 150 * time.Millisecond
	for _, tc := range []struct {
		name   string
		policy ratelimit.FailPolicy
		// noRetries: a client that neither retries commands nor redials,
		// so that a refused connection fails at once, with its own error,
		// instead of being retried until the timeout.
		noRetries bool
	}{
		{"fail open", ratelimit.FailOpen, false},
		{"fail closed", ratelimit.FailClosed, false},
		{"fail closed, client without retries", ratelimit.FailClosed, true},
	} {
		policy := tc.policy
		t.Run(tc.name, func(t *testing.T) {
			srv := startOwnRedis(t, 0)
			opts := &goredis.Options{Addr: srv.addr(), ContextTimeoutEnabled: true}
			if tc.noRetries {
				opts.MaxRetries, opts.DialerRetries = -1, 1
			}
			c := goredis.NewClient(opts)
			t.Cleanup(func() { _ = c.Close() })
			var mu sync.Mutex
			var fallbacks []error
			l, err := New(c, Config{
				Limit:      ratelimit.PerSecond(1000, 1000),
				Timeout:    meridian.Duration(timeout),
				FailPolicy: policy,
				Observe: func(d ratelimit.Decision, _ time.Duration) {
					if d.StoreErr != nil {
						mu.Lock()
						fallbacks = append(fallbacks, d.StoreErr)
						mu.Unlock()
					}
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			decides := func(stage string) {
				t.Helper()
				var d ratelimit.Decision
				var err error
				for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
					if d, err = l.Allow(ctx, "k", 1); err == nil && d.StoreErr == nil {
						break
					}
				}
				if err != nil || d.StoreErr != nil || !d.Allowed || d.Remaining == 0 {
					t.Fatalf("%s: Redis did not decide within 5s: %+v, %v", stage, d, err)
				}
			}
			policyDecides := func(stage string) (last ratelimit.Decision, took time.Duration) {
				t.Helper()
				for range 3 {
					start := time.Now()
					d, err := l.Allow(ctx, "k", 1)
					took := time.Since(start)
					if took > timeout+late {
						t.Errorf("%s: Allow took %s; the timeout is %s", stage, took, timeout)
					}
					if d.StoreErr == nil {
						t.Fatalf("%s: %+v, %v; want StoreErr saying why", stage, d, err)
					}
					switch policy {
					case ratelimit.FailOpen:
						if !d.Allowed || err != nil {
							t.Fatalf("%s, fail open: %+v, %v; want allowed, no error", stage, d, err)
						}
					case ratelimit.FailClosed:
						if d.Allowed || !errors.Is(err, ratelimit.ErrUnavailable) || meridian.ErrorCode(err) != meridian.CodeUnavailable {
							t.Fatalf("%s, fail closed: %+v, %v; want denied with ErrUnavailable", stage, d, err)
						}
					}
					t.Logf("%s: %s in %s: %v", stage, policy, took.Round(time.Microsecond), d.StoreErr)
					last = d
				}
				return last, took
			}

			decides("up")
			srv.stall(t)
			policyDecides("stalled")
			for _, err := range fallbacks {
				// The context's deadline, or the socket's that go-redis
				// set from it.
				if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("stalled: StoreErr %v; want a deadline", err)
				}
			}
			srv.resume(t)
			decides("resumed")

			srv.kill()
			last, took := policyDecides("down")
			if tc.noRetries && (!errors.Is(last.StoreErr, syscall.ECONNREFUSED) || took > timeout/2) {
				t.Errorf("down, no retries: %v after %s; want the refusal, at once", last.StoreErr, took)
			}
			srv = startOwnRedis(t, srv.port)
			decides("restarted")
			if len(fallbacks) != 6 {
				t.Errorf("Observe saw %d policy decisions, want 6", len(fallbacks))
			}
		})
	}
}

// commandLog records the names of the commands a client sends.
type commandLog struct {
	mu    sync.Mutex
	names []string
}

func (l *commandLog) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (l *commandLog) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		if name := cmd.Name(); strings.HasPrefix(name, "eval") || name == "script" {
			l.mu.Lock()
			l.names = append(l.names, name)
			l.mu.Unlock()
		}
		return next(ctx, cmd)
	}
}

func (l *commandLog) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return next
}

func (l *commandLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	names := l.names
	l.names = nil
	return names
}

// The script goes by SHA; a server that does not have it (new, restarted,
// flushed) answers NOSCRIPT and gets the source once. On the test's own
// server, since flushing the shared one is not ours to do.
func TestScriptIsCachedAndReloaded(t *testing.T) {
	srv := startOwnRedis(t, 0)
	c := newClient(t, srv.addr())
	var log commandLog
	c.AddHook(&log)
	l, err := New(c, Config{Limit: ratelimit.PerSecond(10, 10), FailPolicy: ratelimit.FailClosed})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	allow := func() {
		t.Helper()
		if d, err := l.Allow(ctx, "k", 1); err != nil || !d.Allowed {
			t.Fatalf("%+v, %v", d, err)
		}
	}
	for _, step := range []struct {
		name string
		do   func()
		want []string
	}{
		{"first call on a new server", allow, []string{"evalsha", "eval"}},
		{"second call", allow, []string{"evalsha"}},
		{"script cache flushed", func() {
			if err := c.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}, []string{"script"}},
		{"call after the flush", allow, []string{"evalsha", "eval"}},
		{"and after that", allow, []string{"evalsha"}},
	} {
		step.do()
		if got := log.take(); !slices.Equal(got, step.want) {
			t.Fatalf("%s: commands %v, want %v", step.name, got, step.want)
		}
	}
}
