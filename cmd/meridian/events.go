package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/bus"
	"github.com/meridian-platform/meridian/bus/bushttp"
	"github.com/meridian-platform/meridian/client"
)

func newTopicsCmd(e *env, g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "topics",
		Short: "List and describe the event bus's topics",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	cmd.AddCommand(newTopicsLsCmd(e, g), newTopicsShowCmd(e, g))
	return cmd
}

var busReadOp = op{action: "read the event bus"}

func newTopicsLsCmd(e *env, g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List the topics with their event counts and dead letters",
		Args:  argsBetween(0, 0, ""),
	}
	return readCmd(e, g, cmd, func(ctx context.Context, c *client.Client, _ []string) (bushttp.TopicList, op, error) {
		topics, err := c.Topics(ctx)
		return bushttp.TopicList{Topics: orEmpty(topics)}, busReadOp, err
	}, func(w io.Writer, list bushttp.TopicList) error {
		dead := map[string]uint64{}
		for _, t := range list.Topics {
			if orig, ok := strings.CutSuffix(t.Name, ".dlq"); ok {
				dead[orig] = t.Messages
			}
		}
		t := newTable(w, "TOPIC", "EVENTS", "BYTES", "PARTITIONS", "FIRST", "LAST", "LAST EVENT", "DEAD LETTERS")
		for _, ti := range list.Topics {
			t.row(ti.Name, u64(ti.Messages), u64(ti.Bytes), strconv.Itoa(ti.Partitions),
				u64(ti.FirstSequence), u64(ti.LastSequence), timeCell(ti.LastTime), u64(dead[ti.Name]))
		}
		return t.flush()
	})
}

func newTopicsShowCmd(e *env, g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show TOPIC",
		Short: "Describe a topic: retention, counts and its consumer groups",
		Args:  argsBetween(1, 1, "TOPIC"),
	}
	return readCmd(e, g, cmd, func(ctx context.Context, c *client.Client, args []string) (*bushttp.TopicDetail, op, error) {
		d, err := c.Topic(ctx, args[0])
		return d, topicOp(args[0], busReadOp.action), err
	}, func(w io.Writer, d *bushttp.TopicDetail) error {
		ti := d.Topic
		fmt.Fprintf(w, "topic %s: %d events (%d bytes), sequences %d-%d, %d partitions, %d dead letters\n",
			ti.Name, ti.Messages, ti.Bytes, ti.FirstSequence, ti.LastSequence, ti.Partitions, d.DeadLetters)
		fmt.Fprintf(w, "retention: max age %s, max bytes %s, max events %s; dedup window %s\n",
			limitCell(ti.MaxAge), countCell(ti.MaxBytes), countCell(ti.MaxMsgs), limitCell(ti.DedupWindow))
		if len(d.Groups) == 0 {
			return nil
		}
		t := newTable(w, "GROUP", "ORDERED", "PENDING", "IN FLIGHT", "REDELIVERED", "ACKED")
		for _, gi := range d.Groups {
			t.row(gi.Name, strconv.FormatBool(gi.Ordered), u64(gi.Pending), strconv.Itoa(gi.InFlight), strconv.Itoa(gi.Redelivered), u64(gi.Acked))
		}
		return t.flush()
	})
}

func limitCell(d time.Duration) string {
	if d <= 0 {
		return "none"
	}
	return d.String()
}

func countCell(n int64) string {
	if n <= 0 {
		return "none"
	}
	return strconv.FormatInt(n, 10)
}

// topicOp describes a call about one topic, for explain.
func topicOp(topic, action string) op {
	return op{action: action, notFound: fmt.Sprintf("topic %q does not exist (see 'meridian topics ls')", topic)}
}

func newEventsCmd(e *env, g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Publish events to a topic and follow a topic's events",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	cmd.AddCommand(newEventsPublishCmd(e, g), newEventsTailCmd(e, g))
	return cmd
}

// eventFlags maps the attributes the server may name in an error to the
// flags of `events publish` that set them.
var eventFlags = map[string]string{
	"id": "--id", "source": "--source", "type": "--type", "subject": "--subject",
	"datacontenttype": "--content-type", "data": "DATA", "body": "DATA", "partitionkey": "--key",
}

func newEventsPublishCmd(e *env, g *globals) *cobra.Command {
	var (
		ev   bus.Event
		key  string
		file string
		exts []string
	)
	cmd := &cobra.Command{
		Use:   "publish TOPIC [DATA|-]",
		Short: "Publish one CloudEvent to a topic",
		Long: "Publish one CloudEvent to TOPIC and print its sequence. The data comes from\n" +
			"DATA, from stdin when DATA is -, or from --data-file (- for stdin); JSON by\n" +
			"default (--content-type). --id defaults to a new UUID; publishing the same\n" +
			"--source and --id again within the topic's dedup window stores nothing.",
		Example: "  meridian events publish orders '{\"id\":\"o-1\",\"total\":12}' --type com.example.order.placed --source /shop\n" +
			"  meridian events publish orders --type com.example.order.placed --key customer-7 --data-file order.json\n" +
			"  tar c dir | meridian events publish backups - --type backup.made --content-type application/x-tar",
		Args: argsBetween(1, 2, "TOPIC [DATA|-]"),
	}
	out := addOutputFlag(cmd)
	f := cmd.Flags()
	f.StringVar(&ev.Type, "type", "", "the event's type, e.g. com.example.order.placed (required)")
	f.StringVar(&ev.Source, "source", "/meridian/cli", "the event's source, a URI reference naming the producer")
	f.StringVar(&ev.ID, "id", "", "the event's id, unique per source (default: a new UUID)")
	f.StringVar(&ev.Subject, "subject", "", "the event's subject")
	f.StringVar(&key, "key", "", "the ordering key (the partitionkey extension): same key, same order")
	f.StringVar(&ev.DataContentType, "content-type", "application/json", "the data's media type")
	f.StringVar(&file, "data-file", "", "read the data from this file (- for stdin)")
	f.StringArrayVar(&exts, "ext", nil, "an extension attribute as name=value (repeatable)")
	_ = cmd.MarkFlagRequired("type")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		topic := args[0]
		var arg *string
		if len(args) == 2 {
			arg = &args[1]
		}
		data, err := valueFrom(e, cmd, arg, file, "DATA", "--data-file", false)
		if err != nil {
			return err
		}
		ev.Data = []byte(data)
		if ev.Extensions, err = parseMeta(exts); err != nil {
			return usagef(cmd, "--ext: %v", strings.TrimPrefix(err.Error(), "--meta "))
		}
		if key != "" {
			if ev.Extensions == nil {
				ev.Extensions = map[string]string{}
			}
			ev.Extensions[bus.ExtPartitionKey] = key
		}
		if ev.ID == "" {
			ev.ID = bus.NewID()
		}
		c, err := g.client(cmd)
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		r, err := c.Publish(ctx, topic, ev)
		if err != nil {
			var me *meridian.Error
			if errors.As(err, &me) && me.Code == meridian.CodeInvalid && eventFlags[me.Field] != "" {
				return usagef(cmd, "%s: %s", eventFlags[me.Field], me.Message)
			}
			return g.explain(ctx, c, err, op{action: fmt.Sprintf("publish to topic %q", topic)})
		}
		if *out == outJSON {
			return writeJSON(e.stdout, r)
		}
		if r.Duplicate {
			fmt.Fprintf(e.stdout, "duplicate of %s sequence %d (source %s, id %s were published within the dedup window): nothing stored\n", r.Topic, r.Sequence, ev.Source, ev.ID)
			return nil
		}
		fmt.Fprintf(e.stdout, "published %s to %s: sequence %d, partition %d\n", ev.ID, r.Topic, r.Sequence, r.Partition)
		return nil
	}
	return cmd
}

// valueFrom reads a command's input: the argument when given (stdin when
// it is "-"), else the file (stdin when "-"). argName and fileFlag name
// them in usage errors. Without either it is "" unless required.
func valueFrom(e *env, cmd *cobra.Command, arg *string, file, argName, fileFlag string, required bool) (string, error) {
	switch {
	case arg != nil && file != "":
		return "", usagef(cmd, "give the value as %s or with %s, not both", argName, fileFlag)
	case arg != nil && *arg == "-", file == "-":
		return readValue(e.stdin, "stdin")
	case arg != nil:
		return *arg, nil
	case file != "":
		return readFile(file)
	case required:
		return "", usagef(cmd, "no value: give %s, - to read stdin, or %s FILE", argName, fileFlag)
	}
	return "", nil
}

// errEnough stops a tail that has printed what --max asked for.
var errEnough = errors.New("enough events")

func newEventsTailCmd(e *env, g *globals) *cobra.Command {
	var (
		fromSeq uint64
		since   string
		maxN    int
	)
	cmd := &cobra.Command{
		Use:   "tail TOPIC",
		Short: "Print a topic's events as they are published",
		Long: "Print TOPIC's events until interrupted: from now on, or from --from-seq N\n" +
			"(1: everything the topic keeps), or --since a time (RFC 3339) or a duration\n" +
			"back from now (10m). --max N stops after N events. A broken stream resumes\n" +
			"after the last event printed. -o json prints one event per line, the\n" +
			"CloudEvent under \"event\". Tailing joins no group: it takes no events from\n" +
			"the topic's consumers.",
		Example: "  meridian events tail orders\n" +
			"  meridian events tail orders --from-seq 1 --max 10 -o json | jq .event.data",
		Args: argsBetween(1, 1, "TOPIC"),
	}
	out := addOutputFlag(cmd)
	f := cmd.Flags()
	f.Uint64Var(&fromSeq, "from-seq", 0, "start at this sequence (1: everything the topic keeps)")
	f.StringVar(&since, "since", "", "start at this time (RFC 3339) or this long ago (e.g. 10m)")
	f.IntVar(&maxN, "max", 0, "stop after this many events (0: never)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		topic := args[0]
		var start client.StreamQuery
		start.FromSeq = fromSeq
		if since != "" {
			if fromSeq > 0 {
				return usagef(cmd, "give --from-seq or --since, not both")
			}
			t, err := parseSince(since, time.Now())
			if err != nil {
				return usagef(cmd, "--since: %v", err)
			}
			start.Since = t
		}
		if maxN < 0 {
			return usagef(cmd, "--max %d is negative", maxN)
		}
		c, err := g.client(cmd)
		if err != nil {
			return err
		}
		enc := json.NewEncoder(e.stdout)
		enc.SetEscapeHTML(false)
		printed, announced := 0, false
		tail := func(ctx context.Context, after uint64, seen func(uint64) error) error {
			q := start
			if after > 0 {
				q = client.StreamQuery{After: after}
			}
			q.Ready = func(r bushttp.StreamReady) {
				if !announced {
					announced = true
					fmt.Fprintf(e.stderr, "tailing %s (last sequence %d); interrupt to stop\n", r.Topic, r.LastSequence)
				}
			}
			return c.StreamEvents(ctx, topic, q, func(te bushttp.TopicEvent) error {
				var err error
				if *out == outJSON {
					err = enc.Encode(te)
				} else {
					_, err = fmt.Fprintln(e.stdout, eventLine(te))
				}
				if err != nil {
					return err
				}
				if printed++; maxN > 0 && printed >= maxN {
					return errEnough
				}
				return seen(te.Sequence)
			})
		}
		ctx := cmd.Context()
		err = follow(ctx, e, 0, tail)
		if errors.Is(err, errEnough) {
			return nil
		}
		return g.explain(ctx, c, err, topicOp(topic, fmt.Sprintf("read topic %q", topic)))
	}
	return cmd
}

func parseSince(v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration like 10m", v)
}

// maxDataCell bounds the data shown on an event's line.
const maxDataCell = 200

// eventLine is an event as `events tail` prints it: sequence, time, type,
// source, id, then the data when it is short text.
func eventLine(te bushttp.TopicEvent) string {
	ev := te.Event
	return fmt.Sprintf("#%d %s %s %s %s %s", te.Sequence, ev.Time.UTC().Format(time.RFC3339), ev.Type, ev.Source, ev.ID, dataCell(ev))
}

func dataCell(ev bus.Event) string {
	switch {
	case len(ev.Data) == 0:
		return "-"
	case len(ev.Data) > maxDataCell || !utf8.Valid(ev.Data):
		ct := ev.DataContentType
		if ct == "" {
			ct = "data"
		}
		return fmt.Sprintf("<%d bytes of %s>", len(ev.Data), ct)
	}
	return strings.Join(strings.Fields(string(ev.Data)), " ")
}
