package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/bus"
	"github.com/meridian-platform/meridian/bus/bushttp"
)

func subscriptionPath(name string) (string, error) {
	if name == "" {
		return "", meridian.FieldError("name", "is required")
	}
	return "/v1/subscriptions/" + url.PathEscape(name), nil
}

// CreateSubscription creates a push subscription: the control plane POSTs
// each event of s.Topic to s.URL. An existing name is CodeConflict.
func (c *Client) CreateSubscription(ctx context.Context, s bushttp.Subscription) (*bushttp.SubscriptionInfo, error) {
	var out bushttp.SubscriptionInfo
	if _, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/subscriptions", body: s}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Subscriptions lists the push subscriptions, of one topic or of all
// (topic "").
func (c *Client) Subscriptions(ctx context.Context, topic string) ([]bushttp.SubscriptionInfo, error) {
	query := url.Values{}
	if topic != "" {
		if err := bus.ValidateTopic(topic); err != nil {
			return nil, err
		}
		query.Set("topic", topic)
	}
	var out bushttp.SubscriptionList
	if _, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/subscriptions", query: query}, &out); err != nil {
		return nil, err
	}
	return out.Subscriptions, nil
}

// Subscription returns one push subscription with the replica delivering
// it and its group's counts; CodeNotFound when there is none.
func (c *Client) Subscription(ctx context.Context, name string) (*bushttp.SubscriptionInfo, error) {
	path, err := subscriptionPath(name)
	if err != nil {
		return nil, err
	}
	var out bushttp.SubscriptionInfo
	if _, err := c.do(ctx, request{method: http.MethodGet, path: path}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteSubscription deletes a push subscription and its group: delivery
// stops and its position is forgotten.
func (c *Client) DeleteSubscription(ctx context.Context, name string) error {
	path, err := subscriptionPath(name)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, request{method: http.MethodDelete, path: path}, nil)
	return err
}
