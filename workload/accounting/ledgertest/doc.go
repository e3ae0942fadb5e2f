// Package ledgertest is the conformance suite of accounting.Ledger; see
// Test. Stream makes the records it appends, for other tests too.
package ledgertest
