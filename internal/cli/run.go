package cli

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/warderhq/warder/internal/config"
)

// forwardedSignals are passed on to the command warder run started.
var forwardedSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

func (e *env) runCommand() *cobra.Command {
	var paths []string
	cmd := &cobra.Command{
		Use:   "run --secret PATH [--secret PATH]... -- COMMAND [ARG]...",
		Short: "Run a command with secrets' keys as environment variables",
		Long: `Run COMMAND with the keys of each --secret added to its environment, so
a pipeline never writes a secret to disk or to its logs. Warder prints
nothing of the secrets; the command's stdin, stdout and stderr are
warder's, signals sent to warder are passed on, and warder exits with the
command's exit status (128+N when a signal N ended it; 127 when it cannot
be found).

A secret's key replaces a variable of the same name that warder inherited.
Two secrets that define the same key are refused.

The command never gets your Warder credentials: WARDER_TOKEN (and the
server's secret settings WARDER_STORAGE, WARDER_NOTIFY_WEBHOOKS and
WARDER_NOTIFY_WEBHOOK_SECRET) are removed from its environment unless a
secret defines them. WARDER_ADDR and WARDER_CACERT, which are not secret,
are passed on, for a command that talks to Warder with credentials of its
own. The command runs as you, so it could still read the token file of
"warder login": run untrusted commands as another user.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError{errors.New("name the command to run after --")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(paths) == 0 {
				return usageError{errors.New("--secret is required")}
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			vars := map[string]string{}
			from := map[string]string{}
			for _, p := range paths {
				s, err := c.Secret(cmd.Context(), p, 0)
				if err != nil {
					return fmt.Errorf("secret %s: %w", p, err)
				}
				for k, v := range s.Data {
					if prev, dup := from[k]; dup {
						return fmt.Errorf("secrets %s and %s both define %s", prev, p, k)
					}
					vars[k], from[k] = v, p
				}
			}
			return e.runWith(args, vars)
		},
	}
	cmd.Flags().StringArrayVar(&paths, "secret", nil, "path of a secret whose keys to set (repeatable)")
	// Flags after the command's name belong to the command.
	cmd.Flags().SetInterspersed(false)
	return cmd
}

// isCredentialVar reports whether the environment variable k holds a
// Warder credential: the CLI's token, or a server setting that is a
// secret. warder run does not pass these on to the command it runs.
func isCredentialVar(k string) bool {
	switch k {
	case "WARDER_TOKEN",
		config.EnvName("storage"),               // may hold the database password
		config.EnvName("notify_webhooks"),       // a Slack hook URL is a credential
		config.EnvName("notify_webhook_secret"): // signs notifications
		return true
	}
	return false
}

// runWith runs argv with vars added to warder's environment, less the
// variables that hold credentials (isCredentialVar), and returns its exit
// status as an exitError (nil for 0).
func (e *env) runWith(argv []string, vars map[string]string) error {
	env := make([]string, 0, len(e.environ)+len(vars))
	for _, kv := range e.environ {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := vars[k]; !ok && !isCredentialVar(k) {
			env = append(env, kv)
		}
	}
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		fmt.Fprintf(e.stderr, "Error: %s: command not found\n", argv[0])
		return exitError{127}
	}
	c := exec.Command(path, argv[1:]...)
	c.Args[0] = argv[0]
	c.Env = env
	c.Stdin, c.Stdout, c.Stderr = e.stdin, e.stdout, e.stderr

	// Catch signals before the start so none is lost; the command gets
	// them from us (and from the terminal, when it sent them to the
	// process group).
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwardedSignals...)
	defer signal.Stop(sigs)
	if err := c.Start(); err != nil {
		fmt.Fprintf(e.stderr, "Error: %s: %v\n", argv[0], unwrapPathError(err))
		return exitError{126}
	}
	done := make(chan struct{}) // closed when the command has ended; ends the forwarder
	go func() {
		for {
			select {
			case s := <-sigs:
				c.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err = c.Wait()
	close(done)
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return err
		}
	}
	ps := c.ProcessState
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return exitError{128 + int(ws.Signal())}
	}
	if code := ps.ExitCode(); code != 0 {
		return exitError{code}
	}
	return nil
}

// unwrapPathError drops the path that os.PathError repeats.
func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
