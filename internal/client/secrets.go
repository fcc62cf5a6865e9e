package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// SecretMeta describes one version of an application secret, without its
// values.
type SecretMeta struct {
	Path      string    `json:"path"`
	Version   int64     `json:"version"`
	CreatedAt time.Time `json:"created_at"`
	Keys      []string  `json:"keys"`
}

// Secret is one version of an application secret with its values.
type Secret struct {
	SecretMeta
	Data map[string]string `json:"data"`
}

// secretPath is the escaped API path of a secret, whose segments are
// separated by "/".
func secretPath(path string) (string, error) {
	segs := strings.Split(path, "/")
	for i, s := range segs {
		if s == "" || s == "." || s == ".." {
			return "", fmt.Errorf("client: secret path %q has an empty, . or .. segment", path)
		}
		segs[i] = url.PathEscape(s)
	}
	return "/v1/secrets/" + strings.Join(segs, "/"), nil
}

// PutSecret stores data as a new version of the secret at path.
func (c *Client) PutSecret(ctx context.Context, path string, data map[string]string) (SecretMeta, error) {
	p, err := secretPath(path)
	if err != nil {
		return SecretMeta{}, err
	}
	req := struct {
		Data map[string]string `json:"data"`
	}{data}
	var res SecretMeta
	err = c.do(ctx, http.MethodPut, p, nil, req, &res)
	return res, err
}

// Secret reads a version of the secret at path; version 0 is the latest.
func (c *Client) Secret(ctx context.Context, path string, version int64) (Secret, error) {
	p, err := secretPath(path)
	if err != nil {
		return Secret{}, err
	}
	q := url.Values{}
	if version > 0 {
		q.Set("version", strconv.FormatInt(version, 10))
	}
	var res Secret
	err = c.do(ctx, http.MethodGet, p, q, nil, &res)
	return res, err
}

// Secrets lists the secrets, without values.
func (c *Client) Secrets(ctx context.Context) ([]SecretMeta, error) {
	var res struct {
		Secrets []SecretMeta `json:"secrets"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/secrets", nil, nil, &res)
	return res.Secrets, err
}
