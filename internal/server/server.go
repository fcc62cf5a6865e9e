// Package server is Warder's composition root: it opens the store, builds
// every component with its dependencies, serves the API over TLS and shuts
// down cleanly on SIGTERM.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warderhq/warder/internal/access"
	"github.com/warderhq/warder/internal/api"
	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/authz"
	"github.com/warderhq/warder/internal/barrier"
	"github.com/warderhq/warder/internal/config"
	"github.com/warderhq/warder/internal/connector"
	"github.com/warderhq/warder/internal/connector/linux"
	"github.com/warderhq/warder/internal/connector/mysql"
	"github.com/warderhq/warder/internal/connector/postgres"
	"github.com/warderhq/warder/internal/connector/redis"
	"github.com/warderhq/warder/internal/identity"
	"github.com/warderhq/warder/internal/operator"
	"github.com/warderhq/warder/internal/pki"
	"github.com/warderhq/warder/internal/recording"
	"github.com/warderhq/warder/internal/rotation"
	"github.com/warderhq/warder/internal/store"
	"github.com/warderhq/warder/internal/vault"
)

// Server is a running Warder server.
type Server struct {
	// sessionLeases shares check-outs among a person's concurrent gateway
	// sessions on one account (SSH and database).
	sessionLeases *sessionLeases
	cfg           config.Config
	logger        *slog.Logger
	db            *store.DB
	barrier       *barrier.Barrier
	audit         *audit.Log
	identity      *identity.Directory
	authz         *authz.Authorizer
	connectors    connector.Registry
	vault         *vault.Vault
	rotation      *rotation.Engine
	access        *access.Access
	recorder      *recording.Recorder
	webhooks      *access.Webhooks
	operator      *operator.Operator
	api           *api.Server
	tls           *tls.Config
	caFile        string // the CA clients should trust, "" when the operator brought their own certificate
	ln            net.Listener
	sshLn         net.Listener // the SSH gateway's, after Listen; nil: no gateway
	dbLn          net.Listener // the database gateway's, after Listen; nil: no gateway
	dbTLS         *tls.Config  // the database gateway's base TLS: a copy of tls, taken before the API serves
}

// Options are what New needs beyond the configuration.
type Options struct {
	Logger  *slog.Logger
	Version string
}

// New opens the store, migrates it and builds every component. It does not
// listen yet. The caller must Close the server if Run is not called.
func New(ctx context.Context, cfg config.Config, opts Options) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, logger: logger}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("server: data directory: %w", err)
	}
	sc := store.Config{SQLitePath: cfg.SQLitePath()}
	if cfg.UsesPostgres() {
		sc = store.Config{PostgresURL: cfg.Storage}
	}
	if s.db, err = store.Open(ctx, sc); err != nil {
		return nil, err
	}
	if s.barrier, err = barrier.New(ctx, barrier.Config{DB: s.db, Logger: logger.With("component", "barrier")}); err != nil {
		return nil, err
	}
	if s.audit, err = audit.New(ctx, audit.Config{
		DB:                 s.db,
		Signer:             audit.BarrierSigner(s.barrier),
		Logger:             logger.With("component", "audit"),
		CheckpointInterval: cfg.CheckpointInterval,
	}); err != nil {
		return nil, err
	}
	if s.identity, err = identity.New(ctx, identity.Config{
		DB: s.db, Audit: s.audit, Barrier: s.barrier, Logger: logger.With("component", "identity"),
	}); err != nil {
		return nil, err
	}
	s.barrier.Register("identity", s.identity)
	// The policy engine learns about vault entities once the vault exists
	// (the vault itself needs the policy engine).
	ents := &entities{identity: s.identity}
	loc, err := cfg.Location()
	if err != nil {
		return nil, fmt.Errorf("server: time zone: %w", err)
	}
	if s.authz, err = authz.New(ctx, authz.Config{
		DB: s.db, Audit: s.audit, Entities: ents, Logger: logger.With("component", "authz"), Location: loc,
	}); err != nil {
		return nil, err
	}
	s.connectors = connector.Registry{}
	for _, c := range []connector.Connector{postgres.New(), mysql.New(), linux.New(), redis.New()} {
		s.connectors[c.Kind()] = c
	}
	if s.vault, err = vault.New(ctx, vault.Config{
		DB: s.db, Audit: s.audit, Barrier: s.barrier, Authz: s.authz, Connectors: s.connectors, Logger: logger.With("component", "vault"),
	}); err != nil {
		return nil, err
	}
	ents.vault = s.vault
	s.sessionLeases = newSessionLeases(s.vault, s.logger.With("component", "gateway"))
	s.barrier.Register("vault", s.vault)
	if s.rotation, err = rotation.New(rotation.Config{
		Vault: s.vault, Connectors: s.connectors, Audit: s.audit, Logger: logger.With("component", "rotation"),
	}); err != nil {
		return nil, err
	}
	// A lease that ends on an account that rotates on check-in rotates it;
	// a disabled or deleted principal loses its leases at once.
	s.vault.OnRelease(func(ctx context.Context, account, reason string) { s.rotation.Trigger(ctx, account, reason) })
	// A lease that ends while gateway sessions still use it (a forced
	// check-in) ends them.
	s.vault.OnLeaseEnd(s.endLeaseSessions)
	s.identity.Subscribe(s.onLifecycle)
	hooks, err := parseWebhooks(cfg.NotifyWebhooks, cfg.NotifyWebhookSecret)
	if err != nil {
		return nil, err
	}
	if s.webhooks, err = access.NewWebhooks(access.WebhooksConfig{Webhooks: hooks, Logger: logger.With("component", "webhooks")}); err != nil {
		return nil, fmt.Errorf("server: notify_webhooks: %w", err)
	}
	if s.access, err = access.New(ctx, access.Config{
		DB: s.db, Audit: s.audit, Authz: s.authz, Identity: s.identity, Vault: s.vault, Connectors: s.connectors,
		Barrier: s.barrier, Notifier: s.webhooks, Rotator: s.rotation, Logger: logger.With("component", "access"),
	}); err != nil {
		return nil, err
	}
	s.barrier.Register("access", s.access)
	if s.recorder, err = recording.New(ctx, recording.Config{
		DB: s.db, Audit: s.audit, Barrier: s.barrier, Logger: logger.With("component", "recording"),
		Retention: recordingRetention(cfg.RecordingRetention),
	}); err != nil {
		return nil, err
	}
	s.barrier.Register("recording", s.recorder)
	s.operator = &operator.Operator{Barrier: s.barrier, Audit: s.audit, Identity: s.identity}
	if s.api, err = api.New(api.Config{
		Operator:        s.operator,
		Barrier:         s.barrier,
		Audit:           s.audit,
		Identity:        s.identity,
		Authz:           s.authz,
		Vault:           s.vault,
		Rotation:        s.rotation,
		Access:          s.access,
		Recorder:        s.recorder,
		Logger:          logger.With("component", "api"),
		Registry:        prometheus.NewRegistry(),
		MaxRequestBytes: cfg.MaxRequestBytes,
		Version:         opts.Version,
		ExposeUnsealKey: true,
		SSHListen:       s.SSHAddr,
		DBListen:        s.DBAddr,
	}); err != nil {
		return nil, err
	}
	if err := s.setupTLS(); err != nil {
		return nil, err
	}
	if cfg.UnsealKeyFile != "" {
		if err := s.autoUnseal(ctx); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// setupTLS loads the operator's certificate or generates a CA and
// certificate in the data directory.
func (s *Server) setupTLS() error {
	certFile, keyFile := s.cfg.TLSCert, s.cfg.TLSKey
	if certFile == "" {
		host, _, _ := net.SplitHostPort(s.cfg.Listen)
		hosts := []string{"127.0.0.1", "::1", "localhost"}
		if host != "" && host != "0.0.0.0" && host != "::" {
			hosts = append(hosts, host)
		}
		// The database gateway serves the same certificate: clients
		// verify it with sslmode=verify-full against its own address.
		if dbHost, _, _ := net.SplitHostPort(s.cfg.DBListen); dbHost != "" && dbHost != "0.0.0.0" && dbHost != "::" && dbHost != host {
			hosts = append(hosts, dbHost)
		}
		files, generated, err := pki.EnsureServerTLS(s.cfg.DataDir, hosts, time.Now())
		if err != nil {
			return fmt.Errorf("server: TLS: %w", err)
		}
		if generated {
			s.logger.Info("generated a TLS certificate authority and server certificate; clients must trust the CA",
				"ca_cert", files.CACert, "cert", files.Cert)
		}
		certFile, keyFile, s.caFile = files.Cert, files.Key, files.CACert
	}
	tc, err := pki.ServerTLSConfig(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("server: TLS: %w", err)
	}
	s.tls = tc
	s.dbTLS = tc.Clone() // the HTTP server adds its ALPN protocols to tc when it starts
	return nil
}

// autoUnseal unseals with the configured key file. A wrong or unreadable
// key file stops the start: an operator who configured auto-unseal expects
// an unsealed server, not a silently sealed one.
func (s *Server) autoUnseal(ctx context.Context) error {
	fi, err := os.Stat(s.cfg.UnsealKeyFile)
	if err != nil {
		return fmt.Errorf("server: unseal key file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("server: unseal key file %s is accessible to other users (mode %04o); make it owner-only (chmod 600) — whoever reads it can decrypt every secret", s.cfg.UnsealKeyFile, fi.Mode().Perm())
	}
	data, err := readSmallFile(s.cfg.UnsealKeyFile, 64<<10)
	if err != nil {
		return fmt.Errorf("server: unseal key file: %w", err)
	}
	st, err := s.barrier.Status(ctx)
	if err != nil {
		return err
	}
	if !st.Initialized {
		return fmt.Errorf("server: --unseal-key-file given but the server is not initialised; run `warder operator init --key-file` first")
	}
	if err := s.operator.UnsealWithKeyFile(ctx, operator.Origin{Actor: "system:auto-unseal"}, data); err != nil {
		return fmt.Errorf("server: auto-unseal with %s: %w", s.cfg.UnsealKeyFile, err)
	}
	s.logger.Info("unsealed with key file", "file", s.cfg.UnsealKeyFile)
	return nil
}

func readSmallFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	buf := make([]byte, fi.Size())
	_, err = io.ReadFull(f, buf)
	return buf, err
}

// Listen binds the configured address. Run serves on it.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("server: listen on %s: %w", s.cfg.Listen, err)
	}
	s.ln = ln
	if s.cfg.SSHListen != "" {
		if s.sshLn, err = net.Listen("tcp", s.cfg.SSHListen); err != nil {
			ln.Close()
			s.ln = nil
			return fmt.Errorf("server: SSH gateway: listen on %s: %w", s.cfg.SSHListen, err)
		}
	}
	if s.cfg.DBListen != "" {
		if s.dbLn, err = net.Listen("tcp", s.cfg.DBListen); err != nil {
			ln.Close()
			s.ln = nil
			if s.sshLn != nil {
				s.sshLn.Close()
				s.sshLn = nil
			}
			return fmt.Errorf("server: database gateway: listen on %s: %w", s.cfg.DBListen, err)
		}
	}
	return nil
}

// DBAddr is the database gateway's address after Listen, or "" when it
// does not run.
func (s *Server) DBAddr() string {
	if s.dbLn == nil {
		return ""
	}
	return s.dbLn.Addr().String()
}

// SSHAddr is the SSH gateway's address after Listen, or "" when it does
// not run.
func (s *Server) SSHAddr() string {
	if s.sshLn == nil {
		return ""
	}
	return s.sshLn.Addr().String()
}

// Addr is the address the server listens on, after Listen.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is the address clients use, after Listen.
func (s *Server) URL() string { return "https://" + s.ln.Addr().String() }

// CAFile is the path of the CA certificate clients must trust, or "" when
// the operator supplied the server's certificate.
func (s *Server) CAFile() string { return s.caFile }

// Operator exposes the life-cycle operations, for dev mode.
func (s *Server) Operator() *operator.Operator { return s.operator }

// Barrier exposes the barrier, for dev mode and tests.
func (s *Server) Barrier() *barrier.Barrier { return s.barrier }

// Run serves until ctx is cancelled, then shuts down gracefully: it stops
// accepting, lets requests in flight finish (up to the shutdown timeout),
// drains the audit log, seals and closes the store.
func (s *Server) Run(ctx context.Context) error {
	if s.ln == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	hs := &http.Server{
		Handler:           s.api,
		TLSConfig:         s.tls,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
	}
	bg, stopBG := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(5)
	go func() { defer wg.Done(); s.webhooks.Run(bg) }()
	go func() { defer wg.Done(); s.access.Run(bg) }()
	go func() { defer wg.Done(); s.barrier.Run(bg) }()
	go func() { defer wg.Done(); s.audit.Run(bg) }()
	go func() { defer wg.Done(); s.vault.Run(bg) }()
	// Rotation needs the keys: it starts (and first recovers interrupted
	// rotations) once the barrier is unsealed, and stops with the server.
	wg.Add(1)
	go func() {
		defer wg.Done()
		if s.waitUnsealed(bg) {
			s.reconcileHolders(bg)
			s.rotation.Run(bg)
		}
	}()
	wg.Add(1)
	go func() { defer wg.Done(); s.runPrune(bg) }()
	// The SSH gateway's host key is derived from the root key: it serves
	// once unsealed, until the server stops.
	if s.sshLn != nil {
		wg.Add(1)
		go func() { defer wg.Done(); s.runSSH(bg) }()
	}
	// So is the database gateway's client CA.
	if s.dbLn != nil {
		wg.Add(1)
		go func() { defer wg.Done(); s.runDB(bg) }()
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(tls.NewListener(s.ln, s.tls)) }()
	s.logger.Info("warder listening", "addr", s.URL())

	var err error
	select {
	case err = <-serveErr:
	case <-ctx.Done():
		s.logger.Info("shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		err = hs.Shutdown(sctx)
		cancel()
		<-serveErr
	}
	stopBG()
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return errors.Join(err, s.Close())
}

// waitUnsealed waits until the barrier is unsealed or ctx ends.
func (s *Server) waitUnsealed(ctx context.Context) bool {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for s.barrier.Sealed() {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
	return true
}

// Close releases everything New opened. It is safe to call more than once.
func (s *Server) Close() error {
	var errs []error
	if s.sshLn != nil {
		s.sshLn.Close() // Run's gateway closed it already, if it ran
	}
	if s.dbLn != nil {
		s.dbLn.Close() // likewise
	}
	if s.audit != nil {
		if s.barrier != nil && !s.barrier.Sealed() {
			// Sign the head so a clean shutdown leaves no unsigned tail.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if _, _, err := s.audit.Checkpoint(ctx); err != nil {
				s.logger.Warn("final audit checkpoint failed", "err", err)
			}
			cancel()
		}
		errs = append(errs, s.audit.Close())
		s.audit = nil
	}
	if s.barrier != nil {
		s.barrier.Seal()
	}
	if s.db != nil {
		errs = append(errs, s.db.Close())
		s.db = nil
	}
	return errors.Join(errs...)
}

// DataPath joins name to the data directory.
func (s *Server) DataPath(name string) string { return filepath.Join(s.cfg.DataDir, name) }
