package health

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test in the package must leave no goroutine behind: the Runner
// promises that each of its goroutines stops with Run.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
