package controlplane_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/controlplane"
)

// checkedHook is a Config.ValidateConfig that governs the keys under
// "checked/": a value mentioning "broken" has two problems, one
// mentioning "oops" fails with a plain error, and one mentioning "legacy"
// is refused once legacy is turned off. It records every call.
type checkedHook struct {
	legacy atomic.Bool
	mu     sync.Mutex
	calls  []string // "key format value"
}

func (h *checkedHook) validate(key string, format meridian.ConfigFormat, value string) error {
	h.mu.Lock()
	h.calls = append(h.calls, fmt.Sprintf("%s %s %s", key, format, value))
	h.mu.Unlock()
	switch {
	case !strings.HasPrefix(key, "checked/"):
		return nil
	case strings.Contains(value, "broken"):
		return errors.Join(
			&meridian.Error{Code: meridian.CodeInvalid, Field: "routes[1].match.path", Message: `route "b": must start with /`},
			&meridian.Error{Code: meridian.CodeUnavailable, Field: "routes[3].name", Message: `"B" is not a valid name`, Err: errors.New("the cause, never shown")},
		)
	case strings.Contains(value, "oops"):
		return errors.New("not a document")
	case strings.Contains(value, "legacy") && !h.legacy.Load():
		return meridian.FieldError("version", "legacy documents are no longer accepted")
	}
	return nil
}

func (h *checkedHook) called() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.calls...)
}

func TestConfigValidateHookRefusesPutsAndRollbacksAndNothingIsStored(t *testing.T) {
	hook := &checkedHook{}
	hook.legacy.Store(true)
	one, _ := startOne(t, func(c *controlplane.Config) { c.ValidateConfig = hook.validate })
	c := &configServer{URL: one.URL, secret: one.secret}
	const key = "checked/doc"
	path := "/v1/config/keys/" + key

	// The hook sees every write, with the format defaulted, and decides
	// only for its keys.
	c.put(t, "prod/free", map[string]any{"value": "broken"})
	if got := hook.called(); len(got) != 1 || got[0] != "prod/free text broken" {
		t.Fatalf("hook calls = %q, want the put of prod/free as text", got)
	}
	r1 := c.put(t, key, map[string]any{"value": "kind: legacy\n", "format": "yaml", "message": "first"})

	for _, tc := range []struct {
		name, body string
		field      string
		detail     string // the whole detail
	}{
		{"several problems, every one listed", `{"value": "broken: true", "format": "yaml"}`, "value.routes[1].match.path",
			`value.routes[1].match.path: route "b": must start with /; value.routes[3].name: "B" is not a valid name`},
		{"a plain error", `{"value": "oops"}`, "value", "value: not a document"},
		{"one problem", `{"value": "{\"legacy\": 2}", "format": "json", "expect_revision": ` + fmt.Sprint(r1.Revision) + `}`, "value.version",
			"value.version: legacy documents are no longer accepted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hook.legacy.Store(tc.name != "one problem")
			defer hook.legacy.Store(true)
			p := c.do(t, "", http.MethodPut, path, tc.body).wantProblem(t, http.StatusBadRequest, tc.field)
			if p.Code != "invalid" || p.Detail != tc.detail {
				t.Fatalf("code %q detail %q, want invalid and %q", p.Code, p.Detail, tc.detail)
			}
		})
	}
	// A value that does not parse in its format never reaches the hook.
	before := len(hook.called())
	c.do(t, "", http.MethodPut, path, `{"value": "{", "format": "json"}`).wantProblem(t, http.StatusBadRequest, "value")
	if n := len(hook.called()); n != before {
		t.Fatalf("the hook was called on a value that does not parse")
	}
	if es := c.do(t, "", http.MethodGet, "/v1/config/history/"+key, "").entries(t); len(es) != 1 || es[0] != r1 {
		t.Fatalf("history after refused puts = %+v, want only %+v", es, r1)
	}

	// A rollback to a revision valid when written but not now is refused
	// the same way, naming the revision; one that is still valid works.
	r2 := c.put(t, key, map[string]any{"value": "kind: current\n", "format": "yaml"})
	hook.legacy.Store(false)
	p := c.do(t, "", http.MethodPost, "/v1/config/rollback/"+key, fmt.Sprintf(`{"revision": %d}`, r1.Revision)).
		wantProblem(t, http.StatusBadRequest, "revision")
	want := fmt.Sprintf(`revision: %d's value is no longer valid for config key %q: version: legacy documents are no longer accepted`, r1.Revision, key)
	if p.Detail != want {
		t.Fatalf("refused rollback: detail %q, want %q", p.Detail, want)
	}
	if e := c.do(t, "", http.MethodGet, path, "").entry(t); e != r2 {
		t.Fatalf("latest after a refused rollback = %+v, want %+v", e, r2)
	}
	rb := c.do(t, "", http.MethodPost, "/v1/config/rollback/"+key, fmt.Sprintf(`{"revision": %d}`, r2.Revision)).entry(t)
	if rb.Value != r2.Value || rb.Revision <= r2.Revision {
		t.Fatalf("rollback to a valid revision = %+v", rb)
	}
	if got := hook.called(); got[len(got)-1] != key+" yaml kind: current\n" {
		t.Fatalf("the last hook call = %q, want the rollback's value", got[len(got)-1])
	}
	if es := c.do(t, "", http.MethodGet, "/v1/config/history/"+key, "").entries(t); len(es) != 3 {
		t.Fatalf("history = %+v, want 3 revisions", es)
	}
}
