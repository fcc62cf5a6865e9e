package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// userResetMFACommand is "warder user reset-mfa NAME".
func (e *env) userResetMFACommand() *cobra.Command {
	return &cobra.Command{
		Use:   "reset-mfa NAME",
		Short: "Remove a user's TOTP enrollment and recovery codes, for a lost authenticator",
		Long: `Remove the user's TOTP enrollment (pending or confirmed) and their
recovery codes. Until they enroll again ("warder mfa enroll totp"), they
log in with their password alone: check who is asking before resetting.
The reset is audited as identity.totp.disable.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			if err := c.ResetUserMFA(cmd.Context(), args[0]); err != nil {
				return err
			}
			return e.print(struct {
				MFAReset string `json:"mfa_reset"`
			}{args[0]}, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "Reset the MFA of user %s: they log in with their password until they enroll again.\n", args[0])
			})
		},
	}
}
