package cli

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/warderhq/warder/internal/client"
)

// dbStatement is one statement of a database session, as the gateway
// records it and the API returns it.
type dbStatement struct {
	Time       float64         `json:"time"` // seconds from the session's start to the statement's end
	SQL        *string         `json:"sql"`
	Stmt       string          `json:"stmt"` // a prepared statement's name
	Params     json.RawMessage `json:"params"`
	Tag        string          `json:"tag"`
	Rows       int64           `json:"rows"`
	ErrorCode  string          `json:"error_code"`
	DurationMS float64         `json:"duration_ms"`
	Blocked    string          `json:"blocked"` // the rule that blocked it
	Alert      string          `json:"alert"`   // the rule that alerted on it
}

// maxStatementText bounds a statement's text in the table; --format json
// shows it whole.
const maxStatementText = 200

// printStatements writes the statements of d as a table: when each ended,
// how long it took, its outcome and its text with its parameters.
func (e *env) printStatements(d client.SessionDetail) {
	fmt.Fprintln(e.stdout, "\nStatements:")
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "#\tTIME\tDURATION\tRESULT\tSTATEMENT")
	for i, raw := range d.Statements {
		var st dbStatement
		if err := json.Unmarshal(raw, &st); err != nil {
			fmt.Fprintf(w, "%d\t-\t-\t-\t(unreadable record)\n", i+1)
			continue
		}
		at := d.StartedAt.Add(time.Duration(st.Time * float64(time.Second)))
		fmt.Fprintf(w, "%d\t%s\t%.3fms\t%s\t%s\n", i+1, at.Local().Format("15:04:05.000"), st.DurationMS, st.result(), st.text())
	}
	w.Flush()
}

// result is the statement's outcome: its command tag, error code, and
// the rule that blocked it or alerted on it.
func (st dbStatement) result() string {
	var r string
	switch {
	case st.Blocked != "":
		r = "BLOCKED by " + st.Blocked
	case st.ErrorCode != "":
		r = "ERROR " + st.ErrorCode
	case st.Tag != "":
		r = st.Tag
	default:
		r = "-"
	}
	if st.Alert != "" {
		r += " [alert: " + st.Alert + "]"
	}
	return r
}

// text is the statement's text on one line, clipped, with its
// parameters.
func (st dbStatement) text() string {
	var s string
	switch {
	case st.SQL != nil:
		s = strings.Join(strings.Fields(*st.SQL), " ")
	case st.Stmt != "":
		s = "(prepared statement " + st.Stmt + ")"
	}
	if utf8.RuneCountInString(s) > maxStatementText {
		s = string([]rune(s)[:maxStatementText]) + "…"
	}
	if p := strings.TrimSpace(string(st.Params)); p != "" && p != "[]" && p != "null" {
		s += "  -- params: " + p
	}
	return s
}
