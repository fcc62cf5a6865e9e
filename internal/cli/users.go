package cli

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/warderhq/warder/internal/client"
)

func (e *env) userCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "user", Short: "Manage users: people who log in with a password and TOTP"}
	cmd.AddCommand(e.userCreateCommand(), e.userListCommand(), e.userShowCommand(),
		e.userActionCommand("disable", "Disable a user and revoke all of their tokens", (*client.Client).DisableUser),
		e.userActionCommand("enable", "Let a disabled user log in again", (*client.Client).EnableUser),
		e.userDeleteCommand(),
		e.userActionCommand("unlock", "Clear a user's login lockout after too many failed logins", (*client.Client).UnlockUser),
		e.userSetPasswordCommand())
	cmd.AddCommand(e.userResetMFACommand())
	return cmd
}

func (e *env) userSetPasswordCommand() *cobra.Command {
	var passwordStdin bool
	cmd := &cobra.Command{
		Use:   "set-password NAME [--password-stdin]",
		Short: "Set or reset a user's password, and revoke their tokens",
		Long: `Set the user's password, as an administrator: for a new user created
without one, or a reset. The password is read from stdin with
--password-stdin, or else from a prompt without echo (asked twice); it
is never taken as an argument.

It also clears the lockout of the user's name and revokes all of the
user's tokens, so that whoever got one with the old password loses it;
when you set your own password, the token you use now is kept. Audited
as identity.user.password.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var (
				password string
				err      error
			)
			fd, tty := e.stdinTerminal()
			switch {
			case passwordStdin:
				password, err = e.readStdinSecret("password")
			case tty:
				if password, err = e.promptHidden(fd, "New password for "+args[0]+": "); err != nil {
					return err
				}
				var again string
				if again, err = e.promptHidden(fd, "Again: "); err == nil && again != password {
					return usageError{errors.New("the passwords do not match")}
				}
			default:
				return usageError{errors.New("stdin is not a terminal to prompt for the password: pipe it in with --password-stdin")}
			}
			if err != nil {
				return err
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			u, err := c.SetUserPassword(cmd.Context(), args[0], password)
			if err != nil {
				return err
			}
			if e.format == "table" {
				fmt.Fprintf(e.stderr, "Set the password of %s and revoked their tokens (but the one you use, if it is theirs).\n", u.Name)
			}
			return e.printUser(u)
		},
	}
	cmd.Flags().BoolVar(&passwordStdin, "password-stdin", false, "read the password from stdin")
	return cmd
}

func (e *env) userCreateCommand() *cobra.Command {
	var (
		u             client.NewUser
		passwordStdin bool
	)
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a user",
		Long: `Create a user. With --password-stdin the password is read from stdin
(never from an argument); without it, the user has no password and cannot
log in yet.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			u.Name = args[0]
			if passwordStdin {
				var err error
				if u.Password, err = e.readStdinSecret("password"); err != nil {
					return err
				}
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			user, err := c.CreateUser(cmd.Context(), u)
			if err != nil {
				return err
			}
			return e.printUser(user)
		},
	}
	cmd.Flags().BoolVar(&passwordStdin, "password-stdin", false, "read the user's password from stdin")
	cmd.Flags().StringVar(&u.Email, "email", "", "e-mail address")
	cmd.Flags().StringVar(&u.DisplayName, "display-name", "", "name to display, such as \"Alice Liddell\"")
	return cmd
}

func (e *env) userListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List users",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			users, err := c.Users(cmd.Context())
			if err != nil {
				return err
			}
			if users == nil {
				users = []client.User{}
			}
			return e.print(users, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "NAME\tSTATUS\tPASSWORD\tMFA\tEMAIL\tDISPLAY NAME")
				for _, u := range users {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", u.Name, u.Status, yesNo(u.HasPassword), yesNo(u.MFAEnrolled), dash(u.Email), dash(u.DisplayName))
				}
			})
		},
	}
}

func (e *env) userShowCommand() *cobra.Command {
	return e.userActionCommand("show", "Show a user", (*client.Client).User)
}

// userActionCommand is a command NAME that calls do and prints the user.
func (e *env) userActionCommand(use, short string, do func(*client.Client, context.Context, string) (client.User, error)) *cobra.Command {
	return nameActionCommand(e, use, short, do, e.printUser)
}

// nameActionCommand is a command NAME that calls do with the name and
// prints what it returns with show.
func nameActionCommand[T any](e *env, use, short string, do func(*client.Client, context.Context, string) (T, error), show func(T) error) *cobra.Command {
	return &cobra.Command{
		Use:   use + " NAME",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			v, err := do(c, cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return show(v)
		},
	}
}

func (e *env) userDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a user and revoke all of their tokens",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			if err := c.DeleteUser(cmd.Context(), args[0]); err != nil {
				return err
			}
			return e.printDeleted("user", args[0])
		},
	}
}

func (e *env) printUser(u client.User) error {
	return e.print(u, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "Name\t%s\n", u.Name)
		fmt.Fprintf(w, "Display name\t%s\n", dash(u.DisplayName))
		fmt.Fprintf(w, "Email\t%s\n", dash(u.Email))
		fmt.Fprintf(w, "Status\t%s\n", u.Status)
		fmt.Fprintf(w, "Password\t%s\n", yesNo(u.HasPassword))
		fmt.Fprintf(w, "MFA enrolled\t%s\n", yesNo(u.MFAEnrolled))
		switch {
		case !u.LockedUntil.IsZero():
			fmt.Fprintf(w, "Locked\tyes, until %s after %d failed logins (\"warder user unlock %s\" ends it)\n", when(u.LockedUntil), u.FailedLogins, u.Name)
		case u.FailedLogins > 0:
			fmt.Fprintf(w, "Locked\tno (%d recent failed logins)\n", u.FailedLogins)
		default:
			fmt.Fprintln(w, "Locked\tno")
		}
		fmt.Fprintf(w, "Created\t%s\n", when(u.CreatedAt))
		fmt.Fprintf(w, "Updated\t%s\n", when(u.UpdatedAt))
	})
}

// printDeleted reports a deletion: {"deleted": "<kind>", "name": ...} in JSON.
func (e *env) printDeleted(kind, name string) error {
	return e.print(struct {
		Deleted string `json:"deleted"`
		Name    string `json:"name"`
	}{kind, name}, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "Deleted %s %s.\n", kind, name)
	})
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
