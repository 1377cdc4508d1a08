package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/meridian-platform/meridian/bus"
	"github.com/meridian-platform/meridian/bus/bushttp"
	"github.com/meridian-platform/meridian/client"
)

func newDLQCmd(e *env, g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "Read and replay a topic's dead letters",
		Long: "A topic's dead letters are the events a group gave up on (after its maximum\n" +
			"deliveries, or at once for a permanent error), kept in TOPIC.dlq with the\n" +
			"reason and the history of the attempts. Replaying one publishes its event\n" +
			"again, to the group that gave up on it, and removes the dead letter.",
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	cmd.AddCommand(newDLQLsCmd(e, g), newDLQShowCmd(e, g), newDLQReplayCmd(e, g))
	return cmd
}

func newDLQLsCmd(e *env, g *globals) *cobra.Command {
	var (
		after uint64
		limit int
	)
	cmd := &cobra.Command{
		Use:   "ls TOPIC",
		Short: "List a topic's dead letters, oldest first",
		Args:  argsBetween(1, 1, "TOPIC"),
	}
	cmd.Flags().Uint64Var(&after, "after", 0, "list the dead letters after this sequence of the dead-letter topic")
	cmd.Flags().IntVar(&limit, "limit", 100, "list at most this many (1-1000)")
	return readCmd(e, g, cmd, func(ctx context.Context, c *client.Client, args []string) (bushttp.DeadLetterList, op, error) {
		if limit < 1 || limit > 1000 {
			return bushttp.DeadLetterList{}, op{}, usagef(cmd, "--limit %d is out of range 1-1000", limit)
		}
		list, err := c.DeadLetters(ctx, args[0], after, limit)
		return bushttp.DeadLetterList{DeadLetters: orEmpty(list)}, topicOp(args[0], busReadOp.action), err
	}, func(w io.Writer, list bushttp.DeadLetterList) error {
		t := newTable(w, "SEQ", "EVENT", "TYPE", "GROUP", "DELIVERIES", "DEAD AT", "REASON")
		for _, dl := range list.DeadLetters {
			t.row(u64(dl.Sequence), dl.Event.Source+" "+dl.Event.ID, dl.Event.Type, dl.Group,
				strconv.Itoa(dl.Deliveries), timeCell(dl.DeadAt), dl.Reason)
		}
		return t.flush()
	})
}

// deadLetterSeq reads the SEQ argument of a dlq command.
func deadLetterSeq(cmd *cobra.Command, topic, arg string) (uint64, error) {
	seq, err := strconv.ParseUint(arg, 10, 64)
	if err != nil || seq == 0 {
		return 0, usagef(cmd, "SEQ %q is not a dead letter's sequence (see 'meridian dlq ls %s')", arg, topic)
	}
	return seq, nil
}

// deadLetterOp explains a call about dead letter seq of topic.
func deadLetterOp(topic string, seq uint64, action string) op {
	o := topicOp(topic, action)
	if seq != 0 {
		o.notFound = fmt.Sprintf("topic %q has no dead letter %d (see 'meridian dlq ls %s')", topic, seq, topic)
	}
	return o
}

func newDLQShowCmd(e *env, g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show TOPIC SEQ",
		Short: "Show one dead letter: its event, reason and attempts",
		Args:  argsBetween(2, 2, "TOPIC SEQ"),
	}
	return readCmd(e, g, cmd, func(ctx context.Context, c *client.Client, args []string) (*bus.DeadLetter, op, error) {
		seq, err := deadLetterSeq(cmd, args[0], args[1])
		if err != nil {
			return nil, op{}, err
		}
		dl, err := c.DeadLetter(ctx, args[0], seq)
		return dl, deadLetterOp(args[0], seq, busReadOp.action), err
	}, func(w io.Writer, dl *bus.DeadLetter) error {
		ev := dl.Event
		fmt.Fprintf(w, "dead letter %d of %s: event %d of the topic (partition %d)\n", dl.Sequence, dl.Topic, dl.OriginalSequence, dl.Partition)
		fmt.Fprintf(w, "group:      %s\n", orDash(dl.Group))
		fmt.Fprintf(w, "reason:     %s\n", dl.Reason)
		fmt.Fprintf(w, "deliveries: %d, dead at %s\n", dl.Deliveries, timeCell(dl.DeadAt))
		for i, a := range dl.Attempts {
			at := "-"
			if !a.At.IsZero() {
				at = a.At.UTC().Format(time.RFC3339Nano)
			}
			fmt.Fprintf(w, "  attempt %d at %s: %s\n", i+1, at, a.Error)
		}
		fmt.Fprintf(w, "event:      %s %s, type %s, time %s\n", ev.Source, ev.ID, ev.Type, timeCell(ev.Time))
		if ev.Subject != "" {
			fmt.Fprintf(w, "subject:    %s\n", ev.Subject)
		}
		for _, k := range slices.Sorted(maps.Keys(ev.Extensions)) {
			fmt.Fprintf(w, "%-11s %s\n", k+":", ev.Extensions[k])
		}
		_, err := fmt.Fprintf(w, "data:       %s\n", dataCell(ev))
		return err
	})
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newDLQReplayCmd(e *env, g *globals) *cobra.Command {
	var req bushttp.ReplayRequest
	cmd := &cobra.Command{
		Use:   "replay TOPIC (SEQ | --all)",
		Short: "Publish dead letters back to their topic",
		Long: "Publish the dead letter SEQ (or --all of them, oldest first) back to TOPIC and\n" +
			"remove it from the dead-letter topic. The event goes to the group that gave up\n" +
			"on it only, unless --all-groups. --keep leaves the dead letter in place.",
		Example: "  meridian dlq replay orders 3\n" +
			"  meridian dlq replay orders --all",
		Args: argsBetween(1, 2, "TOPIC (SEQ | --all)"),
	}
	out := addOutputFlag(cmd)
	f := cmd.Flags()
	f.BoolVar(&req.All, "all", false, "replay every dead letter of the topic")
	f.BoolVar(&req.AllGroups, "all-groups", false, "send the events to every group of the topic")
	f.BoolVar(&req.Keep, "keep", false, "leave the dead letters in the dead-letter topic")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		topic := args[0]
		switch {
		case len(args) == 2 && req.All:
			return usagef(cmd, "give SEQ or --all, not both")
		case len(args) == 2:
			seq, err := deadLetterSeq(cmd, topic, args[1])
			if err != nil {
				return err
			}
			req.Sequence = seq
		case !req.All:
			return usagef(cmd, "give the SEQ of a dead letter (see 'meridian dlq ls %s'), or --all", topic)
		}
		c, err := g.client(cmd)
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		done, err := c.ReplayDeadLetters(ctx, topic, req)
		if err != nil {
			return g.explain(ctx, c, err, deadLetterOp(topic, req.Sequence, fmt.Sprintf("replay the dead letters of topic %q", topic)))
		}
		if *out == outJSON {
			return writeJSON(e.stdout, bushttp.ReplayResult{Replayed: orEmpty(done)})
		}
		if len(done) == 0 {
			fmt.Fprintf(e.stdout, "topic %s has no dead letters to replay\n", topic)
		}
		for _, r := range done {
			fmt.Fprintf(e.stdout, "replayed dead letter %d as event %d of %s\n", r.Sequence, r.Receipt.Sequence, r.Receipt.Topic)
		}
		return nil
	}
	return cmd
}
