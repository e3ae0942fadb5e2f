package workload

import (
	"fmt"

	"github.com/gpufarm/gpufarm/gpu"
)

// Error categories; each wraps the gpu category of the same meaning, so
// errors.Is(err, gpu.ErrNotFound) also holds.
var (
	ErrInvalid  = fmt.Errorf("workload: %w", gpu.ErrInvalid)
	ErrNotFound = fmt.Errorf("workload: %w", gpu.ErrNotFound)
	// ErrExists: a workload with that ID is already known.
	ErrExists = fmt.Errorf("workload: already exists: %w", gpu.ErrInvalid)
	// ErrUnplaceable: no GPU of this node can ever meet the request.
	ErrUnplaceable = fmt.Errorf("workload: cannot be placed on this node: %w", gpu.ErrInvalid)
	// ErrClosed: the manager is closed.
	ErrClosed = fmt.Errorf("workload: manager closed: %w", gpu.ErrUnavailable)
)
