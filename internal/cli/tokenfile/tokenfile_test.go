package tokenfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const tok = "wt1.0123456789abcdef01.abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"

func TestSaveLoad(t *testing.T) {
	s := Store{Dir: filepath.Join(t.TempDir(), "cfg", "warder")}
	if got, err := s.Load(); err != nil || got != "" {
		t.Fatalf("Load with no file = %q, %v; want empty, nil", got, err)
	}
	if err := s.Save(tok); err != nil {
		t.Fatal(err)
	}
	di, err := os.Stat(s.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %04o, want 0700", di.Mode().Perm())
	}
	fi, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode %04o, want 0600", fi.Mode().Perm())
	}
	if got, err := s.Load(); err != nil || got != tok {
		t.Fatalf("Load = %q, %v; want the saved token", got, err)
	}

	// Replacing is atomic: a new file is renamed into place, so a hard link
	// to the old one still holds the old token, and no temporary file is
	// left behind.
	old := filepath.Join(t.TempDir(), "old")
	if err := os.Link(s.Path(), old); err != nil {
		t.Skipf("no hard links here: %v", err)
	}
	if err := s.Save(tok + "2"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(old); strings.TrimSpace(string(b)) != tok {
		t.Errorf("the old file was rewritten in place: %q", b)
	}
	if got, _ := s.Load(); got != tok+"2" {
		t.Errorf("Load after replace = %q", got)
	}
	entries, _ := os.ReadDir(s.Dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the token file", len(entries))
	}

	if removed, err := s.Remove(); err != nil || !removed {
		t.Errorf("Remove = %v, %v", removed, err)
	}
	if removed, err := s.Remove(); err != nil || removed {
		t.Errorf("second Remove = %v, %v; want false, nil", removed, err)
	}
}

func TestSymlinkRefused(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	target := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.WriteFile(target, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, s.Path()); err != nil {
		t.Skipf("no symlinks here: %v", err)
	}
	if _, err := s.Load(); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("Load through a symlink: %v; want a refusal", err)
	}
	if err := s.Save("wt1.other.token"); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("Save over a symlink: %v; want a refusal", err)
	}
	if b, _ := os.ReadFile(target); string(b) != tok+"\n" {
		t.Errorf("the link's target was changed to %q", b)
	}
	// Remove deletes the link, not its target.
	if _, err := s.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(target); err != nil {
		t.Errorf("Remove followed the link: %v", err)
	}
}

func TestUnsafeModesRefused(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	if err := os.WriteFile(s.Path(), []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chmod(s.Path(), 0o644)
	if _, err := s.Load(); err == nil {
		t.Error("Load of a world-readable token file succeeded")
	}

	open := filepath.Join(t.TempDir(), "open")
	os.Mkdir(open, 0o700)
	os.Chmod(open, 0o777)
	if err := (Store{Dir: open}).Save(tok); err == nil {
		t.Error("Save into a world-writable directory succeeded")
	}
	if err := s.Save("two words"); err == nil {
		t.Error("Save of a malformed token succeeded")
	}
}

func TestResolve(t *testing.T) {
	fileTok := func() (string, error) { return "from-file", nil }
	noFile := func() (string, error) { return "", nil }
	badFile := func() (string, error) { return "", errors.New("tokenfile: bad") }
	for _, tc := range []struct {
		name       string
		flag, env  string
		load       func() (string, error)
		want       string
		wantSource Source
		wantErr    bool
	}{
		{"flag beats env and file", "from-flag", "from-env", fileTok, "from-flag", FromFlag, false},
		{"env beats file", "", "from-env", fileTok, "from-env", FromEnv, false},
		{"file last", "", "", fileTok, "from-file", FromFile, false},
		{"none", "", " ", noFile, "", None, false},
		{"file not read when env set", "", "from-env", badFile, "from-env", FromEnv, false},
		{"file error", "", "", badFile, "", None, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, src, err := Resolve(tc.flag, tc.env, tc.load)
			if (err != nil) != tc.wantErr || got != tc.want || src != tc.wantSource {
				t.Errorf("Resolve = %q, %q, %v; want %q, %q, error %v", got, src, err, tc.want, tc.wantSource, tc.wantErr)
			}
		})
	}
}

func TestDefaultDir(t *testing.T) {
	env := map[string]string{"WARDER_CONFIG_DIR": "/etc/custom"}
	if d, err := DefaultDir(func(k string) string { return env[k] }); err != nil || d != "/etc/custom" {
		t.Errorf("DefaultDir with WARDER_CONFIG_DIR = %q, %v", d, err)
	}
	t.Setenv("XDG_CONFIG_HOME", "/home/x/.config")
	d, err := DefaultDir(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := os.UserConfigDir(); d != filepath.Join(want, "warder") {
		t.Errorf("DefaultDir = %q, want under %q", d, want)
	}
}
