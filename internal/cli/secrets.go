package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/warderhq/warder/internal/client"
)

// maxSecretInput bounds a secret file or stdin; the server's own limit on
// one version is lower.
const maxSecretInput = 256 << 10

func (e *env) secretCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "secret", Short: "Manage versioned application secrets (KEY=value sets)"}
	cmd.AddCommand(e.secretPutCommand(), e.secretGetCommand(), e.secretListCommand())
	return cmd
}

func (e *env) secretPutCommand() *cobra.Command {
	var (
		fromFile string
		stdin    bool
	)
	cmd := &cobra.Command{
		Use:   "put PATH (--from-file FILE | --stdin | KEY=VALUE...)",
		Short: "Store a new version of a secret",
		Long: `Store a new version of the secret at PATH, replacing all of its keys.

The keys and values come from a file (--from-file) or stdin (--stdin), as
a JSON object of strings or as KEY=VALUE lines (blank lines and lines
starting with # are skipped; the value is everything after the first "=",
verbatim). KEY=VALUE arguments work too but are visible to other users in
the process list and stay in the shell's history: prefer a file or stdin.

Keys are environment variable names ("warder run" sets them).`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, pairs := args[0], args[1:]
			sources := 0
			for _, b := range []bool{fromFile != "", stdin, len(pairs) > 0} {
				if b {
					sources++
				}
			}
			if sources != 1 {
				return usageError{errors.New("give the values in exactly one way: --from-file FILE, --stdin, or KEY=VALUE arguments")}
			}
			var (
				data map[string]string
				err  error
			)
			switch {
			case fromFile != "":
				data, err = readSecretFile(fromFile)
			case stdin:
				data, err = parseSecretData(io.LimitReader(e.stdin, maxSecretInput+1), "stdin")
			default:
				fmt.Fprintln(e.stderr, "Warning: values given as arguments are visible to other users in the process list and in shell history; prefer --from-file or --stdin.")
				data, err = parseSecretArgs(pairs)
			}
			if err != nil {
				return err
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			m, err := c.PutSecret(cmd.Context(), path, data)
			if err != nil {
				return err
			}
			if m.Keys == nil {
				m.Keys = []string{}
			}
			return e.print(m, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "Stored %s version %d: %s\n", m.Path, m.Version, strings.Join(m.Keys, ", "))
			})
		},
	}
	cmd.Flags().StringVar(&fromFile, "from-file", "", "read KEY=VALUE lines or a JSON object from this file")
	cmd.Flags().BoolVar(&stdin, "stdin", false, "read KEY=VALUE lines or a JSON object from stdin")
	return cmd
}

func readSecretFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseSecretData(io.LimitReader(f, maxSecretInput+1), path)
}

// parseSecretData reads a JSON object of strings or KEY=VALUE lines from
// r (at most maxSecretInput bytes). Errors name lines, never values.
func parseSecretData(r io.Reader, name string) (map[string]string, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(b) > maxSecretInput {
		return nil, usageError{fmt.Errorf("%s is larger than %d KiB", name, maxSecretInput>>10)}
	}
	data := map[string]string{}
	if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '{' {
		if err := json.Unmarshal(t, &data); err != nil {
			return nil, usageError{fmt.Errorf("%s is not a JSON object of string values", name)}
		}
	} else {
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, maxSecretInput+1)
		for n := 1; sc.Scan(); n++ {
			line := strings.TrimSuffix(sc.Text(), "\r")
			if t := strings.TrimSpace(line); t == "" || strings.HasPrefix(t, "#") {
				continue
			}
			k, v, ok := strings.Cut(line, "=")
			k = strings.TrimSpace(k)
			if !ok || k == "" {
				return nil, usageError{fmt.Errorf("%s line %d is not KEY=VALUE", name, n)}
			}
			if _, dup := data[k]; dup {
				return nil, usageError{fmt.Errorf("%s: key %s given twice", name, k)}
			}
			data[k] = v
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
	}
	if len(data) == 0 {
		return nil, usageError{fmt.Errorf("%s holds no KEY=VALUE", name)}
	}
	return data, nil
}

func parseSecretArgs(pairs []string) (map[string]string, error) {
	data := make(map[string]string, len(pairs))
	for i, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			// Do not echo the argument: it may be a value.
			return nil, usageError{fmt.Errorf("argument %d is not KEY=VALUE", i+2)}
		}
		if _, dup := data[k]; dup {
			return nil, usageError{fmt.Errorf("key %s given twice", k)}
		}
		data[k] = v
	}
	return data, nil
}

func (e *env) secretGetCommand() *cobra.Command {
	var version int64
	cmd := &cobra.Command{
		Use:   "get PATH",
		Short: "Print a secret's keys and values (the latest version, or --version N)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if version < 0 {
				return usageError{errors.New("--version must be positive")}
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			s, err := c.Secret(cmd.Context(), args[0], version)
			if err != nil {
				return err
			}
			if s.Data == nil {
				s.Data = map[string]string{}
			}
			if s.Keys == nil {
				s.Keys = slices.Sorted(maps.Keys(s.Data))
			}
			return e.print(s, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "Path\t%s\nVersion\t%d\nCreated\t%s\n\n", s.Path, s.Version, when(s.CreatedAt))
				fmt.Fprintln(w, "KEY\tVALUE")
				for _, k := range slices.Sorted(maps.Keys(s.Data)) {
					fmt.Fprintf(w, "%s\t%s\n", k, s.Data[k])
				}
			})
		},
	}
	cmd.Flags().Int64Var(&version, "version", 0, "this version instead of the latest")
	return cmd
}

func (e *env) secretListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List secrets with their latest version and keys (never values)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			ss, err := c.Secrets(cmd.Context())
			if err != nil {
				return err
			}
			if ss == nil {
				ss = []client.SecretMeta{}
			}
			return e.print(ss, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "PATH\tVERSION\tCREATED\tKEYS")
				for _, s := range ss {
					fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", s.Path, s.Version, when(s.CreatedAt), strings.Join(s.Keys, ","))
				}
			})
		},
	}
}
