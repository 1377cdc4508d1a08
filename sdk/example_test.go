package sdk_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/sdk"
)

// A service reads its declaration from MERIDIAN_* variables, serves its
// API, finds a dependency through the discovery cache, and runs until
// SIGTERM, when it deregisters and drains.
func ExampleNew() {
	cfg, err := sdk.ConfigFromEnv(os.Getenv)
	if err != nil {
		log.Fatal(err)
	}
	if cfg.Name == "" {
		cfg.Name = "orders"
	}
	cfg.Version = "1.4.2"
	cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	svc, err := sdk.New(cfg)
	if err != nil {
		log.Fatal(err) // names the bad field, e.g. "TTL: 500ms is out of range 1s-24h0m0s"
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		// The cache answers from memory; no control-plane call per request.
		snap, err := svc.Discovery().Wait(r.Context(), "payments")
		if err != nil || len(snap.Instances) == 0 {
			http.Error(w, "payments unavailable", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "order %s, payments at %s\n", r.PathValue("id"), snap.Instances[0].HostPort())
	})

	if err := svc.Run(context.Background(), mux); err != nil {
		log.Fatal(err)
	}
}

// A service calls another by name: the URL's host is the service, the
// client finds an instance in the discovery cache and applies the
// resiliency spec stored under meridian/resiliency/checkout.
func ExampleService_HTTPClient() {
	svc, err := sdk.New(sdk.Config{Name: "checkout", Token: os.Getenv("MERIDIAN_TOKEN")})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /checkout/{cart}", func(w http.ResponseWriter, r *http.Request) {
		// r.Context() carries the caller's deadline; it travels on.
		req, _ := http.NewRequestWithContext(r.Context(), "GET", "http://orders/v1/carts/"+r.PathValue("cart"), nil)
		resp, err := svc.HTTPClient().Do(req) // retried elsewhere, balanced, broken, timed out by policy
		if err != nil {
			http.Error(w, "orders unavailable", http.StatusServiceUnavailable)
			return
		}
		defer resp.Body.Close()
		fmt.Fprintf(w, "orders answered %s\n", resp.Status)
	})
	if err := svc.Run(context.Background(), mux); err != nil {
		log.Fatal(err)
	}
}

// Limits is a service's tunable limits, stored as JSON or YAML under
// prod/orders/limits in the config center.
type Limits struct {
	MaxItems int               `json:"max_items"`
	Timeout  meridian.Duration `json:"timeout"`
}

// A config key bound to a struct: Get is lock-free and always returns the
// last revision that decoded; a bad revision is reported and ignored.
func ExampleBindConfig() {
	svc, err := sdk.New(sdk.Config{Name: "orders", Token: os.Getenv("MERIDIAN_TOKEN")})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	limits, err := sdk.BindConfig(ctx, svc.ControlPlane(), "prod/orders/limits",
		func(old, new Limits) { log.Printf("max_items %d → %d", old.MaxItems, new.MaxItems) },
		sdk.OnBindError(func(err error) { log.Printf("config rejected: %v", err) }))
	if err != nil {
		log.Fatal(err) // missing key, or its value does not decode into Limits
	}
	defer limits.Close() // stops the watch; Get keeps the last value

	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
		l := limits.Get()
		ctx, cancel := context.WithTimeout(r.Context(), max(l.Timeout.D(), time.Second))
		defer cancel()
		_ = ctx // … place the order, at most l.MaxItems items
	})
	if err := svc.Run(ctx, mux); err != nil {
		log.Fatal(err)
	}
}
