package ssh

import (
	"context"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/recording"
)

// Recordings adapts the recording package's Recorder to Recorder.
func Recordings(r *recording.Recorder) Recorder { return recorderAdapter{r} }

// RecordingLineBuffer is Config.NewLineBuffer with the recording
// package's command-line reconstruction, the one `warder session show`
// uses.
func RecordingLineBuffer() LineBuffer { return &recording.LineBuffer{} }

type recorderAdapter struct{ r *recording.Recorder }

func (a recorderAdapter) Start(ctx context.Context, o audit.Origin, m Meta) (Recording, error) {
	s, err := a.r.Start(ctx, o, recording.Meta{
		Kind:      recording.SSH,
		Principal: m.Principal,
		Target:    m.Target,
		Account:   m.Target + "/" + m.Account,
		Source:    m.Source,
		GrantID:   m.GrantID,
		LeaseID:   m.LeaseID,
		Command:   m.Command,
		PTY:       m.PTY,
		Width:     m.Width,
		Height:    m.Height,
	})
	if err != nil {
		return nil, err
	}
	return sessionAdapter{s}, nil
}

// sessionAdapter converts the event type and the status; the other
// methods are the recording Session's own.
type sessionAdapter struct{ *recording.Session }

func (s sessionAdapter) Record(typ EventType, data []byte) error {
	return s.Session.Record(recording.EventType(typ), data)
}

// Close stores the gateway's status as one of the recording's: a session
// closed by the idle timeout, or whose exec command was blocked, ended
// normally (the recording's notes and the audit log say why); a failed one
// is an error.
func (s sessionAdapter) Close(ctx context.Context, status string) error {
	return s.Session.Close(ctx, recordingStatus(status))
}

func recordingStatus(status string) string {
	switch status {
	case StatusKilled:
		return recording.StatusKilled
	case StatusExpired:
		return recording.StatusExpired
	case StatusClosed, StatusIdle, StatusBlocked:
		return recording.StatusClosed
	}
	return recording.StatusError
}
