package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"

	"github.com/warderhq/warder/internal/client"
)

// maxPrivateKey bounds a private key file.
const maxPrivateKey = 16 << 10

func (e *env) accountCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "account", Short: "Manage privileged accounts on targets, their credentials and rotation"}
	cmd.AddCommand(e.accountAddCommand(), e.accountListCommand(), e.accountShowCommand(), e.accountRemoveCommand(),
		e.accountRotateCommand(), e.accountVerifyCommand(), e.accountVersionsCommand())
	return cmd
}

// accountArg checks that arg is TARGET/USER.
func accountArg(arg string) error {
	t, u, ok := strings.Cut(arg, "/")
	if !ok || t == "" || u == "" {
		return usageError{fmt.Errorf("%q is not TARGET/USER", arg)}
	}
	return nil
}

func (e *env) accountAddCommand() *cobra.Command {
	var (
		a              client.NewAccount
		passwordStdin  bool
		privateKeyFile string
		noRotate       bool
		rotateEvery    time.Duration
		dependents     []string
		pf             policyFlags
	)
	cmd := &cobra.Command{
		Use:   "add TARGET/USER (--password-stdin | --private-key-file FILE | --generate)",
		Short: "Add an account with its current credential, or have Warder set a fresh one",
		Long: `Add a privileged account of a target. Its current credential comes from
stdin (--password-stdin, for passwords and API keys) or a file
(--private-key-file, an unencrypted OpenSSH private key; - reads stdin),
never from an argument. --generate has Warder set a fresh credential on the
target at once, through the target's management account.

By default the credential is rotated whenever a lease on it ends
(--no-rotate-on-checkin turns that off) and, with --rotate-every, on a
schedule.

--dependent records a file on a linux target holding a copy of the
credential, rewritten by each rotation (repeatable):

    --dependent 'target=app1,path=/etc/app.env,match=^DB_PASSWORD=,template=DB_PASSWORD={{password}},restart=systemctl restart app'

target, path, match (a regular expression selecting the line) and template
(the new line; {{password}} stands for the credential) are required;
restart is a command run after the file changed. Fields are separated by a
comma followed by the next field's name and "=", so values may contain
commas, but not a comma followed by a lower-case word and "=".`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := accountArg(args[0]); err != nil {
				return err
			}
			a.Target, a.Username, _ = strings.Cut(args[0], "/")
			sources := 0
			for _, b := range []bool{passwordStdin, privateKeyFile != "", a.Generate} {
				if b {
					sources++
				}
			}
			if sources != 1 {
				return usageError{errors.New("give exactly one of --password-stdin, --private-key-file and --generate")}
			}
			if a.MaxCheckouts < 0 {
				return usageError{errors.New("--max-checkouts must not be negative")}
			}
			if rotateEvery < 0 {
				return usageError{errors.New("--rotate-every must not be negative")}
			}
			a.RotateEvery = client.Duration(rotateEvery)
			if noRotate {
				f := false
				a.RotateOnCheckin = &f
			}
			var err error
			if a.PasswordPolicy, err = pf.policy(cmd.Flags()); err != nil {
				return err
			}
			for _, s := range dependents {
				d, err := parseDependent(s)
				if err != nil {
					return usageError{fmt.Errorf("--dependent: %w", err)}
				}
				a.Dependents = append(a.Dependents, d)
			}
			switch {
			case passwordStdin:
				if a.Kind == "ssh_key" {
					return usageError{errors.New("an ssh_key account takes --private-key-file, not --password-stdin")}
				}
				if a.Password, err = e.readStdinSecret("password"); err != nil {
					return err
				}
			case privateKeyFile != "":
				if a.Kind != "" && a.Kind != "ssh_key" {
					return usageError{fmt.Errorf("--private-key-file is for ssh_key accounts, not %s", a.Kind)}
				}
				a.Kind = "ssh_key"
				if a.PrivateKey, err = e.readPrivateKey(privateKeyFile); err != nil {
					return err
				}
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			res, err := c.CreateAccount(cmd.Context(), a)
			if err != nil {
				return err
			}
			return e.printAccount(res)
		},
	}
	fs := cmd.Flags()
	fs.BoolVar(&passwordStdin, "password-stdin", false, "read the current password (or API key) from stdin")
	fs.StringVar(&privateKeyFile, "private-key-file", "", "read the current OpenSSH private key from this file (- for stdin)")
	fs.BoolVar(&a.Generate, "generate", false, "set a fresh credential on the target now, through its management account")
	fs.StringVar(&a.Kind, "kind", "", "credential kind: password, ssh_key or api_key (default password, or ssh_key with --private-key-file)")
	fs.IntVar(&a.MaxCheckouts, "max-checkouts", 0, "leases open at once (default 1: exclusive)")
	fs.DurationVar(&rotateEvery, "rotate-every", 0, "rotate on this schedule too, such as 24h (default: only on check-in and on demand)")
	fs.BoolVar(&noRotate, "no-rotate-on-checkin", false, "do not rotate when a lease ends")
	fs.StringArrayVar(&dependents, "dependent", nil, "a file that must learn each new credential: 'target=T,path=P,match=RE,template=LINE[,restart=CMD]' (repeatable)")
	pf.register(fs, "the target's policy")
	return cmd
}

// readPrivateKey reads an unencrypted private key from path ("-": stdin).
// It parses it only to refuse early what the server would refuse; the
// server derives the public key.
func (e *env) readPrivateKey(path string) (string, error) {
	var r io.Reader = e.stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return "", err
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxPrivateKey+1))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > maxPrivateKey {
		return "", usageError{fmt.Errorf("%s is larger than %d KiB", path, maxPrivateKey>>10)}
	}
	if _, err := ssh.ParsePrivateKey(b); err != nil {
		// The message names the problem, never the key.
		var pm *ssh.PassphraseMissingError
		if errors.As(err, &pm) {
			return "", usageError{fmt.Errorf("%s is encrypted: Warder needs the key without a passphrase", path)}
		}
		return "", usageError{fmt.Errorf("%s is not a private key Warder can use", path)}
	}
	return string(b), nil
}

// dependentKeys are the fields of a --dependent value.
var dependentKeys = []string{"target", "path", "match", "template", "restart"}

// dependentField matches where a field starts: at the beginning, or after
// a comma, a lower-case name and "=".
var dependentField = regexp.MustCompile(`(?:^|,)([a-z_]+)=`)

// parseDependent parses 'target=T,path=P,match=RE,template=LINE[,restart=CMD]'.
// A field runs until the next comma followed by a lower-case name and "=".
func parseDependent(s string) (client.Dependent, error) {
	var d client.Dependent
	locs := dependentField.FindAllStringSubmatchIndex(s, -1)
	if len(locs) == 0 || locs[0][0] != 0 {
		return d, fmt.Errorf("%q does not start with target=, path=, match=, template= or restart=", clip(s))
	}
	seen := map[string]bool{}
	for i, loc := range locs {
		key := s[loc[2]:loc[3]]
		end := len(s)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		val := s[loc[1]:end]
		if seen[key] {
			return d, fmt.Errorf("%s= given twice", key)
		}
		seen[key] = true
		switch key {
		case "target":
			d.Target = val
		case "path":
			d.Path = val
		case "match":
			d.Match = val
		case "template":
			d.Template = val
		case "restart":
			d.Restart = val
		default:
			return d, fmt.Errorf("unknown field %q (fields: %s)", key, strings.Join(dependentKeys, ", "))
		}
	}
	for _, f := range []struct{ name, val string }{{"target", d.Target}, {"path", d.Path}, {"match", d.Match}, {"template", d.Template}} {
		if f.val == "" {
			return d, fmt.Errorf("%s= is required", f.name)
		}
	}
	return d, nil
}

// formatDependent is the inverse of parseDependent.
func formatDependent(d client.Dependent) string {
	s := "target=" + d.Target + ",path=" + d.Path + ",match=" + d.Match + ",template=" + d.Template
	if d.Restart != "" {
		s += ",restart=" + d.Restart
	}
	return s
}

// clip shortens s for an error message.
func clip(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}

func (e *env) accountListCommand() *cobra.Command {
	var target string
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List accounts (never their credentials)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			as, err := c.Accounts(cmd.Context(), target)
			if err != nil {
				return err
			}
			if as == nil {
				as = []client.Account{}
			}
			return e.print(as, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "ACCOUNT\tKIND\tSTATUS\tVERSION\tMAX CHECKOUTS\tROTATE EVERY\tLAST ROTATED")
				for _, a := range as {
					fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", a.ID, a.Kind, accountStatus(a), a.CredentialVersion, a.MaxCheckouts, every(a.RotateEvery), when(a.LastRotatedAt))
				}
			})
		},
	}
	cmd.Flags().StringVar(&target, "target", "", "only accounts of this target")
	return cmd
}

// accountStatus is the status with the flags that need attention.
func accountStatus(a client.Account) string {
	s := a.Status
	if a.HasPending {
		s += ",pending"
	}
	if a.RotationDue {
		s += ",rotation-due"
	}
	return s
}

func every(d client.Duration) string {
	if d == 0 {
		return "-"
	}
	return d.String()
}

func (e *env) accountShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show TARGET/USER",
		Short: "Show an account (never its credential)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := accountArg(args[0]); err != nil {
				return err
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			a, err := c.Account(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return e.printAccount(a)
		},
	}
}

func (e *env) printAccount(a client.Account) error {
	return e.print(a, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "Account\t%s\n", a.ID)
		fmt.Fprintf(w, "Kind\t%s\n", a.Kind)
		fmt.Fprintf(w, "Status\t%s\n", a.Status)
		fmt.Fprintf(w, "Credential version\t%d\n", a.CredentialVersion)
		fmt.Fprintf(w, "Pending rotation\t%s\n", yesNo(a.HasPending))
		fmt.Fprintf(w, "Rotation due\t%s\n", yesNo(a.RotationDue))
		fmt.Fprintf(w, "Max checkouts\t%d\n", a.MaxCheckouts)
		fmt.Fprintf(w, "Rotate on check-in\t%s\n", yesNo(a.RotateOnCheckin))
		fmt.Fprintf(w, "Rotate every\t%s\n", every(a.RotateEvery))
		if a.Kind == "" || a.Kind == "password" {
			pol := "the target's"
			if a.PasswordPolicy != nil {
				pol = policyText(a.PasswordPolicy)
			}
			fmt.Fprintf(w, "Password policy\t%s\n", pol)
		}
		for _, d := range a.Dependents {
			fmt.Fprintf(w, "Dependent\t%s\n", formatDependent(d))
		}
		fmt.Fprintf(w, "Last rotated\t%s\n", when(a.LastRotatedAt))
		fmt.Fprintf(w, "Last verified\t%s\n", when(a.LastVerifiedAt))
		fmt.Fprintf(w, "Next rotation\t%s\n", when(a.NextRotationAt))
		fmt.Fprintf(w, "Created\t%s\n", when(a.CreatedAt))
	})
}

func (e *env) accountRemoveCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "rm TARGET/USER",
		Aliases: []string{"remove"},
		Short:   "Remove an account and its stored credentials (refused while checked out)",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := accountArg(args[0]); err != nil {
				return err
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			if err := c.DeleteAccount(cmd.Context(), args[0]); err != nil {
				return err
			}
			return e.printDeleted("account", args[0])
		},
	}
}

func (e *env) accountRotateCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "rotate TARGET/USER",
		Short: "Rotate an account's credential now; exit 1 if it failed or a dependent did not follow",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := accountArg(args[0]); err != nil {
				return err
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			r, err := c.RotateAccount(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if err := e.print(r, func(w *tabwriter.Writer) {
				printRotationHeader(w)
				printRotation(w, r)
			}); err != nil {
				return err
			}
			if r.Failed() {
				fmt.Fprintf(e.stderr, "Error: rotation of %s did not complete (%s)\n", args[0], dash(r.Outcome))
				return exitError{1}
			}
			return nil
		},
	}
}

func (e *env) accountVerifyCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "verify TARGET/USER",
		Short: "Log in to the target with the stored credential; exit 1 if it does not work",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := accountArg(args[0]); err != nil {
				return err
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			v, err := c.VerifyAccount(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if err := e.print(v, func(w *tabwriter.Writer) {
				if v.OK {
					fmt.Fprintf(w, "%s: the stored credential logs in (status %s)\n", args[0], v.Status)
				} else {
					fmt.Fprintf(w, "%s: the stored credential does NOT log in (status %s)\n", args[0], v.Status)
				}
			}); err != nil {
				return err
			}
			if !v.OK {
				return exitError{1}
			}
			return nil
		},
	}
}

func (e *env) accountVersionsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "versions TARGET/USER",
		Short: "List the stored versions of an account's credential (never the credentials)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := accountArg(args[0]); err != nil {
				return err
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			vs, err := c.AccountVersions(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if vs == nil {
				vs = []client.CredentialVersion{}
			}
			return e.print(vs, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "VERSION\tSTATE\tCREATED")
				for _, v := range vs {
					fmt.Fprintf(w, "%d\t%s\t%s\n", v.Version, v.State, when(v.CreatedAt))
				}
			})
		},
	}
}
