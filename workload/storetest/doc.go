// Package storetest is the conformance suite every workload.Store passes.
//
// A store backs the node manager's durable state: if it loses a field, a
// queued workload comes back wrong after a restart. Run checks the whole
// contract of workload.Store (round trips of every field, replace, delete,
// copies, cancellation, Close, concurrency, volume) and, when the Harness can
// reopen the store, durability across a reopen. A control plane that brings
// its own Store runs it from a test:
//
//	func TestStore(t *testing.T) {
//		storetest.Run(t, storetest.Harness{
//			Open: func(t *testing.T) workload.Store { return mystore.New(t.TempDir()) },
//		})
//	}
package storetest
