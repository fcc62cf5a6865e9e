package cli

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/warderhq/warder/internal/cli/tokenfile"
	"github.com/warderhq/warder/internal/client"
)

func (e *env) loginCommand() *cobra.Command {
	var (
		user, totp               string
		passwordStdin, totpStdin bool
	)
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Log in as a user and store the token for the commands that follow",
		Long: `Log in as a user. The password is read from a prompt without echo, or
from stdin with --password-stdin; it is never taken as an argument. A user
with TOTP enrolled is asked for a code (or a recovery code) on the terminal,
or gives the current 6-digit code with --totp. A recovery code is refused
with --totp: it stays valid until used, and arguments are visible to other
users in the process list. Enter it at the prompt, or with --totp-stdin
put it on the line of stdin after the password's:

    printf '%s\n%s\n' "$PASSWORD" "$CODE" | warder login --user alice --password-stdin --totp-stdin

The token is stored in $WARDER_CONFIG_DIR/token (default: the "warder"
directory under the user's configuration directory), mode 0600. Commands
use --token first, then $WARDER_TOKEN, then this file.

Login also gets an SSH user certificate for the SSH gateway, valid no
longer than the token, for the key id_ed25519_warder in the same directory
(generated if missing) and writes it beside the key. When SSH_AUTH_SOCK is
set, it also loads the key with the certificate into that ssh-agent, for
as long as the certificate is valid, in place of the one an earlier login
loaded. Failing either is only a warning.

When the server runs a database gateway, login likewise gets an X.509
client certificate for it, for the ECDSA P-256 key db_client.key in the
same directory (generated if missing, mode 0600), bound to the token and
valid no longer, written as db_client.crt: "warder db connect" and
"warder db proxy" authenticate with it instead of a password (and get one
themselves if it is missing or expiring). Failing is only a warning.`,
		Args: noArgs("the password is read from the prompt or stdin, never from the command line"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if user == "" {
				return usageError{errors.New("--user is required")}
			}
			if totp != "" && !isTOTPCode(totp) {
				// Most likely a recovery code: do not repeat it.
				return usageError{errors.New("--totp takes only the current 6-digit TOTP code: a recovery code stays valid until used and process arguments are visible to other users, so leave out --totp and enter it at the prompt, or give it on stdin with --totp-stdin")}
			}
			switch {
			case totpStdin && totp != "":
				return usageError{errors.New("give the code with --totp or --totp-stdin, not both")}
			case totpStdin && !passwordStdin:
				return usageError{errors.New("--totp-stdin reads the code from the line after the password: use it with --password-stdin (on a terminal, login asks for the code)")}
			}
			store, err := e.tokenStore()
			if err != nil {
				return err
			}
			fd, tty := e.stdinTerminal()
			var password string
			switch {
			case passwordStdin && totpStdin:
				password, totp, err = e.readStdinPasswordAndCode()
			case passwordStdin:
				password, err = e.readStdinSecret("password")
			case tty:
				password, err = e.promptHidden(fd, "Password for "+user+": ")
			default:
				return usageError{errors.New("stdin is not a terminal to prompt for the password: pipe it in with --password-stdin")}
			}
			if err != nil {
				return err
			}
			c, err := e.clientWithToken("")
			if err != nil {
				return err
			}
			req := client.LoginRequest{User: user, Password: password, TOTP: totp}
			res, err := c.Login(cmd.Context(), req)
			if client.IsTOTPRequired(err) && totp == "" {
				if !tty || passwordStdin {
					return fmt.Errorf("%w: give the current code with --totp, or log in on a terminal to use a recovery code", err)
				}
				// Hidden: a recovery code stays valid until used, and
				// must not stay in the terminal's scrollback.
				if req.TOTP, err = e.promptHidden(fd, "TOTP code or recovery code (input hidden): "); err != nil {
					return err
				}
				req.TOTP = strings.TrimSpace(req.TOTP)
				res, err = c.Login(cmd.Context(), req)
			}
			if err != nil {
				return err
			}
			if err := store.Save(res.Token); err != nil {
				return err
			}
			// An SSH certificate for the gateway; without one, only ssh
			// does not work.
			if tc, err := e.clientWithToken(res.Token); err == nil {
				if cert, err := e.refreshSSHCert(cmd.Context(), tc); err != nil {
					fmt.Fprintf(e.stderr, "Warning: no SSH certificate: %v\n", err)
				} else if sock := e.getenv("SSH_AUTH_SOCK"); sock != "" {
					if err := e.replaceInAgent(sock, cert.Certificate); err != nil {
						fmt.Fprintf(e.stderr, "Warning: the SSH certificate was not loaded into ssh-agent: %v\n", err)
					}
				}
			}
			// A client certificate for the database gateway, when the
			// server runs one; without it, db connect falls back to a
			// database token and db proxy gets one when it starts.
			if tc, err := e.clientWithToken(res.Token); err == nil {
				if info, err := tc.DBInfo(cmd.Context()); err == nil && info.Listen != "" {
					if _, err := e.refreshDBCert(cmd.Context(), tc); err != nil {
						fmt.Fprintf(e.stderr, "Warning: no database client certificate: %v\n", err)
					}
				}
			}
			if e.token != "" || e.getenv("WARDER_TOKEN") != "" {
				fmt.Fprintln(e.stderr, "Note: --token or WARDER_TOKEN is set and takes precedence over the stored token.")
			}
			t := res.TokenInfo
			return e.print(t, func(w *tabwriter.Writer) {
				mfa := ""
				if t.MFA {
					mfa = " with MFA"
				}
				fmt.Fprintf(w, "Logged in as %s%s. Token %s stored in %s", t.Principal, mfa, t.ID, store.Path())
				if !t.ExpiresAt.IsZero() {
					fmt.Fprintf(w, "; it expires at %s", t.ExpiresAt.Local().Format(time.RFC3339))
				}
				fmt.Fprintln(w, ".")
			})
		},
	}
	cmd.Flags().StringVar(&user, "user", "", "user name (required)")
	cmd.Flags().BoolVar(&passwordStdin, "password-stdin", false, "read the password from stdin")
	cmd.Flags().BoolVar(&totpStdin, "totp-stdin", false, "with --password-stdin: read a TOTP code or a recovery code from the line of stdin after the password")
	cmd.Flags().StringVar(&totp, "totp", "", "the current 6-digit TOTP code, when the user has TOTP enrolled (a recovery code only at the prompt)")
	return cmd
}

// readStdinPasswordAndCode reads the password from the first line of
// stdin and a TOTP or recovery code from the second.
func (e *env) readStdinPasswordAndCode() (password, code string, err error) {
	all, err := e.readStdinSecret("password and code")
	if err != nil {
		return "", "", err
	}
	password, code, _ = strings.Cut(all, "\n")
	password, code = strings.TrimSuffix(password, "\r"), strings.TrimSpace(code)
	switch {
	case password == "":
		return "", "", usageError{errors.New("no password on the first line of stdin")}
	case code == "" || strings.Contains(code, "\n"):
		return "", "", usageError{errors.New("--totp-stdin: want the code alone on the line of stdin after the password")}
	}
	return password, code, nil
}

// isTOTPCode reports whether s is a TOTP code: six digits, spaces
// ignored, as the server reads it. Recovery codes (16 base32 letters and
// digits, in groups of four) never are.
func isTOTPCode(s string) bool {
	s = strings.ReplaceAll(s, " ", "")
	if len(s) != 6 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func (e *env) logoutCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "Revoke the token in use and remove what warder login stored",
		Long: `Revoke the token the CLI is using on the server. When it came from the
token file of "warder login", the file is removed too (even when the
server no longer knew the token), with the credentials login wrote beside
it: the SSH key and certificate, the database client key and certificate
and the database tokens; and when SSH_AUTH_SOCK is set, the SSH key is
removed from that ssh-agent (failing that is only a warning). With no
token at all, it still removes what an earlier login left. A token from
--token or WARDER_TOKEN is revoked and the files left alone.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			out := struct {
				Revoked      bool     `json:"revoked"`
				Removed      bool     `json:"token_file_removed"`
				FilesRemoved []string `json:"files_removed"`
				AgentKeys    int      `json:"agent_keys_removed"`
			}{FilesRemoved: []string{}}
			if e.tokenSource == tokenfile.None {
				fmt.Fprintln(e.stderr, "Not logged in: no token to revoke.")
			} else {
				err = c.RevokeSelf(cmd.Context())
				switch {
				case err == nil:
					out.Revoked = true
				case e.tokenSource == tokenfile.FromFile && client.IsCode(err, "unauthenticated"):
					// Expired or already revoked: forgetting it is all that is left.
				default:
					return err
				}
			}
			if e.tokenSource == tokenfile.FromFile {
				store, err := e.tokenStore()
				if err != nil {
					return err
				}
				if out.Removed, err = store.Remove(); err != nil {
					return err
				}
			}
			if e.tokenSource == tokenfile.FromFile || e.tokenSource == tokenfile.None {
				// What login left beside the token: the gateways refuse it
				// once the token is revoked, but it need not linger.
				if sock, pub := e.getenv("SSH_AUTH_SOCK"), e.sshPublicKey(); sock != "" && pub != nil {
					if out.AgentKeys, err = removeFromAgent(sock, pub); err != nil {
						fmt.Fprintf(e.stderr, "Warning: the SSH key was not removed from ssh-agent: %v\n", err)
					}
				}
				if out.FilesRemoved, err = e.removeLoginFiles(); err != nil {
					return err
				}
			}
			return e.print(out, func(w *tabwriter.Writer) {
				switch {
				case out.Revoked && out.Removed:
					fmt.Fprintln(w, "Logged out: token revoked and token file removed.")
				case out.Removed:
					fmt.Fprintln(w, "Logged out: the stored token was no longer valid; token file removed.")
				case out.Revoked:
					fmt.Fprintf(w, "Revoked the token from %s.\n", e.tokenSource)
				}
				if len(out.FilesRemoved) > 0 || out.AgentKeys > 0 {
					fmt.Fprintf(w, "Removed %d credential file(s) of warder login and %d key(s) from ssh-agent.\n", len(out.FilesRemoved), out.AgentKeys)
				}
			})
		},
	}
}

func (e *env) whoamiCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show the token the CLI is using and whom it speaks for",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			t, err := c.TokenSelf(cmd.Context())
			if err != nil {
				return err
			}
			return e.printTokenInfo(t)
		},
	}
}

func (e *env) printTokenInfo(t client.TokenInfo) error {
	return e.print(t, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "Token\t%s\n", t.ID)
		fmt.Fprintf(w, "Principal\t%s\n", t.Principal)
		if t.MFA {
			fmt.Fprintf(w, "MFA\tyes, at %s\n", when(t.MFAAt))
		} else {
			fmt.Fprintln(w, "MFA\tno")
		}
		fmt.Fprintf(w, "Created\t%s\n", when(t.CreatedAt))
		if t.ExpiresAt.IsZero() {
			fmt.Fprintln(w, "Expires\tnever")
		} else {
			fmt.Fprintf(w, "Expires\t%s\n", when(t.ExpiresAt))
		}
		if !t.MaxExpiresAt.IsZero() {
			fmt.Fprintf(w, "Renewable until\t%s\n", when(t.MaxExpiresAt))
		}
		if t.Bootstrap {
			fmt.Fprintln(w, "Bootstrap\tyes (made by operator init)")
		}
		if e.tokenSource != tokenfile.None {
			fmt.Fprintf(w, "Source\t%s\n", e.tokenSource)
		}
	})
}

// when formats a time for tables; "-" for the zero time.
func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.RFC3339)
}

func (e *env) tokenCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage the token the CLI is using"}
	cmd.AddCommand(&cobra.Command{
		Use:   "renew",
		Short: "Extend the token's lifetime, up to its maximum",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			t, err := c.RenewToken(cmd.Context())
			if err != nil {
				return err
			}
			return e.printTokenInfo(t)
		},
	})
	return cmd
}
