package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/warderhq/warder/internal/cli/tokenfile"
	"github.com/warderhq/warder/internal/client"
)

// Files of the database client setup, in the configuration directory.
const (
	dbKeyFile    = "db_client.key" // ECDSA P-256, PEM, mode 0600
	dbCertFile   = "db_client.crt" // the certificate `warder login` gets, PEM
	dbPgpassFile = "pgpass"        // database tokens of `warder db login`, mode 0600
)

// dbFiles are the paths of the database client files.
type dbFiles struct{ dir, key, cert, pgpass string }

func (e *env) dbFiles() (dbFiles, error) {
	dir, err := tokenfile.DefaultDir(e.getenv)
	if err != nil {
		return dbFiles{}, err
	}
	return dbFiles{dir: dir, key: filepath.Join(dir, dbKeyFile), cert: filepath.Join(dir, dbCertFile),
		pgpass: filepath.Join(dir, dbPgpassFile)}, nil
}

// loadKey returns the client key, or nil when there is none.
func (f dbFiles) loadKey() (*ecdsa.PrivateKey, error) {
	data, err := os.ReadFile(f.key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("database client key %s: not PEM", f.key)
	}
	k, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("database client key %s: %w", f.key, err)
	}
	return k, nil
}

// ensureKey returns the client key's public half as a PEM "PUBLIC KEY",
// generating the key (ECDSA P-256, mode 0600) if there is none.
func (f dbFiles) ensureKey() (string, error) {
	k, err := f.loadKey()
	if err != nil {
		return "", err
	}
	if k == nil {
		if err := os.MkdirAll(f.dir, 0o700); err != nil {
			return "", err
		}
		if k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return "", err
		}
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			return "", err
		}
		if err := writeFileAtomic(f.key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return "", err
		}
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), nil
}

// certificate returns the stored client certificate and key if the
// certificate is for the current key and valid for at least d more.
func (f dbFiles) certificate(d time.Duration) (tls.Certificate, bool) {
	pair, err := tls.LoadX509KeyPair(f.cert, f.key) // checks that they match
	if err != nil || pair.Leaf == nil {
		return tls.Certificate{}, false
	}
	if !time.Now().Add(d).Before(pair.Leaf.NotAfter) {
		return tls.Certificate{}, false
	}
	return pair, true
}

// refreshDBCert gets a client certificate for the database gateway for
// the key (generated if missing) and writes it beside the key.
func (e *env) refreshDBCert(ctx context.Context, c *client.Client) (client.DBCertificate, error) {
	f, err := e.dbFiles()
	if err != nil {
		return client.DBCertificate{}, err
	}
	pub, err := f.ensureKey()
	if err != nil {
		return client.DBCertificate{}, err
	}
	cert, err := c.DBCertificate(ctx, pub)
	if err != nil {
		return client.DBCertificate{}, err
	}
	return cert, writeFileAtomic(f.cert, []byte(cert.Certificate), 0o644)
}

// dbCertificate returns a client certificate valid for at least a
// minute, getting a new one with c if needed; ok is false when none can
// be had (c nil, or the server refuses: a database token, no login).
func (e *env) dbCertificate(ctx context.Context, c *client.Client) (f dbFiles, cert tls.Certificate, ok bool) {
	f, err := e.dbFiles()
	if err != nil {
		return f, tls.Certificate{}, false
	}
	if cert, ok := f.certificate(time.Minute); ok {
		return f, cert, true
	}
	if c == nil {
		return f, tls.Certificate{}, false
	}
	if _, err := e.refreshDBCert(ctx, c); err != nil {
		return f, tls.Certificate{}, false
	}
	cert, ok = f.certificate(time.Minute)
	return f, cert, ok
}

// pgpassEscape escapes a pgpass field: backslash and colon.
func pgpassEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `:`, `\:`).Replace(s)
}

// pgpassLine is one entry of a pgpass file.
func pgpassLine(host, port, database, user, password string) string {
	return strings.Join([]string{pgpassEscape(host), pgpassEscape(port), pgpassEscape(database),
		pgpassEscape(user), pgpassEscape(password)}, ":")
}

// pgpassExpiry precedes each entry Warder writes, so that expired ones
// are dropped when the file is next written.
const pgpassExpiry = "# warder: expires "

// savePgpass writes line to the pgpass file (mode 0600, in a directory
// created 0700), replacing the entry for the same host, port, database
// and user and dropping entries that have expired. Only Warder writes
// this file.
func (f dbFiles) savePgpass(line string, expires time.Time) error {
	if err := os.MkdirAll(f.dir, 0o700); err != nil {
		return err
	}
	key := pgpassKey(line)
	var out bytes.Buffer
	if old, err := os.ReadFile(f.pgpass); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(old))
		var exp time.Time
		for sc.Scan() {
			l := sc.Text()
			if t, ok := strings.CutPrefix(l, pgpassExpiry); ok {
				exp, _ = time.Parse(time.RFC3339, t)
				continue
			}
			if l == "" || strings.HasPrefix(l, "#") || pgpassKey(l) == key || !exp.IsZero() && time.Now().After(exp) {
				exp = time.Time{}
				continue
			}
			if !exp.IsZero() {
				fmt.Fprintf(&out, "%s%s\n", pgpassExpiry, exp.UTC().Format(time.RFC3339))
			}
			out.WriteString(l + "\n")
			exp = time.Time{}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	fmt.Fprintf(&out, "%s%s\n%s\n", pgpassExpiry, expires.UTC().Format(time.RFC3339), line)
	return writeFileAtomic(f.pgpass, out.Bytes(), 0o600)
}

// pgpassKey is the entry's fields but the password.
func pgpassKey(line string) string {
	for i := len(line) - 1; i >= 0; i-- {
		if line[i] != ':' {
			continue
		}
		// An odd number of backslashes before the colon escapes it.
		n := 0
		for j := i - 1; j >= 0 && line[j] == '\\'; j-- {
			n++
		}
		if n%2 == 0 {
			return line[:i]
		}
	}
	return line
}
