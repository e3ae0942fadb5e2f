package accounting

import (
	"fmt"

	"github.com/gpufarm/gpufarm/gpu"
)

// Error categories, matched with errors.Is. Each prints its own words and
// also matches the gpu category of the same meaning.
var (
	// ErrInvalid: bad input or configuration: a tariff whose bands overlap
	// or leave hours uncovered, a price series with holes, a sample out of
	// time order, a malformed record or option. The message names every
	// problem.
	ErrInvalid error = &category{"invalid accounting input", gpu.ErrInvalid}
	// ErrNotFound: a sample or a record names a GPU the meter does not know.
	ErrNotFound error = &category{"accounting: unknown GPU", gpu.ErrNotFound}
	// ErrNoPrice: a tariff has no price for some time (a price series that
	// ends too early). The energy is still recorded, with FlagCostUnknown.
	ErrNoPrice error = &category{"accounting: no price for that time", gpu.ErrNotFound}
	// ErrConflict: a ledger refused records that differ from what it holds
	// for the same GPU and start, or that would leave a hole in a GPU's
	// stream of records.
	ErrConflict error = &category{"accounting: records conflict with the ledger", gpu.ErrInvalid}
	// ErrLedger: the ledger could not be read or written; the ledger's own
	// error is in the chain. Records the meter could not write are kept and
	// written again on its next call.
	ErrLedger error = &category{"accounting: ledger failed", gpu.ErrUnavailable}
	// ErrClosed: the meter or the ledger is closed.
	ErrClosed error = &category{"accounting: closed", gpu.ErrUnavailable}
)

type category struct {
	text string
	kind error
}

func (c *category) Error() string        { return c.text }
func (c *category) Is(target error) bool { return target == c.kind }

type classified struct {
	cat error
	err error
}

func (e *classified) Error() string   { return e.err.Error() }
func (e *classified) Unwrap() []error { return []error{e.cat, e.err} }

// Errorf makes an error of category cat (one of this package's Err
// values) whose message is format; %w wraps as with fmt.Errorf. Ledger
// implementations outside this package use it to report the same
// categories.
func Errorf(cat error, format string, args ...any) error {
	return &classified{cat: cat, err: fmt.Errorf(format, args...)}
}
