// Package tokenfile keeps the token of `warder login` in a file only its
// owner can read, and decides which token the CLI presents.
//
// The file is written atomically (a temporary file in the same directory,
// then a rename), mode 0600 in a directory created 0700. A symbolic link
// where the file should be is refused, on reading and on writing, and so is
// a file others can read or a directory others can write.
package tokenfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// FileName is the token file's name in the configuration directory.
const FileName = "token"

// maxSize bounds what Load reads; tokens are about 80 bytes.
const maxSize = 8 << 10

// DefaultDir returns the CLI's configuration directory: $WARDER_CONFIG_DIR
// when set, else warder under os.UserConfigDir.
func DefaultDir(getenv func(string) string) (string, error) {
	if d := getenv("WARDER_CONFIG_DIR"); d != "" {
		return d, nil
	}
	d, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("tokenfile: no configuration directory (set WARDER_CONFIG_DIR): %w", err)
	}
	return filepath.Join(d, "warder"), nil
}

// Store is the token file in Dir.
type Store struct {
	Dir string // the configuration directory; required
}

// Path is the token file's path.
func (s Store) Path() string { return filepath.Join(s.Dir, FileName) }

// Load returns the stored token, or "" when there is no token file.
func (s Store) Load() (string, error) {
	path := s.Path()
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("tokenfile: %w", err)
	}
	if err := checkFile(path, fi); err != nil {
		return "", err
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("tokenfile: %w", err)
	}
	defer f.Close()
	// The file we opened must be the one we checked, not a link put in its
	// place since.
	if ofi, err := f.Stat(); err != nil || !os.SameFile(fi, ofi) {
		return "", fmt.Errorf("tokenfile: %s changed while being read", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSize+1))
	if err != nil {
		return "", fmt.Errorf("tokenfile: read %s: %w", path, err)
	}
	if len(b) > maxSize {
		return "", fmt.Errorf("tokenfile: %s is too large to hold a token", path)
	}
	return strings.TrimSpace(string(b)), nil
}

// checkFile refuses a token file that is a link, not a regular file, or
// readable by others.
func checkFile(path string, fi fs.FileInfo) error {
	if fi.Mode()&fs.ModeSymlink != 0 {
		return fmt.Errorf("tokenfile: %s is a symbolic link; refusing to follow it (remove it and log in again)", path)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("tokenfile: %s is not a regular file", path)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("tokenfile: %s is accessible by other users (mode %04o); remove it and log in again", path, fi.Mode().Perm())
	}
	return nil
}

// Save stores token, replacing any stored one. It creates the directory
// (mode 0700) when missing.
func (s Store) Save(token string) error {
	if token == "" || strings.ContainsAny(token, " \t\r\n") {
		return errors.New("tokenfile: refusing to store an empty or malformed token")
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return fmt.Errorf("tokenfile: %w", err)
	}
	di, err := os.Stat(s.Dir)
	if err != nil {
		return fmt.Errorf("tokenfile: %w", err)
	}
	if runtime.GOOS != "windows" && di.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("tokenfile: directory %s is writable by other users (mode %04o); refusing to store a token there", s.Dir, di.Mode().Perm())
	}
	path := s.Path()
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&fs.ModeSymlink != 0 || !fi.Mode().IsRegular() {
			return fmt.Errorf("tokenfile: %s is a symbolic link or not a regular file; refusing to replace it", path)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("tokenfile: %w", err)
	}
	tmp, err := os.CreateTemp(s.Dir, ".token-*.tmp") // mode 0600
	if err != nil {
		return fmt.Errorf("tokenfile: %w", err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil && runtime.GOOS != "windows" {
		return fmt.Errorf("tokenfile: %w", err)
	}
	if _, err := io.WriteString(tmp, token+"\n"); err != nil {
		return fmt.Errorf("tokenfile: write: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("tokenfile: sync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("tokenfile: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("tokenfile: %w", err)
	}
	done = true
	if d, err := os.Open(s.Dir); err == nil { // make the rename durable; best effort
		d.Sync()
		d.Close()
	}
	return nil
}

// Remove deletes the token file and reports whether there was one. A
// symbolic link in its place is removed, never followed.
func (s Store) Remove() (bool, error) {
	err := os.Remove(s.Path())
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("tokenfile: %w", err)
	}
	return true, nil
}

// Source says where the CLI's token came from.
type Source string

// The token sources, in order of precedence.
const (
	FromFlag Source = "--token"
	FromEnv  Source = "WARDER_TOKEN"
	FromFile Source = "token file"
	None     Source = ""
)

// Resolve picks the token the CLI presents: the --token flag, else
// $WARDER_TOKEN, else what load returns (the token file, read only when
// needed). It returns None and "" when there is no token at all.
func Resolve(flag, env string, load func() (string, error)) (string, Source, error) {
	if t := strings.TrimSpace(flag); t != "" {
		return t, FromFlag, nil
	}
	if t := strings.TrimSpace(env); t != "" {
		return t, FromEnv, nil
	}
	t, err := load()
	if err != nil {
		return "", None, err
	}
	if t == "" {
		return "", None, nil
	}
	return t, FromFile, nil
}
