package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/meridian-platform/meridian/bench/internal/benchenv"
)

// etcdPrefix is where instances live, as Kratos' etcd registry keeps them:
// /microservices/<service>/<id>.
const etcdPrefix = "/microservices/"

// etcdSys drives an embedded etcd member (bench/registry/etcdpeer) the way
// go-zero, Kratos and go-micro do with clientv3: per instance one lease
// with the TTL, a Put of the instance under it, and KeepAlive (the client
// renews at TTL/3 on one stream per client); deregister deletes the key
// and revokes the lease; discovery is a Watch of the prefix.
type etcdSys struct {
	bin      string
	ttl      time.Duration
	nclients int // clients (connections) the instances are spread over
	noFsync  bool

	proc      *benchenv.Child
	clientURL string
	clients   []*clientv3.Client
	watchCl   *clientv3.Client
	next      atomic.Uint64

	bg     context.Context // the keepalives' lifetime
	stopBG context.CancelFunc
	kaWG   sync.WaitGroup

	ok, failed atomic.Uint64
}

var _ system = (*etcdSys)(nil)

// etcdLease is the etcd side of one instance.
type etcdLease struct {
	cl     *clientv3.Client
	id     clientv3.LeaseID
	cancel context.CancelFunc // ends its KeepAlive
}

func (e *etcdSys) name() string { return "etcd" }

func (e *etcdSys) ttlSeconds() int64 { return int64(math.Ceil(e.ttl.Seconds())) }

func (e *etcdSys) start(ctx context.Context, dir string, cpu int) error {
	ports, err := benchenv.FreePorts(2)
	if err != nil {
		return err
	}
	e.clientURL = fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	args := []string{
		"-data-dir", filepath.Join(dir, "etcd-data"),
		"-client-url", e.clientURL,
		"-peer-url", fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
	}
	if e.noFsync {
		args = append(args, "-unsafe-no-fsync")
	}
	e.proc, err = benchenv.StartChild(benchenv.ChildSpec{Name: "etcd", CPU: cpu, Dir: dir, Argv: append([]string{e.bin}, args...)})
	if err != nil {
		return err
	}
	if err := e.proc.WaitReady(ctx, e.clientURL+"/health", 60*time.Second); err != nil {
		_ = e.proc.Stop(10 * time.Second)
		return err
	}
	e.bg, e.stopBG = context.WithCancel(context.Background())
	newClient := func() (*clientv3.Client, error) {
		return clientv3.New(clientv3.Config{
			Endpoints:   []string{e.clientURL},
			DialTimeout: 5 * time.Second,
			Logger:      zap.NewNop(),
		})
	}
	for range max(e.nclients, 1) {
		c, err := newClient()
		if err != nil {
			return fmt.Errorf("etcd client: %w", err)
		}
		e.clients = append(e.clients, c)
	}
	e.watchCl, err = newClient()
	return err
}

func (e *etcdSys) pid() int           { return e.proc.PID() }
func (e *etcdSys) metricsURL() string { return e.clientURL + "/metrics" }

func (e *etcdSys) watch(ctx context.Context, ready func(), onEvent func(string, bool, time.Time)) error {
	wch := e.watchCl.Watch(clientv3.WithRequireLeader(ctx), etcdPrefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	for wr := range wch {
		if err := wr.Err(); err != nil {
			return err
		}
		if wr.Created {
			ready()
			continue
		}
		at := time.Now()
		for _, ev := range wr.Events {
			onEvent(strings.TrimPrefix(string(ev.Kv.Key), etcdPrefix), ev.Type == clientv3.EventTypeDelete, at)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.New("watch channel closed")
}

func (e *etcdSys) register(ctx context.Context, in *instance) error {
	c := e.clients[e.next.Add(1)%uint64(len(e.clients))]
	val, err := json.Marshal(benchInstance(in, e.ttl))
	if err != nil {
		return err
	}
	lease, err := c.Grant(ctx, e.ttlSeconds())
	if err != nil {
		return fmt.Errorf("grant: %w", err)
	}
	if _, err := c.Put(ctx, etcdPrefix+in.key, string(val), clientv3.WithLease(lease.ID)); err != nil {
		return fmt.Errorf("put: %w", err)
	}
	kctx, cancel := context.WithCancel(e.bg)
	ch, err := c.KeepAlive(kctx, lease.ID)
	if err != nil {
		cancel()
		return fmt.Errorf("keepalive: %w", err)
	}
	in.peer = &etcdLease{cl: c, id: lease.ID, cancel: cancel}
	e.kaWG.Go(func() {
		for range ch {
			e.ok.Add(1)
			in.lastBeat.Store(time.Now().UnixNano())
			if in.stopAfterNext.Load() && !in.stopped.Swap(true) {
				cancel()
			}
		}
		// The channel closes when kctx ends, or when the client gives up on
		// the lease (it expired, or keepalives failed past the TTL).
		if kctx.Err() == nil {
			e.failed.Add(1)
			in.stopped.Store(true)
		}
	})
	return nil
}

func (e *etcdSys) deregister(ctx context.Context, in *instance) error {
	l, ok := in.peer.(*etcdLease)
	if !ok {
		return fmt.Errorf("%s was not registered", in.key)
	}
	if _, err := l.cl.Delete(ctx, etcdPrefix+in.key); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	l.cancel()
	if _, err := l.cl.Revoke(ctx, l.id); err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	return nil
}

// heartbeat has nothing to do: each instance's KeepAlive, started when it
// registered, renews its lease until the run ends.
func (e *etcdSys) heartbeat(ctx context.Context, _ []*instance, _ time.Duration) { <-ctx.Done() }

func (e *etcdSys) beats() (ok, failed uint64) { return e.ok.Load(), e.failed.Load() }

func (e *etcdSys) close() error {
	if e.stopBG != nil {
		e.stopBG()
	}
	for _, c := range append(e.clients, e.watchCl) {
		if c != nil {
			_ = c.Close()
		}
	}
	done := make(chan struct{})
	go func() { e.kaWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
	if e.proc == nil {
		return nil
	}
	return e.proc.Stop(20 * time.Second)
}
