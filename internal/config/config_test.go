package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// writeFile writes body to a file named warder.yaml in a new directory and
// returns its path.
func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "warder.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
	c, err := Load("", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Errorf("Load with nothing = %+v, want defaults %+v", c, Default())
	}
}

func TestKeysMatchStruct(t *testing.T) {
	typ := reflect.TypeOf(Config{})
	var tags []string
	for i := range typ.NumField() {
		tags = append(tags, typ.Field(i).Tag.Get("yaml"))
	}
	if !reflect.DeepEqual(Keys(), tags) {
		t.Errorf("Keys() = %v, want the yaml tags %v", Keys(), tags)
	}
	for _, k := range Keys() {
		if Help(k) == "" {
			t.Errorf("Help(%q) is empty", k)
		}
	}
}

func TestPrecedence(t *testing.T) {
	const file = "listen: 127.0.0.1:1001\nlog_level: warn\ndata_dir: /from/file\nshutdown_timeout: 20s\n"
	tests := []struct {
		name  string
		file  string
		env   []string
		flags map[string]string
		want  func(c *Config)
	}{
		{name: "defaults", want: func(c *Config) {}},
		{name: "file over defaults", file: file, want: func(c *Config) {
			c.Listen, c.LogLevel, c.DataDir, c.ShutdownTimeout = "127.0.0.1:1001", "warn", "/from/file", 20*time.Second
		}},
		{name: "env over file", file: file,
			env: []string{"WARDER_LISTEN=127.0.0.1:1002", "WARDER_CHECKPOINT_INTERVAL=30s", "WARDER_MAX_REQUEST_BYTES=2048"},
			want: func(c *Config) {
				c.Listen, c.LogLevel, c.DataDir, c.ShutdownTimeout = "127.0.0.1:1002", "warn", "/from/file", 20*time.Second
				c.CheckpointInterval, c.MaxRequestBytes = 30*time.Second, 2048
			}},
		{name: "flags over env", file: file,
			env:   []string{"WARDER_LISTEN=127.0.0.1:1002", "WARDER_LOG_LEVEL=error"},
			flags: map[string]string{"listen": "127.0.0.1:1003", "data-dir": "/from/flag"},
			want: func(c *Config) {
				c.Listen, c.LogLevel, c.DataDir, c.ShutdownTimeout = "127.0.0.1:1003", "error", "/from/flag", 20*time.Second
			}},
		{name: "client and unknown WARDER variables ignored",
			env:  []string{"WARDER_ADDR=https://x", "WARDER_TOKEN=secret", "WARDER_CACERT=/ca.pem", "WARDER_LISEN=x", "warder_listen=x", "HOME=/root", "NOEQUALS"},
			want: func(c *Config) {}},
		{name: "empty env is unset", file: file, env: []string{"WARDER_LISTEN="},
			want: func(c *Config) {
				c.Listen, c.LogLevel, c.DataDir, c.ShutdownTimeout = "127.0.0.1:1001", "warn", "/from/file", 20*time.Second
			}},
		{name: "first of repeated env wins", env: []string{"WARDER_LOG_LEVEL=debug", "WARDER_LOG_LEVEL=nonsense"},
			want: func(c *Config) { c.LogLevel = "debug" }},
		{name: "empty flag is applied", file: "unseal_key_file: /k\n", flags: map[string]string{"unseal_key_file": ""},
			want: func(c *Config) {}},
		{name: "tls pair from two layers", file: "tls_cert: /c.pem\n", env: []string{"WARDER_TLS_KEY=/k.pem"},
			want: func(c *Config) { c.TLSCert, c.TLSKey = "/c.pem", "/k.pem" }},
		{name: "postgres storage", env: []string{"WARDER_STORAGE=postgres://u:p@db:5432/warder?sslmode=require"},
			want: func(c *Config) { c.Storage = "postgres://u:p@db:5432/warder?sslmode=require" }},
		{name: "null value keeps default", file: "listen:\nlog_level: ~\n", want: func(c *Config) {}},
		{name: "comments only", file: "# nothing here\n", want: func(c *Config) {}},
		{name: "empty file", file: " ", want: func(c *Config) {}},
		{name: "gateway sessions", file: "ssh_idle_timeout: 0s\nrecording_retention: 720h\n",
			env: []string{"WARDER_SESSION_RECHECK_INTERVAL=2s"}, flags: map[string]string{"recording-retention": "0"},
			want: func(c *Config) {
				c.SSHIdleTimeout, c.SessionRecheckInterval, c.RecordingRetention = 0, 2*time.Second, 0
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := ""
			if tt.file != "" {
				path = writeFile(t, tt.file)
			}
			got, err := Load(path, tt.env, tt.flags)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			want := Default()
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Load =\n %+v\nwant\n %+v", got, want)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name  string
		file  string
		env   []string
		flags map[string]string
		want  []string // substrings of the error
	}{
		{name: "unknown key in file", file: "lisen: 127.0.0.1:1\n",
			want: []string{`config: `, `warder.yaml: unknown key "lisen"`, "line 1", `did you mean "listen"`}},
		{name: "unknown far key in file", file: "listen: 127.0.0.1:1\nbananas: 3\n",
			want: []string{`unknown key "bananas" (line 2)`}},
		{name: "repeated key", file: "listen: 127.0.0.1:1\nlisten: 127.0.0.1:2\n", want: []string{`key "listen" appears twice (line 2)`}},
		{name: "bad yaml", file: "listen: [\n", want: []string{"warder.yaml: invalid YAML"}},
		{name: "not a mapping", file: "- a\n- b\n", want: []string{"want a mapping"}},
		{name: "two documents", file: "listen: 127.0.0.1:1\n---\nlisten: 127.0.0.1:2\n", want: []string{"one YAML document"}},
		{name: "non-string key", file: "1: x\n", want: []string{"a key must be a name"}},
		{name: "int where string", file: "data_dir: 12\n", want: []string{"data_dir (from ", "warder.yaml line 1): want a string"}},
		{name: "list where string", file: "tls_cert: [a]\n", want: []string{"tls_cert (from", "want a string"}},
		{name: "string where int", file: "max_request_bytes: lots\n", want: []string{"max_request_bytes (from", "want an integer"}},
		{name: "int where duration", file: "checkpoint_interval: 30\n", want: []string{"checkpoint_interval (from", "want a duration"}},
		{name: "bad duration in file", file: "shutdown_timeout: 5 minutes\n", want: []string{"shutdown_timeout (from", `"5 minutes" is not a duration`}},
		{name: "bad listen in file", file: "listen: abc\n", want: []string{"listen (from", `"abc" is not host:port`}},
		{name: "bad listen in env", env: []string{"WARDER_LISTEN=abc"},
			want: []string{`config: listen (from WARDER_LISTEN): "abc" is not host:port`}},
		{name: "bad port", env: []string{"WARDER_LISTEN=127.0.0.1:99999"}, want: []string{"listen (from WARDER_LISTEN)", "port number"}},
		{name: "named port", env: []string{"WARDER_LISTEN=127.0.0.1:https"}, want: []string{"listen (from WARDER_LISTEN)", "port number"}},
		{name: "bad listen flag", flags: map[string]string{"listen": "nope"}, want: []string{`config: listen (from --listen): "nope" is not host:port`}},
		{name: "bad duration in env", env: []string{"WARDER_CHECKPOINT_INTERVAL=often"},
			want: []string{`config: checkpoint_interval (from WARDER_CHECKPOINT_INTERVAL): "often" is not a duration`}},
		{name: "short checkpoint", env: []string{"WARDER_CHECKPOINT_INTERVAL=10ms"}, want: []string{"checkpoint_interval (from WARDER_CHECKPOINT_INTERVAL): 10ms is shorter than 1s"}},
		{name: "bad int in env", env: []string{"WARDER_MAX_REQUEST_BYTES=1MiB"},
			want: []string{`config: max_request_bytes (from WARDER_MAX_REQUEST_BYTES): "1MiB" is not an integer`}},
		{name: "small request bytes", flags: map[string]string{"max-request-bytes": "100"}, want: []string{"max_request_bytes (from --max-request-bytes): 100 is out of range"}},
		{name: "large request bytes", file: "max_request_bytes: 67108865\n", want: []string{"max_request_bytes (from", "out of range"}},
		{name: "zero shutdown", env: []string{"WARDER_SHUTDOWN_TIMEOUT=0s"}, want: []string{"shutdown_timeout (from WARDER_SHUTDOWN_TIMEOUT)", "not a positive duration"}},
		{name: "bad log format", env: []string{"WARDER_LOG_FORMAT=xml"}, want: []string{`log_format (from WARDER_LOG_FORMAT): "xml" is not one of json, text`}},
		{name: "bad log level", file: "log_level: loud\n", want: []string{`log_level (from`, `"loud" is not one of`}},
		{name: "empty data dir flag", flags: map[string]string{"data_dir": ""}, want: []string{"data_dir (from --data-dir): must not be empty"}},
		{name: "bad storage scheme", env: []string{"WARDER_STORAGE=mysql://u:s3cret@h/db"}, want: []string{`storage (from WARDER_STORAGE): must be "sqlite" or a postgres:// URL`}},
		{name: "bad postgres url", flags: map[string]string{"storage": "postgres://u:s3cret@h:port/db"}, want: []string{"storage (from --storage): is not a valid PostgreSQL URL"}},
		{name: "tls cert without key", file: "tls_cert: /c.pem\n", want: []string{"config: tls_cert is set but tls_key is not"}},
		{name: "tls key without cert", env: []string{"WARDER_TLS_KEY=/k.pem"}, want: []string{"config: tls_key is set but tls_cert is not"}},
		{name: "unknown flag key", flags: map[string]string{"lisen": "x"}, want: []string{`config: unknown flag key "lisen"`}},
		{name: "missing file", file: "-", want: []string{"config: open", "no such file"}},
		{name: "negative idle timeout", env: []string{"WARDER_SSH_IDLE_TIMEOUT=-1m"}, want: []string{"ssh_idle_timeout (from WARDER_SSH_IDLE_TIMEOUT): -1m0s is negative"}},
		{name: "short recheck", flags: map[string]string{"session-recheck-interval": "100ms"}, want: []string{"session_recheck_interval (from --session-recheck-interval): 100ms is out of range"}},
		{name: "zero recheck", file: "session_recheck_interval: 0s\n", want: []string{"session_recheck_interval (from", "out of range"}},
		{name: "short retention", env: []string{"WARDER_RECORDING_RETENTION=10m"}, want: []string{"recording_retention (from WARDER_RECORDING_RETENTION): 10m0s is shorter than 1h0m0s"}},
		{name: "negative retention", env: []string{"WARDER_RECORDING_RETENTION=-1h"}, want: []string{"recording_retention (from WARDER_RECORDING_RETENTION)", "shorter than"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := ""
			switch tt.file {
			case "":
			case "-":
				path = filepath.Join(t.TempDir(), "missing.yaml")
			default:
				path = writeFile(t, tt.file)
			}
			_, err := Load(path, tt.env, tt.flags)
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error %q repeats a secret", err)
			}
		})
	}
}

func TestFileTooLarge(t *testing.T) {
	p := writeFile(t, "# "+strings.Repeat("x", maxFileBytes)+"\n")
	_, err := Load(p, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("Load of a %d-byte file = %v, want a size error", maxFileBytes+4, err)
	}
}

// TestValidateNamesKey checks that every field's validation error names it.
func TestValidateNamesKey(t *testing.T) {
	tests := []struct {
		key   string
		spoil func(c *Config)
	}{
		{"data_dir", func(c *Config) { c.DataDir = "" }},
		{"listen", func(c *Config) { c.Listen = "localhost" }},
		{"storage", func(c *Config) { c.Storage = "redis://u:s3cret@h" }},
		{"tls_cert", func(c *Config) { c.TLSCert = "/c" }},
		{"tls_key", func(c *Config) { c.TLSKey = "/k" }},
		{"log_format", func(c *Config) { c.LogFormat = "" }},
		{"log_level", func(c *Config) { c.LogLevel = "INFO" }},
		{"max_request_bytes", func(c *Config) { c.MaxRequestBytes = 0 }},
		{"checkpoint_interval", func(c *Config) { c.CheckpointInterval = 0 }},
		{"shutdown_timeout", func(c *Config) { c.ShutdownTimeout = -time.Second }},
		{"ssh_idle_timeout", func(c *Config) { c.SSHIdleTimeout = -time.Second }},
		{"session_recheck_interval", func(c *Config) { c.SessionRecheckInterval = 2 * time.Hour }},
		{"recording_retention", func(c *Config) { c.RecordingRetention = time.Second }},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			c := Default()
			tt.spoil(&c)
			err := c.Validate()
			if err == nil {
				t.Fatal("Validate succeeded, want an error")
			}
			if !strings.HasPrefix(err.Error(), "config: "+tt.key+" ") && !strings.HasPrefix(err.Error(), "config: "+tt.key+":") {
				t.Errorf("error %q does not start with config: %s", err, tt.key)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error %q repeats a secret", err)
			}
		})
	}
}

func TestStorage(t *testing.T) {
	tests := []struct {
		storage    string
		postgres   bool
		sqlitePath string
	}{
		{"", false, filepath.Join("/d", "warder.db")},
		{"sqlite", false, filepath.Join("/d", "warder.db")},
		{"postgres://u@h/db", true, ""},
		{"postgresql://u@h/db", true, ""},
		{"POSTGRES://u@h/db", true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.storage, func(t *testing.T) {
			c := Default()
			c.DataDir, c.Storage = "/d", tt.storage
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			if got := c.UsesPostgres(); got != tt.postgres {
				t.Errorf("UsesPostgres() = %v, want %v", got, tt.postgres)
			}
			if got := c.SQLitePath(); got != tt.sqlitePath {
				t.Errorf("SQLitePath() = %q, want %q", got, tt.sqlitePath)
			}
		})
	}
}

func TestLogValueHidesPassword(t *testing.T) {
	c := Default()
	c.Storage = "postgres://user:s3cret@db.example:5432/warder?password=s3cret"
	got := c.LogValue().String()
	if strings.Contains(got, "s3cret") {
		t.Errorf("LogValue = %s, repeats the password", got)
	}
	if !strings.Contains(got, "db.example:5432/warder") {
		t.Errorf("LogValue = %s, want host and database", got)
	}
}

func TestNames(t *testing.T) {
	if got := EnvName("tls_cert"); got != "WARDER_TLS_CERT" {
		t.Errorf("EnvName = %q", got)
	}
	if got := FlagName("tls_cert"); got != "tls-cert" {
		t.Errorf("FlagName = %q", got)
	}
}

func TestLoadWithDefaults(t *testing.T) {
	base := Default()
	base.DataDir, base.LogFormat = ".warder-dev", "text"
	tests := []struct {
		name string
		env  []string
		want string
	}{
		{"base default used", nil, ".warder-dev"},
		{"env overrides base", []string{"WARDER_DATA_DIR=/srv/warder"}, "/srv/warder"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := LoadWithDefaults(base, "", tt.env, nil)
			if err != nil {
				t.Fatal(err)
			}
			if c.DataDir != tt.want || c.LogFormat != "text" {
				t.Errorf("DataDir, LogFormat = %q, %q; want %q, text", c.DataDir, c.LogFormat, tt.want)
			}
		})
	}
	base.Listen = "nope"
	if _, err := LoadWithDefaults(base, "", nil, nil); err == nil || !strings.Contains(err.Error(), "config: listen") {
		t.Errorf("invalid defaults: err = %v, want a listen error", err)
	}
}

func TestTimeZone(t *testing.T) {
	c, err := Load("", []string{"WARDER_TIME_ZONE=Europe/Berlin"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	loc, err := c.Location()
	if err != nil || loc.String() != "Europe/Berlin" {
		t.Fatalf("Location() = %v, %v", loc, err)
	}
	_, err = Load("", []string{"WARDER_TIME_ZONE=Mars/Olympus"}, nil)
	if err == nil || !strings.Contains(err.Error(), "time_zone") {
		t.Fatalf("unknown zone: %v, want an error naming time_zone", err)
	}
}
