package audit

import (
	"context"
	"crypto/ed25519"
)

// CheckpointPurpose names the barrier-derived key that signs checkpoints.
const CheckpointPurpose = "audit.checkpoint"

// KeyDeriver is the part of the barrier that signs with derived keys.
type KeyDeriver interface {
	Sign(ctx context.Context, purpose string, msg []byte) ([]byte, error)
	PublicKey(ctx context.Context, purpose string) (ed25519.PublicKey, error)
}

// BarrierSigner signs checkpoints with the barrier's key for
// CheckpointPurpose. While the barrier is sealed it returns the barrier's
// sealed error, and checkpoints wait.
func BarrierSigner(b KeyDeriver) Signer { return barrierSigner{b} }

type barrierSigner struct{ b KeyDeriver }

func (s barrierSigner) Sign(ctx context.Context, msg []byte) ([]byte, error) {
	return s.b.Sign(ctx, CheckpointPurpose, msg)
}

func (s barrierSigner) PublicKey(ctx context.Context) (ed25519.PublicKey, error) {
	return s.b.PublicKey(ctx, CheckpointPurpose)
}
