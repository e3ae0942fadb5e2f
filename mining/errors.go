package mining

import "errors"

// Error categories. Every error of this package wraps one of them (with %w),
// so callers match the category with errors.Is.
var (
	// ErrInvalid: bad input. At construction the message names the field
	// (Launch.Wallet, Profile.PowerLimitW, ...).
	ErrInvalid = errors.New("mining: invalid argument")
	// ErrUnavailable: the miner's API cannot be reached: connection
	// refused, closed early, or no answer within the timeout (a hung API).
	ErrUnavailable = errors.New("mining: miner API unavailable")
	// ErrMalformed: the miner answered, but not with a reply the adapter
	// can read: garbage, an HTML page, a truncated or oversized body, NaN
	// or a negative count.
	ErrMalformed = errors.New("mining: malformed miner reply")
	// ErrRefused: the miner answered with an error: an HTTP status other
	// than 200 (401 and 403 for a wrong API token), or a JSON-RPC error.
	ErrRefused = errors.New("mining: miner refused the request")
)
