package aggregate_test

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/gateway/aggregate"
	"github.com/meridian-platform/meridian/internal/jsonbody"
)

func ptr[T any](v T) *T { return &v }

func dur(d time.Duration) meridian.Duration { return meridian.Duration(d) }

// one is a config with a single valid branch, for cases about other fields.
func one(mod func(*aggregate.Config)) aggregate.Config {
	c := aggregate.Config{Branches: []aggregate.Branch{{Name: "order", URL: "http://orders/v1/orders/{id}"}}}
	if mod != nil {
		mod(&c)
	}
	return c
}

// branch is a config whose only branch is b.
func branch(b aggregate.Branch) aggregate.Config {
	return aggregate.Config{Branches: []aggregate.Branch{b}}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    aggregate.Config
		fields []string // the Field of each joined error, in order; none for a valid config
	}{
		{"minimal", one(nil), nil},
		{"everything set", aggregate.Config{
			OnFailure:     aggregate.OnFailurePartial,
			Timeout:       dur(2 * time.Second),
			MaxBranchBody: 1 << 10,
			Branches: []aggregate.Branch{
				{Name: "order", Method: "QUERY", URL: "https://orders/v1/orders/{id}?expand={what}", Timeout: dur(2 * time.Second), Required: ptr(false), ForwardQuery: true},
				{URL: "http://profiles/v1/users/{user_id}"},
				{URL: "http://orders/v1/status"},
			},
		}, nil},
		{"bounds are inclusive", one(func(c *aggregate.Config) {
			c.Timeout = dur(aggregate.MaxTimeout)
			c.MaxBranchBody = aggregate.MaxBranchBodyLimit
			c.Branches[0].Timeout = dur(aggregate.MinTimeout)
		}), nil},

		{"no branches", aggregate.Config{}, []string{"branches"}},
		{"too many branches", aggregate.Config{Branches: slices.Repeat([]aggregate.Branch{{URL: "http://orders/x"}}, aggregate.MaxBranches+1)}, []string{"branches"}},
		{"on_failure", one(func(c *aggregate.Config) { c.OnFailure = "ignore" }), []string{"on_failure"}},
		{"timeout too short", one(func(c *aggregate.Config) { c.Timeout = dur(time.Microsecond) }), []string{"timeout"}},
		{"timeout too long", one(func(c *aggregate.Config) { c.Timeout = dur(6 * time.Minute) }), []string{"timeout"}},
		{"negative timeout", one(func(c *aggregate.Config) { c.Timeout = dur(-time.Second) }), []string{"timeout"}},
		{"negative max_branch_body", one(func(c *aggregate.Config) { c.MaxBranchBody = -1 }), []string{"max_branch_body"}},
		{"max_branch_body too large", one(func(c *aggregate.Config) { c.MaxBranchBody = aggregate.MaxBranchBodyLimit + 1 }), []string{"max_branch_body"}},

		{"name reserved for errors", branch(aggregate.Branch{Name: "_errors", URL: "http://orders/x"}), []string{"branches[0].name"}},
		{"name with a space", branch(aggregate.Branch{Name: "my order", URL: "http://orders/x"}), []string{"branches[0].name"}},
		{"name like an unnamed branch's label", branch(aggregate.Branch{Name: "branches[0]", URL: "http://orders/x"}), []string{"branches[0].name"}},
		{"name too long", branch(aggregate.Branch{Name: strings.Repeat("a", 65), URL: "http://orders/x"}), []string{"branches[0].name"}},
		{"duplicate name", aggregate.Config{Branches: []aggregate.Branch{
			{Name: "a", URL: "http://orders/x"},
			{URL: "http://orders/y"},
			{URL: "http://orders/z"}, // unnamed branches may be many
			{Name: "a", URL: "http://orders/w"},
		}}, []string{"branches[3].name"}},

		{"method HEAD", branch(aggregate.Branch{Method: http.MethodHead, URL: "http://orders/x"}), []string{"branches[0].method"}},
		{"method CONNECT", branch(aggregate.Branch{Method: http.MethodConnect, URL: "http://orders/x"}), []string{"branches[0].method"}},
		{"method not a token", branch(aggregate.Branch{Method: "GE T", URL: "http://orders/x"}), []string{"branches[0].method"}},

		{"url missing", branch(aggregate.Branch{Name: "a"}), []string{"branches[0].url"}},
		{"url not absolute", branch(aggregate.Branch{URL: "orders/v1/x"}), []string{"branches[0].url"}},
		{"url scheme ftp", branch(aggregate.Branch{URL: "ftp://orders/x"}), []string{"branches[0].url"}},
		{"url without host", branch(aggregate.Branch{URL: "http:///v1/x"}), []string{"branches[0].url"}},
		{"url with user info", branch(aggregate.Branch{URL: "http://u:p@orders/x"}), []string{"branches[0].url"}},
		{"url with fragment", branch(aggregate.Branch{URL: "http://orders/x#top"}), []string{"branches[0].url"}},
		{"url does not parse", branch(aggregate.Branch{URL: "http://orders/%zz"}), []string{"branches[0].url"}},
		{"placeholder not closed", branch(aggregate.Branch{URL: "http://orders/v1/{id"}), []string{"branches[0].url"}},
		{"placeholder not opened", branch(aggregate.Branch{URL: "http://orders/v1/id}"}), []string{"branches[0].url"}},
		{"placeholder empty", branch(aggregate.Branch{URL: "http://orders/v1/{}"}), []string{"branches[0].url"}},
		{"placeholder nested", branch(aggregate.Branch{URL: "http://orders/v1/{a{b}}"}), []string{"branches[0].url"}},
		{"placeholder not an identifier", branch(aggregate.Branch{URL: "http://orders/v1/{order-id}"}), []string{"branches[0].url"}},
		{"placeholder in host", branch(aggregate.Branch{URL: "http://{service}/v1/x"}), []string{"branches[0].url"}},
		{"placeholder in port", branch(aggregate.Branch{URL: "http://orders:{port}/v1/x"}), []string{"branches[0].url"}},
		{"placeholder right after host", branch(aggregate.Branch{URL: "http://orders{id}"}), []string{"branches[0].url"}},
		{"placeholder in query", branch(aggregate.Branch{URL: "http://orders?id={id}"}), nil},

		{"branch timeout too short", branch(aggregate.Branch{URL: "http://orders/x", Timeout: dur(time.Microsecond)}), []string{"branches[0].timeout"}},
		{"branch timeout beyond the default aggregation timeout", branch(aggregate.Branch{URL: "http://orders/x", Timeout: dur(11 * time.Second)}), []string{"branches[0].timeout"}},
		{"branch timeout beyond the aggregation timeout", one(func(c *aggregate.Config) {
			c.Timeout = dur(time.Second)
			c.Branches[0].Timeout = dur(2 * time.Second)
		}), []string{"branches[0].timeout"}},

		{"every problem at once", aggregate.Config{
			OnFailure:     "sometimes",
			Timeout:       dur(time.Hour),
			MaxBranchBody: -5,
			Branches: []aggregate.Branch{
				{Name: "a", URL: "http://orders/{id}"},
				{Name: "a", Method: "HEAD", URL: "gopher://x", Timeout: dur(-time.Second)},
			},
		}, []string{"on_failure", "timeout", "max_branch_body", "branches[1].name", "branches[1].method", "branches[1].url", "branches[1].timeout"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := cloneConfig(tc.cfg)
			err := tc.cfg.Validate()
			var fields []string
			for _, e := range joined(err) {
				var me *meridian.Error
				if !errors.As(e, &me) || me.Code != meridian.CodeInvalid {
					t.Fatalf("%v is not an invalid *meridian.Error", e)
				}
				fields = append(fields, me.Field)
			}
			if !slices.Equal(fields, tc.fields) {
				t.Fatalf("fields %q, want %q; errors:\n%v", fields, tc.fields, err)
			}
			if !equalConfig(tc.cfg, before) {
				t.Fatal("Validate changed the config")
			}
		})
	}
}

// TestConfigFromJSON decodes a route's JSON the way the gateway does:
// strictly, with durations as Go duration strings.
func TestConfigFromJSON(t *testing.T) {
	var cfg aggregate.Config
	err := jsonbody.Unmarshal([]byte(`{
		"on_failure": "partial",
		"timeout": "2s",
		"max_branch_body": 65536,
		"branches": [
			{"name": "order", "url": "http://orders/v1/orders/{id}", "timeout": "500ms"},
			{"url": "http://profiles/v1/users/{user}", "required": false, "forward_query": true, "method": "GET"}
		]
	}`), &cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Timeout.D() != 2*time.Second || cfg.Branches[0].Timeout.D() != 500*time.Millisecond || cfg.Branches[1].Required == nil || *cfg.Branches[1].Required || !cfg.Branches[1].ForwardQuery {
		t.Fatalf("decoded %+v", cfg)
	}

	err = jsonbody.Unmarshal([]byte(`{"branches": [{"url": "http://orders/x", "retries": 3}]}`), &cfg)
	if !meridian.IsCode(err, meridian.CodeInvalid) {
		t.Fatalf("unknown field: %v, want an invalid error", err)
	}
}

// joined splits an errors.Join result into its errors.
func joined(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func cloneConfig(c aggregate.Config) aggregate.Config {
	c.Branches = slices.Clone(c.Branches)
	return c
}

func equalConfig(a, b aggregate.Config) bool {
	return a.OnFailure == b.OnFailure && a.Timeout == b.Timeout && a.MaxBranchBody == b.MaxBranchBody &&
		slices.Equal(a.Branches, b.Branches)
}
