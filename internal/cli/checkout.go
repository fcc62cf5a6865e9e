package cli

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/warderhq/warder/internal/client"
)

func (e *env) checkoutCommand() *cobra.Command {
	var (
		req  client.CheckoutRequest
		wait bool
	)
	cmd := &cobra.Command{
		Use:   "checkout TARGET/USER --reason TEXT",
		Short: "Check out an account's credential, or list, extend and end leases",
		Long: `Check out an account: open a lease and print its credential, once.

When the account is fully checked out, checkout fails naming who holds it
and until when; with --wait it joins the account's waitlist and returns
when served (Ctrl-C gives up). Return the credential with
"warder checkin TARGET/USER": by default the account is then rotated, so
the credential you saw stops working.

With --format json the answer is one object with lease_id, account, holder,
reason, ticket, checked_out_at, expires_at and password or private_key.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError{fmt.Errorf("checkout takes TARGET/USER or one of the subcommands ls, extend, force-checkin")}
			}
			if !strings.Contains(args[0], "/") {
				return usageError{fmt.Errorf("%q is neither TARGET/USER nor a subcommand (ls, extend, force-checkin)", args[0])}
			}
			return accountArg(args[0])
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			account := args[0]
			if strings.TrimSpace(req.Reason) == "" {
				return usageError{errors.New("--reason is required: say why you need the credential")}
			}
			if req.TTL < 0 {
				return usageError{errors.New("--ttl must not be negative")}
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			res, err := c.Checkout(ctx, account, req)
			if err != nil && wait && client.IsCode(err, "conflict") {
				// Fully checked out: say where we stand, then wait with no
				// deadline but the user's patience.
				e.announceWait(cmd, c, account)
				wctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
				defer stop()
				wreq := req
				wreq.Wait = true
				res, err = c.WithoutTimeout().Checkout(wctx, account, wreq)
				if err != nil && wctx.Err() != nil && ctx.Err() == nil {
					return fmt.Errorf("gave up waiting for %s", account)
				}
			}
			if err != nil {
				return err
			}
			return e.print(res, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "Account\t%s\n", res.Account)
				fmt.Fprintf(w, "Lease\t%s\n", res.ID)
				fmt.Fprintf(w, "Expires\t%s (in %s)\n", when(res.ExpiresAt), time.Until(res.ExpiresAt).Round(time.Second))
				switch {
				case res.Password != "":
					fmt.Fprintf(w, "Password\t%s\n", res.Password)
				case res.PrivateKey != "":
					fmt.Fprintf(w, "Private key\t(below)\n\n")
				}
				w.Flush()
				if res.PrivateKey != "" {
					fmt.Fprint(e.stdout, strings.TrimRight(res.PrivateKey, "\n")+"\n")
				}
				fmt.Fprintf(e.stderr, "The credential is shown only this once. Return it with: warder checkin %s\n", res.Account)
			})
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&req.Reason, "reason", "", "why you need the credential (required)")
	fs.StringVar(&req.Ticket, "ticket", "", "change or incident ticket id")
	fs.DurationVar(&req.TTL, "ttl", 0, "lease lifetime, such as 1h (default: the server's)")
	fs.BoolVar(&wait, "wait", false, "when the account is fully checked out, wait in line for it (Ctrl-C gives up)")
	cmd.AddCommand(e.checkoutListCommand(), e.checkoutExtendCommand(), e.checkoutForceCheckinCommand())
	return cmd
}

// announceWait tells stderr that the checkout waits, with the place in
// line when the server lists the waitlist.
func (e *env) announceWait(cmd *cobra.Command, c *client.Client, account string) {
	ll, err := c.Leases(cmd.Context(), account)
	if err != nil {
		fmt.Fprintf(e.stderr, "waiting for %s…\n", account)
		return
	}
	ahead := 0
	for _, w := range ll.Waiting {
		if w.Account == account {
			ahead++
		}
	}
	fmt.Fprintf(e.stderr, "waiting for %s (position %d)…\n", account, ahead+1)
}

func (e *env) checkinCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "checkin TARGET/USER",
		Short: "Return a checked-out credential, ending your lease",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := accountArg(args[0]); err != nil {
				return err
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			l, err := c.Checkin(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return e.print(l, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "Checked in %s (lease %s).\n", l.Account, l.ID)
			})
		},
	}
}

func (e *env) checkoutListCommand() *cobra.Command {
	var account string
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List open leases (holders, expiry) and who is waiting",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if account != "" {
				if err := accountArg(account); err != nil {
					return err
				}
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			ll, err := c.Leases(cmd.Context(), account)
			if err != nil {
				return err
			}
			if ll.Leases == nil {
				ll.Leases = []client.Lease{}
			}
			if ll.Waiting == nil {
				ll.Waiting = []client.Waiter{}
			}
			return e.print(ll, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "LEASE\tACCOUNT\tHOLDER\tCHECKED OUT\tEXPIRES\tTICKET\tREASON")
				for _, l := range ll.Leases {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", l.ID, l.Account, l.Holder, when(l.CheckedOutAt), when(l.ExpiresAt), dash(l.Ticket), l.Reason)
				}
				if len(ll.Waiting) == 0 {
					return
				}
				fmt.Fprintln(w, "\nPOSITION\tACCOUNT\tWAITING\tSINCE")
				for _, q := range ll.Waiting {
					fmt.Fprintf(w, "%d\t%s\t%s\t%s\n", q.Position, q.Account, q.Principal, when(q.EnqueuedAt))
				}
			})
		},
	}
	cmd.Flags().StringVar(&account, "account", "", "only leases of this account, TARGET/USER")
	return cmd
}

func (e *env) checkoutExtendCommand() *cobra.Command {
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "extend LEASE_ID --ttl DURATION",
		Short: "Extend your lease to end the --ttl duration from now (within the policy's maximum)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if ttl <= 0 {
				return usageError{errors.New("--ttl is required and must be positive, such as 30m")}
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			l, err := c.ExtendLease(cmd.Context(), args[0], ttl)
			if err != nil {
				return err
			}
			return e.print(l, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "Lease %s on %s now expires %s.\n", l.ID, l.Account, when(l.ExpiresAt))
			})
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "new lifetime from now, such as 30m (required)")
	return cmd
}

func (e *env) checkoutForceCheckinCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "force-checkin LEASE_ID",
		Short: "End anyone's lease now (administrators)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			l, err := c.ForceCheckin(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return e.print(l, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "Ended lease %s of %s on %s.\n", l.ID, l.Holder, l.Account)
			})
		},
	}
}
