package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDBListen(t *testing.T) {
	if d := Default().DBListen; d != "" {
		t.Errorf("default db_listen = %q, want \"\" (no gateway)", d)
	}
	c, err := Load("", []string{"WARDER_DB_LISTEN=127.0.0.1:0"}, nil)
	if err != nil || c.DBListen != "127.0.0.1:0" {
		t.Errorf("WARDER_DB_LISTEN: %q, %v", c.DBListen, err)
	}
	c, err = Load("", nil, map[string]string{"db-listen": ":7432"})
	if err != nil || c.DBListen != ":7432" {
		t.Errorf("--db-listen: %q, %v", c.DBListen, err)
	}
	for _, bad := range []string{"7432", "127.0.0.1:99999", "host:pg"} {
		_, err := Load("", nil, map[string]string{"db_listen": bad})
		if err == nil || !strings.Contains(err.Error(), "config: db_listen (from --db-listen)") {
			t.Errorf("db_listen %q: err = %v, want one naming db_listen", bad, err)
		}
	}
}

func TestDBRedactParams(t *testing.T) {
	if Default().DBRedactParams {
		t.Error("parameters are redacted by default")
	}
	c, err := Load("", []string{"WARDER_DB_REDACT_PARAMS=true"}, nil)
	if err != nil || !c.DBRedactParams {
		t.Errorf("WARDER_DB_REDACT_PARAMS=true: %v, %v", c.DBRedactParams, err)
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		yaml string
		want bool
		err  string
	}{
		{"db_redact_params: true\n", true, ""},
		{"db_redact_params: false\n", false, ""},
		{"db_redact_params: \"yes\"\n", false, "want true or false"},
	} {
		path := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(path, nil, nil)
		switch {
		case tc.err == "" && (err != nil || c.DBRedactParams != tc.want):
			t.Errorf("%q: %v, %v; want %v", tc.yaml, c.DBRedactParams, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: err = %v; want %q", tc.yaml, err, tc.err)
		}
	}
	if _, err := Load("", nil, map[string]string{"db-redact-params": "maybe"}); err == nil || !strings.Contains(err.Error(), "db_redact_params") {
		t.Errorf("--db-redact-params=maybe: err = %v", err)
	}
}
