package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

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

// sessionShow is what `session show` prints: the session detail and, for
// an SFTP session (scp and sftp), its file operations, read from the
// recording.
type sessionShow struct {
	client.SessionDetail
	Files []sessionFile `json:"files,omitempty"`
}

// sftpCommand is the recorded command of an SSH session that ran the SFTP
// subsystem (sftp, and scp since OpenSSH 9.0); only such sessions record
// file operations.
const sftpCommand = "subsystem:sftp"

func (e *env) sessionShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show a session and the commands typed or file operations (ssh), or statements run (db)",
		Long: `Show a session: who, where, its status, and what happened in it: the
command lines typed (interactive SSH sessions, reconstructed from the
keystrokes), the file operations of an SFTP session (sftp, and scp from
OpenSSH 9.0 on; legacy "scp -O" and rsync run a command, whose line is
shown): time, operation, path, an open's mode, and for a closed file the
bytes read and written through it; or the statements run (database
sessions).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			sd, err := c.Session(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			d := sessionShow{SessionDetail: sd}
			if d.Kind == "ssh" && d.Command == sftpCommand {
				var buf bytes.Buffer
				if err := c.WithoutTimeout().SessionRecording(cmd.Context(), args[0], &buf); err != nil {
					return fmt.Errorf("file operations: %w", err)
				}
				_, events, err := recording.DecodeAsciicast(&buf)
				if err != nil {
					return fmt.Errorf("file operations: %w", err)
				}
				d.Files = sessionFiles(events)
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
					e.printStatements(d.SessionDetail)
				}
				if len(d.Files) > 0 {
					w.Flush()
					e.printFiles(d)
				}
			})
		},
	}
}

// sessionFile is a file operation the SSH gateway recorded (a File event:
// op, path, to, flags, read, written), with time, the seconds from the
// session's start.
type sessionFile struct {
	Time    float64 `json:"time"`
	Op      string  `json:"op"` // open, close, remove, rename, mkdir, rmdir, setstat, symlink, hardlink
	Path    string  `json:"path"`
	To      string  `json:"to,omitempty"`    // rename, symlink, hardlink: the other path
	Flags   string  `json:"flags,omitempty"` // open: "r", "w" or "rw", plus "a" (append), "c" (create), "t" (truncate)
	Read    int64   `json:"read,omitempty"`  // close: bytes read through the handle
	Written int64   `json:"written,omitempty"`
	// Unreadable marks a record that could not be decoded; only Time is
	// set.
	Unreadable bool `json:"unreadable,omitempty"`
}

// sessionFiles returns the file operations among a recording's events.
// The recorder splits a long record into several events at the same
// time; they are joined again.
func sessionFiles(events []recording.Event) []sessionFile {
	var out []sessionFile
	var buf []byte // pieces of a record not yet complete
	var at float64
	flush := func() {
		if len(buf) > 0 {
			out = append(out, sessionFile{Time: at, Unreadable: true})
			buf = buf[:0]
		}
	}
	for _, ev := range events {
		if ev.Type != recording.File {
			continue
		}
		if len(buf) > 0 && ev.Time != at {
			flush()
		}
		if len(buf) == 0 {
			at = ev.Time
		}
		buf = append(buf, ev.Data...)
		if !json.Valid(buf) {
			continue
		}
		f := sessionFile{Time: at}
		if err := json.Unmarshal(buf, &f); err != nil || f.Op == "" {
			f = sessionFile{Time: at, Unreadable: true}
		}
		f.Time = at
		out = append(out, f)
		buf = buf[:0]
	}
	flush()
	return out
}

// printFiles prints d's file operations.
func (e *env) printFiles(d sessionShow) {
	fmt.Fprintln(e.stdout, "\nFile operations:")
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "#\tTIME\tOP\tDETAIL\tPATH")
	for i, f := range d.Files {
		at := d.StartedAt.Add(time.Duration(f.Time * float64(time.Second))).Local().Format("15:04:05.000")
		if f.Unreadable {
			fmt.Fprintf(w, "%d\t%s\t-\t-\t(unreadable record)\n", i+1, at)
			continue
		}
		path := displayPath(f.Path)
		if f.To != "" {
			path += " -> " + displayPath(f.To)
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\n", i+1, at, displayPath(f.Op), f.detail(), path)
	}
	w.Flush()
}

// detail is what the record says besides the operation and path: an
// open's mode, a close's byte counts.
func (f sessionFile) detail() string {
	switch {
	case f.Op == "close":
		return fmt.Sprintf("read %d B, written %d B", f.Read, f.Written)
	case f.Flags != "":
		return "mode " + displayPath(f.Flags)
	}
	return "-"
}

// displayPath returns a path as recorded, quoted (Go syntax) when it holds
// anything but printable characters, so that a file name cannot write
// control sequences to the terminal.
func displayPath(s string) string {
	if strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) || r == '"' }) || !utf8.ValidString(s) {
		return strconv.Quote(s)
	}
	return s
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
