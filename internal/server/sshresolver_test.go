package server

import (
	"testing"

	"github.com/warderhq/warder/internal/connector"
)

func TestAuthMethod(t *testing.T) {
	for _, tc := range []struct {
		name string
		cred *connector.Credential
		ok   bool
	}{
		{"password", &connector.Credential{Kind: connector.Password, Secret: []byte("pw")}, true},
		{"bad ssh key", &connector.Credential{Kind: connector.SSHKey, Secret: []byte("not a key")}, false},
		{"api key", &connector.Credential{Kind: connector.APIKey, Secret: []byte("k")}, false},
		{"none", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := authMethod(tc.cred); (err == nil) != tc.ok {
				t.Errorf("authMethod: err %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
