// Package fakecp is an in-memory stand-in for the control plane's HTTP API
// (docs/api.md), for the SDK's and the data path's tests: registry
// register, deregister and heartbeat, the registry watch, config reads and
// the config watch, with problem+json errors, bearer tokens and
// server-sent events in the format the real server writes.
//
// It is a stand-in for the real control plane (package controlplane) where
// a test must drive the control plane into states the real one reaches only
// by chance or slowly: unreachable mid-stream, a given health transition,
// a lease lost at a chosen moment, with the watch indexes recorded. The
// end-to-end tests against the real control plane (sdk/e2e_test.go) cover
// the normal paths; more of them will replace uses of this package as the
// real server grows test hooks. It stays small on purpose. It runs no
// health checks (an instance registered with a check starts in the
// check's initial status and changes only through SetHealth) and leases
// never expire on their own (Expire removes an instance as an expired lease
// would).
//
// On top of the API it records what tests assert on: every call in order
// (Calls), the index each watch was opened with (Watches), and it can stop
// answering (SetDown) to imitate an unreachable control plane.
package fakecp

import (
	"cmp"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/internal/jsonbody"
	"github.com/meridian-platform/meridian/internal/problem"
)

// Server is a running stand-in. Its exported methods are safe from any
// goroutine.
type Server struct {
	// URL is the base URL, as a client's address.
	URL string
	// Token is the bearer token every /v1 call must carry.
	Token string

	hs   *httptest.Server
	quit chan struct{}

	mu        sync.Mutex
	down      bool
	wake      chan struct{} // closed and replaced on every change and on SetDown
	regIndex  uint64
	instances map[string]*meridian.Instance // "service/id" → instance
	regLog    []meridian.InstanceEvent
	cfgIndex  uint64
	configs   map[string][]meridian.ConfigEntry // key → revisions, oldest first
	cfgLog    []meridian.ConfigEvent
	calls     []string
	watches   []Watch
}

// Watch records one watch request.
type Watch struct {
	Path   string // /v1/registry/watch or /v1/config/watch
	Filter string // ?service= or ?prefix=
	Index  uint64 // the index it resumed after; 0 for a full list
}

// Start starts a stand-in on a loopback port, closed when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{
		Token:     "test-token",
		quit:      make(chan struct{}),
		wake:      make(chan struct{}),
		instances: make(map[string]*meridian.Instance),
		configs:   make(map[string][]meridian.ConfigEntry),
	}
	s.hs = httptest.NewServer(s.routes())
	s.URL = s.hs.URL
	t.Cleanup(s.Close)
	return s
}

// Close ends open watches and stops the server.
func (s *Server) Close() {
	select {
	case <-s.quit:
		return
	default:
	}
	close(s.quit)
	s.hs.Close()
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /v1/services/{service}/instances/{id}", s.register)
	mux.HandleFunc("DELETE /v1/services/{service}/instances/{id}", s.deregister)
	mux.HandleFunc("PUT /v1/services/{service}/instances/{id}/heartbeat", s.heartbeat)
	mux.HandleFunc("GET /v1/registry/watch", s.registryWatch)
	mux.HandleFunc("GET /v1/config/keys/{key...}", s.configGet)
	mux.HandleFunc("GET /v1/config/watch", s.configWatch)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		down := s.down
		s.calls = append(s.calls, r.Method+" "+r.URL.Path)
		s.mu.Unlock()
		if down {
			// Unreachable: the connection closes without an answer.
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+s.Token {
			fail(w, r, meridian.Errorf(meridian.CodeUnauthorized, "a bearer token is required"))
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func fail(w http.ResponseWriter, r *http.Request, err error) {
	problem.Write(w, r, slog.New(slog.DiscardHandler), err)
}

// changed wakes the watches; s.mu is held.
func (s *Server) changed() {
	close(s.wake)
	s.wake = make(chan struct{})
}

// SetDown makes the server drop every request without an answer (true)
// and ends the open watches, or answer again (false).
func (s *Server) SetDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
	s.changed()
}

// Calls returns "METHOD /path" of every request so far, in arrival order.
func (s *Server) Calls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// Watches returns every watch request so far, in arrival order.
func (s *Server) Watches() []Watch {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.watches)
}

// Instance returns a copy of a registered instance, or nil.
func (s *Server) Instance(service, id string) *meridian.Instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	if in := s.instances[service+"/"+id]; in != nil {
		c := *in
		return &c
	}
	return nil
}

// Put registers or replaces an instance directly, as if through the API;
// its Health is kept as given (passing if empty).
func (s *Server) Put(in meridian.Instance) uint64 {
	if in.Health.Status == "" {
		in.Health.Status = meridian.StatusPassing
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.putLocked(&in)
}

func (s *Server) putLocked(in *meridian.Instance) uint64 {
	s.regIndex++
	in.Revision = s.regIndex
	s.instances[in.Service+"/"+in.ID] = in
	c := *in
	s.regLog = append(s.regLog, meridian.InstanceEvent{Type: meridian.EventPut, Index: s.regIndex, Service: in.Service, ID: in.ID, Instance: &c})
	s.changed()
	return s.regIndex
}

// SetHealth changes a registered instance's health, as a check would.
func (s *Server) SetHealth(service, id string, status meridian.HealthStatus) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.instances[service+"/"+id]
	if in == nil {
		panic("fakecp: SetHealth of unknown instance " + service + "/" + id)
	}
	c := *in
	c.Health = meridian.Health{Status: status, Since: time.Now().UTC()}
	return s.putLocked(&c)
}

// Expire removes an instance as an expired lease does; the next heartbeat
// answers not_found.
func (s *Server) Expire(service, id string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.removeLocked(service, id, "lease expired")
}

func (s *Server) removeLocked(service, id, reason string) uint64 {
	delete(s.instances, service+"/"+id)
	s.regIndex++
	s.regLog = append(s.regLog, meridian.InstanceEvent{Type: meridian.EventDelete, Index: s.regIndex, Service: service, ID: id, Reason: reason})
	s.changed()
	return s.regIndex
}

func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	var in meridian.Instance
	if err := jsonbody.Decode(w, r, &in, 1<<20); err != nil {
		fail(w, r, err)
		return
	}
	service, id := r.PathValue("service"), r.PathValue("id")
	if in.Service != "" && in.Service != service {
		fail(w, r, meridian.FieldError("service", "%q does not match the path's %q", in.Service, service))
		return
	}
	if in.ID != "" && in.ID != id {
		fail(w, r, meridian.FieldError("id", "%q does not match the path's %q", in.ID, id))
		return
	}
	in.Service, in.ID = service, id
	if err := in.Normalize(); err != nil {
		fail(w, r, err)
		return
	}
	now := time.Now().UTC()
	in.Health = meridian.Health{Status: meridian.StatusPassing, Since: now}
	if in.Check != nil {
		in.Health.Status = in.Check.InitialStatus
	}
	in.RegisteredAt = now
	s.mu.Lock()
	index := s.putLocked(&in)
	out := in
	s.mu.Unlock()
	writeJSON(w, index, http.StatusOK, out)
}

func (s *Server) deregister(w http.ResponseWriter, r *http.Request) {
	service, id := r.PathValue("service"), r.PathValue("id")
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.instances[service+"/"+id] == nil {
		fail(w, r, meridian.Errorf(meridian.CodeNotFound, "instance %s/%s is not registered", service, id))
		return
	}
	w.Header().Set("X-Meridian-Index", strconv.FormatUint(s.removeLocked(service, id, "deregistered"), 10))
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request) {
	service, id := r.PathValue("service"), r.PathValue("id")
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.instances[service+"/"+id] == nil {
		fail(w, r, meridian.Errorf(meridian.CodeNotFound, "instance %s/%s is not registered: register it again", service, id))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// PutConfig writes a config revision directly, as if through the API.
func (s *Server) PutConfig(key string, format meridian.ConfigFormat, value string) meridian.ConfigEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writeConfigLocked(meridian.ConfigEntry{Key: key, Value: value, Format: format, Author: "test"})
}

// DeleteConfig deletes a key directly (its history is kept).
func (s *Server) DeleteConfig(key string) meridian.ConfigEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writeConfigLocked(meridian.ConfigEntry{Key: key, Deleted: true, Author: "test"})
}

func (s *Server) writeConfigLocked(e meridian.ConfigEntry) meridian.ConfigEntry {
	s.cfgIndex++
	e.Revision, e.Time = s.cfgIndex, time.Now().UTC()
	s.configs[e.Key] = append(s.configs[e.Key], e)
	typ := meridian.EventPut
	if e.Deleted {
		typ = meridian.EventDelete
	}
	s.cfgLog = append(s.cfgLog, meridian.ConfigEvent{Type: typ, Index: e.Revision, Entry: e})
	s.changed()
	return e
}

func (s *Server) configGet(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if err := meridian.ValidateConfigKey("key", key); err != nil {
		fail(w, r, err)
		return
	}
	var rev uint64
	if v := r.URL.Query().Get("revision"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			fail(w, r, meridian.FieldError("revision", "%q is not a non-negative integer", v))
			return
		}
		rev = n
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	revs := s.configs[key]
	var found *meridian.ConfigEntry
	if rev == 0 && len(revs) > 0 && !revs[len(revs)-1].Deleted {
		found = &revs[len(revs)-1]
	}
	for i := range revs {
		if rev != 0 && revs[i].Revision == rev {
			found = &revs[i]
		}
	}
	if found == nil {
		fail(w, r, meridian.Errorf(meridian.CodeNotFound, "config key %s not found", key))
		return
	}
	writeJSON(w, s.cfgIndex, http.StatusOK, found)
}

func writeJSON(w http.ResponseWriter, index uint64, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Meridian-Index", strconv.FormatUint(index, 10))
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// event is one server-sent event: its name, id (index) and data.
type event struct {
	name  string
	index uint64
	data  any
}

func (s *Server) registryWatch(w http.ResponseWriter, r *http.Request) {
	service := r.URL.Query().Get("service")
	if service != "" {
		if err := meridian.ValidateServiceName("service", service); err != nil {
			fail(w, r, err)
			return
		}
	}
	s.stream(w, r, service, func(after uint64, full bool) ([]event, uint64) {
		var out []event
		if full {
			for _, in := range s.instances {
				if service == "" || in.Service == service {
					c := *in
					out = append(out, event{"put", in.Revision, meridian.InstanceEvent{Type: meridian.EventPut, Index: in.Revision, Service: in.Service, ID: in.ID, Instance: &c}})
				}
			}
			slices.SortFunc(out, func(a, b event) int { return cmp.Compare(a.index, b.index) })
			return out, s.regIndex
		}
		for _, ev := range s.regLog {
			if ev.Index > after && (service == "" || ev.Service == service) {
				out = append(out, event{string(ev.Type), ev.Index, ev})
			}
		}
		return out, s.regIndex
	}, func(index uint64) any { return meridian.InstanceEvent{Type: meridian.EventSync, Index: index} })
}

func (s *Server) configWatch(w http.ResponseWriter, r *http.Request) {
	prefix := r.URL.Query().Get("prefix")
	if err := meridian.ValidateConfigPrefix("prefix", prefix); err != nil {
		fail(w, r, err)
		return
	}
	s.stream(w, r, prefix, func(after uint64, full bool) ([]event, uint64) {
		var out []event
		if full {
			for key, revs := range s.configs {
				if last := revs[len(revs)-1]; strings.HasPrefix(key, prefix) && !last.Deleted {
					out = append(out, event{"put", last.Revision, meridian.ConfigEvent{Type: meridian.EventPut, Index: last.Revision, Entry: last}})
				}
			}
			slices.SortFunc(out, func(a, b event) int { return cmp.Compare(a.index, b.index) })
			return out, s.cfgIndex
		}
		for _, ev := range s.cfgLog {
			if ev.Index > after && strings.HasPrefix(ev.Entry.Key, prefix) {
				out = append(out, event{string(ev.Type), ev.Index, ev})
			}
		}
		return out, s.cfgIndex
	}, func(index uint64) any { return meridian.ConfigEvent{Type: meridian.EventSync, Index: index} })
}

// stream serves a watch: the backlog after the requested index (or the
// full list), a sync event, then live changes, until the client leaves,
// the server goes down or closes. since returns the current list as puts
// (full) or the changes after an index, and the current index; it runs with
// s.mu held.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, filter string, since func(after uint64, full bool) ([]event, uint64), syncData func(uint64) any) {
	v := r.URL.Query().Get("index")
	if v == "" {
		v = r.Header.Get("Last-Event-ID")
	}
	var after uint64
	if v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			fail(w, r, meridian.FieldError("index", "%q is not a non-negative integer", v))
			return
		}
		after = n
	}
	s.mu.Lock()
	s.watches = append(s.watches, Watch{Path: r.URL.Path, Filter: filter, Index: after})
	backlog, cursor := since(after, after == 0)
	wake := s.wake
	s.mu.Unlock()

	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	send := func(evs ...event) bool {
		for _, ev := range evs {
			b, _ := json.Marshal(ev.data)
			if _, err := fmt.Fprintf(w, "event: %s\nid: %d\ndata: %s\n\n", ev.name, ev.index, b); err != nil {
				return false
			}
		}
		return rc.Flush() == nil
	}
	if !send(append(backlog, event{"sync", cursor, syncData(cursor)})...) {
		return
	}
	for {
		select {
		case <-wake:
		case <-r.Context().Done():
			return
		case <-s.quit:
			return
		}
		s.mu.Lock()
		if s.down {
			s.mu.Unlock()
			return
		}
		var live []event
		live, cursor = since(cursor, false)
		wake = s.wake
		s.mu.Unlock()
		if !send(live...) {
			return
		}
	}
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.hs.Listener.Addr().(*net.TCPAddr).String() }
