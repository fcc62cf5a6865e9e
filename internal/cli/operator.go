package cli

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/warderhq/warder/internal/barrier"
	"github.com/warderhq/warder/internal/client"
)

func (e *env) operatorCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "operator", Short: "Initialise, unseal, seal and rekey the server"}
	cmd.AddCommand(e.initCommand(), e.unsealCommand(), e.sealCommand(), e.statusCommand(), e.rotateKeyCommand())
	return cmd
}

func (e *env) initCommand() *cobra.Command {
	var (
		shares, threshold int
		keyFile           string
	)
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Initialise a new server: generate the root key and split its unseal key into shares",
		Long: `Initialise a new server. The unseal key is split with Shamir's secret
sharing into --shares shares, any --threshold of which unseal the server.
The shares and the first admin token are printed once and never again.

--key-file PATH also writes the whole unseal key to PATH (mode 0600) for
automated unsealing with "warder server --unseal-key-file PATH".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			c, err := e.client()
			if err != nil {
				return err
			}
			// Claim the key file before initialising, so that a path we
			// cannot write does not leave an initialised server whose key
			// file was never written.
			var kf *os.File
			if keyFile != "" {
				kf, err = os.OpenFile(keyFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
				if err != nil {
					return fmt.Errorf("key file: %w", err)
				}
				defer kf.Close()
			}
			res, err := c.Init(cmd.Context(), client.InitRequest{Shares: shares, Threshold: threshold, KeyFile: keyFile != ""})
			if err != nil {
				if kf != nil {
					kf.Close()
					os.Remove(keyFile)
				}
				return err
			}
			// The shares and token exist only in this answer: print them
			// whatever happens to the key file.
			var keyErr error
			if kf != nil {
				if _, err := io.WriteString(kf, res.UnsealKey); err != nil {
					keyErr = fmt.Errorf("key file %s: %w (the shares printed above still unseal the server)", keyFile, err)
				} else if err := kf.Sync(); err != nil {
					keyErr = fmt.Errorf("key file %s: %w (the shares printed above still unseal the server)", keyFile, err)
				}
				res.UnsealKey = ""
			}
			defer func() {
				if keyErr != nil && err == nil {
					err = keyErr
				}
			}()
			return e.print(res, func(w *tabwriter.Writer) {
				for i, s := range res.Shares {
					fmt.Fprintf(w, "Unseal share %d:\t%s\n", i+1, s)
				}
				fmt.Fprintf(w, "Admin token:\t%s\n", res.AdminToken)
				fmt.Fprintf(w, "\nThe server is initialised and sealed. Any %d of the %d shares unseal it:\n", threshold, shares)
				fmt.Fprintln(w, "give each to a different person and store them apart. They are not shown again.")
				if keyFile != "" && keyErr == nil {
					fmt.Fprintf(w, "The unseal key was written to %s (mode 0600).\n", keyFile)
				}
			})
		},
	}
	cmd.Flags().IntVar(&shares, "shares", 5, "number of unseal shares to generate")
	cmd.Flags().IntVar(&threshold, "threshold", 3, "number of shares needed to unseal")
	cmd.Flags().StringVar(&keyFile, "key-file", "", "also write the unseal key to this new file (mode 0600) for --unseal-key-file")
	return cmd
}

func (e *env) unsealCommand() *cobra.Command {
	var reset bool
	cmd := &cobra.Command{
		Use:   "unseal",
		Short: "Submit an unseal share, read from a prompt or from stdin",
		Long: `Submit an unseal share. On a terminal the share is read from a prompt
without echo; otherwise each non-empty line of stdin is submitted in turn
until the server is unsealed. Shares are never taken as arguments: other
users of the machine can read process arguments.`,
		Args: noArgs("shares are read from the prompt or stdin, never from the command line"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			var st barrier.Status
			if reset {
				st, err = c.ResetUnseal(cmd.Context())
				if err != nil {
					return err
				}
				return e.printStatus(st)
			}
			shares, err := e.readShares()
			if err != nil {
				return err
			}
			for _, s := range shares {
				st, err = c.Unseal(cmd.Context(), s)
				if err != nil {
					return err
				}
				if !st.Sealed {
					break
				}
			}
			return e.printStatus(st)
		},
	}
	cmd.Flags().BoolVar(&reset, "reset", false, "discard the shares submitted so far")
	return cmd
}

// readShares prompts for one share on a terminal, or reads up to 255
// non-empty lines from stdin.
func (e *env) readShares() ([]string, error) {
	if f, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(e.stderr, "Unseal share (input hidden): ")
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(e.stderr)
		if err != nil {
			return nil, fmt.Errorf("read share: %w", err)
		}
		s := strings.TrimSpace(string(b))
		if s == "" {
			return nil, usageError{fmt.Errorf("no share entered")}
		}
		return []string{s}, nil
	}
	var shares []string
	sc := bufio.NewScanner(io.LimitReader(e.stdin, 1<<20))
	for sc.Scan() {
		if s := strings.TrimSpace(sc.Text()); s != "" {
			shares = append(shares, s)
		}
		if len(shares) > 255 {
			return nil, usageError{fmt.Errorf("more than 255 shares on stdin")}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read shares from stdin: %w", err)
	}
	if len(shares) == 0 {
		return nil, usageError{fmt.Errorf("no share on stdin")}
	}
	return shares, nil
}

func (e *env) sealCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "seal",
		Short: "Seal the server: forget its keys until unsealed again",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			st, err := c.Seal(cmd.Context())
			if err != nil {
				return err
			}
			return e.printStatus(st)
		},
	}
}

func (e *env) statusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show whether the server is initialised and sealed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			st, err := c.SealStatus(cmd.Context())
			if err != nil {
				return err
			}
			return e.printStatus(st)
		},
	}
}

func (e *env) printStatus(st barrier.Status) error {
	return e.print(st, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "Initialized\t%v\n", st.Initialized)
		fmt.Fprintf(w, "Sealed\t%v\n", st.Sealed)
		if st.Initialized {
			fmt.Fprintf(w, "Unseal progress\t%d/%d\n", st.Progress, st.Threshold)
			fmt.Fprintf(w, "Shares\t%d\n", st.Shares)
		}
		if st.KeyVersion != 0 {
			fmt.Fprintf(w, "Key version\t%d\n", st.KeyVersion)
		}
	})
}

func (e *env) rotateKeyCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "rotate-key",
		Short: "Add a new data-encryption key version; older records are re-encrypted in the background",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			res, err := c.RotateKey(cmd.Context())
			if err != nil {
				return err
			}
			return e.print(res, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "Key version\t%d\n", res.KeyVersion)
			})
		},
	}
}
