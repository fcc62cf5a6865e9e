package linux

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warderhq/warder/internal/connector"
)

// editKeysScript edits ~USER/.ssh/authorized_keys ($1 = USER): it drops
// every line that has BLOB ($2, a public key's base64; empty: none) as a
// field, appends the line read from stdin (if any), and replaces the file
// atomically with a temporary file in the same directory, owned by the
// user with mode 0600. Other lines are copied unchanged. It refuses a
// symbolic link for ~/.ssh or the file, so that root never writes through
// a link the user planted.
const editKeysScript = `user=$1 blob=$2
ent=$(getent passwd "$user") || { echo "no account $user" >&2; exit 3; }
uid=$(printf '%s\n' "$ent" | cut -d: -f3)
gid=$(printf '%s\n' "$ent" | cut -d: -f4)
home=$(printf '%s\n' "$ent" | cut -d: -f6)
[ -n "$home" ] && [ -d "$home" ] || { echo "home directory of $user missing" >&2; exit 3; }
dir=$home/.ssh
f=$dir/authorized_keys
if [ -L "$dir" ] || [ -L "$f" ]; then echo "$f or its directory is a symbolic link; refusing to edit it" >&2; exit 3; fi
line=
IFS= read -r line || true
if [ ! -e "$f" ] && [ -z "$line" ]; then exit 0; fi
if [ ! -d "$dir" ]; then
  mkdir -m 700 "$dir"
  if [ "$(id -u)" = 0 ]; then chown "$uid:$gid" "$dir"; fi
fi
tmp=$(mktemp "$dir/.authorized_keys.XXXXXX")
trap 'rm -f "$tmp"' EXIT
if [ -e "$f" ]; then
  awk -v b="$blob" '{ if (b != "") for (i = 1; i <= NF; i++) if ($i == b) next; print }' "$f" >"$tmp"
fi
if [ -n "$line" ]; then printf '%s\n' "$line" >>"$tmp"; fi
chmod 600 "$tmp"
if [ "$(id -u)" = 0 ]; then chown "$uid:$gid" "$tmp"; fi
mv -f "$tmp" "$f"
trap - EXIT
`

// keyPair is a parsed ssh_key credential.
type keyPair struct {
	pub     ssh.PublicKey
	options []string
	blob    string // base64 of pub, as in an authorized_keys line
}

// parsePublic parses an ssh_key credential's PublicKey.
func parsePublic(cred connector.Credential) (*keyPair, error) {
	pub, _, options, rest, err := ssh.ParseAuthorizedKey([]byte(cred.PublicKey))
	if err != nil {
		return nil, fmt.Errorf("public key: %v", err)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, errors.New("public key: more than one key")
	}
	return &keyPair{pub: pub, options: options, blob: base64.StdEncoding.EncodeToString(pub.Marshal())}, nil
}

// parseKeyPair parses an ssh_key credential and checks that its private
// key belongs to its public key, so that a mismatched pair never reaches
// authorized_keys.
func parseKeyPair(cred connector.Credential) (*keyPair, error) {
	kp, err := parsePublic(cred)
	if err != nil {
		return nil, err
	}
	signer, err := ssh.ParsePrivateKey(cred.Secret)
	if err != nil {
		return nil, fmt.Errorf("private key: %v", err)
	}
	if !bytes.Equal(signer.PublicKey().Marshal(), kp.pub.Marshal()) {
		return nil, errors.New("the private key does not belong to the public key")
	}
	return kp, nil
}

// authorizedLine renders an authorized_keys line.
func authorizedLine(options []string, pub ssh.PublicKey, comment string) string {
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	if len(options) > 0 {
		line = strings.Join(options, ",") + " " + line
	}
	if comment != "" {
		line += " " + comment
	}
	return line
}

// changeKey rotates an account's SSH key: it adds the new key to
// authorized_keys, logs in with it, and only then removes the old key
// (req.Current's). When the new key cannot log in, it is removed again and
// the old one stays. Without Current (a reset by the management account)
// no old key is known, so none is removed.
func (c *Connector) changeKey(ctx context.Context, t *target, req connector.ChangeRequest) error {
	next, err := parseKeyPair(req.Next)
	if err != nil {
		return fmt.Errorf("linux: target %q: new key for %q: %w", t.Name, req.Username, err)
	}
	var oldBlob string
	if req.Current != nil && req.Current.Kind == connector.SSHKey && req.Current.PublicKey != "" {
		old, err := parsePublic(*req.Current)
		if err != nil {
			return fmt.Errorf("linux: target %q: current key of %q: %w", t.Name, req.Username, err)
		}
		if old.blob == next.blob {
			return fmt.Errorf("linux: target %q: the new key of %q is its current key", t.Name, req.Username)
		}
		oldBlob = old.blob
	}

	// The account edits its own file; a management account edits it as
	// root.
	var login connector.Login
	privileged := false
	switch {
	case req.As != nil && req.As.Username != req.Username:
		login, privileged = *req.As, true
	case req.As != nil:
		login = *req.As
	case req.Current != nil:
		login = connector.Login{Username: req.Username, Credential: *req.Current}
	default:
		return fmt.Errorf("linux: target %q: changing the key of %q needs its current credential or the management account", t.Name, req.Username)
	}
	cl, err := dial(ctx, t, login.Username, login.Credential)
	if err != nil {
		return err
	}
	defer cl.Close()

	edit := func(remove, add string) error {
		cmd := t.command(login.Username, privileged, editKeysScript, req.Username, remove)
		_, err := c.run(ctx, cl, cmd, []byte(add+"\n"))
		return err
	}
	comment := fmt.Sprintf("warder %s %s", req.Username, c.now().UTC().Format(time.DateOnly))
	// Removing the new key's blob first makes a retried rotation replace
	// its earlier line instead of adding a second one.
	if err := edit(next.blob, authorizedLine(next.options, next.pub, comment)); err != nil {
		return fmt.Errorf("linux: target %q: add the new key to %s's authorized_keys: %w", t.Name, req.Username, err)
	}
	if err := c.Verify(ctx, t.Target, req.Username, req.Next); err != nil {
		// Not wrapped: ErrRejected from Change means the login as As (or
		// the account) was refused, which this is not.
		failed := fmt.Errorf("linux: target %q: the new key of %q does not log in (%v); the old key stays", t.Name, req.Username, err)
		if rerr := edit(next.blob, ""); rerr != nil {
			return errors.Join(failed, fmt.Errorf("linux: target %q: remove the new key from %s's authorized_keys again: %w", t.Name, req.Username, rerr))
		}
		return failed
	}
	if oldBlob != "" {
		if err := edit(oldBlob, ""); err != nil {
			return fmt.Errorf("linux: target %q: the new key of %q works, but removing the old key failed: %w", t.Name, req.Username, err)
		}
	}
	return nil
}
