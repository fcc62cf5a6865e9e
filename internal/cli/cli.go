// Package cli is the warder command line: the server, dev mode and the
// client commands, which call the API through package client.
//
// Commands are thin. Reading commands accept --format json|table. Errors go
// to stderr and make the process exit non-zero (1 for a failure, 2 for a
// usage error). Secrets are never taken from process arguments when a
// prompt or stdin can supply them.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/warderhq/warder/internal/cli/tokenfile"
	"github.com/warderhq/warder/internal/client"
)

// Version is the build's version, set by the linker.
var Version = "dev"

// env is the process environment, read once.
type env struct {
	stdin   io.Reader
	stdout  io.Writer
	stderr  io.Writer
	getenv  func(string) string
	environ []string

	// Client options, from flags or WARDER_ADDR / WARDER_TOKEN / WARDER_CACERT.
	addr, token, caCert string
	format              string

	// tokenSource is where client() found the token it uses.
	tokenSource tokenfile.Source
}

// formatCSV is the annotation of a command that also accepts --format csv.
const formatCSV = "warder.format.csv"

// usageError marks errors in how a command was called.
type usageError struct{ error }

// Main runs the command line and returns the process exit code.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv, environ: os.Environ()}
	root := e.rootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var exit exitError
	if errors.As(err, &exit) {
		return exit.code
	}
	fmt.Fprintln(stderr, "Error:", err)
	var ue usageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") || strings.HasPrefix(err.Error(), "unknown flag") ||
		strings.Contains(err.Error(), "flag needs an argument") || strings.Contains(err.Error(), "accepts ") ||
		strings.HasPrefix(err.Error(), "required flag") {
		return 2
	}
	return 1
}

// exitError ends the process with code after the command has already
// reported what happened.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func (e *env) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "warder",
		Short:         "Warder: privileged access management",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&e.addr, "addr", "", "server address (default $WARDER_ADDR or "+client.DefaultAddr+")")
	pf.StringVar(&e.token, "token", "", "API token (default $WARDER_TOKEN, else the token stored by \"warder login\"; prefer those: arguments are visible to other users)")
	pf.StringVar(&e.caCert, "ca-cert", "", "CA certificate to trust (default $WARDER_CACERT)")
	pf.StringVar(&e.format, "format", "table", "output format: table, json, or jsonl (one JSON value per line); csv where a command says so")
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		switch {
		case e.format == "table" || e.format == "json" || e.format == "jsonl":
		case e.format == "csv" && cmd.Annotations[formatCSV] != "":
		case cmd.Annotations[formatCSV] != "":
			return usageError{fmt.Errorf("--format must be table, json, jsonl or csv, not %q", e.format)}
		default:
			return usageError{fmt.Errorf("--format must be table, json or jsonl, not %q", e.format)}
		}
		return nil
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(e.serverCommand(), e.devCommand(), e.operatorCommand(), e.auditCommand(),
		e.loginCommand(), e.logoutCommand(), e.whoamiCommand(), e.tokenCommand(), e.mfaCommand(),
		e.userCommand(), e.groupCommand(), e.machineCommand(), e.policyCommand(),
		e.targetCommand(), e.accountCommand(), e.checkoutCommand(), e.checkinCommand(), e.secretCommand(), e.runCommand(),
		e.roleCommand(), e.requestCommand(), e.grantCommand(), e.incidentCommand(), e.reviewCommand(), e.sessionCommand(),
		e.sshCommand(), e.sshConfigCommand(), e.sshCACommand(), e.dbCommand())
	return root
}

// client builds an API client from flags and the environment. Its token is
// --token, else $WARDER_TOKEN, else the token file of `warder login`.
func (e *env) client() (*client.Client, error) {
	tok, src, err := tokenfile.Resolve(e.token, e.getenv("WARDER_TOKEN"), func() (string, error) {
		s, err := e.tokenStore()
		if err != nil {
			return "", nil // no configuration directory: no stored token
		}
		return s.Load()
	})
	if err != nil {
		return nil, err
	}
	e.tokenSource = src
	return e.clientWithToken(tok)
}

// clientWithToken builds an API client presenting token ("" for none).
func (e *env) clientWithToken(token string) (*client.Client, error) {
	cfg := client.Config{Addr: e.addr, Token: token, CACert: e.caCert}
	if cfg.Addr == "" {
		cfg.Addr = e.getenv("WARDER_ADDR")
	}
	if cfg.CACert == "" {
		cfg.CACert = e.getenv("WARDER_CACERT")
	}
	return client.New(cfg)
}

// tokenStore is the token file in the CLI's configuration directory.
func (e *env) tokenStore() (tokenfile.Store, error) {
	dir, err := tokenfile.DefaultDir(e.getenv)
	return tokenfile.Store{Dir: dir}, err
}

// print writes v as JSON, or calls table to write it for people. With
// jsonl, a slice is written one element per line.
func (e *env) print(v any, table func(w *tabwriter.Writer)) error {
	if e.format == "jsonl" {
		enc := json.NewEncoder(e.stdout)
		rv := reflect.ValueOf(v)
		if rv.Kind() != reflect.Slice {
			return enc.Encode(v)
		}
		for i := range rv.Len() {
			if err := enc.Encode(rv.Index(i).Interface()); err != nil {
				return err
			}
		}
		return nil
	}
	if e.format == "json" {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}
