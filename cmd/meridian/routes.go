package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/spf13/cobra"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/client"
	"github.com/meridian-platform/meridian/gateway"
)

// routesTarget is the gateway whose routing document a routes command
// works on: --gateway, which every routes command but validate has.
type routesTarget struct{ name string }

// key checks --gateway and returns the config key of its document.
func (t *routesTarget) key(cmd *cobra.Command) (string, error) {
	if err := meridian.ValidateServiceName("gateway", t.name); err != nil {
		msg := err.Error()
		if me := (*meridian.Error)(nil); errors.As(err, &me) {
			msg = me.Message
		}
		return "", usagef(cmd, "--gateway: %s", msg)
	}
	return gateway.Key(t.name), nil
}

// missing is the message for a gateway without a document.
func (t *routesTarget) missing() string {
	flag := ""
	if t.name != "default" {
		flag = " --gateway " + t.name
	}
	return fmt.Sprintf("no routing document for gateway %q yet: apply one with 'meridian routes apply%s -f routes.yaml'", t.name, flag)
}

func (t *routesTarget) readOp() op {
	return op{action: fmt.Sprintf("read the routing document of gateway %q", t.name), notFound: t.missing()}
}

func (t *routesTarget) writeOp(key string) op {
	return op{action: fmt.Sprintf("write the routing document of gateway %q", t.name), notFound: t.missing(), key: key}
}

// noRevision is the message for a revision that is not one of the
// document's, or has no value (it deleted the key).
func (t *routesTarget) noRevision(rev uint64) string {
	return fmt.Sprintf("revision %d is not a routing document of gateway %q (see 'meridian routes history')", rev, t.name)
}

// parseStored validates a stored revision as the gateway does. A revision
// it refuses is an error listing every problem on one line: the gateway
// keeps serving the last valid revision it applied.
func (t *routesTarget) parseStored(e *meridian.ConfigEntry) (*gateway.Config, error) {
	cfg, err := gateway.Parse(e.Format, []byte(e.Value))
	if err != nil {
		return nil, fmt.Errorf("revision %d of gateway %q's routing document is not valid, so the gateway does not serve it: %s",
			e.Revision, t.name, strings.Join(problems(err), "; "))
	}
	return cfg, nil
}

func newRoutesCmd(e *env, g *globals) *cobra.Command {
	t := &routesTarget{}
	cmd := &cobra.Command{
		Use:   "routes",
		Short: "Manage a gateway's routing document in the config center",
		Long: "A gateway ('meridian gateway --name NAME') serves the routing document at the\n" +
			"config key meridian/gateway/<NAME>/routes and follows its revisions. These\n" +
			"commands work on that key for --gateway: 'apply' validates a document as the\n" +
			"gateway will before writing it, and the control plane refuses one that does\n" +
			"not validate.",
		Example: "  meridian routes validate -f routes.yaml\n" +
			"  meridian routes apply -f routes.yaml -m 'canary for orders v2'\n" +
			"  meridian routes ls\n" +
			"  meridian routes get orders -o json\n" +
			"  meridian routes history\n" +
			"  meridian routes rollback 41 -m 'the canary fails'",
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	cmd.AddCommand(newRoutesValidateCmd(e))
	// Every command but validate works on one gateway's key.
	for _, sub := range []*cobra.Command{
		newRoutesLsCmd(e, g, t), newRoutesGetCmd(e, g, t), newRoutesApplyCmd(e, g, t),
		newRoutesHistoryCmd(e, g, t), newRoutesRollbackCmd(e, g, t),
	} {
		sub.Flags().StringVar(&t.name, "gateway", envOr(e.getenv, "MERIDIAN_GATEWAY_NAME", "default"),
			"the gateway's name: its document is meridian/gateway/<name>/routes (env MERIDIAN_GATEWAY_NAME)")
		cmd.AddCommand(sub)
	}
	return cmd
}

// routesDoc is what ls prints: the document's revision and its routes.
type routesDoc struct {
	Gateway  string                `json:"gateway"`
	Key      string                `json:"key"`
	Revision uint64                `json:"revision"`
	Format   meridian.ConfigFormat `json:"format"`
	Author   string                `json:"author"`
	Message  string                `json:"message,omitempty"`
	Time     time.Time             `json:"time"`
	Routes   []gateway.Route       `json:"routes"`
}

func newRoutesLsCmd(e *env, g *globals, t *routesTarget) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the routes of the gateway's routing document",
		Long: "List the routes of the latest revision: what each matches, where it sends\n" +
			"requests, what callers must present and the policies it names. -o json prints\n" +
			"the revision and the routes as the document has them.",
		Args: argsBetween(0, 0, ""),
	}
	return readCmd(e, g, cmd,
		func(ctx context.Context, c *client.Client, _ []string) (routesDoc, op, error) {
			key, err := t.key(cmd)
			if err != nil {
				return routesDoc{}, op{}, err
			}
			en, err := c.GetConfig(ctx, key, 0)
			if err != nil {
				return routesDoc{}, t.readOp(), err
			}
			cfg, err := t.parseStored(en)
			if err != nil {
				return routesDoc{}, op{}, err
			}
			return routesDoc{Gateway: t.name, Key: key, Revision: en.Revision, Format: en.Format,
				Author: en.Author, Message: en.Message, Time: en.Time, Routes: cfg.Routes}, op{}, nil
		},
		func(w io.Writer, d routesDoc) error {
			head := fmt.Sprintf("revision %d of gateway %q's routes, by %s at %s", d.Revision, d.Gateway, d.Author, timeCell(d.Time))
			if d.Message != "" {
				head += ": " + d.Message
			}
			fmt.Fprintln(w, head)
			tb := newTable(w, "NAME", "MATCH", "UPSTREAM", "AUTH", "POLICIES")
			for _, r := range d.Routes {
				tb.row(r.Name, matchCell(r.Match), upstreamCell(&r), authCell(&r), policiesCell(&r))
			}
			return tb.flush()
		})
}

// matchCell shows a match compactly: methods, then hosts and path
// ({a,b} for several hosts, /prefix/* for a prefix, /* for any path),
// then header and query conditions.
func matchCell(m gateway.Match) string {
	var parts []string
	if len(m.Methods) > 0 {
		parts = append(parts, strings.Join(m.Methods, ","))
	}
	where := ""
	switch len(m.Hosts) {
	case 0:
	case 1:
		where = m.Hosts[0]
	default:
		where = "{" + strings.Join(m.Hosts, ",") + "}"
	}
	switch {
	case m.Path != "":
		where += m.Path
	case m.PathPrefix != "":
		where += strings.TrimSuffix(m.PathPrefix, "/") + "/*"
	default:
		where += "/*"
	}
	parts = append(parts, where)
	for _, c := range []struct {
		kind string
		kv   map[string]string
	}{{"header", m.Headers}, {"query", m.Query}} {
		for _, k := range slices.Sorted(maps.Keys(c.kv)) {
			if v := c.kv[k]; v == "*" {
				parts = append(parts, c.kind+":"+k)
			} else {
				parts = append(parts, c.kind+":"+k+"="+v)
			}
		}
	}
	return strings.Join(parts, " ")
}

// upstreamCell shows where a route sends requests: service[subset], the
// URLs, a split as backend:weight pairs (a backend chosen by a condition
// is marked "+when"), or aggregate(number of branches).
func upstreamCell(r *gateway.Route) string {
	switch {
	case r.Upstream != nil:
		return upstreamName(r.Upstream)
	case len(r.Split) > 0:
		parts := make([]string, len(r.Split))
		for i := range r.Split {
			b := &r.Split[i]
			parts[i] = fmt.Sprintf("%s:%d", upstreamName(&b.Upstream), b.Weight)
			if b.When != nil {
				parts[i] += "+when"
			}
		}
		return strings.Join(parts, ",")
	case r.Aggregate != nil:
		return fmt.Sprintf("aggregate(%d)", len(r.Aggregate.Branches))
	}
	return ""
}

func upstreamName(u *gateway.Upstream) string {
	if u.Service == "" {
		return strings.Join(u.URLs, ",")
	}
	if len(u.Subset) == 0 {
		return u.Service
	}
	kv := make([]string, 0, len(u.Subset))
	for _, k := range slices.Sorted(maps.Keys(u.Subset)) {
		kv = append(kv, k+"="+u.Subset[k])
	}
	return u.Service + "[" + strings.Join(kv, ",") + "]"
}

// authCell is empty for a public route, else its requirement in short,
// as its JSON says it ("required" when that names nothing more).
func authCell(r *gateway.Route) string {
	if r.Auth == nil {
		return ""
	}
	if s := compactJSON(r.Auth); s != "" {
		return s
	}
	return "required"
}

// policiesCell shows the policies a route names, layer=name, and its edge
// rate limit; empty when it takes the document's defaults.
func policiesCell(r *gateway.Route) string {
	s := compactJSON(r.Policies)
	if r.RateLimit != "" {
		if s != "" {
			s += ","
		}
		s += "edge_rate_limit=" + r.RateLimit
	}
	return s
}

// compactJSON shows v's JSON on one short line, members in their order:
// key=value separated by ",", nested objects in parentheses, array items
// joined by "|", strings unquoted. An empty object shows as "".
func compactJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return "?"
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var sb strings.Builder
	writeCompact(dec, &sb, true)
	return sb.String()
}

func writeCompact(dec *json.Decoder, sb *strings.Builder, top bool) {
	tok, err := dec.Token()
	if err != nil {
		return
	}
	switch t := tok.(type) {
	case json.Delim:
		if t == '{' {
			if !top {
				sb.WriteByte('(')
			}
			for i := 0; dec.More(); i++ {
				k, _ := dec.Token()
				if i > 0 {
					sb.WriteByte(',')
				}
				fmt.Fprintf(sb, "%v=", k)
				writeCompact(dec, sb, false)
			}
			if !top {
				sb.WriteByte(')')
			}
		} else { // '['
			for i := 0; dec.More(); i++ {
				if i > 0 {
					sb.WriteByte('|')
				}
				writeCompact(dec, sb, false)
			}
		}
		_, _ = dec.Token() // the closing delimiter
	case nil:
		sb.WriteString("null")
	default: // string, json.Number, bool
		fmt.Fprint(sb, t)
	}
}

func newRoutesGetCmd(e *env, g *globals, t *routesTarget) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "get [NAME]",
		Short: "Print one route, or the whole routing document as stored",
		Long: "With NAME, print that route of the latest revision as YAML (-o json: as JSON).\n" +
			"Without, print the document exactly as stored; -o json prints its whole entry\n" +
			"(revision, format, author, message, time), as 'meridian config get -o json' does.",
		Args: argsBetween(0, 1, "[NAME]"),
	}
	out := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		key, err := t.key(cmd)
		if err != nil {
			return err
		}
		c, err := g.client(cmd)
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		en, err := c.GetConfig(ctx, key, 0)
		if err != nil {
			return g.explain(ctx, c, err, t.readOp())
		}
		if len(args) == 0 {
			if *out == outJSON {
				return writeJSON(e.stdout, en)
			}
			_, err = io.WriteString(e.stdout, withNewline(en.Value))
			return err
		}
		cfg, err := t.parseStored(en)
		if err != nil {
			return err
		}
		i := slices.IndexFunc(cfg.Routes, func(r gateway.Route) bool { return r.Name == args[0] })
		if i < 0 {
			return fmt.Errorf("gateway %q has no route %q in revision %d (see 'meridian routes ls')", t.name, args[0], en.Revision)
		}
		if *out == outJSON {
			return writeJSON(e.stdout, cfg.Routes[i])
		}
		// JSON is the document's canonical form: YAML is made from it, so
		// both show the same fields in the same order.
		b, err := json.Marshal(cfg.Routes[i])
		if err == nil {
			b, err = yaml.JSONToYAML(b)
		}
		if err != nil {
			return fmt.Errorf("route %q: %w", args[0], err)
		}
		_, err = e.stdout.Write(b)
		return err
	}
	return cmd
}

// routesInput is a routing document read from a file and validated.
type routesInput struct {
	value  string
	format meridian.ConfigFormat
	cfg    *gateway.Config
}

// addRoutesFileFlags adds -f/--file (required) and --format.
func addRoutesFileFlags(cmd *cobra.Command) (file, format *string) {
	file, format = new(string), new(string)
	f := cmd.Flags()
	f.StringVarP(file, "file", "f", "", "the routing document, YAML or JSON (- for stdin)")
	f.StringVar(format, "format", "", "yaml or json (default: from the file's extension, else yaml)")
	_ = cmd.MarkFlagRequired("file")
	return file, format
}

// readRoutesInput reads and validates the document in file. Each problem
// goes to stderr on its own line, "FILE: FIELD: MESSAGE" (a decoding error
// names the line instead of a field); the error returned counts them.
func readRoutesInput(e *env, cmd *cobra.Command, file, format string) (*routesInput, error) {
	in := &routesInput{format: meridian.ConfigFormat(format)}
	switch in.format {
	case meridian.FormatYAML, meridian.FormatJSON:
	case "":
		// YAML reads JSON too: a file whose extension says nothing is
		// stored as YAML and still read as it is written.
		if in.format = formatOf(file); in.format == "" {
			in.format = meridian.FormatYAML
		}
	default:
		return nil, usagef(cmd, "--format %q: a routing document is yaml or json", format)
	}
	value, err := valueFrom(e, cmd, nil, file, "", "--file", true)
	if err != nil {
		return nil, err
	}
	in.value = value
	name := file
	if file == "-" {
		name = "stdin"
	}
	in.cfg, err = gateway.Parse(in.format, []byte(value))
	if err == nil && in.format == meridian.FormatJSON {
		// The gateway's decoder reads YAML for either format; the control
		// plane stores a json value only if it is JSON.
		err = checkJSON(value)
	}
	if err != nil {
		ps := problems(err)
		for _, p := range ps {
			fmt.Fprintf(e.stderr, "%s: %s\n", name, p)
		}
		return nil, fmt.Errorf("%s is not a valid routing document: %s", name, plural(len(ps), "problem"))
	}
	return in, nil
}

// checkJSON reports where value stops being JSON, by line and column.
func checkJSON(value string) error {
	var raw json.RawMessage
	err := json.Unmarshal([]byte(value), &raw)
	if err == nil {
		return nil
	}
	var syn *json.SyntaxError
	if !errors.As(err, &syn) {
		return fmt.Errorf("not valid JSON: %v", err)
	}
	before := value[:min(max(syn.Offset-1, 0), int64(len(value)))]
	line := strings.Count(before, "\n") + 1
	col := len(before) - strings.LastIndexByte(before, '\n')
	return fmt.Errorf("line %d, column %d: not valid JSON (%v); is it YAML? then name the file .yaml or give --format yaml", line, col, err)
}

// problems lists the problems of a validation error, one "field: message"
// each; joined errors are several. Only the message is shown, not the
// cause: the messages are written for users.
func problems(err error) []string {
	var out []string
	for _, me := range meridian.Problems(err) {
		if me.Field == "" {
			out = append(out, me.Message)
		} else {
			out = append(out, me.Field+": "+me.Message)
		}
	}
	return out
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func newRoutesValidateCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "validate -f FILE",
		Short: "Check a routing document as the gateway will, without writing it",
		Long: "Decode FILE strictly and validate all of it, as 'apply' and the gateway do;\n" +
			"nothing is sent to the control plane. Prints \"ok: N routes\", or each problem\n" +
			"on its own line on stderr (route and field, or the line of a decoding error)\n" +
			"and exits 1.",
		Args: argsBetween(0, 0, ""),
	}
	file, format := addRoutesFileFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		in, err := readRoutesInput(e, cmd, *file, *format)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(e.stdout, "ok: %s\n", plural(len(in.cfg.Routes), "route"))
		return err
	}
	return cmd
}

func newRoutesApplyCmd(e *env, g *globals, t *routesTarget) *cobra.Command {
	var (
		message  string
		expectRv uint64
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Validate a routing document and write it as the gateway's new revision",
		Long: "Validate FILE as 'validate' does; if it has problems, print them and exit 1\n" +
			"without writing anything. Else write it, in its format, as the new revision of\n" +
			"the gateway's document, and print the revision and what changed against the\n" +
			"revision it replaces: routes added, removed and changed, by name, and the\n" +
			"document's other settings (policies, auth, …). Gateways following the key\n" +
			"switch to it without dropping requests. --expect-revision N writes only if\n" +
			"the latest revision is N (0: only if the gateway has no document yet).",
		Example: "  meridian routes apply -f routes.yaml -m 'orders v2 canary at 10%'\n" +
			"  meridian routes apply --gateway edge -f routes.json --expect-revision 41",
		Args: argsBetween(0, 0, ""),
	}
	file, format := addRoutesFileFlags(cmd)
	f := cmd.Flags()
	f.StringVarP(&message, "message", "m", "", "a note kept with the revision")
	f.Uint64Var(&expectRv, "expect-revision", 0, "write only if the latest revision is this one (0: only if there is no document yet)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		key, err := t.key(cmd)
		if err != nil {
			return err
		}
		in, err := readRoutesInput(e, cmd, *file, *format)
		if err != nil {
			return err
		}
		c, err := g.client(cmd)
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		prev, err := t.latest(ctx, c, key)
		if err != nil {
			return g.explain(ctx, c, err, t.readOp())
		}
		req := client.PutConfigRequest{Value: in.value, Format: in.format, Message: message}
		if cmd.Flags().Changed("expect-revision") {
			req.ExpectRevision = &expectRv
		}
		en, err := c.PutConfig(ctx, key, req)
		if err != nil {
			return g.explain(ctx, c, err, t.writeOp(key))
		}
		fmt.Fprintf(e.stdout, "applied revision %d of gateway %q's routes (%s)\n", en.Revision, t.name, key)
		_, err = fmt.Fprintln(e.stdout, t.changes(prev, in.cfg))
		return err
	}
	return cmd
}

// latest returns the document's latest revision, nil when there is none.
func (t *routesTarget) latest(ctx context.Context, c *client.Client, key string) (*meridian.ConfigEntry, error) {
	en, err := c.GetConfig(ctx, key, 0)
	if meridian.IsCode(err, meridian.CodeNotFound) {
		return nil, nil
	}
	return en, err
}

// changes says in one line how next differs from the revision prev (nil:
// there was none): routes added, changed and removed by name, whether the
// order of the others changed, and which other settings changed.
func (t *routesTarget) changes(prev *meridian.ConfigEntry, next *gateway.Config) string {
	names := func(rs []gateway.Route) []string {
		out := make([]string, len(rs))
		for i, r := range rs {
			out[i] = r.Name
		}
		return out
	}
	if prev == nil {
		return fmt.Sprintf("first document of gateway %q: %s: %s", t.name, plural(len(next.Routes), "route"), strings.Join(names(next.Routes), ", "))
	}
	old, err := gateway.Parse(prev.Format, []byte(prev.Value))
	if err != nil {
		return fmt.Sprintf("replaces revision %d, which was not a valid document: %s", prev.Revision, plural(len(next.Routes), "route"))
	}
	before := map[string]string{}
	for _, r := range old.Routes {
		before[r.Name] = canonical(r)
	}
	var added, changed, removed, kept []string
	for _, r := range next.Routes {
		was, ok := before[r.Name]
		switch {
		case !ok:
			added = append(added, r.Name)
		case was != canonical(r):
			changed = append(changed, r.Name)
		default:
			kept = append(kept, r.Name)
		}
		delete(before, r.Name)
	}
	for _, r := range old.Routes {
		if _, ok := before[r.Name]; ok {
			removed = append(removed, r.Name)
		}
	}
	var parts []string
	for _, p := range []struct {
		what  string
		names []string
	}{{"added", added}, {"changed", changed}, {"removed", removed}} {
		if len(p.names) > 0 {
			parts = append(parts, p.what+" "+strings.Join(p.names, ", "))
		}
	}
	// Routes that match equally are tried in the order written.
	if !slices.Equal(without(names(old.Routes), removed), without(names(next.Routes), added)) {
		parts = append(parts, "routes reordered")
	}
	if s := settingsChanged(old, next); len(s) > 0 {
		parts = append(parts, strings.Join(s, ", ")+" changed")
	}
	if len(parts) == 0 {
		return fmt.Sprintf("since revision %d: no change", prev.Revision)
	}
	if len(kept) > 0 {
		parts = append(parts, fmt.Sprintf("%d unchanged", len(kept)))
	}
	return fmt.Sprintf("since revision %d: %s", prev.Revision, strings.Join(parts, "; "))
}

func without(s, drop []string) []string {
	return slices.DeleteFunc(s, func(n string) bool { return slices.Contains(drop, n) })
}

// canonical is a route's JSON, the document's canonical form: two routes
// are the same when it is.
func canonical(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// settingsChanged names the top-level members of the document, routes
// aside, whose JSON differs between a and b.
func settingsChanged(a, b *gateway.Config) []string {
	members := func(c *gateway.Config) map[string]string {
		c2 := *c
		c2.Routes = nil
		var m map[string]json.RawMessage
		_ = json.Unmarshal([]byte(canonical(c2)), &m)
		out := map[string]string{}
		for k, v := range m {
			if k != "routes" {
				out[k] = string(v)
			}
		}
		return out
	}
	ma, mb := members(a), members(b)
	var out []string
	for k := range ma {
		if ma[k] != mb[k] {
			out = append(out, k)
		}
	}
	for k := range mb {
		if _, ok := ma[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// routesRevision is one line of history.
type routesRevision struct {
	Revision uint64                `json:"revision"`
	Time     time.Time             `json:"time"`
	Author   string                `json:"author,omitempty"`
	Message  string                `json:"message,omitempty"`
	Format   meridian.ConfigFormat `json:"format,omitempty"`
	// Deleted marks the revision that deleted the document.
	Deleted bool `json:"deleted,omitempty"`
	// Valid tells whether the revision validates now: only a valid one
	// can be rolled back to.
	Valid  bool `json:"valid"`
	Routes int  `json:"routes"`
}

type routesHistory struct {
	Gateway   string           `json:"gateway"`
	Key       string           `json:"key"`
	Revisions []routesRevision `json:"revisions"`
}

func newRoutesHistoryCmd(e *env, g *globals, t *routesTarget) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "history",
		Short: "List the revisions of the gateway's routing document, oldest first",
		Long: "List every kept revision with its time, author, message and number of routes.\n" +
			"ROUTES says \"invalid\" for a revision that does not validate now (it cannot\n" +
			"be rolled back to) and \"-\" for one that deleted the document.",
		Args: argsBetween(0, 0, ""),
	}
	return readCmd(e, g, cmd,
		func(ctx context.Context, c *client.Client, _ []string) (routesHistory, op, error) {
			key, err := t.key(cmd)
			if err != nil {
				return routesHistory{}, op{}, err
			}
			es, err := c.ConfigHistory(ctx, key)
			if err != nil {
				return routesHistory{}, t.readOp(), err
			}
			h := routesHistory{Gateway: t.name, Key: key, Revisions: make([]routesRevision, len(es))}
			for i, en := range es {
				r := routesRevision{Revision: en.Revision, Time: en.Time, Author: en.Author, Message: en.Message,
					Format: en.Format, Deleted: en.Deleted}
				if !en.Deleted {
					if cfg, err := gateway.Parse(en.Format, []byte(en.Value)); err == nil {
						r.Valid, r.Routes = true, len(cfg.Routes)
					}
				}
				h.Revisions[i] = r
			}
			return h, op{}, nil
		},
		func(w io.Writer, h routesHistory) error {
			tb := newTable(w, "REV", "TIME", "AUTHOR", "MESSAGE", "ROUTES")
			for _, r := range h.Revisions {
				routes, msg := u64(uint64(r.Routes)), r.Message
				switch {
				case r.Deleted:
					routes, msg = "", "(deleted)"
				case !r.Valid:
					routes = "invalid"
				}
				tb.row(u64(r.Revision), timeCell(r.Time), r.Author, msg, routes)
			}
			return tb.flush()
		})
}

func newRoutesRollbackCmd(e *env, g *globals, t *routesTarget) *cobra.Command {
	var message string
	cmd := &cobra.Command{
		Use:   "rollback REV",
		Short: "Make a past revision of the routing document the latest again",
		Long: "Check that revision REV validates now (a document valid under an older version\n" +
			"of the gateway may not be; its problems are printed, one a line, and nothing is\n" +
			"written), then write its value again as a new revision and print what changed.",
		Args: argsBetween(1, 1, "REV"),
	}
	cmd.Flags().StringVarP(&message, "message", "m", "", "a note kept with the new revision (default \"rollback to revision REV\")")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		rev, err := parseRevision(cmd, "REV", args[0])
		if err != nil {
			return err
		}
		key, err := t.key(cmd)
		if err != nil {
			return err
		}
		c, err := g.client(cmd)
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		old, err := c.GetConfig(ctx, key, rev)
		if err != nil {
			o := t.readOp()
			o.notFound = t.noRevision(rev)
			return g.explain(ctx, c, err, o)
		}
		cfg, err := gateway.Parse(old.Format, []byte(old.Value))
		if err != nil {
			ps := problems(err)
			for _, p := range ps {
				fmt.Fprintf(e.stderr, "revision %d: %s\n", rev, p)
			}
			return fmt.Errorf("revision %d of gateway %q's routing document is not valid now (%s); nothing was rolled back",
				rev, t.name, plural(len(ps), "problem"))
		}
		prev, err := t.latest(ctx, c, key)
		if err != nil {
			return g.explain(ctx, c, err, t.readOp())
		}
		en, err := c.RollbackConfig(ctx, key, rev, message)
		if err != nil {
			o := t.writeOp(key)
			o.notFound = t.noRevision(rev)
			return g.explain(ctx, c, err, o)
		}
		fmt.Fprintf(e.stdout, "rolled gateway %q's routes back to revision %d: now revision %d\n", t.name, rev, en.Revision)
		_, err = fmt.Fprintln(e.stdout, t.changes(prev, cfg))
		return err
	}
	return cmd
}
