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

func (e *env) roleCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "role",
		Short: "Manage just-in-time access roles and who is eligible for them",
		Long: `Manage just-in-time access roles. Nobody holds a role: eligible users
and groups request it for a time ("warder request create"), and once
approved hold a grant that ends on its own ("warder grant ls").`,
	}
	cmd.AddCommand(e.roleCreateCommand(), e.roleListCommand(), e.roleShowCommand(), e.roleDeleteCommand(),
		e.roleEligibleCommand(), e.roleEligibilityCommand(), e.roleIneligibleCommand())
	return cmd
}

func (e *env) roleCreateCommand() *cobra.Command {
	var (
		policyFile, ephTarget string
		ephRoles              []string
		r                     client.NewRole
	)
	cmd := &cobra.Command{
		Use:   "create NAME --policy FILE.cedar",
		Short: "Create a role from a Cedar policy template",
		Long: `Create a role. FILE holds the Cedar template a grant of the role links
to its holder (at most 64 KiB; "-" reads stdin), with the slot ?principal:

    permit(principal == ?principal, action == Action::"checkout",
           resource in Target::"prod-pg");

With --ephemeral-target and --ephemeral-role, each grant also creates a
database user on that target (postgres or mysql), member of the given
database roles, dropped when the grant ends.

A --break-glass role is sealed in normal operation: its eligibilities
need at least two approvals, and --allow-emergency on one ("warder role
eligible") lets its subject open the role at once in an emergency. Each
--rotate-account TARGET/USER is rotated when a grant of the role ends, so
a credential seen under the grant is worthless afterwards.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if policyFile == "" {
				return usageError{errors.New("--policy FILE.cedar is required (- reads stdin)")}
			}
			if (ephTarget == "") != (len(ephRoles) == 0) {
				return usageError{errors.New("--ephemeral-target and --ephemeral-role go together")}
			}
			for _, id := range r.RotateAccounts {
				if t, u, ok := strings.Cut(id, "/"); !ok || t == "" || u == "" || strings.Contains(u, "/") {
					return usageError{fmt.Errorf("--rotate-account %q: want TARGET/USER, such as prod-pg/postgres", id)}
				}
			}
			text, err := e.readPolicyFile(policyFile)
			if err != nil {
				return err
			}
			r.Name, r.Template = args[0], text
			if ephTarget != "" {
				r.Ephemeral = &client.EphemeralRole{Target: ephTarget, Roles: ephRoles}
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			role, err := c.CreateRole(cmd.Context(), r)
			if err != nil {
				return err
			}
			return e.printRole(role)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&policyFile, "policy", "", "Cedar template file with ?principal (required; - reads stdin)")
	fs.StringVar(&r.Description, "description", "", "what the role is for")
	fs.StringVar(&ephTarget, "ephemeral-target", "", "create a database user on this target for each grant")
	fs.StringArrayVar(&ephRoles, "ephemeral-role", nil, "database role the ephemeral user is a member of (repeatable)")
	fs.BoolVar(&r.BreakGlass, "break-glass", false, "mark the role break-glass: sealed in normal operation")
	fs.StringArrayVar(&r.RotateAccounts, "rotate-account", nil, "vault account TARGET/USER to rotate when a grant of the role ends (repeatable)")
	return cmd
}

func (e *env) roleListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List roles",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			roles, err := c.Roles(cmd.Context())
			if err != nil {
				return err
			}
			if roles == nil {
				roles = []client.Role{}
			}
			return e.print(roles, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "NAME\tBREAK-GLASS\tEPHEMERAL\tDESCRIPTION")
				for _, r := range roles {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", r.Name, yesNo(r.BreakGlass), ephemeralRole(r.Ephemeral), dash(r.Description))
				}
			})
		},
	}
}

func (e *env) roleShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show a role and its Cedar template",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			r, err := c.Role(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return e.printRole(r)
		},
	}
}

func (e *env) roleDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"delete"},
		Short:   "Delete a role that has no live grant or request",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			if err := c.DeleteRole(cmd.Context(), args[0]); err != nil {
				return err
			}
			return e.printDeleted("role", args[0])
		},
	}
}

// subjectFlags are --user and --group, of which exactly one names a
// subject.
type subjectFlags struct{ user, group string }

func (s *subjectFlags) register(cmd *cobra.Command, verb string) {
	cmd.Flags().StringVar(&s.user, "user", "", verb+" this user")
	cmd.Flags().StringVar(&s.group, "group", "", verb+" every member of this group")
}

func (s *subjectFlags) subject() (client.Subject, error) {
	switch {
	case (s.user == "") == (s.group == ""):
		return client.Subject{}, usageError{errors.New("give exactly one of --user or --group")}
	case s.user != "":
		return client.Subject{Kind: "user", Name: s.user}, nil
	default:
		return client.Subject{Kind: "group", Name: s.group}, nil
	}
}

// defaultMaxTTL is --max-ttl when not given: the server requires one.
const defaultMaxTTL = 8 * time.Hour

func (e *env) roleEligibleCommand() *cobra.Command {
	var (
		sf     subjectFlags
		el     client.NewEligibility
		maxTTL time.Duration
	)
	cmd := &cobra.Command{
		Use:   "eligible ROLE (--user U | --group G)",
		Short: "Let a user or group request a role, on terms",
		Long: `Let a user or every member of a group request ROLE, replacing the terms
they had. With --approvals 0 (the default) a request is granted at once
(self-activation); otherwise it needs that many distinct members of
--approver-group, never the requester.

For a break-glass role (at least two approvals), --allow-emergency lets
the subject skip the approvals in an emergency ("warder request create
--emergency"): the role opens at once, approvers are alerted, and a
post-incident review stays open until one of them reviews it ("warder
incident review").`,
		Example: `  warder role eligible prod-dba --group dba --approvals 1 --approver-group dba-leads \
      --max-ttl 2h --require-ticket '^INC-[0-9]+$' --require-mfa`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := sf.subject()
			if err != nil {
				return err
			}
			switch {
			case el.Approvals < 0:
				return usageError{errors.New("--approvals must not be negative")}
			case el.Approvals > 0 && el.ApproverGroup == "":
				return usageError{errors.New("--approvals needs --approver-group: who approves")}
			case el.Approvals == 0 && el.ApproverGroup != "":
				return usageError{errors.New("--approver-group needs --approvals N (N > 0)")}
			case maxTTL <= 0:
				return usageError{errors.New("--max-ttl must be positive, such as 2h")}
			}
			el.User, el.Group = "", ""
			if s.Kind == "user" {
				el.User = s.Name
			} else {
				el.Group = s.Name
			}
			el.MaxTTL = client.Duration(maxTTL)
			c, err := e.client()
			if err != nil {
				return err
			}
			res, err := c.SetEligibility(cmd.Context(), args[0], el)
			if err != nil {
				return err
			}
			return e.print(res, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "Role\t%s\n", res.Role)
				fmt.Fprintf(w, "Subject\t%s\n", res.Subject)
				fmt.Fprintf(w, "Approvals\t%s\n", approvalTerms(res))
				fmt.Fprintf(w, "Max TTL\t%s\n", res.MaxTTL)
				fmt.Fprintf(w, "Ticket\t%s\n", ticketTerms(res.RequireTicket))
				fmt.Fprintf(w, "Reason\t%s\n", reasonTerms(res.ReasonOptional))
				fmt.Fprintf(w, "MFA\t%s\n", mfaTerms(res.RequireMFA))
				fmt.Fprintf(w, "Emergency\t%s\n", emergencyTerms(res.AllowEmergency))
			})
		},
	}
	sf.register(cmd, "make eligible")
	fs := cmd.Flags()
	fs.IntVar(&el.Approvals, "approvals", 0, "approvals a request needs (0: self-activation)")
	fs.StringVar(&el.ApproverGroup, "approver-group", "", "group whose members approve (with --approvals)")
	fs.DurationVar(&maxTTL, "max-ttl", defaultMaxTTL, "longest grant a request may ask for")
	fs.StringVar(&el.RequireTicket, "require-ticket", "", "require a ticket id matching this RE2 pattern, such as '^INC-[0-9]+$'")
	fs.BoolVar(&el.RequireMFA, "require-mfa", false, "require a recent second factor of the requester and each approver")
	fs.BoolVar(&el.ReasonOptional, "reason-optional", false, "let requests go without a reason")
	fs.BoolVar(&el.AllowEmergency, "allow-emergency", false, "let the subject open a break-glass role at once, without approvals, in an emergency")
	return cmd
}

func (e *env) roleEligibilityCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "eligibility ROLE",
		Short: "List who is eligible for a role, and on what terms",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			els, err := c.Eligibility(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if els == nil {
				els = []client.Eligibility{}
			}
			return e.print(els, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "SUBJECT\tAPPROVALS\tMAX TTL\tTICKET\tREASON\tMFA\tEMERGENCY")
				for _, el := range els {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", el.Subject, approvalTerms(el), el.MaxTTL,
						ticketTerms(el.RequireTicket), reasonTerms(el.ReasonOptional), mfaTerms(el.RequireMFA),
						emergencyTerms(el.AllowEmergency))
				}
			})
		},
	}
}

func (e *env) roleIneligibleCommand() *cobra.Command {
	var sf subjectFlags
	cmd := &cobra.Command{
		Use:   "ineligible ROLE (--user U | --group G)",
		Short: "End a user's or group's eligibility for a role (grants already made run on)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := sf.subject()
			if err != nil {
				return err
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			if err := c.DeleteEligibility(cmd.Context(), args[0], s); err != nil {
				return err
			}
			return e.print(struct {
				Deleted string         `json:"deleted"`
				Role    string         `json:"role"`
				Subject client.Subject `json:"subject"`
			}{"eligibility", args[0], s}, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "%s is no longer eligible for %s.\n", s, args[0])
			})
		},
	}
	sf.register(cmd, "for")
	return cmd
}

func (e *env) printRole(r client.Role) error {
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "Name\t%s\n", r.Name)
		fmt.Fprintf(w, "Description\t%s\n", dash(r.Description))
		fmt.Fprintf(w, "Break-glass\t%s\n", yesNo(r.BreakGlass))
		fmt.Fprintf(w, "Ephemeral user\t%s\n", ephemeralRole(r.Ephemeral))
		fmt.Fprintf(w, "Rotated on end\t%s\n", dash(strings.Join(r.RotateAccounts, ", ")))
		fmt.Fprintf(w, "Created\t%s\n", when(r.CreatedAt))
		fmt.Fprintf(w, "Template\t(below)\n\n")
		w.Flush()
		fmt.Fprint(e.stdout, strings.TrimRight(r.Template, "\n")+"\n")
	})
}

// ephemeralRole is "target: role, role", or "-".
func ephemeralRole(r *client.EphemeralRole) string {
	if r == nil {
		return "-"
	}
	return r.Target + ": " + strings.Join(r.Roles, ", ")
}

func approvalTerms(el client.Eligibility) string {
	if el.Approvals == 0 {
		return "none (self-activation)"
	}
	return fmt.Sprintf("%d from %s", el.Approvals, el.ApproverGroup)
}

func ticketTerms(pattern string) string {
	if pattern == "" {
		return "optional"
	}
	return "required, " + pattern
}

func reasonTerms(optional bool) string {
	if optional {
		return "optional"
	}
	return "required"
}

func emergencyTerms(allowed bool) string {
	if allowed {
		return "allowed"
	}
	return "-"
}

func mfaTerms(required bool) string {
	if required {
		return "required"
	}
	return "-"
}
