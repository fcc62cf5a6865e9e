package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/warderhq/warder/internal/client"
	"github.com/warderhq/warder/internal/recording"
)

func (e *env) sessionCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "session", Short: "List, replay, watch and terminate recorded gateway sessions"}
	cmd.AddCommand(e.sessionListCommand(), e.sessionShowCommand(), e.sessionPlayCommand(), e.sessionJoinCommand(), e.sessionKillCommand())
	return cmd
}

func (e *env) sessionListCommand() *cobra.Command {
	var f client.SessionFilter
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List sessions, newest first",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.Kind != "" && f.Kind != "ssh" && f.Kind != "db" {
				return usageError{fmt.Errorf("--kind must be ssh or db")}
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			ss, err := c.Sessions(cmd.Context(), f)
			if err != nil {
				return err
			}
			if ss == nil {
				ss = []client.Session{}
			}
			return e.print(ss, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "ID\tKIND\tWHO\tTARGET\tACCOUNT\tSTARTED\tENDED\tBYTES IN/OUT\tSTATUS")
				for _, s := range ss {
					ended := "-"
					if !s.EndedAt.IsZero() {
						ended = s.EndedAt.Local().Format(time.DateTime)
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\n", s.ID, s.Kind, s.Principal, s.Target, dash(s.Account),
						s.StartedAt.Local().Format(time.DateTime), ended, s.BytesIn, s.BytesOut, s.Status)
				}
			})
		},
	}
	cmd.Flags().StringVar(&f.Kind, "kind", "", "only ssh or db sessions")
	cmd.Flags().StringVar(&f.Principal, "principal", "", "only sessions of this principal (user:alice)")
	cmd.Flags().BoolVar(&f.Active, "active", false, "only sessions still running")
	cmd.Flags().IntVar(&f.Limit, "limit", 100, "at most this many sessions, newest first (1 to 1000)")
	return cmd
}

func (e *env) sessionShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show a session and the commands typed (ssh) or statements run (db)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			d, err := c.Session(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return e.print(d, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "Session\t%s (%s)\nWho\t%s from %s\nTarget\t%s %s\nStatus\t%s\n", d.ID, d.Kind, d.Principal, dash(d.Source), d.Target, d.Account, d.Status)
				if d.Command != "" {
					fmt.Fprintf(w, "Command\t%s\n", d.Command)
				}
				if d.SHA256 != "" {
					fmt.Fprintf(w, "SHA-256\t%s\n", d.SHA256)
				}
				for i, line := range d.Commands {
					fmt.Fprintf(w, "%d\t%s\n", i+1, line)
				}
				if len(d.Statements) > 0 {
					w.Flush()
					e.printStatements(d)
				}
			})
		},
	}
}

func (e *env) sessionPlayCommand() *cobra.Command {
	var speed float64
	var maxIdle time.Duration
	cmd := &cobra.Command{
		Use:   "play ID",
		Short: "Replay an interactive session in the terminal (--speed 2 for twice as fast)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if speed <= 0 {
				return usageError{fmt.Errorf("--speed must be positive")}
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			var buf bytes.Buffer
			if err := c.WithoutTimeout().SessionRecording(cmd.Context(), args[0], &buf); err != nil {
				return err
			}
			if e.format == "json" || e.format == "jsonl" {
				_, err := e.stdout.Write(buf.Bytes()) // the asciicast itself
				return err
			}
			_, events, err := recording.DecodeAsciicast(&buf)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			out := bufio.NewWriter(e.stdout)
			defer out.Flush()
			last := 0.0
			for _, ev := range events {
				if ev.Type != recording.Output {
					continue
				}
				wait := time.Duration((ev.Time - last) / speed * float64(time.Second))
				if maxIdle > 0 && wait > maxIdle {
					wait = maxIdle
				}
				last = ev.Time
				out.Flush()
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(wait):
				}
				out.WriteString(ev.Data)
			}
			return nil
		},
	}
	cmd.Flags().Float64Var(&speed, "speed", 1, "playback speed factor")
	cmd.Flags().DurationVar(&maxIdle, "max-idle", 2*time.Second, "cap pauses at this long (0: real pauses)")
	return cmd
}

func (e *env) sessionJoinCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "join ID",
		Short: "Watch a live session, read-only, until it ends (Ctrl-C to leave)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			fmt.Fprintf(e.stderr, "watching session %s (read-only); Ctrl-C to leave\n", args[0])
			enc := json.NewEncoder(e.stdout)
			return c.WithoutTimeout().JoinSession(ctx, args[0], func(ev client.LiveEvent) error {
				if e.format == "json" || e.format == "jsonl" {
					return enc.Encode([]any{ev.Time, ev.Type, ev.Data})
				}
				if ev.Type == string(recording.Output) {
					_, err := fmt.Fprint(e.stdout, ev.Data)
					return err
				}
				return nil
			})
		},
	}
}

func (e *env) sessionKillCommand() *cobra.Command {
	var message string
	cmd := &cobra.Command{
		Use:   "kill ID",
		Short: "Terminate a live session; the user sees the message",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			if err := c.KillSession(cmd.Context(), args[0], strings.TrimSpace(message)); err != nil {
				return err
			}
			fmt.Fprintf(e.stderr, "session %s terminated\n", args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&message, "message", "", "what the user is told (default: terminated by security)")
	return cmd
}
