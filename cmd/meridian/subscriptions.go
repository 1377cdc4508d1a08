package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/bus"
	"github.com/meridian-platform/meridian/bus/bushttp"
	"github.com/meridian-platform/meridian/client"
)

func newSubscriptionsCmd(e *env, g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "subscriptions",
		Aliases: []string{"subs"},
		Short:   "Manage push subscriptions: topics whose events the control plane POSTs to a URL",
		Long: "A push subscription makes the control plane POST each event of a topic to a\n" +
			"URL, with retries and backoff, and dead letters after --max-deliveries. The\n" +
			"target's 2xx acknowledges; 408, 429, 5xx and connection errors retry\n" +
			"(honouring Retry-After); any other status dead-letters the event at once.",
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	cmd.AddCommand(newSubCreateCmd(e, g), newSubLsCmd(e, g), newSubShowCmd(e, g), newSubRmCmd(e, g))
	return cmd
}

func subOp(name, action string) op {
	return op{action: action, notFound: fmt.Sprintf("no subscription named %q (see 'meridian subscriptions ls')", name),
		conflict: fmt.Sprintf("a subscription named %q exists: delete it first ('meridian subscriptions rm %s') or pick another name", name, name)}
}

func newSubCreateCmd(e *env, g *globals) *cobra.Command {
	var (
		s          bushttp.Subscription
		mode       string
		backoff    []time.Duration
		minB, maxB time.Duration
		timeout    time.Duration
		fromSeq    uint64
		fromStart  bool
	)
	cmd := &cobra.Command{
		Use:   "create NAME --topic TOPIC --url URL [flags]",
		Short: "Create a push subscription",
		Long: "Create the push subscription NAME, which is also its group on the topic. --url\n" +
			"is http(s)://host:port/path, or meridian://SERVICE/path for the healthy\n" +
			"instances of a registered service in turn. Delivery starts with the events\n" +
			"published after now, unless --from-seq or --from-start.",
		Example: "  meridian subscriptions create billing-orders --topic orders --url http://billing:8080/events\n" +
			"  meridian subscriptions create mailer --topic orders --url meridian://mailer/hooks/order --type com.example.order.placed --mode binary",
		Args: argsBetween(1, 1, "NAME"),
	}
	out := addOutputFlag(cmd)
	f := cmd.Flags()
	f.StringVar(&s.Topic, "topic", "", "the topic to deliver (required)")
	f.StringVar(&s.URL, "url", "", "where to POST the events (required)")
	f.StringVar(&s.Service, "service", "", "the service the subscription belongs to (default: the service of a meridian:// URL)")
	f.StringArrayVar(&s.Types, "type", nil, "deliver only events of this type (repeatable)")
	f.StringVar(&mode, "mode", "structured", "structured (the event as JSON) or binary (attributes in ce- headers)")
	f.IntVar(&s.MaxDeliveries, "max-deliveries", 0, "POSTs of an event before it is dead-lettered (server default 5; -1 for ever)")
	f.DurationSliceVar(&backoff, "backoff", nil, "delays after attempt 1, 2, …, the last repeating, e.g. 1s,10s,1m (default: exponential)")
	f.DurationVar(&minB, "min-backoff", 0, "the first exponential delay's ceiling (server default 1s)")
	f.DurationVar(&maxB, "max-backoff", 0, "the longest delay, and the longest Retry-After honoured (server default 1m)")
	f.DurationVar(&timeout, "timeout", 0, "timeout of one POST (server default 10s)")
	f.IntVar(&s.Concurrency, "concurrency", 0, "POSTs in flight at once (server default 1)")
	f.BoolVar(&s.Ordered, "ordered", false, "deliver the events of one key one at a time, in order")
	f.Uint64Var(&fromSeq, "from-seq", 0, "start at this sequence of the topic")
	f.BoolVar(&fromStart, "from-start", false, "start at the first event the topic keeps")
	_ = cmd.MarkFlagRequired("topic")
	_ = cmd.MarkFlagRequired("url")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if fromSeq > 0 && fromStart {
			return usagef(cmd, "give --from-seq or --from-start, not both")
		}
		s.Name = args[0]
		s.Mode = bushttp.Mode(mode)
		s.StartAt = bus.StartAt{First: fromStart, Sequence: fromSeq}
		s.MinBackOff, s.MaxBackOff, s.Timeout = meridian.Duration(minB), meridian.Duration(maxB), meridian.Duration(timeout)
		for _, d := range backoff {
			s.BackOff = append(s.BackOff, meridian.Duration(d))
		}
		c, err := g.client(cmd)
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		si, err := c.CreateSubscription(ctx, s)
		if err != nil {
			if flag := subFlag(err); flag != "" {
				return usagef(cmd, "%s", flag)
			}
			o := subOp(s.Name, fmt.Sprintf("create subscription %q to %s (a service token subscribes its own service only: --url meridian://SERVICE/path)", s.Name, s.URL))
			return g.explain(ctx, c, err, o)
		}
		if *out == outJSON {
			return writeJSON(e.stdout, si)
		}
		fmt.Fprintf(e.stdout, "created subscription %s: %s → %s, delivered by %s\n", si.Name, si.Topic, si.URL, si.Owner)
		return nil
	}
	return cmd
}

// subFlag rewrites an invalid-field error of a subscription in the terms
// of `subscriptions create`'s flags; "" when it is not one.
func subFlag(err error) string {
	me, ok := err.(*meridian.Error)
	if !ok || me.Code != meridian.CodeInvalid || me.Field == "" {
		return ""
	}
	field, _, _ := strings.Cut(me.Field, "[")
	flag := map[string]string{"name": "NAME", "start_at": "--from-seq/--from-start", "types": "--type"}[field]
	if flag == "" {
		flag = "--" + strings.ReplaceAll(field, "_", "-")
	}
	return flag + ": " + me.Message
}

func newSubLsCmd(e *env, g *globals) *cobra.Command {
	var topic string
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List the push subscriptions",
		Args:  argsBetween(0, 0, ""),
	}
	cmd.Flags().StringVar(&topic, "topic", "", "only the subscriptions of this topic")
	return readCmd(e, g, cmd, func(ctx context.Context, c *client.Client, _ []string) (bushttp.SubscriptionList, op, error) {
		list, err := c.Subscriptions(ctx, topic)
		return bushttp.SubscriptionList{Subscriptions: orEmpty(list)}, busReadOp, err
	}, func(w io.Writer, list bushttp.SubscriptionList) error {
		t := newTable(w, "NAME", "TOPIC", "URL", "MODE", "TYPES", "MAX DELIVERIES", "OWNER")
		for _, si := range list.Subscriptions {
			t.row(si.Name, si.Topic, si.URL, string(si.Mode), strings.Join(si.Types, ","), strconv.Itoa(si.MaxDeliveries), si.Owner)
		}
		return t.flush()
	})
}

func newSubShowCmd(e *env, g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a push subscription, the replica delivering it and its backlog",
		Args:  argsBetween(1, 1, "NAME"),
	}
	return readCmd(e, g, cmd, func(ctx context.Context, c *client.Client, args []string) (*bushttp.SubscriptionInfo, op, error) {
		si, err := c.Subscription(ctx, args[0])
		return si, subOp(args[0], busReadOp.action), err
	}, func(w io.Writer, si *bushttp.SubscriptionInfo) error {
		fmt.Fprintf(w, "subscription %s: topic %s → %s (%s mode)\n", si.Name, si.Topic, si.URL, si.Mode)
		fmt.Fprintf(w, "service:  %s\n", orDash(si.Service))
		fmt.Fprintf(w, "types:    %s\n", orDash(strings.Join(si.Types, ", ")))
		fmt.Fprintf(w, "retries:  %d deliveries, backoff %s, timeout %s, concurrency %d\n", si.MaxDeliveries, backoffCell(si.Subscription), si.Timeout, si.Concurrency)
		fmt.Fprintf(w, "owner:    %s\n", si.Owner)
		if si.Group != nil {
			fmt.Fprintf(w, "backlog:  %d pending, %d in flight, %d redelivered\n", si.Group.Pending, si.Group.InFlight, si.Group.Redelivered)
		}
		_, err := fmt.Fprintf(w, "created:  %s by %s\n", timeCell(si.CreatedAt), orDash(si.CreatedBy))
		return err
	})
}

func backoffCell(s bushttp.Subscription) string {
	if len(s.BackOff) == 0 {
		return fmt.Sprintf("exponential %s-%s", s.MinBackOff, s.MaxBackOff)
	}
	parts := make([]string, len(s.BackOff))
	for i, d := range s.BackOff {
		parts[i] = d.String()
	}
	return strings.Join(parts, ",")
}

func newSubRmCmd(e *env, g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME",
		Short: "Delete a push subscription and its group",
		Args:  argsBetween(1, 1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if err := c.DeleteSubscription(ctx, args[0]); err != nil {
				return g.explain(ctx, c, err, subOp(args[0], "delete subscription "+args[0]))
			}
			fmt.Fprintf(e.stdout, "deleted subscription %s\n", args[0])
			return nil
		},
	}
}
