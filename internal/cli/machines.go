package cli

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/warderhq/warder/internal/client"
)

func (e *env) machineCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "machine", Short: "Manage machines: workloads that log in with a role id and a secret id"}
	cmd.AddCommand(e.machineCreateCommand(), e.machineListCommand(), e.machineIssueSecretCommand(), e.machineLoginCommand())
	return cmd
}

func (e *env) machineCreateCommand() *cobra.Command {
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a machine and print its role id",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if ttl < 0 {
				return usageError{errors.New("--token-ttl must not be negative")}
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			m, err := c.CreateMachine(cmd.Context(), args[0], ttl)
			if err != nil {
				return err
			}
			return e.print(m, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "Name\t%s\nRole ID\t%s\nToken TTL\t%s\nCreated\t%s\n", m.Name, m.RoleID, m.TokenTTL, when(m.CreatedAt))
			})
		},
	}
	cmd.Flags().DurationVar(&ttl, "token-ttl", 0, "lifetime of the machine's tokens, such as 20m (default: the server's)")
	return cmd
}

func (e *env) machineListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List machines",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			ms, err := c.Machines(cmd.Context())
			if err != nil {
				return err
			}
			if ms == nil {
				ms = []client.Machine{}
			}
			return e.print(ms, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "NAME\tROLE ID\tTOKEN TTL\tCREATED")
				for _, m := range ms {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", m.Name, m.RoleID, m.TokenTTL, when(m.CreatedAt))
				}
			})
		},
	}
}

func (e *env) machineIssueSecretCommand() *cobra.Command {
	var spec client.SecretIDSpec
	cmd := &cobra.Command{
		Use:   "issue-secret NAME",
		Short: "Issue a secret id for a machine; it is printed once",
		Long: `Issue a secret id for a machine. The secret id is printed once and
cannot be read again; the accessor (its id) names it afterwards. Hand it
to the workload over a channel that keeps it secret; the workload logs in
with "warder machine login --role-id ID", reading it from stdin.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if spec.Uses < 0 || spec.TTL < 0 {
				return usageError{errors.New("--uses and --ttl must not be negative")}
			}
			for i, s := range spec.CIDRs {
				p, err := netip.ParsePrefix(s)
				if err != nil {
					return usageError{fmt.Errorf("--cidr %q is not a CIDR block such as 10.0.0.0/8", s)}
				}
				spec.CIDRs[i] = p.Masked().String()
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			res, err := c.IssueSecretID(cmd.Context(), args[0], spec)
			if err != nil {
				return err
			}
			if res.Info.CIDRs == nil {
				res.Info.CIDRs = []string{}
			}
			return e.print(res, func(w *tabwriter.Writer) {
				in := res.Info
				fmt.Fprintf(w, "Secret ID\t%s\n", res.SecretID)
				fmt.Fprintf(w, "Accessor\t%s\n", in.ID)
				uses := "unlimited"
				if in.Uses > 0 {
					uses = fmt.Sprint(in.Uses)
				}
				fmt.Fprintf(w, "Uses\t%s\n", uses)
				if in.ExpiresAt.IsZero() {
					fmt.Fprintln(w, "Expires\tnever")
				} else {
					fmt.Fprintf(w, "Expires\t%s\n", when(in.ExpiresAt))
				}
				fmt.Fprintf(w, "CIDRs\t%s\n", dash(strings.Join(in.CIDRs, ", ")))
				fmt.Fprintln(w, "\nThe secret id is shown only this once.")
			})
		},
	}
	cmd.Flags().IntVar(&spec.Uses, "uses", 0, "number of logins it allows (default: unlimited)")
	cmd.Flags().DurationVar(&spec.TTL, "ttl", 0, "how long it stays valid, such as 24h (default: the server's)")
	cmd.Flags().StringArrayVar(&spec.CIDRs, "cidr", nil, "only allow logins from this CIDR block (repeatable)")
	return cmd
}

func (e *env) machineLoginCommand() *cobra.Command {
	var roleID string
	cmd := &cobra.Command{
		Use:   "login --role-id ID < secret-id",
		Short: "Log a machine in with its role id and a secret id read from stdin; print the token",
		Long: `Log a machine in. The secret id is read from stdin (a hidden prompt on a
terminal), never from an argument. The token is printed, not stored: with
the table format stdout holds only the token, for pipelines such as

    WARDER_TOKEN=$(warder machine login --role-id "$ROLE_ID" < /run/secrets/warder)

With --format json the output is {"token": ..., "token_info": {...}}.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if roleID == "" {
				return usageError{errors.New("--role-id is required")}
			}
			secretID, err := e.readSecret("secret id")
			if err != nil {
				return err
			}
			c, err := e.clientWithToken("")
			if err != nil {
				return err
			}
			res, err := c.MachineLogin(cmd.Context(), roleID, strings.TrimSpace(secretID))
			if err != nil {
				return err
			}
			return e.print(res, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, res.Token)
			})
		},
	}
	cmd.Flags().StringVar(&roleID, "role-id", "", "the machine's role id (required)")
	return cmd
}
