package sdk

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/client"
	"github.com/meridian-platform/meridian/internal/cptest"
	"github.com/meridian-platform/meridian/internal/logtest"
)

// The binding tests run against the real control plane (package cptest),
// writing config through its API as an operator would.

type limits struct {
	MaxItems int               `json:"max_items"`
	Timeout  meridian.Duration `json:"timeout"`
	Regions  []string          `json:"regions,omitempty"`
}

// putConfig writes a revision through the API and returns its number.
func putConfig(t *testing.T, c *client.Client, key string, format meridian.ConfigFormat, value string) uint64 {
	t.Helper()
	e, err := c.PutConfig(context.Background(), key, client.PutConfigRequest{Value: value, Format: format})
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	return e.Revision
}

// deleteConfig deletes a key through the API and returns the revision of
// the deletion, read from the key's history.
func deleteConfig(t *testing.T, c *client.Client, key string) uint64 {
	t.Helper()
	ctx := context.Background()
	if err := c.DeleteConfig(ctx, key, nil); err != nil {
		t.Fatalf("delete %s: %v", key, err)
	}
	h, err := c.ConfigHistory(ctx, key)
	if err != nil || len(h) == 0 || !h[len(h)-1].Deleted {
		t.Fatalf("history of %s after deleting it: %+v, %v", key, h, err)
	}
	return h[len(h)-1].Revision
}

// recorder collects a binding's callbacks.
type recorder[T any] struct {
	mu      sync.Mutex
	changes [][2]T
	errs    []error
	notify  chan struct{}
}

func newRecorder[T any]() *recorder[T] { return &recorder[T]{notify: make(chan struct{}, 100)} }

func (r *recorder[T]) onChange(old, new T) {
	r.mu.Lock()
	r.changes = append(r.changes, [2]T{old, new})
	r.mu.Unlock()
	r.notify <- struct{}{}
}

func (r *recorder[T]) onError(err error) {
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
	r.notify <- struct{}{}
}

func (r *recorder[T]) wait(t *testing.T) {
	t.Helper()
	select {
	case <-r.notify:
	case <-time.After(10 * time.Second):
		t.Fatal("no callback")
	}
}

func (r *recorder[T]) lastErr() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs) == 0 {
		return nil
	}
	return r.errs[len(r.errs)-1]
}

func bind[T any](t *testing.T, src ConfigSource, key string, rec *recorder[T], opts ...BindOption) *Binding[T] {
	t.Helper()
	opts = append([]BindOption{OnBindError(rec.onError), BindBackoff(time.Millisecond, 5*time.Millisecond)}, opts...)
	b, err := BindConfig(context.Background(), src, key, rec.onChange, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func TestBindConfigFollowsRevisionsAndKeepsTheLastGoodValue(t *testing.T) {
	cp := cptest.Start(t)
	c := cp.Client
	first := putConfig(t, c, "prod/orders/limits", meridian.FormatJSON, `{"max_items": 10, "timeout": "2s"}`)
	putConfig(t, c, "prod/orders/limits_v2", meridian.FormatJSON, `{"other": true}`) // shares the prefix
	rec := newRecorder[limits]()
	b := bind(t, c, "prod/orders/limits", rec)

	if got := b.Get(); got.MaxItems != 10 || got.Timeout.D() != 2*time.Second || b.Revision() != first {
		t.Fatalf("Get = %+v at revision %d, want max_items 10 at revision %d", got, b.Revision(), first)
	}

	put := func(format meridian.ConfigFormat, value string) func() uint64 {
		return func() uint64 { return putConfig(t, c, "prod/orders/limits", format, value) }
	}
	steps := []struct {
		name      string
		write     func() uint64
		wantItems int
		wantCode  meridian.Code // of the reported error; "" when applied
	}{
		{"new revision applies", put(meridian.FormatJSON, `{"max_items": 20, "timeout": "2s"}`), 20, ""},
		{"unknown field is rejected", put(meridian.FormatJSON, `{"max_items": 30, "timout": "1s"}`), 20, meridian.CodeInvalid},
		{"wrong type is rejected", put(meridian.FormatJSON, `{"max_items": "many"}`), 20, meridian.CodeInvalid},
		{"text cannot fill a struct", put(meridian.FormatText, `max_items=50`), 20, meridian.CodeInvalid},
		{"yaml applies, fields by json tag", put(meridian.FormatYAML, "max_items: 60\ntimeout: 1m\nregions: [eu, us]\n"), 60, ""},
		{"yaml unknown field is rejected", put(meridian.FormatYAML, "max_items: 70\nmax_itemz: 1\n"), 60, meridian.CodeInvalid},
		{"deletion keeps the value", func() uint64 { return deleteConfig(t, c, "prod/orders/limits") }, 60, meridian.CodeNotFound},
		{"a new value after deletion applies", put(meridian.FormatJSON, `{"max_items": 80}`), 80, ""},
	}
	applied := b.Revision()
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			rev := step.write()
			if step.wantCode == "" {
				applied = rev
			}
			putConfig(t, c, "prod/orders/limits_v2", meridian.FormatJSON, `{"other": true}`) // noise under the prefix
			rec.wait(t)
			if got := b.Get(); got.MaxItems != step.wantItems || b.Revision() != applied {
				t.Fatalf("Get = %+v at revision %d, want max_items %d at revision %d", got, b.Revision(), step.wantItems, applied)
			}
			if step.wantCode == "" {
				if b.Err() != nil {
					t.Fatalf("Err = %v after an applied revision", b.Err())
				}
				return
			}
			err := rec.lastErr()
			if !meridian.IsCode(err, step.wantCode) || !meridian.IsCode(b.Err(), step.wantCode) {
				t.Fatalf("reported %v (Err %v), want code %s", err, b.Err(), step.wantCode)
			}
			var me *meridian.Error
			if step.wantCode == meridian.CodeInvalid && (!errors.As(err, &me) || me.Field != "prod/orders/limits") {
				t.Fatalf("error %v does not name the key", err)
			}
			t.Logf("revision %d rejected: %v", rev, err)
		})
	}
	// A JSON value with data after it never reaches a binding: the control
	// plane refuses to store it. (The binding's own refusal of one is
	// TestDecodeValue's "json two values".)
	_, err := c.PutConfig(context.Background(), "prod/orders/limits", client.PutConfigRequest{Value: `{"max_items": 40} {}`, Format: meridian.FormatJSON})
	var me *meridian.Error
	if !errors.As(err, &me) || me.Code != meridian.CodeInvalid || me.Field != "value" {
		t.Errorf("writing JSON with trailing data: %v, want invalid naming value", err)
	}

	rec.mu.Lock()
	defer rec.mu.Unlock()
	var items [][2]int
	for _, c := range rec.changes {
		items = append(items, [2]int{c[0].MaxItems, c[1].MaxItems})
	}
	if want := [][2]int{{10, 20}, {20, 60}, {60, 80}}; !slices.Equal(items, want) {
		t.Errorf("onChange(old, new) calls = %v, want %v", items, want)
	}
	if regions := b.Get().Regions; regions != nil {
		t.Errorf("regions %v leaked from an earlier revision: each revision must decode into a fresh value", regions)
	}
}

func TestBindConfigText(t *testing.T) {
	cp := cptest.Start(t)
	c := cp.Client
	putConfig(t, c, "prod/orders/banner", meridian.FormatText, "hello")
	rec := newRecorder[string]()
	b := bind(t, c, "prod/orders/banner", rec)
	if b.Get() != "hello" {
		t.Fatalf("Get = %q", b.Get())
	}
	putConfig(t, c, "prod/orders/banner", meridian.FormatText, "bye")
	rec.wait(t)
	if b.Get() != "bye" {
		t.Fatalf("Get = %q", b.Get())
	}

	putConfig(t, c, "prod/orders/addr", meridian.FormatText, "10.0.0.1")
	ip, err := BindConfig[net.IP](context.Background(), c, "prod/orders/addr", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ip.Close()
	if !ip.Get().Equal(net.IPv4(10, 0, 0, 1)) {
		t.Fatalf("TextUnmarshaler: Get = %v", ip.Get())
	}
}

func TestBindConfigFailsOnBadStart(t *testing.T) {
	cp := cptest.Start(t)
	c := cp.Client
	ctx := context.Background()
	if _, err := BindConfig[limits](ctx, c, "prod/orders/missing", nil); !meridian.IsCode(err, meridian.CodeNotFound) {
		t.Errorf("missing key: %v, want not_found", err)
	}
	putConfig(t, c, "prod/orders/bad", meridian.FormatJSON, `{"max_items": 1, "extra": 2}`)
	_, err := BindConfig[limits](ctx, c, "prod/orders/bad", nil)
	var me *meridian.Error
	if !errors.As(err, &me) || me.Code != meridian.CodeInvalid || me.Field != "prod/orders/bad" {
		t.Errorf("undecodable key: %v, want invalid naming the key", err)
	}
	if _, err := BindConfig[limits](ctx, c, "/bad//key", nil); !meridian.IsCode(err, meridian.CodeInvalid) {
		t.Errorf("malformed key: %v", err)
	}
	cp.Stop()
	if _, err := BindConfig[limits](ctx, c, "prod/orders/bad", nil); !meridian.IsCode(err, meridian.CodeUnavailable) {
		t.Errorf("unreachable: %v, want unavailable", err)
	}
}

func TestBindConfigResumesAfterReconnect(t *testing.T) {
	cp := cptest.Start(t)
	const key = "prod/orders/limits"
	putConfig(t, cp.Client, key, meridian.FormatJSON, `{"max_items": 1}`)
	logs := logtest.NewCounter()
	rec := newRecorder[limits]()
	b := bind(t, cp.Client, key, rec, BindLogger(slog.New(logs)))
	putConfig(t, cp.Client, key, meridian.FormatJSON, `{"max_items": 2}`)
	rec.wait(t)

	// The binding's replica goes down; the rest of the cluster takes writes
	// meanwhile.
	cp.Stop()
	peer := cp.Peer()
	putConfig(t, peer.Client, key, meridian.FormatJSON, `{"max_items": 3}`)
	putConfig(t, peer.Client, key+"_v2", meridian.FormatJSON, `{"other": true}`) // noise under the prefix
	last := putConfig(t, peer.Client, key, meridian.FormatJSON, `{"max_items": 4}`)
	// Its watch broke, and at least one reconnect has failed since.
	eventually(t, "the binding's watch to break and a reconnect to fail", func() bool {
		return logs.Count("config watch broke; keeping the current value") >= 2
	})
	if b.Get().MaxItems != 2 {
		t.Fatalf("Get = %+v during the outage, want the last value", b.Get())
	}

	cp.Restart()
	eventually(t, "the binding catches up", func() bool { return b.Revision() == last })
	if b.Get().MaxItems != 4 || b.Err() != nil {
		t.Fatalf("Get = %+v (Err %v) after reconnecting, want max_items 4", b.Get(), b.Err())
	}
	// Every revision was applied once, in order: the watch resumed after
	// the last revision the binding had, neither earlier nor later.
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var items [][2]int
	for _, c := range rec.changes {
		items = append(items, [2]int{c[0].MaxItems, c[1].MaxItems})
	}
	if want := [][2]int{{1, 2}, {2, 3}, {3, 4}}; !slices.Equal(items, want) {
		t.Fatalf("onChange(old, new) calls = %v, want %v", items, want)
	}
}

func TestBindingCloseAndContext(t *testing.T) {
	cp := cptest.Start(t)
	putConfig(t, cp.Client, "prod/orders/limits", meridian.FormatJSON, `{"max_items": 1}`)
	ctx, cancel := context.WithCancel(context.Background())
	b, err := BindConfig[limits](ctx, cp.Client, "prod/orders/limits", nil)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	b.Close() // returns once the watch has stopped, after ctx ended too
	b.Close()
	if b.Get().MaxItems != 1 {
		t.Fatal("Get after Close lost the value")
	}
}

// level decodes itself from JSON only.
type level int

func (l *level) UnmarshalJSON(b []byte) error {
	switch string(b) {
	case `"low"`:
		*l = 1
	case `"high"`:
		*l = 2
	default:
		return errors.New("want low or high")
	}
	return nil
}

func TestDecodeValue(t *testing.T) {
	type tuning struct {
		Level   level             `json:"level"`
		Timeout meridian.Duration `json:"timeout"`
		Name    string            `yaml:"service_name" json:"name"`
	}
	tests := []struct {
		name    string
		format  meridian.ConfigFormat
		value   string
		want    tuning
		wantErr bool
	}{
		{"json", meridian.FormatJSON, `{"level": "high", "timeout": "3s", "name": "a"}`, tuning{2, meridian.Duration(3 * time.Second), "a"}, false},
		{"json unknown field", meridian.FormatJSON, `{"levle": "high"}`, tuning{}, true},
		{"json custom type rejects", meridian.FormatJSON, `{"level": "medium"}`, tuning{}, true},
		{"json two values", meridian.FormatJSON, `{} {}`, tuning{}, true},
		{"yaml through json.Unmarshaler", meridian.FormatYAML, "level: low\ntimeout: 1m\nservice_name: b\n", tuning{1, meridian.Duration(time.Minute), "b"}, false},
		{"yaml tag wins over json tag", meridian.FormatYAML, "name: b\n", tuning{}, true},
		{"yaml unknown field", meridian.FormatYAML, "level: low\nextra: 1\n", tuning{}, true},
		{"yaml duplicate key", meridian.FormatYAML, "level: low\nlevel: high\n", tuning{}, true},
		{"yaml syntax", meridian.FormatYAML, "level: [", tuning{}, true},
		{"text into struct", meridian.FormatText, "level=low", tuning{}, true},
		{"unknown format", "toml", `level = "low"`, tuning{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got tuning
			err := decodeValue(tt.format, tt.value, &got)
			if (err != nil) != tt.wantErr || !tt.wantErr && got != tt.want {
				t.Fatalf("decode = %+v, %v; want %+v (error: %v)", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// checkedLimits validate themselves: BindConfig rejects a revision that
// decodes but does not validate.
type checkedLimits struct {
	MaxItems int `json:"max_items"`
}

func (l *checkedLimits) Validate() error {
	if l.MaxItems > 100 {
		return meridian.FieldError("max_items", "%d is out of range 0-100", l.MaxItems)
	}
	return nil
}

// With AllowMissing an absent key binds the zero value, its first
// revision applies when written, and its deletion brings back the zero
// value; a revision failing Validate is rejected naming the key and the
// field.
func TestBindConfigAllowMissingAndValidate(t *testing.T) {
	cp := cptest.Start(t)
	c := cp.Client
	const key = "meridian/resiliency/orders"
	if _, err := BindConfig(context.Background(), c, key, func(_, _ checkedLimits) {}); !meridian.IsCode(err, meridian.CodeNotFound) {
		t.Fatalf("without AllowMissing a missing key fails: %v", err)
	}
	rec := newRecorder[checkedLimits]()
	b := bind(t, c, key, rec, AllowMissing())
	if b.Get().MaxItems != 0 || b.Revision() != 0 || b.Err() != nil {
		t.Fatalf("missing key: Get %+v, revision %d, Err %v", b.Get(), b.Revision(), b.Err())
	}
	first := putConfig(t, c, key, meridian.FormatYAML, "max_items: 5\n")
	rec.wait(t)
	if b.Get().MaxItems != 5 || b.Revision() != first {
		t.Fatalf("first revision: Get %+v at %d, want 5 at %d", b.Get(), b.Revision(), first)
	}
	putConfig(t, c, key, meridian.FormatJSON, `{"max_items": 500}`)
	rec.wait(t)
	err := rec.lastErr()
	if b.Get().MaxItems != 5 || !meridian.IsCode(err, meridian.CodeInvalid) ||
		!strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "max_items: 500 is out of range 0-100") {
		t.Fatalf("an invalid revision: Get %+v, reported %v", b.Get(), err)
	}
	del := deleteConfig(t, c, key)
	rec.wait(t)
	if b.Get().MaxItems != 0 || b.Revision() != del || b.Err() != nil {
		t.Fatalf("after deletion: Get %+v at %d (Err %v), want the zero value at %d", b.Get(), b.Revision(), b.Err(), del)
	}
}
