package cli

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/warderhq/warder/internal/client"
	"github.com/warderhq/warder/internal/identity"
)

func (e *env) machineCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "machine", Short: "Manage machines: workloads that log in with a role id and a secret id"}
	cmd.AddCommand(e.machineCreateCommand(), e.machineListCommand(), e.machineShowCommand(),
		e.machineActionCommand("disable", "Disable a machine and revoke all of its tokens; it cannot log in until enabled", (*client.Client).DisableMachine),
		e.machineActionCommand("enable", "Let a disabled machine log in again with its secret ids", (*client.Client).EnableMachine),
		e.machineDeleteCommand(), e.machineIssueSecretCommand(), e.machineRevokeSecretCommand(), e.machineLoginCommand())
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
				fmt.Fprintln(w, "NAME\tSTATUS\tROLE ID\tTOKEN TTL\tCREATED")
				for _, m := range ms {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", m.Name, dash(m.Status), m.RoleID, m.TokenTTL, when(m.CreatedAt))
				}
			})
		},
	}
}

// machineDetail is what "machine show" prints: the machine and its secret
// ids, never their secrets.
type machineDetail struct {
	client.Machine
	SecretIDs []client.SecretIDInfo `json:"secret_ids"`
}

func (e *env) machineShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show a machine and its secret ids (by accessor; never the secrets)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			m, err := c.Machine(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			ids, err := c.SecretIDs(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			d := machineDetail{Machine: m, SecretIDs: ids}
			if d.SecretIDs == nil {
				d.SecretIDs = []client.SecretIDInfo{}
			}
			for i := range d.SecretIDs {
				if d.SecretIDs[i].CIDRs == nil {
					d.SecretIDs[i].CIDRs = []string{}
				}
			}
			return e.print(d, func(w *tabwriter.Writer) {
				e.printMachineFields(w, m)
				if len(ids) == 0 {
					fmt.Fprintln(w, "\nNo secret ids.")
					return
				}
				fmt.Fprintln(w, "\nACCESSOR\tUSES LEFT\tCREATED\tEXPIRES\tCIDRS")
				now := time.Now()
				for _, in := range ids {
					uses := "unlimited"
					switch {
					case in.Uses > 0 && in.UsesLeft <= 0:
						uses = "used up"
					case in.Uses > 0:
						uses = fmt.Sprintf("%d of %d", in.UsesLeft, in.Uses)
					}
					expires := when(in.ExpiresAt)
					if !in.ExpiresAt.IsZero() && !now.Before(in.ExpiresAt) {
						expires += " (expired)"
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", in.ID, uses, when(in.CreatedAt), expires, dash(strings.Join(in.CIDRs, ",")))
				}
			})
		},
	}
}

func (e *env) printMachineFields(w *tabwriter.Writer, m client.Machine) {
	fmt.Fprintf(w, "Name\t%s\nStatus\t%s\nRole ID\t%s\nToken TTL\t%s\nCreated\t%s\n", m.Name, dash(m.Status), m.RoleID, m.TokenTTL, when(m.CreatedAt))
}

// machineActionCommand is a command NAME that calls do and prints the
// machine.
func (e *env) machineActionCommand(use, short string, do func(*client.Client, context.Context, string) (client.Machine, error)) *cobra.Command {
	return nameActionCommand(e, use, short, do, func(m client.Machine) error {
		return e.print(m, func(w *tabwriter.Writer) { e.printMachineFields(w, m) })
	})
}

func (e *env) machineDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"delete"},
		Short:   "Delete a machine with its secret ids and revoke all of its tokens",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			if err := c.DeleteMachine(cmd.Context(), args[0]); err != nil {
				return err
			}
			return e.printDeleted("machine", args[0])
		},
	}
}

func (e *env) machineRevokeSecretCommand() *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "revoke-secret NAME (ACCESSOR | --all)",
		Short: "Revoke a machine's secret id, named by its accessor, or all of them",
		Long: `Revoke one of the machine's secret ids, named by its accessor (the
"Accessor" that issue-secret printed; "warder machine show NAME" lists
them), or with --all every one of them. No login succeeds with a revoked
secret id; tokens already issued with it stay valid until they expire:
"warder machine disable NAME" revokes those too.

Name the secret id by its accessor, never by the secret id itself.`,
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) == 2 && !all, len(args) == 1 && all:
				return nil
			case len(args) == 2 && all:
				return usageError{errors.New("give an accessor or --all, not both")}
			}
			return usageError{errors.New("give the machine's name and an accessor, or --all")}
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var accessor string
			if !all {
				var err error
				if accessor, err = accessorArg(args[1]); err != nil {
					return err
				}
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			res := struct {
				Machine string   `json:"machine"`
				Revoked []string `json:"revoked"`
			}{Machine: args[0], Revoked: []string{}}
			if all {
				if res.Revoked, err = c.RevokeSecretIDs(cmd.Context(), args[0]); err != nil {
					return err
				}
				if res.Revoked == nil {
					res.Revoked = []string{}
				}
			} else {
				if err := c.RevokeSecretID(cmd.Context(), args[0], accessor); err != nil {
					return err
				}
				res.Revoked = []string{accessor}
			}
			return e.print(res, func(w *tabwriter.Writer) {
				if len(res.Revoked) == 0 {
					fmt.Fprintf(w, "Machine %s had no secret ids.\n", res.Machine)
					return
				}
				fmt.Fprintf(w, "Revoked %d secret id(s) of machine %s: %s\n", len(res.Revoked), res.Machine, strings.Join(res.Revoked, ", "))
			})
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "revoke every secret id of the machine")
	return cmd
}

// accessorArg checks that s names a secret id by its accessor. A secret
// id itself ("wsi1.<accessor>.<secret>") is refused without repeating
// its secret part: it has been exposed on a command line.
func accessorArg(s string) (string, error) {
	if strings.HasPrefix(s, "wsi1.") {
		parts := strings.SplitN(s, ".", 3)
		hint := ""
		if len(parts) == 3 && identity.ValidAccessor(parts[1]) {
			hint = fmt.Sprintf("; its accessor is %s", parts[1])
		}
		return "", usageError{fmt.Errorf("that is a secret id itself, not its accessor: it is now in your shell history and the process list, so revoke it%s", hint)}
	}
	if !identity.ValidAccessor(s) {
		return "", usageError{errors.New("an accessor is 18 hexadecimal digits, as \"warder machine show NAME\" lists them")}
	}
	return s, nil
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
		Args: noArgs("the secret id is read from stdin or a prompt, never from the command line"),
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
