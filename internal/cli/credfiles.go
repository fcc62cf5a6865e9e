package cli

import (
	"bytes"
	"errors"
	"io/fs"
	"net"
	"os"
	"time"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// loginFiles are the credential files "warder login" (and "warder db
// login") write beside the token file: the SSH key and its certificate,
// the database client key and certificate, and the database tokens.
func (e *env) loginFiles() ([]string, error) {
	sf, err := e.sshFiles()
	if err != nil {
		return nil, err
	}
	df, err := e.dbFiles()
	if err != nil {
		return nil, err
	}
	return []string{sf.key, sf.key + ".pub", sf.cert, df.key, df.cert, df.pgpass}, nil
}

// removeLoginFiles removes the files of loginFiles that exist and returns
// their paths.
func (e *env) removeLoginFiles() ([]string, error) {
	paths, err := e.loginFiles()
	if err != nil {
		return nil, err
	}
	removed := []string{}
	var errs []error
	for _, p := range paths {
		switch err := os.Remove(p); {
		case err == nil:
			removed = append(removed, p)
		case !errors.Is(err, fs.ErrNotExist):
			errs = append(errs, err)
		}
	}
	return removed, errors.Join(errs...)
}

// sshPublicKey returns the public half of the SSH key of "warder login",
// or nil when there is none.
func (e *env) sshPublicKey() gossh.PublicKey {
	f, err := e.sshFiles()
	if err != nil {
		return nil
	}
	if data, err := os.ReadFile(f.key); err == nil {
		if s, err := gossh.ParsePrivateKey(data); err == nil {
			return s.PublicKey()
		}
	}
	if data, err := os.ReadFile(f.key + ".pub"); err == nil {
		if k, _, _, _, err := gossh.ParseAuthorizedKey(data); err == nil {
			return k
		}
	}
	return nil
}

// removeFromAgent removes from the ssh-agent listening on sock every
// identity of the key pub: the key itself and each certificate of it (one
// per earlier login). It returns how many it removed.
func removeFromAgent(sock string, pub gossh.PublicKey) (int, error) {
	conn, err := net.DialTimeout("unix", sock, agentTimeout)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(agentTimeout))
	ac := agent.NewClient(conn)
	keys, err := ac.List()
	if err != nil {
		return 0, err
	}
	want := pub.Marshal()
	n := 0
	for _, k := range keys {
		if !agentKeyOf(k, want) {
			continue
		}
		if err := ac.Remove(k); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// agentKeyOf reports whether the agent's identity k is the public key
// want (in wire format) or a certificate of it.
func agentKeyOf(k *agent.Key, want []byte) bool {
	if bytes.Equal(k.Blob, want) {
		return true
	}
	pk, err := gossh.ParsePublicKey(k.Blob)
	if err != nil {
		return false
	}
	cert, ok := pk.(*gossh.Certificate)
	return ok && bytes.Equal(cert.Key.Marshal(), want)
}

// replaceInAgent loads the SSH key with certLine, its new certificate,
// into the ssh-agent on sock in place of the identities an earlier login
// left there.
func (e *env) replaceInAgent(sock, certLine string) error {
	k, _, _, _, err := gossh.ParseAuthorizedKey([]byte(certLine))
	if cert, ok := k.(*gossh.Certificate); err == nil && ok {
		if _, err := removeFromAgent(sock, cert.Key); err != nil {
			return err
		}
	}
	return e.addToAgent(sock, certLine)
}
