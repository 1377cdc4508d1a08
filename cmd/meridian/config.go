package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/client"
)

// maxValueInput bounds a value read from a file or stdin: the API takes
// request bodies of at most 1 MiB.
const maxValueInput = 1 << 20

func newConfigCmd(e *env, g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Read, write and watch configuration",
		Long: "The config center keeps every revision of every key. Keys are paths such as\n" +
			"prod/orders/db_url.",
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	cmd.AddCommand(
		newConfigGetCmd(e, g), newConfigPutCmd(e, g), newConfigDelCmd(e, g), newConfigLsCmd(e, g),
		newConfigHistoryCmd(e, g), newConfigDiffCmd(e, g), newConfigRollbackCmd(e, g), newConfigWatchCmd(e, g),
	)
	return cmd
}

func readOp(key string) op {
	return op{action: fmt.Sprintf("read config key %q", key), notFound: fmt.Sprintf("config key %q not found", key)}
}

func writeOp(key string) op {
	return op{action: fmt.Sprintf("write config key %q", key), notFound: fmt.Sprintf("config key %q not found", key), key: key}
}

func newConfigGetCmd(e *env, g *globals) *cobra.Command {
	var revision uint64
	cmd := &cobra.Command{
		Use:   "get KEY",
		Short: "Print a key's value (text) or its entry (json)",
		Long: "Print a key's latest value, or that of --revision N. In text mode only the\n" +
			"value is printed, so $(meridian config get KEY) is the value; -o json prints\n" +
			"the whole entry (revision, format, author, message, time).",
		Args: argsBetween(1, 1, "KEY"),
	}
	out := addOutputFlag(cmd)
	cmd.Flags().Uint64Var(&revision, "revision", 0, "a past revision (default: the latest)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		key := args[0]
		c, err := g.client(cmd)
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		entry, err := c.GetConfig(ctx, key, revision)
		if err != nil {
			o := readOp(key)
			if revision > 0 {
				o.notFound = fmt.Sprintf("config key %q has no revision %d (see 'meridian config history %s')", key, revision, key)
			}
			return g.explain(ctx, c, err, o)
		}
		if *out == outJSON {
			return writeJSON(e.stdout, entry)
		}
		_, err = io.WriteString(e.stdout, withNewline(entry.Value))
		return err
	}
	return cmd
}

func withNewline(s string) string {
	if s == "" || strings.HasSuffix(s, "\n") {
		return s
	}
	return s + "\n"
}

func newConfigPutCmd(e *env, g *globals) *cobra.Command {
	var (
		file     string
		format   string
		message  string
		expectRv uint64
	)
	cmd := &cobra.Command{
		Use:   "put KEY [VALUE|-]",
		Short: "Write a new revision of a key",
		Long: "Write VALUE as a new revision of KEY. The value comes from VALUE, from stdin\n" +
			"when VALUE is -, or from --file (- for stdin). --format defaults to the file's\n" +
			"extension (.json, .yaml, .yml), else text; json and yaml values must parse.\n" +
			"--expect-revision N writes only if the latest revision is N (0: only if the key\n" +
			"does not exist).",
		Example: "  meridian config put prod/orders/db_url postgres://db:5432/orders -m 'new primary'\n" +
			"  meridian config put prod/orders/limits --file limits.yaml --expect-revision 7\n" +
			"  echo -n on | meridian config put prod/orders/feature_x -",
		Args: argsBetween(1, 2, "KEY [VALUE|-]"),
	}
	f := cmd.Flags()
	f.StringVar(&file, "file", "", "read the value from this file (- for stdin)")
	f.StringVar(&format, "format", "", "json, yaml or text (default: from --file's extension, else text)")
	f.StringVarP(&message, "message", "m", "", "a note kept with the revision")
	f.Uint64Var(&expectRv, "expect-revision", 0, "write only if the latest revision is this one (0: the key must not exist)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		key := args[0]
		var arg *string
		if len(args) == 2 {
			arg = &args[1]
		}
		value, err := valueFrom(e, cmd, arg, file, "VALUE", "--file", true)
		if err != nil {
			return err
		}
		req := client.PutConfigRequest{Value: value, Format: meridian.ConfigFormat(format), Message: message}
		if req.Format == "" {
			req.Format = formatOf(file)
		}
		if cmd.Flags().Changed("expect-revision") {
			req.ExpectRevision = &expectRv
		}
		c, err := g.client(cmd)
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		entry, err := c.PutConfig(ctx, key, req)
		if err != nil {
			return g.explain(ctx, c, err, writeOp(key))
		}
		fmt.Fprintf(e.stdout, "wrote %s revision %d\n", entry.Key, entry.Revision)
		return nil
	}
	return cmd
}

func readFile(name string) (string, error) {
	f, err := os.Open(name)
	if err != nil {
		return "", fmt.Errorf("cannot read the value: %w", err)
	}
	defer f.Close()
	return readValue(f, name)
}

// readValue reads a whole value from r, refusing more than the API takes.
func readValue(r io.Reader, name string) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxValueInput+1))
	if err != nil {
		return "", fmt.Errorf("cannot read the value from %s: %w", name, err)
	}
	if len(b) > maxValueInput {
		return "", fmt.Errorf("the value in %s is larger than 1 MiB, more than the API accepts", name)
	}
	return string(b), nil
}

// formatOf guesses a value's format from its file name; "" leaves it to
// the server (text).
func formatOf(file string) meridian.ConfigFormat {
	switch strings.ToLower(filepath.Ext(file)) {
	case ".json":
		return meridian.FormatJSON
	case ".yaml", ".yml":
		return meridian.FormatYAML
	}
	return ""
}

func newConfigDelCmd(e *env, g *globals) *cobra.Command {
	var expectRv uint64
	cmd := &cobra.Command{
		Use:     "del KEY",
		Aliases: []string{"delete", "rm"},
		Short:   "Delete a key (its history is kept)",
		Args:    argsBetween(1, 1, "KEY"),
	}
	cmd.Flags().Uint64Var(&expectRv, "expect-revision", 0, "delete only if the latest revision is this one")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		key := args[0]
		var expect *uint64
		if cmd.Flags().Changed("expect-revision") {
			expect = &expectRv
		}
		c, err := g.client(cmd)
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		if err := c.DeleteConfig(ctx, key, expect); err != nil {
			return g.explain(ctx, c, err, writeOp(key))
		}
		fmt.Fprintf(e.stdout, "deleted %s\n", key)
		return nil
	}
	return cmd
}

func newConfigLsCmd(e *env, g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "ls [PREFIX]",
		Aliases: []string{"list"},
		Short:   "List the live keys under a prefix",
		Args:    argsBetween(0, 1, "[PREFIX]"),
	}
	out := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		prefix := ""
		if len(args) == 1 {
			prefix = args[0]
		}
		c, err := g.client(cmd)
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		entries, index, err := c.ListConfig(ctx, prefix)
		if err != nil {
			return g.explain(ctx, c, err, op{action: fmt.Sprintf("list config keys under %q", prefix)})
		}
		if *out == outJSON {
			return writeJSON(e.stdout, struct {
				Index   uint64                 `json:"index"`
				Entries []meridian.ConfigEntry `json:"entries"`
			}{index, orEmpty(entries)})
		}
		t := newTable(e.stdout, "KEY", "REVISION", "FORMAT", "AUTHOR", "UPDATED")
		for _, en := range entries {
			t.row(en.Key, u64(en.Revision), string(en.Format), en.Author, timeCell(en.Time))
		}
		return t.flush()
	}
	return cmd
}

func newConfigHistoryCmd(e *env, g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "history KEY",
		Short: "List a key's revisions, oldest first",
		Args:  argsBetween(1, 1, "KEY"),
	}
	out := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		key := args[0]
		c, err := g.client(cmd)
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		entries, err := c.ConfigHistory(ctx, key)
		if err != nil {
			return g.explain(ctx, c, err, readOp(key))
		}
		if *out == outJSON {
			return writeJSON(e.stdout, struct {
				Entries []meridian.ConfigEntry `json:"entries"`
			}{orEmpty(entries)})
		}
		t := newTable(e.stdout, "REVISION", "CHANGE", "TIME", "AUTHOR", "FORMAT", "MESSAGE")
		for _, en := range entries {
			change, format := "put", string(en.Format)
			if en.Deleted {
				change, format = "delete", ""
			}
			t.row(u64(en.Revision), change, timeCell(en.Time), en.Author, format, en.Message)
		}
		return t.flush()
	}
	return cmd
}

func newConfigDiffCmd(e *env, g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "diff KEY FROM [TO]",
		Short: "Show how a key's value changed between two revisions",
		Long:  "Print the unified diff of KEY's value from revision FROM to revision TO (default: the latest).",
		Args:  argsBetween(2, 3, "KEY FROM [TO]"),
	}
	out := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		key := args[0]
		from, err := parseRevision(cmd, "FROM", args[1])
		if err != nil {
			return err
		}
		var to uint64
		if len(args) == 3 {
			if to, err = parseRevision(cmd, "TO", args[2]); err != nil {
				return err
			}
		}
		c, err := g.client(cmd)
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		diff, err := c.DiffConfig(ctx, key, from, to)
		if err != nil {
			o := readOp(key)
			o.notFound = fmt.Sprintf("config key %q has no revision %s (see 'meridian config history %s')", key, strings.Join(args[1:], " or "), key)
			return g.explain(ctx, c, err, o)
		}
		if *out == outJSON {
			return writeJSON(e.stdout, struct {
				Key  string `json:"key"`
				From uint64 `json:"from"`
				To   uint64 `json:"to,omitempty"`
				Diff string `json:"diff"`
			}{key, from, to, diff})
		}
		_, err = io.WriteString(e.stdout, withNewline(diff))
		return err
	}
	return cmd
}

func parseRevision(cmd *cobra.Command, name, s string) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 {
		return 0, usagef(cmd, "%s: %q is not a revision (a number from '%s history')", name, s, cmd.Parent().CommandPath())
	}
	return n, nil
}

func newConfigRollbackCmd(e *env, g *globals) *cobra.Command {
	var message string
	cmd := &cobra.Command{
		Use:   "rollback KEY REVISION",
		Short: "Write a past revision's value again, as a new revision",
		Args:  argsBetween(2, 2, "KEY REVISION"),
	}
	cmd.Flags().StringVarP(&message, "message", "m", "", "a note kept with the new revision")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		key := args[0]
		rev, err := parseRevision(cmd, "REVISION", args[1])
		if err != nil {
			return err
		}
		c, err := g.client(cmd)
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		entry, err := c.RollbackConfig(ctx, key, rev, message)
		if err != nil {
			o := writeOp(key)
			o.notFound = fmt.Sprintf("config key %q has no revision %d (see 'meridian config history %s')", key, rev, key)
			return g.explain(ctx, c, err, o)
		}
		fmt.Fprintf(e.stdout, "rolled %s back to revision %d's value: now revision %d\n", key, rev, entry.Revision)
		return nil
	}
	return cmd
}

func newConfigWatchCmd(e *env, g *globals) *cobra.Command {
	var index uint64
	cmd := &cobra.Command{
		Use:   "watch [PREFIX]",
		Short: "Print config changes as they happen",
		Long: "Print every change of the keys under PREFIX until interrupted. Without --index\n" +
			"the live keys come first, then a sync marker, then changes; --index N prints\n" +
			"every change after index N. A broken stream is resumed where it stopped.\n" +
			"-o json prints one JSON event per line, sync markers included.",
		Args: argsBetween(0, 1, "[PREFIX]"),
	}
	out := addOutputFlag(cmd)
	cmd.Flags().Uint64Var(&index, "index", 0, "print the changes after this index")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		prefix := ""
		if len(args) == 1 {
			prefix = args[0]
		}
		c, err := g.client(cmd)
		if err != nil {
			return err
		}
		enc := json.NewEncoder(e.stdout)
		show := func(ev meridian.ConfigEvent) error {
			switch {
			case *out == outJSON && ev.Type == meridian.EventSync:
				return enc.Encode(syncLine{ev.Type, ev.Index}) // a sync event has no entry
			case *out == outJSON:
				return enc.Encode(ev)
			case ev.Type == meridian.EventSync:
				_, err := fmt.Fprintf(e.stderr, "synced at index %d; watching for changes\n", ev.Index)
				return err
			default:
				_, err := fmt.Fprintf(e.stdout, "%s %s revision=%d author=%s\n", ev.Type, ev.Entry.Key, ev.Entry.Revision, ev.Entry.Author)
				return err
			}
		}
		watch := func(ctx context.Context, after uint64, fn func(uint64) error) error {
			return c.WatchConfig(ctx, prefix, after, func(ev meridian.ConfigEvent) error {
				if err := show(ev); err != nil {
					return err
				}
				return fn(ev.Index)
			})
		}
		ctx := cmd.Context()
		err = follow(ctx, e, index, watch)
		return g.explain(ctx, c, err, op{action: fmt.Sprintf("watch config keys under %q", prefix)})
	}
	return cmd
}

// syncLine is a sync event as watch -o json prints it.
type syncLine struct {
	Type  meridian.EventType `json:"type"`
	Index uint64             `json:"index"`
}

// follow keeps a watch going: when the stream breaks after it had worked,
// it reports that on stderr and resumes after the last index seen, with a
// growing pause. It returns nil when ctx ends, and any other error.
func follow(ctx context.Context, e *env, after uint64, watch func(ctx context.Context, after uint64, seen func(uint64) error) error) error {
	const maxPause = 30 * time.Second
	pause := time.Second
	everConnected := false
	for {
		err := watch(ctx, after, func(index uint64) error {
			everConnected = true
			pause = time.Second
			after = index
			return nil
		})
		if ctx.Err() != nil {
			return nil
		}
		if !everConnected || !meridian.IsCode(err, meridian.CodeUnavailable) {
			return err
		}
		fmt.Fprintf(e.stderr, "meridian: %v; resuming after index %d in %s\n", err, after, pause)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(pause):
		}
		pause = min(2*pause, maxPause)
	}
}

func u64(n uint64) string { return strconv.FormatUint(n, 10) }
