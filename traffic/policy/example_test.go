package policy_test

import (
	"fmt"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/traffic/policy"
)

// A spec names policies and says which upstreams they apply to; a bad
// reference is reported by its path.
func ExampleParse() {
	spec, err := policy.Parse(meridian.FormatYAML, []byte(`
policies:
  timeouts:
    general: 5s
  retries:
    standard: {max_attempts: 3, per_try_timeout: 1s}
  circuit_breakers:
    strict: {mode: error_rate, failure_rate: 0.3}
default:
  timeout: general
  retry: standard
targets:
  payments:
    circuit_breaker: strict
    retry: none
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	p := spec.Resolve("payments")
	fmt.Println("payments:", p.Timeout, "retries:", p.Retry != nil, "breaker:", p.CircuitBreaker.Mode)
	o := spec.Resolve("orders")
	fmt.Println("orders:", o.Timeout, "attempts:", o.Retry.MaxAttempts, "breaker:", p.Names.CircuitBreaker, "/ built-in:", o.Names.CircuitBreaker == "")

	_, err = policy.Parse(meridian.FormatJSON, []byte(`{"targets": {"orders": {"retry": "fast"}}}`))
	fmt.Println(err)
	// Output:
	// payments: 5s retries: false breaker: error_rate
	// orders: 5s attempts: 3 breaker: strict / built-in: true
	// targets.orders.retry: unknown policy "fast" (policies.retries defines none)
}
