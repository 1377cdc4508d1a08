package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/bus"
	"github.com/meridian-platform/meridian/bus/bushttp"
	"github.com/meridian-platform/meridian/controlplane/health"
	"github.com/meridian-platform/meridian/controlplane/store"
	"github.com/meridian-platform/meridian/internal/backoff"
)

// Bus is what the control plane uses of the event bus; every bus.Backend
// has it. With Config.Bus nil the bus endpoints answer 404.
type Bus interface {
	Publish(ctx context.Context, topic string, e bus.Event, opts ...bus.PublishOption) (bus.Receipt, error)
	Subscribe(ctx context.Context, topic, group string, h bus.Handler, opts bus.SubscribeOptions) (bus.Subscription, error)
	Topic(ctx context.Context, name string) (bus.TopicInfo, error)
	Topics(ctx context.Context) ([]bus.TopicInfo, error)
	Groups(ctx context.Context, topic string) ([]bus.GroupInfo, error)
	DeleteGroup(ctx context.Context, topic, group string) error
	bus.DeadLetters
}

var _ Bus = bus.Backend(nil)

// Push subscriptions live in the "subscriptions" bucket, name →
// subscription, so that every replica sees them. Each is delivered by one
// replica at a time: the member that rendezvous hashing over the live
// replicas picks, as for health checks. The delivering replica joins the
// topic as the subscription's group; when it dies, its member key expires,
// the next owner joins the same durable group and goes on where it
// stopped, and the events the dead one had in flight come back to the
// group after their ack wait. While the replicas' views of the membership
// differ for a moment, two of them may deliver at once: they are
// competing members of one group, so each event still goes out once per
// attempt.
type pusher struct {
	bus    Bus
	b      store.Bucket
	mirror *mirror
	reg    *Registry
	log    *slog.Logger
	hc     *http.Client
	rr     atomic.Uint64 // round robin over a service's instances
	wake   chan struct{}

	mu   sync.Mutex
	subs map[string]bushttp.SubscriptionInfo // the bucket, as the mirror has it
}

// pushReconcile is how often a replica compares the subscriptions it
// delivers with those it owns, besides whenever one changes: membership
// changes are seen within it.
const pushReconcile = time.Second

func newPusher(bs Bus, b store.Bucket, reg *Registry, log *slog.Logger) *pusher {
	p := &pusher{
		bus: bs, b: b, reg: reg, log: log,
		// Targets are services on the internal network: no proxy from the
		// environment, and a redirect is an answer (a wrong URL), not a
		// place to go.
		hc: &http.Client{
			Transport:     &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16, IdleConnTimeout: time.Minute},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		wake: make(chan struct{}, 1),
		subs: map[string]bushttp.SubscriptionInfo{},
	}
	p.mirror = newMirror(b, "subscriptions", log, p.apply)
	return p
}

func (p *pusher) apply(e store.Entry) {
	p.mu.Lock()
	if e.Op == store.OpPut {
		var si bushttp.SubscriptionInfo
		if err := json.Unmarshal(e.Value, &si); err != nil {
			p.mu.Unlock()
			p.log.Error("undecodable subscription", "key", e.Key, "err", err)
			return
		}
		si.Revision = e.Revision
		p.subs[e.Key] = si
	} else {
		delete(p.subs, e.Key)
	}
	p.mu.Unlock()
	p.poke()
}

// poke makes the run loop reconcile now.
func (p *pusher) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func ownerKey(name string) string { return "subscription/" + name }

// owns reports whether this replica delivers the subscription.
func (r *Registry) owns(k string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.ownsLocked(k)
}

// owner is the replica that checks, reaps or delivers k, as this replica
// sees the membership.
func (r *Registry) owner(k string) string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if len(r.members) == 0 {
		return r.cfg.self
	}
	return health.Owner(k, r.members)
}

// delivery is a subscription this replica delivers.
type delivery struct {
	rev     uint64
	sub     bus.Subscription
	started time.Time
}

// retrying is a subscription whose delivery failed to start or stopped by
// itself: it starts again after a backoff.
type retrying struct {
	bo        backoff.Backoff
	notBefore time.Time
	lastErr   string
}

// run delivers the owned subscriptions until ctx ends, then stops them
// all (events in flight go back to their groups).
func (p *pusher) run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { _ = p.mirror.run(ctx) })
	live := map[string]*delivery{}
	failing := map[string]*retrying{}
	t := time.NewTicker(pushReconcile)
	defer t.Stop()
	for {
		if p.mirror.ready() && p.reg.memberM.ready() {
			p.reconcile(ctx, live, failing)
		}
		select {
		case <-ctx.Done():
			for _, d := range live {
				_ = d.sub.Close()
			}
			wg.Wait()
			return nil
		case <-p.wake:
		case <-t.C:
		}
	}
}

// reconcile starts the deliveries this replica owns and stops the others.
func (p *pusher) reconcile(ctx context.Context, live map[string]*delivery, failing map[string]*retrying) {
	want := map[string]bushttp.SubscriptionInfo{}
	p.mu.Lock()
	for name, si := range p.subs {
		if p.reg.owns(ownerKey(name)) {
			want[name] = si
		}
	}
	p.mu.Unlock()
	now := time.Now()
	for name, d := range live {
		si, ok := want[name]
		stopped := false
		select {
		case <-d.sub.Done():
			stopped = true
		default:
		}
		if ok && si.Revision == d.rev && !stopped {
			continue
		}
		_ = d.sub.Close()
		delete(live, name)
		if stopped && ok {
			r := failing[name]
			if r == nil {
				r = &retrying{bo: backoff.Backoff{Base: time.Second, Max: 30 * time.Second}}
				failing[name] = r
			}
			if now.Sub(d.started) > time.Minute {
				r.bo.Reset()
			}
			p.failed(name, r, fmt.Errorf("delivery stopped: %v", d.sub.Err()), now)
		} else {
			p.log.Info("push subscription released", "subscription", name)
		}
	}
	for name := range failing {
		if _, ok := want[name]; !ok {
			delete(failing, name)
		}
	}
	for name, si := range want {
		if live[name] != nil {
			continue
		}
		r := failing[name]
		if r != nil && now.Before(r.notBefore) {
			continue
		}
		sub, err := p.bus.Subscribe(ctx, si.Topic, si.Name, p.handler(si.Subscription), si.SubscribeOptions())
		if err != nil {
			if r == nil {
				r = &retrying{bo: backoff.Backoff{Base: time.Second, Max: 30 * time.Second}}
				failing[name] = r
			}
			p.failed(name, r, err, now)
			continue
		}
		live[name] = &delivery{rev: si.Revision, sub: sub, started: now}
		p.log.Info("delivering push subscription", "subscription", name, "topic", si.Topic, "url", si.URL)
	}
}

// failed schedules a restart, logging the error once until it changes.
func (p *pusher) failed(name string, r *retrying, err error, now time.Time) {
	r.notBefore = now.Add(r.bo.Next())
	if msg := err.Error(); msg != r.lastErr {
		r.lastErr = msg
		p.log.Warn("push subscription not delivering; retrying", "subscription", name, "err", err)
	}
}

// maxAnswerExcerpt bounds how much of a failed answer goes into the
// attempt's error (and so the dead letter's history).
const maxAnswerExcerpt = 256

// handler POSTs each delivery to the subscription's target and turns the
// answer into the bus's outcome (verdict).
func (p *pusher) handler(s bushttp.Subscription) bus.Handler {
	var types map[string]bool
	if len(s.Types) > 0 {
		types = make(map[string]bool, len(s.Types))
		for _, t := range s.Types {
			types[t] = true
		}
	}
	return func(ctx context.Context, d *bus.Delivery) error {
		if types != nil && !types[d.Event.Type] {
			return nil // filtered out: acknowledged without a POST
		}
		target, err := p.resolve(s.URL)
		if err != nil {
			return err
		}
		rctx, cancel := context.WithTimeout(ctx, s.Timeout.D())
		defer cancel()
		req, err := bushttp.NewRequest(rctx, target, d.Event, s.Mode)
		if err != nil {
			return bus.Permanent(err)
		}
		req.Header.Set("User-Agent", "meridian-push")
		req.Header.Set("Meridian-Subscription", s.Name)
		req.Header.Set("Meridian-Delivery-Attempt", strconv.Itoa(d.Attempt))
		resp, err := p.hc.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err() // stopping: not the target's fault
			}
			return fmt.Errorf("POST %s: %w", redactURL(target), unwrapURLError(err))
		}
		excerpt, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswerExcerpt))
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // let the connection be reused
		resp.Body.Close()
		pause, err := verdict(resp.StatusCode, resp.Header, time.Now())
		if err == nil {
			return nil
		}
		err = fmt.Errorf("POST %s: %w%s", redactURL(target), err, answerExcerpt(excerpt))
		if pause > 0 {
			waitOut(ctx, d, min(pause, s.MaxBackOff.D()), s.SubscribeOptions().AckWait/3)
		}
		return err
	}
}

// resolve turns a meridian://service/path URL into one instance's URL,
// taking the service's healthy instances in turn.
func (p *pusher) resolve(raw string) (string, error) {
	svc, ok := bushttp.TargetService(raw)
	if !ok {
		return raw, nil
	}
	list, _ := p.reg.Instances(svc, true)
	if len(list) == 0 {
		return "", fmt.Errorf("service %q has no healthy instance to deliver to", svc)
	}
	in := list[p.rr.Add(1)%uint64(len(list))]
	u, err := url.Parse(raw)
	if err != nil {
		return "", bus.Permanent(err)
	}
	u.Scheme, u.Host = "http", in.HostPort()
	return u.String(), nil
}

// verdict is what a push target's answer means for the event: nil for a
// 2xx (acknowledge); a retryable error for 408, 429 and 5xx, with the
// pause its Retry-After header asks for (seconds or an HTTP date), if any;
// a bus.Permanent error for anything else (3xx and the other 4xx: the
// event or the URL is wrong, and retrying will not fix it).
func verdict(status int, h http.Header, now time.Time) (pause time.Duration, err error) {
	switch {
	case status >= 200 && status <= 299:
		return 0, nil
	case status == http.StatusRequestTimeout, status == http.StatusTooManyRequests, status >= 500:
		return retryAfter(h.Get("Retry-After"), now), errors.New(statusText(status))
	default:
		return 0, bus.Permanent(errors.New(statusText(status)))
	}
}

func statusText(status int) string {
	return strings.TrimSpace(strconv.Itoa(status) + " " + http.StatusText(status))
}

// retryAfter reads a Retry-After value; 0 when absent, unreadable or past.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
		return max(0, time.Duration(secs)*time.Second)
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, t.Sub(now))
	}
	return 0
}

// waitOut holds a delivery for d, telling the broker every beat that it is
// still being handled, so the event is neither redelivered meanwhile nor
// counted as a new attempt.
func waitOut(ctx context.Context, d *bus.Delivery, wait, beat time.Duration) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	tick := time.NewTicker(max(beat, 100*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-timer.C:
			return
		case <-tick.C:
			_ = d.InProgress()
		case <-ctx.Done():
			return
		}
	}
}

func answerExcerpt(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if s == "" {
		return ""
	}
	if len(b) >= maxAnswerExcerpt {
		s += "…"
	}
	return ": " + s
}

// redactURL drops the query, which may carry a secret, from a URL shown
// in errors and dead letters.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "the target"
	}
	u.RawQuery, u.User = "", nil
	return u.String()
}

// unwrapURLError drops net/http's "Post <url>:" wrapper, whose URL would
// repeat (with its query).
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// infos returns the subscriptions (of one topic, or all), by name.
func (p *pusher) infos(topic string) []bushttp.SubscriptionInfo {
	p.mu.Lock()
	out := make([]bushttp.SubscriptionInfo, 0, len(p.subs))
	for _, si := range p.subs {
		if topic == "" || si.Topic == topic {
			si.Owner = p.reg.owner(ownerKey(si.Name))
			out = append(out, si)
		}
	}
	p.mu.Unlock()
	sortBy(out, func(si bushttp.SubscriptionInfo) string { return si.Name })
	return out
}

// get returns one subscription, after catching up with the store.
func (p *pusher) get(ctx context.Context, name string) (bushttp.SubscriptionInfo, error) {
	if err := p.mirror.sync(ctx); err != nil {
		return bushttp.SubscriptionInfo{}, storeError(err)
	}
	p.mu.Lock()
	si, ok := p.subs[name]
	p.mu.Unlock()
	if !ok {
		return si, notFound("no subscription named %q", name)
	}
	si.Owner = p.reg.owner(ownerKey(name))
	return si, nil
}

// create stores a new subscription. s is validated, with its defaults.
func (p *pusher) create(ctx context.Context, s bushttp.Subscription, by string) (bushttp.SubscriptionInfo, error) {
	si := bushttp.SubscriptionInfo{Subscription: s, CreatedBy: by, CreatedAt: time.Now().UTC()}
	val, err := json.Marshal(si)
	if err != nil {
		return si, err
	}
	rev, err := p.b.Create(ctx, s.Name, val)
	if errors.Is(err, store.ErrConflict) {
		return si, &meridian.Error{Code: meridian.CodeConflict, Field: "name", Message: fmt.Sprintf("a subscription named %q exists; delete it first or pick another name", s.Name)}
	}
	if err != nil {
		return si, storeError(err)
	}
	si.Revision = rev
	// This replica delivers it at once if it owns it; others learn of it
	// from their watch.
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_ = p.mirror.waitFor(wctx, rev)
	si.Owner = p.reg.owner(ownerKey(s.Name))
	return si, nil
}

// remove deletes a subscription and its group (its position and the
// events in flight); the owner stops delivering when its watch sees the
// deletion.
func (p *pusher) remove(ctx context.Context, si bushttp.SubscriptionInfo) error {
	rev, err := p.b.Delete(ctx, si.Name, si.Revision)
	if err != nil {
		return storeError(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_ = p.mirror.waitFor(wctx, rev)
	cancel()
	if err := p.bus.DeleteGroup(ctx, si.Topic, si.Name); err != nil && !meridian.IsCode(err, meridian.CodeNotFound) {
		return err
	}
	return nil
}
