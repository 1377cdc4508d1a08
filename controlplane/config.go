package controlplane

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/controlplane/store"
)

// Placeholder until the config center lands.
type ConfigCenter struct{ m *mirror }

func newConfigCenter(b store.Bucket, log *slog.Logger, maxValue int) *ConfigCenter {
	return &ConfigCenter{m: newMirror(b, "config", log, func(store.Entry) {})}
}
func (c *ConfigCenter) run(ctx context.Context) error { return c.m.run(ctx) }
func (c *ConfigCenter) ready() bool                   { return c.m.ready() }

func notYet(w http.ResponseWriter, r *http.Request) {
	http.Error(w, "not implemented", http.StatusNotImplemented)
}

var _ = meridian.CodeInvalid

func (s *Server) handleConfigList(w http.ResponseWriter, r *http.Request)     { notYet(w, r) }
func (s *Server) handleConfigGet(w http.ResponseWriter, r *http.Request)      { notYet(w, r) }
func (s *Server) handleConfigPut(w http.ResponseWriter, r *http.Request)      { notYet(w, r) }
func (s *Server) handleConfigDelete(w http.ResponseWriter, r *http.Request)   { notYet(w, r) }
func (s *Server) handleConfigHistory(w http.ResponseWriter, r *http.Request)  { notYet(w, r) }
func (s *Server) handleConfigDiff(w http.ResponseWriter, r *http.Request)     { notYet(w, r) }
func (s *Server) handleConfigRollback(w http.ResponseWriter, r *http.Request) { notYet(w, r) }
func (s *Server) handleConfigWatch(w http.ResponseWriter, r *http.Request)    { notYet(w, r) }
