package store

import (
	"context"
	"fmt"
	"net/url"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/warderhq/warder/internal/errkind"
)

// openPostgres connects to rawURL and checks that the server answers.
// Errors never repeat the URL, which may hold a password.
func openPostgres(ctx context.Context, rawURL string) (*DB, error) {
	cfg, err := pgx.ParseConfig(rawURL)
	if err != nil {
		return nil, errkind.New(errkind.Invalid, "store: invalid PostgreSQL URL (%s)", redactURL(rawURL))
	}
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = "warder"
	}
	pool := stdlib.OpenDB(*cfg)
	pool.SetMaxOpenConns(16)
	pool.SetMaxIdleConns(16)
	db := &DB{kind: Postgres, read: pool, write: pool, closer: pool.Close}
	if err := db.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("store: connect to PostgreSQL at %s: %w", redactURL(rawURL), err)
	}
	return db, nil
}

// redactURL returns host, port and database of a PostgreSQL URL, without
// user information or query parameters.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "unparseable URL"
	}
	return u.Host + u.Path
}
