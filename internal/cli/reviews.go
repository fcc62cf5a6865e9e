package cli

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/warderhq/warder/internal/client"
)

func (e *env) reviewCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "review",
		Short: "Run access reviews: reviewers keep or revoke each standing assignment",
		Long: `Run access reviews (certification campaigns). A campaign lists every
standing assignment in scope: for --scope role, each eligibility for and
live grant of the role(s); for --scope group, each direct membership of the
group(s). Members of the reviewer group keep or revoke each item, never
their own access; a revocation applies at once. At the deadline every
undecided item gets the campaign's default (revoke unless told otherwise).`,
	}
	cmd.AddCommand(e.reviewStartCommand(), e.reviewListCommand(), e.reviewShowCommand(),
		e.reviewDecideCommand(), e.reviewReportCommand())
	return cmd
}

func (e *env) reviewStartCommand() *cobra.Command {
	var (
		r                client.NewReview
		deadline, period string
	)
	cmd := &cobra.Command{
		Use:   "start --scope role|group [--target NAME] (--deadline RFC3339 | --period DURATION) [--default revoke|keep] [--reviewer GROUP]",
		Short: "Start an access review of roles or groups (administrators)",
		Long: `Start an access review of one role or group (--target), or of every one
in scope. It runs until --deadline, a time such as 2030-01-31T17:00:00Z,
or for --period, a duration such as 7d, 36h or 1d12h. Members of
--reviewer (default: the server's, admins) decide each item.

With --format json the answer is the whole campaign with its items.`,
		Example: `  warder review start --scope role --target prod-dba --period 7d --reviewer security`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if r.Scope != "role" && r.Scope != "group" {
				return usageError{errors.New("--scope must be role or group")}
			}
			if r.Default != "" && r.Default != "revoke" && r.Default != "keep" {
				return usageError{fmt.Errorf("--default must be revoke or keep, not %q", r.Default)}
			}
			switch {
			case (deadline == "") == (period == ""):
				return usageError{errors.New("give exactly one of --deadline RFC3339 and --period DURATION (such as 7d)")}
			case deadline != "":
				t, err := time.Parse(time.RFC3339, deadline)
				if err != nil {
					return usageError{fmt.Errorf("--deadline %q: want an RFC 3339 time such as 2030-01-31T17:00:00Z", deadline)}
				}
				r.Deadline = t
			default:
				d, err := parsePeriod(period)
				if err != nil {
					return usageError{fmt.Errorf("--period: %w", err)}
				}
				r.Period = d
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			camp, err := c.StartReview(cmd.Context(), r)
			if err != nil {
				return err
			}
			if camp.Items == nil {
				camp.Items = []client.ReviewItem{}
			}
			if err := e.print(camp, func(w *tabwriter.Writer) { campaignSummary(w, camp) }); err != nil {
				return err
			}
			if e.format == "table" {
				fmt.Fprintf(e.stderr, "Started review %s with %d item(s); see them with \"warder review show %s\".\n",
					camp.ID, len(camp.Items), camp.ID)
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&r.Scope, "scope", "", "what to review: role (eligibilities and grants) or group (memberships) (required)")
	fs.StringVar(&r.Target, "target", "", "the role or group to review (default: every one in scope)")
	fs.StringVar(&deadline, "deadline", "", "when undecided items get the default, RFC 3339")
	fs.StringVar(&period, "period", "", "how long the review runs, such as 7d or 36h")
	fs.StringVar(&r.Default, "default", "", "decision for items undecided at the deadline: revoke or keep (default: revoke)")
	fs.StringVar(&r.Reviewer, "reviewer", "", "group whose members decide (default: admins)")
	return cmd
}

// parsePeriod reads a Go duration ("36h"), optionally led by whole days
// ("7d", "1d12h"), and requires it to be positive.
func parsePeriod(s string) (time.Duration, error) {
	var d time.Duration
	rest := s
	if i := strings.IndexByte(s, 'd'); i >= 0 {
		days, err := strconv.Atoi(s[:i])
		if err != nil || days < 0 || days > 10000 {
			return 0, fmt.Errorf("%q: want a duration such as 7d, 36h or 1d12h", s)
		}
		d, rest = time.Duration(days)*24*time.Hour, s[i+1:]
	}
	if rest != "" {
		x, err := time.ParseDuration(rest)
		if err != nil || rest[0] == '-' || rest[0] == '+' {
			return 0, fmt.Errorf("%q: want a duration such as 7d, 36h or 1d12h", s)
		}
		d += x
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q: must be positive", s)
	}
	return d, nil
}

func (e *env) reviewListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List access reviews you decide in, or all (administrators)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			cs, err := c.Reviews(cmd.Context())
			if err != nil {
				return err
			}
			if cs == nil {
				cs = []client.Campaign{}
			}
			return e.print(cs, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "ID\tSCOPE\tTARGET\tREVIEWER\tDEFAULT\tSTATUS\tDEADLINE")
				for _, c := range cs {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.ID, c.Scope, reviewTarget(c.Target), c.Reviewer, c.Default, c.Status, when(c.Deadline))
				}
			})
		},
	}
}

func (e *env) reviewShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show an access review and its items",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			camp, err := c.Review(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if camp.Items == nil {
				camp.Items = []client.ReviewItem{}
			}
			return e.print(camp, func(w *tabwriter.Writer) {
				campaignSummary(w, camp)
				fmt.Fprintln(w)
				fmt.Fprintln(w, "ITEM\tKIND\tSUBJECT\tDETAIL\tDECISION\tDECIDED BY")
				for _, it := range camp.Items {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", it.ID, it.Kind, it.Subject, dash(it.Detail), itemDecision(it), itemDecider(it))
				}
			})
		},
	}
}

func (e *env) reviewDecideCommand() *cobra.Command {
	var comment string
	cmd := &cobra.Command{
		Use:   "decide ID ITEM keep|revoke [--comment TEXT]",
		Short: "Keep or revoke an item of an access review; a revocation applies at once",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			decision := args[2]
			if decision != "keep" && decision != "revoke" {
				return usageError{fmt.Errorf("the decision must be keep or revoke, not %q", decision)}
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			it, err := c.DecideReview(cmd.Context(), args[0], args[1], decision, comment)
			if err != nil {
				return err
			}
			return e.print(it, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "Item\t%s\n", it.ID)
				fmt.Fprintf(w, "Kind\t%s\n", it.Kind)
				fmt.Fprintf(w, "Subject\t%s\n", it.Subject)
				fmt.Fprintf(w, "Detail\t%s\n", dash(it.Detail))
				fmt.Fprintf(w, "Decision\t%s by %s%s\n", itemDecision(it), itemDecider(it), quoted(it.Comment))
				applied := yesNo(it.Applied)
				if it.Error != "" {
					applied += " (" + it.Error + "; retried)"
				}
				fmt.Fprintf(w, "Applied\t%s\n", applied)
			})
		},
	}
	cmd.Flags().StringVar(&comment, "comment", "", "a note for the record")
	return cmd
}

func (e *env) reviewReportCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "report ID [--format table|json|jsonl|csv]",
		Short: "Report the outcome of an access review",
		Long: `Report the outcome of an access review. --format json gives the
campaign with its items and the counts; --format csv gives the server's
CSV, one row per item, as is. The table sums up the decisions.`,
		Args:        cobra.ExactArgs(1),
		Annotations: map[string]string{formatCSV: "yes"},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			if e.format == "csv" {
				return c.ReviewReportCSV(cmd.Context(), args[0], e.stdout)
			}
			rep, err := c.ReviewReport(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if rep.Campaign.Items == nil {
				rep.Campaign.Items = []client.ReviewItem{}
			}
			return e.print(rep, func(w *tabwriter.Writer) {
				campaignSummary(w, rep.Campaign)
				n := rep.Counts
				fmt.Fprintf(w, "Kept\t%d\n", n.Kept)
				fmt.Fprintf(w, "Revoked\t%d\n", n.Revoked)
				fmt.Fprintf(w, "By default\t%d\n", n.Defaulted)
				fmt.Fprintf(w, "Undecided\t%d\n", n.Undecided)
			})
		},
	}
}

// campaignSummary writes a campaign's terms, without its items.
func campaignSummary(w *tabwriter.Writer, c client.Campaign) {
	fmt.Fprintf(w, "ID\t%s\n", c.ID)
	fmt.Fprintf(w, "Scope\t%s %s\n", c.Scope, reviewTarget(c.Target))
	fmt.Fprintf(w, "Reviewer\t%s\n", dash(c.Reviewer))
	fmt.Fprintf(w, "Default\t%s\n", dash(c.Default))
	fmt.Fprintf(w, "Deadline\t%s\n", when(c.Deadline))
	fmt.Fprintf(w, "Status\t%s\n", c.Status)
	fmt.Fprintf(w, "Created\t%s by %s\n", when(c.CreatedAt), dash(c.CreatedBy))
	if !c.ClosedAt.IsZero() {
		fmt.Fprintf(w, "Closed\t%s\n", when(c.ClosedAt))
	}
	fmt.Fprintf(w, "Items\t%d\n", len(c.Items))
}

// reviewTarget is the campaign's target, or "(all)".
func reviewTarget(t string) string {
	if t == "" {
		return "(all)"
	}
	return t
}

// itemDecision is the item's decision, marked when the deadline made it.
func itemDecision(it client.ReviewItem) string {
	switch {
	case it.Decision == "":
		return "-"
	case it.Defaulted:
		return it.Decision + " (default)"
	}
	return it.Decision
}

// itemDecider is who decided the item: a reviewer, the deadline, or "-".
func itemDecider(it client.ReviewItem) string {
	if it.DecidedBy == "" && it.Defaulted {
		return "deadline"
	}
	return dash(it.DecidedBy)
}
