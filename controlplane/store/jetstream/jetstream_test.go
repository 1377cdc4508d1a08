package jetstream_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/meridian-platform/meridian/controlplane/store"
	"github.com/meridian-platform/meridian/controlplane/store/jetstream"
	"github.com/meridian-platform/meridian/controlplane/store/storetest"
	"github.com/meridian-platform/meridian/internal/natstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		nc := natstest.Start(t).Connect(t)
		s, err := jetstream.New(nc, jetstream.Config{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
