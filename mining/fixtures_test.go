package mining

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
)

// The values below were read off each file by hand (testdata/miners is a
// copy of the shared fixtures; SOURCES.txt says where each came from).
// Rates are the miner's number times its unit: T-Rex H/s as is, lolMiner
// v1 "mh/s" times 1e6, Claymore's Ethash kH/s times 1000, TeamRedMiner's
// "KHS 30s" times 1000.

func f(v float64) gpu.Optional[float64] { return gpu.Some(v) }
func n(v int64) gpu.Optional[int64]     { return gpu.Some(v) }
func dur(s string) gpu.Optional[time.Duration] {
	d, err := time.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return gpu.Some(d)
}

var noF gpu.Optional[float64]
var noN gpu.Optional[int64]

type gpuWant struct {
	pos             int // position in Stats.GPUs
	index           int
	bus, uuid, name string
	rate            gpu.Optional[float64]
	acc, rej        gpu.Optional[int64]
	powerW, tempC   gpu.Optional[float64]
	memTempC, fan   gpu.Optional[float64]
}

type fixture struct {
	file, miner, endpoint     string
	version, algo, pool, user string
	unit                      Unit
	rate                      gpu.Optional[float64]
	acc, rej, stale, inv      gpu.Optional[int64]
	uptime                    gpu.Optional[time.Duration]
	powerW                    gpu.Optional[float64]
	started                   int64 // Unix seconds, 0 for none
	gpus                      int
	want                      []gpuWant
}

var fixtures = []fixture{
	// T-Rex.
	{file: "t-rex/summary_0.26.4_api4.1_5gpu_kawpow_win.json", miner: "trex", endpoint: "summary",
		version: "0.26.4", algo: "kawpow", unit: UnitHashes, rate: f(158355093),
		acc: n(77), rej: n(0), inv: n(0), uptime: dur("2624s"), gpus: 5, want: []gpuWant{
			{pos: 0, index: 0, bus: "0000:03:00.0", uuid: "GPU-4843116e-4b09-1737-da0a-838f72905ea4", name: "RTX 2080 Ti",
				rate: f(30436177), acc: n(17), rej: n(0), powerW: f(174), tempC: f(75), memTempC: f(91), fan: f(100)},
			{pos: 1, index: 1, bus: "0000:09:00.0", uuid: "GPU-929d0b6b-0dce-4f01-feaa-f2bcff69975d", name: "RTX 3070",
				rate: f(29370868), acc: n(13), rej: n(0), powerW: f(188), tempC: f(70), memTempC: noF, fan: f(100)},
			{pos: 4, index: 4, bus: "0000:2b:00.0", uuid: "GPU-f7456b57-ce42-bef1-4331-5b2e6c80080e", name: "RTX 3080",
				rate: f(39943145), acc: n(16), rej: n(0), powerW: f(255), tempC: f(71), memTempC: f(90), fan: f(99)},
		}},
	{file: "t-rex/summary_0.25.12_api4.1_5gpu_ethash_win.json", miner: "trex", endpoint: "summary",
		version: "0.25.12", algo: "ethash", unit: UnitHashes, rate: f(340962807),
		acc: n(6903), rej: n(0), inv: n(0), uptime: dur("82802s"), gpus: 5, want: []gpuWant{
			{pos: 0, index: 0, bus: "0000:03:00.0", uuid: "GPU-4843116e-4b09-1737-da0a-838f72905ea4", name: "RTX 2080 Ti",
				rate: f(61350365), acc: n(1262), rej: n(0), powerW: noF, tempC: f(73), memTempC: f(90), fan: f(100)},
		}},
	{file: "t-rex/summary_0.25.2_api4.1_1gpu_ethash_lhr_win.json", miner: "trex", endpoint: "summary",
		version: "0.25.2", algo: "ethash", pool: "stratum+ssl://eth-hke.flexpool.io:5555",
		user: "0x84373da8812ca3a629C9cc7bda6025D115d8e642.3070Ti", unit: UnitHashes, rate: f(63829882),
		acc: n(583), rej: n(0), inv: n(0), uptime: dur("36267s"), gpus: 1, want: []gpuWant{
			// pci_bus 0, pci_id 5: taken as the miner reports it.
			{pos: 0, index: 0, bus: "0000:00:05.0", uuid: "GPU-e55df3cc-1a55-7057-f241-3a75f705a9a4", name: "RTX 3070 Ti",
				rate: f(63829882), acc: n(583), rej: n(0), powerW: f(202), tempC: f(44), memTempC: f(82), fan: f(75)},
		}},
	{file: "t-rex/summary_0.25.9_api4.1_1gpu_ethash_linux.json", miner: "trex", endpoint: "summary",
		version: "0.25.9", algo: "ethash", pool: "stratum+tcp://us1.ethermine.org:4444",
		user: "0x4EEB2D6Ec9cd842a13ab24c013b7a7A66F6AC2B4", unit: UnitHashes, rate: f(50287688),
		acc: n(1), rej: n(0), inv: n(0), uptime: dur("116s"), gpus: 1, want: []gpuWant{
			{pos: 0, index: 0, bus: "0000:0a:00.0", uuid: "GPU-3e95c8eb-ee1c-a0d4-90c7-a000a27f4c55", name: "RTX 3070",
				rate: f(50287688), acc: n(1), rej: n(0), powerW: f(195), tempC: f(74), fan: f(68)},
		}},
	{file: "t-rex/summary_0.24.6_api4.1_1gpu-laptop_ethash_benchmark_win.json", miner: "trex", endpoint: "summary",
		version: "0.24.6", algo: "ethash", pool: "n1.mining-proxy.imapp.pl:8069",
		// active_pool.user and .worker, joined by a dot.
		user: "0xd593411f3e6e79995e787b5f81d10e12fa6ecf04.benchmark:0x0/:0xd593411f3e6e79995e787b5f81d10e12fa6ecf04/0",
		unit: UnitHashes, rate: f(0),
		acc: n(0), rej: n(0), inv: n(0), uptime: dur("9s"), gpus: 1, want: []gpuWant{
			{pos: 0, index: 0, bus: "0000:01:00.0", uuid: "GPU-3f3d0998-64eb-7655-03fa-d52aae16543e", name: "RTX 3060 Laptop GPU",
				rate: f(0), acc: n(0), rej: n(0), powerW: f(89), tempC: f(63), fan: noF},
		}},
	{file: "t-rex/summary_0.19.5_api3.3_1gpu_ethash_linux.json", miner: "trex", endpoint: "summary",
		version: "0.19.5", algo: "ethash", pool: "stratum+ssl://eu1.ethermine.org:5555",
		user: "0x0000000000000000000000000000000000000000", unit: UnitHashes, rate: f(91189394),
		acc: n(2), rej: n(3), inv: noN, uptime: dur("76s"), gpus: 1, want: []gpuWant{
			// The UUID ends in a NUL in this version; stat_by_gpu holds the shares.
			{pos: 0, index: 0, uuid: "GPU-01c83c6f-c061-af84-7cd8-4920f291a37a", name: "RTX 3080",
				rate: f(91189394), acc: n(2), rej: n(0), powerW: f(237), tempC: f(65), fan: f(54)},
		}},
	{file: "t-rex/telnet4058_summary_0.19.1_api3.2_8gpu_ethash_linux.json", miner: "trex", endpoint: "summary",
		version: "0.19.1", algo: "ethash", pool: "stratum+tcp://naw-eth.hiveon.net:4444", user: "0x",
		unit: UnitHashes, rate: f(232615880), acc: n(331), rej: n(0), uptime: dur("3656s"), gpus: 8, want: []gpuWant{
			{pos: 0, index: 0, name: "GTX 1070 Ti", rate: f(29161504), acc: n(35), rej: n(0), powerW: f(109), tempC: f(67), fan: f(49)},
			{pos: 7, index: 7, name: "GTX 1070 Ti", rate: f(29191997), acc: n(62), rej: n(0), powerW: f(108), tempC: f(68), fan: f(50)},
		}},
	{file: "t-rex/telnet4068_summary_json_0.14.6_api3.1_1gpu_x16rv2_win.json", miner: "trex", endpoint: "summary",
		version: "0.14.6", algo: "x16rv2", pool: "stratum+tcp://rvn.2miners.com:6060",
		user: "RBX1G6nYDMHVtyaZiQWySMZw1Bb2DEDpT8.rig0", unit: UnitHashes, rate: f(6488370),
		acc: n(0), rej: n(0), uptime: dur("3s"), gpus: 1, want: []gpuWant{
			{pos: 0, index: 0, name: "GeForce GTX 1050 Ti", rate: f(6488370), acc: noN, tempC: f(53)},
		}},
	{file: "t-rex/telnet4068_summary_ccminer-text_0.9.2.txt", miner: "trex", endpoint: "summary",
		version: "0.9.2", algo: "x16r", unit: UnitHashes, rate: f(5798280), acc: n(5), rej: n(0), uptime: dur("45s")},
	{file: "t-rex/summary_0.13.2_api3.1_2gpu_x16s_empty-names_win.json", miner: "trex", endpoint: "summary",
		version: "0.13.2", algo: "x16s", pool: "stratum+tcp://x16s.na.mine.zpool.ca:3663", user: "xxxx",
		unit: UnitHashes, rate: f(46155255), acc: n(126), rej: n(0), uptime: dur("870s"), gpus: 2, want: []gpuWant{
			{pos: 1, index: 1, name: "", rate: f(23387488)},
		}},
	{file: "t-rex/summary_0.9.1_api3.0_1gpu_x16r_win.json", miner: "trex", endpoint: "summary",
		version: "0.9.1", algo: "x16r", pool: "stratum+tcp://pool.minermore.com:4501", user: "1MKrTujwHxda6knL8hHrPMi7Git4upX56E",
		unit: UnitHashes, rate: f(7748158), acc: n(1), rej: n(0), uptime: dur("56s"), gpus: 1, want: []gpuWant{
			{pos: 0, name: "GeForce GTX 1050 Ti", rate: f(7748158), tempC: f(68)},
		}},
	{file: "t-rex/summary_0.6.3_api1.1_8gpu_x16r_win.json", miner: "trex", endpoint: "summary",
		version: "0.6.3", algo: "x16r", pool: "stratum+tcp://us.ravenminer.com:4567", user: "xxxx",
		unit: UnitHashes, rate: f(150645350), acc: n(10), rej: n(0), uptime: dur("31s"), gpus: 8, want: []gpuWant{
			{pos: 0, name: "GeForce GTX 1070 Ti", rate: f(19101584), powerW: f(193), tempC: f(57), fan: f(56)},
			{pos: 7, index: 7, rate: f(18234722)},
		}},
	{file: "t-rex/summary_0.5.6_api1.0_8gpu_lyra2z_win.json", miner: "trex", endpoint: "summary",
		version: "0.5.6", algo: "lyra2z", pool: "stratum+tcp://blockmasters.co:4553", user: "DMbUXFZfpHpzEGjHMfJivjgNXswmrsdaqB",
		unit: UnitHashes, rate: f(24300920), acc: n(44), rej: n(0), uptime: dur("290s"), gpus: 8, want: []gpuWant{
			{pos: 7, index: 7, rate: f(2966131)},
		}},

	// lolMiner.
	{file: "lolminer/summary_1.92_1gpu_nexapow_v2-schema.json", miner: "lolminer", endpoint: "summary",
		version: "1.92", algo: "NexaPoW", pool: "nexa.f2pool.com:3400", user: "cryptobro23.default",
		unit: UnitHashes, rate: f(5.6549161744285845e6), acc: n(68), rej: n(0), stale: n(0), inv: n(0),
		uptime: dur("3710s"), started: 1734487547, gpus: 1, want: []gpuWant{
			{pos: 0, index: 0, bus: "0000:0b:00.0", name: "NVIDIA GeForce GTX 1060 3GB", rate: f(5.65e6), acc: n(68), rej: n(0),
				powerW: f(86.118), tempC: f(65), memTempC: noF, fan: f(38)},
		}},
	{file: "lolminer/summary_1.48_v2-schema_1gpu_ethash_rtx3080.json", miner: "lolminer", endpoint: "summary",
		version: "1.48", algo: "Ethash", pool: "ethash.unmineable.com:3333",
		user: "ETH:0xe141167eb550b999cb59f9ac202d2dfdd240a4a0.default#a83j-r7ty",
		unit: UnitHashes, rate: f(82.873358077730046e6), acc: n(1), rej: n(0), stale: n(0), inv: n(0),
		uptime: dur("60s"), started: 1649998396, gpus: 1, want: []gpuWant{
			{pos: 0, index: 0, bus: "0000:02:00.0", name: "NVIDIA GeForce RTX 3080", rate: f(82.87e6), acc: n(1), rej: n(0),
				powerW: f(195.141), tempC: f(53), memTempC: f(84), fan: f(70)},
		}},
	{file: "lolminer/summary_1.48_v2-schema_MOCK-EDITED_4gpu_ethash.json", miner: "lolminer", endpoint: "summary",
		version: "1.48", algo: "Ethash", pool: "eth-sg.flexpool.io:5555", user: "0x0A648730D8E975987D962DBe600C204B228D1026.RIG-A-AMD",
		unit: UnitHashes, rate: f(113.0692608e6), acc: n(1234), rej: n(0), stale: n(0), inv: n(0),
		uptime: dur("43001s"), started: 1659744528, gpus: 4, want: []gpuWant{
			{pos: 3, index: 3, bus: "0000:08:00.0", name: "Radeon RX 580 Series", rate: f(26.9e6), acc: n(304), rej: n(0),
				powerW: f(124.074), tempC: f(74), fan: f(75)},
		}},
	{file: "lolminer/summary_1.26_1gpu_ethash_rtx3080.json", miner: "lolminer", endpoint: "summary",
		version: "1.26", algo: "Ethash", pool: "eu1.ethermine.org:5555", user: "0xF6403152cAd46F2224046C9B9F523d690E41Bffd.worker-1",
		unit: UnitHashes, rate: f(91.55e6), acc: n(35), rej: n(0), uptime: dur("1560s"), powerW: f(219.857),
		started: 1619124576, gpus: 1, want: []gpuWant{
			{pos: 0, index: 0, bus: "0000:01:00.0", name: "NVIDIA GeForce RTX 3080", rate: f(91.55e6), acc: n(35), rej: n(0),
				powerW: f(219.857), tempC: f(47), memTempC: noF, fan: f(88)},
		}},
	{file: "lolminer/summary_1.16a_4gpu_ethash.json", miner: "lolminer", endpoint: "summary",
		version: "1.16a", algo: "Ethash", pool: "eth.2miners.com:2020", user: "0x155da78b788ab54bea1340c10a5422a8ae88142f.lolMinerWorker",
		unit: UnitHashes, rate: f(302.40e6), acc: n(3), rej: n(0), uptime: dur("90s"), powerW: f(659.45099999999991),
		started: 1606949972, gpus: 4, want: []gpuWant{
			// PCIE_Address is decimal: "16:0" is bus 0x10.
			{pos: 1, index: 1, bus: "0000:10:00.0", name: "AMD Radeon VII", rate: f(74.51e6), acc: n(0), rej: n(0),
				powerW: f(163.95599999999999), tempC: f(65), memTempC: f(76), fan: noF},
			{pos: 3, index: 3, bus: "0000:16:00.0", rate: f(76.69e6), acc: n(2), rej: n(0),
				powerW: f(176.46799999999999), tempC: f(54), memTempC: f(66), fan: noF},
		}},
	{file: "lolminer/summary_1.16a_4gpu_etchash_startup.json", miner: "lolminer", endpoint: "summary",
		version: "1.16a", algo: "Etchash", pool: "hk.etc.herominers.com:10160",
		user: "0x155da78b788ab54bea1340c10a5422a8ae88142f.lolMinerWorker",
		unit: UnitHashes, rate: f(6.08e6), acc: n(0), rej: n(0), uptime: dur("10s"), powerW: noF,
		started: 1606949275, gpus: 4, want: []gpuWant{
			// During the DAG build every sensor reads 0: absent, not 0 W.
			{pos: 0, index: 0, bus: "0000:03:00.0", rate: f(0), powerW: noF, tempC: noF, fan: noF},
			{pos: 2, index: 2, bus: "0000:13:00.0", rate: f(0)},
		}},
	{file: "lolminer/summary_1.0a2_1gpu_zelhash.json", miner: "lolminer", endpoint: "summary",
		version: "1.0 a2", algo: "ZelHash", pool: "stratum.zel.cash:2001", user: "t1cLkQpx3kEJw2TjPnTmCpe4KqLvER8NknA.testWorker",
		unit: UnitSolutions, rate: f(6.70), acc: n(0), rej: n(0), uptime: dur("10s"), started: 1591527060, gpus: 1, want: []gpuWant{
			{pos: 0, bus: "0000:01:00.0", name: "GeForce GTX 1050 Ti", rate: f(6.70), powerW: noF, tempC: f(49), fan: f(75)},
		}},
	{file: "lolminer/summary_0.6_1gpu_equihash210-9.json", miner: "lolminer", endpoint: "summary",
		version: "0.6", algo: "Equihash 210/9", pool: "na.aionmine.org:3333",
		user: "0xa0e1ff18f69eac5d17fc8c5ac078739d64cc0a8ae2f84b7ca6d55c33bff8dc52.lolMiner",
		unit: UnitSolutions, rate: f(65.1), acc: n(4), rej: n(0), uptime: dur("140s"), started: 1547410837, gpus: 1, want: []gpuWant{
			{pos: 0, bus: "0000:01:00.0", name: "GeForce GTX 1050 Ti", rate: f(65.1), acc: n(4), rej: n(0)},
		}},
	{file: "lolminer/api_0.41_legacy-flat_2gpu_equihash144.json", miner: "lolminer", endpoint: "summary",
		version: "0.41", algo: "Equihash 144.5", pool: "mine-btcz-euro.equipool.1ds.us:50061",
		user: "t1dbQvbohSUAGE6dZpUYru7e18SCNVipVXY.lolMiner",
		// TotalSpeed(60s) is blank: the 5 s total stands in; GPUs have 60 s speeds.
		unit: UnitSolutions, rate: f(24722.0225), gpus: 2, want: []gpuWant{
			{pos: 0, name: "AMD Radeon (TM) RX 480 Graphics", rate: f(13429.5117)},
			{pos: 1, index: 1, name: "Radeon RX 580 Series", rate: f(11262.5537)},
		}},

	// XMRig.
	{file: "xmrig/2-summary_6.12.0-mo1_arm-cpu_moneroocean.json", miner: "xmrig", endpoint: "2/summary",
		version: "6.12.0-mo1", algo: "cn/half", pool: "gulf.moneroocean.stream:10032", unit: UnitHashes,
		rate: f(23.46), acc: n(0), rej: n(0), uptime: dur("317s")},
	{file: "xmrig/1-summary_5.5.3_cpu+cuda_win.json", miner: "xmrig", endpoint: "1/summary",
		version: "5.5.3", algo: "rx/0", pool: "donate.v2.xmrig.com:3333", unit: UnitHashes,
		rate: f(953.1), acc: n(0), rej: n(0), uptime: dur("71s")},
	{file: "xmrig/1-summary_5.11.1_cpu_bearer-token_win.json", miner: "xmrig", endpoint: "1/summary",
		// The 60 s window is null: the 10 s one stands in.
		version: "5.11.1", algo: "rx/0", pool: "donate.v2.xmrig.com:3333", unit: UnitHashes,
		rate: f(445.81), acc: n(0), rej: n(0), uptime: dur("18s")},
	{file: "xmrig/1-summary_2.6.0-beta3_cpu_OFFICIAL-DOC.json", miner: "xmrig", endpoint: "1/summary",
		version: "2.6.0-beta3", algo: "cryptonight", pool: "pool.monero.hashvault.pro:3333", unit: UnitHashes,
		rate: f(296.23), acc: n(30), rej: n(0)},
	{file: "xmrig/root_2.4.0-dev_cpu_from-AMD-test.json", miner: "xmrig", endpoint: "1/summary",
		version: "2.4.0", algo: "cryptonight", pool: "pool.minemonero.pro:5555", unit: UnitHashes,
		rate: f(252.6), acc: n(1849), rej: n(0)},
	{file: "xmrig/root_xmrig-nvidia_2.6.1_8gpu_health.json", miner: "xmrig", endpoint: "summary",
		version: "2.6.1", algo: "cryptonight", pool: "pool.supportxmr.com:7777", unit: UnitHashes,
		rate: f(3526.79), acc: n(4), rej: n(0), gpus: 8, want: []gpuWant{
			{pos: 0, name: "GeForce GTX 1070 Ti", rate: f(479.49), powerW: f(93), tempC: f(54), fan: f(53)},
			{pos: 7, index: 7, rate: f(298.34), powerW: f(53), tempC: f(50), fan: f(50)},
		}},
	{file: "xmrig/2-backends_5.5.3_cpu+cuda-gtx1050ti_win.json", miner: "xmrig", endpoint: "2/backends",
		unit: UnitHashes, gpus: 1, want: []gpuWant{
			// The 60 s window is null: 10 s. Power 0 is "not read".
			{pos: 0, index: 0, bus: "0000:01:00.0", name: "GeForce GTX 1050 Ti", rate: f(161.95), powerW: noF, tempC: f(48), fan: noF},
		}},
	{file: "xmrig/2-backends_5.11.1_cpu-only_win.json", miner: "xmrig", endpoint: "2/backends", unit: UnitHashes},

	// GMiner.
	{file: "gminer/stat_3.06_1gpu_etchash_rtx3060_JSOBJ.json", miner: "gminer", endpoint: "stat",
		version: "3.06", algo: "Etchash", pool: "ssl://hk.crazypool.org:7777", user: "0xA5a52D92ff302fCca9e5b060EC797F01311c66fF.hebe.Worker",
		unit: UnitHashes, rate: f(40707234), acc: n(0), rej: n(0), stale: n(0), inv: n(0), uptime: dur("49s"), gpus: 1, want: []gpuWant{
			{pos: 0, bus: "0000:03:00.0", name: "3060", rate: f(40707234), acc: n(0), rej: n(0), powerW: f(143), tempC: f(66), memTempC: noF, fan: f(51)},
		}},
	{file: "gminer/stat_2.73_1gpu_ethash_rtx3060_PYDICT-CONVERTED.json", miner: "gminer", endpoint: "stat",
		version: "2.73", algo: "Ethash", pool: "eu1.ethermine.org:4444", user: "0x84fc5E96354844f5f27095d0A2B22377B6f54975.3060",
		unit: UnitHashes, rate: f(43429602), acc: n(6799), rej: n(0), stale: n(0), inv: n(0), uptime: dur("704042s"), gpus: 1, want: []gpuWant{
			// fan 0 and memory_temperature 0 are GMiner's "not available".
			{pos: 0, bus: "0000:01:00.0", name: "3060", rate: f(43429602), acc: n(6799), powerW: f(93), tempC: f(55), memTempC: noF, fan: noF},
		}},
	{file: "gminer/stat_2.70_1gpu_ethash_rtx3080_PYDICT-CONVERTED.json", miner: "gminer", endpoint: "stat",
		version: "2.70", algo: "Ethash", pool: "eu1.ethermine.org:4444", user: "0x84fc5E96354844f5f27095d0A2B22377B6f54975.3080",
		unit: UnitHashes, rate: f(72131151), acc: n(529), rej: n(0), stale: n(0), inv: n(0), uptime: dur("34505s"), gpus: 1, want: []gpuWant{
			{pos: 0, bus: "0000:01:00.0", name: "3080", rate: f(72131151), acc: n(529), powerW: f(115), tempC: f(57)},
		}},
	{file: "gminer/stat_1.34_1gpu_beam_amd.json", miner: "gminer", endpoint: "stat",
		version: "1.34", algo: `Equihash 150,5 "Beam-PoW"`, pool: "stratum+ssl://beam.sparkpool.com:2222",
		user: "100fd5cb7f85d33f74ef78f89e78cd0d5a63fc4965476eea4f77f024a57d99fa55.rig0",
		unit: UnitSolutions, rate: f(1.2), acc: n(0), rej: n(0), uptime: dur("88s"), gpus: 1, want: []gpuWant{
			{pos: 0, bus: "0000:02:00.0", name: "ASUS Radeon RX 560 Series 4GB", rate: f(1.2), powerW: f(32), tempC: f(54)},
		}},
	{file: "gminer/stat_1.18_8gpu_beam_nvidia.json", miner: "gminer", endpoint: "stat",
		algo: `Equihash 150,5 "Beam-PoW"`, pool: "stratum+ssl://beam.sparkpool.com:2222",
		user: "100fd5cb7f85d33f74ef78f89e78cd0d5a63fc4965476eea4f77f024a57d99fa55.rig0",
		// No total in GMiner: the sum of the eight speeds, 21+22+23+21+23+24+22+24.
		unit: UnitSolutions, rate: f(180), acc: n(12), rej: n(0), uptime: dur("15s"), gpus: 8, want: []gpuWant{
			{pos: 0, bus: "0000:01:00.0", name: "EVGA GeForce GTX 1070 Ti 8GB", rate: f(21), acc: noN, powerW: f(169), tempC: f(67)},
			{pos: 6, index: 6, bus: "0000:0a:00.0", rate: f(22)}, // "0000:0A:00.0" in the reply
		}},
	{file: "gminer/stat_1.18_1gpu_aion_nvidia.json", miner: "gminer", endpoint: "stat",
		algo: `Equihash 210,9 "AION0PoW"`, pool: "stratum://aion-eu.luxor.tech:3366",
		user: "0xa07978089c76e2010720bec8400f05530cd946a567dc0fd9b862d83a45681f7c",
		unit: UnitSolutions, rate: f(68), acc: n(1), rej: n(0), uptime: dur("94s"), gpus: 1, want: []gpuWant{
			{pos: 0, bus: "0000:01:00.0", name: "GeForce GTX 1050 Ti 4GB", rate: f(68), acc: n(1), powerW: noF, tempC: f(55)},
		}},
	{file: "gminer/stat_1.1x_4gpu_zhash_nvidia.json", miner: "gminer", endpoint: "stat",
		pool: "stratum://eu.btgpool.pro:1445", user: "GZdx44gPVFX7GfeWXA3kyiuXecym3CWGHi.rig0",
		// 61.1+65.1+62.1+65.1 Sol/s; shares 0+1+2+2.
		unit: UnitSolutions, rate: f(253.4), acc: n(5), rej: n(0), uptime: dur("37s"), gpus: 4, want: []gpuWant{
			{pos: 3, index: 3, bus: "0000:04:00.0", rate: f(65.1), acc: n(2), rej: n(0), powerW: f(201), tempC: f(51)},
		}},

	// NBMiner.
	{file: "nbminer/api-v1-status_40.0_2gpu_ethash_lhr_OFFICIAL-README.json", miner: "nbminer", endpoint: "status",
		version: "40.0", algo: "ethash", pool: "asia2.ethermine.org:5555", user: "0x4296116d44a4a7259B52B1A756e19083e675062A",
		unit: UnitHashes, rate: f(146567481.51336715), acc: n(7), rej: n(0), inv: n(0), powerW: f(389),
		started: 1637549633, gpus: 2, want: []gpuWant{
			// memTemperature -1: the card has no sensor.
			{pos: 0, bus: "0000:01:00.0", name: "NVIDIA GeForce RTX 3070", rate: f(61497708.17088159), acc: n(4), rej: n(0),
				powerW: f(131), tempC: f(57), memTempC: noF, fan: f(59)},
			{pos: 1, index: 1, bus: "0000:30:00.0", name: "NVIDIA GeForce RTX 3080 Ti LHR", rate: f(85069773.34248555), acc: n(3),
				powerW: f(258), tempC: f(64), memTempC: f(104), fan: f(80)},
		}},
	{file: "nbminer/api-v1-status_37.3_2gpu_ergo_rtx3070+3080_PYDICT-CONVERTED_EMAIL-REDACTED.json", miner: "nbminer", endpoint: "status",
		version: "37.3", algo: "ergo", pool: "ergo-eu1.nanopool.org:11111",
		user: "9hsPLkvTKt7z61uYCxu5KuiPKU5atfV6AkFhypdhfkMKN4SonV6.ergo_3070_3080/REDACTED@example.com",
		unit: UnitHashes, rate: f(341039764.1334559), acc: n(45), rej: n(0), inv: n(0), powerW: f(274),
		started: 1621367721, gpus: 2, want: []gpuWant{
			{pos: 1, index: 1, bus: "0000:2b:00.0", name: "NVIDIA GeForce RTX 3080", rate: f(187581645.98665234), acc: n(28),
				powerW: f(170), tempC: f(43), fan: f(70)},
		}},
	{file: "nbminer/api-v1-status_30.0_dual-hns_ethash_OFFICIAL-README.json", miner: "nbminer", endpoint: "status",
		version: "30.0", algo: "hns_ethash", pool: "handshake.hk.nicehash.com:3384", user: "3QHNv52ahdCyeYTGVYDPGjRzMpkknjjfAf.test",
		unit: UnitHashes, rate: f(708044466.8349969), acc: n(2), rej: n(0), powerW: f(839), started: 1586944619, gpus: 2, want: []gpuWant{
			{pos: 1, index: 1, bus: "0000:04:00.0", name: "P102-100", rate: f(168455820.79097953), powerW: f(232), tempC: f(57), fan: f(0)},
		}},
	{file: "nbminer/api-v1-status_v10.0_2gpu_dual-tensority+ethash.json", miner: "nbminer", endpoint: "status",
		version: "v10.0", pool: "btm.pool.zhizh.com:3859", user: "bmxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.test",
		unit: UnitHashes, rate: f(2989), acc: n(99), rej: n(1), powerW: f(354), started: 1532482659, gpus: 2, want: []gpuWant{
			{pos: 0, name: "GeForce GTX 1080 Ti 11178 MB", rate: f(1499), powerW: f(182), tempC: f(65), fan: f(36)},
			// No hashrate_raw on the second device: its number "hashrate" counts.
			{pos: 1, index: 1, rate: f(1490), powerW: f(172), tempC: f(62), fan: f(34)},
		}},

	// TeamRedMiner.
	{file: "teamredminer/devs_0.3.10_1gpu_phi2.json", miner: "teamredminer", endpoint: "devs",
		version: "0.3.10", unit: UnitHashes, rate: f(1794e3), acc: n(9), rej: n(0), inv: n(0), gpus: 1, want: []gpuWant{
			// "KHS 30s" 1794 beats "MHS 30s" 1.794 (more digits) and the averages.
			{pos: 0, rate: f(1794e3), acc: n(9), rej: n(0), tempC: f(69), fan: f(47)},
		}},
	{file: "teamredminer/devs_0.3.8_1gpu_cnv8.json", miner: "teamredminer", endpoint: "devs",
		version: "0.3.8", unit: UnitHashes, rate: f(344.1), acc: n(13), rej: n(0), inv: n(0), gpus: 1, want: []gpuWant{
			{pos: 0, rate: f(344.1), acc: n(13), tempC: f(68), fan: f(34)},
		}},
	{file: "teamredminer/devs_0.3.8_6gpu_cnv8.json", miner: "teamredminer", endpoint: "devs",
		// The sums of the six devices: 2107+2118+2095+2058+2101+2094 H/s, 371 and 12 shares.
		version: "0.3.8", unit: UnitHashes, rate: f(12573), acc: n(371), rej: n(12), inv: n(0), gpus: 6, want: []gpuWant{
			{pos: 1, index: 1, rate: f(2118), acc: n(53), rej: n(1), tempC: f(61), fan: f(65)},
		}},
	{file: "teamredminer/pools_0.3.10_phi2.json", miner: "teamredminer", endpoint: "pools",
		version: "0.3.10", algo: "phi2", pool: "stratum+tcp://lux.pickaxe.pro:8332", user: "LhreQGewLdoGFiqq882Am6i644Qc1h28Wh",
		unit: UnitHashes, stale: n(0)},
	{file: "teamredminer/pools_0.3.8_cnv8.json", miner: "teamredminer", endpoint: "pools",
		version: "0.3.8", algo: "cnv8", pool: "stratum+tcp://pool.supportxmr.com:7777",
		user: "479c6JsyawEVAMNZU8GMmXgVPTxd1vdejR6vVpsm7z8y2AvP7C5hz2g5gfrqyffpvLPLYb2eUmmWA5yhRw5ANYyePX7SvLE", unit: UnitHashes, stale: n(0)},
	{file: "teamredminer/pools_0.3.8_6gpu_cnv8.json", miner: "teamredminer", endpoint: "pools",
		version: "0.3.8", algo: "cnv8", pool: "stratum+tcp://pool.supportxmr.com:7777",
		user: "479c6JsyawEVAMNZU8GMmXgVPTxd1vdejR6vVpsm7z8y2AvP7C5hz2g5gfrqyffpvLPLYb2eUmmWA5yhRw5ANYyePX7SvLE", unit: UnitHashes, stale: n(0)},

	// Rigel.
	{file: "rigel/api-response_1.23.2_1gpu_xelishashv3_REWRAPPED.json", miner: "rigel", endpoint: "stat",
		version: "1.23.2", algo: "xelishashv3", pool: "stratum.hashnomletz.com:13333",
		user: "xel:7zfts4pm0tjk8p753xgk8cxjh82cqzf7dxa0lyu9kj8vfshjgg8qq64p89f.test",
		unit: UnitHashes, rate: f(12112.195564915472), acc: n(1405), rej: n(0), inv: n(0), uptime: dur("286s"), powerW: f(294.36225),
		gpus: 1, want: []gpuWant{
			// pci_address is hex: "0b:0" is bus 11.
			{pos: 0, bus: "0000:0b:00.0", name: "RTX 3080 Ti", rate: f(12112.195564915472), acc: n(1405), rej: n(0),
				powerW: f(294.36225), tempC: f(72), memTempC: f(88), fan: f(83)},
		}},

	// SRBMiner.
	{file: "srbminer/api-v2-status_SRBMiner-MULTI_3.6.4_1gpu_rtx3070_TRIMMED.json", miner: "srbminer", endpoint: "status",
		version: "3.6.4", algo: "pearlhash", pool: "prl-eu.kryptex.network:7048", user: "krxXGNKMD4/home-win",
		unit: UnitHashes, rate: f(62403052604616.36), acc: n(64), rej: n(0), gpus: 1, want: []gpuWant{
			{pos: 0, name: "nvidia_geforce_rtx_3070", rate: f(63404632916632.73), acc: n(64), rej: n(0), powerW: f(149), tempC: f(74), fan: f(86)},
		}},
	{file: "srbminer/root_SRBMiner-MULTI_0.5.6_cpu-only_verushash.json", miner: "srbminer", endpoint: "status",
		version: "0.5.6", algo: "verushash", pool: "verus.alphatechit.co.uk:9997",
		unit: UnitHashes, rate: f(197190.38067646), acc: n(15), rej: n(0), uptime: dur("1368s")},
	{file: "srbminer/root_LEGACY-SRBMiner-Cryptonight_1.7.9_1gpu.json", miner: "srbminer", endpoint: "status",
		version: "1.7.9", algo: "normalv8", pool: "xmr-eu1.nanopool.org:14444",
		unit: UnitHashes, rate: f(339), acc: n(0), rej: n(0), stale: n(0), uptime: dur("132s"), gpus: 1, want: []gpuWant{
			{pos: 0, bus: "0000:02:00.0", name: "Radeon RX 560 Series", rate: f(343), tempC: f(63)},
		}},
	{file: "srbminer/root_LEGACY-SRBMiner-Cryptonight_1.9.2_TRIMMED-6gpu-to-1.json", miner: "srbminer", endpoint: "status",
		version: "1.9.2", algo: "mox", pool: "mox.optimusblue.com:4444",
		unit: UnitHashes, rate: f(27639), acc: n(546), rej: n(0), uptime: dur("48936s"), gpus: 1, want: []gpuWant{
			{pos: 0, index: 3, bus: "0000:0d:00.0", name: "Radeon RX Vega", rate: f(4549), tempC: f(65)},
		}},

	// BzMiner: only one element of pools[] was ever captured.
	{file: "bzminer/status_9.0.0_pools-entry_ONLY.json", miner: "bzminer", endpoint: "pool",
		algo: "kawpow", pool: "stratum+tcp://yourpool:4444", user: "0x0000000000000000000000000000000000000000.rig",
		unit: UnitHashes, rate: f(0), acc: n(0), rej: n(0), stale: n(0), inv: n(0), uptime: dur("0s")},

	// Claymore and PhoenixMiner.
	{file: "claymore-phoenix/getstat1_claymore-11.8_8gpu_eth.json", miner: "claymore", endpoint: "miner_getstat1",
		version: "11.8", algo: "ethash", pool: "eth-eu1.nanopool.org:9999",
		unit: UnitHashes, rate: f(235321e3), acc: n(2), rej: n(0), inv: n(0), uptime: dur("0s"), gpus: 8, want: []gpuWant{
			{pos: 0, rate: f(29482e3), tempC: f(60), fan: f(60)},
			{pos: 7, index: 7, rate: f(28878e3), tempC: f(58), fan: f(58)},
		}},
	{file: "claymore-phoenix/getstat1_claymore-11.8_8gpu_dual-eth+pasc.json", miner: "claymore", endpoint: "miner_getstat1",
		version: "11.8", algo: "ethash", pool: "eth-eu1.nanopool.org:9999;pasc-eu1.nanopool.org:15555",
		unit: UnitHashes, rate: f(146657e3), acc: n(2), rej: n(0), inv: n(0), uptime: dur("0s"), gpus: 8, want: []gpuWant{
			{pos: 0, rate: f(0), tempC: f(55), fan: f(55)}, // a GPU at 0: a real zero
			{pos: 1, index: 1, rate: f(29170e3), tempC: f(64), fan: f(64)},
		}},
	{file: "claymore-phoenix/getstat1_claymore-12.0_2gpu_eth_EMPTY-temps.json", miner: "claymore", endpoint: "miner_getstat1",
		version: "12.0", algo: "ethash", pool: "us1.ethermine.org:4444",
		unit: UnitHashes, rate: f(160715e3), acc: n(2), rej: n(0), inv: n(0), uptime: dur("1m"), gpus: 2, want: []gpuWant{
			{pos: 1, index: 1, rate: f(83133e3), tempC: noF, fan: noF},
		}},
	{file: "claymore-phoenix/getstat1_claymore-cryptonote-11.3_1gpu_xmr_HS-units.json", miner: "claymore", endpoint: "miner_getstat1",
		version: "11.3", algo: "cryptonight", pool: "xmr-eu1.nanopool.org:14433",
		unit: UnitHashes, rate: f(339), acc: n(0), rej: n(0), inv: n(0), uptime: dur("2m"), gpus: 1, want: []gpuWant{
			{pos: 0, rate: f(339), tempC: f(61), fan: f(44)},
		}},
	{file: "claymore-phoenix/getstat1_claymore-zcash-12.6_1gpu_zec_SOLS-units_psw.json", miner: "claymore", endpoint: "miner_getstat1",
		version: "12.6", algo: "equihash", pool: "zec-eu1.nanopool.org:6633",
		unit: UnitSolutions, rate: f(128), acc: n(0), rej: n(0), inv: n(0), uptime: dur("0s"), gpus: 1, want: []gpuWant{
			{pos: 0, rate: f(128), tempC: f(60), fan: f(33)},
		}},
	{file: "claymore-phoenix/getstat1_phoenixminer-5.1c_8gpu_eth.json", miner: "phoenixminer", endpoint: "miner_getstat1",
		version: "5.1c", algo: "ethash", pool: "ssl://eu1.ethermine.org:5555",
		unit: UnitHashes, rate: f(237936e3), acc: n(1), rej: n(0), inv: n(0), uptime: dur("0s"), gpus: 8, want: []gpuWant{
			{pos: 7, index: 7, rate: f(29494e3), tempC: f(48), fan: f(48)},
		}},
	{file: "claymore-phoenix/getstat2_phoenixminer-5.7b_4gpu_eth_18fields_COMMENTS-STRIPPED.json", miner: "phoenixminer",
		endpoint: "miner_getstat2", version: "5.7b", algo: "ethash", pool: "eth-eu1.nanopool.org:9999",
		unit: UnitHashes, rate: f(122574e3), acc: n(1276), rej: n(0), inv: n(0), uptime: dur("1825m"), gpus: 4, want: []gpuWant{
			// Field 15 lists the PCI buses in decimal: 1;6;7;11.
			{pos: 0, bus: "0000:01:00.0", rate: f(31011e3), acc: n(308), rej: n(0), tempC: f(78), fan: f(100)},
			{pos: 3, index: 3, bus: "0000:0b:00.0", rate: f(30277e3), acc: n(316), rej: n(0), tempC: f(70), fan: f(37)},
		}},

	// ethminer.
	{file: "ethminer/getstat1_ethminer-0.19.0-beta.0+nhfix_12gpu.json", miner: "ethminer", endpoint: "miner_getstat1",
		version: "0.19.0-beta.0+nhfix", algo: "ethash", pool: "asia.ethash-hub.miningpoolhub.com:17020",
		unit: UnitHashes, rate: f(266708e3), acc: n(13), rej: n(0), inv: n(0), uptime: dur("4m"), gpus: 12, want: []gpuWant{
			{pos: 8, index: 8, rate: f(22556e3), tempC: f(59), fan: f(0)},
			{pos: 11, index: 11, rate: f(21756e3), tempC: f(52), fan: f(100)},
		}},
	{file: "ethminer/getstat1_ethminer-0.16.0.dev0_6gpu.json", miner: "ethminer", endpoint: "miner_getstat1",
		version: "0.16.0.dev0+commit.41639944", algo: "ethash", pool: "eu1.ethermine.org:4444",
		unit: UnitHashes, rate: f(87221e3), acc: n(54), rej: n(0), inv: n(0), uptime: dur("48m"), gpus: 6, want: []gpuWant{
			{pos: 0, rate: f(14683e3), tempC: f(53), fan: f(90)},
		}},
	{file: "ethminer/getstat1_ethminer-0.13.0.dev0_8gpu_SPACES-in-temps.json", miner: "ethminer", endpoint: "miner_getstat1",
		version: "0.13.0.dev0", algo: "ethash", pool: "eu1.ethermine.org:4444",
		unit: UnitHashes, rate: f(195423e3), acc: n(15228), rej: n(3), inv: n(0), uptime: dur("5296m"), gpus: 8, want: []gpuWant{
			{pos: 1, index: 1, rate: f(24415e3), tempC: f(53), fan: f(50)}, // "63;50; 53;50; ..."
			{pos: 7, index: 7, rate: f(24415e3), tempC: f(58), fan: f(50)},
		}},

	// NiceHash Excavator (documentation examples).
	{file: "excavator/algorithm.list_OFFICIAL-DOC.json", miner: "excavator", endpoint: "algorithm.list",
		algo: "daggerhashimoto", unit: UnitHashes, rate: f(9198932.692307692), acc: n(0), rej: n(0)},
	{file: "excavator/algorithm.list_3algos_OLDER-OFFICIAL-DOC.json", miner: "excavator", endpoint: "algorithm.list",
		algo: "daggerhashimoto", unit: UnitHashes, rate: f(9198932.692307692), acc: n(0), rej: n(0)},
	{file: "excavator/worker.list_OFFICIAL-DOC.json", miner: "excavator", endpoint: "worker.list",
		unit: UnitHashes, gpus: 1, want: []gpuWant{
			{pos: 0, index: 2, uuid: "GPU-819ca3e1-09c1-6982-6d28-29701e685270", rate: f(8513547.199441634)},
		}},
	{file: "excavator/devices.get_2gpu_gtx1080ti+1080_OLDER-OFFICIAL-DOC.json", miner: "excavator", endpoint: "devices.get",
		unit: UnitHashes, gpus: 2, want: []gpuWant{
			{pos: 0, bus: "0000:05:00.0", uuid: "GPU-8f6552ba-76e8-4e86-c2bb-53b69fb685ef", name: "GeForce GTX 1080 Ti",
				powerW: f(56.340999603271487), tempC: f(28), fan: f(23)},
			{pos: 1, index: 1, bus: "0000:07:00.0", uuid: "GPU-c108e737-1a9a-2302-c878-402608fd4535", name: "GeForce GTX 1080",
				powerW: f(6.573999881744385), tempC: f(35), fan: f(0)},
		}},
	{file: "excavator/device.get_rtx3060ti_OFFICIAL-DOC.json", miner: "excavator", endpoint: "device.get",
		unit: UnitHashes, gpus: 1, want: []gpuWant{
			// details.bus_id is decimal: 33 is bus 0x21.
			{pos: 0, bus: "0000:21:00.0", uuid: "GPU-c2950e37-ab34-00f5-0adb-b00708f65e46", name: "GeForce RTX 3060 Ti",
				powerW: f(131.5399932861328), tempC: f(48), fan: f(100)},
		}},
	{file: "excavator/info_1.3.7a_OFFICIAL-DOC.json", miner: "excavator", endpoint: "info",
		version: "1.3.7a_nvidia", unit: UnitHashes, uptime: dur("5s")},
	{file: "excavator/subscribe.info_OFFICIAL-DOC.json", miner: "excavator", endpoint: "subscribe.info",
		pool: "nhmp-ssl.eu.nicehash.com:443", user: "34HKWdzLxWBduUfJE9JxaFhoXnfC6gmePG.test2", unit: UnitHashes},
}

func readFixture(tb testing.TB, file string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "miners", file))
	require.NoError(tb, err)
	return b
}

// Every captured reply and documentation example parses to the values read
// off the file, and the adapter tells which API call it answers.
func TestFixturesParse(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx.file, func(t *testing.T) {
			a, err := AdapterByName(fx.miner)
			require.NoError(t, err)
			body := readFixture(t, fx.file)
			assert.Equal(t, fx.endpoint, a.Detect(body), "Detect")
			var st Stats
			require.NoError(t, a.Parse(fx.endpoint, body, &st))
			assert.Equal(t, fx.miner, st.Miner)
			assert.Equal(t, fx.version, st.Version, "Version")
			assert.Equal(t, fx.algo, st.Algorithm, "Algorithm")
			assert.Equal(t, fx.pool, st.Pool, "Pool")
			assert.Equal(t, fx.user, st.User, "User")
			assert.Equal(t, fx.unit, st.Unit, "Unit")
			assertRate(t, fx.rate, st.Rate, "Rate")
			assert.Equal(t, fx.acc, st.Shares.Accepted, "Accepted")
			assert.Equal(t, fx.rej, st.Shares.Rejected, "Rejected")
			assert.Equal(t, fx.stale, st.Shares.Stale, "Stale")
			assert.Equal(t, fx.inv, st.Shares.Invalid, "Invalid")
			assert.Equal(t, fx.uptime, st.Uptime, "Uptime")
			assertRate(t, fx.powerW, st.PowerW, "PowerW")
			if fx.started != 0 {
				assert.Equal(t, fx.started, st.StartedAt.Unix(), "StartedAt")
			} else {
				assert.True(t, st.StartedAt.IsZero(), "StartedAt")
			}
			require.Len(t, st.GPUs, fx.gpus)
			for _, w := range fx.want {
				g := st.GPUs[w.pos]
				assert.Equal(t, w.index, g.Index, "GPU %d Index", w.pos)
				assert.Equal(t, w.bus, g.PCIBusID, "GPU %d PCIBusID", w.pos)
				assert.Equal(t, w.uuid, g.UUID, "GPU %d UUID", w.pos)
				if w.name != "" {
					assert.Equal(t, w.name, g.Name, "GPU %d Name", w.pos)
				}
				assertRate(t, w.rate, g.Rate, "GPU rate")
				if w.acc.Valid || w.rej.Valid {
					assert.Equal(t, w.acc, g.Shares.Accepted, "GPU %d Accepted", w.pos)
				}
				if w.rej.Valid {
					assert.Equal(t, w.rej, g.Shares.Rejected, "GPU %d Rejected", w.pos)
				}
				if w.powerW.Valid || w.tempC.Valid || w.fan.Valid {
					assertRate(t, w.powerW, g.PowerW, "GPU PowerW")
					assertRate(t, w.tempC, g.TemperatureC, "GPU TemperatureC")
					assertRate(t, w.memTempC, g.MemTemperatureC, "GPU MemTemperatureC")
					assertRate(t, w.fan, g.FanPct, "GPU FanPct")
				}
			}
		})
	}
}

// assertRate compares floats to 1e-9 relative, so that 91.55 MH/s times
// 1e6 is 91.55e6.
func assertRate(t *testing.T, want, got gpu.Optional[float64], what string) {
	t.Helper()
	if !assert.Equal(t, want.Valid, got.Valid, "%s present", what) || !want.Valid {
		return
	}
	assert.InEpsilon(t, want.Value+1e-12, got.Value+1e-12, 1e-9, what)
}

// Every fixture in testdata is in the table.
func TestFixturesAllListed(t *testing.T) {
	listed := map[string]bool{}
	for _, fx := range fixtures {
		listed[fx.file] = true
	}
	files, err := filepath.Glob("testdata/miners/*/*")
	require.NoError(t, err)
	var missing []string
	for _, f := range files {
		rel, _ := filepath.Rel("testdata/miners", f)
		dir := filepath.Dir(rel)
		if dir == "whattomine" || filepath.Base(rel) == "1-summary_6.20.0_TRUNCATED-BUG-issue3363.txt" {
			continue // coin data; the truncated reply is a negative test
		}
		if !listed[rel] {
			missing = append(missing, rel)
		}
	}
	assert.Empty(t, missing)
}
