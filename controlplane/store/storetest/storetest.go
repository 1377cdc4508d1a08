// Package storetest is the conformance suite every store engine passes.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/meridian-platform/meridian/controlplane/store"
)

// Run runs the suite. open must return a fresh, empty store.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	bucket := func(t *testing.T, cfg store.BucketConfig) store.Bucket {
		b, err := open(t).Bucket(ctx, "conformance", cfg)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	t.Run("create update delete with revisions", func(t *testing.T) {
		b := bucket(t, store.BucketConfig{History: 10})
		r1, err := b.Create(ctx, "prod/orders/db", []byte("a"))
		must(t, err)
		_, err = b.Create(ctx, "prod/orders/db", []byte("x"))
		wantConflict(t, err, r1)
		r2, err := b.Update(ctx, "prod/orders/db", []byte("b"), r1)
		must(t, err)
		if r2 <= r1 {
			t.Fatalf("revision did not grow: %d then %d", r1, r2)
		}
		_, err = b.Update(ctx, "prod/orders/db", []byte("c"), r1)
		wantConflict(t, err, r2)
		e, err := b.Get(ctx, "prod/orders/db")
		must(t, err)
		if string(e.Value) != "b" || e.Revision != r2 || e.Op != store.OpPut {
			t.Fatalf("get = %q rev %d op %d, want b rev %d", e.Value, e.Revision, e.Op, r2)
		}
		old, err := b.GetRevision(ctx, "prod/orders/db", r1)
		must(t, err)
		if string(old.Value) != "a" {
			t.Fatalf("revision %d = %q, want a", r1, old.Value)
		}
		if _, err := b.GetRevision(ctx, "prod/other", r1); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("revision of another key: err = %v, want not found", err)
		}
		_, err = b.Delete(ctx, "prod/orders/db", r1)
		wantConflict(t, err, r2)
		_, err = b.Delete(ctx, "prod/orders/db", r2)
		must(t, err)
		if _, err := b.Get(ctx, "prod/orders/db"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("get after delete: err = %v, want not found", err)
		}
		h, err := b.History(ctx, "prod/orders/db")
		must(t, err)
		if len(h) != 3 || string(h[0].Value) != "a" || string(h[1].Value) != "b" || h[2].Op != store.OpDelete {
			t.Fatalf("history = %+v, want a, b, delete", h)
		}
		// A deleted key can be created again.
		_, err = b.Create(ctx, "prod/orders/db", []byte("d"))
		must(t, err)
	})

	t.Run("keys with any characters and prefixes", func(t *testing.T) {
		b := bucket(t, store.BucketConfig{History: 1})
		keys := []string{"orders/10.0.0.1:8080", "orders/i-2", "order/x", "ordersx/y", "payments/p@1=z"}
		for _, k := range keys {
			_, err := b.Put(ctx, k, []byte(k))
			must(t, err)
		}
		for _, k := range keys {
			e, err := b.Get(ctx, k)
			must(t, err)
			if e.Key != k || string(e.Value) != k {
				t.Fatalf("get %q = %q/%q", k, e.Key, e.Value)
			}
		}
		got := listKeys(t, b, "orders/")
		if fmt.Sprint(got) != "[orders/10.0.0.1:8080 orders/i-2]" {
			t.Fatalf("list orders/ = %v", got)
		}
		got = listKeys(t, b, "order")
		if len(got) != 4 {
			t.Fatalf("list order = %v, want 4 keys", got)
		}
		got = listKeys(t, b, "")
		if len(got) != 5 {
			t.Fatalf("list all = %v, want 5", got)
		}
	})

	t.Run("watch snapshot then changes, resume without gaps or repeats", func(t *testing.T) {
		b := bucket(t, store.BucketConfig{History: 10})
		_, err := b.Put(ctx, "a/1", []byte("1"))
		must(t, err)
		_, err = b.Put(ctx, "a/2", []byte("2"))
		must(t, err)
		_, err = b.Delete(ctx, "a/2", 0)
		must(t, err)
		_, err = b.Put(ctx, "b/1", []byte("other"))
		must(t, err)

		wctx, cancel := context.WithCancel(ctx)
		ch, err := b.Watch(wctx, "a/", 0)
		must(t, err)
		if e := next(t, ch); e.Key != "a/1" || e.Op != store.OpPut {
			t.Fatalf("snapshot = %+v, want a/1 (a/2 is deleted, b/1 outside)", e)
		}
		if e := next(t, ch); e.Op != store.OpSynced {
			t.Fatalf("after snapshot = %+v, want synced", e)
		}
		r3, err := b.Put(ctx, "a/3", []byte("3"))
		must(t, err)
		e := next(t, ch)
		if e.Key != "a/3" || e.Revision != r3 {
			t.Fatalf("live = %+v, want a/3 at %d", e, r3)
		}
		cancel()
		for range ch {
		}

		// Changes made while nobody watches arrive once each, in order.
		var want []string
		for i := range 5 {
			k := fmt.Sprintf("a/%d", i%2+4)
			_, err := b.Put(ctx, k, []byte{byte('0' + i)})
			must(t, err)
			want = append(want, k)
		}
		_, err = b.Delete(ctx, "a/4", 0)
		must(t, err)
		want = append(want, "a/4 deleted")
		ch, err = b.Watch(ctx, "a/", e.Revision)
		must(t, err)
		var got []string
		for len(got) < len(want) {
			e := next(t, ch)
			switch e.Op {
			case store.OpSynced:
				continue
			case store.OpDelete:
				got = append(got, e.Key+" deleted")
			default:
				got = append(got, e.Key)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("resumed = %v, want %v", got, want)
		}
	})

	t.Run("ttl keys expire and watchers see it", func(t *testing.T) {
		b := bucket(t, store.BucketConfig{History: 1, TTL: true})
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		ch, err := b.Watch(wctx, "", 0)
		must(t, err)
		if e := next(t, ch); e.Op != store.OpSynced {
			t.Fatalf("empty bucket watch = %+v, want synced", e)
		}
		_, err = b.PutTTL(ctx, "lease/1", []byte("x"), time.Second)
		must(t, err)
		// Renewal keeps it alive past the first TTL.
		time.Sleep(600 * time.Millisecond)
		_, err = b.PutTTL(ctx, "lease/1", []byte("y"), time.Second)
		must(t, err)
		time.Sleep(600 * time.Millisecond)
		if _, err := b.Get(ctx, "lease/1"); err != nil {
			t.Fatalf("renewed lease gone: %v", err)
		}
		for {
			e := next(t, ch)
			if e.Op == store.OpDelete && e.Key == "lease/1" {
				break
			}
		}
		if _, err := b.Get(ctx, "lease/1"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("expired lease: err = %v, want not found", err)
		}
	})
}

func listKeys(t *testing.T, b store.Bucket, prefix string) []string {
	t.Helper()
	es, err := b.List(context.Background(), prefix)
	must(t, err)
	var keys []string
	for _, e := range es {
		keys = append(keys, e.Key)
	}
	return keys
}

func next(t *testing.T, ch <-chan store.Entry) store.Entry {
	t.Helper()
	select {
	case e, ok := <-ch:
		if !ok {
			t.Fatal("watch closed")
		}
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no watch event in 10s")
	}
	return store.Entry{}
}

func wantConflict(t *testing.T, err error, current uint64) {
	t.Helper()
	var ce *store.ConflictError
	if !errors.As(err, &ce) || !errors.Is(err, store.ErrConflict) {
		t.Fatalf("err = %v, want a conflict", err)
	}
	if ce.Current != current {
		t.Fatalf("conflict current = %d, want %d", ce.Current, current)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
