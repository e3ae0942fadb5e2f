package gpu

// Optional holds a value a device may not report. Valid is false when the
// device does not support the reading, so "absent" never reads as zero: a
// consumer card without an energy counter is not a card that used 0 J.
//
// It is a value type on purpose: samples of a whole rig are taken many times
// a second and must not allocate.
type Optional[T any] struct {
	Value T
	Valid bool
}

// Some returns a present value.
func Some[T any](v T) Optional[T] { return Optional[T]{Value: v, Valid: true} }

// Or returns the value when present and def otherwise.
func (o Optional[T]) Or(def T) T {
	if o.Valid {
		return o.Value
	}
	return def
}
