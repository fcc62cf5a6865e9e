package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/warderhq/warder/internal/testenv"
)

var sshAddrPattern = regexp.MustCompile(`ssh gateway listening"? addr=(\S+)`)

// startSSHDev starts a dev server with the SSH gateway on a free port, and
// returns the CLI's environment as the bootstrap admin (with its own
// configuration directory and HOME), that directory and the gateway's
// address.
func startSSHDev(t *testing.T) (env []string, cfgDir, sshAddr string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "dev")
	p := start(t, "dev", "--data-dir", dir, "--listen", "127.0.0.1:0", "--ssh-listen", "127.0.0.1:0")
	for deadline := time.Now().Add(10 * time.Second); sshAddr == "" && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if m := sshAddrPattern.FindStringSubmatch(p.stderr.String()); m != nil {
			sshAddr = m[1]
		}
	}
	if sshAddr == "" {
		t.Fatalf("the dev server did not report its SSH gateway address\nstderr:\n%s", p.stderr)
	}
	token, _ := os.ReadFile(filepath.Join(dir, "admin.token"))
	cfgDir = filepath.Join(t.TempDir(), "cfg")
	env = []string{"WARDER_ADDR=" + p.url, "WARDER_CACERT=" + filepath.Join(dir, "ca.pem"),
		"WARDER_TOKEN=" + strings.TrimSpace(string(token)), "WARDER_CONFIG_DIR=" + cfgDir,
		"HOME=" + t.TempDir(), "SSH_AUTH_SOCK="}
	return env, cfgDir, sshAddr
}

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

	env, cfgDir, sshAddr := startSSHDev(t)

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

// TestSSHProxyJump uses plain OpenSSH — ssh, scp, sftp and rsync — with
// the configuration `warder ssh-config` prints: targets are reached as
// ACCOUNT@TARGET.warder through ProxyJump to the gateway. Target web1
// logs in with a vaulted password and pins its host key; target web2
// logs in with a certificate of Warder's host-access CA (its sshd trusts
// what `warder ssh-ca` prints) and has its host key certified by a host
// CA; its account is not in the vault.
func TestSSHProxyJump(t *testing.T) {
	sshd := testenv.SSHD(t) // skips unless root
	for _, tool := range []string{"ssh", "scp", "sftp", "rsync"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s", tool)
		}
	}
	const password = "Correct-Horse-9-battery"
	u := testenv.LinuxUser(t, password)
	env, cfgDir, _ := startSSHDev(t)
	mustOK(t, run(t, env, "", "target", "add", "linux", "web1", "--host", sshd.Host, "--port", strconv.Itoa(sshd.Port),
		"--option", "host_key="+sshd.HostKey), "target add")
	mustOK(t, run(t, env, password+"\n", "account", "add", "web1/"+u.Username, "--password-stdin", "--no-rotate-on-checkin"), "account add")

	conf := mustOK(t, run(t, env, "", "ssh-config"), "ssh-config").stdout
	if !strings.Contains(conf, "ProxyJump admin@warder") {
		t.Errorf("ssh-config has no ProxyJump:\n%s", conf)
	}
	known, err := os.ReadFile(filepath.Join(cfgDir, "known_hosts"))
	if err != nil || !strings.Contains(string(known), "\n@cert-authority *.warder ssh-ed25519 ") {
		t.Errorf("known_hosts = %q, %v", known, err)
	}
	cfgFile := filepath.Join(t.TempDir(), "ssh_config")
	if err := os.WriteFile(cfgFile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	tool := func(name string, args ...string) (string, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = append(cleanEnv(), "SSH_AUTH_SOCK=")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	dest := u.Username + "@web1.warder"
	dir := t.TempDir()

	out, err := tool("ssh", "-F", cfgFile, "-o", "BatchMode=yes", dest, "echo via-jump; id -un")
	if err != nil || out != "via-jump\n"+u.Username+"\n" {
		t.Fatalf("ssh through ProxyJump: %v\n%s", err, out)
	}

	src, sum := randomFileE2E(t, dir, "scp.bin", 3<<20+7)
	if out, err := tool("scp", "-F", cfgFile, "-B", src, dest+":scp-up.bin"); err != nil {
		t.Fatalf("scp upload: %v\n%s", err, out)
	}
	if got := sha256File(t, filepath.Join(u.HomeDir, "scp-up.bin")); got != sum {
		t.Errorf("scp upload: sha256 %s, want %s", got, sum)
	}
	back := filepath.Join(dir, "scp-back.bin")
	if out, err := tool("scp", "-F", cfgFile, "-B", dest+":scp-up.bin", back); err != nil {
		t.Fatalf("scp download: %v\n%s", err, out)
	}
	if got := sha256File(t, back); got != sum {
		t.Errorf("scp download: sha256 %s, want %s", got, sum)
	}

	src, sum = randomFileE2E(t, dir, "sftp.bin", 2<<20+11)
	back = filepath.Join(dir, "sftp-back.bin")
	batch := filepath.Join(dir, "batch")
	os.WriteFile(batch, []byte("put "+src+" sftp-up.bin\nget sftp-up.bin "+back+"\n"), 0o644)
	if out, err := tool("sftp", "-F", cfgFile, "-b", batch, dest); err != nil {
		t.Fatalf("sftp: %v\n%s", err, out)
	}
	if got := sha256File(t, filepath.Join(u.HomeDir, "sftp-up.bin")); got != sum {
		t.Errorf("sftp put: sha256 %s, want %s", got, sum)
	}
	if got := sha256File(t, back); got != sum {
		t.Errorf("sftp get: sha256 %s, want %s", got, sum)
	}

	src, sum = randomFileE2E(t, dir, "rsync.bin", 1<<20+3)
	if out, err := tool("rsync", "-e", "ssh -F "+cfgFile, src, dest+":rsync-up.bin"); err != nil {
		t.Fatalf("rsync: %v\n%s", err, out)
	}
	if got := sha256File(t, filepath.Join(u.HomeDir, "rsync-up.bin")); got != sum {
		t.Errorf("rsync: sha256 %s, want %s", got, sum)
	}

	// The sessions: who, where, what; the SFTP ones with their file
	// operations in the recording.
	type sess struct {
		ID        string `json:"id"`
		Principal string `json:"principal"`
		Target    string `json:"target"`
		Account   string `json:"account"`
		Command   string `json:"command"`
		Status    string `json:"status"`
		BytesIn   int64  `json:"bytes_in"`
		BytesOut  int64  `json:"bytes_out"`
		Events    int64  `json:"events"`
	}
	var ss []sess
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		ss = decodeJSON[[]sess](t, mustOK(t, run(t, env, "", "session", "ls", "--kind", "ssh", "--format", "json"), "session ls").stdout)
		if len(ss) >= 5 && !slices.ContainsFunc(ss, func(s sess) bool { return s.Status == "active" }) {
			break
		}
	}
	var sftp []sess
	commands := map[string]bool{}
	for _, s := range ss {
		if s.Principal != "user:admin" || s.Target != "web1" || s.Account != "web1/"+u.Username || s.Status != "closed" {
			t.Errorf("session %+v", s)
		}
		commands[s.Command] = true
		if s.Command == "subsystem:sftp" {
			sftp = append(sftp, s)
		}
	}
	if !commands["echo via-jump; id -un"] || !slices.ContainsFunc(ss, func(s sess) bool { return strings.HasPrefix(s.Command, "rsync --server") }) {
		t.Errorf("sessions lack the exec or rsync command: %v", commands)
	}
	// scp (SFTP protocol) twice, sftp once.
	if len(sftp) != 3 {
		t.Fatalf("%d SFTP sessions, want 3: %+v", len(sftp), ss)
	}
	var ops, showOps []string
	for _, s := range sftp {
		if s.Events == 0 || s.BytesIn+s.BytesOut < 2<<20 {
			t.Errorf("SFTP session %+v: no events or too few bytes", s)
		}
		cast := mustOK(t, run(t, env, "", "session", "play", s.ID, "--format", "json"), "session play").stdout
		for line := range strings.SplitSeq(cast, "\n") {
			var ev []any
			if json.Unmarshal([]byte(line), &ev) == nil && len(ev) == 3 && ev[1] == "f" {
				var op struct {
					Op, Path      string
					Read, Written int64
				}
				json.Unmarshal([]byte(ev[2].(string)), &op)
				if op.Op == "close" {
					ops = append(ops, fmt.Sprintf("%s r=%d w=%d", filepath.Base(op.Path), op.Read, op.Written))
				}
			}
		}
		// session show lists the same operations.
		show := mustOK(t, run(t, env, "", "session", "show", s.ID), "session show").stdout
		if !strings.Contains(show, "\nFile operations:\n") || !regexp.MustCompile(`close +read \d+ B, written \d+ B +\S`).MatchString(show) {
			t.Errorf("session show %s lists no file operations:\n%s", s.ID, show)
		}
		detail := decodeJSON[struct {
			Files []struct {
				Op, Path      string
				Read, Written int64
			}
		}](t, mustOK(t, run(t, env, "", "session", "show", s.ID, "--format", "json"), "session show").stdout)
		for _, op := range detail.Files {
			if op.Op == "close" {
				showOps = append(showOps, fmt.Sprintf("%s r=%d w=%d", filepath.Base(op.Path), op.Read, op.Written))
			}
		}
	}
	slices.Sort(ops)
	slices.Sort(showOps)
	if !slices.Equal(ops, showOps) {
		t.Errorf("session show lists the file operations\n%s\nthe recordings hold:\n%s", strings.Join(showOps, "\n"), strings.Join(ops, "\n"))
	}
	want := []string{
		fmt.Sprintf("scp-up.bin r=0 w=%d", 3<<20+7), fmt.Sprintf("scp-up.bin r=%d w=0", 3<<20+7),
		fmt.Sprintf("sftp-up.bin r=0 w=%d", 2<<20+11), fmt.Sprintf("sftp-up.bin r=%d w=0", 2<<20+11),
	}
	slices.Sort(want)
	if !slices.Equal(ops, want) {
		t.Errorf("recorded file operations:\n%s\nwant:\n%s", strings.Join(ops, "\n"), strings.Join(want, "\n"))
	}

	// web2: no vaulted account; login by access certificate; host key
	// certified by a host CA.
	accessCA := strings.TrimSpace(mustOK(t, run(t, env, "", "ssh-ca"), "ssh-ca").stdout)
	hostCA := newTestSigner(t)
	sshd2 := testenv.SSHDWith(t, testenv.SSHDOptions{TrustedUserCAKeys: []string{accessCA}, HostCA: hostCA})
	u2 := testenv.LinuxUser(t, "") // no password: only a certificate logs in
	mustOK(t, run(t, env, "", "target", "add", "linux", "web2", "--host", sshd2.Host, "--port", strconv.Itoa(sshd2.Port),
		"--option", "host_ca="+strings.TrimSpace(string(gossh.MarshalAuthorizedKey(hostCA.PublicKey()))), "--option", "ssh_auth=certificate"), "target add web2")
	out, err = tool("ssh", "-F", cfgFile, "-o", "BatchMode=yes", u2.Username+"@web2.warder", "id -un")
	if err != nil || out != u2.Username+"\n" {
		t.Fatalf("ssh to web2 by access certificate: %v\n%s", err, out)
	}
	if log := sshd2.Log(t); !strings.Contains(log, "warder:user:admin:") {
		t.Error("the target's sshd did not log the access certificate's key id")
	}
	evs := decodeJSON[[]event](t, mustOK(t, run(t, env, "", "audit", "ls", "--action", "ssh.access_certificate.issue", "--format", "json"), "audit ls").stdout)
	if len(evs) != 1 || evs[0].Actor != "user:admin" {
		t.Errorf("audit events %+v", evs)
	}

	// A host CA the target's sshd does not use: refused.
	other := newTestSigner(t)
	mustOK(t, run(t, env, "", "target", "add", "linux", "web3", "--host", sshd2.Host, "--port", strconv.Itoa(sshd2.Port),
		"--option", "host_ca="+strings.TrimSpace(string(gossh.MarshalAuthorizedKey(other.PublicKey()))), "--option", "ssh_auth=certificate"), "target add web3")
	if out, err := tool("ssh", "-F", cfgFile, "-o", "BatchMode=yes", u2.Username+"@web3.warder", "id -un"); err == nil || strings.Contains(out, u2.Username) {
		t.Errorf("ssh to web3 with the wrong host CA: %v\n%s", err, out)
	}
	evs = decodeJSON[[]event](t, mustOK(t, run(t, env, "", "audit", "ls", "--action", "ssh.host_key_mismatch", "--format", "json"), "audit ls").stdout)
	if len(evs) != 1 {
		t.Errorf("host key mismatch events %+v", evs)
	}
}

func randomFileE2E(t *testing.T, dir, name string, n int) (string, string) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return p, hex.EncodeToString(sum[:])
}

func sha256File(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func newTestSigner(t *testing.T) gossh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSSHGatewayBackToBack: sessions through the gateway one right after
// the other on an account that rotates on check-in (scp, then sftp): the
// first session's end checks the account in and starts its rotation; the
// next session waits for that rotation and logs in with the new password
// instead of being refused. The gateway's check-outs and check-ins are
// audited with the client's address.
func TestSSHGatewayBackToBack(t *testing.T) {
	sshd := testenv.SSHD(t) // skips unless root
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Skip("no OpenSSH client")
	}
	u := testenv.LinuxUser(t, "Initial-Horse-7-battery")
	env, _, _ := startSSHDev(t)
	mustOK(t, run(t, env, "", "target", "add", "linux", "web1", "--host", sshd.Host, "--port", strconv.Itoa(sshd.Port),
		"--option", "host_key="+sshd.HostKey, "--management-account", "root"), "target add")
	mustOK(t, run(t, env, string(sshd.RootKey), "account", "add", "web1/root", "--private-key-file", "-", "--no-rotate-on-checkin"), "account add root")
	mustOK(t, run(t, env, "Initial-Horse-7-battery\n", "account", "add", "web1/"+u.Username, "--password-stdin"), "account add")

	for i := range 3 {
		r := run(t, env, "", "ssh", u.Username+"@web1", "--", "echo", "session-"+strconv.Itoa(i))
		if r.code != 0 || strings.TrimSpace(r.stdout) != "session-"+strconv.Itoa(i) {
			t.Fatalf("session %d right after the previous one: exit %d, stdout %q, stderr %q", i, r.code, r.stdout, r.stderr)
		}
	}
	// Each session's check-in rotated the password.
	var a struct {
		CredentialVersion int64 `json:"credential_version"`
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		a = decodeJSON[struct {
			CredentialVersion int64 `json:"credential_version"`
		}](t, mustOK(t, run(t, env, "", "account", "show", "web1/"+u.Username, "--format", "json"), "account show").stdout)
		if a.CredentialVersion >= 4 || time.Now().After(deadline) {
			break
		}
	}
	if a.CredentialVersion < 4 {
		t.Errorf("credential version %d after 3 sessions, want at least 4 (a rotation after each)", a.CredentialVersion)
	}
	type ev struct {
		Actor   string `json:"actor"`
		Outcome string `json:"outcome"`
		Source  string `json:"source"`
	}
	for _, action := range []string{"account.checkout", "account.checkin"} {
		evs := decodeJSON[[]ev](t, mustOK(t, run(t, env, "", "audit", "ls", "--action", action, "--format", "json"), "audit ls").stdout)
		if len(evs) != 3 {
			t.Errorf("%d %s events, want 3: %+v", len(evs), action, evs)
		}
		for _, e := range evs {
			if e.Actor != "user:admin" || e.Outcome != "success" || e.Source != "127.0.0.1" {
				t.Errorf("%s event %+v; want user:admin's success from 127.0.0.1", action, e)
			}
		}
	}
}
