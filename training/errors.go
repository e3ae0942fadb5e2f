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
	ErrInvalid error = &category{"invalid training request", workload.ErrInvalid}
	// ErrUnfit: the request is well formed but the GPUs cannot serve it: the
	// model does not fit their memory, or their links are too slow for
	// data-parallel training. The message gives the numbers.
	ErrUnfit error = &category{"training request does not fit the GPUs", workload.ErrUnplaceable}
)

// category is an error category that prints its own words and also
// matches (unwraps to) the workload category of the same meaning.
type category struct {
	text string
	kind error
}

func (c *category) Error() string { return c.text }
func (c *category) Unwrap() error { return c.kind }

// classified is one error of a category: its message is its own, and
// errors.Is finds both the category and whatever the message wraps.
type classified struct {
	cat error
	err error
}

func (e *classified) Error() string   { return e.err.Error() }
func (e *classified) Unwrap() []error { return []error{e.cat, e.err} }

func errorf(cat error, format string, args ...any) error {
	return &classified{cat: cat, err: fmt.Errorf(format, args...)}
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
	return &classified{cat: cat, err: &joined{msg: what + ": " + strings.Join(all, "; "), errs: p.wrapped}}
}

// joined is a message with the errors it was made of, for errors.Is.
type joined struct {
	msg  string
	errs []error
}

func (j *joined) Error() string   { return j.msg }
func (j *joined) Unwrap() []error { return j.errs }
