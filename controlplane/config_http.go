package controlplane

import (
	"context"
	"net/http"
	"strconv"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/controlplane/store"
	"github.com/meridian-platform/meridian/internal/jsonbody"
)

// HTTP handlers of the config center (docs/api.md, "Config center"). Latest
// values and listings come from the mirror after a consistent-read sync;
// past revisions, history and diffs are read from the store, which is
// always current.

func pathConfigKey(r *http.Request) (string, error) {
	k := r.PathValue("key")
	return k, meridian.ValidateConfigKey("key", k)
}

// queryRevision reads a revision-valued query parameter; ok is false when
// it is absent.
func queryRevision(r *http.Request, name string) (rev uint64, ok bool, err error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, false, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, false, meridian.FieldError(name, "%q is not a non-negative integer", v)
	}
	return n, true, nil
}

// configPrefix reads ?prefix= and checks that the caller may read under it:
// a service token needs its service's name as a segment of the prefix.
func configPrefix(r *http.Request) (string, error) {
	p := r.URL.Query().Get("prefix")
	if err := meridian.ValidateConfigPrefix("prefix", p); err != nil {
		return "", err
	}
	return p, authorize(r.Context(), readConfig, p)
}

// configReadFilter is nil when the caller may read every key, else the test
// of each key. authorize on the prefix is not enough on its own: the prefix
// "prod/orders" has "orders" as a segment, yet covers "prod/orders-v2/x".
func configReadFilter(ctx context.Context) func(key string) bool {
	tok := principal(ctx)
	if tok == nil || allowed(tok, readConfig, "") {
		return nil
	}
	return func(key string) bool { return allowed(tok, readConfig, key) }
}

func (s *Server) handleConfigGet(w http.ResponseWriter, r *http.Request) {
	key, err := pathConfigKey(r)
	if err == nil {
		err = authorize(r.Context(), readConfig, key)
	}
	var rev uint64
	var at bool
	if err == nil {
		rev, at, err = queryRevision(r, "revision")
	}
	var e meridian.ConfigEntry
	var index uint64
	switch {
	case err != nil:
	case at:
		e, err = s.config.At(r.Context(), key, rev)
		index = e.Revision
	default:
		if err = s.consistent(r, s.config.mirror); err == nil {
			e, index, err = s.config.Get(key)
		}
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	setIndex(w, index)
	writeJSON(w, http.StatusOK, e)
}

func (s *Server) handleConfigPut(w http.ResponseWriter, r *http.Request) {
	key, err := pathConfigKey(r)
	if err == nil {
		err = authorize(r.Context(), writeConfig, key)
	}
	var body struct {
		Value          *string               `json:"value"`
		Format         meridian.ConfigFormat `json:"format"`
		Message        string                `json:"message"`
		ExpectRevision *uint64               `json:"expect_revision"`
	}
	if err == nil {
		// Room for a value at the limit even if JSON escaping doubles it;
		// the value's own limit is checked, with a clearer error, after.
		err = jsonbody.Decode(w, r, &body, int64(max(jsonbody.DefaultLimit, 2*s.config.maxValue)))
	}
	if err == nil && body.Value == nil {
		err = meridian.FieldError("value", "is required (a string; \"\" for an empty value)")
	}
	var e *meridian.ConfigEntry
	if err == nil {
		e, err = s.config.Put(r.Context(), key, ConfigWrite{
			Value: *body.Value, Format: body.Format, Message: body.Message,
			ExpectRevision: body.ExpectRevision, Author: principal(r.Context()).Name,
		})
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	setIndex(w, e.Revision)
	writeJSON(w, http.StatusOK, e)
}

func (s *Server) handleConfigDelete(w http.ResponseWriter, r *http.Request) {
	key, err := pathConfigKey(r)
	if err == nil {
		err = authorize(r.Context(), writeConfig, key)
	}
	var expect uint64
	if err == nil {
		var given bool
		expect, given, err = queryRevision(r, "expect_revision")
		if err == nil && given && expect == 0 {
			err = meridian.FieldError("expect_revision", "0 cannot be deleted: give the key's latest revision, or leave expect_revision out")
		}
	}
	var rev uint64
	if err == nil {
		rev, err = s.config.Delete(r.Context(), key, expect)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	setIndex(w, rev)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleConfigList(w http.ResponseWriter, r *http.Request) {
	prefix, err := configPrefix(r)
	if err == nil {
		err = s.consistent(r, s.config.mirror)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	list, index := s.config.List(prefix)
	if keep := configReadFilter(r.Context()); keep != nil {
		mine := list[:0]
		for _, e := range list {
			if keep(e.Key) {
				mine = append(mine, e)
			}
		}
		list = mine
	}
	setIndex(w, index)
	writeJSON(w, http.StatusOK, map[string]any{"index": index, "entries": list})
}

func (s *Server) handleConfigHistory(w http.ResponseWriter, r *http.Request) {
	key, err := pathConfigKey(r)
	if err == nil {
		err = authorize(r.Context(), readConfig, key)
	}
	var list []meridian.ConfigEntry
	if err == nil {
		list, err = s.config.History(r.Context(), key)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if len(list) > 0 {
		setIndex(w, list[len(list)-1].Revision)
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": list})
}

func (s *Server) handleConfigDiff(w http.ResponseWriter, r *http.Request) {
	key, err := pathConfigKey(r)
	if err == nil {
		err = authorize(r.Context(), readConfig, key)
	}
	var from, to uint64
	if err == nil {
		var given bool
		from, given, err = queryRevision(r, "from")
		if err == nil && !given {
			err = meridian.FieldError("from", "is required: the revision to diff from (see the key's history)")
		}
	}
	if err == nil {
		var given bool
		to, given, err = queryRevision(r, "to")
		if err == nil && given && to == 0 {
			err = meridian.FieldError("to", "0 is not a revision: leave to out for the latest")
		}
	}
	var d *ConfigDiff
	if err == nil {
		d, err = s.config.Diff(r.Context(), key, from, to)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	setIndex(w, max(d.From, d.To))
	writeJSON(w, http.StatusOK, d)
}

func (s *Server) handleConfigRollback(w http.ResponseWriter, r *http.Request) {
	key, err := pathConfigKey(r)
	if err == nil {
		err = authorize(r.Context(), writeConfig, key)
	}
	var body struct {
		Revision *uint64 `json:"revision"`
		Message  string  `json:"message"`
	}
	if err == nil {
		err = jsonbody.Decode(w, r, &body, 64<<10)
	}
	if err == nil && body.Revision == nil {
		err = meridian.FieldError("revision", "is required: the revision whose value to write again")
	}
	var e *meridian.ConfigEntry
	if err == nil {
		e, err = s.config.Rollback(r.Context(), key, *body.Revision, principal(r.Context()).Name, body.Message)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	setIndex(w, e.Revision)
	writeJSON(w, http.StatusOK, e)
}

// handleConfigWatch streams config changes under ?prefix= as server-sent
// events, as handleRegistryWatch does for the registry.
func (s *Server) handleConfigWatch(w http.ResponseWriter, r *http.Request) {
	prefix, err := configPrefix(r)
	var after uint64
	if err == nil {
		after, err = watchIndex(r)
	}
	var ch <-chan store.Entry
	if err == nil {
		ch, err = s.config.b.Watch(r.Context(), prefix, after)
		err = storeError(err)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if keep := configReadFilter(r.Context()); keep != nil {
		ch = filterEntries(r.Context(), ch, keep)
	}
	stream(r.Context(), startSSE(w), ch, s.config.event)
}

// filterEntries relays the changes of keys keep accepts, and every sync
// marker, until in is closed or ctx ends; then it closes its channel.
func filterEntries(ctx context.Context, in <-chan store.Entry, keep func(key string) bool) <-chan store.Entry {
	out := make(chan store.Entry)
	go func() {
		defer close(out)
		for {
			var e store.Entry
			var ok bool
			select {
			case e, ok = <-in:
				if !ok {
					return
				}
			case <-ctx.Done():
				return
			}
			if e.Op != store.OpSynced && !keep(e.Key) {
				continue
			}
			select {
			case out <- e:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}
