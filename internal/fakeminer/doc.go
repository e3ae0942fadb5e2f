// Command fakeminer is a fake GPU miner for tests: it serves the monitoring
// API of any miner the mining package has an adapter for, with numbers
// that follow a settable hashrate, so the adapters, the watchdog and the
// mining filler can be tested without GPUs or pools.
//
// Without -api it serves T-Rex's GET /summary and XMRig's GET /2/summary
// on -listen (default ":4067", T-Rex's port). With -api NAME it is that
// miner: the arguments after "--" are the real miner's command line, from
// which it takes its API address (--api-bind-http for T-Rex, --apiport for
// lolMiner, -mport for Claymore, ...), its API token and its algorithm,
// so the arguments an adapter writes are what start it:
//
//	fakeminer -api trex -gpus 1 -- -a ethash -o stratum+tcp://pool:4444 ... --api-bind-http 127.0.0.1:4100
//
// NAME is one of trex, lolminer, xmrig, gminer, nbminer, teamredminer,
// rigel, srbminer, bzminer, claymore, phoenixminer, ethminer, excavator.
// The HTTP miners answer at their real paths; TeamRedMiner's sgminer API,
// the Claymore family's JSON-RPC and Excavator's API are TCP on the same
// port. Replies other than T-Rex's and XMRig's summary are real replies
// (testdata, provenance in testdata/SOURCES.txt) with the fake's numbers
// put in and their GPU entries copied once per GPU.
//
// The control endpoint, HTTP on the same port:
//
//	GET      /control/hashrate          {"hashrate": <H/s>}
//	POST|PUT /control/hashrate?value=   set the total hashrate in H/s from now on
//	POST|PUT /control/fault?mode=       break the miner's API: hang, garbage, html
//	                                    (a 500 page), truncate, huge (10 MB),
//	                                    close; none mends it
//	POST|PUT /control/gpus?value=       list only the first N GPUs (0 or more) in the stats,
//	                                    as if the others had fallen off the bus
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
