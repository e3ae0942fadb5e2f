package workload

import (
	"fmt"

	"github.com/gpufarm/gpufarm/gpu"
)

// Error categories, matched with errors.Is. Each prints its own words and
// also matches the gpu category of the same meaning, so code that handles
// gpu.ErrNotFound or gpu.ErrInvalid keeps working.
var (
	// ErrInvalid: the request is malformed or breaks a rule; the message
	// names every problem.
	ErrInvalid error = &category{"invalid workload request", gpu.ErrInvalid}
	// ErrNotFound: no workload, or no GPU, by that name on this node.
	ErrNotFound error = &category{"workload not found", gpu.ErrNotFound}
	// ErrExists: a workload with that ID is already known.
	ErrExists error = &category{"workload already exists", gpu.ErrInvalid}
	// ErrUnplaceable: no GPU of this node can ever meet the request.
	ErrUnplaceable error = &category{"workload cannot be placed on this node", gpu.ErrInvalid}
	// ErrClosed: the manager is closed, or its Run has returned.
	ErrClosed error = &category{"workload manager closed", gpu.ErrUnavailable}
	// ErrStore: the Store refused a write; nothing changed. The store's own
	// error is in the chain.
	ErrStore error = &category{"workload store failed", gpu.ErrUnavailable}
)

// category is an error category with its own text that also matches the
// gpu category of the same meaning.
type category struct {
	text string
	kind error
}

func (c *category) Error() string        { return c.text }
func (c *category) Is(target error) bool { return target == c.kind }

// classified is one error of a category: its message is its own, and
// errors.Is finds both the category and whatever the message wraps.
type classified struct {
	cat error
	err error
}

func (e *classified) Error() string   { return e.err.Error() }
func (e *classified) Unwrap() []error { return []error{e.cat, e.err} }

// errorf makes an error of category cat; %w in format wraps as with
// fmt.Errorf.
func errorf(cat error, format string, args ...any) error {
	return &classified{cat: cat, err: fmt.Errorf(format, args...)}
}
