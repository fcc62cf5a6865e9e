package cli

import (
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/warderhq/warder/internal/cli/termqr"
)

func (e *env) mfaCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "mfa", Short: "Enroll a second factor for the logged-in user"}
	enroll := &cobra.Command{Use: "enroll", Short: "Enroll a second factor"}
	enroll.AddCommand(e.enrollTOTPCommand())
	confirm := &cobra.Command{Use: "confirm", Short: "Confirm a pending enrollment"}
	confirm.AddCommand(e.confirmTOTPCommand())
	cmd.AddCommand(enroll, confirm)
	return cmd
}

// totpResult is what the TOTP commands print with --format json.
type totpResult struct {
	Secret        string   `json:"secret,omitempty"`
	URI           string   `json:"uri,omitempty"`
	RecoveryCodes []string `json:"recovery_codes,omitempty"`
}

func (e *env) enrollTOTPCommand() *cobra.Command {
	var (
		code   string
		showQR bool
	)
	cmd := &cobra.Command{
		Use:   "totp",
		Short: "Enroll a TOTP authenticator app: show its QR code, confirm a first code, print recovery codes",
		Long: `Start a TOTP enrollment for the logged-in user. The otpauth:// URI is
printed, with a QR code to scan when stdout is a terminal (or with --qr).
Then the first code from the app confirms the enrollment: from a prompt,
or from --code. The recovery codes are printed once; store them somewhere
safe. Each replaces a TOTP code once.

With --format json nothing is asked: the output is {"secret", "uri"},
plus "recovery_codes" when --code confirmed the enrollment. Without a
code, confirm later with "warder mfa confirm totp --code CODE". Enrolling
again before confirming starts over with a new secret.`,
		Args: noArgs("give the code with --code or at the prompt"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			enr, err := c.EnrollTOTP(cmd.Context())
			if err != nil {
				return err
			}
			if e.format != "table" {
				res := totpResult{Secret: enr.Secret, URI: enr.URI}
				if code != "" {
					if res.RecoveryCodes, err = c.ConfirmTOTP(cmd.Context(), code); err != nil {
						return fmt.Errorf("%w (the enrollment is pending: confirm it with \"warder mfa confirm totp --code CODE\")", err)
					}
				}
				return e.print(res, nil)
			}
			if showQR || e.stdoutTerminal() {
				drawing, err := termqr.Render(enr.URI)
				if err != nil {
					return err
				}
				fmt.Fprintln(e.stdout, "Scan this QR code with your authenticator app:")
				fmt.Fprintln(e.stdout)
				fmt.Fprint(e.stdout, drawing)
				fmt.Fprintln(e.stdout)
			}
			fmt.Fprintf(e.stdout, "URI:    %s\nSecret: %s\n", enr.URI, enr.Secret)
			if code == "" {
				if _, tty := e.stdinTerminal(); !tty {
					fmt.Fprintln(e.stderr, `The enrollment is pending: confirm it with "warder mfa confirm totp --code CODE".`)
					return nil
				}
				if code, err = e.promptLine("First code from the app: "); err != nil {
					return err
				}
			}
			codes, err := c.ConfirmTOTP(cmd.Context(), code)
			if err != nil {
				return err
			}
			return e.printRecoveryCodes(codes)
		},
	}
	cmd.Flags().StringVar(&code, "code", "", "first code from the authenticator app, to confirm without a prompt")
	cmd.Flags().BoolVar(&showQR, "qr", false, "draw the QR code even when stdout is not a terminal")
	return cmd
}

func (e *env) confirmTOTPCommand() *cobra.Command {
	var code string
	cmd := &cobra.Command{
		Use:   "totp",
		Short: "Confirm a pending TOTP enrollment with a first code and print the recovery codes",
		Args:  noArgs("give the code with --code or at the prompt"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if code == "" {
				if _, tty := e.stdinTerminal(); !tty {
					return usageError{errors.New("--code is required when stdin is not a terminal")}
				}
				var err error
				if code, err = e.promptLine("Code from the app: "); err != nil {
					return err
				}
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			codes, err := c.ConfirmTOTP(cmd.Context(), code)
			if err != nil {
				return err
			}
			return e.printRecoveryCodes(codes)
		},
	}
	cmd.Flags().StringVar(&code, "code", "", "code from the authenticator app")
	return cmd
}

func (e *env) printRecoveryCodes(codes []string) error {
	if codes == nil {
		codes = []string{}
	}
	return e.print(totpResult{RecoveryCodes: codes}, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "TOTP is enrolled: from now on login asks for a code.")
		fmt.Fprintln(w, "Recovery codes: store them somewhere safe, apart from this device. Each")
		fmt.Fprintln(w, "works once in place of a code. They are not shown again.")
		fmt.Fprintln(w)
		for _, c := range codes {
			fmt.Fprintf(w, "    %s\n", c)
		}
	})
}
