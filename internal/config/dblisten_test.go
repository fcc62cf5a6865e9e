package config

import (
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
