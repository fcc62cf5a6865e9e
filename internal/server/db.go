package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"time"

	"github.com/warderhq/warder/internal/dbca"
	"github.com/warderhq/warder/internal/errkind"
	pggw "github.com/warderhq/warder/internal/gateway/postgres"
	"github.com/warderhq/warder/internal/identity"
)

// runDB serves the database gateway on s.dbLn from when the barrier is
// unsealed until ctx ends, then closes it and waits for its connections.
// Connections arriving while sealed wait in the listen backlog.
func (s *Server) runDB(ctx context.Context) {
	log := s.logger.With("component", "db")
	s.logger.Info("database gateway listening", "addr", s.dbLn.Addr().String())
	if !s.waitUnsealed(ctx) {
		s.dbLn.Close()
		return
	}
	gw, err := s.newDBGateway(ctx)
	if err != nil {
		log.Error("database gateway not started", "err", err)
		s.dbLn.Close()
		return
	}
	done := make(chan error, 1)
	go func() { done <- gw.Serve(s.dbLn) }()
	closeGW := func() {
		cctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		defer cancel()
		if err := gw.Close(cctx); err != nil {
			log.Warn("database gateway: sessions still open at shutdown", "err", err)
		}
	}
	select {
	case <-ctx.Done():
		closeGW()
		<-done
	case err := <-done:
		if !errors.Is(err, pggw.ErrServerClosed) {
			log.Error("database gateway stopped", "err", err)
		}
		closeGW()
	}
}

// newDBGateway builds the gateway; the barrier must be unsealed (the
// client CA derives from the root key). It serves the API's certificate
// and verifies client certificates, when given, against the client CA.
func (s *Server) newDBGateway(ctx context.Context) (*pggw.Server, error) {
	ca, err := dbca.New(ctx, s.barrier)
	if err != nil {
		return nil, err
	}
	tc := s.dbTLS.Clone()
	tc.ClientAuth = tls.VerifyClientCertIfGiven
	tc.ClientCAs = ca.Pool()
	log := s.logger.With("component", "db")
	return pggw.New(pggw.Config{
		Listen:       s.cfg.DBListen,
		TLS:          tc,
		Auth:         s.identity,
		CertAuth:     dbCertAuth{identity: s.identity},
		Authz:        s.authz,
		Checker:      s.authz,
		TokenLive:    s.identity.LiveToken,
		RedactParams: s.cfg.DBRedactParams,
		Recheck:      s.cfg.SessionRecheckInterval,
		Upstream:     dbResolver{vault: s.vault, grants: s.access, log: log, leases: s.sessionLeases},
		Recorder:     pggw.Recordings(s.recorder),
		Audit:        s.audit,
		Logger:       log,
	})
}

// liveTokens looks up tokens by id; *identity.Directory implements it.
type liveTokens interface {
	LiveToken(ctx context.Context, id string) (identity.Token, error)
}

// dbCertAuth authenticates a database client by the client certificate
// `warder login` obtained: TLS has verified it against the client CA, so
// its subject and token binding are Warder's own; the token it is bound
// to must still be live, its user active and named by the certificate.
type dbCertAuth struct {
	identity liveTokens
}

var _ pggw.CertAuthenticator = dbCertAuth{}

// AuthenticateCert returns the token chain[0] is bound to.
func (a dbCertAuth) AuthenticateCert(ctx context.Context, chain []*x509.Certificate) (identity.Token, error) {
	if len(chain) == 0 {
		return identity.Token{}, errkind.New(errkind.Unauthenticated, "server: no client certificate")
	}
	leaf := chain[0]
	user, tokenID, err := dbca.Identify(leaf)
	if err != nil {
		return identity.Token{}, errkind.Wrap(errkind.Unauthenticated, err)
	}
	if time.Now().After(leaf.NotAfter) { // TLS checked it; a long handshake may end past it
		return identity.Token{}, errkind.New(errkind.Unauthenticated, "server: client certificate expired")
	}
	tok, err := a.identity.LiveToken(ctx, tokenID)
	if err != nil {
		return identity.Token{}, err
	}
	if tok.Scope != "" || tok.Principal.Name != user {
		return identity.Token{}, errkind.New(errkind.Unauthenticated, "server: client certificate of %q is bound to a token of %s", user, tok.Actor())
	}
	return tok, nil
}
