package policy

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/traffic/balance"
	"github.com/meridian-platform/meridian/traffic/ratelimit"
	"github.com/meridian-platform/meridian/traffic/resilience/breaker"
	"github.com/meridian-platform/meridian/traffic/resilience/bulkhead"
	"github.com/meridian-platform/meridian/traffic/resilience/outlier"
	"github.com/meridian-platform/meridian/traffic/resilience/retry"
)

func parseFile(t *testing.T, name string, format meridian.ConfigFormat) *Spec {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Parse(format, data)
	if err != nil {
		t.Fatalf("Parse %s: %v", name, err)
	}
	return s
}

func dur(d time.Duration) meridian.Duration { return meridian.Duration(d) }

// The same spec in YAML and JSON decodes alike, and resolves per target:
// a target's own names, then default's, then the built-in; none turns a
// layer off.
func TestParseAndResolve(t *testing.T) {
	y := parseFile(t, "full.yaml", meridian.FormatYAML)
	j := parseFile(t, "full.json", meridian.FormatJSON)
	if !reflect.DeepEqual(y, j) {
		t.Fatalf("YAML and JSON differ:\n%+v\n%+v", y, j)
	}

	payments := y.Resolve("payments")
	want := Resolved{
		Names:           Target{Timeout: "slow", Retry: "none", CircuitBreaker: "strict", Throttle: "gentle", Bulkhead: "small", RateLimit: "paid"},
		Timeout:         30 * time.Second,
		CircuitBreaker:  &breaker.Config{Mode: breaker.ModeErrorRate, FailureRate: 0.3, MinRequests: 10, OpenFor: dur(2 * time.Second)},
		Throttle:        &breaker.ThrottleConfig{K: 1.5},
		Bulkhead:        &bulkhead.Config{MaxConcurrent: 10, MaxQueue: 5, QueueTimeout: dur(50 * time.Millisecond)},
		RateLimit:       &ratelimit.Limit{Rate: 100, Period: dur(time.Second), Burst: 20},
		Balancer:        Balancer{Policy: balance.PeakEWMA},
		OutlierDetector: &outlier.Config{},
	}
	if !reflect.DeepEqual(payments, want) {
		t.Errorf("payments resolved to\n%+v\nwant\n%+v", payments, want)
	}

	carts := y.Resolve("carts")
	if carts.Timeout != 5*time.Second || carts.Names.Timeout != "general" {
		t.Errorf("carts inherits default's timeout: %v (%q)", carts.Timeout, carts.Names.Timeout)
	}
	if r := carts.Retry; r == nil || r.MaxAttempts != 5 || !reflect.DeepEqual(r.RetryOn, []int{502, 503, 504, 429}) {
		t.Errorf("carts retry %+v", r)
	}
	if carts.Balancer.Policy != balance.RingHash || carts.Balancer.HashHeader != "X-User-Id" {
		t.Errorf("carts balancer %+v", carts.Balancer)
	}
	if o := carts.OutlierDetector; o == nil || o.ConsecutiveGatewayFailure != 2 {
		t.Errorf("carts outlier %+v", o)
	}
	if carts.CircuitBreaker == nil || *carts.CircuitBreaker != (breaker.Config{Mode: breaker.ModeErrorRate}) || carts.Throttle != nil || carts.Bulkhead != nil || carts.RateLimit != nil {
		t.Errorf("carts should have the built-in breaker and no throttle, bulkhead or limit: %+v", carts)
	}

	other := y.Resolve("inventory") // no target: default, then built-in
	if r := other.Retry; r == nil || r.MaxAttempts != 3 || r.PerTryTimeout != dur(time.Second) || r.Budget != (retry.BudgetConfig{Ratio: 0.1, MinPerSecond: 5}) {
		t.Errorf("inventory retry %+v", r)
	}
	if other.Timeout != 5*time.Second {
		t.Errorf("inventory timeout %v", other.Timeout)
	}

	var empty Spec
	if err := empty.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := empty.Resolve("orders"); !reflect.DeepEqual(got, Builtin()) {
		t.Errorf("the empty spec resolves to %+v, want the built-in", got)
	}
	if got := (*Spec)(nil).Resolve("orders"); !reflect.DeepEqual(got, Builtin()) {
		t.Errorf("a nil spec resolves to %+v", got)
	}
	if Key("orders") != "meridian/resiliency/orders" || meridian.ValidateConfigKey("key", Key("orders")) != nil {
		t.Errorf("Key = %q", Key("orders"))
	}
}

// Decoding is strict at every level and names the path of what it rejects.
func TestDecodeErrorsNameThePath(t *testing.T) {
	cases := []struct {
		name, format, doc, want string
	}{
		{"unknown top-level field", "json", `{"polices": {}}`, `polices: is not a known field`},
		{"unknown kind", "json", `{"policies": {"retry": {}}}`, `policies.retry: is not a known field`},
		{"unknown retry field", "json", `{"policies": {"retries": {"fast": {"max_atempts": 2}}}}`,
			`policies.retries.fast.max_atempts: is not a known field`},
		{"unknown budget field", "yaml", "policies:\n  retries:\n    fast:\n      max_attempts: 2\n      budget: {ration: 0.1}\n",
			`policies.retries.fast.budget.ration: is not a known field`},
		{"wrong type", "json", `{"policies": {"retries": {"fast": {"max_attempts": "two"}}}}`,
			`policies.retries.fast.max_attempts: must be a number, got JSON string`},
		{"bad duration", "yaml", "policies:\n  timeouts:\n    general: 5 seconds\n",
			`policies.timeouts.general: must be a duration like "10s" or "1m30s"`},
		{"bad nested duration", "json", `{"policies": {"bulkheads": {"b": {"queue_timeout": "soon"}}}}`,
			`policies.bulkheads.b.queue_timeout: must be a duration like "10s" or "1m30s"`},
		{"balancer wrong type", "json", `{"policies": {"balancers": {"b": {"ring_points": "many"}}}}`,
			`policies.balancers.b.ring_points: must be a number, got JSON string`},
		{"unknown zone field", "yaml", "policies:\n  balancers:\n    b: {zone: {overprovision: 2}}\n",
			`policies.balancers.b.zone.overprovision: is not a known field`},
		{"unknown target field", "yaml", "targets:\n  orders:\n    retries: fast\n", `targets.orders.retries: is not a known field`},
		{"unknown default field", "json", `{"default": {"breaker": "x"}}`, `default.breaker: is not a known field`},
		{"target not an object", "json", `{"targets": {"orders": "fast"}}`, `targets.orders: must be an object, got JSON string`},
		{"yaml duplicate key", "yaml", "targets:\n  orders: {}\n  orders: {}\n", `mapping key "orders" already defined`},
		{"yaml syntax", "yaml", "targets: [\n", `malformed YAML`},
		{"json syntax", "json", `{"targets": }`, `malformed JSON at line 1`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(meridian.ConfigFormat(c.format), []byte(c.doc))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Parse error %v, want it to contain %q", err, c.want)
			}
			if !meridian.IsCode(err, meridian.CodeInvalid) {
				t.Fatalf("code %s, want invalid", meridian.ErrorCode(err))
			}
		})
	}
}

// Validation checks every policy and reference and reports each problem,
// by path.
func TestValidateNamesEveryProblem(t *testing.T) {
	cases := []struct {
		name, doc string
		want      []string
	}{
		{"unknown reference", `targets: {orders: {retry: fast}}`,
			[]string{`targets.orders.retry: unknown policy "fast" (policies.retries defines none)`}},
		{"unknown reference among others", "policies: {retries: {standard: {max_attempts: 2}}}\ndefault: {retry: fats}",
			[]string{`default.retry: unknown policy "fats" (policies.retries has: standard)`}},
		{"reference of the wrong kind", "policies: {timeouts: {fast: 1s}}\ntargets: {orders: {retry: fast}}",
			[]string{`targets.orders.retry: unknown policy "fast" (policies.retries defines none)`}},
		{"max attempts", `policies: {retries: {fast: {max_attempts: 0}}}`,
			[]string{`policies.retries.fast.max_attempts: 0 is out of range 1-10`}},
		{"max attempts absent", `policies: {retries: {fast: {per_try_timeout: 1s}}}`,
			[]string{`policies.retries.fast.max_attempts: 0 is out of range 1-10`}},
		{"retry field of the package", `policies: {retries: {r: {max_attempts: 2, retry_on: [503, 700]}}}`,
			[]string{`policies.retries.r.retry_on[1]: 700 is not an HTTP status`}},
		{"budget", `policies: {retries: {r: {max_attempts: 2, budget: {ratio: 2, window: 100ms}}}}`,
			[]string{`policies.retries.r.budget.ratio: must be in [0, 1]`, `policies.retries.r.budget.window: 100ms is out of range 1s-10m`}},
		{"timeout range", `policies: {timeouts: {t: 2h, z: 0s}}`,
			[]string{`policies.timeouts.t: 2h0m0s is out of range 1ms-1h`, `policies.timeouts.z: 0s is out of range 1ms-1h`}},
		{"breaker", `policies: {circuit_breakers: {b: {mode: sometimes}}}`,
			[]string{`policies.circuit_breakers.b.mode: must be "consecutive" or "error_rate"`}},
		{"throttle", `policies: {throttles: {t: {k: 0.5}}}`, []string{`policies.throttles.t.k: must be at least 1`}},
		{"bulkhead", `policies: {bulkheads: {b: {max_concurrent: -1}}}`, []string{`policies.bulkheads.b.max_concurrent: must not be negative`}},
		{"rate limit", `policies: {rate_limits: {l: {rate: 0}}}`, []string{`policies.rate_limits.l.rate: 0 must be at least 1`}},
		{"balancer policy", `policies: {balancers: {b: {policy: random}}}`,
			[]string{`policies.balancers.b.policy: unknown policy "random"`}},
		{"hash key without ring hash", `policies: {balancers: {b: {hash_header: X-User}}}`,
			[]string{`policies.balancers.b.hash_header: only ring_hash uses a hash key; the policy is "peak_ewma"`}},
		{"both hash keys", `policies: {balancers: {b: {policy: ring_hash, hash_header: X-User, hash_cookie: sid}}}`,
			[]string{`policies.balancers.b.hash_cookie: give hash_header or hash_cookie, not both`}},
		{"outlier", `policies: {outlier_detectors: {o: {max_ejection_percent: 101}}}`,
			[]string{`policies.outlier_detectors.o.max_ejection_percent: must be in [0, 100]`}},
		{"reserved name", `policies: {timeouts: {none: 1s}}`,
			[]string{`policies.timeouts.none: the name "none" is reserved`}},
		{"bad name", `policies: {timeouts: {"a b": 1s}}`, []string{`policies.timeouts.a b: "a b" is not a valid policy name`}},
		{"balancer none", `targets: {orders: {balancer: none}}`,
			[]string{`targets.orders.balancer: "none" is not allowed: every upstream is balanced`}},
		{"target name", `targets: {Orders: {}}`, []string{`targets.Orders: "Orders" is not a valid service name`}},
		{"every problem at once", "policies: {retries: {fast: {max_attempts: 11}}, bulkheads: {b: {max_queue: -2}}}\ntargets: {orders: {bulkhead: big, retry: fast}}",
			[]string{
				`policies.bulkheads.b.max_queue: must not be negative`,
				`policies.retries.fast.max_attempts: 11 is out of range 1-10`,
				`targets.orders.bulkhead: unknown policy "big" (policies.bulkheads has: b)`,
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(meridian.FormatYAML, []byte(c.doc))
			if err == nil {
				t.Fatal("Parse accepted it")
			}
			got := strings.Split(err.Error(), "\n")
			if len(got) != len(c.want) {
				t.Fatalf("errors:\n%s\nwant %d:\n%s", err, len(c.want), strings.Join(c.want, "\n"))
			}
			for i := range got {
				if !strings.HasPrefix(got[i], c.want[i]) {
					t.Errorf("error %d: %q, want it to start with %q", i, got[i], c.want[i])
				}
			}
			var me *meridian.Error
			if !errors.As(err, &me) || me.Code != meridian.CodeInvalid || me.Field == "" {
				t.Fatalf("not a *meridian.Error naming a field: %#v", err)
			}
		})
	}
}

// Every config a valid spec resolves to is accepted by its layer's
// constructor.
func TestResolvedConfigsConstruct(t *testing.T) {
	s := parseFile(t, "full.yaml", meridian.FormatYAML)
	for _, svc := range []string{"payments", "carts", "inventory"} {
		r := s.Resolve(svc)
		if r.Retry != nil {
			if _, err := retry.New(r.Retry.Policy, nil, retry.Options{}); err != nil {
				t.Errorf("%s: retry: %v", svc, err)
			}
			if _, err := retry.NewBudget(r.Retry.Budget, retry.BudgetOptions{}); err != nil {
				t.Errorf("%s: budget: %v", svc, err)
			}
		}
		if r.CircuitBreaker != nil {
			if _, err := breaker.New(*r.CircuitBreaker, breaker.Options{}); err != nil {
				t.Errorf("%s: breaker: %v", svc, err)
			}
		}
		if r.Bulkhead != nil {
			if _, err := bulkhead.New(*r.Bulkhead, bulkhead.Options{}); err != nil {
				t.Errorf("%s: bulkhead: %v", svc, err)
			}
		}
		if r.RateLimit != nil {
			if _, err := ratelimit.NewLocal(ratelimit.LocalConfig{Limit: *r.RateLimit}); err != nil {
				t.Errorf("%s: rate limit: %v", svc, err)
			}
		}
		if _, err := balance.New(svc, r.Balancer.Config("a")); err != nil {
			t.Errorf("%s: balancer: %v", svc, err)
		}
	}
}
