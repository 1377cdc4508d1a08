package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/bench/internal/benchenv"
	"github.com/meridian-platform/meridian/client"
)

// meridianSys drives `meridian server` over its HTTP API with the Go
// client, as the SDK does: PUT to register, PUT .../heartbeat every TTL/3,
// DELETE to deregister, and the SSE watch of all services.
type meridianSys struct {
	bin     string
	ttl     time.Duration
	workers int // concurrent heartbeats at most
	conns   int // idle connections kept to the server

	proc    *benchenv.Child
	addr    string
	tr      *http.Transport
	cl      *client.Client // registrations and heartbeats, on the shared transport
	watchCl *client.Client // the watcher, on its own connection

	ok, failed atomic.Uint64
}

var _ system = (*meridianSys)(nil)

func (m *meridianSys) name() string { return "meridian" }

func (m *meridianSys) start(ctx context.Context, dir string, cpu int) error {
	ports, err := benchenv.FreePorts(1)
	if err != nil {
		return err
	}
	m.addr = fmt.Sprintf("127.0.0.1:%d", ports[0])
	dataDir := filepath.Join(dir, "meridian-data")
	m.proc, err = benchenv.StartChild(benchenv.ChildSpec{Name: "meridian", CPU: cpu, Dir: dir,
		Argv: []string{m.bin, "server", "--listen", m.addr, "--data-dir", dataDir}})
	if err != nil {
		return err
	}
	if err := m.proc.WaitReady(ctx, "http://"+m.addr+"/readyz", 60*time.Second); err != nil {
		_ = m.proc.Stop(10 * time.Second)
		return err
	}
	token, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		_ = m.proc.Stop(10 * time.Second)
		return fmt.Errorf("meridian: the admin token: %w", err)
	}
	m.tr = &http.Transport{
		MaxIdleConns:        m.conns,
		MaxIdleConnsPerHost: m.conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	m.cl, err = client.New(m.addr, strings.TrimSpace(string(token)), client.WithHTTPClient(&http.Client{Transport: m.tr}))
	if err != nil {
		return err
	}
	m.watchCl, err = client.New(m.addr, strings.TrimSpace(string(token)), client.WithHTTPClient(&http.Client{Transport: &http.Transport{}}))
	return err
}

func (m *meridianSys) pid() int           { return m.proc.PID() }
func (m *meridianSys) metricsURL() string { return "http://" + m.addr + "/metrics" }

func (m *meridianSys) watch(ctx context.Context, ready func(), onEvent func(string, bool, time.Time)) error {
	return m.watchCl.WatchRegistry(ctx, "", 0, func(ev meridian.InstanceEvent) error {
		at := time.Now()
		switch ev.Type {
		case meridian.EventSync:
			ready()
		case meridian.EventPut, meridian.EventDelete:
			onEvent(ev.Service+"/"+ev.ID, ev.Type == meridian.EventDelete, at)
		}
		return nil
	})
}

// benchInstance is the registration both registries get: a typical
// instance, with a version, zone, a tag and a little metadata.
func benchInstance(in *instance, ttl time.Duration) *meridian.Instance {
	return &meridian.Instance{
		Service: in.service, ID: in.id, Address: "127.0.0.1", Port: 8080,
		Protocol: meridian.Protocol("http"), Version: "1.4.2", Zone: "zone-a", Weight: 100,
		Tags: []string{"bench"}, Metadata: map[string]string{"team": "bench"},
		TTL: meridian.Duration(ttl),
	}
}

func (m *meridianSys) register(ctx context.Context, in *instance) error {
	_, err := m.cl.Register(ctx, benchInstance(in, m.ttl))
	return err
}

func (m *meridianSys) deregister(ctx context.Context, in *instance) error {
	return m.cl.Deregister(ctx, in.service, in.id)
}

// heartbeat spreads the heartbeats evenly over the period: instance i is
// due at i/n of the way through each period. A scheduler hands due
// instances to a pool of workers; an instance registered less than half a
// period ago waits for its next turn.
func (m *meridianSys) heartbeat(ctx context.Context, insts []*instance, period time.Duration) {
	jobs := make(chan *instance, m.workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(jobs)
	for range m.workers {
		wg.Go(func() {
			for in := range jobs {
				m.beat(ctx, in)
			}
		})
	}
	n := len(insts)
	if n == 0 {
		return
	}
	epoch := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for cycle := 0; ; cycle++ {
		for i, in := range insts {
			due := epoch.Add(time.Duration(cycle)*period + time.Duration(i)*period/time.Duration(n))
			if d := time.Until(due); d > time.Millisecond {
				timer.Reset(d)
				select {
				case <-timer.C:
				case <-ctx.Done():
					return
				}
			}
			if ctx.Err() != nil {
				return
			}
			if !in.registered.Load() || in.stopped.Load() || time.Since(time.Unix(0, in.regAt.Load())) < period/2 {
				continue
			}
			select {
			case jobs <- in:
			case <-ctx.Done():
				return
			}
		}
	}
}

func (m *meridianSys) beat(ctx context.Context, in *instance) {
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := m.cl.Heartbeat(hctx, in.service, in.id)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		m.failed.Add(1)
		if meridian.IsCode(err, meridian.CodeNotFound) {
			in.stopped.Store(true) // its lease is gone: counted as lost by the watcher
		}
		return
	}
	m.ok.Add(1)
	in.lastBeat.Store(time.Now().UnixNano())
	if in.stopAfterNext.Load() {
		in.stopped.Store(true)
	}
}

func (m *meridianSys) beats() (ok, failed uint64) { return m.ok.Load(), m.failed.Load() }

func (m *meridianSys) close() error {
	if m.tr != nil {
		m.tr.CloseIdleConnections()
	}
	if m.proc == nil {
		return nil
	}
	return m.proc.Stop(20 * time.Second)
}
