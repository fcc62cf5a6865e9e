package server

import (
	"context"
	"time"

	"github.com/warderhq/warder/internal/recording"
)

// pruneInterval is how often recordings past recording_retention are
// deleted.
const pruneInterval = time.Hour

// recordingRetention maps recording_retention (0: forever) to the
// recording package's Retention.
func recordingRetention(d time.Duration) time.Duration {
	if d == 0 {
		return recording.KeepForever
	}
	return d
}

// runPrune deletes recordings past recording_retention at once and every
// pruneInterval until ctx ends, from when the barrier is unsealed (the
// audit events it writes join the signed chain). With retention 0 it does
// nothing.
func (s *Server) runPrune(ctx context.Context) {
	if s.cfg.RecordingRetention == 0 || !s.waitUnsealed(ctx) {
		return
	}
	s.recorder.RunPrune(ctx, pruneInterval)
}
