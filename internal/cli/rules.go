package cli

import (
	"fmt"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/warderhq/warder/internal/client"
)

// targetRuleCommand manages a target's command/statement rules. The
// server stores the whole list; add and rm read it, change it and write it
// back.
func (e *env) targetRuleCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rule",
		Short: "Manage a target's command (SSH) or statement (PostgreSQL) rules: alert or block on a regular expression",
		Long: `Rules are regular expressions (RE2 syntax; (?i) for case-insensitive)
matched against each command line typed in an SSH session, or each SQL
statement of a database session, of the target. "alert" records and audits
the match and lets it through; "block" does not send it and tells the user
why. Rules are a guard rail against mistakes, not a sandbox: a determined
user can phrase a command so no pattern matches (docs/security.md).
New sessions apply the rules in force when they start.`,
	}
	cmd.AddCommand(e.targetRuleAddCommand(), e.targetRuleListCommand(), e.targetRuleRemoveCommand())
	return cmd
}

func (e *env) targetRuleAddCommand() *cobra.Command {
	var r client.Rule
	cmd := &cobra.Command{
		Use:   "add TARGET --pattern REGEXP [--action alert|block] [--message TEXT]",
		Short: "Add a rule to a target",
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
			t, err = c.SetTargetRules(cmd.Context(), args[0], append(t.Rules, r))
			if err != nil {
				return err
			}
			return e.printRules(t.Rules)
		},
	}
	cmd.Flags().StringVar(&r.Pattern, "pattern", "", "regular expression matched against each command line or statement (required)")
	cmd.Flags().StringVar(&r.Action, "action", "block", "alert or block")
	cmd.Flags().StringVar(&r.Message, "message", "", "told to the user when a command is blocked")
	_ = cmd.MarkFlagRequired("pattern")
	return cmd
}

func (e *env) targetRuleListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "ls TARGET",
		Aliases: []string{"list"},
		Short:   "List a target's rules, numbered",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			t, err := c.Target(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return e.printRules(t.Rules)
		},
	}
}

func (e *env) targetRuleRemoveCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "rm TARGET N",
		Aliases: []string{"remove"},
		Short:   "Remove rule number N (as listed by rule ls) from a target",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			t, err := c.Target(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			n, err := strconv.Atoi(args[1])
			if err != nil || n < 1 || n > len(t.Rules) {
				return fmt.Errorf("rule %q: target %s has %d rules; give a number from rule ls", args[1], args[0], len(t.Rules))
			}
			rules := append(t.Rules[:n-1:n-1], t.Rules[n:]...)
			t, err = c.SetTargetRules(cmd.Context(), args[0], rules)
			if err != nil {
				return err
			}
			return e.printRules(t.Rules)
		},
	}
}

func (e *env) printRules(rules []client.Rule) error {
	if rules == nil {
		rules = []client.Rule{}
	}
	return e.print(rules, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "N\tACTION\tPATTERN\tMESSAGE")
		for i, r := range rules {
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\n", i+1, r.Action, r.Pattern, dash(r.Message))
		}
	})
}
