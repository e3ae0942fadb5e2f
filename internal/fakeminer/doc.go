// Command fakeminer is a fake GPU miner for tests: it serves the monitoring
// APIs of T-Rex and XMRig with numbers that follow a settable hashrate, so
// the mining adapters and the watchdog can be tested without GPUs or pools.
//
// Endpoints (one listener, -listen, default ":4067" like T-Rex):
//
//	GET      /summary                 T-Rex API 4.1 summary (hashrate, hashrate_minute,
//	                                  accepted_count, rejected_count, gpus[] with
//	                                  hashrate, power, temperature, name, uuid, shares ...)
//	GET      /2/summary               XMRig summary (hashrate.total = [10s, 60s, 15m],
//	                                  results.shares_good, results.shares_total ...)
//	GET      /control/hashrate        {"hashrate": <H/s>}
//	POST|PUT /control/hashrate?value= set the total hashrate in H/s from now on
//
// Numbers are integrals of the hashrate over time: accepted shares are
// floor(hashes since start / -difficulty), less every -reject-every'th share;
// the total is split evenly over -gpus GPUs. By default the averaging windows
// are full from the start (as if the miner had run at -hashrate for a day);
// -warmup emulates a fresh miner instead (XMRig windows null, T-Rex
// hour/day 0 until filled).
//
// It prints "fakeminer: <name> <algo> listening on <addr>" once serving (use
// -listen 127.0.0.1:0 and read the port there), one stats line per
// -log-interval, and exits 0 promptly on SIGTERM or SIGINT after a graceful
// HTTP shutdown. It reads flags only, never the environment.
package main
