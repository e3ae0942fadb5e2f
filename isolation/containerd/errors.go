package containerd

import (
	"context"
	"errors"
	"fmt"

	"github.com/containerd/errdefs"

	"github.com/gpufarm/gpufarm/isolation"
)

// mapErr gives a containerd error its isolation category, keeping it in
// the chain (errdefs.IsNotFound and errors.As still reach it).
func mapErr(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	msg := fmt.Sprintf(format, args...)
	switch {
	case errdefs.IsNotFound(err):
		return fmt.Errorf("%w: %s: %w", isolation.ErrNotFound, msg, err)
	case errdefs.IsAlreadyExists(err):
		return fmt.Errorf("%w: %s: %w", isolation.ErrExists, msg, err)
	case errdefs.IsFailedPrecondition(err), errdefs.IsConflict(err):
		return fmt.Errorf("%w: %s: %w", isolation.ErrState, msg, err)
	case errdefs.IsInvalidArgument(err):
		return fmt.Errorf("%w: %s: %w", isolation.ErrInvalid, msg, err)
	case errdefs.IsUnavailable(err):
		return fmt.Errorf("%w: %s: %w", isolation.ErrUnavailable, msg, err)
	case errdefs.IsUnauthorized(err), errdefs.IsPermissionDenied(err):
		return fmt.Errorf("%w: %s: %w", isolation.ErrPermission, msg, err)
	case errdefs.IsNotImplemented(err):
		return fmt.Errorf("%w: %s: %w", isolation.ErrUnsupported, msg, err)
	case errdefs.IsCanceled(err), errdefs.IsDeadlineExceeded(err), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", msg, err)
	}
	return fmt.Errorf("isolation: %s: %w", msg, err)
}
