// Package bolt is an accounting.Ledger in an embedded bbolt file
// (go.etcd.io/bbolt): the durable record of every joule of one node.
//
// # Group commit
//
// Appends do not each pay an fsync: a committer goroutine writes every
// Append waiting in one transaction, then the next batch, so many
// appends share one fsync. An Append returns nil only once its records
// are on disk. WithGroupCommit(false) makes each Append its own
// transaction; BenchmarkAppend compares the two in one run.
//
// # Layout
//
// Records are kept by sequence number in a compact binary form, with
// indexes by start time and GPU (to recognise a record delivered again),
// by end time (time range queries) and by workload; a "meta" bucket holds
// the schema version, the last sequence number and the outbox's
// acknowledged one. Open refuses a file of another schema or a bbolt file
// of something else. bbolt locks the file: while a Ledger has it open,
// another Open waits WithTimeout and then fails with an error wrapping
// gpu.ErrBusy.
//
// # Crashes
//
// A transaction is all or nothing, so a crash loses no appended record
// and leaves none half-written; a writer that delivers again from before
// where the ledger's records end (a meter after a restart does) is
// recognised record by record. TestCrashLosesNoAcknowledgedRecordAndDoublesNone
// kills a writer process with SIGKILL mid-stream to show it.
package bolt
