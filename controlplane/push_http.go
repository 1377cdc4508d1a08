package controlplane

import (
	"net/http"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/bus"
	"github.com/meridian-platform/meridian/bus/bushttp"
	"github.com/meridian-platform/meridian/internal/jsonbody"
)

// handleSubscriptionCreate stores a push subscription. Unless it says
// where to start, it starts after the topic's last event now, so that
// every event published once this call has answered is delivered, however
// long the owning replica takes to start.
func (s *Server) handleSubscriptionCreate(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	err := s.needBus()
	var sub bushttp.Subscription
	if err == nil {
		err = jsonbody.Decode(w, r, &sub, 0)
	}
	tok := principal(ctx)
	if err == nil && tok != nil && tok.Role == meridian.RoleService {
		// A service's subscriptions deliver to the service itself, never
		// to an address of its choosing.
		if sub.Service == "" {
			sub.Service = tok.Service
		}
		if svc, ok := bushttp.TargetService(sub.URL); !ok || svc != tok.Service {
			err = meridian.Errorf(meridian.CodeForbidden, "token %q (role service) may only subscribe its own service: use url %s://%s/<path>", tok.Name, bushttp.ServiceScheme, tok.Service)
		}
	}
	if err == nil {
		sub = sub.WithDefaults()
		err = sub.Validate()
	}
	if err == nil {
		err = authorize(ctx, manageSubscriptions, sub.Service)
	}
	if err == nil && sub.StartAt == (bus.StartAt{}) {
		info, terr := s.cfg.Bus.Topic(ctx, sub.Topic)
		switch {
		case terr == nil:
			sub.StartAt.Sequence = info.LastSequence + 1
		case meridian.IsCode(terr, meridian.CodeNotFound):
			sub.StartAt.First = true // everything the topic will ever hold comes after now
		default:
			err = terr
		}
	}
	var si bushttp.SubscriptionInfo
	if err == nil {
		si, err = s.push.create(ctx, sub, tok.Name)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.push.poke()
	s.log.InfoContext(ctx, "push subscription created", "subscription", sub.Name, "topic", sub.Topic, "url", redactURL(sub.URL), "by", tok.Name, "owner", si.Owner)
	writeJSON(w, http.StatusCreated, si)
}

func (s *Server) handleSubscriptions(w http.ResponseWriter, r *http.Request) {
	err := s.needBus()
	if err == nil {
		err = authorize(r.Context(), readBus, "")
	}
	topic := r.URL.Query().Get("topic")
	if err == nil && topic != "" {
		err = bus.ValidateTopic(topic)
	}
	if err == nil {
		err = s.consistent(r, s.push.mirror)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, bushttp.SubscriptionList{Subscriptions: s.push.infos(topic)})
}

func (s *Server) handleSubscription(w http.ResponseWriter, r *http.Request) {
	err := s.needBus()
	if err == nil {
		err = authorize(r.Context(), readBus, "")
	}
	var si bushttp.SubscriptionInfo
	if err == nil {
		si, err = s.push.get(r.Context(), r.PathValue("name"))
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// The group exists once delivery has started.
	if groups, err := s.cfg.Bus.Groups(r.Context(), si.Topic); err == nil {
		for _, g := range groups {
			if g.Name == si.Name {
				si.Group = &g
			}
		}
	}
	writeJSON(w, http.StatusOK, si)
}

func (s *Server) handleSubscriptionDelete(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	err := s.needBus()
	var si bushttp.SubscriptionInfo
	if err == nil {
		si, err = s.push.get(ctx, r.PathValue("name"))
	}
	if err == nil {
		err = authorize(ctx, manageSubscriptions, si.Service)
	}
	if err == nil {
		err = s.push.remove(ctx, si)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.push.poke()
	s.log.InfoContext(ctx, "push subscription deleted", "subscription", si.Name, "topic", si.Topic, "by", principal(ctx).Name)
	w.WriteHeader(http.StatusNoContent)
}
