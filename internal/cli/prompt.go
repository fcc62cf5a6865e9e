package cli

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"
)

// maxSecret bounds a password or secret id read from stdin.
const maxSecret = 4 << 10

// stdinTerminal returns stdin's descriptor when it is a terminal.
func (e *env) stdinTerminal() (int, bool) {
	f, ok := e.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return 0, false
	}
	return int(f.Fd()), true
}

// stdoutTerminal reports whether stdout is a terminal.
func (e *env) stdoutTerminal() bool {
	f, ok := e.stdout.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// promptHidden asks for a secret on the terminal fd without echoing it.
func (e *env) promptHidden(fd int, prompt string) (string, error) {
	fmt.Fprint(e.stderr, prompt)
	b, err := term.ReadPassword(fd)
	fmt.Fprintln(e.stderr)
	if err != nil {
		return "", fmt.Errorf("read from terminal: %w", err)
	}
	return string(b), nil
}

// promptLine asks for one line on the terminal, echoed: for one-time codes.
func (e *env) promptLine(prompt string) (string, error) {
	fmt.Fprint(e.stderr, prompt)
	line, err := bufio.NewReader(io.LimitReader(e.stdin, maxSecret)).ReadString('\n')
	if err != nil && (err != io.EOF || line == "") {
		return "", fmt.Errorf("read from terminal: %w", err)
	}
	return strings.TrimSpace(line), nil
}

// readStdinSecret reads a secret from stdin: everything up to EOF (at most
// maxSecret bytes) less the trailing line break. what names it in errors.
func (e *env) readStdinSecret(what string) (string, error) {
	b, err := io.ReadAll(io.LimitReader(e.stdin, maxSecret+1))
	if err != nil {
		return "", fmt.Errorf("read %s from stdin: %w", what, err)
	}
	if len(b) > maxSecret {
		return "", usageError{fmt.Errorf("%s on stdin is longer than %d bytes", what, maxSecret)}
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", usageError{fmt.Errorf("no %s on stdin", what)}
	}
	return s, nil
}

// readSecret reads a secret from a hidden prompt when stdin is a terminal,
// else from stdin.
func (e *env) readSecret(what string) (string, error) {
	if fd, ok := e.stdinTerminal(); ok {
		s, err := e.promptHidden(fd, strings.ToUpper(what[:1])+what[1:]+" (input hidden): ")
		if err != nil {
			return "", err
		}
		if s == "" {
			return "", usageError{fmt.Errorf("no %s entered", what)}
		}
		return s, nil
	}
	return e.readStdinSecret(what)
}
