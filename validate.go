package meridian

import (
	"net"
	"regexp"
	"strings"
	"time"
)

// dnsLabel is RFC 1123's label: what Kubernetes and Consul accept as a
// service name, so names survive a move to either.
var dnsLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// instanceID allows what hosts, pods and "host:port" ids are made of.
var instanceID = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._:@-]{0,127})$`)

// keySegment is one "/"-separated part of a config key.
var keySegment = regexp.MustCompile(`^[A-Za-z0-9_.@=-]+$`)

// IsToken reports whether s is an RFC 9110 token, what header and cookie
// names are made of.
func IsToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return s != ""
}

// ValidateServiceName checks a service name against DNS label rules.
func ValidateServiceName(field, name string) error {
	if name == "" {
		return FieldError(field, "is required")
	}
	if !dnsLabel.MatchString(name) {
		return FieldError(field, "%q is not a valid service name: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit (DNS label rules)", name)
	}
	return nil
}

// ValidateInstanceID checks an instance id.
func ValidateInstanceID(field, id string) error {
	if id == "" {
		return FieldError(field, "is required")
	}
	if !instanceID.MatchString(id) {
		return FieldError(field, "%q is not a valid instance id: use up to 128 letters, digits and . _ : @ -, starting with a letter or digit", id)
	}
	return nil
}

// ValidateConfigKey checks a config key: "/"-separated segments such as
// "prod/orders/db_url".
func ValidateConfigKey(field, key string) error {
	if key == "" {
		return FieldError(field, "is required")
	}
	if len(key) > MaxConfigKeyLength {
		return FieldError(field, "is %d characters long; the limit is %d", len(key), MaxConfigKeyLength)
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "" {
			return FieldError(field, "%q has an empty segment: keys look like env/service/name, without leading, trailing or double '/'", key)
		}
		if seg == "." || seg == ".." || !keySegment.MatchString(seg) {
			return FieldError(field, "%q has an invalid segment %q: use letters, digits and _ . @ = -", key, seg)
		}
	}
	return nil
}

// ValidateConfigPrefix checks a listing or watch prefix: empty, or a key
// that may end in "/".
func ValidateConfigPrefix(field, prefix string) error {
	if prefix == "" {
		return nil
	}
	return ValidateConfigKey(field, strings.TrimSuffix(prefix, "/"))
}

// Normalize fills defaults into an instance about to be registered and
// checks every field, naming the first bad one. Health and RegisteredAt
// are the registry's to set and are left alone.
func (i *Instance) Normalize() error {
	if err := ValidateServiceName("service", i.Service); err != nil {
		return err
	}
	if err := ValidateInstanceID("id", i.ID); err != nil {
		return err
	}
	if i.Address == "" {
		return FieldError("address", "is required")
	}
	if len(i.Address) > 253 || strings.ContainsAny(i.Address, " /:?#") && net.ParseIP(i.Address) == nil {
		return FieldError("address", "%q is not a host name or IP address", i.Address)
	}
	if i.Port < 1 || i.Port > 65535 {
		return FieldError("port", "%d is out of range 1-65535", i.Port)
	}
	switch i.Protocol {
	case "":
		i.Protocol = ProtocolHTTP
	case ProtocolHTTP, ProtocolGRPC, ProtocolTCP:
	default:
		return FieldError("protocol", "%q is not one of http, grpc, tcp", i.Protocol)
	}
	if len(i.Version) > 64 {
		return FieldError("version", "is longer than 64 characters")
	}
	if len(i.Zone) > 64 {
		return FieldError("zone", "is longer than 64 characters")
	}
	switch {
	case i.Weight == 0:
		i.Weight = DefaultWeight
	case i.Weight < 0 || i.Weight > MaxWeight:
		return FieldError("weight", "%d is out of range 1-%d", i.Weight, MaxWeight)
	}
	if len(i.Tags) > MaxTags {
		return FieldError("tags", "has %d tags; the limit is %d", len(i.Tags), MaxTags)
	}
	if len(i.Metadata) > MaxMetadata {
		return FieldError("metadata", "has %d entries; the limit is %d", len(i.Metadata), MaxMetadata)
	}
	for k, v := range i.Metadata {
		if k == "" || len(k) > 128 || len(v) > 1024 {
			return FieldError("metadata."+k, "keys are 1-128 characters and values at most 1024")
		}
	}
	if ttl := i.TTL.D(); ttl != 0 && (ttl < MinTTL || ttl > MaxTTL) {
		return FieldError("ttl", "%s is out of range %s-%s (or 0 for no lease)", ttl, MinTTL, MaxTTL)
	}
	if i.Check != nil {
		if err := i.Check.Normalize(); err != nil {
			return err
		}
	}
	return nil
}

// Normalize fills defaults into a check spec and validates it; errors name
// the field under "check.".
func (c *CheckSpec) Normalize() error {
	switch c.Kind {
	case CheckHTTP, CheckTCP, CheckGRPC:
	case "":
		return FieldError("check.kind", "is required: one of http, tcp, grpc")
	default:
		return FieldError("check.kind", "%q is not one of http, tcp, grpc", c.Kind)
	}
	if c.Interval == 0 {
		c.Interval = Duration(DefaultCheckInterval)
	}
	if c.Interval.D() < MinCheckInterval || c.Interval.D() > time.Hour {
		return FieldError("check.interval", "%s is out of range %s-1h", c.Interval, MinCheckInterval)
	}
	if c.Timeout == 0 {
		c.Timeout = Duration(min(DefaultCheckTimeout, c.Interval.D()))
	}
	if c.Timeout <= 0 || c.Timeout > c.Interval {
		return FieldError("check.timeout", "%s must be positive and at most the interval (%s)", c.Timeout, c.Interval)
	}
	if c.SuccessesBeforePassing == 0 {
		c.SuccessesBeforePassing = DefaultSuccessesBeforePassing
	}
	if c.SuccessesBeforePassing < 1 || c.SuccessesBeforePassing > 100 {
		return FieldError("check.successes_before_passing", "%d is out of range 1-100", c.SuccessesBeforePassing)
	}
	if c.FailuresBeforeCritical == 0 {
		c.FailuresBeforeCritical = DefaultFailuresBeforeCritical
	}
	if c.FailuresBeforeCritical < 1 || c.FailuresBeforeCritical > 100 {
		return FieldError("check.failures_before_critical", "%d is out of range 1-100", c.FailuresBeforeCritical)
	}
	switch c.InitialStatus {
	case "":
		c.InitialStatus = StatusCritical
	case StatusPassing, StatusWarning, StatusCritical:
	default:
		return FieldError("check.initial_status", "%q is not one of passing, warning, critical", c.InitialStatus)
	}
	if len(c.Target) > 1024 {
		return FieldError("check.target", "is longer than 1024 characters")
	}
	return nil
}
