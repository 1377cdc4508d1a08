// Package meridian holds the domain types shared by every Meridian component:
// service instances and their health, configuration entries and their
// revisions, API tokens and roles, and the error type with codes that every
// layer returns and the HTTP edge maps to problem+json.
//
// Nothing here does I/O. Engines (NATS JetStream, etcd, …) and transports
// (HTTP, CLI) live in their own packages and depend on this one.
package meridian

import (
	"time"
)

// Protocol is how an instance is spoken to.
type Protocol string

const (
	ProtocolHTTP Protocol = "http"
	ProtocolGRPC Protocol = "grpc"
	ProtocolTCP  Protocol = "tcp"
)

// HealthStatus is an instance's health as the control plane sees it.
// Passing and warning instances are served by discovery; critical ones are
// listed with their reason but left out of discovery results.
type HealthStatus string

const (
	StatusPassing  HealthStatus = "passing"
	StatusWarning  HealthStatus = "warning"
	StatusCritical HealthStatus = "critical"
)

// Serving reports whether discovery hands out an instance in this state.
func (s HealthStatus) Serving() bool { return s == StatusPassing || s == StatusWarning }

// CheckKind names an active health check the control plane runs.
type CheckKind string

const (
	CheckHTTP CheckKind = "http" // GET the URL, 2xx passes
	CheckTCP  CheckKind = "tcp"  // connect to the address
	CheckGRPC CheckKind = "grpc" // grpc.health.v1.Health/Check, SERVING passes
)

// CheckSpec describes an active health check. Zero durations and thresholds
// take the defaults documented on each field (see Normalize).
type CheckSpec struct {
	Kind CheckKind `json:"kind"`
	// Target is what the check probes: for http a path ("/healthz") or a full
	// URL; for tcp and grpc a host:port. Empty means the instance's own
	// address and port (and "/healthz" for http).
	Target string `json:"target,omitempty"`
	// GRPCService is the service name sent in the gRPC health request; empty
	// asks about the server as a whole.
	GRPCService string `json:"grpc_service,omitempty"`
	// Interval between probes. Default 10s, at least 100ms.
	Interval Duration `json:"interval,omitempty"`
	// Timeout of one probe. Default 2s, at most Interval.
	Timeout Duration `json:"timeout,omitempty"`
	// SuccessesBeforePassing consecutive successes turn a warning or critical
	// instance passing. Default 1.
	SuccessesBeforePassing int `json:"successes_before_passing,omitempty"`
	// FailuresBeforeCritical consecutive failures turn an instance critical;
	// fewer failures make it warning. Default 3.
	FailuresBeforeCritical int `json:"failures_before_critical,omitempty"`
	// InitialStatus is the status before the first probe. Default critical,
	// so an instance takes traffic only once it has proved itself.
	InitialStatus HealthStatus `json:"initial_status,omitempty"`
}

// Check defaults.
const (
	DefaultCheckInterval          = 10 * time.Second
	DefaultCheckTimeout           = 2 * time.Second
	MinCheckInterval              = 100 * time.Millisecond
	DefaultSuccessesBeforePassing = 1
	DefaultFailuresBeforeCritical = 3
)

// Health is the current health of an instance.
type Health struct {
	Status HealthStatus `json:"status"`
	// Output is the last probe's result or the reason for the status
	// ("HTTP 503", "dial tcp …: connection refused", "lease expired").
	Output string `json:"output,omitempty"`
	// Since is when Status last changed.
	Since time.Time `json:"since"`
}

// Instance is one registered instance of a service.
type Instance struct {
	Service  string            `json:"service"`
	ID       string            `json:"id"`
	Address  string            `json:"address"`
	Port     int               `json:"port"`
	Protocol Protocol          `json:"protocol"`
	Version  string            `json:"version,omitempty"`
	Zone     string            `json:"zone,omitempty"`
	Weight   int               `json:"weight"`
	Tags     []string          `json:"tags,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	// TTL is the lease: without a heartbeat for this long the instance is
	// removed. Zero means no lease (the instance stays until deregistered).
	TTL   Duration   `json:"ttl,omitempty"`
	Check *CheckSpec `json:"check,omitempty"`

	Health       Health    `json:"health"`
	RegisteredAt time.Time `json:"registered_at"`
	// Revision is the store revision of this record; it grows with every
	// change of any instance, so it also serves as a watch index.
	Revision uint64 `json:"revision"`
}

// Instance defaults and limits.
const (
	DefaultWeight = 100
	MaxWeight     = 10000
	MinTTL        = time.Second
	MaxTTL        = 24 * time.Hour
	MaxTags       = 64
	MaxMetadata   = 64
)

// HostPort is the instance's dialable address.
func (i *Instance) HostPort() string { return joinHostPort(i.Address, i.Port) }

// ServiceSummary is one line of the service catalogue.
type ServiceSummary struct {
	Name      string         `json:"name"`
	Instances int            `json:"instances"`
	ByStatus  map[string]int `json:"by_status"`
	Versions  []string       `json:"versions,omitempty"`
}

// EventType says what happened in a watch event.
type EventType string

const (
	EventPut    EventType = "put"    // created or changed
	EventDelete EventType = "delete" // removed (deregistered, expired, deleted)
	// EventSync marks the end of a watch's initial snapshot or backlog:
	// everything up to Index has been delivered.
	EventSync EventType = "sync"
)

// InstanceEvent is one change in the registry's change stream.
type InstanceEvent struct {
	Type     EventType `json:"type"`
	Index    uint64    `json:"index"`
	Service  string    `json:"service,omitempty"`  // empty on sync
	ID       string    `json:"id,omitempty"`       // empty on sync
	Instance *Instance `json:"instance,omitempty"` // nil on delete and sync
	Reason   string    `json:"reason,omitempty"`   // on delete: deregistered, lease expired
}

// ConfigFormat says how a config value is encoded.
type ConfigFormat string

const (
	FormatJSON ConfigFormat = "json"
	FormatYAML ConfigFormat = "yaml"
	FormatText ConfigFormat = "text"
)

// ConfigEntry is one revision of one config key.
type ConfigEntry struct {
	Key      string       `json:"key"`
	Value    string       `json:"value"`
	Format   ConfigFormat `json:"format,omitempty"` // empty on a delete revision
	Revision uint64       `json:"revision"`
	// Deleted marks the revision that deleted the key (it has no value).
	Deleted bool      `json:"deleted,omitempty"`
	Author  string    `json:"author"`
	Message string    `json:"message,omitempty"`
	Time    time.Time `json:"time"`
}

// ConfigEvent is one change in the config change stream.
type ConfigEvent struct {
	Type  EventType   `json:"type"`
	Index uint64      `json:"index"`
	Entry ConfigEntry `json:"entry"`
}

// Config limits.
const (
	MaxConfigKeyLength  = 512
	DefaultMaxValueSize = 512 << 10
)

// Role is what a token may do.
type Role string

const (
	RoleAdmin    Role = "admin"    // everything, including tokens
	RoleOperator Role = "operator" // read and write registry and config
	RoleViewer   Role = "viewer"   // read only
	RoleService  Role = "service"  // register its own service's instances, discover, read its config
)

// Token describes an API token; the secret itself is never stored.
type Token struct {
	Name      string    `json:"name"`
	Role      Role      `json:"role"`
	Service   string    `json:"service,omitempty"` // for RoleService
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by,omitempty"`
}
