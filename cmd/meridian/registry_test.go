package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const servicesAnswer = `{"index":7,"services":[
 {"name":"orders","instances":3,"by_status":{"passing":2,"critical":1},"versions":["1.4.2","1.5.0"]},
 {"name":"payments","instances":1,"by_status":{"warning":1}}]}`

const instancesAnswer = `{"index":42,"instances":[
 {"service":"orders","id":"orders-1","address":"10.0.0.7","port":8080,"protocol":"http","version":"1.4.2","zone":"eu-west-1a","weight":100,
  "health":{"status":"passing","output":"HTTP 200 OK","since":"2026-11-26T15:00:00Z"},"registered_at":"2026-11-26T15:00:00Z","revision":40},
 {"service":"orders","id":"orders-2","address":"10.0.0.8","port":8080,"protocol":"grpc","weight":50,
  "health":{"status":"critical","output":"dial tcp 10.0.0.8:8080:\nconnection refused","since":"2026-11-26T15:00:00Z"},"registered_at":"2026-11-26T15:00:00Z","revision":42}]}`

func TestServices(t *testing.T) {
	d := newDouble(t, map[string]http.HandlerFunc{"GET /v1/services": reply(200, servicesAnswer)})

	o := d.cli(t, "services")
	wantOK(t, o)
	want := "" +
		"NAME      INSTANCES  PASSING  WARNING  CRITICAL  VERSIONS\n" +
		"orders    3          2        0        1         1.4.2,1.5.0\n" +
		"payments  1          0        1        0         -\n"
	if o.stdout != want {
		t.Errorf("text output\n%s\nwant\n%s", o.stdout, want)
	}

	o = d.cli(t, "services", "-o", "json")
	wantOK(t, o)
	var got struct {
		Index    uint64 `json:"index"`
		Services []struct {
			Name string `json:"name"`
		} `json:"services"`
	}
	if err := json.Unmarshal([]byte(o.stdout), &got); err != nil {
		t.Fatalf("json output %q: %v", o.stdout, err)
	}
	if got.Index != 7 || len(got.Services) != 2 || got.Services[1].Name != "payments" {
		t.Errorf("json output = %+v", got)
	}
}

func TestEmptyListsPrintEmptyJSONArrays(t *testing.T) {
	d := newDouble(t, map[string]http.HandlerFunc{
		"GET /v1/services":                reply(200, `{"index":1}`),
		"GET /v1/services/{s}/instances":  reply(200, `{"index":1}`),
		"GET /v1/config/keys":             reply(200, `{"index":1}`),
		"GET /v1/config/history/{key...}": reply(200, `{}`),
		"GET /v1/tokens":                  reply(200, `{}`),
	})
	for _, args := range [][]string{{"services"}, {"instances", "orders"}, {"config", "ls"}, {"config", "history", "k"}, {"token", "ls"}} {
		o := d.cli(t, append(args, "-o", "json")...)
		wantOK(t, o)
		if !strings.Contains(o.stdout, "[]") || strings.Contains(o.stdout, "null") {
			t.Errorf("%q printed %q", args, o.stdout)
		}
	}
}

func TestInstances(t *testing.T) {
	d := newDouble(t, map[string]http.HandlerFunc{"GET /v1/services/{s}/instances": reply(200, instancesAnswer)})

	o := d.cli(t, "instances", "orders")
	wantOK(t, o)
	want := "" +
		"ID        ADDRESS        PROTOCOL  VERSION  ZONE        WEIGHT  STATUS    OUTPUT\n" +
		"orders-1  10.0.0.7:8080  http      1.4.2    eu-west-1a  100     passing   HTTP 200 OK\n" +
		"orders-2  10.0.0.8:8080  grpc      -        -           50      critical  dial tcp 10.0.0.8:8080: connection refused\n"
	if o.stdout != want {
		t.Errorf("text output\n%s\nwant\n%s", o.stdout, want)
	}
	if r := d.last(t); r.Path != "/v1/services/orders/instances" || r.Query != "" {
		t.Errorf("request = %+v", r)
	}

	o = d.cli(t, "instances", "orders", "--healthy", "--index", "41", "--wait", "30s", "--stale", "-o", "json")
	wantOK(t, o)
	if r := d.last(t); r.Query != "healthy=true&index=41&stale=true&wait=30s" {
		t.Errorf("query = %q", r.Query)
	}
	var got struct {
		Index     uint64 `json:"index"`
		Instances []struct {
			ID string `json:"id"`
		} `json:"instances"`
	}
	if err := json.Unmarshal([]byte(o.stdout), &got); err != nil {
		t.Fatalf("json output %q: %v", o.stdout, err)
	}
	if got.Index != 42 || len(got.Instances) != 2 {
		t.Errorf("json output = %+v", got)
	}
}

// registered answers a register call with the instance it was sent, as
// the server would store it.
func registered(w http.ResponseWriter, r *http.Request) {
	var in map[string]any
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		problem(400, "invalid", "", err.Error(), 0)(w, r)
		return
	}
	in["revision"] = 42
	in["health"] = map[string]any{"status": "critical", "since": time.Now()}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(in)
}

func TestRegisterSendsTheFlags(t *testing.T) {
	d := newDouble(t, map[string]http.HandlerFunc{"PUT /v1/services/{s}/instances/{id}": registered})
	o := d.cli(t, "register", "--service", "orders", "--id", "orders-1", "--address", "10.0.0.7", "--port", "8080",
		"--protocol", "grpc", "--version", "1.4.2", "--zone", "eu-west-1a", "--weight", "50",
		"--tag", "primary", "--tag", "canary,blue", "--meta", "team=checkout", "--meta", "url=http://x/?a=b",
		"--ttl", "10s", "--check", "http", "--check-target", "/healthz", "--check-interval", "5s",
		"--check-timeout", "1s", "--check-successes", "2", "--check-failures", "4")
	wantOK(t, o)
	if o.stdout != "registered orders/orders-1 at 10.0.0.7:8080 (revision 42)\n" {
		t.Errorf("printed %q", o.stdout)
	}
	r := d.last(t)
	if r.Method != "PUT" || r.Path != "/v1/services/orders/instances/orders-1" {
		t.Errorf("request %s %s", r.Method, r.Path)
	}
	var got, want map[string]any
	json.Unmarshal([]byte(r.Body), &got)
	json.Unmarshal([]byte(`{"service":"orders","id":"orders-1","address":"10.0.0.7","port":8080,"protocol":"grpc",
		"version":"1.4.2","zone":"eu-west-1a","weight":50,"tags":["primary","canary,blue"],
		"metadata":{"team":"checkout","url":"http://x/?a=b"},"ttl":"10s",
		"check":{"kind":"http","target":"/healthz","interval":"5s","timeout":"1s","successes_before_passing":2,"failures_before_critical":4}}`), &want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("body\n got %s\nwant %v", r.Body, want)
	}
}

func TestRegisterDefaults(t *testing.T) {
	d := newDouble(t, map[string]http.HandlerFunc{"PUT /v1/services/{s}/instances/{id}": registered})
	wantOK(t, d.cli(t, "register", "--service", "orders", "--port", "8080"))
	host, _ := os.Hostname()
	var got map[string]any
	json.Unmarshal([]byte(d.last(t).Body), &got)
	want := map[string]any{"service": "orders", "id": fmt.Sprintf("orders-%s-8080", host), "address": "127.0.0.1", "port": 8080.0}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("body = %v, want %v", got, want)
	}
}

// TestRegisterHeartbeat runs `register --heartbeat` until interrupted: it
// heartbeats, registers again when the lease was lost, and deregisters on
// the way out.
func TestRegisterHeartbeat(t *testing.T) {
	beats := make(chan int, 16)
	var n atomic.Int32
	d := newDouble(t, map[string]http.HandlerFunc{
		"PUT /v1/services/{s}/instances/{id}": registered,
		"PUT /v1/services/{s}/instances/{id}/heartbeat": func(w http.ResponseWriter, r *http.Request) {
			b := n.Add(1)
			beats <- int(b)
			if b == 1 {
				problem(404, "not_found", "", "not registered", 0)(w, r)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		},
		"DELETE /v1/services/{s}/instances/{id}": reply(http.StatusNoContent, ""),
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan outcome, 1)
	go func() {
		done <- invocation{env: d.env(), ctx: ctx}.run(t, "register", "--service", "orders", "--id", "o-1", "--port", "80", "--ttl", "1s", "--heartbeat")
	}()
	for b := range beats {
		if b == 2 {
			break
		}
	}
	cancel()
	o := <-done
	wantOK(t, o)
	var calls []string
	for _, r := range d.requests() {
		calls = append(calls, r.Method+" "+strings.TrimPrefix(r.Path, "/v1/services/orders/instances/o-1"))
	}
	want := []string{"PUT ", "PUT /heartbeat", "PUT ", "PUT /heartbeat", "DELETE "}
	if !reflect.DeepEqual(calls, want) {
		t.Errorf("calls = %q, want %q", calls, want)
	}
	if o.stdout != "registered orders/o-1 at 127.0.0.1:80 (revision 42)\nderegistered orders/o-1\n" {
		t.Errorf("stdout = %q", o.stdout)
	}
	if !strings.Contains(o.stderr, "the lease of orders/o-1 expired; registering again") {
		t.Errorf("stderr = %q", o.stderr)
	}
}

func TestDeregisterAndHeartbeat(t *testing.T) {
	d := newDouble(t, map[string]http.HandlerFunc{
		"DELETE /v1/services/{s}/instances/{id}":        reply(http.StatusNoContent, ""),
		"PUT /v1/services/{s}/instances/{id}/heartbeat": reply(http.StatusNoContent, ""),
	})
	o := d.cli(t, "deregister", "orders", "host:8080")
	wantOK(t, o)
	if r := d.last(t); r.Method != "DELETE" || r.Path != "/v1/services/orders/instances/host:8080" || o.stdout != "deregistered orders/host:8080\n" {
		t.Errorf("%s %s printed %q", r.Method, r.Path, o.stdout)
	}
	o = d.cli(t, "heartbeat", "orders", "host:8080")
	wantOK(t, o)
	if r := d.last(t); r.Method != "PUT" || r.Path != "/v1/services/orders/instances/host:8080/heartbeat" {
		t.Errorf("%s %s", r.Method, r.Path)
	}
}
