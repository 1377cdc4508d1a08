package controlplane

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/controlplane/store"
	"github.com/meridian-platform/meridian/internal/jsonbody"
)

// Blocking-query bounds, as Consul's: a client that asks for no wait gets
// the default, and nobody holds a request longer than the maximum.
const (
	defaultWait = time.Minute
	maxWait     = 10 * time.Minute
)

func pathService(r *http.Request) (string, error) {
	s := r.PathValue("service")
	return s, meridian.ValidateServiceName("service", s)
}

func pathInstance(r *http.Request) (service, id string, err error) {
	if service, err = pathService(r); err != nil {
		return "", "", err
	}
	id = r.PathValue("id")
	return service, id, meridian.ValidateInstanceID("id", id)
}

func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) {
	service, id, err := pathInstance(r)
	if err == nil {
		err = authorize(r.Context(), writeRegistry, service)
	}
	var in meridian.Instance
	if err == nil {
		err = jsonbody.Decode(w, r, &in, 0)
	}
	if err == nil {
		switch {
		case in.Service != "" && in.Service != service:
			err = meridian.FieldError("service", "%q does not match the path's service %q", in.Service, service)
		case in.ID != "" && in.ID != id:
			err = meridian.FieldError("id", "%q does not match the path's id %q", in.ID, id)
		}
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	in.Service, in.ID = service, id
	out, err := s.registry.Register(r.Context(), in)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.InfoContext(r.Context(), "instance registered", "service", service, "id", id, "addr", out.HostPort(), "by", principal(r.Context()).Name, "revision", out.Revision)
	setIndex(w, out.Revision)
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleDeregister(w http.ResponseWriter, r *http.Request) {
	service, id, err := pathInstance(r)
	if err == nil {
		err = authorize(r.Context(), writeRegistry, service)
	}
	var rev uint64
	if err == nil {
		rev, err = s.registry.Deregister(r.Context(), service, id)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.InfoContext(r.Context(), "instance deregistered", "service", service, "id", id, "by", principal(r.Context()).Name, "revision", rev)
	setIndex(w, rev)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleHeartbeat(w http.ResponseWriter, r *http.Request) {
	service, id, err := pathInstance(r)
	if err == nil {
		err = authorize(r.Context(), writeRegistry, service)
	}
	if err == nil {
		err = s.registry.Heartbeat(r.Context(), service, id)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// consistent makes a read see every write that finished before it began,
// unless the caller asked for ?stale=true.
func (s *Server) consistent(r *http.Request, m *mirror) error {
	if v := r.URL.Query().Get("stale"); v != "" {
		stale, err := strconv.ParseBool(v)
		if err != nil {
			return meridian.FieldError("stale", "%q is not true or false", v)
		}
		if stale {
			return nil
		}
	}
	return storeError(m.sync(r.Context()))
}

func (s *Server) handleServices(w http.ResponseWriter, r *http.Request) {
	err := authorize(r.Context(), readRegistry, "")
	if err == nil {
		err = s.consistent(r, s.registry.mirror)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	list, index := s.registry.Services()
	setIndex(w, index)
	writeJSON(w, http.StatusOK, map[string]any{"index": index, "services": list})
}

func (s *Server) handleInstances(w http.ResponseWriter, r *http.Request) {
	service, err := pathService(r)
	if err == nil {
		err = authorize(r.Context(), readRegistry, service)
	}
	q := r.URL.Query()
	healthy, index, wait := false, uint64(0), defaultWait
	if err == nil && q.Get("healthy") != "" {
		if healthy, err = strconv.ParseBool(q.Get("healthy")); err != nil {
			err = meridian.FieldError("healthy", "%q is not true or false", q.Get("healthy"))
		}
	}
	if err == nil && q.Get("index") != "" {
		if index, err = strconv.ParseUint(q.Get("index"), 10, 64); err != nil {
			err = meridian.FieldError("index", "%q is not a non-negative integer", q.Get("index"))
		}
	}
	if err == nil && q.Get("wait") != "" {
		if wait, err = time.ParseDuration(q.Get("wait")); err != nil || wait <= 0 || wait > maxWait {
			err = meridian.FieldError("wait", "%q is not a duration between 1ms and %s (like 30s)", q.Get("wait"), maxWait)
		}
	}
	if err == nil {
		err = s.consistent(r, s.registry.mirror)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if index > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		s.registry.waitService(ctx, service, index)
		cancel()
	}
	list, idx := s.registry.Instances(service, healthy)
	setIndex(w, idx)
	writeJSON(w, http.StatusOK, map[string]any{"index": idx, "instances": list})
}

func (s *Server) handleInstance(w http.ResponseWriter, r *http.Request) {
	service, id, err := pathInstance(r)
	if err == nil {
		err = authorize(r.Context(), readRegistry, service)
	}
	if err == nil {
		err = s.consistent(r, s.registry.mirror)
	}
	var in *meridian.Instance
	if err == nil {
		in, err = s.registry.Instance(service, id)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	setIndex(w, in.Revision)
	writeJSON(w, http.StatusOK, in)
}

// handleRegistryWatch streams registry changes as server-sent events.
func (s *Server) handleRegistryWatch(w http.ResponseWriter, r *http.Request) {
	prefix := ""
	service := r.URL.Query().Get("service")
	err := authorize(r.Context(), readRegistry, service)
	if err == nil && service != "" {
		err = meridian.ValidateServiceName("service", service)
		prefix = service + "/"
	}
	var after uint64
	if err == nil {
		after, err = watchIndex(r)
	}
	var ch <-chan store.Entry
	if err == nil {
		ch, err = s.registry.cfg.reg.Watch(r.Context(), prefix, after)
		err = storeError(err)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	stream(r.Context(), startSSE(w), ch, func(e store.Entry) (string, uint64, any) {
		if e.Op == store.OpSynced {
			return string(meridian.EventSync), e.Revision, meridian.InstanceEvent{Type: meridian.EventSync, Index: e.Revision}
		}
		svc, id := splitKey(e.Key)
		ev := meridian.InstanceEvent{Type: meridian.EventDelete, Index: e.Revision, Service: svc, ID: id}
		if e.Op == store.OpPut {
			in := new(meridian.Instance)
			if jsonUnmarshal(e.Value, in) == nil {
				in.Revision = e.Revision
				ev.Type, ev.Instance = meridian.EventPut, in
			}
		}
		return string(ev.Type), e.Revision, ev
	})
}

// stream relays store changes as events until the client goes away or the
// watch ends (then the client reconnects with its last event id).
func stream(ctx context.Context, out *sse, ch <-chan store.Entry, conv func(store.Entry) (string, uint64, any)) {
	ping := time.NewTicker(ssePing)
	defer ping.Stop()
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				return
			}
			if err := out.send(conv(e)); err != nil {
				return
			}
		case <-ping.C:
			if out.ping() != nil {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}
