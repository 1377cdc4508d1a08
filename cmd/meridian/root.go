package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/client"
)

// defaultAddr is where the control plane listens unless told otherwise.
const defaultAddr = "127.0.0.1:7400"

// adminTokenFile is the name, in the data dir, of the file where the
// server writes the first admin token's secret.
const adminTokenFile = "admin.token"

// env is the process's environment, passed in so the whole program runs in
// a test.
type env struct {
	getenv func(string) string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// run runs the command line args (without the program name). It returns
// errors ready to show to a user: one line that says what to do. A
// *usageError means the command line itself was wrong.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	e := &env{getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr}
	g := &globals{e: e, hc: &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}}
	defer g.hc.CloseIdleConnections()

	root := &cobra.Command{
		Use:   "meridian",
		Short: "Meridian: run the control plane and talk to it",
		Long: "Meridian's command-line tool. 'meridian server' runs the control plane; the other\n" +
			"commands talk to it at --addr with the token from --token, MERIDIAN_TOKEN or\n" +
			"<data-dir>/admin.token.",
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          cobra.ArbitraryArgs,
		RunE:          groupRunE,
	}
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return usagef(cmd, "%v", err) })
	root.CompletionOptions.HiddenDefaultCmd = true

	pf := root.PersistentFlags()
	pf.StringVar(&g.addr, "addr", envOr(getenv, "MERIDIAN_ADDR", defaultAddr),
		"control plane address: host:port or an http(s):// URL (env MERIDIAN_ADDR)")
	pf.StringVar(&g.token, "token", "",
		"API token (default: env MERIDIAN_TOKEN, else the contents of <data-dir>/admin.token)")
	pf.StringVar(&g.dataDir, "data-dir", defaultDataDir(getenv),
		"the server's data directory, where it writes admin.token (env MERIDIAN_DATA_DIR)")

	root.AddCommand(
		newServerCmd(e), newGatewayCmd(e, g), newRoutesCmd(e, g),
		newServicesCmd(e, g), newInstancesCmd(e, g), newRegisterCmd(e, g), newDeregisterCmd(e, g), newHeartbeatCmd(e, g),
		newConfigCmd(e, g),
		newTokenCmd(e, g),
		newTopicsCmd(e, g), newEventsCmd(e, g), newDLQCmd(e, g), newSubscriptionsCmd(e, g),
		newVersionCmd(e),
	)
	markStarts(root, g)
	cmd, err := root.ExecuteContextC(ctx)
	if err != nil && !g.started {
		var ue *usageError
		if !errors.As(err, &ue) {
			if cmd == nil {
				cmd = root
			}
			err = usagef(cmd, "%v", err)
		}
	}
	return err
}

// markStarts makes every command record that it started: cobra has parsed
// flags and checked arguments and required flags by then, so an error
// before that is a usage error.
func markStarts(cmd *cobra.Command, g *globals) {
	if run := cmd.RunE; run != nil {
		cmd.RunE = func(cmd *cobra.Command, args []string) error {
			g.started = true
			return run(cmd, args)
		}
	}
	for _, sub := range cmd.Commands() {
		markStarts(sub, g)
	}
}

// defaultDataDir is the data directory client and server agree on without
// flags: $MERIDIAN_DATA_DIR, else $HOME/.meridian.
func defaultDataDir(getenv func(string) string) string {
	if d := getenv("MERIDIAN_DATA_DIR"); d != "" {
		return d
	}
	home := getenv("HOME")
	if home == "" {
		home, _ = os.UserHomeDir()
	}
	return filepath.Join(home, ".meridian")
}

func envOr(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}

// globals are the root's persistent flags and what every command that
// talks to the control plane shares.
type globals struct {
	e                    *env
	addr, token, dataDir string
	hc                   *http.Client // its idle connections are closed when run returns
	started              bool         // a command's RunE started (see markStarts)
}

// client returns a client of --addr with the token resolved from, in
// order, --token, MERIDIAN_TOKEN and <data-dir>/admin.token.
func (g *globals) client(cmd *cobra.Command) (*client.Client, error) {
	token, err := g.resolveToken(cmd)
	if err != nil {
		return nil, err
	}
	c, err := client.New(g.addr, token, client.WithHTTPClient(g.hc))
	if err != nil {
		var me *meridian.Error
		if errors.As(err, &me) && me.Field == "addr" {
			return nil, usagef(cmd, "--addr: %s", me.Message)
		}
		return nil, err
	}
	return c, nil
}

func (g *globals) tokenPath() string { return filepath.Join(g.dataDir, adminTokenFile) }

func (g *globals) resolveToken(cmd *cobra.Command) (string, error) {
	if cmd.Flags().Changed("token") {
		return strings.TrimSpace(g.token), nil
	}
	if t := strings.TrimSpace(g.e.getenv("MERIDIAN_TOKEN")); t != "" {
		return t, nil
	}
	path := g.tokenPath()
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("no token: --token is not set, MERIDIAN_TOKEN is empty and %s does not exist; "+
			"set --token or MERIDIAN_TOKEN (an admin makes one with 'meridian token create'), or set --data-dir to the server's data directory", path)
	case err != nil:
		return "", fmt.Errorf("no token: --token is not set, MERIDIAN_TOKEN is empty and %s cannot be read (%v); set --token or MERIDIAN_TOKEN", path, unwrapPathError(err))
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("no token: --token is not set, MERIDIAN_TOKEN is empty and %s is empty; set --token or MERIDIAN_TOKEN", path)
	}
	return t, nil
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// op describes what a command asked of the control plane, so that an error
// can be told in its terms.
type op struct {
	action   string // completes `token "ci" may not …`, e.g. "list services"
	notFound string // the message for not_found; empty keeps the server's
	conflict string // the message for a conflict that is not a revision conflict
	key      string // the config key of a compare-and-set
}

// explain turns an error from the client into one line that says what
// happened and what to do about it.
func (g *globals) explain(ctx context.Context, c *client.Client, err error, o op) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return errors.New("interrupted")
	}
	var me *meridian.Error
	if !errors.As(err, &me) {
		return err
	}
	switch me.Code {
	case meridian.CodeUnavailable:
		if isUnreachable(err) {
			return fmt.Errorf("cannot reach the control plane at %s: is 'meridian server' running? (set --addr or MERIDIAN_ADDR)", c.Addr())
		}
		return fmt.Errorf("the control plane at %s is unavailable: %s; try again shortly", c.Addr(), me.Error())
	case meridian.CodeUnauthorized:
		return fmt.Errorf("token rejected by %s: set --token or MERIDIAN_TOKEN, or run on the server's machine where %s is read", c.Addr(), g.tokenPath())
	case meridian.CodeForbidden:
		who := "this token"
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if tok, werr := c.WhoAmI(wctx); werr == nil {
			who = fmt.Sprintf("token %q (role %s)", tok.Name, tok.Role)
		}
		return fmt.Errorf("%s may not %s", who, o.action)
	case meridian.CodeNotFound:
		if o.notFound != "" {
			return errors.New(o.notFound)
		}
	case meridian.CodeConflict:
		switch {
		case o.key != "" && me.Current != 0:
			return fmt.Errorf("revision conflict on %s: the current revision is %d (re-read and retry with --expect-revision %d)", o.key, me.Current, me.Current)
		case o.key != "":
			return fmt.Errorf("revision conflict on %s: the key does not exist (retry with --expect-revision 0 to create it)", o.key)
		case o.conflict != "":
			return errors.New(o.conflict)
		}
	}
	return errors.New(me.Error())
}

// isUnreachable reports whether err is a request that got no answer, as
// opposed to a control plane that answered 503.
func isUnreachable(err error) bool {
	var ue *url.Error // the client keeps the transport's error as the cause
	return errors.As(err, &ue)
}

// usageError is a command line that cannot be run as written; main exits
// with status 2 for it.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// usagef returns a usage error that points at cmd's help.
func usagef(cmd *cobra.Command, format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...) + fmt.Sprintf("; see '%s --help'", cmd.CommandPath())}
}

// groupRunE runs a command that only groups others: without arguments it
// shows its help, with one it names the unknown command.
func groupRunE(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return cmd.Help()
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += fmt.Sprintf(" (did you mean %q?)", s[0])
	}
	return usagef(cmd, "%s", msg)
}

// argsBetween accepts min to max positional arguments, described by names
// ("KEY [VALUE]") in the error.
func argsBetween(min, max int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < min || len(args) > max {
			if names == "" {
				return usagef(cmd, "%s takes no arguments, got %q", cmd.CommandPath(), args)
			}
			return usagef(cmd, "usage: %s %s", cmd.CommandPath(), names)
		}
		return nil
	}
}

// outputFormat is the value of -o/--output.
type outputFormat string

const (
	outText outputFormat = "text"
	outJSON outputFormat = "json"
)

func (o *outputFormat) String() string { return string(*o) }
func (o *outputFormat) Type() string   { return "text|json" }
func (o *outputFormat) Set(s string) error {
	switch outputFormat(s) {
	case outText, outJSON:
		*o = outputFormat(s)
		return nil
	}
	return errors.New("want text or json")
}

// addOutputFlag adds -o/--output to a command that prints what it reads.
func addOutputFlag(cmd *cobra.Command) *outputFormat {
	o := outText
	cmd.Flags().VarP(&o, "output", "o", "output format: text or json")
	return &o
}

// readCmd completes cmd as a command that reads from the control plane
// and prints the answer: as text by default, as JSON with -o json. read
// returns the answer, or an error and the op that explains it to the user.
func readCmd[T any](e *env, g *globals, cmd *cobra.Command,
	read func(ctx context.Context, c *client.Client, args []string) (T, op, error),
	text func(w io.Writer, v T) error,
) *cobra.Command {
	out := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := g.client(cmd)
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		v, o, err := read(ctx, c, args)
		if err != nil {
			return g.explain(ctx, c, err, o)
		}
		if *out == outJSON {
			return writeJSON(e.stdout, v)
		}
		return text(e.stdout, v)
	}
	return cmd
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table prints rows under a header, in aligned columns.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	t.row(header...)
	return t
}

// row adds a row; empty cells show as "-" and tabs or newlines inside a cell
// become spaces so they cannot break the columns.
func (t *table) row(cells ...string) {
	for i, c := range cells {
		c = strings.Join(strings.FieldsFunc(c, func(r rune) bool { return r == '\t' || r == '\n' || r == '\r' }), " ")
		if c == "" {
			c = "-"
		}
		cells[i] = c
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// timeCell shows a time in UTC to the second, "-" when unknown.
func timeCell(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// orEmpty makes a nil slice print as [] in JSON.
func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
