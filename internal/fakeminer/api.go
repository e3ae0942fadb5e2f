package main

import (
	"crypto/sha256"
	"encoding/hex"
	"math"
	"time"
)

// Fixed identity strings, modelled on T-Rex 0.26 and XMRig 6.x replies.
const (
	trexVersion  = "0.26.8"
	trexAPI      = "4.1"
	xmrigVersion = "6.21.0"
	poolURL      = "stratum+tcp://127.0.0.1:3333"
)

// T-Rex GET /summary (API 4.1).
type (
	trexSummary struct {
		AcceptedCount    int64        `json:"accepted_count"`
		ActivePool       trexPool     `json:"active_pool"`
		Algorithm        string       `json:"algorithm"`
		API              string       `json:"api"`
		BuildDate        string       `json:"build_date"`
		Coin             string       `json:"coin"`
		Description      string       `json:"description"`
		Driver           string       `json:"driver"`
		GPUTotal         int          `json:"gpu_total"`
		GPUs             []trexGPU    `json:"gpus"`
		Hashrate         int64        `json:"hashrate"`
		HashrateDay      int64        `json:"hashrate_day"`
		HashrateHour     int64        `json:"hashrate_hour"`
		HashrateMinute   int64        `json:"hashrate_minute"`
		InvalidCount     int64        `json:"invalid_count"`
		Name             string       `json:"name"`
		OS               string       `json:"os"`
		Paused           bool         `json:"paused"`
		RejectedCount    int64        `json:"rejected_count"`
		Revision         string       `json:"revision"`
		Sharerate        float64      `json:"sharerate"`
		SharerateAverage float64      `json:"sharerate_average"`
		SolvedCount      int64        `json:"solved_count"`
		Success          int          `json:"success"`
		Time             int64        `json:"time"`
		Uptime           int64        `json:"uptime"`
		ValidateShares   bool         `json:"validate_shares"`
		Version          string       `json:"version"`
		WatchdogStat     trexWatchdog `json:"watchdog_stat"`
	}
	trexPool struct {
		Difficulty     string `json:"difficulty"`
		DNSHTTPSServer string `json:"dns_https_server"`
		LastSubmitTS   int64  `json:"last_submit_ts"`
		Ping           int    `json:"ping"`
		Proxy          string `json:"proxy"`
		Retries        int    `json:"retries"`
		URL            string `json:"url"`
		User           string `json:"user"`
		Worker         string `json:"worker"`
	}
	trexGPU struct {
		CClock              int        `json:"cclock"`
		DAGBuildMode        int        `json:"dag_build_mode"`
		DeviceID            int        `json:"device_id"`
		Efficiency          string     `json:"efficiency"`
		FanSpeed            int        `json:"fan_speed"`
		GPUID               int        `json:"gpu_id"`
		GPUUserID           int        `json:"gpu_user_id"`
		Hashrate            int64      `json:"hashrate"`
		HashrateDay         int64      `json:"hashrate_day"`
		HashrateHour        int64      `json:"hashrate_hour"`
		HashrateInstant     int64      `json:"hashrate_instant"`
		HashrateMinute      int64      `json:"hashrate_minute"`
		Intensity           float64    `json:"intensity"`
		LHRLockCount        int        `json:"lhr_lock_count"`
		LHRTune             float64    `json:"lhr_tune"`
		LowLoad             bool       `json:"low_load"`
		MClock              int        `json:"mclock"`
		MemoryTemperature   int        `json:"memory_temperature"`
		MTweak              int        `json:"mtweak"`
		Name                string     `json:"name"`
		Paused              bool       `json:"paused"`
		PCIBus              int        `json:"pci_bus"`
		PCIDomain           int        `json:"pci_domain"`
		PCIID               int        `json:"pci_id"`
		PotentiallyUnstable bool       `json:"potentially_unstable"`
		Power               int        `json:"power"`
		PowerAvr            int        `json:"power_avr"`
		Shares              trexShares `json:"shares"`
		Temperature         int        `json:"temperature"`
		UUID                string     `json:"uuid"`
		Vendor              string     `json:"vendor"`
	}
	trexShares struct {
		AcceptedCount     int64   `json:"accepted_count"`
		InvalidCount      int64   `json:"invalid_count"`
		LastShareDiff     float64 `json:"last_share_diff"`
		LastShareSubmitTS int64   `json:"last_share_submit_ts"`
		MaxShareDiff      float64 `json:"max_share_diff"`
		MaxShareSubmitTS  int64   `json:"max_share_submit_ts"`
		RejectedCount     int64   `json:"rejected_count"`
		SolvedCount       int64   `json:"solved_count"`
	}
	trexWatchdog struct {
		BuiltIn       bool   `json:"built_in"`
		StartupTS     int64  `json:"startup_ts"`
		TotalRestarts int    `json:"total_restarts"`
		Uptime        int64  `json:"uptime"`
		WDVersion     string `json:"wd_version"`
	}
)

func (m *miner) trexSummary(st stats) trexSummary {
	n := m.cfg.gpus
	round := func(v float64) int64 { return int64(math.Round(v)) }
	total := struct{ now, avg, minute, hour, day int64 }{
		now:    round(st.current),
		avg:    round(st.partialAvg(st.avg60s)),
		minute: round(st.partialAvg(st.avg60s)),
		hour:   round(orZero(st.avgHour)),
		day:    round(orZero(st.avgDay)),
	}
	minutes := st.uptime.Minutes()
	sharerate := 0.0
	if minutes > 0 {
		sharerate = float64(st.accepted) / minutes
	}
	s := trexSummary{
		AcceptedCount: st.accepted,
		ActivePool: trexPool{
			Difficulty: siString(m.cfg.difficulty),
			Ping:       12,
			URL:        poolURL,
			User:       "0x0000000000000000000000000000000000000000",
			Worker:     "fakeminer",
		},
		Algorithm:        m.cfg.algo,
		API:              trexAPI,
		BuildDate:        "Jan  1 2024 00:00:00",
		Description:      "T-Rex NVIDIA GPU miner (gpufarm fake)",
		Driver:           "535.183.01",
		GPUTotal:         n,
		GPUs:             make([]trexGPU, 0, n),
		Hashrate:         total.avg,
		HashrateDay:      total.day,
		HashrateHour:     total.hour,
		HashrateMinute:   total.minute,
		Name:             m.cfg.name,
		OS:               "linux",
		RejectedCount:    st.rejected,
		Revision:         "fakeminer",
		Sharerate:        math.Round(sharerate*1000) / 1000,
		SharerateAverage: math.Round(sharerate*1000) / 1000,
		Success:          1,
		Time:             st.at.Unix(),
		Uptime:           int64(st.uptime.Seconds()),
		Version:          trexVersion,
		WatchdogStat: trexWatchdog{
			BuiltIn:   true,
			StartupTS: m.start.Unix(),
			Uptime:    int64(st.uptime.Seconds()),
			WDVersion: trexVersion,
		},
	}
	if st.shares > 0 {
		s.ActivePool.LastSubmitTS = st.at.Unix()
	}
	for i := 0; i < m.shownGPUs(); i++ {
		inst := split(total.now, n, i)
		mod := modelAt(float64(inst))
		s.GPUs = append(s.GPUs, trexGPU{
			CClock:            1710,
			DeviceID:          i,
			Efficiency:        efficiency(float64(inst), mod.powerW),
			FanSpeed:          mod.fanPct,
			GPUID:             i,
			GPUUserID:         i,
			Hashrate:          split(total.avg, n, i),
			HashrateDay:       split(total.day, n, i),
			HashrateHour:      split(total.hour, n, i),
			HashrateInstant:   inst,
			HashrateMinute:    split(total.minute, n, i),
			Intensity:         22,
			MClock:            9501,
			MemoryTemperature: mod.temperatureC + 20,
			Name:              m.cfg.gpuName,
			PCIBus:            i + 1,
			Power:             mod.powerW,
			PowerAvr:          mod.powerW,
			Shares: trexShares{
				AcceptedCount: split(st.accepted, n, i),
				RejectedCount: split(st.rejected, n, i),
			},
			Temperature: mod.temperatureC,
			UUID:        uuidOf(m.cfg.gpuName, i),
			Vendor:      "NVIDIA",
		})
	}
	return s
}

// XMRig GET /2/summary (6.x).
type (
	xmrigSummary struct {
		ID          string          `json:"id"`
		WorkerID    string          `json:"worker_id"`
		Uptime      int64           `json:"uptime"`
		Restricted  bool            `json:"restricted"`
		Resources   xmrigResources  `json:"resources"`
		Features    []string        `json:"features"`
		Results     xmrigResults    `json:"results"`
		Algo        string          `json:"algo"`
		Connection  xmrigConnection `json:"connection"`
		Version     string          `json:"version"`
		Kind        string          `json:"kind"`
		UA          string          `json:"ua"`
		CPU         xmrigCPU        `json:"cpu"`
		DonateLevel int             `json:"donate_level"`
		Paused      bool            `json:"paused"`
		Algorithms  []string        `json:"algorithms"`
		Hashrate    xmrigHashrate   `json:"hashrate"`
		Hugepages   []int           `json:"hugepages"`
	}
	xmrigResources struct {
		Memory struct {
			Free              int64 `json:"free"`
			Total             int64 `json:"total"`
			ResidentSetMemory int64 `json:"resident_set_memory"`
		} `json:"memory"`
		LoadAverage         []float64 `json:"load_average"`
		HardwareConcurrency int       `json:"hardware_concurrency"`
	}
	xmrigResults struct {
		DiffCurrent int64    `json:"diff_current"`
		SharesGood  int64    `json:"shares_good"`
		SharesTotal int64    `json:"shares_total"`
		AvgTime     int64    `json:"avg_time"`
		AvgTimeMS   int64    `json:"avg_time_ms"`
		HashesTotal int64    `json:"hashes_total"`
		Best        []int64  `json:"best"`
		ErrorLog    []string `json:"error_log"`
	}
	xmrigConnection struct {
		Pool           string   `json:"pool"`
		IP             string   `json:"ip"`
		Uptime         int64    `json:"uptime"`
		UptimeMS       int64    `json:"uptime_ms"`
		Ping           int      `json:"ping"`
		Failures       int      `json:"failures"`
		TLS            *string  `json:"tls"`
		TLSFingerprint *string  `json:"tls-fingerprint"`
		Algo           string   `json:"algo"`
		Diff           int64    `json:"diff"`
		Accepted       int64    `json:"accepted"`
		Rejected       int64    `json:"rejected"`
		AvgTime        int64    `json:"avg_time"`
		AvgTimeMS      int64    `json:"avg_time_ms"`
		HashesTotal    int64    `json:"hashes_total"`
		ErrorLog       []string `json:"error_log"`
	}
	xmrigCPU struct {
		Brand    string `json:"brand"`
		AES      bool   `json:"aes"`
		AVX2     bool   `json:"avx2"`
		X64      bool   `json:"x64"`
		Bit64    bool   `json:"64_bit"`
		L2       int64  `json:"l2"`
		L3       int64  `json:"l3"`
		Cores    int    `json:"cores"`
		Threads  int    `json:"threads"`
		Packages int    `json:"packages"`
		Nodes    int    `json:"nodes"`
		Backend  string `json:"backend"`
		MSR      string `json:"msr"`
		Assembly string `json:"assembly"`
		Arch     string `json:"arch"`
	}
	xmrigHashrate struct {
		// [10s, 60s, 15m] in H/s; null while a window is not full.
		Total   []*float64 `json:"total"`
		Highest float64    `json:"highest"`
	}
)

func round2(v float64) float64 { return math.Round(v*100) / 100 }

func round2p(v *float64) *float64 {
	if v == nil {
		return nil
	}
	r := round2(*v)
	return &r
}

func (m *miner) xmrigSummary(st stats) xmrigSummary {
	idSum := sha256.Sum256([]byte("fakeminer/" + m.cfg.name))
	up := st.uptime.Truncate(time.Millisecond)
	avgMS := int64(0)
	if st.shares > 0 {
		avgMS = up.Milliseconds() / st.shares
	}
	s := xmrigSummary{
		ID:         hex.EncodeToString(idSum[:8]),
		WorkerID:   "fakeminer",
		Uptime:     int64(st.uptime.Seconds()),
		Restricted: true,
		Features:   []string{"api", "http", "cuda"},
		Results: xmrigResults{
			DiffCurrent: int64(m.cfg.difficulty),
			SharesGood:  st.accepted,
			SharesTotal: st.shares,
			AvgTime:     avgMS / 1000,
			AvgTimeMS:   avgMS,
			HashesTotal: int64(st.hashesTotal),
			Best:        make([]int64, 10),
			ErrorLog:    []string{},
		},
		Algo: m.cfg.algo,
		Connection: xmrigConnection{
			Pool:        "127.0.0.1:3333",
			IP:          "127.0.0.1",
			Uptime:      int64(st.uptime.Seconds()),
			UptimeMS:    up.Milliseconds(),
			Algo:        m.cfg.algo,
			Diff:        int64(m.cfg.difficulty),
			Accepted:    st.accepted,
			Rejected:    st.rejected,
			AvgTime:     avgMS / 1000,
			AvgTimeMS:   avgMS,
			HashesTotal: int64(st.hashesTotal),
			ErrorLog:    []string{},
		},
		Version:    xmrigVersion,
		Kind:       "miner",
		UA:         "XMRig/" + xmrigVersion + " (Linux x86_64) libuv/1.44.2 gcc/12.2.0",
		CPU:        xmrigCPU{Brand: "gpufarm fake CPU", X64: true, Bit64: true, Cores: 4, Threads: 8, Packages: 1, Nodes: 1, Backend: "basic/1", MSR: "none", Assembly: "none", Arch: "x86_64"},
		Algorithms: []string{m.cfg.algo},
		Hashrate:   xmrigHashrate{Total: []*float64{round2p(st.avg10s), round2p(st.avg60s), round2p(st.avg15m)}, Highest: round2(st.highest)},
		Hugepages:  []int{0, 0},
	}
	s.Resources.Memory.Free = 8 << 30
	s.Resources.Memory.Total = 16 << 30
	s.Resources.Memory.ResidentSetMemory = 64 << 20
	s.Resources.LoadAverage = []float64{0, 0, 0}
	s.Resources.HardwareConcurrency = 8
	return s
}
