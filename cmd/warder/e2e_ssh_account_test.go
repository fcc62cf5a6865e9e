package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/warderhq/warder/internal/testenv"
)

// TestSSHTargetAlone: `warder ssh TARGET` (no ACCOUNT@) never logs in as
// the target's management account. It logs in as the account the user's
// live just-in-time grant names, else as the target's default_account,
// else it is refused with a message telling the user to name the account.
func TestSSHTargetAlone(t *testing.T) {
	sshd := testenv.SSHD(t) // skips unless root
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Skip("no OpenSSH client")
	}
	const password = "Correct-Horse-9-battery"
	mgmt := testenv.LinuxUser(t, password)
	deploy := testenv.LinuxUser(t, password)
	ops := testenv.LinuxUser(t, password)

	env, _, _ := startSSHDev(t)
	port := strings.TrimPrefix(sshd.Addr(), sshd.Host+":")
	for _, tg := range []struct {
		name string
		opts []string
	}{
		{"web1", nil},
		{"web2", []string{"--option", "default_account=" + deploy.Username}},
	} {
		args := append([]string{"target", "add", "linux", tg.name, "--host", sshd.Host, "--port", port,
			"--option", "host_key=" + sshd.HostKey, "--management-account", mgmt.Username}, tg.opts...)
		mustOK(t, run(t, env, "", args...), "target add "+tg.name)
		for _, u := range []string{mgmt.Username, deploy.Username, ops.Username} {
			mustOK(t, run(t, env, password+"\n", "account", "add", tg.name+"/"+u, "--password-stdin", "--no-rotate-on-checkin"), "account add")
		}
	}
	whoami := func(dest string) result {
		return run(t, env, "", "ssh", dest, "--", "id", "-un")
	}

	// No grant, no default_account: refused, with what to do.
	r := whoami("web1")
	if r.code == 0 || strings.Contains(r.stdout, mgmt.Username) || !strings.Contains(r.stderr, "name an account: ACCOUNT@web1") {
		t.Errorf("warder ssh web1: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	// The target's default_account.
	if r := mustOK(t, whoami("web2"), "warder ssh web2"); strings.TrimSpace(r.stdout) != deploy.Username {
		t.Errorf("warder ssh web2 logged in as %q, want the default account %s", r.stdout, deploy.Username)
	}
	// Naming the management account still works.
	if r := mustOK(t, whoami(mgmt.Username+"@web1"), "warder ssh mgmt@web1"); strings.TrimSpace(r.stdout) != mgmt.Username {
		t.Errorf("warder ssh %s@web1 logged in as %q", mgmt.Username, r.stdout)
	}

	// A live grant whose role names an account: that account, on web1
	// and (before default_account) on web2.
	policy := filepath.Join(t.TempDir(), "ops.cedar")
	for target, role := range map[string]string{"web1": "web1-ops", "web2": "web2-ops"} {
		os.WriteFile(policy, []byte(`permit(principal == ?principal, action == Action::"connect", resource == Account::"`+target+"/"+ops.Username+`");`), 0o600)
		mustOK(t, run(t, env, "", "role", "create", role, "--policy", policy), "role create")
		mustOK(t, run(t, env, "", "role", "eligible", role, "--user", "admin", "--max-ttl", "1h"), "eligible")
		mustOK(t, run(t, env, "", "request", "create", "--role", role, "--ttl", "30m", "--reason", "deploy"), "request")
		if r := mustOK(t, whoami(target), "warder ssh "+target+" with a grant"); strings.TrimSpace(r.stdout) != ops.Username {
			t.Errorf("warder ssh %s with a grant logged in as %q, want %s", target, r.stdout, ops.Username)
		}
	}
}
