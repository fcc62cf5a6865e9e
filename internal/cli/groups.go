package cli

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/warderhq/warder/internal/client"
)

func (e *env) groupCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "group", Short: "Manage groups of users, machines and other groups"}
	cmd.AddCommand(e.groupCreateCommand(), e.groupListCommand(), e.groupShowCommand(),
		e.groupMemberCommand(true), e.groupMemberCommand(false))
	return cmd
}

func (e *env) groupCreateCommand() *cobra.Command {
	var description string
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an empty group",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			g, err := c.CreateGroup(cmd.Context(), args[0], description)
			if err != nil {
				return err
			}
			return e.printGroup(g)
		},
	}
	cmd.Flags().StringVar(&description, "description", "", "what the group is for")
	return cmd
}

func (e *env) groupListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List groups",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			groups, err := c.Groups(cmd.Context())
			if err != nil {
				return err
			}
			if groups == nil {
				groups = []client.Group{}
			}
			return e.print(groups, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "NAME\tMEMBERS\tDESCRIPTION")
				for _, g := range groups {
					fmt.Fprintf(w, "%s\t%d\t%s\n", g.Name, len(g.Members), dash(g.Description))
				}
			})
		},
	}
}

func (e *env) groupShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show a group and its direct members",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			g, err := c.Group(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return e.printGroup(g)
		},
	}
}

// groupMemberCommand is add-member (add true) or remove-member.
func (e *env) groupMemberCommand(add bool) *cobra.Command {
	var user, group, machine string
	use, short := "add-member", "Add a user, group or machine to a group"
	if !add {
		use, short = "remove-member", "Remove a user, group or machine from a group"
	}
	cmd := &cobra.Command{
		Use:   use + " GROUP (--user U | --group G | --machine M)",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var members []client.Member
			for _, m := range []client.Member{{Kind: "user", Name: user}, {Kind: "group", Name: group}, {Kind: "machine", Name: machine}} {
				if m.Name != "" {
					members = append(members, m)
				}
			}
			if len(members) != 1 {
				return usageError{errors.New("give exactly one of --user, --group or --machine")}
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			var g client.Group
			if add {
				g, err = c.AddGroupMember(cmd.Context(), args[0], members[0])
			} else {
				g, err = c.RemoveGroupMember(cmd.Context(), args[0], members[0])
			}
			if err != nil {
				return err
			}
			return e.printGroup(g)
		},
	}
	cmd.Flags().StringVar(&user, "user", "", "the member is this user")
	cmd.Flags().StringVar(&group, "group", "", "the member is this group")
	cmd.Flags().StringVar(&machine, "machine", "", "the member is this machine")
	return cmd
}

func (e *env) printGroup(g client.Group) error {
	if g.Members == nil {
		g.Members = []client.Member{}
	}
	return e.print(g, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "Name\t%s\n", g.Name)
		fmt.Fprintf(w, "Description\t%s\n", dash(g.Description))
		fmt.Fprintf(w, "Created\t%s\n", when(g.CreatedAt))
		ms := make([]string, len(g.Members))
		for i, m := range g.Members {
			ms[i] = m.String()
		}
		fmt.Fprintf(w, "Members\t%s\n", dash(strings.Join(ms, ", ")))
	})
}
