package jetstream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/bus"
)

// streamConfig maps a topic's config (with defaults) to its stream's.
func (b *Backend) streamConfig(c bus.TopicConfig) jetstream.StreamConfig {
	sc := jetstream.StreamConfig{
		Name:        b.streamName(c.Name),
		Description: "Meridian bus topic " + c.Name,
		Subjects:    []string{b.dataSubject(c.Name, "*"), b.replaySubject(c.Name, "*", "*")},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxMsgs:     -1,
		MaxBytes:    -1,
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
		AllowDirect: true,
		Metadata: map[string]string{
			mdTopic:      c.Name,
			mdPartitions: strconv.Itoa(c.Partitions),
		},
	}
	if b.cfg.MemoryStorage {
		sc.Storage = jetstream.MemoryStorage
	}
	if sc.Replicas == 0 {
		sc.Replicas = b.cfg.Replicas
	}
	if c.MaxAge > 0 {
		sc.MaxAge = c.MaxAge
	}
	if c.MaxMsgs > 0 {
		sc.MaxMsgs = c.MaxMsgs
	}
	if c.MaxBytes > 0 {
		sc.MaxBytes = c.MaxBytes
	}
	if c.DedupWindow > 0 {
		sc.Duplicates = c.DedupWindow
	} else {
		// JetStream always has a window; without a Nats-Msg-Id nothing is
		// deduplicated, so keep the smallest.
		sc.Duplicates = jetstreamMinDuplicates
		sc.Metadata[mdDedup] = "off"
	}
	return sc
}

const jetstreamMinDuplicates = 100_000_000 // 100ms, in nanoseconds

// topicConfig maps a stream's config back to its topic's.
func topicConfig(name string, sc jetstream.StreamConfig) bus.TopicConfig {
	c := bus.TopicConfig{Name: name, MaxAge: sc.MaxAge, DedupWindow: sc.Duplicates, Replicas: sc.Replicas}
	c.Partitions, _ = strconv.Atoi(sc.Metadata[mdPartitions])
	if c.MaxAge == 0 {
		c.MaxAge = -1
	}
	if sc.MaxBytes > 0 {
		c.MaxBytes = sc.MaxBytes
	}
	if sc.MaxMsgs > 0 {
		c.MaxMsgs = sc.MaxMsgs
	}
	if sc.Metadata[mdDedup] == "off" {
		c.DedupWindow = -1
	}
	return c
}

func topicInfo(name string, si *jetstream.StreamInfo) bus.TopicInfo {
	return bus.TopicInfo{
		TopicConfig:   topicConfig(name, si.Config),
		Messages:      si.State.Msgs,
		Bytes:         si.State.Bytes,
		FirstSequence: si.State.FirstSeq,
		LastSequence:  si.State.LastSeq,
		FirstTime:     si.State.FirstTime,
		LastTime:      si.State.LastTime,
		Created:       si.Created,
	}
}

// EnsureTopic creates the topic's stream, or updates its limits.
func (b *Backend) EnsureTopic(ctx context.Context, cfg bus.TopicConfig) (bus.TopicInfo, error) {
	d := b.cfg.TopicDefaults
	if cfg.Partitions == 0 {
		cfg.Partitions = d.Partitions
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = d.MaxAge
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = d.MaxBytes
	}
	if cfg.MaxMsgs == 0 {
		cfg.MaxMsgs = d.MaxMsgs
	}
	if cfg.DedupWindow == 0 {
		cfg.DedupWindow = d.DedupWindow
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = d.Replicas
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return bus.TopicInfo{}, err
	}
	sc := b.streamConfig(cfg)
	s, err := b.js.Stream(ctx, sc.Name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		s, err = b.js.CreateStream(ctx, sc)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			// Another member created it first: check it like an existing one.
			return b.EnsureTopic(ctx, cfg)
		}
		if err != nil {
			return bus.TopicInfo{}, b.streamErr(cfg.Name, "create", err)
		}
	case err != nil:
		return bus.TopicInfo{}, unavailable("look up topic "+cfg.Name, err)
	default:
		old := s.CachedInfo().Config
		if old.Metadata[mdTopic] != cfg.Name {
			_, err := b.remember(cfg.Name, old)
			return bus.TopicInfo{}, err
		}
		if old.Metadata[mdPartitions] != sc.Metadata[mdPartitions] {
			return bus.TopicInfo{}, &meridian.Error{Code: meridian.CodeConflict, Field: "partitions",
				Message: fmt.Sprintf("topic %s has %s partitions; the count cannot change (keys would move and lose their order)", cfg.Name, old.Metadata[mdPartitions])}
		}
		if limitsDiffer(old, sc) {
			upd := old
			upd.MaxAge, upd.MaxBytes, upd.MaxMsgs, upd.Duplicates, upd.Replicas = sc.MaxAge, sc.MaxBytes, sc.MaxMsgs, sc.Duplicates, sc.Replicas
			upd.Metadata = sc.Metadata
			if s, err = b.js.UpdateStream(ctx, upd); err != nil {
				return bus.TopicInfo{}, b.streamErr(cfg.Name, "update", err)
			}
		}
	}
	si := s.CachedInfo()
	if _, err := b.remember(cfg.Name, si.Config); err != nil {
		return bus.TopicInfo{}, err
	}
	return topicInfo(cfg.Name, si), nil
}

func limitsDiffer(a, b jetstream.StreamConfig) bool {
	return a.MaxAge != b.MaxAge || a.MaxBytes != b.MaxBytes || a.MaxMsgs != b.MaxMsgs ||
		a.Duplicates != b.Duplicates || a.Replicas != b.Replicas || a.Metadata[mdDedup] != b.Metadata[mdDedup]
}

func (b *Backend) streamErr(topic, what string, err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.Code >= 400 && apiErr.Code < 500 && apiErr.Code != 408 {
		return &meridian.Error{Code: meridian.CodeInvalid, Field: "topic", Message: fmt.Sprintf("cannot %s topic %s: %s", what, topic, apiErr.Description), Err: err}
	}
	return unavailable(what+" topic "+topic, err)
}

// Topic describes one topic.
func (b *Backend) Topic(ctx context.Context, name string) (bus.TopicInfo, error) {
	if err := bus.ValidateTopic(name); err != nil {
		return bus.TopicInfo{}, err
	}
	s, err := b.js.Stream(ctx, b.streamName(name))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return bus.TopicInfo{}, notFound("topic", "topic %q does not exist", name)
	}
	if err != nil {
		return bus.TopicInfo{}, unavailable("look up topic "+name, err)
	}
	si := s.CachedInfo()
	if si.Config.Metadata[mdTopic] != name {
		return bus.TopicInfo{}, notFound("topic", "topic %q does not exist", name)
	}
	return topicInfo(name, si), nil
}

// Topics lists the topics: the streams with the topic metadata whose
// subjects are under SubjectPrefix.
func (b *Backend) Topics(ctx context.Context) ([]bus.TopicInfo, error) {
	l := b.js.ListStreams(ctx, jetstream.WithStreamListSubject(b.cfg.SubjectPrefix+".>"))
	var out []bus.TopicInfo
	for si := range l.Info() {
		if name := si.Config.Metadata[mdTopic]; name != "" && strings.HasPrefix(si.Config.Name, b.cfg.StreamPrefix) {
			out = append(out, topicInfo(name, si))
		}
	}
	if err := l.Err(); err != nil {
		return nil, unavailable("list topics", err)
	}
	slices.SortFunc(out, func(x, y bus.TopicInfo) int { return strings.Compare(x.Name, y.Name) })
	return out, nil
}

// DeleteTopic deletes the topic's stream with its events and groups.
func (b *Backend) DeleteTopic(ctx context.Context, name string) error {
	if _, err := b.Topic(ctx, name); err != nil {
		return err
	}
	b.forget(name)
	if err := b.js.DeleteStream(ctx, b.streamName(name)); err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return notFound("topic", "topic %q does not exist", name)
		}
		return unavailable("delete topic "+name, err)
	}
	return nil
}

// Groups lists a topic's durable groups, folding an ordered group's
// partition consumers into one.
func (b *Backend) Groups(ctx context.Context, topic string) ([]bus.GroupInfo, error) {
	s, err := b.stream(ctx, topic)
	if err != nil {
		return nil, err
	}
	byName := map[string]*bus.GroupInfo{}
	l := s.ListConsumers(ctx)
	for ci := range l.Info() {
		name := ci.Config.Metadata[mdGroup]
		if name == "" || ci.Config.Durable == "" {
			continue
		}
		g := byName[name]
		if g == nil {
			g = &bus.GroupInfo{Topic: topic, Name: name, Ordered: ci.Config.Metadata[mdOrdered] == "true", Created: ci.Created, Acked: ci.AckFloor.Stream}
			byName[name] = g
		}
		g.Pending += ci.NumPending
		g.InFlight += ci.NumAckPending
		g.Redelivered += ci.NumRedelivered
		g.Members = max(g.Members, ci.NumWaiting)
		g.Acked = min(g.Acked, ci.AckFloor.Stream)
	}
	if err := l.Err(); err != nil {
		return nil, unavailable("list groups of "+topic, err)
	}
	out := make([]bus.GroupInfo, 0, len(byName))
	for _, g := range byName {
		out = append(out, *g)
	}
	slices.SortFunc(out, func(x, y bus.GroupInfo) int { return strings.Compare(x.Name, y.Name) })
	return out, nil
}

// DeleteGroup deletes a group's consumers.
func (b *Backend) DeleteGroup(ctx context.Context, topic, group string) error {
	if err := bus.ValidateGroup(group); err != nil {
		return err
	}
	if group == "" {
		return meridian.FieldError("group", "is required")
	}
	s, err := b.stream(ctx, topic)
	if err != nil {
		return err
	}
	found := false
	l := s.ListConsumers(ctx)
	var names []string
	for ci := range l.Info() {
		if ci.Config.Metadata[mdGroup] == group && ci.Config.Durable != "" {
			names = append(names, ci.Name)
		}
	}
	if err := l.Err(); err != nil {
		return unavailable("list groups of "+topic, err)
	}
	for _, n := range names {
		if err := s.DeleteConsumer(ctx, n); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return unavailable("delete group "+group, err)
		}
		found = true
	}
	if !found {
		return notFound("group", "topic %s has no group %q", topic, group)
	}
	return nil
}

// stream returns an existing topic's stream.
func (b *Backend) stream(ctx context.Context, topic string) (jetstream.Stream, error) {
	if err := bus.ValidateTopic(topic); err != nil {
		return nil, err
	}
	s, err := b.js.Stream(ctx, b.streamName(topic))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, notFound("topic", "topic %q does not exist", topic)
	}
	if err != nil {
		return nil, unavailable("look up topic "+topic, err)
	}
	return s, nil
}

func notFound(field, format string, args ...any) error {
	return &meridian.Error{Code: meridian.CodeNotFound, Field: field, Message: fmt.Sprintf(format, args...)}
}
