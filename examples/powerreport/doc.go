// Command powerreport runs a simulated rig of 8 A40s through a day of
// mixed work in accelerated time, on a clock it drives, and reports what
// each joule cost and earned:
//
//   - miners fill every GPU from midnight;
//   - at 02:00 tenant acme rents 4 GPUs for a preemptible fine-tune at
//     1.10 per GPU-hour;
//   - at 09:00 tenant beta needs 6 GPUs at once at 2.40 per GPU-hour: the
//     miners yield and acme is preempted; at 13:00 beta is done and acme
//     resumes;
//   - from 17:00 to 21:00 the site caps the GPUs at 1500 W for the evening
//     peak (mining is shed first);
//   - at 22:00 acme is done and miners take its GPUs.
//
// The workload manager runs each workload as a sleeping process (the
// process runtime; the simulator supplies the power), the meter samples
// every GPU each second and at every handover, attributes each interval
// to the workload that held the GPU or to idle, prices it with a
// time-of-use tariff (cheap nights, a dear evening peak) times a PUE and
// a wall-meter factor, and appends the records to a bbolt ledger. The
// report gives energy, cost, revenue and margin per tenant and per kind,
// and the margin per GPU-hour of renting against mining.
//
//	go run ./examples/powerreport                  # the tables, in about 3 s
//	go run ./examples/powerreport -csv day.csv     # and the ledger's records as CSV (-json likewise)
//	go run ./examples/powerreport -svg day.svg     # and a picture of the day
//
// On a real node the same parts run on the wall clock, with Meter.Run
// taking the samples:
//
//	go meter.Run(ctx, time.Second)
package main
