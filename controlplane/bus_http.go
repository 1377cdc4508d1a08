package controlplane

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/bus"
	"github.com/meridian-platform/meridian/bus/bushttp"
	"github.com/meridian-platform/meridian/internal/jsonbody"
)

// The event bus over HTTP: publish in any CloudEvents HTTP content mode,
// list topics, stream a topic's events, read and replay dead letters. Push
// subscriptions are in push_http.go.

// maxBatch bounds the events of one batched publish.
const maxBatch = 1000

// needBus answers 404 when the server runs without an event bus.
func (s *Server) needBus() error {
	if s.cfg.Bus == nil {
		return notFound("the event bus is not enabled on this control plane")
	}
	return nil
}

// pathTopic reads {topic} after checking that the bus is there.
func (s *Server) pathTopic(r *http.Request) (string, error) {
	if err := s.needBus(); err != nil {
		return "", err
	}
	t := r.PathValue("topic")
	return t, bus.ValidateTopic(t)
}

// handlePublish stores the events of a structured, binary or batched
// request and answers their receipts. A batch is checked whole before any
// of it is published; if publishing fails half-way, the events before the
// failure are stored, and sending the batch again is safe: the topic's
// dedup window drops the copies (same source and id).
func (s *Server) handlePublish(w http.ResponseWriter, r *http.Request) {
	topic, err := s.pathTopic(r)
	if err == nil {
		err = authorize(r.Context(), publishEvents, topic)
	}
	var body []byte
	if err == nil {
		body, err = jsonbody.Read(w, r, s.cfg.MaxEventBody)
	}
	var events []bus.Event
	batch := false
	if err == nil {
		events, batch, err = bushttp.ReadEvents(r.Header, body)
	}
	if err == nil && batch && (len(events) == 0 || len(events) > maxBatch) {
		err = meridian.FieldError("body", "a batch holds 1 to %d events, not %d", maxBatch, len(events))
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	receipts := make([]bushttp.Receipt, 0, len(events))
	for _, e := range events {
		rc, err := s.cfg.Bus.Publish(r.Context(), topic, e)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		receipts = append(receipts, bushttp.NewReceipt(rc))
	}
	s.log.DebugContext(r.Context(), "events published", "topic", topic, "events", len(events), "by", principal(r.Context()).Name)
	if batch {
		writeJSON(w, http.StatusAccepted, bushttp.BatchReceipt{Receipts: receipts})
		return
	}
	writeJSON(w, http.StatusAccepted, receipts[0])
}

func (s *Server) handleTopics(w http.ResponseWriter, r *http.Request) {
	err := s.needBus()
	if err == nil {
		err = authorize(r.Context(), readBus, "")
	}
	var list []bus.TopicInfo
	if err == nil {
		list, err = s.cfg.Bus.Topics(r.Context())
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, bushttp.TopicList{Topics: orEmpty(list)})
}

func (s *Server) handleTopic(w http.ResponseWriter, r *http.Request) {
	topic, err := s.pathTopic(r)
	if err == nil {
		err = authorize(r.Context(), readBus, topic)
	}
	var d bushttp.TopicDetail
	if err == nil {
		d.Topic, err = s.cfg.Bus.Topic(r.Context(), topic)
	}
	if err == nil {
		d.Groups, err = s.cfg.Bus.Groups(r.Context(), topic)
		d.Groups = orEmpty(d.Groups)
	}
	if err == nil {
		dlq, derr := s.cfg.Bus.Topic(r.Context(), bus.DeadLetterTopic(topic))
		switch {
		case derr == nil:
			d.DeadLetters = dlq.Messages
		case !meridian.IsCode(derr, meridian.CodeNotFound):
			err = derr
		}
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// handleTopicStream streams a topic's events as server-sent events, from
// a private subscription: a "ready" event once it exists, then one
// "event" per event (id: its sequence), until the client goes away.
// Where it starts: ?from_seq=N, ?since=<RFC 3339 time or a duration
// back from now>, after ?index=N or Last-Event-ID (a reconnect), else the
// events published from now on.
func (s *Server) handleTopicStream(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	topic, err := s.pathTopic(r)
	if err == nil {
		err = authorize(ctx, readBus, topic)
	}
	var start bus.StartAt
	if err == nil {
		start, err = streamStart(r, time.Now())
	}
	var info bus.TopicInfo
	if err == nil {
		// Subscribing would create a missing topic: a typo must not.
		info, err = s.cfg.Bus.Topic(ctx, topic)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	deliveries := make(chan *bus.Delivery)
	sub, err := s.cfg.Bus.Subscribe(ctx, topic, "", func(hctx context.Context, d *bus.Delivery) error {
		select {
		case deliveries <- d:
			return nil
		case <-hctx.Done():
			return hctx.Err()
		}
	}, bus.SubscribeOptions{StartAt: start, MaxDeliveries: -1, Batch: 16})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer sub.Close()
	out := startSSE(w)
	if out.send(bushttp.StreamEventReady, 0, bushttp.StreamReady{Topic: topic, LastSequence: info.LastSequence}) != nil {
		return
	}
	ping := time.NewTicker(ssePing)
	defer ping.Stop()
	for {
		select {
		case d := <-deliveries:
			ev := bushttp.TopicEvent{Topic: topic, Sequence: d.Sequence, Partition: d.Partition, Published: d.Published, Event: d.Event}
			if out.send(bushttp.StreamEventEvent, d.Sequence, ev) != nil {
				return
			}
		case <-ping.C:
			if out.ping() != nil {
				return
			}
		case <-sub.Done():
			return
		case <-ctx.Done():
			return
		}
	}
}

// streamStart reads where a topic stream starts.
func streamStart(r *http.Request, now time.Time) (bus.StartAt, error) {
	q := r.URL.Query()
	var st bus.StartAt
	given := 0
	if v := q.Get("from_seq"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n == 0 {
			return st, meridian.FieldError("from_seq", "%q is not a sequence (1 or more)", v)
		}
		st.Sequence = n
		given++
	}
	if v := q.Get("since"); v != "" {
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			st.Time = t
		} else if d, err := time.ParseDuration(v); err == nil && d > 0 {
			st.Time = now.Add(-d)
		} else {
			return st, meridian.FieldError("since", "%q is neither an RFC 3339 time nor a duration like 10m", v)
		}
		given++
	}
	after, err := watchIndex(r)
	if err != nil {
		return st, err
	}
	if after > 0 {
		st.Sequence = after + 1
		given++
	}
	if given > 1 {
		return bus.StartAt{}, meridian.FieldError("from_seq", "give one of from_seq, since and index (or Last-Event-ID)")
	}
	return st, nil
}

func (s *Server) handleDeadLetters(w http.ResponseWriter, r *http.Request) {
	topic, err := s.pathTopic(r)
	if err == nil {
		err = authorize(r.Context(), readBus, topic)
	}
	q := r.URL.Query()
	var after uint64
	limit := 100
	if err == nil && q.Get("after") != "" {
		if after, err = strconv.ParseUint(q.Get("after"), 10, 64); err != nil {
			err = meridian.FieldError("after", "%q is not a non-negative integer", q.Get("after"))
		}
	}
	if err == nil && q.Get("limit") != "" {
		if limit, err = strconv.Atoi(q.Get("limit")); err != nil || limit < 1 || limit > 1000 {
			err = meridian.FieldError("limit", "%q is out of range 1-1000", q.Get("limit"))
		}
	}
	var list []bus.DeadLetter
	if err == nil {
		list, err = s.cfg.Bus.DeadLetters(r.Context(), topic, after, limit)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, bushttp.DeadLetterList{DeadLetters: orEmpty(list)})
}

func (s *Server) handleDeadLetter(w http.ResponseWriter, r *http.Request) {
	topic, err := s.pathTopic(r)
	if err == nil {
		err = authorize(r.Context(), readBus, topic)
	}
	var seq uint64
	if err == nil {
		if seq, err = strconv.ParseUint(r.PathValue("seq"), 10, 64); err != nil || seq == 0 {
			err = meridian.FieldError("seq", "%q is not a sequence (1 or more)", r.PathValue("seq"))
		}
	}
	var dl bus.DeadLetter
	if err == nil {
		dl, err = s.cfg.Bus.DeadLetter(r.Context(), topic, seq)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, dl)
}

// handleReplay publishes dead letters back to their topic (to the group
// that gave up on each, unless all_groups) and removes them from the
// dead-letter topic (unless keep). With "all", a failure half-way leaves
// the letters replayed so far replayed; asking again replays the rest.
func (s *Server) handleReplay(w http.ResponseWriter, r *http.Request) {
	topic, err := s.pathTopic(r)
	if err == nil {
		err = authorize(r.Context(), replayDeadLetters, topic)
	}
	var req bushttp.ReplayRequest
	if err == nil {
		err = jsonbody.Decode(w, r, &req, 0)
	}
	if err == nil && (req.All == (req.Sequence != 0)) {
		err = meridian.FieldError("sequence", "give either a dead letter's sequence or \"all\": true")
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	opts := bus.ReplayOptions{AllGroups: req.AllGroups, Keep: req.Keep}
	out := bushttp.ReplayResult{Replayed: []bushttp.Replayed{}}
	replay := func(seq uint64) error {
		rc, err := s.cfg.Bus.ReplayDeadLetter(r.Context(), topic, seq, opts)
		if err != nil {
			return err
		}
		out.Replayed = append(out.Replayed, bushttp.Replayed{Sequence: seq, Receipt: bushttp.NewReceipt(rc)})
		return nil
	}
	if req.All {
		err = s.eachDeadLetter(r.Context(), topic, replay)
	} else {
		err = replay(req.Sequence)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.InfoContext(r.Context(), "dead letters replayed", "topic", topic, "count", len(out.Replayed), "by", principal(r.Context()).Name)
	writeJSON(w, http.StatusOK, out)
}

// eachDeadLetter calls fn with the sequence of every dead letter of topic
// there is when it starts, oldest first.
func (s *Server) eachDeadLetter(ctx context.Context, topic string, fn func(seq uint64) error) error {
	info, err := s.cfg.Bus.Topic(ctx, bus.DeadLetterTopic(topic))
	if meridian.IsCode(err, meridian.CodeNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	var after uint64
	for {
		page, err := s.cfg.Bus.DeadLetters(ctx, topic, after, 100)
		if err != nil {
			return err
		}
		for _, dl := range page {
			if dl.Sequence > info.LastSequence {
				return nil // dead-lettered after the replay began (perhaps a replayed one failing again)
			}
			if err := fn(dl.Sequence); err != nil {
				return err
			}
			after = dl.Sequence
		}
		if len(page) == 0 {
			return nil
		}
	}
}

// orEmpty makes a nil slice a JSON [].
func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
