// Package mining keeps idle GPUs earning: it launches and reads the miner
// programs GPU farms run, restarts the ones that break, mines what pays
// most, tunes each GPU while it mines, and tells the workload manager
// what a mining GPU earns, so that a rental offer is weighed against it.
//
// # Adapters
//
// An Adapter knows one miner program: the command line that starts it in a
// container of its own GPUs (GPU selection by the order CDI gives them,
// pool, wallet and worker, algorithm, its API bound to 127.0.0.1 on a
// chosen port with its token) and the API calls that read it. Adapters
// returns the SDK's: T-Rex, lolMiner, XMRig, GMiner, NBMiner,
// TeamRedMiner, Rigel, SRBMiner-MULTI, BzMiner, Claymore, PhoenixMiner,
// ethminer and NiceHash Excavator. Every adapter normalises its miner's
// reply to one Stats value: total and per-GPU rate (H/s, or Sol/s and G/s
// for the algorithms that count solutions or graphs, see Unit), shares,
// per-GPU power, temperatures and fans, uptime, algorithm and pool, and
// each GPU's PCI bus id in gpu.NormalizePCIBusID's form and UUID in
// NVIDIA's, so the stats join to gpu.Device. Readings a miner does not
// report stay invalid (gpu.Optional), never 0.
//
// Replies are parsed by a pull scanner that keeps only the fields it needs:
// numbers are taken as numbers or strings, NaN, infinities and negative
// counts are refused, and the only allocations are the result's strings.
//
// # Clients
//
// A Client polls one miner over HTTP or TCP within a timeout and a size
// cap. A miner that hangs, answers garbage, an HTML page, a truncated or
// oversized body is a typed error (ErrUnavailable, ErrMalformed,
// ErrRefused); the Reading turns unhealthy and keeps the last good stats
// with their age.
//
// # Filler
//
// A Filler is the workload manager's workload.Filler: for each idle GPU it
// builds the spec of the most profitable configured Miner (host network,
// the mining tenant), and its Run watches the miners it started: it polls
// them, reports each GPU's hashrate to the manager (Manager.ReportProgress),
// makes a simulated GPU's load follow the hashrate (Load), restarts broken
// miners through the manager (the Watchdog: a rate under a floor or under a
// share of its running median, a GPU missing from the stats, an API that
// stays down; restarts back off), replaces a miner when another
// configuration beats it by a margin for a number of price readings
// (Switcher), and applies a tuning Profile to a miner's GPU, removing it
// when the miner stops. Give the Filler to the manager as its StartHook too
// (workload.WithStartHook): the tune then goes on after the handover
// hygiene and before the miner starts, so no other workload can start
// under it. Each decision is an Event with its reason, and is logged.
//
// # Profitability
//
// A CoinSource (WhatToMine's JSON from a file or a URL, or StaticMarket)
// gives each coin's block reward, difficulty and price; revenue per day is
// rate x 86400 x block reward / (difficulty x 2^32 for SHA-256 and Scrypt
// coins, difficulty otherwise) x price, less the pool fee, and profit per
// GPU-hour takes off the measured power at the tariff. The Filler's Policy
// is the manager's economic workload.Policy: paid work takes a mining GPU
// only when its price beats what the GPU earns mining by a margin, and it
// says why when it does not.
//
// # Errors
//
// Errors wrap one of ErrInvalid (bad input; at construction the message
// names the field), ErrUnavailable, ErrMalformed and ErrRefused; match them
// with errors.Is.
//
// # Concurrency
//
// Adapters are stateless. Clients, Fillers, Watchdogs, Switchers, Tuners
// and WhatToMine sources are safe for concurrent use. Filler.Run owns its
// goroutines and stops them with its context; a Filler never holds its
// lock while it calls the workload manager.
package mining
