package main

import (
	"context"
	"os"
)

// The normalised stats of a ZCash reply of Claymore's miner: the rate
// stays in Sol/s, the uptime was reported in minutes.
func Example_run() {
	run(context.Background(), os.Stdout, os.Stderr, []string{"-miner", "claymore",
		"-file", "../../mining/testdata/miners/claymore-phoenix/getstat1_claymore-zcash-12.6_1gpu_zec_SOLS-units_psw.json"})
	// Output:
	// {
	//   "endpoint": "miner_getstat1",
	//   "stats": {
	//     "miner": "claymore",
	//     "version": "12.6",
	//     "algorithm": "equihash",
	//     "pool": "zec-eu1.nanopool.org:6633",
	//     "unit": "Sol/s",
	//     "rate": 128,
	//     "shares": {
	//       "accepted": 0,
	//       "rejected": 0,
	//       "invalid": 0
	//     },
	//     "uptime_s": 0,
	//     "gpus": [
	//       {
	//         "index": 0,
	//         "rate": 128,
	//         "shares": {},
	//         "temperature_c": 60,
	//         "fan_pct": 33
	//       }
	//     ]
	//   }
	// }
}
