package sdk

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
)

func TestNewValidation(t *testing.T) {
	valid := Config{Name: "orders"}
	tests := []struct {
		name      string
		change    func(*Config)
		wantField string
	}{
		{"name required", func(c *Config) { c.Name = "" }, "Name"},
		{"name not a DNS label", func(c *Config) { c.Name = "Orders_Svc" }, "Name"},
		{"bad id", func(c *Config) { c.ID = "-x" }, "ID"},
		{"TTL too short", func(c *Config) { c.TTL = 500 * time.Millisecond }, "TTL"},
		{"weight out of range", func(c *Config) { c.Weight = 20000 }, "Weight"},
		{"too many tags", func(c *Config) { c.Tags = make([]string, 65) }, "Tags"},
		{"empty metadata key", func(c *Config) { c.Metadata = map[string]string{"": "x"} }, "Metadata"},
		{"check interval too short", func(c *Config) {
			c.Check = &meridian.CheckSpec{Kind: meridian.CheckHTTP, Interval: meridian.Duration(time.Millisecond)}
		}, "Check.interval"},
		{"check without kind", func(c *Config) { c.Check = &meridian.CheckSpec{} }, "Check.kind"},
		{"negative shutdown timeout", func(c *Config) { c.ShutdownTimeout = -time.Second }, "ShutdownTimeout"},
		{"bad control plane address", func(c *Config) { c.ControlPlane = "ftp://x" }, "ControlPlane"},
		{"token with a newline", func(c *Config) { c.Token = "secret\n" }, "Token"},
		{"negative max deadline", func(c *Config) { c.MaxDeadline = -time.Second }, "MaxDeadline"},
		{"shed factor", func(c *Config) { c.Shed.LatencyFactor = 0.5 }, "Shed.latency_factor"},
		{"resiliency key", func(c *Config) { c.ResiliencyKey = "a//b" }, "ResiliencyKey"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid
			tt.change(&cfg)
			_, err := New(cfg)
			var me *meridian.Error
			if !errors.As(err, &me) || me.Code != meridian.CodeInvalid || me.Field != tt.wantField {
				t.Fatalf("New = %v, want an invalid-config error naming %s", err, tt.wantField)
			}
		})
	}
	if _, err := New(valid); err != nil {
		t.Fatalf("New(minimal config) = %v", err)
	}
}

func TestConfigDefaults(t *testing.T) {
	svc, err := New(Config{Name: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	c := svc.cfg
	if c.Listen != ":0" || c.ControlPlane != "127.0.0.1:7400" || c.TTL != 10*time.Second || c.Weight != 100 ||
		c.DrainDelay != 2*time.Second || c.ShutdownTimeout != 30*time.Second || c.Logger == nil ||
		c.ResiliencyKey != "meridian/resiliency/orders" || c.NoShed || c.NoDeadline || c.MaxDeadline != 0 {
		t.Fatalf("defaults: %+v", c)
	}
	if svc, _ := New(Config{Name: "orders", DrainDelay: -1}); svc.cfg.DrainDelay != 0 {
		t.Fatalf("negative DrainDelay = %s, want none", svc.cfg.DrainDelay)
	}
}

func TestConfigFromEnv(t *testing.T) {
	env := map[string]string{
		"MERIDIAN_ADDR":             "https://cp.example:7400",
		"MERIDIAN_TOKEN":            "s3cret",
		"MERIDIAN_SERVICE_NAME":     "orders",
		"MERIDIAN_SERVICE_ID":       "orders-1",
		"MERIDIAN_SERVICE_VERSION":  "1.4.2",
		"MERIDIAN_LISTEN":           ":8080",
		"MERIDIAN_ADVERTISE_ADDR":   "10.0.0.7",
		"MERIDIAN_TTL":              "15s",
		"MERIDIAN_ZONE":             "eu-west-1a",
		"MERIDIAN_TAGS":             "primary, canary,",
		"MERIDIAN_METADATA":         "team=checkout, tier=1",
		"MERIDIAN_WEIGHT":           "50",
		"MERIDIAN_CHECK":            "none",
		"MERIDIAN_DRAIN_DELAY":      "0s",
		"MERIDIAN_SHUTDOWN_TIMEOUT": "1m",
		"MERIDIAN_SHED":             "off",
		"MERIDIAN_MAX_DEADLINE":     "30s",
		"MERIDIAN_RESILIENCY_KEY":   "prod/orders/resiliency",
	}
	cfg, err := ConfigFromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ControlPlane != "https://cp.example:7400" || cfg.Token != "s3cret" || cfg.Name != "orders" || cfg.ID != "orders-1" ||
		cfg.Version != "1.4.2" || cfg.Listen != ":8080" || cfg.AdvertiseAddr != "10.0.0.7" || cfg.TTL != 15*time.Second ||
		cfg.Zone != "eu-west-1a" || !slices.Equal(cfg.Tags, []string{"primary", "canary"}) ||
		cfg.Metadata["team"] != "checkout" || cfg.Metadata["tier"] != "1" || cfg.Weight != 50 || !cfg.NoCheck ||
		cfg.DrainDelay >= 0 || cfg.ShutdownTimeout != time.Minute || !cfg.NoShed || cfg.MaxDeadline != 30*time.Second ||
		cfg.ResiliencyKey != "prod/orders/resiliency" {
		t.Fatalf("ConfigFromEnv = %+v", cfg)
	}
	if _, err := New(cfg); err != nil {
		t.Fatalf("New(from env) = %v", err)
	}

	if none, _ := ConfigFromEnv(func(k string) string { return map[string]string{EnvResiliencyKey: "none"}[k] }); !none.NoResiliencySpec {
		t.Fatal(`MERIDIAN_RESILIENCY_KEY=none did not set NoResiliencySpec`)
	}

	empty, err := ConfigFromEnv(func(string) string { return "" })
	if err != nil || empty.Name != "" || empty.DrainDelay != 0 || empty.NoCheck {
		t.Fatalf("ConfigFromEnv(empty) = %+v, %v; want the zero Config", empty, err)
	}

	bad := []struct{ name, value string }{
		{"MERIDIAN_TTL", "10"},
		{"MERIDIAN_DRAIN_DELAY", "soon"},
		{"MERIDIAN_SHUTDOWN_TIMEOUT", "x"},
		{"MERIDIAN_WEIGHT", "heavy"},
		{"MERIDIAN_METADATA", "team"},
		{"MERIDIAN_CHECK", "grpc"},
		{"MERIDIAN_SHED", "maybe"},
		{"MERIDIAN_MAX_DEADLINE", "long"},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			_, err := ConfigFromEnv(func(k string) string {
				if k == b.name {
					return b.value
				}
				return ""
			})
			if !meridian.IsCode(err, meridian.CodeInvalid) || !strings.HasPrefix(err.Error(), b.name+": ") {
				t.Fatalf("ConfigFromEnv(%s=%q) = %v, want an error naming the variable", b.name, b.value, err)
			}
		})
	}
}
