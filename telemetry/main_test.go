package telemetry_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test shuts its Tracing down, so the batch span processor's
// goroutine and the OTLP exporters' connections must be gone at the end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
