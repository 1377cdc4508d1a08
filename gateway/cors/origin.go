package cors

import (
	"net/netip"
	"strconv"
	"strings"
)

// pattern is one allowed origin other than "*": exact, or a subdomain
// wildcard "scheme://*.domain[:port]" held as the text either side of "*".
type pattern struct {
	exact  string // the lowercase origin; empty for a wildcard
	prefix string // "https://"
	suffix string // ".example.com" or ".example.com:8443"
}

const originForm = "must be scheme://host[:port], such as https://app.example.com, http://localhost:3000 or https://*.example.com"

// parseOrigin parses a configured origin other than "*". The error is a
// message to follow the quoted value, or "" when s is valid.
func parseOrigin(s string) (pattern, string) {
	scheme, hostport, ok := strings.Cut(s, "://")
	if !ok || !validScheme(scheme) || hostport == "" {
		return pattern{}, originForm
	}
	if strings.ContainsAny(hostport, "/?#") {
		return pattern{}, "must be scheme://host[:port], with no path, query or trailing slash: browsers send the origin alone"
	}
	if strings.ContainsAny(hostport, "@ \t") {
		return pattern{}, originForm
	}
	host, port, hasPort := hostport, "", false
	if strings.HasPrefix(hostport, "[") {
		end := strings.IndexByte(hostport, ']')
		if end < 0 {
			return pattern{}, originForm
		}
		host = hostport[:end+1]
		switch rest := hostport[end+1:]; {
		case rest == "":
		case rest[0] == ':':
			port, hasPort = rest[1:], true
		default:
			return pattern{}, originForm
		}
		if a, err := netip.ParseAddr(host[1 : len(host)-1]); err != nil || !a.Is6() || a.Zone() != "" {
			return pattern{}, "has an invalid IPv6 address"
		}
	} else if i := strings.LastIndexByte(hostport, ':'); i >= 0 {
		host, port, hasPort = hostport[:i], hostport[i+1:], true
	}
	if hasPort {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || port[0] == '0' {
			return pattern{}, "has an invalid port: use 1-65535, or none for the scheme's default"
		}
		if port == defaultPort(strings.ToLower(scheme)) {
			return pattern{}, "has the scheme's default port :" + port + ", which browsers leave out of Origin: drop it"
		}
	}
	portPart := ""
	if hasPort {
		portPart = ":" + port
	}
	if base, ok := strings.CutPrefix(host, "*."); ok {
		if !validHostname(base) {
			return pattern{}, `must have a host name after "*.", as in https://*.example.com`
		}
		if !strings.Contains(base, ".") {
			return pattern{}, "would allow every site under a top-level domain: name a domain, as in https://*.example.com"
		}
		return pattern{
			prefix: strings.ToLower(scheme) + "://",
			suffix: "." + strings.ToLower(base) + portPart,
		}, ""
	}
	if strings.Contains(host, "*") {
		return pattern{}, `may have one wildcard, as the whole first label: https://*.example.com`
	}
	if !strings.HasPrefix(host, "[") && !validHostname(host) {
		return pattern{}, "has an invalid host name"
	}
	return pattern{exact: strings.ToLower(s)}, ""
}

// origins is the compiled AllowOrigins list.
type origins struct {
	exact    map[string]struct{}
	wildcard []pattern
}

func compileOrigins(list []string) *origins {
	o := &origins{exact: make(map[string]struct{}, len(list))}
	for _, s := range list {
		p, _ := parseOrigin(s) // validated
		if p.exact != "" {
			o.exact[p.exact] = struct{}{}
		} else {
			o.wildcard = append(o.wildcard, p)
		}
	}
	return o
}

// allowed reports whether a request's Origin matches. A wildcard matches
// one or more DNS labels in place of "*", nothing else: not the bare
// domain, another port, or characters a host cannot have.
func (o *origins) allowed(origin string) bool {
	origin = strings.ToLower(origin) // no copy when already lowercase, as browsers send it
	if _, ok := o.exact[origin]; ok {
		return true
	}
	for _, p := range o.wildcard {
		if len(origin) > len(p.prefix)+len(p.suffix) &&
			strings.HasPrefix(origin, p.prefix) && strings.HasSuffix(origin, p.suffix) &&
			validHostname(origin[len(p.prefix):len(origin)-len(p.suffix)]) {
			return true
		}
	}
	return false
}

func validScheme(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		c := s[i] | 0x20 // ASCII lowercase for letters
		switch {
		case 'a' <= c && c <= 'z':
		case i > 0 && (('0' <= s[i] && s[i] <= '9') || s[i] == '+' || s[i] == '-' || s[i] == '.'):
		default:
			return false
		}
	}
	return true
}

func defaultPort(scheme string) string {
	switch scheme {
	case "https", "wss":
		return "443"
	case "http", "ws":
		return "80"
	}
	return ""
}

// validHostname reports dot-separated labels of letters, digits and
// hyphens (RFC 1123), none empty or with a hyphen at either end, 253
// characters at most. IPv4 addresses pass too.
func validHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := range len(label) {
			c := label[i] | 0x20
			if !('a' <= c && c <= 'z') && !('0' <= label[i] && label[i] <= '9') && label[i] != '-' {
				return false
			}
		}
	}
	return true
}
