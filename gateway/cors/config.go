package cors

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-platform/meridian"
)

// Config is a route's CORS policy. Only AllowOrigins is required.
type Config struct {
	// AllowOrigins are the origins whose pages may call the route: exact
	// origins ("https://app.example.com", "http://localhost:3000"), one
	// subdomain wildcard per entry ("https://*.example.com": any subdomain of
	// example.com, however deep, over https on the default port, but not
	// example.com itself), or "*" alone for every origin. Origins compare
	// case-insensitively; a default port (:443 for https, :80 for http) is
	// refused because browsers never send it. Required.
	AllowOrigins []string `json:"allow_origins"`
	// AllowMethods are the methods a preflight may ask for. Methods are
	// case-sensitive. Default GET, HEAD, POST.
	AllowMethods []string `json:"allow_methods,omitempty"`
	// AllowHeaders are the request headers a preflight may ask for, beyond
	// the CORS-safelisted ones browsers send without asking; "*" allows any
	// (not with AllowCredentials). Names are case-insensitive. Default none:
	// a request with Content-Type: application/json, Authorization or any
	// custom header is refused at preflight until its headers are listed.
	AllowHeaders []string `json:"allow_headers,omitempty"`
	// ExposeHeaders are the response headers scripts may read beyond the
	// safelisted ones (Cache-Control, Content-Language, Content-Length,
	// Content-Type, Expires, Last-Modified, Pragma); "*" exposes all (not
	// with AllowCredentials). Default none.
	ExposeHeaders []string `json:"expose_headers,omitempty"`
	// AllowCredentials lets the pages send cookies and HTTP authentication
	// and read the answer. It rules out "*" in every list above.
	AllowCredentials bool `json:"allow_credentials,omitempty"`
	// MaxAge is how long a browser may cache a preflight's answer, in whole
	// seconds, at most 24h (browsers cap it lower: Chromium at 2h). Default
	// 0: no Access-Control-Max-Age, so browsers use theirs (5s).
	MaxAge meridian.Duration `json:"max_age,omitempty"`
}

// MaxMaxAge bounds Config.MaxAge: Firefox's cap, the largest of any browser.
const MaxMaxAge = 24 * time.Hour

// defaultMethods are the CORS-safelisted methods, which need no preflight.
var defaultMethods = []string{http.MethodGet, http.MethodHead, http.MethodPost}

// Validate reports the first invalid field, naming it ("allow_origins[2]",
// "max_age"). It does not change c.
func (c *Config) Validate() error {
	if len(c.AllowOrigins) == 0 {
		return meridian.FieldError("allow_origins", `is required: list the origins whose pages may call the route, such as "https://app.example.com", or "*"`)
	}
	seen := make(map[string]bool, len(c.AllowOrigins))
	for i, o := range c.AllowOrigins {
		field := "allow_origins[" + strconv.Itoa(i) + "]"
		if o == "*" {
			if c.AllowCredentials {
				return meridian.FieldError(field, `"*" cannot be combined with allow_credentials: browsers reject a wildcard origin on credentialed requests; list the origins`)
			}
			if len(c.AllowOrigins) > 1 {
				return meridian.FieldError(field, `"*" allows every origin: list no others beside it`)
			}
			continue
		}
		if o == "null" {
			return meridian.FieldError(field, `"null" is the origin of sandboxed pages and file: URLs, which any page can produce: list real origins`)
		}
		if _, err := parseOrigin(o); err != "" {
			return meridian.FieldError(field, "%q %s", o, err)
		}
		key := strings.ToLower(o)
		if seen[key] {
			return meridian.FieldError(field, "%q is listed twice", o)
		}
		seen[key] = true
	}
	for i, m := range c.AllowMethods {
		field := "allow_methods[" + strconv.Itoa(i) + "]"
		switch up := strings.ToUpper(m); {
		case m == "*":
			return meridian.FieldError(field, `"*" is not supported: list the methods`)
		case !isToken(m):
			return meridian.FieldError(field, "%q is not a method name", m)
		case m != up && isStandardMethod(up):
			return meridian.FieldError(field, "%q: methods are case-sensitive; write %q", m, up)
		}
	}
	if err := validateHeaders("allow_headers", c.AllowHeaders, c.AllowCredentials); err != nil {
		return err
	}
	if err := validateHeaders("expose_headers", c.ExposeHeaders, c.AllowCredentials); err != nil {
		return err
	}
	switch d := c.MaxAge.D(); {
	case d < 0:
		return meridian.FieldError("max_age", "%s must not be negative", d)
	case d > MaxMaxAge:
		return meridian.FieldError("max_age", "%s is above the limit of 24h", d)
	case d%time.Second != 0:
		return meridian.FieldError("max_age", "%s is not a whole number of seconds", d)
	}
	return nil
}

func validateHeaders(field string, names []string, credentials bool) error {
	for i, h := range names {
		f := field + "[" + strconv.Itoa(i) + "]"
		switch {
		case h == "*" && credentials:
			return meridian.FieldError(f, `"*" cannot be combined with allow_credentials: browsers then read it as a header named "*"; list the headers`)
		case h == "*" && len(names) > 1:
			return meridian.FieldError(f, `"*" allows every header: list no others beside it`)
		case h != "*" && !isToken(h):
			return meridian.FieldError(f, "%q is not a header name", h)
		}
	}
	return nil
}

func isStandardMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// isToken reports an RFC 9110 token: what method and field names are made of.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
