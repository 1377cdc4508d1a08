package sdk

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/client"
	"github.com/meridian-platform/meridian/internal/fakecp"
)

// The binding tests run the real client against fakecp, the in-memory
// stand-in for the control plane's HTTP API, which can be made unreachable
// at will and records every call and watch index; it stands in until the
// end-to-end tests against the real control plane (e2e_test.go) cover
// these paths too.

type limits struct {
	MaxItems int               `json:"max_items"`
	Timeout  meridian.Duration `json:"timeout"`
	Regions  []string          `json:"regions,omitempty"`
}

func newClient(t *testing.T, cp *fakecp.Server) *client.Client {
	t.Helper()
	c, err := client.New(cp.URL, cp.Token)
	if err != nil {
		t.Fatal(err)
	}
	return c
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
	case <-time.After(5 * time.Second):
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

func bind[T any](t *testing.T, src ConfigSource, key string, rec *recorder[T]) *Binding[T] {
	t.Helper()
	b, err := BindConfig(context.Background(), src, key, rec.onChange, OnBindError(rec.onError), BindBackoff(time.Millisecond, 5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func TestBindConfigFollowsRevisionsAndKeepsTheLastGoodValue(t *testing.T) {
	cp := fakecp.Start(t)
	cp.PutConfig("prod/orders/limits", meridian.FormatJSON, `{"max_items": 10, "timeout": "2s"}`)
	cp.PutConfig("prod/orders/limits_v2", meridian.FormatJSON, `{"other": true}`) // shares the prefix
	rec := newRecorder[limits]()
	b := bind(t, newClient(t, cp), "prod/orders/limits", rec)

	if got := b.Get(); got.MaxItems != 10 || got.Timeout.D() != 2*time.Second || b.Revision() != 1 {
		t.Fatalf("Get = %+v at revision %d", got, b.Revision())
	}

	steps := []struct {
		name      string
		write     func() uint64
		wantItems int
		wantCode  meridian.Code // of the reported error; "" when applied
	}{
		{"new revision applies", func() uint64 {
			return cp.PutConfig("prod/orders/limits", meridian.FormatJSON, `{"max_items": 20, "timeout": "2s"}`).Revision
		}, 20, ""},
		{"unknown field is rejected", func() uint64 {
			return cp.PutConfig("prod/orders/limits", meridian.FormatJSON, `{"max_items": 30, "timout": "1s"}`).Revision
		}, 20, meridian.CodeInvalid},
		{"wrong type is rejected", func() uint64 {
			return cp.PutConfig("prod/orders/limits", meridian.FormatJSON, `{"max_items": "many"}`).Revision
		}, 20, meridian.CodeInvalid},
		{"trailing data is rejected", func() uint64 {
			return cp.PutConfig("prod/orders/limits", meridian.FormatJSON, `{"max_items": 40} {}`).Revision
		}, 20, meridian.CodeInvalid},
		{"text cannot fill a struct", func() uint64 {
			return cp.PutConfig("prod/orders/limits", meridian.FormatText, `max_items=50`).Revision
		}, 20, meridian.CodeInvalid},
		{"yaml applies, fields by json tag", func() uint64 {
			return cp.PutConfig("prod/orders/limits", meridian.FormatYAML, "max_items: 60\ntimeout: 1m\nregions: [eu, us]\n").Revision
		}, 60, ""},
		{"yaml unknown field is rejected", func() uint64 {
			return cp.PutConfig("prod/orders/limits", meridian.FormatYAML, "max_items: 70\nmax_itemz: 1\n").Revision
		}, 60, meridian.CodeInvalid},
		{"deletion keeps the value", func() uint64 { return cp.DeleteConfig("prod/orders/limits").Revision }, 60, meridian.CodeNotFound},
		{"a new value after deletion applies", func() uint64 {
			return cp.PutConfig("prod/orders/limits", meridian.FormatJSON, `{"max_items": 80}`).Revision
		}, 80, ""},
	}
	applied := b.Revision()
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			rev := step.write()
			if step.wantCode == "" {
				applied = rev
			}
			cp.PutConfig("prod/orders/limits_v2", meridian.FormatJSON, `{"other": true}`) // noise under the prefix
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
	cp := fakecp.Start(t)
	cp.PutConfig("prod/orders/banner", meridian.FormatText, "hello")
	rec := newRecorder[string]()
	b := bind(t, newClient(t, cp), "prod/orders/banner", rec)
	if b.Get() != "hello" {
		t.Fatalf("Get = %q", b.Get())
	}
	cp.PutConfig("prod/orders/banner", meridian.FormatText, "bye")
	rec.wait(t)
	if b.Get() != "bye" {
		t.Fatalf("Get = %q", b.Get())
	}

	cp.PutConfig("prod/orders/addr", meridian.FormatText, "10.0.0.1")
	ip, err := BindConfig[net.IP](context.Background(), newClient(t, cp), "prod/orders/addr", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ip.Close()
	if !ip.Get().Equal(net.IPv4(10, 0, 0, 1)) {
		t.Fatalf("TextUnmarshaler: Get = %v", ip.Get())
	}
}

func TestBindConfigFailsOnBadStart(t *testing.T) {
	cp := fakecp.Start(t)
	c := newClient(t, cp)
	ctx := context.Background()
	if _, err := BindConfig[limits](ctx, c, "prod/orders/missing", nil); !meridian.IsCode(err, meridian.CodeNotFound) {
		t.Errorf("missing key: %v, want not_found", err)
	}
	cp.PutConfig("prod/orders/bad", meridian.FormatJSON, `{"max_items": 1, "extra": 2}`)
	_, err := BindConfig[limits](ctx, c, "prod/orders/bad", nil)
	var me *meridian.Error
	if !errors.As(err, &me) || me.Code != meridian.CodeInvalid || me.Field != "prod/orders/bad" {
		t.Errorf("undecodable key: %v, want invalid naming the key", err)
	}
	if _, err := BindConfig[limits](ctx, c, "/bad//key", nil); !meridian.IsCode(err, meridian.CodeInvalid) {
		t.Errorf("malformed key: %v", err)
	}
	cp.SetDown(true)
	if _, err := BindConfig[limits](ctx, c, "prod/orders/bad", nil); !meridian.IsCode(err, meridian.CodeUnavailable) {
		t.Errorf("unreachable: %v, want unavailable", err)
	}
}

func TestBindConfigResumesAfterReconnect(t *testing.T) {
	cp := fakecp.Start(t)
	cp.PutConfig("prod/orders/limits", meridian.FormatJSON, `{"max_items": 1}`)
	rec := newRecorder[limits]()
	b := bind(t, newClient(t, cp), "prod/orders/limits", rec)
	cp.PutConfig("prod/orders/limits", meridian.FormatJSON, `{"max_items": 2}`)
	rec.wait(t)

	cp.SetDown(true)
	cp.PutConfig("prod/orders/limits", meridian.FormatJSON, `{"max_items": 3}`)
	time.Sleep(30 * time.Millisecond)
	if b.Get().MaxItems != 2 {
		t.Fatalf("Get = %+v during the outage, want the last value", b.Get())
	}
	cp.SetDown(false)
	rec.wait(t)
	if b.Get().MaxItems != 3 || b.Revision() != 3 {
		t.Fatalf("Get = %+v at %d after reconnecting, want max_items 3 at revision 3", b.Get(), b.Revision())
	}
	var idx []uint64
	for _, w := range cp.Watches() {
		idx = append(idx, w.Index)
	}
	// The first watch starts after the read revision; the resumed one after
	// the last change seen.
	if len(idx) < 2 || idx[0] != 1 || idx[len(idx)-1] != 2 {
		t.Fatalf("watch indexes %v, want [1 … 2]", idx)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.changes) != 2 {
		t.Fatalf("%d changes, want 2: no revision applied twice", len(rec.changes))
	}
}

func TestBindingCloseAndContext(t *testing.T) {
	cp := fakecp.Start(t)
	cp.PutConfig("prod/orders/limits", meridian.FormatJSON, `{"max_items": 1}`)
	ctx, cancel := context.WithCancel(context.Background())
	b, err := BindConfig[limits](ctx, newClient(t, cp), "prod/orders/limits", nil)
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
