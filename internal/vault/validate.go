package vault

import (
	"regexp"
	"strings"
	"time"

	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/errkind"
)

// Limits on an account's settings.
const (
	maxCheckoutsLimit = 1000
	minRotateEvery    = time.Minute
	maxDependents     = 16
	maxSecretBytes    = 16 << 10
)

// Dependent is a file on a target holding a copy of an account's
// credential, updated by each rotation. It stores no secret: rotation
// renders Template with the new credential.
type Dependent struct {
	Target   string `json:"target"`            // a target of the vault (linux)
	Path     string `json:"path"`              // absolute
	Match    string `json:"match"`             // a Go regular expression selecting the line to replace
	Template string `json:"template"`          // the new line; "{{password}}" stands for the credential
	Restart  string `json:"restart,omitempty"` // a command run after the file changed
}

// Placeholder is what Dependent.Template holds where the credential goes.
const Placeholder = "{{password}}"

// Render returns d as a connector.Dependent with secret in place of the
// placeholder. The result is secret.
func (d Dependent) Render(secret []byte) connector.Dependent {
	return connector.Dependent{Path: d.Path, Match: d.Match, Line: strings.ReplaceAll(d.Template, Placeholder, string(secret)), Restart: d.Restart}
}

// SplitAccountID splits "target/username", refusing a malformed id.
func SplitAccountID(id string) (target, username string, err error) {
	target, username, ok := strings.Cut(id, "/")
	if !ok || !targetNameRE.MatchString(target) || !usernameRE.MatchString(username) {
		return "", "", errkind.New(errkind.Invalid, "vault: account %q is not TARGET/USERNAME", clip(id))
	}
	return target, username, nil
}

func checkMaxCheckouts(n int) error {
	if n < 1 || n > maxCheckoutsLimit {
		return errkind.New(errkind.Invalid, "vault: max checkouts %d is not between 1 and %d", n, maxCheckoutsLimit)
	}
	return nil
}

func checkRotateEvery(d time.Duration) error {
	if d != 0 && (d < minRotateEvery || d > 100*365*24*time.Hour) {
		return errkind.New(errkind.Invalid, "vault: rotate every %v is not zero or at least %v", d, minRotateEvery)
	}
	return nil
}

func checkDependents(ds []Dependent) error {
	if len(ds) > maxDependents {
		return errkind.New(errkind.Invalid, "vault: more than %d dependents", maxDependents)
	}
	for i, d := range ds {
		bad := func(what string) error {
			return errkind.New(errkind.Invalid, "vault: dependent %d: %s", i+1, what)
		}
		switch {
		case !targetNameRE.MatchString(d.Target):
			return bad("target name is malformed")
		case !strings.HasPrefix(d.Path, "/") || len(d.Path) > 4096 || strings.ContainsAny(d.Path, "\x00\r\n"):
			return bad("path is not an absolute path")
		case d.Match == "" || len(d.Match) > 1024:
			return bad("match is empty or longer than 1024 bytes")
		case !strings.Contains(d.Template, Placeholder) || len(d.Template) > 4096 || strings.ContainsAny(d.Template, "\x00\r\n"):
			return bad("template is not one line holding " + Placeholder)
		case len(d.Restart) > 1024 || strings.ContainsAny(d.Restart, "\x00\r\n"):
			return bad("restart is not one line of at most 1024 bytes")
		}
		if _, err := regexp.Compile(d.Match); err != nil {
			return bad("match is not a regular expression: " + err.Error())
		}
	}
	return nil
}

// checkCredential checks c for an account of kind k.
func checkCredential(c *connector.Credential, k connector.CredentialKind) error {
	if c.Kind == "" {
		c.Kind = k
	}
	switch {
	case c.Kind != k:
		return errkind.New(errkind.Invalid, "vault: credential is a %s, the account holds a %s", c.Kind, k)
	case len(c.Secret) == 0 || len(c.Secret) > maxSecretBytes:
		return errkind.New(errkind.Invalid, "vault: credential is empty or longer than %d bytes", maxSecretBytes)
	case k == connector.SSHKey && (c.PublicKey == "" || len(c.PublicKey) > maxSecretBytes || strings.ContainsAny(c.PublicKey, "\r\n")):
		return errkind.New(errkind.Invalid, "vault: an SSH key credential needs its public key on one line")
	case k != connector.SSHKey && c.PublicKey != "":
		return errkind.New(errkind.Invalid, "vault: only SSH key credentials have a public key")
	}
	return nil
}
