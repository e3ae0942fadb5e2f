// Command switcher plays a day of profit switching on a simulated mining
// rig: at every 15-minute step each GPU mines the coin that pays best,
// rents itself to an AI customer, or stands idle, and the SDK's
// mining.Switcher keeps it from flapping. It prints each decision, why it
// was taken (every choice's profit per hour, net of power), and what it
// made against staying put, then the day under three strategies.
//
// The day is made of real starting points that move:
//
//   - coins: WhatToMine's coins.json of 19 February 2020 (Ethereum and
//     Ethereum Classic, both Ethash), read with mining.ParseWhatToMine;
//     from there each coin's BTC price walks, and its difficulty follows
//     the price as miners move their hashrate, from a seed (-seed);
//   - each GPU's rate and draw: lolMiner's reply on an RTX 3080, 91.55
//     MH/s at 220 W, which the SDK's revenue formula (Coin.RevenuePerDay)
//     turns into dollars;
//   - power: a time-of-use tariff (cheap nights, a dear 17:00-21:00 peak);
//   - an AI customer, acme, who wants some of the GPUs at some hours for a
//     price per GPU-hour that moves a little from step to step.
//
// A switch costs time: a miner builds its DAG for a minute, a rental
// waits five minutes for the handover and the customer's container.
// The Switcher wants the new choice to net 5 % more for 3 steps in a row
// (-gain, -ticks), so a price that flickers does not restart miners.
//
// Each strategy runs on its own simulated rig (gpu/sim) on a clock the
// program drives: the chosen work sets the simulated GPUs' load and
// mining power limit (mining.Tuner), and the SDK's accounting.Meter
// samples them every 30 s, books each GPU's energy to the work that held
// it, prices it with the tariff and adds the revenue. Every number of
// money the program prints comes from those ledgers: a decision's "made"
// is its GPUs' margin until their next decision, and its gain is that
// less what the same GPUs made then when they always mined the first
// coin, so the gains add up to the difference of the two days.
//
//	go run ./examples/switcher                    # 8x RTX 3080 on risers, the whole day
//	go run ./examples/switcher -preset rtx3090    # 6x RTX 3090, which rent for more
//	go run ./examples/switcher -seed 3 -v         # another day, with every step of GPU 0
//	go run ./examples/switcher -gain 0 -ticks 1   # no hysteresis: watch it flap
//	go run ./examples/switcher -csv day.csv       # every step's prices and choices
//	go run ./examples/switcher -coins coins.json  # start from today's WhatToMine reply
package main
