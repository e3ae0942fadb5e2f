// Package sim is a simulated GPU fleet: a pure-Go gpu.Backend that behaves
// like the rigs ex-mining farms run, so examples, demos and every test above
// the gpu package work without a GPU.
//
// # Presets
//
// Presets are real fleets built from real cards: "rtx3080-riser" (8x RTX
// 3080 on gen1 x1 risers, no energy counter), "rtx3090" (6x RTX 3090, gen3
// x16), "a40" (8x A40, ECC), "cmp170hx" (8x CMP 170HX, gen1 x4, locked
// 250 W), "a100" (a DGX A100 with MIG) and "mixed". Memory, power limits,
// idle draw, clocks, VBIOS and link behaviour come from the nvidia-smi
// dumps in the project's fixtures (each model constructor says which).
// Custom rigs are a Preset with any Cards, usually changed copies of RTX3080,
// A40 and friends. UUIDs, serials and bus ids are derived from the preset
// name and index, so they are stable from run to run.
//
// # Load model
//
// Workloads declare their load with Rig.SetLoad; every number follows from
// it and from time, read from a gpu.Clock (WithClock(NewClock(t)) drives it
// by hand):
//
//   - Power = idle + Util*(full-idle)*(f/boost)², where f is the SM clock the
//     card aims for: its boost clock, or that clamped into a locked range.
//     Above the power limit it is clipped to the limit (the SW power cap
//     clock-event reason is then set) and the SM clock drops to what fits.
//     Power is held in whole milliwatts, constant between changes.
//   - The energy counter integrates that power exactly: milliwatts times
//     nanoseconds with the sub-millijoule remainder carried, so 300 W for
//     10 s is 3,000,000 mJ to the millijoule, however often it is sampled.
//   - Temperature lags toward ambient + k*power (the line through the card's
//     idle and full-load temperatures) with the card's thermal time
//     constant, in closed form; the fan follows the temperature.
//   - Utilization, memory used and memory-bus load are what the load says;
//     the SM and memory clocks drop to idle values and the idle clock-event
//     reason is set when Util is 0; the PCIe link trains to its best width
//     and generation when busy and drops to gen 1 at idle on boards with
//     link power saving; PCIe throughput is what the load asks, capped by
//     the link.
//
// Not modelled: thermal throttling, power averaging windows, memory clock
// locks, per-process utilization.
//
// # Faults
//
// InjectXID emits an Xid event (79 also loses the device, so its calls
// fail with gpu.ErrDeviceLost), Hang makes calls block until their context
// ends, FailNext fails the next calls with a given error, BreakEvents
// breaks the event stream, and Reset brings a device back. Faults affect
// the Backend calls only; SetLoad, the physical world, always works.
package sim
