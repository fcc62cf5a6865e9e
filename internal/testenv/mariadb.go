package testenv

import (
	"context"
	"crypto/sha1"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// MariaDBServer is the MariaDB (or MySQL) the tests use, reached as a user
// allowed to create users: $WARDER_TEST_MYSQL (a go-sql-driver/mysql DSN),
// by default warder_test:warder_test@tcp(127.0.0.1:3306)/ (scripts/services.sh
// creates that user). MariaDB checks every account's password, so test
// accounts made with CreateUser are password-checked for real.
type MariaDBServer struct {
	Host string
	Port int

	admin *sql.DB
}

// MariaDBDSN is the DSN of the user that creates test accounts.
func MariaDBDSN() string {
	if d := os.Getenv("WARDER_TEST_MYSQL"); d != "" {
		return d
	}
	return "warder_test:warder_test@tcp(127.0.0.1:3306)/"
}

// MariaDB connects to the test server, failing t if it does not answer.
func MariaDB(t testing.TB) *MariaDBServer {
	t.Helper()
	cfg, err := mysql.ParseDSN(MariaDBDSN())
	if err != nil {
		t.Fatalf("testenv: $WARDER_TEST_MYSQL: %v", err)
	}
	host, port, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		t.Fatalf("testenv: $WARDER_TEST_MYSQL address: %v", err)
	}
	p, _ := strconv.Atoi(port)
	cfg.Logger = &mysql.NopLogger{}
	drv, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	s := &MariaDBServer{Host: host, Port: p, admin: sql.OpenDB(drv)}
	t.Cleanup(func() { s.admin.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.admin.PingContext(ctx); err != nil {
		t.Fatalf("testenv: MariaDB not reachable at $WARDER_TEST_MYSQL or 127.0.0.1:3306 (run `make test`, which starts it and creates warder_test): %v", err)
	}
	return s
}

// Exec runs query as the admin user.
func (s *MariaDBServer) Exec(t testing.TB, query string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.admin.ExecContext(ctx, query); err != nil {
		t.Fatalf("testenv: MariaDB: %v", err)
	}
}

// CreateUser creates the account 'wt_<random>'@'host' with password and
// the given global privileges (e.g. "CREATE USER"), and drops it when t
// ends. It returns the user name. The password is sent as its
// mysql_native_password hash, so fixtures do not depend on the quoting of
// the code under test.
func (s *MariaDBServer) CreateUser(t testing.TB, password, host string, privileges ...string) string {
	t.Helper()
	name := "wt_" + randomHex(6)
	s.CreateNamedUser(t, name, password, host, privileges...)
	return name
}

// CreateNamedUser is CreateUser with a chosen name (plain identifier
// characters only), for several accounts of one user on different hosts.
func (s *MariaDBServer) CreateNamedUser(t testing.TB, name, password, host string, privileges ...string) {
	t.Helper()
	account := fmt.Sprintf("'%s'@'%s'", name, strings.ReplaceAll(host, "'", "''"))
	s.Exec(t, fmt.Sprintf("CREATE USER %s IDENTIFIED BY PASSWORD '%s'", account, NativePasswordHash(password)))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := s.admin.ExecContext(ctx, "DROP USER IF EXISTS "+account); err != nil {
			t.Logf("testenv: drop %s: %v", account, err)
		}
	})
	for _, p := range privileges {
		s.Exec(t, fmt.Sprintf("GRANT %s ON *.* TO %s", p, account))
	}
}

// NativePasswordHash is the mysql_native_password hash of password:
// "*" and the upper-case hex of SHA1(SHA1(password)).
func NativePasswordHash(password string) string {
	h1 := sha1.Sum([]byte(password))
	h2 := sha1.Sum(h1[:])
	return "*" + strings.ToUpper(hex.EncodeToString(h2[:]))
}

// QueryRow runs a one-row query as the admin user and scans it into dest.
func (s *MariaDBServer) QueryRow(t testing.TB, query string, dest ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.admin.QueryRowContext(ctx, query).Scan(dest...); err != nil {
		t.Fatalf("testenv: MariaDB: %v", err)
	}
}
