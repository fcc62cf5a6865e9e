package cli

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/warderhq/warder/internal/client"
)

func (e *env) grantCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "grant",
		Short: "List, extend and revoke grants of roles, and get their database credentials",
	}
	cmd.AddCommand(e.grantListCommand(), e.grantRevokeCommand(), e.grantExtendCommand(), e.grantCredentialCommand())
	return cmd
}

func (e *env) grantListCommand() *cobra.Command {
	var f client.GrantFilter
	cmd := &cobra.Command{
		Use:     "ls [--mine] [--active] [--role R]",
		Aliases: []string{"list"},
		Short:   "List grants: yours, or all (administrators)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			gs, err := c.Grants(cmd.Context(), f)
			if err != nil {
				if !f.Mine && client.IsCode(err, "denied") {
					return fmt.Errorf("%w\nListing every grant is for administrators: list your own with --mine", err)
				}
				return err
			}
			if gs == nil {
				gs = []client.Grant{}
			}
			return e.print(gs, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "ID\tROLE\tPRINCIPAL\tSTATUS\tEXPIRES")
				for _, g := range gs {
					role := g.Role
					if g.Emergency {
						role += " (emergency)"
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", g.ID, role, g.Principal, g.Status, when(g.ExpiresAt))
				}
			})
		},
	}
	fs := cmd.Flags()
	fs.BoolVar(&f.Mine, "mine", false, "only your own grants")
	fs.BoolVar(&f.Active, "active", false, "only active grants")
	fs.StringVar(&f.Role, "role", "", "only grants of this role")
	return cmd
}

func (e *env) grantRevokeCommand() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "revoke ID [--reason TEXT]",
		Short: "End a grant now (administrators); its database user is dropped",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			g, err := c.RevokeGrant(cmd.Context(), args[0], reason)
			if err != nil {
				return err
			}
			return e.printGrant(g)
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the record")
	return cmd
}

func (e *env) grantExtendCommand() *cobra.Command {
	var x client.Extension
	cmd := &cobra.Command{
		Use:   "extend ID --ttl DURATION [--reason TEXT] [--ticket ID]",
		Short: "Ask for more time on your grant; approved like the original request",
		Long: `Ask for more time on your active grant: once approved, under the same
terms as a new request, the grant ends DURATION after the approval. The
answer is the extension request.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if x.TTL <= 0 {
				return usageError{errors.New("--ttl is required and must be positive, such as 1h")}
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			r, err := c.ExtendGrant(cmd.Context(), args[0], x)
			if err != nil {
				return err
			}
			if err := e.printRequest(r); err != nil {
				return err
			}
			if e.format == "table" {
				e.requestHint(r)
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.DurationVar(&x.TTL, "ttl", 0, "how much longer, from approval, such as 1h (required)")
	fs.StringVar(&x.Reason, "reason", "", "why you need more time")
	fs.StringVar(&x.Ticket, "ticket", "", "change or incident ticket id")
	return cmd
}

func (e *env) grantCredentialCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "credential ID",
		Short: "Print the credential of your active grant's database user",
		Long: `Print the user name and password of the database user your active
grant created. The user is dropped, and its connections ended, when the
grant ends.

With --format json the answer is {target, host, port, username, password,
valid_until}.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			cr, err := c.GrantCredential(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return e.print(cr, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "Target\t%s\n", cr.Target)
				fmt.Fprintf(w, "Host\t%s\n", cr.Host)
				fmt.Fprintf(w, "Port\t%d\n", cr.Port)
				fmt.Fprintf(w, "Username\t%s\n", cr.Username)
				fmt.Fprintf(w, "Password\t%s\n", cr.Password)
				fmt.Fprintf(w, "Valid until\t%s\n", when(cr.ValidUntil))
				w.Flush()
				e.connectHint(cr)
			})
		},
	}
}

// connectHint shows how to connect without putting the password in a
// command line, where other users and shell history would see it.
func (e *env) connectHint(cr client.EphemeralCredential) {
	host, port, user := shellWord(cr.Host), strconv.Itoa(cr.Port), shellWord(cr.Username)
	fmt.Fprintf(e.stdout, `
Connect (PostgreSQL):  psql -h %s -p %s -U %s -d DBNAME
  psql asks for the password above. To skip the prompt, put the line
    %s:%s:*:%s:<password>
  in a file only you can read (chmod 600) and set PGPASSFILE to it, or
  add it to ~/.pgpass. Scripts: use --format json.
Connect (MariaDB):     mysql -h %s -P %s -u %s -p
`, host, port, user, pgpassField(cr.Host), port, pgpassField(cr.Username), host, port, user)
}

// shellSafe matches words a POSIX shell takes literally.
var shellSafe = regexp.MustCompile(`^[A-Za-z0-9_./:@%+=,-]+$`)

// shellWord quotes s for a POSIX shell when needed.
func shellWord(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// pgpassField escapes s for a .pgpass line.
func pgpassField(s string) string {
	return strings.NewReplacer(`\`, `\\`, `:`, `\:`).Replace(s)
}

func (e *env) printGrant(g client.Grant) error {
	return e.print(g, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "ID\t%s\n", g.ID)
		fmt.Fprintf(w, "Role\t%s\n", g.Role)
		fmt.Fprintf(w, "Principal\t%s\n", g.Principal)
		fmt.Fprintf(w, "Status\t%s\n", g.Status)
		if g.Emergency {
			fmt.Fprintf(w, "Emergency\tyes: see \"warder incident ls\"\n")
		}
		fmt.Fprintf(w, "Starts\t%s\n", when(g.StartsAt))
		fmt.Fprintf(w, "Expires\t%s\n", when(g.ExpiresAt))
		if !g.EndedAt.IsZero() {
			fmt.Fprintf(w, "Ended\t%s by %s\n", when(g.EndedAt), dash(g.EndedBy))
		}
		fmt.Fprintf(w, "Request\t%s\n", dash(g.RequestID))
		if len(g.RotateAccounts) > 0 {
			fmt.Fprintf(w, "Rotated on end\t%s\n", strings.Join(g.RotateAccounts, ", "))
		}
		if x := g.Ephemeral; x != nil {
			fmt.Fprintf(w, "Database user\t%s on %s (%s), %s\n", x.Username, x.Target, strings.Join(x.Roles, ", "), x.State)
		}
	})
}
