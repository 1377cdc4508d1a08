package client_test

// The control plane's server is being written at the same time as this
// client, so these tests run the client against a test double: an
// httptest.Server that answers as docs/api.md documents. End-to-end tests
// against the real server (controlplane/) come with it.

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/client"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// seen is what the double received.
type seen struct {
	Method string
	Path   string // escaped, as sent on the wire
	Query  string
	Body   string
	Auth   string
}

// answer is what the double sends back.
type answer struct {
	Status      int
	ContentType string
	Index       string // X-Meridian-Index
	Body        string
}

// double is an httptest.Server answering every request with one canned
// answer and recording the requests.
type double struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []seen
	ans answer
}

func newDouble(t *testing.T, ans answer) *double {
	t.Helper()
	d := &double{ans: ans}
	d.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		d.mu.Lock()
		d.got = append(d.got, seen{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, string(body), r.Header.Get("Authorization")})
		a := d.ans
		d.mu.Unlock()
		if a.ContentType == "" {
			a.ContentType = "application/json"
		}
		w.Header().Set("Content-Type", a.ContentType)
		if a.Index != "" {
			w.Header().Set(client.IndexHeader, a.Index)
		}
		if a.Status == 0 {
			a.Status = http.StatusOK
		}
		w.WriteHeader(a.Status)
		io.WriteString(w, a.Body)
	}))
	t.Cleanup(d.srv.Close)
	return d
}

func (d *double) client(t *testing.T, token string) *client.Client {
	t.Helper()
	c, err := client.New(d.srv.URL, token, client.WithHTTPClient(d.srv.Client()))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (d *double) requests() []seen {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]seen(nil), d.got...)
}

func TestNew(t *testing.T) {
	tests := []struct {
		name, addr, token string
		wantAddr          string
		wantErrField      string
	}{
		{name: "host:port", addr: "127.0.0.1:7400", wantAddr: "127.0.0.1:7400"},
		{name: "http URL", addr: "http://cp.internal:7400", wantAddr: "http://cp.internal:7400"},
		{name: "https URL with trailing slash", addr: "https://cp.example.com/", wantAddr: "https://cp.example.com"},
		{name: "https URL with a path prefix", addr: "https://proxy.example.com/meridian", wantAddr: "https://proxy.example.com/meridian"},
		{name: "empty", addr: "", wantErrField: "addr"},
		{name: "other scheme", addr: "ftp://cp:21", wantErrField: "addr"},
		{name: "query", addr: "http://cp:7400/?x=1", wantErrField: "addr"},
		{name: "credentials in the URL", addr: "http://u:p@cp:7400", wantErrField: "addr"},
		{name: "token with a newline", addr: "cp:7400", token: "mrd_abc\n", wantErrField: "token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := client.New(tt.addr, tt.token)
			if tt.wantErrField != "" {
				var me *meridian.Error
				if !errors.As(err, &me) || me.Code != meridian.CodeInvalid || me.Field != tt.wantErrField {
					t.Fatalf("New(%q) error = %v, want invalid %s", tt.addr, err, tt.wantErrField)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Addr() != tt.wantAddr {
				t.Errorf("Addr() = %q, want %q", c.Addr(), tt.wantAddr)
			}
		})
	}
}

func TestNewBareHostPortSpeaksHTTP(t *testing.T) {
	d := newDouble(t, answer{Body: `{"name":"ci","role":"viewer"}`})
	c, err := client.New(strings.TrimPrefix(d.srv.URL, "http://"), "s3cret", client.WithHTTPClient(d.srv.Client()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WhoAmI(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := d.requests()[0].Auth; got != "Bearer s3cret" {
		t.Errorf("Authorization = %q", got)
	}
}

func TestNoTokenSendsNoAuthorization(t *testing.T) {
	d := newDouble(t, answer{Body: `{"index":1,"services":[]}`})
	if _, _, err := d.client(t, "").Services(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := d.requests()[0].Auth; got != "" {
		t.Errorf("Authorization = %q, want none", got)
	}
}

var instanceJSON = `{"service":"orders","id":"host:8080","address":"10.0.0.7","port":8080,"protocol":"http","weight":100,` +
	`"ttl":"10s","health":{"status":"passing","since":"2026-11-26T15:00:00Z"},"registered_at":"2026-11-26T15:00:00Z","revision":42}`

func ptr[T any](v T) *T { return &v }

// TestCalls checks, for each method, the request it sends and what it makes
// of the documented answer.
func TestCalls(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 15, 0, 0, 0, time.UTC)
	stored := &meridian.Instance{
		Service: "orders", ID: "host:8080", Address: "10.0.0.7", Port: 8080, Protocol: "http", Weight: 100,
		TTL: meridian.Duration(10 * time.Second), Health: meridian.Health{Status: "passing", Since: t0},
		RegisteredAt: t0, Revision: 42,
	}
	entry := &meridian.ConfigEntry{Key: "prod/orders/db_url", Value: "pg://x", Format: "text", Revision: 7, Author: "ci", Time: t0}
	entryJSON := `{"key":"prod/orders/db_url","value":"pg://x","format":"text","revision":7,"author":"ci","time":"2026-11-26T15:00:00Z"}`
	token := &meridian.Token{Name: "ci", Role: "viewer", CreatedAt: t0, CreatedBy: "admin"}
	tokenJSON := `{"name":"ci","role":"viewer","created_at":"2026-11-26T15:00:00Z","created_by":"admin"}`
	type result struct {
		V     any
		Index uint64
	}

	tests := []struct {
		name string
		call func(context.Context, *client.Client) (result, error)
		ans  answer
		want seen // Auth is not compared
		res  result
	}{
		{
			name: "Register sends only the caller's fields",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				in, err := c.Register(ctx, &meridian.Instance{
					Service: "orders", ID: "host:8080", Address: "10.0.0.7", Port: 8080,
					TTL: meridian.Duration(10 * time.Second), Tags: []string{"primary"},
					Health: meridian.Health{Status: "passing"}, Revision: 3,
				})
				return result{V: in}, err
			},
			ans: answer{Body: instanceJSON},
			want: seen{Method: "PUT", Path: "/v1/services/orders/instances/host:8080",
				Body: `{"service":"orders","id":"host:8080","address":"10.0.0.7","port":8080,"tags":["primary"],"ttl":"10s"}`},
			res: result{V: stored},
		},
		{
			name: "Deregister",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				return result{}, c.Deregister(ctx, "orders", "orders-1")
			},
			ans:  answer{Status: http.StatusNoContent},
			want: seen{Method: "DELETE", Path: "/v1/services/orders/instances/orders-1"},
		},
		{
			name: "Heartbeat",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				return result{}, c.Heartbeat(ctx, "orders", "orders-1")
			},
			ans:  answer{Status: http.StatusNoContent},
			want: seen{Method: "PUT", Path: "/v1/services/orders/instances/orders-1/heartbeat"},
		},
		{
			name: "Services",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				s, i, err := c.Services(ctx)
				return result{s, i}, err
			},
			ans:  answer{Index: "9", Body: `{"index":9,"services":[{"name":"orders","instances":2,"by_status":{"passing":2},"versions":["1.4.2"]}]}`},
			want: seen{Method: "GET", Path: "/v1/services"},
			res:  result{[]meridian.ServiceSummary{{Name: "orders", Instances: 2, ByStatus: map[string]int{"passing": 2}, Versions: []string{"1.4.2"}}}, 9},
		},
		{
			name: "Services takes the body's index without the header",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				s, i, err := c.Services(ctx)
				return result{s, i}, err
			},
			ans:  answer{Body: `{"index":5,"services":[]}`},
			want: seen{Method: "GET", Path: "/v1/services"},
			res:  result{[]meridian.ServiceSummary{}, 5},
		},
		{
			name: "Instances blocking query",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				in, i, err := c.Instances(ctx, "orders", client.InstancesQuery{Healthy: true, Index: 41, Wait: 30 * time.Second, Stale: true})
				return result{in, i}, err
			},
			ans:  answer{Index: "42", Body: `{"index":42,"instances":[` + instanceJSON + `]}`},
			want: seen{Method: "GET", Path: "/v1/services/orders/instances", Query: "healthy=true&index=41&stale=true&wait=30s"},
			res:  result{[]meridian.Instance{*stored}, 42},
		},
		{
			name: "Instances plain",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				in, i, err := c.Instances(ctx, "orders", client.InstancesQuery{})
				return result{in, i}, err
			},
			ans:  answer{Index: "3", Body: `{"index":3,"instances":[]}`},
			want: seen{Method: "GET", Path: "/v1/services/orders/instances"},
			res:  result{[]meridian.Instance{}, 3},
		},
		{
			name: "Instance",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				in, err := c.Instance(ctx, "orders", "host:8080")
				return result{V: in}, err
			},
			ans:  answer{Body: instanceJSON},
			want: seen{Method: "GET", Path: "/v1/services/orders/instances/host:8080"},
			res:  result{V: stored},
		},
		{
			name: "GetConfig latest keeps the key's slashes",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				e, err := c.GetConfig(ctx, "prod/orders/db_url", 0)
				return result{V: e}, err
			},
			ans:  answer{Body: entryJSON},
			want: seen{Method: "GET", Path: "/v1/config/keys/prod/orders/db_url"},
			res:  result{V: entry},
		},
		{
			name: "GetConfig at a revision",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				e, err := c.GetConfig(ctx, "prod/orders/db_url", 7)
				return result{V: e}, err
			},
			ans:  answer{Body: entryJSON},
			want: seen{Method: "GET", Path: "/v1/config/keys/prod/orders/db_url", Query: "revision=7"},
			res:  result{V: entry},
		},
		{
			name: "PutConfig compare-and-set on absence",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				e, err := c.PutConfig(ctx, "prod/orders/db_url", client.PutConfigRequest{Value: "pg://x", Message: "first", ExpectRevision: ptr[uint64](0)})
				return result{V: e}, err
			},
			ans:  answer{Body: entryJSON},
			want: seen{Method: "PUT", Path: "/v1/config/keys/prod/orders/db_url", Body: `{"value":"pg://x","message":"first","expect_revision":0}`},
			res:  result{V: entry},
		},
		{
			name: "PutConfig plain",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				e, err := c.PutConfig(ctx, "a=b/c@d", client.PutConfigRequest{Value: "{}", Format: meridian.FormatJSON})
				return result{V: e}, err
			},
			ans:  answer{Body: entryJSON},
			want: seen{Method: "PUT", Path: "/v1/config/keys/a=b/c@d", Body: `{"value":"{}","format":"json"}`},
			res:  result{V: entry},
		},
		{
			name: "DeleteConfig compare-and-delete",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				return result{}, c.DeleteConfig(ctx, "prod/x", ptr[uint64](7))
			},
			ans:  answer{Status: http.StatusNoContent},
			want: seen{Method: "DELETE", Path: "/v1/config/keys/prod/x", Query: "expect_revision=7"},
		},
		{
			name: "DeleteConfig",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				return result{}, c.DeleteConfig(ctx, "prod/x", nil)
			},
			ans:  answer{Status: http.StatusNoContent},
			want: seen{Method: "DELETE", Path: "/v1/config/keys/prod/x"},
		},
		{
			name: "ListConfig",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				es, i, err := c.ListConfig(ctx, "prod/")
				return result{es, i}, err
			},
			ans:  answer{Index: "8", Body: `{"index":8,"entries":[` + entryJSON + `]}`},
			want: seen{Method: "GET", Path: "/v1/config/keys", Query: "prefix=prod%2F"},
			res:  result{[]meridian.ConfigEntry{*entry}, 8},
		},
		{
			name: "ConfigHistory",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				es, err := c.ConfigHistory(ctx, "prod/orders/db_url")
				return result{V: es}, err
			},
			ans:  answer{Body: `{"entries":[` + entryJSON + `]}`},
			want: seen{Method: "GET", Path: "/v1/config/history/prod/orders/db_url"},
			res:  result{V: []meridian.ConfigEntry{*entry}},
		},
		{
			name: "DiffConfig to the latest",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				d, err := c.DiffConfig(ctx, "prod/x", 3, 0)
				return result{V: d}, err
			},
			ans:  answer{Body: `{"from":3,"to":7,"diff":"--- a\n+++ b\n"}`},
			want: seen{Method: "GET", Path: "/v1/config/diff/prod/x", Query: "from=3"},
			res:  result{V: "--- a\n+++ b\n"},
		},
		{
			name: "DiffConfig between revisions",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				d, err := c.DiffConfig(ctx, "prod/x", 3, 5)
				return result{V: d}, err
			},
			ans:  answer{Body: `{"from":3,"to":5,"diff":""}`},
			want: seen{Method: "GET", Path: "/v1/config/diff/prod/x", Query: "from=3&to=5"},
			res:  result{V: ""},
		},
		{
			name: "RollbackConfig",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				e, err := c.RollbackConfig(ctx, "prod/orders/db_url", 3, "bad deploy")
				return result{V: e}, err
			},
			ans:  answer{Body: entryJSON},
			want: seen{Method: "POST", Path: "/v1/config/rollback/prod/orders/db_url", Body: `{"revision":3,"message":"bad deploy"}`},
			res:  result{V: entry},
		},
		{
			name: "CreateToken",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				secret, tok, err := c.CreateToken(ctx, "orders-svc", meridian.RoleService, "orders")
				return result{V: []any{secret, tok}}, err
			},
			ans:  answer{Status: http.StatusCreated, Body: `{"name":"orders-svc","role":"service","service":"orders","created_at":"2026-11-26T15:00:00Z","secret":"mrd_s3cret"}`},
			want: seen{Method: "POST", Path: "/v1/tokens", Body: `{"name":"orders-svc","role":"service","service":"orders"}`},
			res:  result{V: []any{"mrd_s3cret", &meridian.Token{Name: "orders-svc", Role: "service", Service: "orders", CreatedAt: t0}}},
		},
		{
			name: "Tokens",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				ts, err := c.Tokens(ctx)
				return result{V: ts}, err
			},
			ans:  answer{Body: `{"tokens":[` + tokenJSON + `]}`},
			want: seen{Method: "GET", Path: "/v1/tokens"},
			res:  result{V: []meridian.Token{*token}},
		},
		{
			name: "RevokeToken",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				return result{}, c.RevokeToken(ctx, "ci")
			},
			ans:  answer{Status: http.StatusNoContent},
			want: seen{Method: "DELETE", Path: "/v1/tokens/ci"},
		},
		{
			name: "WhoAmI",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				tok, err := c.WhoAmI(ctx)
				return result{V: tok}, err
			},
			ans:  answer{Body: tokenJSON},
			want: seen{Method: "GET", Path: "/v1/whoami"},
			res:  result{V: token},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDouble(t, tt.ans)
			res, err := tt.call(context.Background(), d.client(t, "tok"))
			if err != nil {
				t.Fatal(err)
			}
			got := d.requests()
			if len(got) != 1 {
				t.Fatalf("sent %d requests, want 1", len(got))
			}
			got[0].Auth = ""
			if got[0] != tt.want {
				t.Errorf("request\n got %+v\nwant %+v", got[0], tt.want)
			}
			if !reflect.DeepEqual(res, tt.res) {
				t.Errorf("result\n got %#v\nwant %#v", res, tt.res)
			}
		})
	}
}

func TestInvalidNamesFailBeforeSending(t *testing.T) {
	d := newDouble(t, answer{})
	c := d.client(t, "")
	ctx := context.Background()
	tests := []struct {
		name  string
		call  func() error
		field string
	}{
		{"service name", func() error { return c.Heartbeat(ctx, "Orders", "x") }, "service"},
		{"instance id", func() error { return c.Deregister(ctx, "orders", "") }, "id"},
		{"config key with ..", func() error { _, err := c.GetConfig(ctx, "prod/../x", 0); return err }, "key"},
		{"config key with a space", func() error { _, err := c.PutConfig(ctx, "prod/a b", client.PutConfigRequest{}); return err }, "key"},
		{"prefix", func() error { _, _, err := c.ListConfig(ctx, "/prod"); return err }, "prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var me *meridian.Error
			if err := tt.call(); !errors.As(err, &me) || me.Code != meridian.CodeInvalid || me.Field != tt.field {
				t.Fatalf("error = %v, want invalid %s", err, tt.field)
			}
		})
	}
	if n := len(d.requests()); n != 0 {
		t.Errorf("sent %d requests", n)
	}
}

func TestErrorAnswers(t *testing.T) {
	tests := []struct {
		name string
		ans  answer
		want meridian.Error
		text string // Error()
	}{
		{
			name: "problem with a field",
			ans: answer{Status: 400, ContentType: "application/problem+json",
				Body: `{"type":"https://meridian.dev/problems/invalid","title":"Bad Request","status":400,"detail":"port: 70000 is out of range 1-65535","field":"port","code":"invalid"}`},
			want: meridian.Error{Code: meridian.CodeInvalid, Field: "port", Message: "70000 is out of range 1-65535"},
			text: "port: 70000 is out of range 1-65535",
		},
		{
			name: "revision conflict",
			ans: answer{Status: 409, ContentType: "application/problem+json",
				Body: `{"type":"https://meridian.dev/problems/conflict","title":"Conflict","status":409,"detail":"revision conflict on prod/x","code":"conflict","current_revision":12}`},
			want: meridian.Error{Code: meridian.CodeConflict, Message: "revision conflict on prod/x", Current: 12},
			text: "revision conflict on prod/x",
		},
		{
			name: "problem with an unknown code takes the status's",
			ans: answer{Status: 403, ContentType: "application/problem+json; charset=utf-8",
				Body: `{"status":403,"title":"Forbidden","detail":"viewer tokens only read","code":"nope"}`},
			want: meridian.Error{Code: meridian.CodeForbidden, Message: "viewer tokens only read"},
		},
		{
			name: "problem without detail uses the title",
			ans:  answer{Status: 401, ContentType: "application/problem+json", Body: `{"status":401,"title":"Unauthorized","code":"unauthorized"}`},
			want: meridian.Error{Code: meridian.CodeUnauthorized, Message: "Unauthorized"},
		},
		{
			name: "proxy error page",
			ans:  answer{Status: 502, ContentType: "text/html", Body: "<html>bad gateway</html>\nmore"},
			want: meridian.Error{Code: meridian.CodeUnavailable, Message: "ADDR answered 502 Bad Gateway: <html>bad gateway</html>"},
		},
		{
			name: "plain 404",
			ans:  answer{Status: 404, ContentType: "text/plain", Body: "404 page not found\n"},
			want: meridian.Error{Code: meridian.CodeNotFound, Message: "ADDR answered 404 Not Found: 404 page not found"},
		},
		{
			name: "JSON that is not problem+json",
			ans:  answer{Status: 500, Body: `{"code":"invalid"}`},
			want: meridian.Error{Code: meridian.CodeInternal, Message: `ADDR answered 500 Internal Server Error: {"code":"invalid"}`},
		},
		{
			name: "429",
			ans:  answer{Status: 429, ContentType: "text/plain"},
			want: meridian.Error{Code: meridian.CodeRateLimited, Message: "ADDR answered 429 Too Many Requests"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDouble(t, tt.ans)
			c := d.client(t, "")
			_, err := c.GetConfig(context.Background(), "prod/x", 0)
			var me *meridian.Error
			if !errors.As(err, &me) {
				t.Fatalf("error = %#v, want a *meridian.Error", err)
			}
			tt.want.Message = strings.ReplaceAll(tt.want.Message, "ADDR", c.Addr())
			if *me != tt.want {
				t.Errorf("error\n got %+v\nwant %+v", *me, tt.want)
			}
			if tt.text != "" && me.Error() != tt.text {
				t.Errorf("Error() = %q, want %q", me.Error(), tt.text)
			}
		})
	}
}

func TestUndecodableAnswerIsInternal(t *testing.T) {
	d := newDouble(t, answer{Body: `<html>`})
	_, err := d.client(t, "").WhoAmI(context.Background())
	if !meridian.IsCode(err, meridian.CodeInternal) {
		t.Fatalf("error = %v, want internal", err)
	}
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestUnreachable(t *testing.T) {
	addr := closedAddr(t)
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	c, err := client.New(addr, "", client.WithHTTPClient(hc))
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = c.Services(context.Background())
	var me *meridian.Error
	if !errors.As(err, &me) || me.Code != meridian.CodeUnavailable || me.Message != "control plane unreachable at "+addr || me.Err == nil {
		t.Fatalf("error = %#v, want unavailable naming %s with a cause", err, addr)
	}
	err = c.WatchConfig(context.Background(), "", 0, func(meridian.ConfigEvent) error { return nil })
	if !meridian.IsCode(err, meridian.CodeUnavailable) {
		t.Fatalf("watch error = %v, want unavailable", err)
	}
}

func TestCancelledContextIsReturnedAsIs(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(block)
	c, err := client.New(srv.URL, "", client.WithHTTPClient(srv.Client()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, _, err = c.Instances(ctx, "orders", client.InstancesQuery{Index: 3, Wait: time.Minute})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error = %v, want context.DeadlineExceeded", err)
	}
}

func TestCreateTokenDecodesEmbeddedToken(t *testing.T) {
	// The secret sits beside the token's fields, not inside an object.
	d := newDouble(t, answer{Status: 201, Body: `{"name":"ci","role":"admin","secret":"x"}`})
	secret, tok, err := d.client(t, "").CreateToken(context.Background(), "ci", meridian.RoleAdmin, "")
	if err != nil {
		t.Fatal(err)
	}
	if secret != "x" || tok.Name != "ci" || tok.Role != meridian.RoleAdmin {
		t.Fatalf("got %q %+v", secret, tok)
	}
	if body := d.requests()[0].Body; body != `{"name":"ci","role":"admin"}` {
		t.Errorf("body = %s", body)
	}
}

func TestRegisterResultIsIndependentOfInput(t *testing.T) {
	d := newDouble(t, answer{Body: instanceJSON})
	in := &meridian.Instance{Service: "orders", ID: "host:8080", Address: "10.0.0.7", Port: 8080}
	out, err := d.client(t, "").Register(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if out == in || in.Revision != 0 || out.Revision != 42 {
		t.Fatalf("in %+v out %+v", in, out)
	}
	var body map[string]any
	if err := json.Unmarshal([]byte(d.requests()[0].Body), &body); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"health", "registered_at", "revision"} {
		if _, ok := body[f]; ok {
			t.Errorf("body has the registry-owned field %q", f)
		}
	}
}
