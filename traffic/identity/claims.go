package identity

import (
	"encoding/json"
	"strings"
)

// lookupClaim finds a claim by name, or by a dotted path into nested
// objects ("realm_access.roles"). The whole name is tried first, so a
// namespaced claim with dots in its name ("https://example.com/roles")
// is found as itself.
func lookupClaim(claims map[string]any, path string) (any, bool) {
	if v, ok := claims[path]; ok {
		return v, true
	}
	if !strings.Contains(path, ".") {
		return nil, false
	}
	var cur any = claims
	for seg := range strings.SplitSeq(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[seg]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// claimList reads a claim that lists names: a string is split at any of
// seps, an array contributes its string elements. Names that could not
// travel in the forwarded header as they are (empty, holding a control
// character or a comma, or with surrounding space) are dropped, so Roles
// and Scopes always match what the upstream reads back.
func claimList(v any, seps string) []string {
	var out []string
	add := func(s string) {
		if validName(s, ",") && strings.TrimSpace(s) == s {
			out = append(out, s)
		}
	}
	switch v := v.(type) {
	case string:
		for _, s := range strings.FieldsFunc(v, func(r rune) bool { return strings.ContainsRune(seps, r) }) {
			add(s)
		}
	case []any:
		for _, e := range v {
			if s, ok := e.(string); ok {
				add(s)
			}
		}
	}
	return out
}

// validName reports whether s is non-empty, has no control characters and
// none of the bytes in forbidden.
func validName(s, forbidden string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f || strings.IndexByte(forbidden, s[i]) >= 0 {
			return false
		}
	}
	return true
}

// claimValue renders a claim for a header: strings as they are, numbers
// as written in the token, booleans as true/false, arrays of those
// comma-joined. Objects, nulls and anything with a control character are
// not forwarded.
func claimValue(v any) (string, bool) {
	var s string
	switch v := v.(type) {
	case string:
		s = v
	case json.Number:
		s = v.String()
	case float64: // a Claims map built by hand
		b, _ := json.Marshal(v)
		s = string(b)
	case bool:
		s = "false"
		if v {
			s = "true"
		}
	case []any:
		parts := make([]string, 0, len(v))
		for _, e := range v {
			p, ok := claimValue(e)
			if !ok {
				return "", false
			}
			if _, nested := e.([]any); nested {
				return "", false
			}
			parts = append(parts, p)
		}
		s = strings.Join(parts, ",")
	default:
		return "", false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return "", false
		}
	}
	return s, s != ""
}
