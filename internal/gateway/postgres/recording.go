package postgres

import (
	"context"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/recording"
)

// Recordings adapts a *recording.Recorder to Recorder: database sessions
// (recording.DB) whose statements are recording.Statement events.
func Recordings(r *recording.Recorder) Recorder { return recorderAdapter{r} }

type recorderAdapter struct{ r *recording.Recorder }

func (a recorderAdapter) Start(ctx context.Context, o audit.Origin, m Meta) (Session, error) {
	s, err := a.r.Start(ctx, o, recording.Meta{Kind: recording.DB, Principal: m.Principal.Actor(),
		Target: m.Target, Account: m.Target + "/" + m.Account, Source: m.Source, GrantID: m.GrantID, LeaseID: m.LeaseID})
	if err != nil {
		return nil, err
	}
	return sessionAdapter{s}, nil
}

// sessionAdapter records statements; NotifyDrained and the other
// methods are the recording Session's own.
type sessionAdapter struct{ *recording.Session }

var _ NoWaitSession = sessionAdapter{}

func (s sessionAdapter) Record(data []byte) error { return s.Session.Record(recording.Statement, data) }

func (s sessionAdapter) RecordNoWait(data []byte) (backlogged bool, err error) {
	return s.Session.RecordNoWait(recording.Statement, data)
}
