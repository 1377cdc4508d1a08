package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/meridian-platform/meridian"
)

func newTokenCmd(e *env, g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke API tokens (admin)",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	cmd.AddCommand(newTokenCreateCmd(e, g), newTokenLsCmd(e, g), newTokenRevokeCmd(e, g))
	return cmd
}

func newTokenCreateCmd(e *env, g *globals) *cobra.Command {
	var role, service string
	cmd := &cobra.Command{
		Use:   "create NAME --role admin|operator|viewer|service [--service S]",
		Short: "Create a token and print its secret (shown this once)",
		Long: "Create a token. In text mode the secret alone goes to stdout, so\n" +
			"TOKEN=$(meridian token create ci --role viewer) captures it.\n\n" +
			"Roles: admin may do everything; operator reads and writes the registry and\n" +
			"config; viewer only reads; service (with --service) registers that service's\n" +
			"instances, discovers others and reads config keys naming the service.",
		Args: argsBetween(1, 1, "NAME --role ROLE"),
	}
	out := addOutputFlag(cmd)
	cmd.Flags().StringVar(&role, "role", "", "admin, operator, viewer or service (required)")
	cmd.Flags().StringVar(&service, "service", "", "the service a service-role token acts for")
	_ = cmd.MarkFlagRequired("role")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		name := args[0]
		c, err := g.client(cmd)
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		secret, tok, err := c.CreateToken(ctx, name, meridian.Role(role), service)
		if err != nil {
			return g.explain(ctx, c, err, op{
				action:   "create tokens",
				conflict: fmt.Sprintf("token %q already exists (revoke it first with 'meridian token revoke %s')", name, name),
			})
		}
		if *out == outJSON {
			return writeJSON(e.stdout, struct {
				meridian.Token
				Secret string `json:"secret"`
			}{*tok, secret})
		}
		fmt.Fprintln(e.stdout, secret)
		fmt.Fprintf(e.stderr, "created token %q (role %s); its secret is shown only this once\n", tok.Name, tok.Role)
		return nil
	}
	return cmd
}

func newTokenLsCmd(e *env, g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the tokens (never their secrets)",
		Args:    argsBetween(0, 0, ""),
	}
	out := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := g.client(cmd)
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		toks, err := c.Tokens(ctx)
		if err != nil {
			return g.explain(ctx, c, err, op{action: "list tokens"})
		}
		if *out == outJSON {
			return writeJSON(e.stdout, struct {
				Tokens []meridian.Token `json:"tokens"`
			}{orEmpty(toks)})
		}
		t := newTable(e.stdout, "NAME", "ROLE", "SERVICE", "CREATED", "CREATED BY")
		for _, tok := range toks {
			t.row(tok.Name, string(tok.Role), tok.Service, timeCell(tok.CreatedAt), tok.CreatedBy)
		}
		return t.flush()
	}
	return cmd
}

func newTokenRevokeCmd(e *env, g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke a token",
		Args:  argsBetween(1, 1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if err := c.RevokeToken(ctx, name); err != nil {
				return g.explain(ctx, c, err, op{
					action:   "revoke tokens",
					notFound: fmt.Sprintf("token %q not found (see 'meridian token ls')", name),
				})
			}
			fmt.Fprintf(e.stdout, "revoked token %q\n", name)
			return nil
		},
	}
}
