// Package accounting books every joule a node's GPUs draw to the workload
// that held them, prices it, sets the revenue beside it, and keeps the
// result as durable records, so that margins per workload, tenant, kind
// and GPU-hour are facts.
//
// # Meter
//
// A Meter turns gpu.Manager samples into Records. It calls no device
// itself: it is fed the samples a caller already has (Observe), or owns
// the node's one sampling loop (Run every second, or Poll on a driven
// clock) and hands the same samples on (Latest) to the metrics collector
// of package metrics. Energy is the difference of the NVML energy counter
// where the GPU has one, and trapezoids of its power, carried to the
// millijoule, where it has not (an RTX 3080 on a riser). A counter that
// goes backwards (a driver reload) is detected and that interval
// integrated instead; samples further apart than WithMaxSampleGap leave a
// gap, booked as KindGap and never to anyone.
//
// Each interval goes to the workload attempt that held the GPU, read from
// the allocation timeline (*workload.Manager's Allocations, exact at
// handovers), or to KindIdle. Run takes a sample at once when work starts
// or ends, so handovers fall on samples; one that falls inside an interval
// shares it by the power before and after (FlagSplit).
//
// # Records and the invariant
//
// Records never cross a record window (a minute by default,
// WithRecordInterval) or a change of holder, and each GPU's records follow
// on without holes. Energy is shared out in whole millijoules by largest
// remainder, so for every GPU and every interval, attributed plus idle
// (plus gap) energy equals the metered energy exactly. FacilityEnergyMJ is
// that energy times the wall-meter factor (WithWallFactor, see WallFactor)
// and the PUE (WithPUE): what the site drew for it. Flags say how each
// number was obtained and what is missing.
//
// # Tariffs and revenue
//
// A Tariff prices facility energy: Flat, TimeOfUse (weekday and hour bands
// in a time zone, holidays as dates; bands that overlap or leave hours
// uncovered are refused) or a PriceSeries (for example a market's
// 15-minute prices from CSV, ReadPriceCSV; holes are refused). Cost splits
// an interval at every change of price. Rental revenue is the workload's
// price per GPU-hour times the time it held the GPU; mining revenue comes
// from a MiningRevenue source (the mining package's stats and coin
// economics).
//
// # Ledger
//
// A Ledger keeps records durably: append-only, numbered in order,
// idempotent when the same records are delivered again after a crash, with
// queries by tenant, workload, kind, GPU and time, and an outbox a control
// plane drains with acknowledgements. Package bolt is the one for a node
// (a bbolt file with group commit); NewMemoryLedger is for tests and
// demos; package ledgertest is the conformance suite. A Meter made over a
// ledger carries on where its records end, booking the time it was down
// as a gap.
//
// # Reports
//
// Summarize adds records up per workload, tenant, kind or GPU, over
// whatever a Query selects: energy, cost, revenue, margin and margin per
// GPU-hour. WriteCSV and WriteJSON export records with the same columns.
//
// # Errors
//
// Errors are of a few categories matched with errors.Is: ErrInvalid (bad
// input or options, every problem named), ErrNotFound (an unknown GPU),
// ErrNoPrice, ErrConflict, ErrLedger and ErrClosed; each also matches the
// gpu category of the same meaning.
//
// # Concurrency
//
// Meters, ledgers and tariffs are safe for concurrent use. Run's goroutine
// is the caller's; it ends with its context. Close is idempotent.
package accounting
