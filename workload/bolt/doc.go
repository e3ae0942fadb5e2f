// Package bolt is a workload.Store in an embedded bbolt file
// (go.etcd.io/bbolt), the durable state of one node's manager: the queue of
// pending work and what became of each workload survive a restart or a
// crash.
//
// Each record is JSON in the "workloads" bucket, keyed by workload ID, so the
// file can be read with bbolt's own tools. A "meta" bucket carries the
// schema version; Open refuses a file of a version it does not know rather
// than guess. Every Put and Delete is one transaction, fsynced on commit:
// when it returns nil the change is on disk. That costs an fsync per call
// (see BenchmarkPut), which is fine for the manager's rate of state changes.
//
// bbolt locks the file: while a Store has it open, another Open of it, from
// this process or another, waits WithTimeout and then fails with an error
// wrapping gpu.ErrBusy.
package bolt
