package cli

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/warderhq/warder/internal/client"
)

func (e *env) requestCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "request",
		Short: "Request a role for a time, and approve, deny or cancel requests",
	}
	cmd.AddCommand(e.requestCreateCommand(), e.requestListCommand(), e.requestShowCommand(),
		e.requestDecideCommand(true), e.requestDecideCommand(false), e.requestCancelCommand())
	return cmd
}

func (e *env) requestCreateCommand() *cobra.Command {
	var r client.NewRequest
	cmd := &cobra.Command{
		Use:   "create --role ROLE --ttl DURATION --reason TEXT [--ticket ID] [--emergency]",
		Short: "Request a role you are eligible for",
		Long: `Request ROLE for DURATION. When your eligibility needs no approval the
request is approved at once and names its grant; otherwise it stays
pending until enough approvers approve it ("warder request show ID").

With --emergency, a break-glass role whose eligibility allows emergencies
opens at once, without approvals. That raises a high-severity alert,
notifies every approver, and opens a post-incident review that stays open
until an approver reviews it ("warder incident ls").

With --format json the answer is the request object, with id and status.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case r.Role == "":
				return usageError{errors.New("--role is required")}
			case r.TTL <= 0:
				return usageError{errors.New("--ttl is required and must be positive, such as 2h")}
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			req, err := c.CreateRequest(cmd.Context(), r)
			if err != nil {
				return err
			}
			if err := e.printRequest(req); err != nil {
				return err
			}
			if e.format == "table" {
				if req.Emergency || r.Emergency {
					e.emergencyNote(req)
				}
				e.requestHint(req)
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&r.Role, "role", "", "the role to request (required)")
	fs.BoolVar(&r.Emergency, "emergency", false, "break-glass: open the role at once, without approvals (alerts approvers, opens a post-incident review)")
	fs.DurationVar(&r.TTL, "ttl", 0, "how long you need it, such as 2h (required)")
	fs.StringVar(&r.Reason, "reason", "", "why you need it (required unless the eligibility says otherwise)")
	fs.StringVar(&r.Ticket, "ticket", "", "change or incident ticket id")
	return cmd
}

// emergencyNote tells stderr, loudly, what an emergency request set off.
func (e *env) emergencyNote(r client.Request) {
	fmt.Fprintf(e.stderr, `
!!! EMERGENCY ACCESS to %s: approvals were skipped. !!!
    A high-severity alert was raised and every approver notified.
    A post-incident review is now open and stays open until an approver
    reviews it after the grant ends: see "warder incident ls --open".

`, r.Role)
}

// requestHint tells stderr what happens next to a new request.
func (e *env) requestHint(r client.Request) {
	switch {
	case r.Status == "approved" && r.GrantID != "":
		fmt.Fprintf(e.stderr, "Granted: see it with \"warder grant ls --mine\" (grant %s).\n", r.GrantID)
	case r.Status == "pending":
		fmt.Fprintf(e.stderr, "Waiting for %d approval(s) from %s; follow it with: warder request show %s\n",
			r.ApprovalsRequired-len(r.Approvals), dash(r.ApproverGroup), r.ID)
	}
}

func (e *env) requestListCommand() *cobra.Command {
	var f client.RequestFilter
	cmd := &cobra.Command{
		Use:     "ls [--mine | --pending-for-me] [--status S] [--role R]",
		Aliases: []string{"list"},
		Short:   "List requests: yours, those waiting for your approval, or all (administrators)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.Mine && f.PendingForMe {
				return usageError{errors.New("give at most one of --mine and --pending-for-me")}
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			reqs, err := c.Requests(cmd.Context(), f)
			if err != nil {
				if !f.Mine && !f.PendingForMe && client.IsCode(err, "denied") {
					return fmt.Errorf("%w\nListing every request is for administrators: list your own with --mine, or those waiting for your approval with --pending-for-me", err)
				}
				return err
			}
			if reqs == nil {
				reqs = []client.Request{}
			}
			return e.print(reqs, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "ID\tROLE\tREQUESTER\tSTATUS\tAPPROVALS\tEXPIRES")
				for _, r := range reqs {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, requestRole(r), r.Requester, r.Status, approvalCount(r), when(r.ExpiresAt))
				}
			})
		},
	}
	fs := cmd.Flags()
	fs.BoolVar(&f.Mine, "mine", false, "only your own requests")
	fs.BoolVar(&f.PendingForMe, "pending-for-me", false, "only pending requests you may approve")
	fs.StringVar(&f.Status, "status", "", "only requests in this status: pending, approved, denied, cancelled, expired")
	fs.StringVar(&f.Role, "role", "", "only requests for this role")
	return cmd
}

func (e *env) requestShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show a request and its approvals",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			r, err := c.Request(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return e.printRequest(r)
		},
	}
}

// requestDecideCommand is approve (approve true) or deny.
func (e *env) requestDecideCommand(approve bool) *cobra.Command {
	var comment string
	use, short, help := "approve ID [--comment TEXT]", "Approve a request you may approve", "a note for the record"
	if !approve {
		use, short, help = "deny ID --comment TEXT", "Deny a request you may approve, saying why", "why you deny it (required)"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !approve && strings.TrimSpace(comment) == "" {
				return usageError{errors.New("--comment is required: say why you deny the request")}
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			var r client.Request
			if approve {
				r, err = c.ApproveRequest(cmd.Context(), args[0], comment)
			} else {
				r, err = c.DenyRequest(cmd.Context(), args[0], comment)
			}
			if err != nil {
				return err
			}
			return e.printRequest(r)
		},
	}
	cmd.Flags().StringVar(&comment, "comment", "", help)
	return cmd
}

func (e *env) requestCancelCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID",
		Short: "Withdraw your own pending request",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			r, err := c.CancelRequest(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return e.printRequest(r)
		},
	}
}

func (e *env) printRequest(r client.Request) error {
	if r.Approvals == nil {
		r.Approvals = []client.Approval{}
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "ID\t%s\n", r.ID)
		fmt.Fprintf(w, "Kind\t%s\n", dash(r.Kind))
		fmt.Fprintf(w, "Role\t%s\n", r.Role)
		fmt.Fprintf(w, "Requester\t%s\n", r.Requester)
		fmt.Fprintf(w, "Status\t%s\n", r.Status)
		if r.Emergency {
			fmt.Fprintf(w, "Emergency\tyes: approvals skipped, post-incident review opened\n")
		}
		fmt.Fprintf(w, "TTL\t%s\n", time.Duration(r.TTL))
		fmt.Fprintf(w, "Reason\t%s\n", dash(r.Reason))
		fmt.Fprintf(w, "Ticket\t%s\n", dash(r.Ticket))
		approvals := approvalCount(r)
		if r.ApproverGroup != "" {
			approvals += " from " + r.ApproverGroup
		}
		if r.RequireMFA {
			approvals += ", with MFA"
		}
		fmt.Fprintf(w, "Approvals\t%s\n", approvals)
		for _, a := range r.Approvals {
			fmt.Fprintf(w, "  %s\t%s%s\n", a.Approver, when(a.At), quoted(a.Comment))
		}
		fmt.Fprintf(w, "Created\t%s\n", when(r.CreatedAt))
		fmt.Fprintf(w, "Expires\t%s\n", when(r.ExpiresAt))
		if !r.DecidedAt.IsZero() || r.DecidedBy != "" {
			fmt.Fprintf(w, "Decided\t%s by %s%s\n", when(r.DecidedAt), dash(r.DecidedBy), quoted(r.Comment))
		}
		fmt.Fprintf(w, "Grant\t%s\n", dash(r.GrantID))
	})
}

// approvalCount is "approvals/required".
func approvalCount(r client.Request) string {
	return fmt.Sprintf("%d/%d", len(r.Approvals), r.ApprovalsRequired)
}

// requestRole names the role, marking extension and emergency requests.
func requestRole(r client.Request) string {
	switch {
	case r.Kind == "extension":
		return r.Role + " (extension)"
	case r.Emergency:
		return r.Role + " (emergency)"
	}
	return r.Role
}

// quoted is `: "s"`, or "" for "".
func quoted(s string) string {
	if s == "" {
		return ""
	}
	return fmt.Sprintf(": %q", s)
}
