// Package config builds the configuration of `warder server`.
//
// Settings come from four layers, each overriding the one before: the
// defaults, a YAML file, WARDER_* environment variables and command-line
// flags. Every layer names settings by the same keys (Keys): "listen" in the
// file is WARDER_LISTEN in the environment and --listen on the command line.
//
// Load refuses what it does not understand — an unknown key, a value of the
// wrong type, a value out of range — with an error that names the key and
// where the value came from. Errors never repeat the value of storage, which
// may be a PostgreSQL URL holding a password.
package config

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Config is the server's configuration. A Config returned by Load or Default
// is valid; the server does not change it after start.
type Config struct {
	// DataDir holds warder.db (SQLite), ca.pem and the generated TLS files.
	// Default "./warder-data". Must not be empty.
	DataDir string `yaml:"data_dir"`
	// Listen is the API's address, host:port with a numeric port (0 picks a
	// free port; an empty host listens on every interface).
	// Default "127.0.0.1:8200".
	Listen string `yaml:"listen"`
	// Storage selects the database: "" or "sqlite" is warder.db in DataDir;
	// a postgres:// or postgresql:// URL is a PostgreSQL database.
	// Default "". The value may hold a password: never log it (see LogValue).
	Storage string `yaml:"storage"`
	// TLSCert and TLSKey are the API's certificate and key files. Both are
	// set or neither; when neither is, the server issues its own in DataDir.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// UnsealKeyFile, if set, is read at start to unseal automatically.
	// Default "" (start sealed).
	UnsealKeyFile string `yaml:"unseal_key_file"`
	// LogFormat is "json" (default) or "text".
	LogFormat string `yaml:"log_format"`
	// LogLevel is "debug", "info" (default), "warn" or "error".
	LogLevel string `yaml:"log_level"`
	// MaxRequestBytes bounds the size of an API request body.
	// Default 1 MiB; from 1 KiB to 64 MiB.
	MaxRequestBytes int64 `yaml:"max_request_bytes"`
	// CheckpointInterval is how often the server checkpoints.
	// Default 1m; at least 1s. Written as a Go duration, e.g. "30s".
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"`
	// ShutdownTimeout bounds a graceful shutdown. Default 15s; more than 0.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// TimeZone is the IANA zone in which policies see context.time (hour,
	// weekday, date). Default "UTC".
	TimeZone string `yaml:"time_zone"`
	// NotifyWebhooks lists the endpoints (secret: a Slack hook URL is a
	// credential) that receive access-request
	// notifications, comma-separated, each optionally prefixed with its
	// payload kind: "slack:https://hooks.example/…,json:https://…" (no
	// prefix: json). Each must be https, or http to a loopback address.
	NotifyWebhooks string `yaml:"notify_webhooks"`
	// NotifyWebhookSecret, if set, signs every notification body
	// (X-Warder-Signature: sha256=<HMAC>). Secret: never repeated.
	NotifyWebhookSecret string `yaml:"notify_webhook_secret"`
	// SSHListen is the SSH gateway's address, host:port (0 picks a free
	// port). Default "": no SSH gateway. The gateway starts once the
	// server is unsealed: its host key is derived from the root key.
	SSHListen string `yaml:"ssh_listen"`
	// SSHIdleTimeout closes an SSH gateway connection on which no data
	// moved for that long. Default 30m; 0 disables it.
	SSHIdleTimeout time.Duration `yaml:"ssh_idle_timeout"`
	// SessionRecheckInterval is how often the gateways re-check that a
	// live session is still allowed (a grant revoked, a policy removed).
	// Default 10s; from 1s to 1h.
	SessionRecheckInterval time.Duration `yaml:"session_recheck_interval"`
	// RecordingRetention is how long session recordings are kept after
	// they end; older ones are deleted (their audit events stay). Default
	// 2160h (90 days); 0 keeps them forever.
	RecordingRetention time.Duration `yaml:"recording_retention"`
	// DBListen is the database (PostgreSQL) gateway's address, host:port
	// (0 picks a free port). Default "": no database gateway (`warder
	// dev`: "127.0.0.1:7432"). The gateway starts once the server is
	// unsealed: its client CA is derived from the root key. It serves the
	// API's TLS certificate, which then also names this host.
	DBListen string `yaml:"db_listen"`
	// DBRedactParams records "<redacted>" instead of each bound parameter
	// of the database gateway's statements (the SQL text is still
	// recorded). Default false.
	DBRedactParams bool `yaml:"db_redact_params"`
}

// Limits on values.
const (
	MinRequestBytes       = 1 << 10
	MaxRequestBytesLimit  = 64 << 20
	MinCheckpointInterval = time.Second
	MinRecheckInterval    = time.Second
	MaxRecheckInterval    = time.Hour
	// MinRecordingRetention is the shortest retention other than 0
	// (forever): shorter would delete recordings an investigation still
	// needs.
	MinRecordingRetention = time.Hour
	maxFileBytes          = 1 << 20 // a config file larger than this is refused
	envPrefix             = "WARDER_"
	sqliteFile            = "warder.db"
)

// Default returns the built-in configuration.
func Default() Config {
	return Config{
		DataDir:            "./warder-data",
		Listen:             "127.0.0.1:8200",
		LogFormat:          "json",
		LogLevel:           "info",
		MaxRequestBytes:    1 << 20,
		CheckpointInterval: time.Minute,
		ShutdownTimeout:    15 * time.Second,
		TimeZone:           "UTC",

		SSHIdleTimeout:         30 * time.Minute,
		SessionRecheckInterval: 10 * time.Second,
		RecordingRetention:     90 * 24 * time.Hour,
	}
}

// field describes one key: where its value lives and what makes it valid.
type field struct {
	key  string
	help string
	// secret values are never repeated in errors.
	secret bool
	// ptr returns a *string, *int64 or *time.Duration into c.
	ptr func(c *Config) any
	// check returns "" when the field's value is valid, else the problem.
	check func(c *Config) string
}

// fields lists the keys in the order Keys reports them.
var fields = []field{
	{key: "data_dir", help: "directory for the SQLite database and generated TLS files",
		ptr: func(c *Config) any { return &c.DataDir }, check: checkDataDir},
	{key: "listen", help: "API listen address, host:port",
		ptr: func(c *Config) any { return &c.Listen }, check: checkListen},
	{key: "storage", help: `database: "sqlite" (file in data_dir) or a postgres:// URL`, secret: true,
		ptr: func(c *Config) any { return &c.Storage }, check: checkStorage},
	{key: "tls_cert", help: "TLS certificate file (with tls_key); default: issued by the server",
		ptr: func(c *Config) any { return &c.TLSCert }},
	{key: "tls_key", help: "TLS private key file (with tls_cert)",
		ptr: func(c *Config) any { return &c.TLSKey }},
	{key: "unseal_key_file", help: "file holding the unseal key, to unseal at start",
		ptr: func(c *Config) any { return &c.UnsealKeyFile }},
	{key: "log_format", help: `log format: "json" or "text"`,
		ptr: func(c *Config) any { return &c.LogFormat }, check: checkOneOf(func(c *Config) string { return c.LogFormat }, "json", "text")},
	{key: "log_level", help: `log level: "debug", "info", "warn" or "error"`,
		ptr: func(c *Config) any { return &c.LogLevel }, check: checkOneOf(func(c *Config) string { return c.LogLevel }, "debug", "info", "warn", "error")},
	{key: "max_request_bytes", help: "largest API request body, in bytes",
		ptr: func(c *Config) any { return &c.MaxRequestBytes }, check: checkRequestBytes},
	{key: "checkpoint_interval", help: `checkpoint interval, a duration such as "1m"`,
		ptr: func(c *Config) any { return &c.CheckpointInterval }, check: checkCheckpoint},
	{key: "shutdown_timeout", help: `graceful shutdown timeout, a duration such as "15s"`,
		ptr: func(c *Config) any { return &c.ShutdownTimeout }, check: checkShutdown},
	{key: "time_zone", help: `IANA time zone for policy conditions on time, e.g. "Europe/Berlin"`,
		ptr: func(c *Config) any { return &c.TimeZone }, check: checkTimeZone},
	{key: "notify_webhooks", help: `access notifications: comma-separated [json:|slack:]https://… URLs`,
		secret: true, // a Slack hook URL is a credential
		ptr:    func(c *Config) any { return &c.NotifyWebhooks }},
	{key: "notify_webhook_secret", help: "HMAC key signing notification bodies", secret: true,
		ptr: func(c *Config) any { return &c.NotifyWebhookSecret }},
	{key: "ssh_listen", help: `SSH gateway listen address, host:port; "" (default): no SSH gateway`,
		ptr: func(c *Config) any { return &c.SSHListen }, check: checkSSHListen},
	{key: "ssh_idle_timeout", help: `close an SSH gateway connection idle this long, e.g. "30m"; 0: never`,
		ptr: func(c *Config) any { return &c.SSHIdleTimeout }, check: checkIdleTimeout},
	{key: "session_recheck_interval", help: `how often live gateway sessions are re-authorized, e.g. "10s"`,
		ptr: func(c *Config) any { return &c.SessionRecheckInterval }, check: checkRecheck},
	{key: "recording_retention", help: `how long session recordings are kept, e.g. "2160h" (90 days); 0: forever`,
		ptr: func(c *Config) any { return &c.RecordingRetention }, check: checkRetention},
	{key: "db_listen", help: `database (PostgreSQL) gateway listen address, host:port; "" (default): no database gateway`,
		ptr: func(c *Config) any { return &c.DBListen }, check: checkDBListen},
	{key: "db_redact_params", help: `record "<redacted>" instead of the bound parameters of database statements: true or false (default)`,
		ptr: func(c *Config) any { return &c.DBRedactParams }},
}

// Keys returns the configuration keys, in a stable order, for registering
// flags and printing help.
func Keys() []string {
	keys := make([]string, len(fields))
	for i, f := range fields {
		keys[i] = f.key
	}
	return keys
}

// Help returns a one-line description of key, or "" for an unknown key.
func Help(key string) string {
	if f := lookup(key); f != nil {
		return f.help
	}
	return ""
}

// EnvName returns the environment variable read for key, e.g. WARDER_LISTEN.
func EnvName(key string) string { return envPrefix + strings.ToUpper(key) }

// FlagName returns the command-line flag conventionally used for key,
// without dashes: "tls_cert" is "tls-cert".
func FlagName(key string) string { return strings.ReplaceAll(key, "_", "-") }

func lookup(key string) *field {
	for i := range fields {
		if fields[i].key == key {
			return &fields[i]
		}
	}
	return nil
}

// Load builds the configuration from the defaults, then the YAML file at
// path file ("" for none), then env (as os.Environ returns it), then flags.
//
// Of env, only WARDER_<KEY> variables for the keys of Keys are read (other
// WARDER_* variables belong to the CLI client); an empty variable counts as
// unset; when a variable appears twice the first wins, as with os.Getenv.
// flags maps the keys the user set on the command line ("listen", or the
// flag spelling "tls-cert") to their values; an empty value is applied.
//
// The result is valid (see Validate); otherwise Load returns an error that
// names the offending key and, for a single value, its source.
func Load(file string, env []string, flags map[string]string) (Config, error) {
	return LoadWithDefaults(Default(), file, env, flags)
}

// LoadWithDefaults is Load with defaults in place of Default(), for modes
// that change a default (the dev server's data directory) without
// overriding what the file or environment says.
func LoadWithDefaults(defaults Config, file string, env []string, flags map[string]string) (Config, error) {
	c := defaults
	if file != "" {
		if err := loadFile(&c, file); err != nil {
			return Config{}, err
		}
	}
	seen := map[string]bool{}
	for _, kv := range env {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, envPrefix) || seen[name] {
			continue
		}
		seen[name] = true
		f := lookup(strings.ToLower(strings.TrimPrefix(name, envPrefix)))
		if f == nil || EnvName(f.key) != name || val == "" {
			continue
		}
		if err := setString(&c, f, val); err != nil {
			return Config{}, valueError(f, "from "+name, err)
		}
	}
	for _, key := range sortedKeys(flags) {
		f := lookup(strings.ReplaceAll(key, "-", "_"))
		if f == nil {
			return Config{}, fmt.Errorf("config: unknown flag key %q", key)
		}
		if err := setString(&c, f, flags[key]); err != nil {
			return Config{}, valueError(f, "from --"+FlagName(f.key), err)
		}
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// sortedKeys returns m's keys in the order of fields, so that errors are
// reported deterministically; unknown keys come last.
func sortedKeys(m map[string]string) []string {
	var keys, unknown []string
	for _, f := range fields {
		for _, k := range []string{f.key, FlagName(f.key)} {
			if _, ok := m[k]; ok {
				keys = append(keys, k)
			}
		}
	}
	for k := range m {
		if lookup(strings.ReplaceAll(k, "-", "_")) == nil {
			unknown = append(unknown, k)
		}
	}
	return append(keys, unknown...)
}

// setString parses s into f's field of c and checks the field. Its error is
// the problem only; the caller adds key and source.
func setString(c *Config, f *field, s string) error {
	switch p := f.ptr(c).(type) {
	case *string:
		*p = s
	case *int64:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			return fmt.Errorf("%s is not an integer", quoteValue(f, s))
		}
		*p = n
	case *bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%s is not true or false", quoteValue(f, s))
		}
		*p = b
	case *time.Duration:
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%s is not a duration such as \"30s\"", quoteValue(f, s))
		}
		*p = d
	default:
		panic("config: field " + f.key + " has an unsupported type")
	}
	return checkField(c, f)
}

// checkField returns f's problem in c, or nil.
func checkField(c *Config, f *field) error {
	if f.check == nil {
		return nil
	}
	if msg := f.check(c); msg != "" {
		return fmt.Errorf("%s", msg)
	}
	return nil
}

// valueError names key and source: `config: listen (from WARDER_LISTEN): ...`.
func valueError(f *field, source string, err error) error {
	return fmt.Errorf("config: %s (%s): %w", f.key, source, err)
}

// quoteValue quotes s for an error message, unless f's values are secret.
func quoteValue(f *field, s string) string {
	if f.secret {
		return "the value"
	}
	const max = 80
	if len(s) > max {
		s = s[:max] + "..."
	}
	return strconv.Quote(s)
}

// Validate reports the first problem in c, naming its key, or nil.
func (c Config) Validate() error {
	for i := range fields {
		if err := checkField(&c, &fields[i]); err != nil {
			return fmt.Errorf("config: %s: %w", fields[i].key, err)
		}
	}
	switch {
	case c.TLSCert != "" && c.TLSKey == "":
		return fmt.Errorf("config: tls_cert is set but tls_key is not")
	case c.TLSKey != "" && c.TLSCert == "":
		return fmt.Errorf("config: tls_key is set but tls_cert is not")
	}
	return nil
}

// UsesPostgres reports whether Storage names a PostgreSQL database.
func (c Config) UsesPostgres() bool {
	s := strings.ToLower(c.Storage)
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// SQLitePath returns the SQLite database file, DataDir/warder.db, or "" when
// Storage is PostgreSQL.
func (c Config) SQLitePath() string {
	if c.UsesPostgres() {
		return ""
	}
	return filepath.Join(c.DataDir, sqliteFile)
}

// LogValue lets c be logged with slog without its secrets: Storage is
// reduced to scheme, host and database.
func (c Config) LogValue() slog.Value {
	storage := "sqlite"
	if c.UsesPostgres() {
		storage = "postgres (unparseable URL)"
		if u, err := url.Parse(c.Storage); err == nil {
			storage = u.Scheme + "://" + u.Host + u.Path
		}
	}
	return slog.GroupValue(
		slog.String("data_dir", c.DataDir),
		slog.String("listen", c.Listen),
		slog.String("storage", storage),
		slog.String("tls_cert", c.TLSCert),
		slog.String("tls_key", c.TLSKey),
		slog.String("unseal_key_file", c.UnsealKeyFile),
		slog.String("log_format", c.LogFormat),
		slog.String("log_level", c.LogLevel),
		slog.Int64("max_request_bytes", c.MaxRequestBytes),
		slog.Duration("checkpoint_interval", c.CheckpointInterval),
		slog.Duration("shutdown_timeout", c.ShutdownTimeout),
		slog.String("time_zone", c.TimeZone),
		slog.String("ssh_listen", c.SSHListen),
		slog.Duration("ssh_idle_timeout", c.SSHIdleTimeout),
		slog.Duration("session_recheck_interval", c.SessionRecheckInterval),
		slog.Duration("recording_retention", c.RecordingRetention),
		slog.String("db_listen", c.DBListen),
		slog.Bool("db_redact_params", c.DBRedactParams),
	)
}

func checkDataDir(c *Config) string {
	if c.DataDir == "" {
		return "must not be empty"
	}
	return ""
}

func checkListen(c *Config) string {
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil || strings.ContainsAny(host, " \t\r\n/") {
		return fmt.Sprintf("%q is not host:port", c.Listen)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || port != strconv.FormatUint(n, 10) {
		return fmt.Sprintf("%q is not host:port with a port number from 0 to 65535", c.Listen)
	}
	return ""
}

func checkSSHListen(c *Config) string {
	if c.SSHListen == "" {
		return ""
	}
	return checkListen(&Config{Listen: c.SSHListen})
}

func checkDBListen(c *Config) string {
	if c.DBListen == "" {
		return ""
	}
	return checkListen(&Config{Listen: c.DBListen})
}

// checkStorage never repeats the value: it may hold a password.
func checkStorage(c *Config) string {
	switch {
	case c.Storage == "" || c.Storage == "sqlite":
		return ""
	case c.UsesPostgres():
		u, err := url.Parse(c.Storage)
		if err != nil {
			return "is not a valid PostgreSQL URL"
		}
		if u.Opaque != "" {
			return "is not a valid PostgreSQL URL (want postgres://host/database)"
		}
		return ""
	}
	return `must be "sqlite" or a postgres:// URL`
}

func checkOneOf(get func(*Config) string, allowed ...string) func(*Config) string {
	return func(c *Config) string {
		v := get(c)
		for _, a := range allowed {
			if v == a {
				return ""
			}
		}
		return fmt.Sprintf("%q is not one of %s", v, strings.Join(allowed, ", "))
	}
}

func checkRequestBytes(c *Config) string {
	if c.MaxRequestBytes < MinRequestBytes || c.MaxRequestBytes > MaxRequestBytesLimit {
		return fmt.Sprintf("%d is out of range (%d to %d)", c.MaxRequestBytes, MinRequestBytes, MaxRequestBytesLimit)
	}
	return ""
}

func checkCheckpoint(c *Config) string {
	if c.CheckpointInterval < MinCheckpointInterval {
		return fmt.Sprintf("%s is shorter than %s", c.CheckpointInterval, MinCheckpointInterval)
	}
	return ""
}

func checkShutdown(c *Config) string {
	if c.ShutdownTimeout <= 0 {
		return fmt.Sprintf("%s is not a positive duration", c.ShutdownTimeout)
	}
	return ""
}

func checkIdleTimeout(c *Config) string {
	if c.SSHIdleTimeout < 0 {
		return fmt.Sprintf("%s is negative (0 disables the timeout)", c.SSHIdleTimeout)
	}
	return ""
}

func checkRecheck(c *Config) string {
	if c.SessionRecheckInterval < MinRecheckInterval || c.SessionRecheckInterval > MaxRecheckInterval {
		return fmt.Sprintf("%s is out of range (%s to %s)", c.SessionRecheckInterval, MinRecheckInterval, MaxRecheckInterval)
	}
	return ""
}

func checkRetention(c *Config) string {
	if c.RecordingRetention != 0 && c.RecordingRetention < MinRecordingRetention {
		return fmt.Sprintf("%s is shorter than %s (0 keeps recordings forever)", c.RecordingRetention, MinRecordingRetention)
	}
	return ""
}

func checkTimeZone(c *Config) string {
	if _, err := c.Location(); err != nil {
		return fmt.Sprintf("%q is not a known IANA time zone", c.TimeZone)
	}
	return ""
}

// Location is the time zone named by TimeZone.
func (c Config) Location() (*time.Location, error) {
	if c.TimeZone == "" {
		return time.UTC, nil
	}
	return time.LoadLocation(c.TimeZone)
}
