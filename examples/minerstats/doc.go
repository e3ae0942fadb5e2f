// Command minerstats reads a miner's API reply and prints the stats the
// SDK makes of it, as JSON: total and per-GPU rate, shares, power,
// temperatures, fans, uptime, algorithm, pool and each GPU's PCI bus id.
// Operators use it to check an adapter against their own miner.
//
// From a file, a reply saved with curl or nc (-endpoint names the API call
// it answers, for miners that have several; it is told from the reply when
// omitted):
//
//	go run ./examples/minerstats -miner trex -file summary.json
//	go run ./examples/minerstats -miner xmrig -file backends.json -endpoint 2/backends
//
// From a live miner (the scheme is optional; the adapter knows whether
// its miner speaks HTTP or TCP):
//
//	go run ./examples/minerstats -miner claymore -url 127.0.0.1:3333 -token s3cret
//
// MINER is one of trex, lolminer, xmrig, gminer, nbminer, teamredminer,
// rigel, srbminer, bzminer, claymore, phoenixminer, ethminer, excavator. A
// reply it cannot read exits 1 with the error; bad flags exit 2.
package main
