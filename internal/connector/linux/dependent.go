package linux

import (
	"bytes"
	"context"
	"fmt"
	"path"
	"regexp"
	"strings"

	"github.com/warderhq/warder/internal/connector"
)

// readFileScript prints the regular file $1 (following symbolic links).
const readFileScript = `f=$(readlink -f -- "$1")
[ -f "$f" ] || { echo "$1 is not a regular file" >&2; exit 3; }
exec cat -- "$f"
`

// writeFileScript replaces the regular file $1 (following symbolic links)
// with stdin, atomically: a temporary file in the same directory (created
// with mode 0600, so the content is never readable by others), given the
// file's owner and mode, then renamed over it.
const writeFileScript = `f=$(readlink -f -- "$1")
[ -f "$f" ] || { echo "$1 is not a regular file" >&2; exit 3; }
tmp=$(mktemp "$(dirname -- "$f")/.warder.XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
cat >"$tmp"
chown --reference="$f" -- "$tmp"
chmod --reference="$f" -- "$tmp"
mv -f -- "$tmp" "$f"
trap - EXIT
`

// restartScript runs the command $1 with its output discarded: it may echo
// the file.
const restartScript = `sh -c "$1" </dev/null >/dev/null 2>&1 || { s=$?; echo "restart command exited with status $s" >&2; exit "$s"; }
`

// UpdateDependent replaces the first line of the file d.Path on t that
// matches d.Match with d.Line, or appends d.Line when none matches, logged
// in as as with root rights (see the become option). The file is read and
// written over the SSH session's standard streams and replaced atomically,
// keeping its owner and mode; it must exist. Then d.Restart, if set, runs
// as root with its output discarded. Errors name the path, never the
// content.
func (c *Connector) UpdateDependent(ctx context.Context, t connector.Target, as connector.Login, d connector.Dependent) error {
	tt, err := parseTarget(t)
	if err != nil {
		return err
	}
	if !path.IsAbs(d.Path) || path.Clean(d.Path) != d.Path || strings.ContainsAny(d.Path, "\n\x00") {
		return fmt.Errorf("linux: target %q: dependent path %q is not a clean absolute path", tt.Name, d.Path)
	}
	if d.Match == "" {
		return fmt.Errorf("linux: target %q: dependent %s: empty match", tt.Name, d.Path)
	}
	re, err := regexp.Compile(d.Match)
	if err != nil {
		return fmt.Errorf("linux: target %q: dependent %s: match: %v", tt.Name, d.Path, err)
	}
	if strings.ContainsAny(d.Line, "\n\x00") {
		return fmt.Errorf("linux: target %q: dependent %s: the new line contains a line break or NUL", tt.Name, d.Path)
	}

	cl, err := dial(ctx, tt, as.Username, as.Credential)
	if err != nil {
		return err
	}
	defer cl.Close()
	old, err := c.run(ctx, cl, tt.command(as.Username, true, readFileScript, d.Path), nil)
	if err != nil {
		return fmt.Errorf("linux: target %q: read dependent %s: %w", tt.Name, d.Path, err)
	}
	defer clear(old)
	content := replaceLine(old, re, d.Line)
	defer clear(content)
	if _, err := c.run(ctx, cl, tt.command(as.Username, true, writeFileScript, d.Path), content); err != nil {
		return fmt.Errorf("linux: target %q: write dependent %s: %w", tt.Name, d.Path, err)
	}
	if d.Restart != "" {
		if _, err := c.run(ctx, cl, tt.command(as.Username, true, restartScript, d.Restart), nil); err != nil {
			return fmt.Errorf("linux: target %q: dependent %s was updated, but its restart command failed: %w", tt.Name, d.Path, err)
		}
	}
	return nil
}

// replaceLine returns content with its first line matching re replaced by
// line, or with line appended when none matches. Lines end at "\n"; a
// matched line's "\r" (a CRLF file) and the presence of a final newline
// are kept, and the other lines are copied byte for byte.
func replaceLine(content []byte, re *regexp.Regexp, line string) []byte {
	out := make([]byte, 0, len(content)+len(line)+2)
	replaced := false
	for rest := content; len(rest) > 0; {
		l, nl := rest, []byte(nil)
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			l, nl = rest[:i], rest[i:i+1]
		}
		rest = rest[len(l)+len(nl):]
		if !replaced {
			text, cr := bytes.CutSuffix(l, []byte("\r"))
			if re.Match(text) {
				out = append(out, line...)
				if cr {
					out = append(out, '\r')
				}
				out = append(out, nl...)
				replaced = true
				continue
			}
		}
		out = append(out, l...)
		out = append(out, nl...)
	}
	if !replaced {
		if len(out) > 0 && out[len(out)-1] != '\n' {
			out = append(out, '\n')
		}
		out = append(out, line...)
		out = append(out, '\n')
	}
	return out
}
