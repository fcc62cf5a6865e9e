package testenv

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// SCRAMCluster is a throwaway PostgreSQL cluster whose TCP listener takes
// passwords for real: pg_hba.conf has only
//
//	local all warder_admin trust
//	host  all all 127.0.0.1/32 scram-sha-256
//
// and password_encryption is scram-sha-256. The machine's own PostgreSQL
// may trust local connections, so password tests must use this one.
type SCRAMCluster struct {
	// AdminURL reaches the superuser warder_admin over the cluster's unix
	// socket (trust). Only setup code uses it; it never takes a password.
	AdminURL string
	// Host and Port are the password-checked TCP listener.
	Host string
	Port int

	admin *sql.DB
}

// scramCluster is the one cluster of this test binary: started by the first
// PostgresSCRAM call, stopped by StopPostgresSCRAM or, if the binary dies
// first, by the parent-death signal the postmaster gets (a fast shutdown).
// A killed binary may leave its temporary directory behind in $TMPDIR
// (warder-pgscram-*).
var scramCluster struct {
	once sync.Once
	c    *SCRAMCluster
	err  error

	// mu protects the following, for StopPostgresSCRAM.
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	dir  string
}

// PostgresSCRAM returns the test binary's throwaway SCRAM cluster,
// starting it on first use (initdb takes a few seconds). Tests share it:
// create roles with unique names (CreateRole) and drop them. A test binary
// that uses it should call StopPostgresSCRAM from TestMain after m.Run.
//
// The binaries are found in $WARDER_TEST_PG_BINDIR, else the newest
// /usr/lib/postgresql/*/bin, else $PATH. Run as root, initdb and the server
// run as the OS user "postgres".
func PostgresSCRAM(t testing.TB) *SCRAMCluster {
	t.Helper()
	scramCluster.once.Do(func() {
		scramCluster.c, scramCluster.err = startSCRAMCluster()
	})
	if scramCluster.err != nil {
		t.Fatalf("testenv: SCRAM cluster: %v", scramCluster.err)
	}
	return scramCluster.c
}

// StopPostgresSCRAM shuts the cluster down (if one was started) and removes
// its directory. Call it from TestMain after m.Run.
func StopPostgresSCRAM() {
	scramCluster.mu.Lock()
	defer scramCluster.mu.Unlock()
	if scramCluster.c != nil && scramCluster.c.admin != nil {
		scramCluster.c.admin.Close()
	}
	if scramCluster.cmd != nil {
		scramCluster.cmd.Process.Signal(syscall.SIGINT) // fast shutdown
		select {
		case <-scramCluster.done:
		case <-time.After(20 * time.Second):
			scramCluster.cmd.Process.Kill()
			<-scramCluster.done
		}
		scramCluster.cmd = nil
	}
	if scramCluster.dir != "" {
		os.RemoveAll(scramCluster.dir)
		scramCluster.dir = ""
	}
}

// CreateRole creates a LOGIN role with a unique name (prefix wt_), the
// given password (hashed by the server) and extra attributes such as
// "CREATEROLE", and drops it when t ends. It returns the role's name.
func (c *SCRAMCluster) CreateRole(t testing.TB, password, attrs string) string {
	t.Helper()
	name := "wt_" + randomHex(6)
	c.Exec(t, fmt.Sprintf("CREATE ROLE %s LOGIN %s PASSWORD %s", name, attrs, QuoteLiteral(password)))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := c.admin.ExecContext(ctx, "DROP ROLE IF EXISTS "+name); err != nil {
			t.Logf("testenv: drop role %s: %v", name, err)
		}
	})
	return name
}

// Exec runs sql as the cluster's superuser.
func (c *SCRAMCluster) Exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.admin.ExecContext(ctx, sql, args...); err != nil {
		t.Fatalf("testenv: SCRAM cluster: %v", err)
	}
}

// QueryRow runs a query as the cluster's superuser.
func (c *SCRAMCluster) QueryRow(ctx context.Context, sql string, args ...any) *sql.Row {
	return c.admin.QueryRowContext(ctx, sql, args...)
}

// QuoteLiteral quotes s as a PostgreSQL string literal
// (standard_conforming_strings on, the default since 9.1).
func QuoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// UnusedPort returns a loopback TCP port nothing listens on (at the moment
// of the call), for "target unreachable" tests.
func UnusedPort(t testing.TB) int {
	t.Helper()
	p, err := unusedLoopbackPort()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return p
}

func unusedLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startSCRAMCluster() (*SCRAMCluster, error) {
	bindir, err := pgBinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "warder-pgscram-")
	if err != nil {
		return nil, err
	}
	scramCluster.mu.Lock()
	scramCluster.dir = dir
	scramCluster.mu.Unlock()

	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs an OS user postgres to run initdb: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bindir, "initdb"), "-D", data, "-U", "warder_admin",
		"--auth-local=trust", "--auth-host=reject", "-E", "UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	hba := "# written by internal/testenv: passwords are checked on TCP\n" +
		"local all warder_admin trust\n" +
		"host  all all 127.0.0.1/32 scram-sha-256\n"
	if err := os.WriteFile(filepath.Join(data, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		return nil, err
	}
	if cred != nil {
		os.Chown(filepath.Join(data, "pg_hba.conf"), int(cred.Uid), int(cred.Gid))
	}

	var lastErr error
	for range 3 { // the free port may be taken before the server binds it
		port, err := unusedLoopbackPort()
		if err != nil {
			return nil, err
		}
		c, err := startPostmaster(bindir, dir, data, port, cred)
		if err == nil {
			return c, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func startPostmaster(bindir, dir, data string, port int, cred *syscall.Credential) (*SCRAMCluster, error) {
	logPath := filepath.Join(dir, "postgres.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(bindir, "postgres"), "-D", data,
		"-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories="+dir,
		"-c", "password_encryption=scram-sha-256",
		"-c", "ssl=off",
		"-c", "max_connections=200",
		"-c", "shared_buffers=32MB",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Pdeathsig: a test binary that dies without calling StopPostgresSCRAM
	// still shuts the server down (Go sets it after the credential change).
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGINT, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()

	q := url.Values{"host": {dir}, "port": {strconv.Itoa(port)}, "sslmode": {"disable"}}
	c := &SCRAMCluster{
		AdminURL: "postgres://warder_admin@/postgres?" + q.Encode(),
		Host:     "127.0.0.1",
		Port:     port,
	}
	c.admin, err = sql.Open("pgx", c.AdminURL)
	if err != nil {
		cmd.Process.Kill()
		return nil, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = c.admin.PingContext(ctx)
		cancel()
		if err == nil {
			break
		}
		select {
		case <-done:
			c.admin.Close()
			log, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("postgres exited: %s", pgLogTail(log, 2000))
		default:
		}
		if time.Now().After(deadline) {
			c.admin.Close()
			cmd.Process.Kill()
			<-done
			log, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("postgres did not answer within 60s: %v\n%s", err, pgLogTail(log, 2000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	scramCluster.mu.Lock()
	scramCluster.cmd, scramCluster.done = cmd, done
	scramCluster.mu.Unlock()
	return c, nil
}

// pgBinDir finds the directory holding initdb and postgres.
func pgBinDir() (string, error) {
	if d := os.Getenv("WARDER_TEST_PG_BINDIR"); d != "" {
		return d, nil
	}
	vers, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	slices.SortFunc(vers, func(a, b string) int { return pgMajor(a) - pgMajor(b) })
	if len(vers) > 0 {
		return filepath.Dir(vers[len(vers)-1]), nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("initdb not found: install postgresql (scripts/services.sh does) or set $WARDER_TEST_PG_BINDIR")
}

func pgMajor(initdb string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(initdb))))
	return n
}

func pgLogTail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
