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

// sessionAdapter converts the event type; the other methods are the
// recording Session's own.
type sessionAdapter struct{ *recording.Session }

func (s sessionAdapter) Record(typ EventType, data []byte) error {
	return s.Session.Record(recording.EventType(typ), data)
}
