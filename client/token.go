package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/meridian-platform/meridian"
)

// CreateToken creates a token and returns its secret, which the server
// shows this once. service is required for, and only allowed with,
// meridian.RoleService.
func (c *Client) CreateToken(ctx context.Context, name string, role meridian.Role, service string) (secret string, tok *meridian.Token, err error) {
	body := struct {
		Name    string        `json:"name"`
		Role    meridian.Role `json:"role"`
		Service string        `json:"service,omitempty"`
	}{name, role, service}
	var out struct {
		meridian.Token
		Secret string `json:"secret"`
	}
	if _, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/tokens", body: body}, &out); err != nil {
		return "", nil, err
	}
	return out.Secret, &out.Token, nil
}

// Tokens lists the tokens (never their secrets).
func (c *Client) Tokens(ctx context.Context) ([]meridian.Token, error) {
	var out struct {
		Tokens []meridian.Token `json:"tokens"`
	}
	if _, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/tokens"}, &out); err != nil {
		return nil, err
	}
	return out.Tokens, nil
}

// RevokeToken revokes the token called name.
func (c *Client) RevokeToken(ctx context.Context, name string) error {
	if name == "" {
		return meridian.FieldError("name", "is required")
	}
	_, err := c.do(ctx, request{method: http.MethodDelete, path: "/v1/tokens/" + url.PathEscape(name)}, nil)
	return err
}

// WhoAmI returns the token the client authenticates with.
func (c *Client) WhoAmI(ctx context.Context) (*meridian.Token, error) {
	var out meridian.Token
	if _, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/whoami"}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
