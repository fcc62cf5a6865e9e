package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/warderhq/warder/internal/testenv"
)

var sshAddrPattern = regexp.MustCompile(`ssh gateway listening"? addr=(\S+)`)

// TestSSHGateway connects through the SSH gateway with the system's ssh:
// a dev server with the gateway on, a real sshd with a real user whose
// password is in the vault, `warder ssh` running a command.
func TestSSHGateway(t *testing.T) {
	sshd := testenv.SSHD(t) // skips unless root
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Skip("no OpenSSH client")
	}
	const password = "Correct-Horse-9-battery"
	u := testenv.LinuxUser(t, password)

	dir := filepath.Join(t.TempDir(), "dev")
	p := start(t, "dev", "--data-dir", dir, "--listen", "127.0.0.1:0", "--ssh-listen", "127.0.0.1:0")
	var sshAddr string
	for deadline := time.Now().Add(10 * time.Second); sshAddr == "" && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if m := sshAddrPattern.FindStringSubmatch(p.stderr.String()); m != nil {
			sshAddr = m[1]
		}
	}
	if sshAddr == "" {
		t.Fatalf("the dev server did not report its SSH gateway address\nstderr:\n%s", p.stderr)
	}
	token, _ := os.ReadFile(filepath.Join(dir, "admin.token"))
	cfgDir := filepath.Join(t.TempDir(), "cfg")
	env := []string{"WARDER_ADDR=" + p.url, "WARDER_CACERT=" + filepath.Join(dir, "ca.pem"),
		"WARDER_TOKEN=" + strings.TrimSpace(string(token)), "WARDER_CONFIG_DIR=" + cfgDir}

	mustOK(t, run(t, env, "", "target", "add", "linux", "web1", "--host", sshd.Host, "--port", strings.TrimPrefix(sshd.Addr(), sshd.Host+":"),
		"--option", "host_key="+sshd.HostKey), "target add")
	mustOK(t, run(t, env, password+"\n", "account", "add", "web1/"+u.Username, "--password-stdin", "--no-rotate-on-checkin"), "account add")

	conf := mustOK(t, run(t, env, "", "ssh-config"), "ssh-config").stdout
	for _, want := range []string{"Host warder", "Port " + sshAddr[strings.LastIndex(sshAddr, ":")+1:], "CertificateFile " + filepath.Join(cfgDir, "id_ed25519_warder-cert.pub"), "StrictHostKeyChecking yes"} {
		if !strings.Contains(conf, want) {
			t.Errorf("ssh-config lacks %q:\n%s", want, conf)
		}
	}
	if fi, err := os.Stat(filepath.Join(cfgDir, "id_ed25519_warder")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("SSH key: %v, mode %v; want 0600", err, fi)
	}
	known, err := os.ReadFile(filepath.Join(cfgDir, "known_hosts"))
	if err != nil || !strings.HasPrefix(string(known), "[127.0.0.1]:") {
		t.Errorf("known_hosts = %q, %v", known, err)
	}

	r := mustOK(t, run(t, env, "", "ssh", u.Username+"@web1", "--", "echo", "hello"), "warder ssh")
	if strings.TrimSpace(r.stdout) != "hello" {
		t.Errorf("warder ssh echo hello: stdout %q, stderr %q", r.stdout, r.stderr)
	}
	if r := run(t, env, "", "ssh", u.Username+"@web1", "--", "exit 7"); r.code != 7 {
		t.Errorf("exit 7: exit code %d, want 7\nstderr: %s", r.code, r.stderr)
	}

	type sess struct {
		ID        string `json:"id"`
		Principal string `json:"principal"`
		Target    string `json:"target"`
		Account   string `json:"account"`
		Command   string `json:"command"`
		Status    string `json:"status"`
	}
	var ss []sess
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		ss = decodeJSON[[]sess](t, mustOK(t, run(t, env, "", "session", "ls", "--kind", "ssh", "--format", "json"), "session ls").stdout)
		if len(ss) >= 2 && ss[0].Status != "" && ss[1].Status != "" && ss[0].Status != "active" && ss[1].Status != "active" {
			break
		}
	}
	var found *sess
	for i := range ss {
		if ss[i].Command == "echo hello" {
			found = &ss[i]
		}
	}
	if found == nil {
		t.Fatalf("no session with command echo hello: %+v", ss)
	}
	if found.Principal != "user:admin" || found.Target != "web1" || found.Account != "web1/"+u.Username {
		t.Errorf("session = %+v", *found)
	}
	show := mustOK(t, run(t, env, "", "session", "show", found.ID), "session show").stdout
	if !strings.Contains(show, "echo hello") {
		t.Errorf("session show lacks the command:\n%s", show)
	}
}
