package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/warderhq/warder/internal/operator"
)

// Dev-mode file names inside the data directory.
const (
	DevAdminTokenFile = "admin.token"
	DevUnsealKeyFile  = "unseal.key"
)

// DevBootstrap initialises and unseals a dev server. On first start it
// initialises with a single share, keeps the unseal key in the data
// directory (mode 0600) and writes the admin token beside it; on later
// starts it unseals with the kept key. Keeping the unseal key next to the
// data it protects is what makes dev mode unfit for production.
func (s *Server) DevBootstrap(ctx context.Context) error {
	st, err := s.barrier.Status(ctx)
	if err != nil {
		return err
	}
	origin := operator.Origin{Actor: "system:dev"}
	keyPath := s.DataPath(DevUnsealKeyFile)
	if !st.Initialized {
		res, err := s.operator.Init(ctx, origin, operator.InitRequest{Shares: 1, Threshold: 1})
		if err != nil {
			return fmt.Errorf("server: dev init: %w", err)
		}
		if err := writeSecretFile(keyPath, res.UnsealKey); err != nil {
			return err
		}
		if err := writeSecretFile(s.DataPath(DevAdminTokenFile), []byte(res.AdminToken+"\n")); err != nil {
			return err
		}
	}
	if !s.barrier.Sealed() {
		return nil
	}
	key, err := readSmallFile(keyPath, 64<<10)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("server: %s is initialised but has no %s: it was not created by `warder dev`; use `warder server` and unseal it", s.cfg.DataDir, DevUnsealKeyFile)
	}
	if err != nil {
		return fmt.Errorf("server: dev unseal key: %w", err)
	}
	return s.operator.UnsealWithKeyFile(ctx, origin, key)
}

// writeSecretFile writes data to path with mode 0600, atomically.
func writeSecretFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("server: write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("server: write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("server: write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("server: write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("server: write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("server: write %s: %w", path, err)
	}
	return nil
}
