package sdk

import (
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/traffic/policy"
	"github.com/meridian-platform/meridian/traffic/resilience/shed"
)

// Config declares a service instance. Zero values take the defaults named
// on each field (see New). Validation errors name the field.
type Config struct {
	// Name is the service name: a DNS label (1-63 lowercase letters, digits
	// and '-'). Required.
	Name string
	// ID identifies this instance within the service. Default
	// "<Name>-<advertised host>-<port>", which is stable across restarts on
	// the same address and unique among instances.
	ID string
	// Version is the service's version ("1.4.2"); optional, at most 64
	// characters.
	Version string

	// Listen is the TCP address the HTTP server listens on. Default ":0",
	// any free port: the port actually bound is the one registered, so
	// discovery needs no fixed port.
	Listen string
	// AdvertiseAddr is the host, or host:port, other services and the
	// control plane's health checks reach this instance at. Default: the
	// listener's IP when Listen names one; when it listens on all
	// interfaces, the local IP this host uses to reach the control plane.
	// The port defaults to the listener's.
	AdvertiseAddr string

	// ControlPlane is the control plane's address: "host:port",
	// "http://host:port" or "https://host:port". Default "127.0.0.1:7400".
	ControlPlane string
	// Token is the bearer token sent to the control plane; a token of the
	// service role for Name can do everything the SDK needs.
	Token string

	// TTL is the registration lease: the control plane removes the instance
	// when no heartbeat arrives for this long. Heartbeats are sent every
	// TTL/3. Default 10s; between 1s and 24h.
	TTL time.Duration
	// Zone is the instance's zone ("eu-west-1a"), for zone-aware balancing.
	// Optional, at most 64 characters.
	Zone string
	// Tags are free labels ("primary", "canary"); at most 64.
	Tags []string
	// Metadata are free key/value pairs; at most 64, keys 1-128 characters,
	// values at most 1024.
	Metadata map[string]string
	// Weight is the instance's share of traffic relative to its peers.
	// Default 100; between 1 and 10000.
	Weight int

	// Check is the active health check the control plane runs against the
	// instance, in addition to the TTL lease. Default (nil): an HTTP GET of
	// /readyz at the advertised address, with the control plane's default
	// interval (10s) and timeout (2s); the instance receives traffic once the
	// first probe passes. Ignored when NoCheck is set.
	Check *meridian.CheckSpec
	// NoCheck registers without an active health check: only the TTL lease
	// decides whether the instance is listed.
	NoCheck bool

	// DrainDelay is how long the instance keeps serving after it has
	// deregistered and /readyz has turned 503, before it stops accepting
	// connections: the time watchers (gateways, sidecars, other services'
	// discovery caches) need to stop sending new requests. Default 2s; a
	// negative value means no delay.
	DrainDelay time.Duration
	// ShutdownTimeout bounds how long in-flight requests may take to finish
	// once the drain delay is over; connections still active then are
	// closed. Default 30s.
	ShutdownTimeout time.Duration

	// Shed is the adaptive load shedding of the server Run starts
	// (package traffic/resilience/shed: Kratos' BBR and go-zero's
	// shedder): when requests in flight exceed what the server has shown
	// it can carry and latency says it is queueing, the requests beyond
	// capacity are answered at once with 503, problem+json and
	// Retry-After, instead of queueing until every request is slow. On by
	// default with shed.Config's defaults (5s window, latency factor 2,
	// Retry-After 1s); NoShed turns it off. /healthz and /readyz are
	// never shed.
	Shed   shed.Config
	NoShed bool
	// MaxDeadline caps the deadline a caller may ask for in the
	// Meridian-Timeout header, which Run's server turns into the request
	// context's deadline (package deadline; gRPC's grpc-timeout needs
	// nothing), and is the deadline of requests without one. Default 0: no
	// cap, and no deadline for requests without the header. NoDeadline
	// stops Run from reading the header.
	MaxDeadline time.Duration
	NoDeadline  bool

	// ResiliencyKey is the config key of the resiliency spec (package
	// traffic/policy) that governs this service's calls to others through
	// HTTPClient and GRPCClient. Default policy.Key(Name),
	// "meridian/resiliency/<Name>". While the key is absent the built-in
	// policies apply; Run follows its revisions and applies each valid
	// one without dropping requests (an invalid one is logged and the
	// last good spec stays). NoResiliencySpec leaves the key alone: the
	// built-in policies apply, or what the program gives
	// Outbound().Apply.
	ResiliencyKey    string
	NoResiliencySpec bool

	// Logger receives the lifecycle's logs (registration, lost leases,
	// control-plane outages, shutdown). Default: discard.
	Logger *slog.Logger
}

// Defaults of Config.
const (
	DefaultListen          = ":0"
	DefaultControlPlane    = "127.0.0.1:7400"
	DefaultTTL             = 10 * time.Second
	DefaultDrainDelay      = 2 * time.Second
	DefaultShutdownTimeout = 30 * time.Second
)

// withDefaults returns cfg with every zero field set to its default.
func (cfg Config) withDefaults() Config {
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.ControlPlane == "" {
		cfg.ControlPlane = DefaultControlPlane
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Weight == 0 {
		cfg.Weight = meridian.DefaultWeight
	}
	if cfg.DrainDelay == 0 {
		cfg.DrainDelay = DefaultDrainDelay
	} else if cfg.DrainDelay < 0 {
		cfg.DrainDelay = 0
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ResiliencyKey == "" && cfg.Name != "" {
		cfg.ResiliencyKey = policy.Key(cfg.Name)
	}
	return cfg
}

// validate checks cfg (with defaults applied), naming the Config field.
// The instance fields are checked by the same rules the control plane
// applies (meridian.Instance.Normalize), on a trial instance.
func (cfg Config) validate() error {
	if err := meridian.ValidateServiceName("Name", cfg.Name); err != nil {
		return err
	}
	if cfg.ID != "" {
		if err := meridian.ValidateInstanceID("ID", cfg.ID); err != nil {
			return err
		}
	}
	if cfg.TTL < meridian.MinTTL || cfg.TTL > meridian.MaxTTL {
		return meridian.FieldError("TTL", "%s is out of range %s-%s", cfg.TTL, meridian.MinTTL, meridian.MaxTTL)
	}
	if cfg.ShutdownTimeout < 0 {
		return meridian.FieldError("ShutdownTimeout", "%s is negative", cfg.ShutdownTimeout)
	}
	if cfg.MaxDeadline < 0 {
		return meridian.FieldError("MaxDeadline", "%s is negative", cfg.MaxDeadline)
	}
	if err := cfg.Shed.Validate(); err != nil {
		var me *meridian.Error
		if errors.As(err, &me) {
			c := *me
			c.Field = "Shed." + c.Field
			return &c
		}
		return err
	}
	if !cfg.NoResiliencySpec {
		if err := meridian.ValidateConfigKey("ResiliencyKey", cfg.ResiliencyKey); err != nil {
			return err
		}
	}
	trial := cfg.instance("127.0.0.1", 1)
	if trial.ID == "" {
		trial.ID = "trial"
	}
	if err := trial.Normalize(); err != nil {
		var me *meridian.Error
		if errors.As(err, &me) && me.Field != "" {
			c := *me
			c.Field = configField(me.Field)
			return &c
		}
		return err
	}
	return nil
}

// configField maps an Instance JSON field to the Config field it comes
// from, so that errors name what the user wrote.
func configField(f string) string {
	head, rest, _ := strings.Cut(f, ".")
	name := map[string]string{
		"service": "Name", "id": "ID", "address": "AdvertiseAddr", "port": "AdvertiseAddr",
		"version": "Version", "zone": "Zone", "weight": "Weight", "tags": "Tags",
		"metadata": "Metadata", "ttl": "TTL", "check": "Check",
	}[head]
	if name == "" {
		return f
	}
	if rest != "" {
		return name + "." + rest
	}
	return name
}

// instance builds the registration for an advertised host and port.
func (cfg Config) instance(host string, port int) *meridian.Instance {
	in := &meridian.Instance{
		Service:  cfg.Name,
		ID:       cfg.ID,
		Address:  host,
		Port:     port,
		Protocol: meridian.ProtocolHTTP,
		Version:  cfg.Version,
		Zone:     cfg.Zone,
		Weight:   cfg.Weight,
		Tags:     cfg.Tags,
		Metadata: cfg.Metadata,
		TTL:      meridian.Duration(cfg.TTL),
	}
	switch {
	case cfg.NoCheck:
	case cfg.Check != nil:
		c := *cfg.Check
		in.Check = &c
	default:
		in.Check = &meridian.CheckSpec{Kind: meridian.CheckHTTP, Target: "/readyz"}
	}
	return in
}

// Environment variables read by ConfigFromEnv.
const (
	EnvControlPlane    = "MERIDIAN_ADDR"             // ControlPlane
	EnvToken           = "MERIDIAN_TOKEN"            // Token
	EnvName            = "MERIDIAN_SERVICE_NAME"     // Name
	EnvID              = "MERIDIAN_SERVICE_ID"       // ID
	EnvVersion         = "MERIDIAN_SERVICE_VERSION"  // Version
	EnvListen          = "MERIDIAN_LISTEN"           // Listen
	EnvAdvertiseAddr   = "MERIDIAN_ADVERTISE_ADDR"   // AdvertiseAddr
	EnvTTL             = "MERIDIAN_TTL"              // TTL, a Go duration ("10s")
	EnvZone            = "MERIDIAN_ZONE"             // Zone
	EnvTags            = "MERIDIAN_TAGS"             // Tags, comma-separated
	EnvMetadata        = "MERIDIAN_METADATA"         // Metadata, comma-separated key=value pairs
	EnvWeight          = "MERIDIAN_WEIGHT"           // Weight, an integer
	EnvCheck           = "MERIDIAN_CHECK"            // "http" (default: GET /readyz) or "none" (NoCheck)
	EnvDrainDelay      = "MERIDIAN_DRAIN_DELAY"      // DrainDelay, a Go duration; "0s" for none
	EnvShutdownTimeout = "MERIDIAN_SHUTDOWN_TIMEOUT" // ShutdownTimeout, a Go duration
	EnvShed            = "MERIDIAN_SHED"             // "on" (default) or "off" (NoShed)
	EnvMaxDeadline     = "MERIDIAN_MAX_DEADLINE"     // MaxDeadline, a Go duration
	EnvResiliencyKey   = "MERIDIAN_RESILIENCY_KEY"   // ResiliencyKey; "none" for NoResiliencySpec
)

// ConfigFromEnv reads a Config from environment variables through getenv
// (os.Getenv in main, a map in tests). Unset or empty variables leave the
// field zero, so New applies its default:
//
//	MERIDIAN_ADDR              ControlPlane      control plane address (default 127.0.0.1:7400)
//	MERIDIAN_TOKEN             Token             bearer token
//	MERIDIAN_SERVICE_NAME      Name              service name (required by New)
//	MERIDIAN_SERVICE_ID        ID                instance id
//	MERIDIAN_SERVICE_VERSION   Version           service version
//	MERIDIAN_LISTEN            Listen            listen address (default :0)
//	MERIDIAN_ADVERTISE_ADDR    AdvertiseAddr     host or host:port to register
//	MERIDIAN_TTL               TTL               lease, Go duration (default 10s)
//	MERIDIAN_ZONE              Zone              zone
//	MERIDIAN_TAGS              Tags              comma-separated: primary,canary
//	MERIDIAN_METADATA          Metadata          comma-separated pairs: team=checkout,tier=1
//	MERIDIAN_WEIGHT            Weight            integer (default 100)
//	MERIDIAN_CHECK             NoCheck           "http" (default, GET /readyz) or "none"
//	MERIDIAN_DRAIN_DELAY       DrainDelay        Go duration (default 2s; "0s" for none)
//	MERIDIAN_SHUTDOWN_TIMEOUT  ShutdownTimeout   Go duration (default 30s)
//	MERIDIAN_SHED              NoShed            "on" (default, adaptive load shedding) or "off"
//	MERIDIAN_MAX_DEADLINE      MaxDeadline       Go duration (default none)
//	MERIDIAN_RESILIENCY_KEY    ResiliencyKey     config key (default meridian/resiliency/<name>); "none" for NoResiliencySpec
//
// Malformed values are errors naming the variable.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	get := func(name string) string { return strings.TrimSpace(getenv(name)) }
	cfg := Config{
		ControlPlane:  get(EnvControlPlane),
		Token:         get(EnvToken),
		Name:          get(EnvName),
		ID:            get(EnvID),
		Version:       get(EnvVersion),
		Listen:        get(EnvListen),
		AdvertiseAddr: get(EnvAdvertiseAddr),
		Zone:          get(EnvZone),
	}
	duration := func(name string, dst *time.Duration) error {
		v := get(name)
		if v == "" {
			return nil
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			return meridian.FieldError(name, "%q is not a duration like \"10s\" or \"1m30s\"", v)
		}
		*dst = d
		return nil
	}
	if err := duration(EnvTTL, &cfg.TTL); err != nil {
		return Config{}, err
	}
	if err := duration(EnvShutdownTimeout, &cfg.ShutdownTimeout); err != nil {
		return Config{}, err
	}
	if err := duration(EnvDrainDelay, &cfg.DrainDelay); err != nil {
		return Config{}, err
	}
	if err := duration(EnvMaxDeadline, &cfg.MaxDeadline); err != nil {
		return Config{}, err
	}
	switch v := get(EnvShed); v {
	case "", "on":
	case "off":
		cfg.NoShed = true
	default:
		return Config{}, meridian.FieldError(EnvShed, "%q is not one of on, off", v)
	}
	switch v := get(EnvResiliencyKey); v {
	case "":
	case "none":
		cfg.NoResiliencySpec = true
	default:
		cfg.ResiliencyKey = v
	}
	if get(EnvDrainDelay) != "" && cfg.DrainDelay == 0 {
		cfg.DrainDelay = -1 // an explicit zero means no delay, not the default
	}
	if v := get(EnvWeight); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return Config{}, meridian.FieldError(EnvWeight, "%q is not an integer", v)
		}
		cfg.Weight = n
	}
	if v := get(EnvTags); v != "" {
		for _, t := range strings.Split(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				cfg.Tags = append(cfg.Tags, t)
			}
		}
	}
	if v := get(EnvMetadata); v != "" {
		cfg.Metadata = make(map[string]string)
		for _, kv := range strings.Split(v, ",") {
			if kv = strings.TrimSpace(kv); kv == "" {
				continue
			}
			k, val, ok := strings.Cut(kv, "=")
			if !ok || strings.TrimSpace(k) == "" {
				return Config{}, meridian.FieldError(EnvMetadata, "%q is not a key=value pair", kv)
			}
			cfg.Metadata[strings.TrimSpace(k)] = strings.TrimSpace(val)
		}
	}
	switch v := get(EnvCheck); v {
	case "", "http":
	case "none":
		cfg.NoCheck = true
	default:
		return Config{}, meridian.FieldError(EnvCheck, "%q is not one of http, none", v)
	}
	return cfg, nil
}
