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
	"regexp"
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
	root := e.commandTree()
	root.SetArgs(args)
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

// commandTree is the root command with its I/O set, cobra's help and
// completion commands added, and strictArgs applied to the whole tree.
func (e *env) commandTree() *cobra.Command {
	root := e.rootCommand()
	root.SetIn(e.stdin)
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	strictArgs(root)
	if help, _, err := root.Find([]string{"help"}); err == nil && help != root {
		help.Args = unknownHelpTopic
	}
	// A group is runnable only to print its help: its usage does not offer
	// "warder machine [flags]" as if it did something alone.
	root.SetUsageTemplate(strings.Replace(root.UsageTemplate(), "{{if .Runnable}}",
		`{{if and .Runnable (not (index .Annotations "`+groupAnnotation+`"))}}`, 1))
	return root
}

// strictArgs makes every command of the tree refuse arguments it does not
// take with a usage error (exit 2). A command group (one with subcommands
// and nothing to run of its own) prints its help when called alone and
// refuses anything else as an unknown command: cobra would print the help
// and exit 0 for "warder machine show" when machine has no show. The
// positional-argument errors of the other commands become usage errors.
func strictArgs(cmd *cobra.Command) {
	switch {
	case cmd.HasSubCommands() && !cmd.Runnable():
		if cmd.Annotations == nil {
			cmd.Annotations = map[string]string{}
		}
		cmd.Annotations[groupAnnotation] = "true"
		cmd.Args = unknownSubcommand
		cmd.RunE = func(cmd *cobra.Command, args []string) error { return cmd.Help() }
	case cmd.Args != nil:
		check := cmd.Args
		cmd.Args = func(cmd *cobra.Command, args []string) error {
			if err := check(cmd, args); err != nil {
				var ue usageError
				if errors.As(err, &ue) {
					return err
				}
				return usageError{err}
			}
			return nil
		}
	}
	for _, c := range cmd.Commands() {
		strictArgs(c)
	}
}

// groupAnnotation marks the commands that strictArgs made command groups.
const groupAnnotation = "warder.group"

// commandWord matches what may be a mistyped command name; anything else
// (it may be a secret pasted in the wrong place) is not repeated.
var commandWord = regexp.MustCompile(`^[a-z][a-z-]{0,23}$`)

// unknownSubcommand is the Args of a command group: no arguments but the
// names of its subcommands, which cobra has already dispatched.
func unknownSubcommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	what := "an unknown command"
	if commandWord.MatchString(args[0]) {
		what = fmt.Sprintf("unknown command %q", args[0])
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			what += fmt.Sprintf(" (did you mean %q?)", s[0])
		}
	}
	var names []string
	for _, c := range cmd.Commands() {
		if c.IsAvailableCommand() {
			names = append(names, c.Name())
		}
	}
	commands := fmt.Sprintf("see %q", cmd.CommandPath()+" --help")
	if len(names) <= 10 {
		commands = "its commands are " + strings.Join(names, ", ")
	}
	return usageError{fmt.Errorf("%s for %q: %s", what, cmd.CommandPath(), commands)}
}

// unknownHelpTopic is the Args of "warder help": a command path, which
// cobra would answer with "Unknown help topic" and exit 0.
func unknownHelpTopic(cmd *cobra.Command, args []string) error {
	found, rest, err := cmd.Root().Find(args)
	switch {
	case err == nil && len(rest) == 0:
		return nil
	case found == nil || len(rest) == 0:
		found, rest = cmd.Root(), args
	}
	return unknownSubcommand(found, rest)
}

// noArgs is cobra.NoArgs for a command that reads a secret from a prompt
// or stdin: its error says why without repeating the argument, which may
// be that secret typed in the wrong place.
func noArgs(why string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usageError{fmt.Errorf("%s takes no arguments: %s", cmd.CommandPath(), why)}
		}
		return nil
	}
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
