package main

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"math"
	"path"
	"strconv"
	"strings"
)

// The replies of the miners other than T-Rex and XMRig's summary are built
// from real replies (testdata, provenance in testdata/SOURCES.txt): the
// reply is decoded, its numbers are replaced by the fake miner's, its GPU
// entries are copied once per GPU, and it is encoded again. So every
// field a real miner sends is there, in the miner's own shape.

//go:embed testdata
var templates embed.FS

// template decodes an embedded reply; numbers stay json.Number.
func template(name string) map[string]any {
	b, err := templates.ReadFile(path.Join("testdata", name))
	if err != nil {
		panic(err) // embedded at build time: the test of every API reads them all
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v map[string]any
	if err := d.Decode(&v); err != nil {
		panic(fmt.Sprintf("template %s: %v", name, err))
	}
	return v
}

func obj(v any) map[string]any {
	m, _ := v.(map[string]any)
	if m == nil {
		return map[string]any{}
	}
	return m
}

func arr(v any) []any { a, _ := v.([]any); return a }

// clone deep-copies a decoded value, so that GPU entries can be copied
// from the template's first.
func clone(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			out[k] = clone(x)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = clone(x)
		}
		return out
	}
	return v
}

// perGPU makes n copies of the template's first entry, each edited by fn.
func perGPU(list any, n int, fn func(i int, g map[string]any)) []any {
	first := map[string]any{}
	if a := arr(list); len(a) > 0 {
		first = obj(a[0])
	}
	out := make([]any, n)
	for i := range out {
		g := clone(first).(map[string]any)
		fn(i, g)
		out[i] = g
	}
	return out
}

func encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// gpuView is one GPU's share of a reading.
type gpuView struct {
	rateHs             float64 // the averaging window's rate
	accepted, rejected int64
	model              gpuModel
	bus                int // PCI bus, i+1 like T-Rex's
}

func (m *miner) gpuViews(st stats) []gpuView {
	n := m.shownGPUs()
	avg := st.partialAvg(st.avg60s)
	out := make([]gpuView, n)
	for i := range out {
		r := avg / float64(m.cfg.gpus)
		out[i] = gpuView{
			rateHs:   math.Round(r*100) / 100,
			accepted: split(st.accepted, m.cfg.gpus, i),
			rejected: split(st.rejected, m.cfg.gpus, i),
			model:    modelAt(st.current / float64(m.cfg.gpus)),
			bus:      i + 1,
		}
	}
	return out
}

func sumPower(gs []gpuView) int {
	t := 0
	for _, g := range gs {
		t += g.model.powerW
	}
	return t
}

func busID(bus int) string { return fmt.Sprintf("0000:%02x:00.0", bus) }

func (m *miner) lolMiner(st stats) []byte {
	d := template("lolminer/summary_1.92_1gpu_nexapow_v2-schema.json")
	gs := m.gpuViews(st)
	d["Software"] = "lolMiner 1.92"
	s := obj(d["Session"])
	s["Startup"], s["Uptime"], s["Last_Update"] = m.start.Unix(), int64(st.uptime.Seconds()), st.at.Unix()
	d["Num_Workers"] = len(gs)
	d["Workers"] = perGPU(d["Workers"], len(gs), func(i int, w map[string]any) {
		g := gs[i]
		w["Index"], w["Name"], w["Power"] = i, "NVIDIA GeForce "+m.cfg.gpuName, g.model.powerW
		w["Core_Temp"], w["Fan_Speed"], w["PCIE_Address"] = g.model.temperatureC, g.model.fanPct, strconv.Itoa(g.bus)+":0"
	})
	a := obj(arr(d["Algorithms"])[0])
	a["Algorithm"], a["Pool"], a["User"] = m.cfg.algo, poolHost, poolUser
	a["Performance_Unit"], a["Performance_Factor"] = "Mh/s", 1000000
	a["Total_Performance"] = st.partialAvg(st.avg60s) / 1e6
	a["Total_Accepted"], a["Total_Rejected"], a["Total_Stales"], a["Total_Errors"] = st.accepted, st.rejected, 0, 0
	perf, acc, rej, zero := make([]any, len(gs)), make([]any, len(gs)), make([]any, len(gs)), make([]any, len(gs))
	for i, g := range gs {
		perf[i], acc[i], rej[i], zero[i] = g.rateHs/1e6, g.accepted, g.rejected, 0
	}
	a["Worker_Performance"], a["Worker_Accepted"], a["Worker_Rejected"] = perf, acc, rej
	a["Worker_Stales"], a["Worker_Errors"] = zero, zero
	return encode(d)
}

func (m *miner) xmrigBackends(st stats) []byte {
	b, _ := templates.ReadFile("testdata/xmrig/2-backends_5.5.3_cpu+cuda-gtx1050ti_win.json")
	var list []any
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&list); err != nil {
		panic(err)
	}
	gs := m.gpuViews(st)
	for _, be := range list {
		be := obj(be)
		switch be["type"] {
		case "cpu":
			be["enabled"], be["hashrate"], be["threads"] = false, nil, nil
		case "cuda":
			be["algo"] = m.cfg.algo
			be["hashrate"] = []any{st.partialAvg(st.avg10s), st.partialAvg(st.avg60s), st.partialAvg(st.avg15m)}
			be["threads"] = perGPU(be["threads"], len(gs), func(i int, t map[string]any) {
				g := gs[i]
				t["index"], t["name"], t["bus_id"] = i, "NVIDIA GeForce "+m.cfg.gpuName, fmt.Sprintf("%02x:00.0", g.bus)
				t["hashrate"] = []any{g.rateHs, g.rateHs, g.rateHs}
				t["health"] = map[string]any{"temperature": g.model.temperatureC, "power": g.model.powerW,
					"clock": 1710, "mem_clock": 9501, "fan_speed": []any{g.model.fanPct}}
			})
		}
	}
	return encode(list)
}

func (m *miner) gminer(st stats) []byte {
	d := template("gminer/stat_3.06_1gpu_etchash_rtx3060_JSOBJ.json")
	gs := m.gpuViews(st)
	d["miner"], d["uptime"], d["server"], d["user"] = "GMiner 3.06", int64(st.uptime.Seconds()), poolHost, poolUser
	d["algorithm"], d["pool_speed"] = m.cfg.algo, int64(st.partialAvg(st.avg60s))
	d["total_accepted_shares"], d["total_rejected_shares"] = st.accepted, st.rejected
	d["total_stale_shares"], d["total_invalid_shares"] = 0, 0
	d["devices"] = perGPU(d["devices"], len(gs), func(i int, x map[string]any) {
		g := gs[i]
		x["gpu_id"], x["bus_id"], x["name"], x["speed"] = i, busID(g.bus), m.cfg.gpuName, int64(g.rateHs)
		x["accepted_shares"], x["rejected_shares"], x["stale_shares"], x["invalid_shares"] = g.accepted, g.rejected, 0, 0
		x["fan"], x["temperature"], x["power_usage"] = g.model.fanPct, g.model.temperatureC, g.model.powerW
	})
	return encode(d)
}

func (m *miner) nbminer(st stats) []byte {
	d := template("nbminer/api-v1-status_40.0_2gpu_ethash_lhr_OFFICIAL-README.json")
	gs := m.gpuViews(st)
	mi := obj(d["miner"])
	mi["devices"] = perGPU(mi["devices"], len(gs), func(i int, x map[string]any) {
		g := gs[i]
		x["id"], x["info"], x["pci_bus_id"] = i, "NVIDIA GeForce "+m.cfg.gpuName, g.bus
		x["hashrate_raw"], x["hashrate"] = g.rateHs, siString(g.rateHs)
		x["accepted_shares"], x["rejected_shares"], x["invalid_shares"] = g.accepted, g.rejected, 0
		x["power"], x["temperature"], x["fan"], x["memTemperature"] = g.model.powerW, g.model.temperatureC, g.model.fanPct, -1
	})
	total := st.partialAvg(st.avg60s)
	mi["total_hashrate_raw"], mi["total_hashrate"], mi["total_power_consume"] = total, siString(total), sumPower(gs)
	d["start_time"] = m.start.Unix()
	s := obj(d["stratum"])
	s["algorithm"], s["url"], s["user"] = m.cfg.algo, poolHost, poolUser
	s["accepted_shares"], s["rejected_shares"], s["invalid_shares"] = st.accepted, st.rejected, 0
	return encode(d)
}

func (m *miner) rigel(st stats) []byte {
	d := template("rigel/api-response_1.23.2_1gpu_xelishashv3_REWRAPPED.json")
	gs := m.gpuViews(st)
	algo, total := m.cfg.algo, st.partialAvg(st.avg60s)
	shares := func(acc, rej int64) map[string]any {
		return map[string]any{algo: map[string]any{"accepted": acc, "rejected": rej, "invalid": 0}}
	}
	d["algorithm"], d["uptime"] = algo, int64(st.uptime.Seconds())
	d["hashrate"], d["pool_hashrate"] = map[string]any{algo: total}, map[string]any{algo: total}
	d["solution_stat"], d["power_usage"] = shares(st.accepted, st.rejected), sumPower(gs)
	var pools any
	for _, v := range obj(d["pools"]) {
		pools = v
	}
	for _, p := range arr(pools) {
		c := obj(obj(p)["connection_details"])
		c["hostname"], c["port"], c["username"], c["worker"] = "127.0.0.1", 3333, poolUser, "fakeminer"
	}
	d["pools"] = map[string]any{algo: pools}
	d["devices"] = perGPU(d["devices"], len(gs), func(i int, x map[string]any) {
		g := gs[i]
		x["id"], x["name"], x["pci_address"] = i, m.cfg.gpuName, fmt.Sprintf("%02x:0", g.bus)
		x["hashrate"], x["pool_hashrate"] = map[string]any{algo: g.rateHs}, map[string]any{algo: g.rateHs}
		x["solution_stat"], x["tune"] = shares(g.accepted, g.rejected), map[string]any{algo: nil}
		mon := obj(x["monitoring_info"])
		mon["core_temperature"], mon["fan_speed"], mon["power_usage"] = g.model.temperatureC, g.model.fanPct, g.model.powerW
	})
	return encode(d)
}

func (m *miner) srbminer(st stats) []byte {
	d := template("srbminer/api-v2-status_SRBMiner-MULTI_3.6.4_1gpu_rtx3070_TRIMMED.json")
	gs := m.gpuViews(st)
	d["mining_time"] = int64(st.uptime.Seconds())
	d["gpu_devices"] = perGPU(d["gpu_devices"], len(gs), func(i int, x map[string]any) {
		g := gs[i]
		x["id"], x["device"], x["model"], x["bus_id"] = i, "gpu"+strconv.Itoa(i), strings.ToLower(strings.ReplaceAll(m.cfg.gpuName, " ", "_")), g.bus
		x["temperature"], x["asic_power"], x["fan_speed_percent"] = g.model.temperatureC, g.model.powerW, g.model.fanPct
	})
	a := obj(arr(d["algorithms"])[0])
	a["name"] = m.cfg.algo
	p := obj(a["pool"])
	p["pool"], p["wallet"] = poolHost, poolUser
	a["shares"] = map[string]any{"total": st.shares, "accepted": st.accepted, "rejected": st.rejected, "avg_find_time": 0}
	per, acc, rej, errs := map[string]any{}, map[string]any{}, map[string]any{}, map[string]any{}
	for i, g := range gs {
		k := "gpu" + strconv.Itoa(i)
		per[k], acc[k], rej[k], errs[k] = g.rateHs, g.accepted, g.rejected, 0
	}
	total := st.partialAvg(st.avg60s)
	per["total"] = total
	a["hashrate"] = map[string]any{"1min": total, "1hr": st.partialAvg(st.avgHour), "6hr": total,
		"cpu": map[string]any{"total": 0}, "gpu": per}
	a["gpu_accepted_shares"], a["gpu_rejected_shares"], a["gpu_compute_errors"] = acc, rej, errs
	return encode(d)
}

func (m *miner) bzminer(st stats) []byte {
	pool := template("bzminer/status_9.0.0_pools-entry_ONLY.json")
	gs := m.gpuViews(st)
	total := st.partialAvg(st.avg60s)
	pool["algorithm"], pool["wallet"], pool["username"] = m.cfg.algo, poolUser, "fakeminer"
	pool["current_url"], pool["url"] = poolURL, []any{poolURL}
	pool["status"], pool["hashrate"], pool["uptime_s"] = 1, total, int64(st.uptime.Seconds())
	pool["valid_solutions"], pool["rejected_solutions"], pool["total_solutions"] = st.accepted, st.rejected, st.shares
	devices := make([]any, len(gs))
	for i, g := range gs {
		devices[i] = map[string]any{
			"vendor": 1, "name": m.cfg.gpuName, "pci_bus_id": g.bus, "hashrate": []any{g.rateHs},
			"valid_solutions": []any{g.accepted}, "rejected_solutions": []any{g.rejected},
			"stale_solutions": []any{0}, "invalid_solutions": []any{0},
			"core_temp": g.model.temperatureC, "fan": g.model.fanPct, "power": g.model.powerW,
		}
	}
	return encode(map[string]any{"bzminer_version": "21.5.3", "uptime_s": int64(st.uptime.Seconds()),
		"pools": []any{pool}, "devices": devices})
}

// teamRedMiner answers an sgminer command, one or several joined by '+'.
func (m *miner) teamRedMiner(st stats, command string) []byte {
	gs := m.gpuViews(st)
	status := func(msg string) []any {
		return []any{map[string]any{"STATUS": "S", "When": st.at.Unix(), "Code": 9, "Msg": msg, "Description": "TeamRedMiner 0.10.21"}}
	}
	section := func(cmd string) map[string]any {
		switch cmd {
		case "devs":
			d := template("teamredminer/devs_0.3.10_1gpu_phi2.json")
			d["STATUS"] = status(fmt.Sprintf("%d GPU(s)", len(gs)))
			d["DEVS"] = perGPU(d["DEVS"], len(gs), func(i int, x map[string]any) {
				g := gs[i]
				x["GPU"], x["Temperature"], x["Fan Percent"] = i, g.model.temperatureC, g.model.fanPct
				x["KHS 30s"], x["KHS av"], x["MHS 30s"], x["MHS av"] = g.rateHs/1e3, g.rateHs/1e3, g.rateHs/1e6, g.rateHs/1e6
				x["Accepted"], x["Rejected"], x["Hardware Errors"] = g.accepted, g.rejected, 0
				x["Device Elapsed"] = int64(st.uptime.Seconds())
			})
			return d
		case "pools":
			d := template("teamredminer/pools_0.3.10_phi2.json")
			d["STATUS"] = status("1 Pool(s)")
			p := obj(arr(d["POOLS"])[0])
			p["URL"], p["User"], p["Algorithm"] = poolURL, poolUser, m.cfg.algo
			p["Accepted"], p["Rejected"], p["Stale"] = st.accepted, st.rejected, 0
			return d
		case "summary":
			r := st.partialAvg(st.avg60s)
			return map[string]any{"STATUS": status("Summary"), "SUMMARY": []any{map[string]any{
				"Elapsed": int64(st.uptime.Seconds()), "KHS 30s": r / 1e3, "KHS av": r / 1e3,
				"Accepted": st.accepted, "Rejected": st.rejected, "Hardware Errors": 0}}, "id": 1}
		case "devdetails":
			list := make([]any, len(gs))
			for i, g := range gs {
				list[i] = map[string]any{"DEVDETAILS": i, "Name": "GPU", "ID": i, "Driver": "amdgpu",
					"Kernel": m.cfg.algo, "Model": m.cfg.gpuName, "Device Path": busID(g.bus)}
			}
			return map[string]any{"STATUS": status(fmt.Sprintf("%d GPU(s)", len(gs))), "DEVDETAILS": list, "id": 1}
		}
		return map[string]any{"STATUS": []any{map[string]any{"STATUS": "E", "When": st.at.Unix(), "Code": 14,
			"Msg": "Invalid command", "Description": "TeamRedMiner 0.10.21"}}, "id": 1}
	}
	cmds := strings.Split(command, "+")
	if len(cmds) == 1 {
		return append(encode(section(cmds[0])), 0)
	}
	out := map[string]any{"id": 1}
	for _, c := range cmds {
		out[c] = []any{section(c)}
	}
	return append(encode(out), 0)
}

// claymoreResult is miner_getstat2's result (its first nine fields are
// miner_getstat1's): rates in kH/s, numbers joined by ';'.
func (m *miner) claymoreResult(st stats, version string, fields int) []any {
	d := template("claymore-phoenix/getstat2_phoenixminer-5.7b_4gpu_eth_18fields_COMMENTS-STRIPPED.json")
	res := arr(d["result"])
	gs := m.gpuViews(st)
	join := func(f func(g gpuView) string) string {
		parts := make([]string, len(gs))
		for i, g := range gs {
			parts[i] = f(g)
		}
		return strings.Join(parts, ";")
	}
	kh := func(hs float64) string { return strconv.FormatInt(int64(hs/1e3), 10) }
	res[0] = version
	res[1] = strconv.FormatInt(int64(st.uptime.Minutes()), 10)
	res[2] = fmt.Sprintf("%s;%d;%d", kh(st.partialAvg(st.avg60s)), st.accepted, st.rejected)
	res[3] = join(func(g gpuView) string { return kh(g.rateHs) })
	res[5] = join(func(gpuView) string { return "off" })
	res[6] = join(func(g gpuView) string { return fmt.Sprintf("%d;%d", g.model.temperatureC, g.model.fanPct) })
	res[7] = poolHost
	res[9] = join(func(g gpuView) string { return strconv.FormatInt(g.accepted, 10) })
	res[10] = join(func(g gpuView) string { return strconv.FormatInt(g.rejected, 10) })
	res[11] = join(func(gpuView) string { return "0" })
	res[15] = join(func(g gpuView) string { return strconv.Itoa(g.bus) })
	res[17] = strconv.Itoa(sumPower(gs))
	return res[:fields]
}

// excavator answers one Excavator API call.
func (m *miner) excavator(st stats, method string) []byte {
	gs := m.gpuViews(st)
	uuid := func(i int) string {
		u := uuidOf(m.cfg.gpuName, i)
		return "GPU-" + u[0:8] + "-" + u[8:12] + "-" + u[12:16] + "-" + u[16:20] + "-" + u[20:32]
	}
	var d map[string]any
	switch method {
	case "info":
		d = template("excavator/info_1.3.7a_OFFICIAL-DOC.json")
		d["version"], d["uptime"] = "1.7.5_nvidia", int64(st.uptime.Seconds())
	case "devices.get":
		d = template("excavator/devices.get_2gpu_gtx1080ti+1080_OLDER-OFFICIAL-DOC.json")
		d["devices"] = perGPU(d["devices"], len(gs), func(i int, x map[string]any) {
			g := gs[i]
			x["device_id"], x["name"], x["uuid"] = i, "GeForce "+m.cfg.gpuName, uuid(i)
			obj(x["details"])["bus_id"] = g.bus
			x["gpu_temp"], x["gpu_power_usage"], x["gpu_fan_speed"] = g.model.temperatureC, g.model.powerW, g.model.fanPct
		})
	case "algorithm.list":
		d = template("excavator/algorithm.list_OFFICIAL-DOC.json")
		a := obj(arr(d["algorithms"])[0])
		a["name"], a["speed"], a["uptime"] = m.cfg.algo, st.partialAvg(st.avg60s), st.uptime.Seconds()
		a["accepted_shares"], a["rejected_shares"] = st.accepted, st.rejected
	case "worker.list":
		d = template("excavator/worker.list_OFFICIAL-DOC.json")
		d["workers"] = perGPU(d["workers"], len(gs), func(i int, x map[string]any) {
			x["worker_id"], x["device_id"], x["device_uuid"] = i, i, uuid(i)
			x["algorithms"] = []any{map[string]any{"id": 0, "name": m.cfg.algo, "speed": gs[i].rateHs}}
		})
	case "subscribe.info":
		d = template("excavator/subscribe.info_OFFICIAL-DOC.json")
		d["address"], d["login"] = poolHost, poolUser+".fakeminer:x"
	case "subscribe", "algorithm.add", "worker.add", "algorithm.clear", "worker.clear":
		d = map[string]any{"id": 1, "error": nil}
	default:
		d = map[string]any{"id": 1, "error": "Method not found"}
	}
	return append(encode(d), '\n')
}
