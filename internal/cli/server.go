package cli

import (
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/warderhq/warder/internal/config"
	"github.com/warderhq/warder/internal/server"
)

// serverFlags registers one flag per configuration key (data_dir becomes
// --data-dir) plus --config, and returns a function that collects the flags
// the user actually set, keyed as config.Load expects.
func serverFlags(fs *pflag.FlagSet, configFile *string) func() map[string]string {
	fs.StringVar(configFile, "config", "", "YAML configuration file")
	for _, key := range config.Keys() {
		fs.String(config.FlagName(key), "", config.Help(key)+" (env "+config.EnvName(key)+")")
	}
	return func() map[string]string {
		set := map[string]string{}
		for _, key := range config.Keys() {
			f := fs.Lookup(config.FlagName(key))
			if f != nil && f.Changed {
				set[key] = f.Value.String()
			}
		}
		return set
	}
}

func (e *env) serverCommand() *cobra.Command {
	var configFile string
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a production server (starts sealed)",
		Args:  cobra.NoArgs,
	}
	flags := serverFlags(cmd.Flags(), &configFile)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cfg, err := config.Load(configFile, e.environ, flags())
		if err != nil {
			return usageError{err}
		}
		logger := newLogger(e.stderr, cfg.LogFormat, cfg.LogLevel)
		warnExposedSecrets(logger, configFile, flags())
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		srv, err := server.New(ctx, cfg, server.Options{Logger: logger, Version: Version})
		if err != nil {
			return err
		}
		if err := srv.Listen(); err != nil {
			srv.Close()
			return err
		}
		if srv.Barrier().Sealed() {
			logger.Info("server is sealed; unseal it with `warder operator unseal` (or `warder operator init` first)")
		}
		return srv.Run(ctx)
	}
	return cmd
}

func (e *env) devCommand() *cobra.Command {
	var configFile string
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a single-process dev server: SQLite, initialised and unsealed automatically",
		Long: `Run a dev server with an embedded SQLite store in the data directory
(default ./.warder-dev), initialised and unsealed on start. The admin token
is written to <data-dir>/admin.token and the unseal key to
<data-dir>/unseal.key, both mode 0600. Never use dev mode in production: the
key that unseals the data sits next to it.`,
		Args: cobra.NoArgs,
	}
	flags := serverFlags(cmd.Flags(), &configFile)
	// Help strings only: dev's gateways listen by default (below).
	cmd.Flags().Lookup("ssh-listen").Usage = `SSH gateway listen address, host:port; default "127.0.0.1:2222" in dev; --ssh-listen "": no SSH gateway (env WARDER_SSH_LISTEN)`
	cmd.Flags().Lookup("db-listen").Usage = `database (PostgreSQL) gateway listen address, host:port; default "127.0.0.1:7432" in dev; --db-listen "": no database gateway (env WARDER_DB_LISTEN)`
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		defaults := config.Default()
		defaults.DataDir = ".warder-dev"
		defaults.LogFormat = "text"
		defaults.SSHListen = "127.0.0.1:2222"
		defaults.DBListen = "127.0.0.1:7432"
		cfg, err := config.LoadWithDefaults(defaults, configFile, e.environ, flags())
		if err != nil {
			return usageError{err}
		}
		if cfg.UsesPostgres() {
			return usageError{fmt.Errorf("dev mode uses the embedded SQLite store; run `warder server --storage postgres://...` for PostgreSQL")}
		}
		logger := newLogger(e.stderr, cfg.LogFormat, cfg.LogLevel)
		warnExposedSecrets(logger, configFile, flags())
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		srv, err := server.New(ctx, cfg, server.Options{Logger: logger, Version: Version})
		if err != nil {
			return err
		}
		if err := srv.DevBootstrap(ctx); err != nil {
			srv.Close()
			return err
		}
		if err := srv.Listen(); err != nil {
			srv.Close()
			return err
		}
		dir, _ := filepath.Abs(cfg.DataDir)
		fmt.Fprintf(e.stdout, `Warder dev server listening on %s (data in %s).
Dev mode keeps the unseal key beside the data: do not use it in production.

Point the CLI at it:
    export WARDER_ADDR=%s
    export WARDER_CACERT=%s
    export WARDER_TOKEN="$(cat %s)"
    warder operator status

`, srv.URL(), dir, srv.URL(), filepath.Join(dir, "ca.pem"), filepath.Join(dir, server.DevAdminTokenFile))
		return srv.Run(ctx)
	}
	return cmd
}

// warnExposedSecrets warns when a secret setting is visible to other users
// of the machine: the storage URL's password or a notification webhook
// secret in the process arguments, or either in a config file they can
// read.
func warnExposedSecrets(logger *slog.Logger, configFile string, flags map[string]string) {
	if hasPassword(flags["storage"]) {
		logger.Warn("the --storage URL contains a password, which other users can read in the process list; use WARDER_STORAGE, the config file or ~/.pgpass instead")
	}
	for _, key := range []string{"notify_webhook_secret", "notify_webhooks"} {
		if flags[key] != "" {
			logger.Warn(fmt.Sprintf("--%s is a secret, which other users can read in the process list; use %s or the config file (mode 0600) instead",
				config.FlagName(key), config.EnvName(key)))
		}
	}
	if configFile == "" {
		return
	}
	fi, err := os.Stat(configFile)
	if err != nil || fi.Mode().Perm()&0o077 == 0 {
		return
	}
	data, err := os.ReadFile(configFile)
	if err != nil {
		return
	}
	if strings.Contains(string(data), "://") && strings.Contains(string(data), "@") {
		logger.Warn("the config file may hold a database password and is readable by other users; chmod 600 it", "file", configFile, "mode", fmt.Sprintf("%04o", fi.Mode().Perm()))
	}
	if strings.Contains(string(data), "notify_webhook") {
		logger.Warn("the config file holds notification webhook settings, which may be secrets, and is readable by other users; chmod 600 it", "file", configFile, "mode", fmt.Sprintf("%04o", fi.Mode().Perm()))
	}
}

func hasPassword(rawURL string) bool {
	u, err := url.Parse(rawURL)
	if err != nil || u.User == nil {
		return false
	}
	_, ok := u.User.Password()
	return ok
}

// newLogger returns the operational logger: JSON in production, text in dev.
func newLogger(w io.Writer, format, level string) *slog.Logger {
	var lv slog.Level
	lv.UnmarshalText([]byte(level)) // validated by config
	opts := &slog.HandlerOptions{Level: lv}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
