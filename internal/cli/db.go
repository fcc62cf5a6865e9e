package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/warderhq/warder/internal/client"
)

func (e *env) dbCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "db",
		Short: "Reach PostgreSQL targets through the database gateway",
		Long: `Reach PostgreSQL targets through Warder's database gateway with psql or
any PostgreSQL client. The gateway logs in to the database with the
vaulted credential of the account (or the database user of your
just-in-time grant), which you never see, and records every statement.

You authenticate to the gateway with the client certificate "warder login"
obtains, or with a short-lived database token from "warder db login". The
PostgreSQL user name selects the account: ACCOUNT@TARGET, or TARGET alone
for your grant's database user or the target's default account.`,
	}
	cmd.AddCommand(e.dbLoginCommand(), e.dbConnectCommand(), e.dbProxyCommand())
	return cmd
}

// dbAddr is the database gateway's host and port, from its listen
// address: an unspecified host is reached where the API is.
func (e *env) dbAddr(listen string) (host, port string, err error) {
	if listen == "" {
		return "", "", errors.New("the server runs no database gateway (set db_listen)")
	}
	host, port, err = net.SplitHostPort(listen)
	if err != nil {
		return "", "", fmt.Errorf("database gateway address %q: %w", listen, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = e.serverHost()
	}
	return host, port, nil
}

// caFile is the CA file the CLI trusts the server with, absolute, or ""
// for the system roots.
func (e *env) caFile() string {
	ca := e.caCert
	if ca == "" {
		ca = e.getenv("WARDER_CACERT")
	}
	if ca == "" {
		return ""
	}
	if abs, err := filepath.Abs(ca); err == nil {
		return abs
	}
	return ca
}

// sslRootCert is libpq's sslrootcert for the gateway: the CLI's CA file,
// else the system roots ("system", libpq 16 and later).
func (e *env) sslRootCert() string {
	if ca := e.caFile(); ca != "" {
		return ca
	}
	return "system"
}

// dbUser is the gateway user name for account of target.
func dbUser(target, account string) string {
	if account == "" {
		return target
	}
	return account + "@" + target
}

// DBLogin is what `warder db login --format json` prints.
type DBLogin struct {
	Token       string    `json:"token"`
	Host        string    `json:"host"`
	Port        int       `json:"port"`
	User        string    `json:"user"`
	Database    string    `json:"database"`
	SSLRootCert string    `json:"sslrootcert"`
	ExpiresAt   time.Time `json:"expires_at"`
}

func (e *env) dbLoginCommand() *cobra.Command {
	var account, ttl string
	cmd := &cobra.Command{
		Use:   "login TARGET",
		Short: "Get a database token for a target and store it for psql",
		Long: `Get a short-lived database token (default one hour, never beyond your
login) for TARGET, or for account ACCOUNT of it with --as. The token is the
password of that one PostgreSQL user name at the gateway; the API refuses
it, so a leaked token cannot do more.

The token is written to the Warder-managed pgpass file in the
configuration directory (mode 0600), so that psql finds it with
passfile=... or PGPASSFILE; the command prints how to connect. With
--format json it prints the token itself and the connection settings.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			target := args[0]
			c, err := e.client()
			if err != nil {
				return err
			}
			tok, err := c.DBToken(cmd.Context(), client.DBTokenRequest{Target: target, Account: account, TTL: ttl})
			if err != nil {
				return err
			}
			host, port, err := e.dbAddr(tok.Listen)
			if err != nil {
				return err
			}
			f, err := e.dbFiles()
			if err != nil {
				return err
			}
			if err := f.savePgpass(pgpassLine(host, port, "*", tok.User, tok.Token), tok.ExpiresAt); err != nil {
				return fmt.Errorf("pgpass file: %w", err)
			}
			p, _ := strconv.Atoi(port)
			out := DBLogin{Token: tok.Token, Host: host, Port: p, User: tok.User, Database: tok.Database,
				SSLRootCert: e.sslRootCert(), ExpiresAt: tok.ExpiresAt}
			return e.print(out, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "Database token for %s, valid until %s, stored in %s.\nConnect with:\n\n    psql %q\n\nor set PGPASSFILE=%s for any libpq client (host %s, port %s, user %s).\n",
					tok.User, tok.ExpiresAt.Local().Format(time.RFC3339), f.pgpass,
					connString(host, port, tok.User, tok.Database, out.SSLRootCert, "passfile="+f.pgpass),
					f.pgpass, host, port, tok.User)
			})
		},
	}
	cmd.Flags().StringVar(&account, "as", "", "the account (default: your grant's database user, else the target's default account)")
	cmd.Flags().StringVar(&ttl, "ttl", "", "token lifetime, e.g. 30m (default 1h; at most 8h and your login's)")
	return cmd
}

// connString is a libpq connection string for the gateway; extra are
// more keyword=value pairs, unquoted values without spaces.
func connString(host, port, user, database, rootCert string, extra ...string) string {
	kv := []string{"host=" + host, "port=" + port, "user=" + user}
	if database != "" {
		kv = append(kv, "dbname="+database)
	}
	kv = append(kv, "sslmode=verify-full", "sslrootcert="+rootCert)
	return strings.Join(append(kv, extra...), " ")
}

func (e *env) dbConnectCommand() *cobra.Command {
	var (
		account  string
		useToken bool
	)
	cmd := &cobra.Command{
		Use:   "connect TARGET [-- PSQL-ARGS...]",
		Short: "Start psql on a target through the database gateway",
		Long: `Start psql (which must be on the PATH) connected through the database
gateway to TARGET, or to account ACCOUNT of it with --as. Arguments after
-- go to psql, e.g. -c 'select 1' or -d DATABASE.

psql authenticates with the client certificate of "warder login" (renewed
here if it is about to expire), or, without one or with --use-token, with
a fresh database token in a temporary pgpass file removed when psql exits. No secret
appears in psql's arguments or environment. The exit status is psql's.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dash := cmd.ArgsLenAtDash(); dash > 1 || dash == -1 && len(args) > 1 {
				return usageError{errors.New("give psql's arguments after --")}
			}
			target, psqlArgs := args[0], args[1:]
			path, err := exec.LookPath("psql")
			if err != nil {
				return errors.New("psql is not installed (no psql on the PATH)")
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			info, err := c.DBInfo(cmd.Context())
			if err != nil {
				return err
			}
			host, port, err := e.dbAddr(info.Listen)
			if err != nil {
				return err
			}
			user := dbUser(target, account)
			env := append(psqlEnviron(e.environ), "PGHOST="+host, "PGPORT="+port, "PGUSER="+user,
				"PGSSLMODE=verify-full", "PGSSLROOTCERT="+e.sslRootCert())
			withCert := false
			if !useToken {
				if f, _, ok := e.dbCertificate(cmd.Context(), c); ok {
					env = append(env, "PGSSLCERT="+f.cert, "PGSSLKEY="+f.key)
					withCert = true
				}
			}
			if !withCert {
				tok, err := c.DBToken(cmd.Context(), client.DBTokenRequest{Target: target, Account: account})
				if err != nil {
					return err
				}
				f, err := e.dbFiles()
				if err != nil {
					return err
				}
				if err := os.MkdirAll(f.dir, 0o700); err != nil {
					return err
				}
				tmp, err := os.MkdirTemp(f.dir, "psql-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(tmp)
				passfile := filepath.Join(tmp, "pgpass")
				if err := writeFileAtomic(passfile, []byte(pgpassLine(host, port, "*", tok.User, tok.Token)+"\n"), 0o600); err != nil {
					return err
				}
				// No certificate: make sure libpq presents none of its own.
				env = append(env, "PGPASSFILE="+passfile, "PGSSLCERT="+filepath.Join(tmp, "none.crt"), "PGSSLKEY="+filepath.Join(tmp, "none.key"))
			}
			return e.runPsql(path, psqlArgs, env)
		},
	}
	cmd.Flags().StringVar(&account, "as", "", "the account (default: your grant's database user, else the target's default account)")
	cmd.Flags().BoolVar(&useToken, "use-token", false, "authenticate with a database token even when a client certificate is available")
	return cmd
}

// psqlKeep are the PG* variables a user may set for psql that cannot
// redirect the connection or its authentication; every other PG*
// variable (PGPASSWORD, PGSERVICE, PGSSLMODE, …) is removed before
// Warder sets its own.
var psqlKeep = map[string]bool{"PGDATABASE": true, "PGAPPNAME": true, "PGCLIENTENCODING": true, "PGDATESTYLE": true,
	"PGTZ": true, "PGCONNECT_TIMEOUT": true}

// psqlEnviron is environ without the PG* variables psql must not see, nor
// Warder's credentials (psql runs shell commands with \!).
func psqlEnviron(environ []string) []string {
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "PG") && !psqlKeep[name] || isCredentialVar(name) {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// runPsql runs psql with stdio passed through and ends with its exit
// status. Ctrl-C reaches psql from the terminal (it cancels the running
// query), so SIGINT is only kept from ending warder; SIGTERM and SIGHUP
// are forwarded.
func (e *env) runPsql(path string, args, environ []string) error {
	c := exec.Command(path, args...)
	c.Env = environ
	return e.runChild("psql", c, false)
}

func (e *env) dbProxyCommand() *cobra.Command {
	var (
		account string
		port    int
	)
	cmd := &cobra.Command{
		Use:   "proxy TARGET",
		Short: "Open a local, authenticated tunnel to a target for any PostgreSQL client",
		Long: `Listen on 127.0.0.1:PORT (only) and carry every connection made to it
through the database gateway to TARGET, or to account ACCOUNT of it with
--as, authenticated with the client certificate of "warder login". Point
any client at it with no password and no TLS:

    psql "host=127.0.0.1 port=15432"
    pgbench -h 127.0.0.1 -p 15432 ...

The user name the client sends is ignored (the tunnel's account is used);
its database name is kept. The tunnel runs until interrupted.

Anyone who can connect to that port on this machine acts as you: run it
only on a machine whose other users you trust, and stop it when done.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if port < 0 || port > 65535 {
				return usageError{errors.New("--port must be between 0 and 65535")}
			}
			target := args[0]
			c, err := e.client()
			if err != nil {
				return err
			}
			info, err := c.DBInfo(cmd.Context())
			if err != nil {
				return err
			}
			host, gwPort, err := e.dbAddr(info.Listen)
			if err != nil {
				return err
			}
			if _, _, ok := e.dbCertificate(cmd.Context(), c); !ok {
				return errors.New("no client certificate for the database gateway: log in with `warder login` (a database or machine token cannot get one)")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			p, err := newDBProxy(dbProxyConfig{
				Gateway: net.JoinHostPort(host, gwPort), ServerName: host, CAFile: e.caFile(),
				User: dbUser(target, account),
				Cert: func(ctx context.Context) (*tls.Certificate, error) {
					_, cert, ok := e.dbCertificate(ctx, c)
					if !ok {
						return nil, errors.New("no valid client certificate: log in again with `warder login`")
					}
					return &cert, nil
				},
			})
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			if err != nil {
				return fmt.Errorf("proxy: %w", err)
			}
			fmt.Fprintf(e.stderr, "warder db proxy: listening on %s, carrying connections to %s through the gateway at %s\n"+
				"Connect with: psql \"host=127.0.0.1 port=%d\"\n"+
				"Anyone who can connect to this port acts as you. Ctrl-C to stop.\n",
				ln.Addr(), dbUser(target, account), net.JoinHostPort(host, gwPort), ln.Addr().(*net.TCPAddr).Port)
			return p.serve(ctx, ln)
		},
	}
	cmd.Flags().StringVar(&account, "as", "", "the account (default: your grant's database user, else the target's default account)")
	cmd.Flags().IntVar(&port, "port", 15432, "local port to listen on, on 127.0.0.1 (0 picks a free one)")
	return cmd
}
