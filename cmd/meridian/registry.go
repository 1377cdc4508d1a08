package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meridian-platform/meridian"
	"github.com/meridian-platform/meridian/client"
)

func newServicesCmd(e *env, g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "services",
		Short: "List the registered services",
		Args:  argsBetween(0, 0, ""),
	}
	out := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := g.client(cmd)
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		svcs, index, err := c.Services(ctx)
		if err != nil {
			return g.explain(ctx, c, err, op{action: "list services"})
		}
		if *out == outJSON {
			return writeJSON(e.stdout, struct {
				Index    uint64                    `json:"index"`
				Services []meridian.ServiceSummary `json:"services"`
			}{index, orEmpty(svcs)})
		}
		t := newTable(e.stdout, "NAME", "INSTANCES", "PASSING", "WARNING", "CRITICAL", "VERSIONS")
		for _, s := range svcs {
			t.row(s.Name, strconv.Itoa(s.Instances),
				strconv.Itoa(s.ByStatus[string(meridian.StatusPassing)]),
				strconv.Itoa(s.ByStatus[string(meridian.StatusWarning)]),
				strconv.Itoa(s.ByStatus[string(meridian.StatusCritical)]),
				strings.Join(s.Versions, ","))
		}
		return t.flush()
	}
	return cmd
}

func newInstancesCmd(e *env, g *globals) *cobra.Command {
	var q client.InstancesQuery
	cmd := &cobra.Command{
		Use:   "instances SERVICE",
		Short: "List a service's instances and their health",
		Long: "List a service's instances, critical ones included with the reason.\n" +
			"--healthy lists only those discovery serves. --index N makes it a blocking\n" +
			"query: it answers when the service changes after index N, or after --wait.",
		Args: argsBetween(1, 1, "SERVICE"),
	}
	out := addOutputFlag(cmd)
	f := cmd.Flags()
	f.BoolVar(&q.Healthy, "healthy", false, "only instances discovery serves (passing or warning)")
	f.Uint64Var(&q.Index, "index", 0, "block until the service changes after this index")
	f.DurationVar(&q.Wait, "wait", 0, "how long a blocking query waits at most (server default; at most 5m)")
	f.BoolVar(&q.Stale, "stale", false, "let any replica answer without catching up first")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		service := args[0]
		c, err := g.client(cmd)
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		insts, index, err := c.Instances(ctx, service, q)
		if err != nil {
			return g.explain(ctx, c, err, op{action: fmt.Sprintf("list the instances of service %q", service)})
		}
		if *out == outJSON {
			return writeJSON(e.stdout, struct {
				Index     uint64              `json:"index"`
				Instances []meridian.Instance `json:"instances"`
			}{index, orEmpty(insts)})
		}
		t := newTable(e.stdout, "ID", "ADDRESS", "PROTOCOL", "VERSION", "ZONE", "WEIGHT", "STATUS", "OUTPUT")
		for _, in := range insts {
			t.row(in.ID, in.HostPort(), string(in.Protocol), in.Version, in.Zone,
				strconv.Itoa(in.Weight), string(in.Health.Status), in.Health.Output)
		}
		return t.flush()
	}
	return cmd
}

func newRegisterCmd(e *env, g *globals) *cobra.Command {
	var (
		in        meridian.Instance
		ttl       time.Duration
		meta      []string
		check     meridian.CheckSpec
		interval  time.Duration
		timeout   time.Duration
		heartbeat bool
	)
	cmd := &cobra.Command{
		Use:   "register --service NAME --port PORT [flags]",
		Short: "Register a service instance",
		Long: "Register (or re-register) a service instance.\n\n" +
			"With --heartbeat the command keeps running, renews the lease every ttl/3 and\n" +
			"deregisters the instance when interrupted: a way to register services that\n" +
			"do not use the Go SDK from a shell script.",
		Example: "  meridian register --service orders --port 8080 --ttl 10s --heartbeat\n" +
			"  meridian register --service orders --port 8080 --check http --check-target /healthz --meta team=checkout",
		Args: argsBetween(0, 0, ""),
	}
	f := cmd.Flags()
	f.StringVar(&in.Service, "service", "", "service name (required)")
	f.StringVar(&in.ID, "id", "", "instance id (default <service>-<hostname>-<port>)")
	f.StringVar(&in.Address, "address", "127.0.0.1", "address other services dial")
	f.IntVar(&in.Port, "port", 0, "port other services dial (required)")
	f.StringVar((*string)(&in.Protocol), "protocol", "", "http, grpc or tcp (server default http)")
	f.StringVar(&in.Version, "version", "", "the instance's version, e.g. 1.4.2")
	f.StringVar(&in.Zone, "zone", "", "the instance's zone, e.g. eu-west-1a")
	f.IntVar(&in.Weight, "weight", 0, "load-balancing weight, 1-10000 (server default 100)")
	f.StringArrayVar(&in.Tags, "tag", nil, "a tag (repeatable)")
	f.StringArrayVar(&meta, "meta", nil, "metadata as key=value (repeatable)")
	f.DurationVar(&ttl, "ttl", 0, "lease: the instance is removed after this long without a heartbeat (0: no lease)")
	f.StringVar((*string)(&check.Kind), "check", "", "active health check the control plane runs: http, tcp or grpc")
	f.StringVar(&check.Target, "check-target", "", "what the check probes: an http path or URL, or host:port (default: the instance)")
	f.DurationVar(&interval, "check-interval", 0, "time between probes (server default 10s)")
	f.DurationVar(&timeout, "check-timeout", 0, "timeout of one probe (server default 2s)")
	f.IntVar(&check.SuccessesBeforePassing, "check-successes", 0, "consecutive successes before passing (server default 1)")
	f.IntVar(&check.FailuresBeforeCritical, "check-failures", 0, "consecutive failures before critical (server default 3)")
	f.BoolVar(&heartbeat, "heartbeat", false, "keep running, heartbeat every ttl/3, deregister when interrupted (needs --ttl)")
	_ = cmd.MarkFlagRequired("service")
	_ = cmd.MarkFlagRequired("port")

	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		md, err := parseMeta(meta)
		if err != nil {
			return usagef(cmd, "%v", err)
		}
		in.Metadata = md
		in.TTL = meridian.Duration(ttl)
		if check.Kind != "" {
			check.Interval, check.Timeout = meridian.Duration(interval), meridian.Duration(timeout)
			in.Check = &check
		} else {
			for _, name := range []string{"check-target", "check-interval", "check-timeout", "check-successes", "check-failures"} {
				if cmd.Flags().Changed(name) {
					return usagef(cmd, "--%s needs --check http|tcp|grpc", name)
				}
			}
		}
		if heartbeat && ttl <= 0 {
			return usagef(cmd, "--heartbeat needs --ttl, the lease it renews")
		}
		if in.ID == "" {
			host, err := os.Hostname()
			if err != nil || host == "" {
				host = "localhost"
			}
			in.ID = fmt.Sprintf("%s-%s-%d", in.Service, host, in.Port)
		}
		c, err := g.client(cmd)
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		regOp := op{action: fmt.Sprintf("register instances of service %q", in.Service)}
		stored, err := c.Register(ctx, &in)
		if err != nil {
			return g.explain(ctx, c, err, regOp)
		}
		fmt.Fprintf(e.stdout, "registered %s/%s at %s (revision %d)\n", stored.Service, stored.ID, stored.HostPort(), stored.Revision)
		if !heartbeat {
			return nil
		}
		return keepAlive(ctx, e, g, c, &in, regOp)
	}
	return cmd
}

// keepAlive heartbeats in every ttl/3 until ctx ends, then deregisters it.
// A lease that expired anyway (the machine slept, the control plane was
// unreachable for longer than the ttl) is renewed by registering again.
func keepAlive(ctx context.Context, e *env, g *globals, c *client.Client, in *meridian.Instance, regOp op) error {
	every := in.TTL.D() / 3
	fmt.Fprintf(e.stderr, "heartbeating every %s; interrupt to deregister\n", every)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := c.Deregister(dctx, in.Service, in.ID); err != nil && !meridian.IsCode(err, meridian.CodeNotFound) {
				return g.explain(dctx, c, err, op{action: fmt.Sprintf("deregister instances of service %q", in.Service)})
			}
			fmt.Fprintf(e.stdout, "deregistered %s/%s\n", in.Service, in.ID)
			return nil
		case <-tick.C:
		}
		err := c.Heartbeat(ctx, in.Service, in.ID)
		if meridian.IsCode(err, meridian.CodeNotFound) {
			fmt.Fprintf(e.stderr, "meridian: the lease of %s/%s expired; registering again\n", in.Service, in.ID)
			_, err = c.Register(ctx, in)
		}
		switch {
		case err == nil || ctx.Err() != nil:
		case meridian.IsCode(err, meridian.CodeUnauthorized), meridian.IsCode(err, meridian.CodeForbidden),
			meridian.IsCode(err, meridian.CodeInvalid):
			return g.explain(ctx, c, err, regOp) // retrying cannot fix these
		default:
			fmt.Fprintf(e.stderr, "meridian: heartbeat failed: %v; retrying\n", g.explain(ctx, c, err, regOp))
		}
	}
}

// parseMeta reads repeated key=value flags.
func parseMeta(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	md := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--meta %q: want key=value", kv)
		}
		md[k] = v
	}
	return md, nil
}

func newDeregisterCmd(e *env, g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "deregister SERVICE ID",
		Short: "Remove a service instance",
		Args:  argsBetween(2, 2, "SERVICE ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			service, id := args[0], args[1]
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if err := c.Deregister(ctx, service, id); err != nil {
				return g.explain(ctx, c, err, op{
					action:   fmt.Sprintf("deregister instances of service %q", service),
					notFound: fmt.Sprintf("instance %q of service %q is not registered (see 'meridian instances %s')", id, service, service),
				})
			}
			fmt.Fprintf(e.stdout, "deregistered %s/%s\n", service, id)
			return nil
		},
	}
}

func newHeartbeatCmd(e *env, g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "heartbeat SERVICE ID",
		Short: "Renew a service instance's lease once",
		Args:  argsBetween(2, 2, "SERVICE ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			service, id := args[0], args[1]
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if err := c.Heartbeat(ctx, service, id); err != nil {
				return g.explain(ctx, c, err, op{
					action:   fmt.Sprintf("heartbeat instances of service %q", service),
					notFound: fmt.Sprintf("instance %q of service %q is not registered (its lease expired, or it never was): register it again", id, service),
				})
			}
			fmt.Fprintf(e.stdout, "renewed the lease of %s/%s\n", service, id)
			return nil
		},
	}
}
