// Package client calls a node agent's HTTP API (package agent) in typed
// Go, with the wire types of package agent/api: a control plane written
// in Go submits, lists, cordons, curtails and reads the ledger through
// it, and follows the event stream with Watch, which reconnects and
// resumes where it was when the agent restarts.
//
// Errors the agent answers are *Error values, matched by category with
// errors.Is (ErrNotFound, ErrDenied, ...).
package client
