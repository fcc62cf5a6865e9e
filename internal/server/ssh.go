package server

import (
	"context"
	"errors"

	sshgw "github.com/warderhq/warder/internal/gateway/ssh"
	"github.com/warderhq/warder/internal/sshca"
)

// runSSH serves the SSH gateway on s.sshLn from when the barrier is
// unsealed until ctx ends, then closes it and waits for its connections.
// Connections arriving while sealed wait in the listen backlog.
func (s *Server) runSSH(ctx context.Context) {
	log := s.logger.With("component", "ssh")
	s.logger.Info("ssh gateway listening", "addr", s.sshLn.Addr().String())
	if !s.waitUnsealed(ctx) {
		s.sshLn.Close()
		return
	}
	gw, err := s.newSSHGateway(ctx)
	if err != nil {
		log.Error("ssh gateway not started", "err", err)
		s.sshLn.Close()
		return
	}
	done := make(chan error, 1)
	go func() { done <- gw.Serve(s.sshLn) }()
	select {
	case <-ctx.Done():
		gw.Close()
		<-done
	case err := <-done:
		if !errors.Is(err, sshgw.ErrServerClosed) {
			log.Error("ssh gateway stopped", "err", err)
		}
		gw.Close()
	}
}

// newSSHGateway builds the gateway; the barrier must be unsealed.
func (s *Server) newSSHGateway(ctx context.Context) (*sshgw.Server, error) {
	host, err := sshca.Signer(ctx, s.barrier, sshca.PurposeHostKey)
	if err != nil {
		return nil, err
	}
	ca, err := sshca.Signer(ctx, s.barrier, sshca.PurposeUserCA)
	if err != nil {
		return nil, err
	}
	hostCA, err := sshca.Signer(ctx, s.barrier, sshca.PurposeHostCA)
	if err != nil {
		return nil, err
	}
	accessCA, err := sshca.Signer(ctx, s.barrier, sshca.PurposeAccessCA)
	if err != nil {
		return nil, err
	}
	log := s.logger.With("component", "ssh")
	return sshgw.New(sshgw.Config{
		Listen:        s.cfg.SSHListen,
		HostSigner:    host,
		HostCA:        hostCA,
		UserCA:        ca.PublicKey(),
		Authz:         s.authz,
		Upstream:      sshResolver{vault: s.vault, grants: s.access, log: log, leases: s.sessionLeases, accessCA: accessCA, audit: s.audit},
		Recorder:      sshgw.Recordings(s.recorder),
		Audit:         s.audit,
		NewLineBuffer: sshgw.RecordingLineBuffer,
		Logger:        log,

		IdleTimeout:     s.cfg.SSHIdleTimeout,
		RecheckInterval: s.cfg.SessionRecheckInterval,
		PrincipalActive: s.principalActive,
		TokenLive:       s.identity.LiveToken,
	})
}
