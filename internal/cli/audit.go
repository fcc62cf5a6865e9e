package cli

import (
	"bufio"
	"fmt"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/client"
)

func (e *env) auditCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Read, verify and export the tamper-evident audit trail"}
	cmd.AddCommand(e.auditListCommand(), e.auditVerifyCommand(), e.auditExportCommand())
	return cmd
}

// filterFlags registers the event filters shared by ls and export.
func filterFlags(cmd *cobra.Command, f *client.AuditFilter, since, until *string) {
	cmd.Flags().StringVar(&f.Actor, "actor", "", "only events by this actor (e.g. user:alice, machine:ci, system:dev, anonymous)")
	cmd.Flags().StringVar(&f.Action, "action", "", "only events with this action (e.g. sys.unseal)")
	cmd.Flags().StringVar(since, "since", "", "only events at or after this time (RFC 3339, or a duration such as 1h meaning that long ago)")
	cmd.Flags().StringVar(until, "until", "", "only events before this time (RFC 3339 or duration ago)")
}

func parseWhen(s, name string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, usageError{fmt.Errorf("--%s: %q is neither an RFC 3339 time nor a duration", name, s)}
	}
	return t, nil
}

func (f *filterArgs) resolve() (client.AuditFilter, error) {
	var err error
	if f.filter.Since, err = parseWhen(f.since, "since"); err != nil {
		return f.filter, err
	}
	f.filter.Until, err = parseWhen(f.until, "until")
	return f.filter, err
}

type filterArgs struct {
	filter       client.AuditFilter
	since, until string
}

func (e *env) auditListCommand() *cobra.Command {
	var fa filterArgs
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the newest audit events (or page forward with --after), oldest first",
		Long: `List audit events, oldest first.

By default ls shows the newest --limit events that match. --before SEQ shows
the newest ones before that event (page backwards); --after SEQ shows the
oldest ones after it (page forwards; --after 0 starts at the first event).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			f, err := fa.resolve()
			if err != nil {
				return err
			}
			f.Desc = !cmd.Flags().Changed("after")
			page, err := c.AuditList(cmd.Context(), f)
			if err != nil {
				return err
			}
			evs := page.Events
			if evs == nil {
				evs = []audit.Event{}
			}
			if f.Desc {
				slices.Reverse(evs)
			}
			if err := e.print(evs, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "SEQ\tTIME\tACTOR\tACTION\tRESOURCE\tOUTCOME\tSOURCE")
				for _, ev := range evs {
					fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", ev.Seq, ev.Time.Format(time.RFC3339), ev.Actor, ev.Action, dash(ev.Resource), ev.Outcome, dash(ev.Source))
				}
			}); err != nil {
				return err
			}
			if page.More && e.format == "table" && len(evs) > 0 {
				if f.Desc {
					fmt.Fprintf(e.stderr, "(showing the last %d matching events; use --before %d for older ones, or --after/--limit to page)\n", len(evs), evs[0].Seq)
				} else {
					fmt.Fprintf(e.stderr, "(showing %d matching events; use --after %d for the next ones)\n", len(evs), evs[len(evs)-1].Seq)
				}
			}
			return nil
		},
	}
	filterFlags(cmd, &fa.filter, &fa.since, &fa.until)
	cmd.Flags().Int64Var(&fa.filter.After, "after", 0, "show the oldest events after this sequence number (page forwards)")
	cmd.Flags().Int64Var(&fa.filter.Before, "before", 0, "show the newest events before this sequence number (page backwards)")
	cmd.Flags().IntVar(&fa.filter.Limit, "limit", 100, "at most this many events (1..1000)")
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (e *env) auditVerifyCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "verify",
		Short: "Verify the hash chain and signed checkpoints; exit 1 naming the first bad event",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			rep, err := c.AuditVerify(cmd.Context())
			if err != nil {
				return err
			}
			if err := e.print(rep, func(w *tabwriter.Writer) {
				if rep.OK {
					fmt.Fprintf(w, "Audit trail intact: %d events, %d signed checkpoints, head %s\n", rep.Events, rep.Checkpoints, rep.Head)
				} else {
					fmt.Fprintf(w, "Audit trail BROKEN: checked %d events, %d checkpoints\n", rep.Events, rep.Checkpoints)
				}
			}); err != nil {
				return err
			}
			if !rep.OK {
				if rep.FirstBad != nil {
					fmt.Fprintf(e.stderr, "Error: audit trail broken at event %d: %s\n", rep.FirstBad.Seq, rep.FirstBad.Reason)
				} else {
					fmt.Fprintln(e.stderr, "Error: audit trail broken")
				}
				return exitError{1}
			}
			return nil
		},
	}
}

func (e *env) auditExportCommand() *cobra.Command {
	var fa filterArgs
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Export audit events as JSON Lines (--format jsonl) to stdout",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("format") && e.format != "jsonl" {
				return usageError{fmt.Errorf("audit export writes JSON Lines: use --format jsonl")}
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			f, err := fa.resolve()
			if err != nil {
				return err
			}
			w := bufio.NewWriterSize(e.stdout, 64<<10)
			if err := c.AuditExport(cmd.Context(), w, f); err != nil {
				return err
			}
			return w.Flush()
		},
	}
	filterFlags(cmd, &fa.filter, &fa.since, &fa.until)
	return cmd
}
