package main

import (
	"encoding/json"
	"net/http"
	"testing"
)

func TestTokenCreate(t *testing.T) {
	d := newDouble(t, map[string]http.HandlerFunc{
		"POST /v1/tokens": reply(201, `{"name":"orders-svc","role":"service","service":"orders","created_at":"2026-11-26T15:00:00Z","created_by":"admin","secret":"mrd_s3cret"}`),
	})
	o := d.cli(t, "token", "create", "orders-svc", "--role", "service", "--service", "orders")
	wantOK(t, o)
	if o.stdout != "mrd_s3cret\n" {
		t.Errorf("stdout = %q, want the secret alone", o.stdout)
	}
	if o.stderr != "created token \"orders-svc\" (role service); its secret is shown only this once\n" {
		t.Errorf("stderr = %q", o.stderr)
	}
	if r := d.last(t); r.Body != `{"name":"orders-svc","role":"service","service":"orders"}` {
		t.Errorf("body = %s", r.Body)
	}

	o = d.cli(t, "token", "create", "orders-svc", "--role", "service", "--service", "orders", "-o", "json")
	wantOK(t, o)
	var got map[string]any
	if err := json.Unmarshal([]byte(o.stdout), &got); err != nil {
		t.Fatal(err)
	}
	if got["secret"] != "mrd_s3cret" || got["name"] != "orders-svc" || got["role"] != "service" {
		t.Errorf("json output = %v", got)
	}
}

func TestTokenLsAndRevoke(t *testing.T) {
	d := newDouble(t, map[string]http.HandlerFunc{
		"GET /v1/tokens": reply(200, `{"tokens":[
			{"name":"admin","role":"admin","created_at":"2026-11-26T15:00:00Z","created_by":"bootstrap"},
			{"name":"orders-svc","role":"service","service":"orders","created_at":"2026-11-26T16:00:00Z","created_by":"admin"}]}`),
		"DELETE /v1/tokens/{name}": reply(http.StatusNoContent, ""),
	})
	o := d.cli(t, "token", "ls")
	wantOK(t, o)
	want := "" +
		"NAME        ROLE     SERVICE  CREATED               CREATED BY\n" +
		"admin       admin    -        2026-11-26T15:00:00Z  bootstrap\n" +
		"orders-svc  service  orders   2026-11-26T16:00:00Z  admin\n"
	if o.stdout != want {
		t.Errorf("ls output\n%s\nwant\n%s", o.stdout, want)
	}

	o = d.cli(t, "token", "revoke", "orders-svc")
	wantOK(t, o)
	if r := d.last(t); r.Method != "DELETE" || r.Path != "/v1/tokens/orders-svc" || o.stdout != "revoked token \"orders-svc\"\n" {
		t.Errorf("sent %s %s, printed %q", r.Method, r.Path, o.stdout)
	}
}
