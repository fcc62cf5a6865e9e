package config

import (
	"strings"
	"testing"
)

// FuzzLoadYAML feeds arbitrary bytes to the config file parser: it must not
// panic, every error must start with "config:", and whatever it accepts must
// be valid or be refused by Validate with a "config:" error.
func FuzzLoadYAML(f *testing.F) {
	seeds := []string{
		"",
		"# comment\n",
		"data_dir: /var/lib/warder\nlisten: 0.0.0.0:8200\nstorage: postgres://warder:pw@db:5432/warder?sslmode=verify-full\n" +
			"tls_cert: /etc/warder/tls.pem\ntls_key: /etc/warder/tls-key.pem\nunseal_key_file: /run/secrets/unseal\n" +
			"log_format: text\nlog_level: debug\nmax_request_bytes: 2097152\ncheckpoint_interval: 30s\nshutdown_timeout: 1m\n",
		"lisen: 127.0.0.1:1\n",
		"listen: &a 127.0.0.1:1\ndata_dir: *a\n",
		"max_request_bytes: 0x10000\n",
		"max_request_bytes: 99999999999999999999999\n",
		"checkpoint_interval: 30\n",
		"listen:\n  - a\n",
		"? [a, b]\n: c\n",
		"---\n---\n",
		"listen: \"\\u0000\"\n",
		"!!binary aGVsbG8=: x\n",
		"a: &x [*x]\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := Default()
		err := parse(&c, "fuzz.yaml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "config:") {
				t.Fatalf("error %q does not start with config:", err)
			}
			return
		}
		if err := c.Validate(); err != nil && !strings.HasPrefix(err.Error(), "config:") {
			t.Fatalf("Validate error %q does not start with config:", err)
		}
	})
}
