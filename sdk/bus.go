package sdk

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/bus/jetstream"
)

// BusConfig says where a service finds the event bus: the NATS server with
// JetStream the control plane runs (`meridian server --nats-listen
// 127.0.0.1:7422` makes its embedded one reachable) or the cluster it uses.
// Zero fields take the defaults named on them.
type BusConfig struct {
	// URL is the NATS server, or comma-separated servers of one cluster.
	// Default "nats://127.0.0.1:7422".
	URL string
	// Creds is a NATS credentials file (JWT and seed); optional.
	Creds string
	// Name names the connection in the server's monitoring. Default the
	// service's name (Service.OpenBus) or "meridian-sdk".
	Name string
	// JetStream tunes the engine (subject and stream prefixes, auto-created
	// topics, async publish limits); its zero value is the default.
	JetStream jetstream.Config
	// Logger receives connection events. Default: discard.
	Logger *slog.Logger
}

// DefaultBusURL is where `meridian server --nats-listen 127.0.0.1:7422`
// serves its embedded NATS.
const DefaultBusURL = "nats://127.0.0.1:7422"

// Environment variables read by BusConfigFromEnv.
const (
	EnvBusURL   = "MERIDIAN_BUS_URL"   // URL
	EnvBusCreds = "MERIDIAN_BUS_CREDS" // Creds
)

// BusConfigFromEnv reads a BusConfig from MERIDIAN_BUS_URL and
// MERIDIAN_BUS_CREDS through getenv; unset variables leave the defaults.
func BusConfigFromEnv(getenv func(string) string) BusConfig {
	return BusConfig{URL: strings.TrimSpace(getenv(EnvBusURL)), Creds: strings.TrimSpace(getenv(EnvBusCreds))}
}

// Bus is a service's event bus: the JetStream engine (a bus.Backend, so
// bus.Publish, bus.Subscribe and every Backend method work on it) with the
// connection it owns.
//
//	b, err := sdk.OpenBus(ctx, sdk.BusConfigFromEnv(os.Getenv))
//	…
//	defer b.Close(context.Background())
//	_, err = bus.Publish(ctx, b, orders, order)
type Bus struct {
	*jetstream.Backend
	nc *nats.Conn
}

// OpenBus connects to the bus. The first connection must succeed (a wrong
// address fails at once, naming URL); afterwards the client reconnects on
// its own, for ever, and publishes wait or fail with unavailable meanwhile.
func OpenBus(ctx context.Context, cfg BusConfig) (*Bus, error) {
	if cfg.URL == "" {
		cfg.URL = DefaultBusURL
	}
	if cfg.Name == "" {
		cfg.Name = "meridian-sdk"
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("bus: disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("bus: reconnected", "url", nc.ConnectedUrlRedacted()) }),
	}
	if cfg.Creds != "" {
		opts = append(opts, nats.UserCredentials(cfg.Creds))
	}
	if d, ok := ctx.Deadline(); ok {
		opts = append(opts, nats.Timeout(time.Until(d)))
	}
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("sdk: %w", &meridian.Error{Code: meridian.CodeUnavailable, Field: "URL",
			Message: fmt.Sprintf("cannot connect to the bus at %s (is `meridian server --nats-listen` running? set %s)", cfg.URL, EnvBusURL), Err: err})
	}
	if cfg.JetStream.Logger == nil {
		cfg.JetStream.Logger = cfg.Logger
	}
	b, err := jetstream.New(nc, cfg.JetStream)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("sdk: %w", err)
	}
	return &Bus{Backend: b, nc: nc}, nil
}

// OpenBus connects to the bus for the service: the connection is named
// after it and logs to its logger, unless cfg says otherwise.
func (s *Service) OpenBus(ctx context.Context, cfg BusConfig) (*Bus, error) {
	if cfg.Name == "" {
		cfg.Name = s.cfg.Name
	}
	if cfg.Logger == nil {
		cfg.Logger = s.log
	}
	return OpenBus(ctx, cfg)
}

// Close stops the bus's subscriptions, waits within ctx for asynchronous
// publishes, then closes the connection.
func (b *Bus) Close(ctx context.Context) error {
	err := b.Backend.Close(ctx)
	b.nc.Close()
	return err
}
