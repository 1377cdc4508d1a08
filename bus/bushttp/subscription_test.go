package bushttp_test

import (
	"testing"
	"time"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/bus"
	"github.com/meridian-platform/meridian/bus/bushttp"
)

func TestSubscriptionDefaultsAndBusOptions(t *testing.T) {
	s := bushttp.Subscription{Name: "mailer", Topic: "orders", URL: "meridian://mail/events", Timeout: meridian.Duration(20 * time.Second)}.WithDefaults()
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if s.Service != "mail" || s.Mode != bushttp.Structured || s.MaxDeliveries != bus.DefaultMaxDeliveries || s.Concurrency != 1 {
		t.Fatalf("defaults: %+v", s)
	}
	o := s.SubscribeOptions()
	if o.AckWait != 45*time.Second || o.Batch != 1 || o.MinBackOff != time.Second || o.MaxBackOff != time.Minute {
		t.Fatalf("bus options: %+v", o)
	}
}

func TestSubscriptionValidateNamesTheField(t *testing.T) {
	base := bushttp.Subscription{Name: "s", Topic: "t", URL: "http://svc:8080/events"}
	cases := []struct {
		name  string
		edit  func(*bushttp.Subscription)
		field string
	}{
		{"no name", func(s *bushttp.Subscription) { s.Name = "" }, "name"},
		{"no topic", func(s *bushttp.Subscription) { s.Topic = "" }, "topic"},
		{"no url", func(s *bushttp.Subscription) { s.URL = "" }, "url"},
		{"relative url", func(s *bushttp.Subscription) { s.URL = "/events" }, "url"},
		{"service url with a port", func(s *bushttp.Subscription) { s.URL = "meridian://orders:80/x" }, "url"},
		{"service url of another service", func(s *bushttp.Subscription) { s.URL, s.Service = "meridian://orders/x", "billing" }, "url"},
		{"bad service", func(s *bushttp.Subscription) { s.Service = "Orders" }, "service"},
		{"empty type", func(s *bushttp.Subscription) { s.Types = []string{"a", " "} }, "types[1]"},
		{"max deliveries", func(s *bushttp.Subscription) { s.MaxDeliveries = -2 }, "max_deliveries"},
		{"concurrency", func(s *bushttp.Subscription) { s.Concurrency = 1000 }, "concurrency"},
		{"negative backoff", func(s *bushttp.Subscription) { s.BackOff = []meridian.Duration{-1} }, "backoff[0]"},
		{"two starts", func(s *bushttp.Subscription) { s.StartAt = bus.StartAt{First: true, Sequence: 3} }, "start_at"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := base
			tc.edit(&s)
			err := s.WithDefaults().Validate()
			me, ok := err.(*meridian.Error)
			if !ok || me.Field != tc.field {
				t.Fatalf("err = %v, want the field %s named", err, tc.field)
			}
		})
	}
}
