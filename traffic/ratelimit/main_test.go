package ratelimit

import (
	"errors"
	"testing"

	"go.uber.org/goleak"

	"github.com/meridian-platform/meridian"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func asError(err error, target **meridian.Error) bool { return errors.As(err, target) }
