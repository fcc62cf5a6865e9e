package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/warderhq/warder/internal/client"
)

// maxPolicyText bounds a policy file.
const maxPolicyText = 64 << 10

func (e *env) policyCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Manage the Cedar policies that decide every access"}
	cmd.AddCommand(e.policyPutCommand(), e.policyListCommand(), e.policyShowCommand(), e.policyDeleteCommand(), e.policyCheckCommand())
	return cmd
}

func (e *env) policyPutCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "put NAME FILE.cedar",
		Short: "Create or replace a policy from a Cedar file (- reads stdin)",
		Long: `Create or replace a policy. FILE holds Cedar statements (at most 64 KiB);
"-" reads them from stdin. The server validates them against its schema
and refuses the whole file, naming the error, if any statement is invalid.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			text, err := e.readPolicyFile(args[1])
			if err != nil {
				return err
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			p, err := c.PutPolicy(cmd.Context(), args[0], text)
			if err != nil {
				return err
			}
			return e.print(p, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "Stored policy %s: %d statement(s): %s\n", p.Name, len(p.IDs), strings.Join(p.IDs, ", "))
			})
		},
	}
}

// readPolicyFile reads a policy text from path, or stdin for "-".
func (e *env) readPolicyFile(path string) (string, error) {
	var r io.Reader = e.stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return "", err
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxPolicyText+1))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > maxPolicyText {
		return "", usageError{fmt.Errorf("%s is larger than %d KiB", path, maxPolicyText>>10)}
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return "", usageError{fmt.Errorf("%s holds no policy", path)}
	}
	return string(b), nil
}

func (e *env) policyListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List policies",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			ps, err := c.Policies(cmd.Context())
			if err != nil {
				return err
			}
			if ps == nil {
				ps = []client.Policy{}
			}
			return e.print(ps, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "NAME\tBUILTIN\tSTATEMENTS\tUPDATED")
				for _, p := range ps {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", p.Name, yesNo(p.Builtin), dash(strings.Join(p.IDs, ", ")), when(p.UpdatedAt))
				}
			})
		},
	}
}

func (e *env) policyShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show a policy and its Cedar text",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			p, err := c.Policy(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return e.print(p, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "Name\t%s\nBuiltin\t%s\nStatements\t%s\nCreated\t%s\nUpdated\t%s\n\n",
					p.Name, yesNo(p.Builtin), dash(strings.Join(p.IDs, ", ")), when(p.CreatedAt), when(p.UpdatedAt))
				w.Flush() // the text is not a table: keep tabwriter away from its tabs
				io.WriteString(e.stdout, strings.TrimRight(p.Text, "\n")+"\n")
			})
		},
	}
}

func (e *env) policyDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a policy",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			if err := c.DeletePolicy(cmd.Context(), args[0]); err != nil {
				return err
			}
			return e.printDeleted("policy", args[0])
		},
	}
}

func (e *env) policyCheckCommand() *cobra.Command {
	var (
		req      client.CheckRequest
		ctxJSON  string
		exitCode bool
	)
	cmd := &cobra.Command{
		Use:   "check --principal P --action A --resource R [--context JSON]",
		Short: "Ask what the policies decide for a request, without making it",
		Long: `Evaluate the policies for one request and print the decision and the
policies that made it. Principal and resource are Cedar entity uids, for
example

    warder policy check --principal 'User::"alice"' --action checkout \
        --resource 'Account::"prod-pg/postgres"' --context '{"mfa": true}'

A deny is an answer, not an error: the exit status is 0 either way, unless
--exit-code is given, which makes a deny exit 3. With --format json the
output is {"decision": "allow"|"deny", "policies": [...]}, plus "errors"
when a policy failed to evaluate.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.Principal == "" || req.Action == "" || req.Resource == "" {
				return usageError{errors.New("--principal, --action and --resource are required")}
			}
			if ctxJSON != "" {
				var obj map[string]json.RawMessage
				if err := json.Unmarshal([]byte(ctxJSON), &obj); err != nil || obj == nil {
					return usageError{fmt.Errorf("--context must be a JSON object, such as '{\"mfa\": true}'")}
				}
				req.Context = json.RawMessage(ctxJSON)
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			d, err := c.CheckPolicy(cmd.Context(), req)
			if err != nil {
				return err
			}
			if err := e.print(d, func(w *tabwriter.Writer) { fmt.Fprint(w, describeDecision(d)) }); err != nil {
				return err
			}
			if exitCode && !d.Allowed() {
				return exitError{3}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&req.Principal, "principal", "", `who asks, as a Cedar uid such as 'User::"alice"' (required)`)
	cmd.Flags().StringVar(&req.Action, "action", "", "the action, such as checkout (required)")
	cmd.Flags().StringVar(&req.Resource, "resource", "", `what is asked for, as a Cedar uid such as 'Account::"prod-pg/postgres"' (required)`)
	cmd.Flags().StringVar(&ctxJSON, "context", "", `the request's context as a JSON object, such as '{"mfa": true}'`)
	cmd.Flags().BoolVar(&exitCode, "exit-code", false, "exit 3 when the decision is deny (for scripts)")
	return cmd
}

// describeDecision is the table form of a decision.
func describeDecision(d client.Decision) string {
	var b strings.Builder
	switch {
	case len(d.Policies) > 0:
		fmt.Fprintf(&b, "%s, by policies: %s\n", d.Decision, strings.Join(d.Policies, ", "))
	case d.Allowed():
		fmt.Fprintln(&b, "allow")
	default:
		fmt.Fprintln(&b, "deny: no policy permits it")
	}
	for _, e := range d.Errors {
		fmt.Fprintf(&b, "error: %s\n", e)
	}
	return b.String()
}
