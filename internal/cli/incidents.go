package cli

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/warderhq/warder/internal/client"
)

func (e *env) incidentCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "incident",
		Short: "List and review the post-incident reviews of emergency (break-glass) access",
		Long: `Every emergency activation of a break-glass role ("warder request create
--emergency") opens a post-incident review. It stays open until an
approver of the role, other than the person who used it, reviews it
after the grant ended.`,
	}
	cmd.AddCommand(e.incidentListCommand(), e.incidentReviewCommand())
	return cmd
}

func (e *env) incidentListCommand() *cobra.Command {
	var open bool
	cmd := &cobra.Command{
		Use:     "ls [--open]",
		Aliases: []string{"list"},
		Short:   "List post-incident reviews: those you review, or all (administrators)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			incs, err := c.Incidents(cmd.Context(), open)
			if err != nil {
				return err
			}
			if incs == nil {
				incs = []client.Incident{}
			}
			return e.print(incs, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "ID\tROLE\tPRINCIPAL\tSTATUS\tOPENED\tREVIEWER")
				for _, in := range incs {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", in.ID, in.Role, in.Principal, in.Status, when(in.OpenedAt), dash(in.Reviewer))
				}
			})
		},
	}
	cmd.Flags().BoolVar(&open, "open", false, "only reviews still open")
	return cmd
}

func (e *env) incidentReviewCommand() *cobra.Command {
	var notes string
	cmd := &cobra.Command{
		Use:   "review ID --notes TEXT",
		Short: "Close a post-incident review with your findings",
		Long: `Close the post-incident review ID, recording what the emergency access
was used for and what follows from it. Only an approver of the role other
than the person who used it may, once the grant has ended.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(notes) == "" {
				return usageError{errors.New("--notes is required: record what the review found")}
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			in, err := c.ReviewIncident(cmd.Context(), args[0], notes)
			if err != nil {
				return err
			}
			return e.printIncident(in)
		},
	}
	cmd.Flags().StringVar(&notes, "notes", "", "what the review found (required)")
	return cmd
}

func (e *env) printIncident(in client.Incident) error {
	return e.print(in, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "ID\t%s\n", in.ID)
		fmt.Fprintf(w, "Role\t%s\n", in.Role)
		fmt.Fprintf(w, "Principal\t%s\n", in.Principal)
		fmt.Fprintf(w, "Status\t%s\n", in.Status)
		fmt.Fprintf(w, "Reason\t%s\n", dash(in.Reason))
		fmt.Fprintf(w, "Ticket\t%s\n", dash(in.Ticket))
		fmt.Fprintf(w, "Grant\t%s\n", dash(in.GrantID))
		fmt.Fprintf(w, "Request\t%s\n", dash(in.RequestID))
		fmt.Fprintf(w, "Approvers\t%s\n", dash(in.ApproverGroup))
		fmt.Fprintf(w, "Opened\t%s\n", when(in.OpenedAt))
		if in.Reviewer != "" || !in.ReviewedAt.IsZero() {
			fmt.Fprintf(w, "Reviewed\t%s by %s\n", when(in.ReviewedAt), dash(in.Reviewer))
		}
		fmt.Fprintf(w, "Notes\t%s\n", dash(in.Notes))
	})
}
