package cli

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/warderhq/warder/internal/client"
)

func (e *env) targetCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "target", Short: "Manage targets: the systems whose privileged accounts Warder holds"}
	cmd.AddCommand(e.targetAddCommand(), e.targetListCommand(), e.targetShowCommand(), e.targetRemoveCommand(), e.targetRotateCommand(), e.targetRuleCommand())
	return cmd
}

// policyFlags are the flags that set a password policy.
type policyFlags struct {
	length    int
	forbid    string
	classes   []string
	flagNames []string
}

func (p *policyFlags) register(fs *pflag.FlagSet, dflt string) {
	fs.IntVar(&p.length, "password-length", 0, "length of generated passwords, 12..128 (default "+dflt+")")
	fs.StringVar(&p.forbid, "password-forbid", "", "characters generated passwords must not contain")
	fs.StringSliceVar(&p.classes, "password-classes", nil, "character classes of generated passwords: lower,upper,digits,symbols (default all)")
	p.flagNames = []string{"password-length", "password-forbid", "password-classes"}
}

// policy returns the policy the flags describe, or nil when none was given.
func (p *policyFlags) policy(fs *pflag.FlagSet) (*client.PasswordPolicy, error) {
	if !slices.ContainsFunc(p.flagNames, fs.Changed) {
		return nil, nil
	}
	if p.length < 0 {
		return nil, usageError{errors.New("--password-length must not be negative")}
	}
	pp := &client.PasswordPolicy{Length: p.length, Forbidden: p.forbid}
	for _, c := range p.classes {
		switch strings.TrimSpace(c) {
		case "lower":
			pp.Lower = true
		case "upper":
			pp.Upper = true
		case "digits":
			pp.Digits = true
		case "symbols":
			pp.Symbols = true
		default:
			return nil, usageError{fmt.Errorf("--password-classes: %q is not one of lower, upper, digits, symbols", c)}
		}
	}
	return pp, nil
}

// parseOptions turns k=v flags into a map, refusing a key given twice.
func parseOptions(kvs []string, flag string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usageError{fmt.Errorf("--%s %q is not KEY=VALUE", flag, kv)}
		}
		if _, dup := m[k]; dup {
			return nil, usageError{fmt.Errorf("--%s: key %q given twice", flag, k)}
		}
		m[k] = v
	}
	return m, nil
}

func (e *env) targetAddCommand() *cobra.Command {
	var (
		t       client.NewTarget
		options []string
		pf      policyFlags
	)
	cmd := &cobra.Command{
		Use:   "add KIND NAME --host HOST --port PORT",
		Short: "Add a target (kind postgres, mysql, linux or redis)",
		Long: `Add a target: a system whose accounts Warder manages. KIND is postgres,
mysql (MariaDB or MySQL), linux (over SSH) or redis. Kind-specific settings
are --option KEY=VALUE (repeatable). --management-account names the
account of this target (added afterwards with "warder account add") that
can reset the others' credentials when their own no longer work.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			t.Kind, t.Name = args[0], args[1]
			if t.Host == "" {
				return usageError{errors.New("--host is required")}
			}
			if t.Port < 1 || t.Port > 65535 {
				return usageError{errors.New("--port must be between 1 and 65535")}
			}
			if t.MaxConcurrentRotations < 0 {
				return usageError{errors.New("--max-concurrent-rotations must not be negative")}
			}
			var err error
			if t.Options, err = parseOptions(options, "option"); err != nil {
				return err
			}
			if t.PasswordPolicy, err = pf.policy(cmd.Flags()); err != nil {
				return err
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			res, err := c.CreateTarget(cmd.Context(), t)
			if err != nil {
				return err
			}
			return e.printTarget(res)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&t.Host, "host", "", "host name or address (required)")
	fs.IntVar(&t.Port, "port", 0, "port (required)")
	fs.StringArrayVar(&options, "option", nil, "kind-specific setting KEY=VALUE (repeatable)")
	fs.StringVar(&t.ManagementAccount, "management-account", "", "username of the account that can reset the others")
	fs.IntVar(&t.MaxConcurrentRotations, "max-concurrent-rotations", 0, "rotations run at once on this target (default 4)")
	pf.register(fs, "32")
	return cmd
}

func (e *env) targetListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List targets",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			ts, err := c.Targets(cmd.Context())
			if err != nil {
				return err
			}
			if ts == nil {
				ts = []client.Target{}
			}
			return e.print(ts, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "NAME\tKIND\tHOST\tPORT\tMANAGEMENT ACCOUNT\tCREATED")
				for _, t := range ts {
					fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\n", t.Name, t.Kind, t.Host, t.Port, dash(t.ManagementAccount), when(t.CreatedAt))
				}
			})
		},
	}
}

func (e *env) targetShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show a target",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			t, err := c.Target(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return e.printTarget(t)
		},
	}
}

func (e *env) printTarget(t client.Target) error {
	return e.print(t, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "Name\t%s\nKind\t%s\nHost\t%s\nPort\t%d\n", t.Name, t.Kind, t.Host, t.Port)
		for _, k := range slices.Sorted(maps.Keys(t.Options)) {
			fmt.Fprintf(w, "Option\t%s=%s\n", k, t.Options[k])
		}
		fmt.Fprintf(w, "Management account\t%s\n", dash(t.ManagementAccount))
		fmt.Fprintf(w, "Password policy\t%s\n", policyText(t.PasswordPolicy))
		fmt.Fprintf(w, "Concurrent rotations\t%d\n", t.MaxConcurrentRotations)
		for i, r := range t.Rules {
			fmt.Fprintf(w, "Rule %d\t%s %s\n", i+1, r.Action, r.Pattern)
		}
		fmt.Fprintf(w, "Created\t%s\n", when(t.CreatedAt))
	})
}

// policyText describes a password policy in a few words.
func policyText(p *client.PasswordPolicy) string {
	if p == nil {
		return "default"
	}
	length := "32"
	if p.Length > 0 {
		length = fmt.Sprint(p.Length)
	}
	var classes []string
	for _, c := range []struct {
		on   bool
		name string
	}{{p.Lower, "lower"}, {p.Upper, "upper"}, {p.Digits, "digits"}, {p.Symbols, "symbols"}} {
		if c.on {
			classes = append(classes, c.name)
		}
	}
	if len(classes) == 0 {
		classes = []string{"all classes"}
	}
	s := length + " characters, " + strings.Join(classes, ",")
	if p.Forbidden != "" {
		s += fmt.Sprintf(", never %q", p.Forbidden)
	}
	return s
}

func (e *env) targetRemoveCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"remove"},
		Short:   "Remove a target that has no accounts left",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			if err := c.DeleteTarget(cmd.Context(), args[0]); err != nil {
				return err
			}
			return e.printDeleted("target", args[0])
		},
	}
}

func (e *env) targetRotateCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "rotate NAME",
		Short: "Rotate every account of a target now; exit 1 if any rotation failed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			res, err := c.RotateTarget(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if res.Results == nil {
				res.Results = []client.RotationResult{}
			}
			if err := e.print(res, func(w *tabwriter.Writer) {
				printRotationHeader(w)
				for _, r := range res.Results {
					printRotation(w, r)
				}
			}); err != nil {
				return err
			}
			failed := 0
			for _, r := range res.Results {
				if r.Failed() {
					failed++
				}
			}
			if failed == 0 && res.Error == "" {
				return nil
			}
			msg := fmt.Sprintf("%d of %d rotations on %s failed", failed, len(res.Results), args[0])
			if res.Error != "" {
				msg += ": " + res.Error
			}
			fmt.Fprintln(e.stderr, "Error:", msg)
			return exitError{1}
		},
	}
}

func printRotationHeader(w *tabwriter.Writer) {
	fmt.Fprintln(w, "ACCOUNT\tOUTCOME\tVERSION\tPROBLEMS")
}

func printRotation(w *tabwriter.Writer, r client.RotationResult) {
	var problems []string
	if r.Error != "" {
		problems = append(problems, r.Error)
	}
	for _, d := range r.FailedDependents {
		problems = append(problems, "dependent "+d)
	}
	version := "-"
	if r.Version > 0 {
		version = fmt.Sprint(r.Version)
	}
	fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", dash(r.Account), dash(r.Outcome), version, dash(strings.Join(problems, "; ")))
}
