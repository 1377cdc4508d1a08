package controlplane

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/controlplane/store"
)

// tokenPrefix starts every secret, so that leaked tokens are easy to grep
// for and secret scanners can recognise them.
const tokenPrefix = "mrd_"

// tokenRecord is what the store keeps: the token's description and the
// SHA-256 of its secret, never the secret.
type tokenRecord struct {
	meridian.Token
	Hash string `json:"hash"`
}

// Tokens keeps API tokens in a bucket and authenticates requests against a
// mirror of it, so that a revocation on any replica applies everywhere as
// soon as the watch delivers it.
type Tokens struct {
	b      store.Bucket
	mirror *mirror
	mu     sync.RWMutex
	byHash map[string]*meridian.Token
	byName map[string]*tokenRecord
}

func newTokens(b store.Bucket, log *slog.Logger) *Tokens {
	t := &Tokens{b: b, byHash: map[string]*meridian.Token{}, byName: map[string]*tokenRecord{}}
	t.mirror = newMirror(b, "tokens", log, t.apply)
	return t
}

func (t *Tokens) apply(e store.Entry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if old := t.byName[e.Key]; old != nil {
		delete(t.byHash, old.Hash)
		delete(t.byName, e.Key)
	}
	if e.Op != store.OpPut {
		return
	}
	var rec tokenRecord
	if json.Unmarshal(e.Value, &rec) != nil {
		return
	}
	t.byName[e.Key] = &rec
	tok := rec.Token
	t.byHash[rec.Hash] = &tok
}

func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

func newSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b)
}

// Authenticate returns the token a secret belongs to.
func (t *Tokens) Authenticate(secret string) (*meridian.Token, bool) {
	// The secret is 256 random bits, so looking up its hash in a map leaks
	// nothing a timing attacker could use.
	h := hashSecret(secret)
	t.mu.RLock()
	defer t.mu.RUnlock()
	tok, ok := t.byHash[h]
	return tok, ok
}

// Create makes a token and returns its secret, which is never stored.
func (t *Tokens) Create(ctx context.Context, tok meridian.Token) (string, *meridian.Token, error) {
	if err := meridian.ValidateServiceName("name", tok.Name); err != nil {
		return "", nil, err
	}
	switch tok.Role {
	case meridian.RoleAdmin, meridian.RoleOperator, meridian.RoleViewer:
		if tok.Service != "" {
			return "", nil, meridian.FieldError("service", "is only for the service role")
		}
	case meridian.RoleService:
		if err := meridian.ValidateServiceName("service", tok.Service); err != nil {
			return "", nil, err
		}
	case "":
		return "", nil, meridian.FieldError("role", "is required: one of admin, operator, viewer, service")
	default:
		return "", nil, meridian.FieldError("role", "%q is not one of admin, operator, viewer, service", tok.Role)
	}
	tok.CreatedAt = time.Now().UTC()
	secret := newSecret()
	val, _ := json.Marshal(tokenRecord{Token: tok, Hash: hashSecret(secret)})
	if _, err := t.b.Create(ctx, tok.Name, val); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return "", nil, meridian.Errorf(meridian.CodeConflict, "a token named %q exists; revoke it first or pick another name", tok.Name)
		}
		return "", nil, storeError(err)
	}
	return secret, &tok, nil
}

// List returns the tokens, after catching up with the store.
func (t *Tokens) List(ctx context.Context) ([]meridian.Token, error) {
	if err := t.mirror.sync(ctx); err != nil {
		return nil, storeError(err)
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]meridian.Token, 0, len(t.byName))
	for _, r := range t.byName {
		out = append(out, r.Token)
	}
	sortBy(out, func(a meridian.Token) string { return a.Name })
	return out, nil
}

// Revoke deletes a token.
func (t *Tokens) Revoke(ctx context.Context, name string) error {
	if _, err := t.b.Get(ctx, name); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return meridian.Errorf(meridian.CodeNotFound, "no token named %q", name)
		}
		return storeError(err)
	}
	_, err := t.b.Delete(ctx, name, 0)
	return storeError(err)
}

// bootstrap creates the first admin token unless one named "admin" exists.
// Several replicas may race here; the store's create-if-absent picks one,
// and only that one learns the secret.
func (t *Tokens) bootstrap(ctx context.Context) (secret string, err error) {
	if _, err := t.b.Get(ctx, "admin"); err == nil {
		return "", nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return "", storeError(err)
	}
	secret, _, err = t.Create(ctx, meridian.Token{Name: "admin", Role: meridian.RoleAdmin, CreatedBy: "bootstrap"})
	if meridian.IsCode(err, meridian.CodeConflict) {
		return "", nil
	}
	return secret, err
}

// action is what a request wants to do, for authorization.
type action int

const (
	readRegistry action = iota
	writeRegistry
	readConfig
	writeConfig
	manageTokens
	readBus             // list topics, tail events, read dead letters and subscriptions
	publishEvents       // publish to a topic
	manageSubscriptions // create or delete a push subscription
	replayDeadLetters   // send dead letters back to their topic
)

// allowed is the whole authorization policy. For writeRegistry the target
// is a service name; for readConfig a config key (or prefix); for
// manageSubscriptions the service the subscription belongs to ("" for
// none). A service token may publish to any topic (the events name their
// source) and manage its own service's subscriptions; the handler also
// holds those to delivering to the service itself.
func allowed(tok *meridian.Token, a action, target string) bool {
	switch tok.Role {
	case meridian.RoleAdmin:
		return true
	case meridian.RoleOperator:
		return a != manageTokens
	case meridian.RoleViewer:
		return a == readRegistry || a == readConfig || a == readBus
	case meridian.RoleService:
		switch a {
		case readRegistry, readBus, publishEvents:
			return true
		case manageSubscriptions:
			return target == tok.Service
		case writeRegistry:
			return target == tok.Service
		case readConfig:
			for _, seg := range strings.Split(target, "/") {
				if seg == tok.Service {
					return true
				}
			}
		}
	}
	return false
}

type principalKey struct{}

// principal is the authenticated token of a request.
func principal(ctx context.Context) *meridian.Token {
	tok, _ := ctx.Value(principalKey{}).(*meridian.Token)
	return tok
}

// authorize answers whether the request's token may do a to target.
func authorize(ctx context.Context, a action, target string) error {
	tok := principal(ctx)
	if tok == nil {
		return meridian.Errorf(meridian.CodeUnauthorized, "a bearer token is required")
	}
	if !allowed(tok, a, target) {
		what := map[action]string{
			readRegistry: "read the registry", writeRegistry: "change instances of service " + target,
			readConfig: "read config " + target, writeConfig: "write config", manageTokens: "manage tokens",
			readBus: "read the event bus", publishEvents: "publish to topic " + target,
			manageSubscriptions: "manage subscriptions of service " + target, replayDeadLetters: "replay dead letters",
		}[a]
		if a == manageSubscriptions && target == "" {
			what = "manage subscriptions that belong to no service"
		}
		return meridian.Errorf(meridian.CodeForbidden, "token %q (role %s) may not %s", tok.Name, tok.Role, what)
	}
	return nil
}

// authenticate is middleware that puts the request's token in its context.
// With auth off every request is an anonymous admin.
func (s *Server) authenticate(next http.Handler) http.Handler {
	anonymous := &meridian.Token{Name: "anonymous", Role: meridian.RoleAdmin}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.NoAuth {
			r2 := r.WithContext(context.WithValue(r.Context(), principalKey{}, anonymous))
			next.ServeHTTP(w, r2)
			if rec, ok := w.(*statusRecorder); ok {
				rec.route = r2.Pattern
			}
			return
		}
		h := r.Header.Get("Authorization")
		secret, ok := strings.CutPrefix(h, "Bearer ")
		if !ok || secret == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="meridian"`)
			s.fail(w, r, meridian.Errorf(meridian.CodeUnauthorized, "a bearer token is required (Authorization: Bearer <token>)"))
			return
		}
		secret = strings.TrimSpace(secret)
		tok, ok := s.tokens.Authenticate(secret)
		if !ok && s.tokens.mirror.sync(r.Context()) == nil {
			// Created a moment ago, perhaps on another replica, or asked
			// before this replica loaded its tokens: catch up and look again.
			tok, ok = s.tokens.Authenticate(secret)
		}
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="meridian", error="invalid_token"`)
			s.fail(w, r, meridian.Errorf(meridian.CodeUnauthorized, "the token is not valid (unknown or revoked)"))
			return
		}
		r2 := r.WithContext(context.WithValue(r.Context(), principalKey{}, tok))
		next.ServeHTTP(w, r2)
		// The API mux matched on the copy; hand its pattern to the metrics.
		if rec, ok := w.(*statusRecorder); ok {
			rec.route = r2.Pattern
		}
	})
}
