package controlplane

import (
	"encoding/json"
	"net/http"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/internal/jsonbody"
)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func (s *Server) handleTokenCreate(w http.ResponseWriter, r *http.Request) {
	err := authorize(r.Context(), manageTokens, "")
	var req struct {
		Name    string        `json:"name"`
		Role    meridian.Role `json:"role"`
		Service string        `json:"service,omitempty"`
	}
	if err == nil {
		err = jsonbody.Decode(w, r, &req, 64<<10)
	}
	var secret string
	var tok *meridian.Token
	if err == nil {
		secret, tok, err = s.tokens.Create(r.Context(), meridian.Token{
			Name: req.Name, Role: req.Role, Service: req.Service, CreatedBy: principal(r.Context()).Name,
		})
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.InfoContext(r.Context(), "token created", "name", tok.Name, "role", tok.Role, "service", tok.Service, "by", tok.CreatedBy)
	writeJSON(w, http.StatusCreated, struct {
		*meridian.Token
		Secret string `json:"secret"`
	}{tok, secret})
}

func (s *Server) handleTokenList(w http.ResponseWriter, r *http.Request) {
	err := authorize(r.Context(), manageTokens, "")
	var list []meridian.Token
	if err == nil {
		list, err = s.tokens.List(r.Context())
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"tokens": list})
}

func (s *Server) handleTokenRevoke(w http.ResponseWriter, r *http.Request) {
	err := authorize(r.Context(), manageTokens, "")
	if err == nil {
		err = s.tokens.Revoke(r.Context(), r.PathValue("name"))
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.InfoContext(r.Context(), "token revoked", "name", r.PathValue("name"), "by", principal(r.Context()).Name)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleWhoAmI(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, principal(r.Context()))
}
