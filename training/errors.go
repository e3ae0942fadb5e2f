package training

import (
	"fmt"
	"strings"

	"github.com/gpufarm/gpufarm/workload"
)

// Error categories, matched with errors.Is. Each also matches the workload
// category of the same meaning (and through it the gpu one), so an
// AttemptHook error of this package fails the workload as ErrInvalid
// should.
var (
	// ErrInvalid: the job or server is malformed; the message names every
	// field and number that is wrong.
	ErrInvalid error = &trainingError{msg: "invalid training request", errs: []error{workload.ErrInvalid}}
	// ErrUnfit: the request is well formed but the GPUs cannot serve it: the
	// model does not fit their memory, or their links are too slow for
	// data-parallel training. The message gives the numbers.
	ErrUnfit error = &trainingError{msg: "training request does not fit the GPUs", errs: []error{workload.ErrUnplaceable}}
)

// trainingError prints its own message and matches, with errors.Is, every
// error it was made of: its category and what the message wraps.
type trainingError struct {
	msg  string
	errs []error
}

func (e *trainingError) Error() string   { return e.msg }
func (e *trainingError) Unwrap() []error { return e.errs }

// errorf makes an error of category cat; %w in format wraps as with
// fmt.Errorf.
func errorf(cat error, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &trainingError{msg: err.Error(), errs: []error{cat, err}}
}

// problems collects what is wrong with a request, to report it all at once.
type problems struct {
	invalid, unfits []string
	wrapped         []error // errors of other packages, kept for errors.Is
}

func (p *problems) bad(format string, args ...any) {
	p.invalid = append(p.invalid, fmt.Sprintf(format, args...))
}

func (p *problems) unfit(format string, args ...any) {
	p.unfits = append(p.unfits, fmt.Sprintf(format, args...))
}

// gpus checks a request of count GPUs or of the uuids; what names the
// workload ("a training job", "a server").
func (p *problems) gpus(count int, uuids []string, what string) {
	switch {
	case len(uuids) > 0 && count != 0 && count != len(uuids):
		p.bad("GPUs %d does not match the %d UUIDs", count, len(uuids))
	case len(uuids) == 0 && count <= 0:
		p.bad("GPUs %d: %s needs at least one GPU", count, what)
	}
}

// err returns nil, or one error naming every problem: ErrInvalid when any
// input is malformed, ErrUnfit when it is only the GPUs that cannot serve.
func (p *problems) err(what string) error {
	all := append(append([]string(nil), p.invalid...), p.unfits...)
	for _, e := range p.wrapped {
		all = append(all, e.Error())
	}
	if len(all) == 0 {
		return nil
	}
	cat := ErrUnfit
	if len(p.invalid) > 0 || len(p.wrapped) > 0 {
		cat = ErrInvalid
	}
	return &trainingError{msg: what + ": " + strings.Join(all, "; "), errs: append([]error{cat}, p.wrapped...)}
}
