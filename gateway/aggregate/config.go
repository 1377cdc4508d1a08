package aggregate

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/meridian-platform/meridian"
)

// Config is one aggregate route.
type Config struct {
	// Branches are the upstream calls, made in parallel; their answers are
	// merged in this order. At least one, at most MaxBranches.
	Branches []Branch `json:"branches"`
	// OnFailure is what a failed required branch does to the answer:
	// OnFailureFail (the default, "") answers a problem, 502 or 504 when
	// the branch timed out; OnFailurePartial sets the branch's key to null
	// and lists its failure under "_errors". Either way, an answer where
	// every branch failed is a problem.
	OnFailure string `json:"on_failure,omitempty"`
	// Timeout bounds the whole aggregation, every branch included.
	// Default DefaultTimeout; MinTimeout to MaxTimeout.
	Timeout meridian.Duration `json:"timeout,omitempty"`
	// MaxBranchBody is the most bytes read from one branch's body; a
	// larger body fails the branch. Default DefaultMaxBranchBody, at most
	// MaxBranchBodyLimit (every branch's body is held in memory until the
	// answer is written).
	MaxBranchBody int64 `json:"max_branch_body,omitempty"`
}

// Branch is one upstream call.
type Branch struct {
	// Name is the key the branch's JSON goes under in the merged object:
	// 1-64 letters, digits and _ . -, starting with a letter or digit. Empty
	// merges the members of the branch's JSON object into the root. Names
	// are unique.
	Name string `json:"name,omitempty"`
	// Method of the branch request. Default GET. HEAD, CONNECT and TRACE
	// are refused: their answers carry no JSON to merge.
	Method string `json:"method,omitempty"`
	// URL to call, http or https, such as "http://orders/v1/orders/{id}".
	// {name} placeholders (Go identifiers) are filled from the incoming
	// request's path values and may stand in the path and the query only.
	URL string `json:"url"`
	// Timeout of this branch. Default: the aggregation's timeout, which
	// also bounds it; MinTimeout to the aggregation's timeout.
	Timeout meridian.Duration `json:"timeout,omitempty"`
	// Required branches decide the answer under OnFailureFail. Default
	// true. Under OnFailurePartial every branch is treated as optional.
	Required *bool `json:"required,omitempty"`
	// ForwardQuery appends the incoming request's query string to URL
	// (after URL's own query, if any).
	ForwardQuery bool `json:"forward_query,omitempty"`
}

// OnFailure values.
const (
	OnFailureFail    = "fail"
	OnFailurePartial = "partial"
)

// Defaults and limits.
const (
	DefaultTimeout       = 10 * time.Second
	MinTimeout           = time.Millisecond
	MaxTimeout           = 5 * time.Minute
	DefaultMaxBranchBody = 4 << 20
	MaxBranchBodyLimit   = 64 << 20
	MaxBranches          = 32
)

// ErrorsKey is the merged object's member listing failed branches.
const ErrorsKey = "_errors"

// branchName keeps names usable as JSON keys in any client and distinct
// from ErrorsKey and from "branches[i]", the label of an unnamed branch.
var branchName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// placeholderName is what Go's ServeMux accepts as a wildcard name.
var placeholderName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Validate reports every problem with c at once, joined with errors.Join;
// each is a *meridian.Error with code invalid whose Field is the JSON path
// of the offending value ("branches[1].url"). It does not change c.
func (c *Config) Validate() error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	switch c.OnFailure {
	case "", OnFailureFail, OnFailurePartial:
	default:
		add(meridian.FieldError("on_failure", "%q is not one of %s, %s", c.OnFailure, OnFailureFail, OnFailurePartial))
	}
	timeout := DefaultTimeout
	if c.Timeout != 0 {
		timeout = c.Timeout.D()
		add(checkTimeout("timeout", timeout, MaxTimeout, ""))
	}
	if c.MaxBranchBody < 0 || c.MaxBranchBody > MaxBranchBodyLimit {
		add(meridian.FieldError("max_branch_body", "%d is out of range 1-%d bytes (or 0 for the default, %d)", c.MaxBranchBody, MaxBranchBodyLimit, DefaultMaxBranchBody))
	}
	switch {
	case len(c.Branches) == 0:
		add(meridian.FieldError("branches", "is empty; at least one branch is required"))
	case len(c.Branches) > MaxBranches:
		add(meridian.FieldError("branches", "has %d branches; the limit is %d", len(c.Branches), MaxBranches))
	}
	named := map[string]int{}
	for i, b := range c.Branches {
		field := fmt.Sprintf("branches[%d].", i)
		if b.Name != "" {
			if !branchName.MatchString(b.Name) {
				add(meridian.FieldError(field+"name", "%q is not a valid name: use 1-64 letters, digits and _ . -, starting with a letter or digit (or leave it empty to merge into the root)", b.Name))
			} else if j, dup := named[b.Name]; dup {
				add(meridian.FieldError(field+"name", "%q is also the name of branches[%d]; names are unique", b.Name, j))
			} else {
				named[b.Name] = i
			}
		}
		add(checkMethod(field+"method", b.Method))
		if _, err := parseTemplate(b.URL); err != nil {
			add(meridian.FieldError(field+"url", "%s", err))
		}
		if b.Timeout != 0 {
			add(checkTimeout(field+"timeout", b.Timeout.D(), timeout, " (the aggregation's timeout, which bounds every branch)"))
		}
	}
	return errors.Join(errs...)
}

func checkTimeout(field string, d, limit time.Duration, why string) error {
	if d < MinTimeout || d > limit {
		return meridian.FieldError(field, "%s is out of range %s-%s%s", d, MinTimeout, limit, why)
	}
	return nil
}

func checkMethod(field, m string) error {
	switch m {
	case "":
		return nil
	case http.MethodHead, http.MethodConnect, http.MethodTrace:
		return meridian.FieldError(field, "%s is refused: its answer carries no JSON to merge", m)
	}
	for i := 0; i < len(m); i++ {
		if !isTokenChar(m[i]) {
			return meridian.FieldError(field, "%q is not an HTTP method", m)
		}
	}
	return nil
}

// isTokenChar reports whether c is an RFC 9110 §5.6.2 tchar.
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// template is a branch URL split into literal text and placeholders.
type template struct {
	parts []part
}

// part is literal text, or a placeholder when name is set.
type part struct {
	lit   string
	name  string
	query bool // the placeholder stands in the query: escaped as a query value
}

// parseTemplate splits s into parts and checks that it is an http or
// https URL with a host, placeholders only after the host, and no
// fragment.
func parseTemplate(s string) (template, error) {
	if s == "" {
		return template{}, errors.New("is required")
	}
	var (
		t      template
		sample strings.Builder // s with every placeholder replaced by "x"
		first  = -1            // offset of the first placeholder
		query  = strings.IndexByte(s, '?')
	)
	for rest, off := s, 0; rest != ""; {
		open := strings.IndexAny(rest, "{}")
		if open < 0 {
			t.parts = append(t.parts, part{lit: rest})
			sample.WriteString(rest)
			break
		}
		if rest[open] == '}' {
			return template{}, fmt.Errorf("%q has a '}' without its '{' at offset %d", s, off+open)
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return template{}, fmt.Errorf("%q has a '{' without its '}' at offset %d", s, off+open)
		}
		name := rest[open+1 : open+end]
		if !placeholderName.MatchString(name) {
			return template{}, fmt.Errorf("%q has a malformed placeholder {%s}: the name is a Go identifier, as in {id}", s, name)
		}
		if open > 0 {
			t.parts = append(t.parts, part{lit: rest[:open]})
			sample.WriteString(rest[:open])
		}
		if first < 0 {
			first = off + open
		}
		t.parts = append(t.parts, part{name: name, query: query >= 0 && off+open > query})
		sample.WriteString("x")
		rest, off = rest[open+end+1:], off+open+end+1
	}
	u, err := url.Parse(sample.String())
	switch {
	case err != nil:
		return template{}, fmt.Errorf("%q is not a URL", s)
	case u.Scheme != "http" && u.Scheme != "https":
		return template{}, fmt.Errorf("%q is not an http or https URL", s)
	case u.Host == "" || u.Opaque != "":
		return template{}, fmt.Errorf("%q has no host", s)
	case u.User != nil:
		return template{}, fmt.Errorf("%q has user information; send credentials in headers", s)
	case strings.Contains(s, "#"):
		return template{}, fmt.Errorf("%q has a fragment, which is never sent", s)
	}
	if first >= 0 {
		// The authority ends at the first '/' or '?' after "scheme://".
		start := len(u.Scheme) + len("://")
		if end := strings.IndexAny(s[start:], "/?"); end < 0 || first < start+end {
			return template{}, fmt.Errorf("%q has a placeholder in its scheme or host; placeholders may stand in the path and query only", s)
		}
	}
	return t, nil
}

// fill writes the template with each placeholder's path value from r,
// escaped for where it stands. A missing value, or "." or ".." in the
// path, is the client's error: such a URL would call another resource.
func (t template) fill(r *http.Request) (string, error) {
	var b strings.Builder
	for _, p := range t.parts {
		if p.name == "" {
			b.WriteString(p.lit)
			continue
		}
		v := r.PathValue(p.name)
		switch {
		case v == "":
			return "", meridian.FieldError("path", "has no value for {%s}", p.name)
		case p.query:
			b.WriteString(url.QueryEscape(v))
		case v == "." || v == "..":
			return "", meridian.FieldError("path", "value %q of {%s} is not allowed", v, p.name)
		default:
			b.WriteString(url.PathEscape(v))
		}
	}
	return b.String(), nil
}
